//! The writer's metrics: its appends (in flight, batch sizes, time to the server's ack), its
//! recoveries, its lease, and the commands it answered.
//!
//! A [`WriterMetrics`] made with [`Default`] is registered nowhere: it counts for nobody, so a
//! writer run without a registry (most tests) needs nothing.

use std::future::Future;
use std::time::Instant;

use futures::future::BoxFuture;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::writer::Reply;

/// Upper bounds of the append latency's buckets, in seconds (an fsync takes a few milliseconds).
pub const APPEND_LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Events per append batch: 1, 2, 4, ... 1,024.
const BATCH_BUCKETS: u16 = 11;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    outcome: &'static str,
    code: String,
}

/// The writer's metrics. Cheap to clone: every clone counts into the same metrics.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    appends_in_flight: Gauge,
    batch_events: Histogram,
    append_duration: Histogram,
    recoveries: Counter,
    lease_held: Gauge,
    takeovers: Counter,
    commands: Family<OutcomeLabels, Counter>,
    rejections: Family<CodeLabels, Counter>,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        Self {
            appends_in_flight: Gauge::default(),
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, BATCH_BUCKETS)),
            append_duration: Histogram::new(APPEND_LATENCY_BUCKETS),
            recoveries: Counter::default(),
            lease_held: Gauge::default(),
            takeovers: Counter::default(),
            commands: Family::default(),
            rejections: Family::default(),
        }
    }
}

impl WriterMetrics {
    /// New metrics, registered into `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "orch_writer_appends_in_flight",
            "Appends sent to the log and not yet acknowledged",
            m.appends_in_flight.clone(),
        );
        registry.register(
            "orch_writer_append_batch_events",
            "Events per append sent to the log (1 for a single append, more for a batch)",
            m.batch_events.clone(),
        );
        registry.register_with_unit(
            "orch_writer_append_duration",
            "Time from sending an append to the server's ack (with sync_interval always, this includes the fsync)",
            Unit::Seconds,
            m.append_duration.clone(),
        );
        registry.register(
            "orch_writer_recoveries",
            "Times the writer recovered its state from the log after a failed append",
            m.recoveries.clone(),
        );
        registry.register(
            "orch_writer_lease_held",
            "1 while this writer holds the cell's lease (active), 0 while it stands by",
            m.lease_held.clone(),
        );
        registry.register(
            "orch_writer_takeovers",
            "Times this writer took the cell's lease and became the active writer",
            m.takeovers.clone(),
        );
        registry.register(
            "orch_writer_commands",
            "Commands the writer answered, by outcome (accepted, duplicate, rejected, error)",
            m.commands.clone(),
        );
        registry.register(
            "orch_writer_command_rejections",
            "Commands the writer refused, by outcome (rejected: by the domain; error: by the protocol or the log) and code",
            m.rejections.clone(),
        );
        m
    }

    /// An append of `len` events was sent (a single append: 1, a batch: its events): it counts
    /// in `orch_writer_appends_in_flight` until the returned guard is dropped, and its latency is
    /// recorded when its ack comes ([`InFlightAppend::track`]).
    pub fn observe_batch(&self, len: usize) -> InFlightAppend {
        self.batch_events.observe(len as f64);
        self.appends_in_flight.inc();
        InFlightAppend {
            metrics: self.clone(),
            sent: Instant::now(),
        }
    }

    /// The state was recovered from the log after a failed append.
    pub fn recovered(&self) {
        self.recoveries.inc();
    }

    /// The lease was taken: this writer is active.
    pub fn lease_taken(&self) {
        self.lease_held.set(1);
        self.takeovers.inc();
    }

    /// The lease is gone (lost, released, given up): this writer stands by.
    pub fn lease_gone(&self) {
        self.lease_held.set(0);
    }

    /// A command was answered with `reply`.
    pub fn answered(&self, reply: &Reply) {
        let (outcome, code) = match reply {
            Reply::Accepted {
                duplicate: false, ..
            } => ("accepted", None),
            Reply::Accepted {
                duplicate: true, ..
            } => ("duplicate", None),
            Reply::Rejected {
                code,
                rejection: Some(_),
                ..
            } => ("rejected", Some(code)),
            Reply::Rejected { code, .. } => ("error", Some(code)),
        };
        self.commands
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if let Some(code) = code {
            let labels = CodeLabels {
                outcome,
                code: code.clone(),
            };
            self.rejections.get_or_create(&labels).inc();
        }
    }
}

/// An append in flight: counted in `orch_writer_appends_in_flight` until dropped.
#[derive(Debug)]
pub struct InFlightAppend {
    metrics: WriterMetrics,
    sent: Instant,
}

impl InFlightAppend {
    /// `ack`, recording the time from the send to a successful ack; in flight until it resolves
    /// (or is dropped).
    pub fn track<F, T, E>(self, ack: F) -> BoxFuture<'static, Result<T, E>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        Box::pin(async move {
            let result = ack.await;
            if result.is_ok() {
                let took = self.sent.elapsed();
                self.metrics.append_duration.observe(took.as_secs_f64());
            }
            result
        })
    }
}

impl Drop for InFlightAppend {
    fn drop(&mut self) {
        self.metrics.appends_in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Format, Metrics};

    #[tokio::test]
    async fn appends_lease_and_outcomes_are_exposed() {
        let metrics = Metrics::new();
        let w = metrics.writer();
        w.lease_taken();
        let (ack, acked) = tokio::sync::oneshot::channel::<()>();
        let append = tokio::spawn(w.observe_batch(1).track(acked));
        let text = metrics.scrape(Format::Prometheus).await;
        assert!(text.contains("orch_writer_appends_in_flight 1\n"), "{text}");
        ack.send(()).expect("the append waits");
        append.await.expect("the append ends").expect("acked");
        w.answered(&Reply::error("unavailable", "no"));
        let text = metrics.scrape(Format::OpenMetrics).await;
        for line in [
            "orch_writer_appends_in_flight 0\n",
            "orch_writer_lease_held 1\n",
            "orch_writer_takeovers_total 1\n",
            "orch_writer_append_batch_events_bucket{le=\"1.0\"} 1\n",
            "orch_writer_append_duration_seconds_count 1\n",
            "# UNIT orch_writer_append_duration_seconds seconds\n",
            "orch_writer_commands_total{outcome=\"error\"} 1\n",
            "orch_writer_command_rejections_total{outcome=\"error\",code=\"unavailable\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(metrics.writer().takeovers.get(), 1, "registered once");
    }
}
