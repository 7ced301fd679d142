//! The gauges read at scrape time, from what the roles pointed the metrics at: the NATS
//! connections, the projections and the stream, the bridge's event feeds. A role a process does
//! not run leaves its gauges out.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::http::feeds::FeedLimits;
use crate::log::Reader;
use crate::projections::{Capacity, Projections, VmView};

/// The longest a scrape waits for the stream's last sequence.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What the gauges are read from. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Sources {
    /// Each role's NATS connection, by name.
    pub(super) connections: BTreeMap<&'static str, async_nats::Client>,
    /// The projections and a reader of their stream.
    pub(super) projections: Option<(Projections, Reader)>,
    /// The bridge's event feeds.
    pub(super) feeds: Option<FeedLimits>,
}

impl Sources {
    /// Reads every gauge now.
    pub(super) async fn read(self) -> Gauges {
        use async_nats::connection::State;
        let connected = (!self.connections.is_empty()).then(|| {
            self.connections
                .values()
                .all(|c| c.connection_state() == State::Connected)
        });
        let projections = match self.projections {
            Some((store, reader)) => {
                let last = match connected {
                    Some(false) => None,
                    _ => match tokio::time::timeout(STREAM_READ_TIMEOUT, reader.last_seq()).await {
                        Ok(Ok(last)) => Some(last),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "metrics: cannot read the stream's last sequence");
                            None
                        }
                        Err(_) => None,
                    },
                };
                Some(ProjectionGauges {
                    stream_last_seq: last,
                    checkpoint: store.checkpoint(),
                    capacity: store.capacity().ok(),
                    vms: store.vms().unwrap_or_default(),
                    rebuilds: store.rebuilds(),
                    now_ms: crate::clock::now_ms(),
                })
            }
            None => None,
        };
        Gauges {
            connected,
            feeds_open: self.feeds.map(|f| f.open()),
            projections,
        }
    }
}

/// The gauges of one scrape, encoded by the registry it is registered with.
#[derive(Debug)]
pub(super) struct Gauges {
    /// Whether every connection is up; `None`: no connection watched.
    connected: Option<bool>,
    feeds_open: Option<usize>,
    projections: Option<ProjectionGauges>,
}

#[derive(Debug)]
struct ProjectionGauges {
    stream_last_seq: Option<u64>,
    checkpoint: u64,
    capacity: Option<Capacity>,
    vms: Vec<VmView>,
    rebuilds: Vec<(&'static str, u64)>,
    now_ms: i64,
}

/// A sample's labels.
type Labels = Vec<(&'static str, String)>;

/// A gauge with one sample and no labels.
fn gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: V,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A gauge with one sample per label set (none at all when there are no samples).
fn gauges<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        if let Some(connected) = self.connected {
            let help = "1 when every NATS connection of this process is up";
            gauge(e, "orch_nats_connected", help, None, u32::from(connected))?;
        }
        let disconnects = ConstCounter::new(crate::log::connection::disconnects());
        disconnects.encode(e.encode_descriptor(
            "orch_nats_disconnects",
            "NATS connections of this process lost so far (each reconnects on its own)",
            None,
            MetricType::Counter,
        )?)?;
        if let Some(open) = self.feeds_open {
            let help = "Event feeds (GET /v1/events) this bridge serves now";
            gauge(e, "orch_http_event_feeds_open", help, None, open as u64)?;
            let help = "SSE clients (GET /v1/events) connected to this bridge now";
            gauge(e, "orch_http_sse_clients", help, None, open as u64)?;
        }
        if let Some(p) = &self.projections {
            p.encode(e)?;
        }
        Ok(())
    }
}

impl ProjectionGauges {
    fn encode(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(last) = self.stream_last_seq {
            gauge(
                e,
                "orch_stream_last_seq",
                "The stream's last sequence",
                None,
                last,
            )?;
            let lag = last.saturating_sub(self.checkpoint);
            let help = "Events in the stream not yet in the projections";
            gauge(e, "orch_projection_lag_events", help, None, lag)?;
        }
        let help = "The last stream sequence the projections applied";
        gauge(e, "orch_projection_checkpoint", help, None, self.checkpoint)?;
        let mut rebuilds = e.encode_descriptor(
            "orch_projection_rebuilds",
            "Times the projection store was rebuilt from the log since the process started, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in &self.rebuilds {
            ConstCounter::new(*n)
                .encode(rebuilds.encode_family(&labels(&[("reason", reason)]))?)?;
        }
        if let Some(cap) = &self.capacity {
            capacity(e, cap, self.now_ms)?;
        }
        type Field = fn(&VmView) -> u32;
        let per_vm: [(&str, &str, Field); 3] = [
            ("orch_vm_capacity_slots", "A VM's capacity", |v| v.capacity),
            (
                "orch_vm_used_slots",
                "A VM's sessions (active + paused)",
                |v| v.used,
            ),
            ("orch_vm_free_slots", "A VM's free slots", |v| v.free),
        ];
        for (name, help, value) in per_vm {
            let samples = self.vms.iter().map(|vm| {
                let l = [("vm_id", vm.vm_id.as_str()), ("status", vm.status.as_str())];
                (labels(&l), value(vm))
            });
            gauges(e, name, help, samples)?;
        }
        Ok(())
    }
}

fn capacity(e: &mut DescriptorEncoder, cap: &Capacity, now_ms: i64) -> Result<(), std::fmt::Error> {
    let sessions = crate::domain::SessionStatus::ALL
        .into_iter()
        .map(|s| (labels(&[("status", s.as_str())]), cap.sessions.get(s)));
    gauges(e, "orch_sessions", "Sessions by status", sessions)?;
    let help = "Slots on available and draining VMs";
    gauge(e, "orch_capacity_slots", help, None, cap.capacity)?;
    gauge(
        e,
        "orch_capacity_used_slots",
        "Slots in use",
        None,
        cap.used,
    )?;
    let help = "Free slots on available VMs (placeable)";
    gauge(e, "orch_capacity_free_slots", help, None, cap.placeable)?;
    let vms = [
        ("available", cap.vms_available),
        ("draining", cap.vms_draining),
        ("retired", cap.vms_retired),
        ("lost", cap.vms_lost),
    ]
    .map(|(status, n)| (labels(&[("status", status)]), n));
    gauges(e, "orch_vms", "VMs by status", vms)?;
    let help = "Sessions waiting in the placement queue";
    gauge(e, "orch_queue_sessions", help, None, cap.queued)?;
    let oldest = cap
        .oldest_queued_since
        .map(|since| (now_ms - since).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    let help = "How long the longest-waiting queued session has waited (0: none waits)";
    gauge(
        e,
        "orch_queue_oldest_wait",
        help,
        Some(&Unit::Seconds),
        oldest,
    )?;
    let mut ended = e.encode_descriptor(
        "orch_sessions_ended",
        "Sessions ended, by reason, over the whole log (automatic ones: pause_timeout, placement_timeout, max_length, vm_lost)",
        None,
        MetricType::Counter,
    )?;
    for (reason, n) in &cap.ended_by_reason {
        let l = [("reason", reason.as_str())];
        ConstCounter::new(*n).encode(ended.encode_family(&l)?)?;
    }
    Ok(())
}
