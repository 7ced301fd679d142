//! The feed role's metrics: how far it republished the log, how far behind it is, and how many
//! messages it stored.
//!
//! A [`FeedMetrics`] made with [`Default`] is registered nowhere (tests run the role without a
//! registry).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The feed's metrics. Cheap to clone: every clone counts into the same metrics.
#[derive(Debug, Clone, Default)]
pub struct FeedMetrics {
    republished: Counter,
    position: Gauge,
    log_last_seq: Gauge,
    lag: Gauge,
}

impl FeedMetrics {
    /// New metrics, registered into `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "orch_feed_republished",
            "Events the feed stored in its stream as CloudEvents (duplicates the server dropped not counted)",
            m.republished.clone(),
        );
        registry.register(
            "orch_feed_position",
            "The last log sequence the feed republished (or skipped: foreign, quarantined)",
            m.position.clone(),
        );
        registry.register(
            "orch_feed_lag_events",
            "Log messages not republished yet: the log's last sequence minus the feed's position",
            m.lag.clone(),
        );
        m
    }

    /// `stored` messages were stored, and the feed is done with the log up to `position`.
    pub fn advanced(&self, stored: u64, position: u64) {
        self.republished.inc_by(stored);
        self.set_position(position);
    }

    /// The feed starts (or resumes) after `position`.
    pub fn set_position(&self, position: u64) {
        self.position.set(gauge(position));
        self.update_lag();
    }

    /// The log's last sequence, as last read.
    pub fn log_last_seq(&self, last: u64) {
        self.log_last_seq.set(gauge(last));
        self.update_lag();
    }

    /// The lag now, in events.
    pub fn lag(&self) -> u64 {
        (self.log_last_seq.get() - self.position.get()).max(0) as u64
    }

    /// The messages stored so far.
    pub fn republished(&self) -> u64 {
        self.republished.get()
    }

    fn update_lag(&self) {
        let behind = (self.log_last_seq.get() - self.position.get()).max(0);
        self.lag.set(behind);
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
