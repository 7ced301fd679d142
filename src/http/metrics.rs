//! The bridge's metrics and a small Prometheus text-format (0.0.4) encoder.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `orch_http_commands_total` | counter | `command`, `outcome` (`accepted`, `duplicate`, `rejected`, `unavailable`) |
//! | `orch_http_command_rejections_total` | counter | `command`, `code` |
//! | `orch_http_command_duration_seconds` | histogram | `command` |
//! | `orch_nats_connected` | gauge | |
//! | `orch_nats_disconnects_total` | counter | (every NATS connection of the process: each role has its own) |
//! | `orch_http_event_feeds_open` | gauge | |
//! | `orch_stream_last_seq`, `orch_projection_checkpoint`, `orch_projection_lag_events` | gauge | |
//! | `orch_sessions` | gauge | `status` |
//! | `orch_capacity_slots`, `orch_capacity_used_slots`, `orch_capacity_free_slots` | gauge | |
//! | `orch_vm_capacity_slots`, `orch_vm_used_slots`, `orch_vm_free_slots` | gauge | `vm_id`, `status` |
//! | `orch_vms` | gauge | `status` (`available`, `draining`, `retired`, `lost`) |
//! | `orch_queue_sessions`, `orch_queue_oldest_wait_seconds` | gauge | |
//! | `orch_sessions_ended_total` | counter (from the log) | `reason` |
//!
//! The counters and the histogram are this bridge's own (each bridge of many counts what it served);
//! the gauges are read from the projections and the stream when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::projections::{Capacity, VmView};

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What became of a command sent to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Applied now.
    Accepted,
    /// Applied earlier: a retry.
    Duplicate,
    /// Refused.
    Rejected,
    /// No answer: may or may not be applied.
    Unavailable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
            Outcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commands: BTreeMap<(&'static str, Outcome), u64>,
    rejections: BTreeMap<(&'static str, String), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

/// This bridge's command counters and latencies.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

/// The gauges read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Whether the NATS client is connected.
    pub nats_connected: bool,
    /// Event feeds open now.
    pub feeds_open: usize,
    /// The stream's last sequence, when it could be read.
    pub stream_last_seq: Option<u64>,
    /// The projections' checkpoint.
    pub checkpoint: u64,
    /// Capacity and sessions per status, when the store could be read.
    pub capacity: Option<Capacity>,
    /// Every VM, when the store could be read.
    pub vms: Vec<VmView>,
    /// The time of the scrape, in milliseconds since the epoch (for the queue's oldest wait).
    pub now_ms: i64,
}

impl Metrics {
    /// No commands counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one command and its latency.
    pub fn record(
        &self,
        command: &'static str,
        outcome: Outcome,
        code: Option<&str>,
        took: Duration,
    ) {
        // A poisoned lock only means a panic mid-update of plain counters: keep counting.
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *c.commands.entry((command, outcome)).or_default() += 1;
        if let Some(code) = code {
            *c.rejections.entry((command, code.to_owned())).or_default() += 1;
        }
        let h = c.latency.entry(command).or_default();
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        h.counts[i] += 1;
        h.sum += secs;
        h.count += 1;
    }

    /// The text exposition of every metric.
    pub fn render(&self, g: &Gauges) -> String {
        let c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        header(
            &mut out,
            "orch_http_commands_total",
            "counter",
            "Commands this bridge sent to the writer, by outcome.",
        );
        for ((command, outcome), n) in &c.commands {
            sample(
                &mut out,
                "orch_http_commands_total",
                &[("command", command), ("outcome", outcome.as_str())],
                *n as f64,
            );
        }
        header(
            &mut out,
            "orch_http_command_rejections_total",
            "counter",
            "Commands the writer refused, by code.",
        );
        for ((command, code), n) in &c.rejections {
            sample(
                &mut out,
                "orch_http_command_rejections_total",
                &[("command", command), ("code", code)],
                *n as f64,
            );
        }
        let name = "orch_http_command_duration_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time from sending a command to the writer's answer.",
        );
        for (command, h) in &c.latency {
            let mut cumulative = 0;
            for (i, n) in h.counts.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or("+Inf".to_owned(), |b| b.to_string());
                sample(
                    &mut out,
                    &format!("{name}_bucket"),
                    &[("command", command), ("le", &le)],
                    cumulative as f64,
                );
            }
            sample(
                &mut out,
                &format!("{name}_sum"),
                &[("command", command)],
                h.sum,
            );
            sample(
                &mut out,
                &format!("{name}_count"),
                &[("command", command)],
                h.count as f64,
            );
        }
        drop(c);
        gauge(
            &mut out,
            "orch_nats_connected",
            "1 when the bridge's NATS client is connected.",
            f64::from(u8::from(g.nats_connected)),
        );
        header(
            &mut out,
            "orch_nats_disconnects_total",
            "counter",
            "NATS connections of this process lost so far (each reconnects on its own).",
        );
        sample(
            &mut out,
            "orch_nats_disconnects_total",
            &[],
            crate::log::connection::disconnects() as f64,
        );
        gauge(
            &mut out,
            "orch_http_event_feeds_open",
            "Event feeds (GET /v1/events) this bridge serves now.",
            g.feeds_open as f64,
        );
        if let Some(last) = g.stream_last_seq {
            gauge(
                &mut out,
                "orch_stream_last_seq",
                "The stream's last sequence.",
                last as f64,
            );
            gauge(
                &mut out,
                "orch_projection_lag_events",
                "Events in the stream not yet in the projections.",
                last.saturating_sub(g.checkpoint) as f64,
            );
        }
        gauge(
            &mut out,
            "orch_projection_checkpoint",
            "The last stream sequence the projections applied.",
            g.checkpoint as f64,
        );
        if let Some(cap) = &g.capacity {
            header(&mut out, "orch_sessions", "gauge", "Sessions by status.");
            for s in crate::domain::SessionStatus::ALL {
                sample(
                    &mut out,
                    "orch_sessions",
                    &[("status", s.as_str())],
                    cap.sessions.get(s) as f64,
                );
            }
            gauge(
                &mut out,
                "orch_capacity_slots",
                "Slots on available and draining VMs.",
                cap.capacity as f64,
            );
            gauge(
                &mut out,
                "orch_capacity_used_slots",
                "Slots in use.",
                cap.used as f64,
            );
            gauge(
                &mut out,
                "orch_capacity_free_slots",
                "Free slots on available VMs (placeable).",
                cap.placeable as f64,
            );
            header(&mut out, "orch_vms", "gauge", "VMs by status.");
            for (status, n) in [
                ("available", cap.vms_available),
                ("draining", cap.vms_draining),
                ("retired", cap.vms_retired),
                ("lost", cap.vms_lost),
            ] {
                sample(&mut out, "orch_vms", &[("status", status)], f64::from(n));
            }
            gauge(
                &mut out,
                "orch_queue_sessions",
                "Sessions waiting in the placement queue.",
                cap.queued as f64,
            );
            let oldest = cap
                .oldest_queued_since
                .map(|since| (g.now_ms - since).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            gauge(
                &mut out,
                "orch_queue_oldest_wait_seconds",
                "How long the longest-waiting queued session has waited (0: none waits).",
                oldest,
            );
            header(
                &mut out,
                "orch_sessions_ended_total",
                "counter",
                "Sessions ended, by reason, over the whole log (automatic ones: pause_timeout, placement_timeout, max_length, vm_lost).",
            );
            for (reason, n) in &cap.ended_by_reason {
                sample(
                    &mut out,
                    "orch_sessions_ended_total",
                    &[("reason", reason)],
                    *n as f64,
                );
            }
        }
        for (name, help, value) in [
            (
                "orch_vm_capacity_slots",
                "A VM's capacity.",
                (|v: &VmView| v.capacity) as fn(&VmView) -> u32,
            ),
            (
                "orch_vm_used_slots",
                "A VM's sessions (active + paused).",
                |v: &VmView| v.used,
            ),
            ("orch_vm_free_slots", "A VM's free slots.", |v: &VmView| {
                v.free
            }),
        ] {
            header(&mut out, name, "gauge", help);
            for vm in &g.vms {
                sample(
                    &mut out,
                    name,
                    &[("vm_id", vm.vm_id.as_str()), ("status", vm.status.as_str())],
                    f64::from(value(vm)),
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    sample(out, name, &[], value);
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::new();
        m.record("start", Outcome::Accepted, None, Duration::from_millis(3));
        m.record(
            "start",
            Outcome::Rejected,
            Some("no_capacity"),
            Duration::from_secs(60),
        );
        let text = m.render(&Gauges::default());
        assert!(
            text.contains("orch_http_commands_total{command=\"start\",outcome=\"accepted\"} 1\n")
        );
        assert!(text.contains(
            "orch_http_command_rejections_total{command=\"start\",code=\"no_capacity\"} 1\n"
        ));
        assert!(text.contains(
            "orch_http_command_duration_seconds_bucket{command=\"start\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains(
            "orch_http_command_duration_seconds_bucket{command=\"start\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "orch_http_command_duration_seconds_bucket{command=\"start\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains("orch_http_command_duration_seconds_count{command=\"start\"} 2\n"));
        assert!(
            !text.contains("orch_projection_lag_events"),
            "no lag without the stream's last seq"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
