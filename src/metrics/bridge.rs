//! The bridge's metrics: every request it answered by route, method and status, and how long it
//! took; the commands it sent to the writer, their outcomes and how long the writer took to answer.
//! Each bridge of many counts what it served.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the command latency's buckets, in seconds.
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    command: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    command: &'static str,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

/// The `route` label of a request that matched no route: one value, whatever the URI, so that
/// scanners cannot grow the label set.
pub const UNMATCHED_ROUTE: &str = "unmatched";

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The bridge's command counters and latencies. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BridgeMetrics {
    commands: Family<OutcomeLabels, Counter>,
    rejections: Family<CodeLabels, Counter>,
    duration: Family<CommandLabels, Histogram>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
}

impl BridgeMetrics {
    /// New metrics, registered into `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            commands: Family::default(),
            rejections: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "orch_http_requests",
            "Requests this bridge answered, by route template, method and status",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "orch_http_request_duration",
            "Time from a request's arrival to its response's head (an event feed's stream not included)",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        registry.register(
            "orch_http_commands",
            "Commands this bridge sent to the writer, by outcome",
            m.commands.clone(),
        );
        registry.register(
            "orch_http_command_rejections",
            "Commands the writer refused, by code",
            m.rejections.clone(),
        );
        registry.register_with_unit(
            "orch_http_command_duration",
            "Time from sending a command to the writer's answer",
            Unit::Seconds,
            m.duration.clone(),
        );
        m
    }

    /// Counts one answered request. `route` is the matched route's template (`/v1/sessions/{id}`)
    /// or [`UNMATCHED_ROUTE`], never the raw path.
    pub fn record_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let route = route.to_owned();
        let method = method.to_owned();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method.clone(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels { route, method })
            .observe(took.as_secs_f64());
    }

    /// Counts one command and its latency.
    pub fn record(
        &self,
        command: &'static str,
        outcome: Outcome,
        code: Option<&str>,
        took: Duration,
    ) {
        let outcome = outcome.as_str();
        self.commands
            .get_or_create(&OutcomeLabels { command, outcome })
            .inc();
        if let Some(code) = code {
            let labels = CodeLabels {
                command,
                code: code.to_owned(),
            };
            self.rejections.get_or_create(&labels).inc();
        }
        self.duration
            .get_or_create(&CommandLabels { command })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Format, Metrics};

    #[tokio::test]
    async fn counters_and_cumulative_buckets() {
        let metrics = Metrics::new();
        let m = metrics.bridge();
        m.record("start", Outcome::Accepted, None, Duration::from_millis(3));
        m.record(
            "start",
            Outcome::Rejected,
            Some("no_capacity"),
            Duration::from_secs(60),
        );
        let text = metrics.scrape(Format::Prometheus).await;
        for line in [
            "# TYPE orch_http_commands_total counter\n",
            "orch_http_commands_total{command=\"start\",outcome=\"accepted\"} 1\n",
            "orch_http_command_rejections_total{command=\"start\",code=\"no_capacity\"} 1\n",
            "# TYPE orch_http_command_duration_seconds histogram\n",
            "orch_http_command_duration_seconds_bucket{command=\"start\",le=\"0.0025\"} 0\n",
            "orch_http_command_duration_seconds_bucket{command=\"start\",le=\"0.005\"} 1\n",
            "orch_http_command_duration_seconds_bucket{command=\"start\",le=\"+Inf\"} 2\n",
            "orch_http_command_duration_seconds_count{command=\"start\"} 2\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(
            !text.contains("orch_projection_lag_events"),
            "no lag without the stream's last seq"
        );
        assert!(!text.contains("# EOF"), "the Prometheus format has no EOF");
    }

    #[tokio::test]
    async fn label_values_are_escaped() {
        let metrics = Metrics::new();
        let m = metrics.bridge();
        m.record("end", Outcome::Rejected, Some("a\"b\\c\nd"), Duration::ZERO);
        let text = metrics.scrape(Format::Prometheus).await;
        assert!(text.contains(r#"code="a\"b\\c\nd""#), "{text}");
    }
}
