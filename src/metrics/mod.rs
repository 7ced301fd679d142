//! The process's metrics: one [`prometheus_client`] registry per process, into which the writer,
//! the projector and the bridge register, and its exposition.
//!
//! - [`writer`]: [`WriterMetrics`], the writer's appends, recoveries, lease and commands.
//! - [`bridge`]: [`BridgeMetrics`], the commands a bridge sent and how long they took.
//! - [`feed`]: [`FeedMetrics`], the JSON feed's position, lag and messages republished.
//! - [`views`]: the gauges read at scrape time: the projections, the stream's last sequence, the
//!   NATS connections, the open event feeds.
//! - [`exposition`]: the text formats (Prometheus 0.0.4 and OpenMetrics 1.0) and how a scrape
//!   chooses one.
//! - [`listener`]: the metrics listener of `serve --metrics-addr`, for a process without a bridge.
//!
//! A [`Metrics`] handle is cheap to clone. `serve` makes one and hands it to every role: each role
//! registers its metrics once ([`Metrics::writer`], [`Metrics::bridge`] return the same handles
//! however often they are called, so a restarted role keeps counting where it was) and points the
//! scrape at what it reads ([`Metrics::watch_connection`], [`Metrics::watch_projections`],
//! [`Metrics::watch_feeds`]). Every metric of the process is in every scrape, the bridge's
//! `GET /metrics` and the metrics listener alike.

pub mod bridge;
pub mod exposition;
pub mod feed;
pub mod listener;
pub mod views;
pub mod writer;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use prometheus_client::registry::Registry;

use crate::http::feeds::FeedLimits;
use crate::log::Reader;
use crate::projections::Projections;

pub use bridge::{BridgeMetrics, Outcome};
pub use exposition::Format;
pub use feed::FeedMetrics;
pub use listener::MetricsError;
pub use writer::WriterMetrics;

/// The metrics of one process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: Mutex<Registry>,
    writer: OnceLock<WriterMetrics>,
    bridge: OnceLock<BridgeMetrics>,
    feed: OnceLock<FeedMetrics>,
    sources: Mutex<views::Sources>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with nothing registered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The writer's metrics, registered at the first call.
    pub fn writer(&self) -> WriterMetrics {
        self.inner
            .writer
            .get_or_init(|| WriterMetrics::register(&mut self.registry()))
            .clone()
    }

    /// The bridge's metrics, registered at the first call.
    pub fn bridge(&self) -> BridgeMetrics {
        self.inner
            .bridge
            .get_or_init(|| BridgeMetrics::register(&mut self.registry()))
            .clone()
    }

    /// The feed's metrics, registered at the first call.
    pub fn feed(&self) -> FeedMetrics {
        self.inner
            .feed
            .get_or_init(|| FeedMetrics::register(&mut self.registry()))
            .clone()
    }

    /// Counts `client` in `orch_nats_connected` under `name` (a role's connection; the same name
    /// again replaces it, as a restarted role does).
    pub fn watch_connection(&self, name: &'static str, client: async_nats::Client) {
        self.sources().connections.insert(name, client);
    }

    /// Reads the projections' gauges from `store`, and the stream's last sequence through
    /// `reader`, at every scrape.
    pub fn watch_projections(&self, store: Projections, reader: Reader) {
        self.sources().projections = Some((store, reader));
    }

    /// Reads `orch_http_event_feeds_open` from `feeds` at every scrape.
    pub fn watch_feeds(&self, feeds: FeedLimits) {
        self.sources().feeds = Some(feeds);
    }

    /// Every metric of the process in `format`: the registered ones, then the gauges read now.
    pub async fn scrape(&self, format: Format) -> String {
        let sources = self.sources().clone();
        let gauges = sources.read().await;
        let mut now = Registry::default();
        now.register_collector(Box::new(gauges));
        exposition::encode(format, &self.registry(), &now)
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A poisoned lock only means a panic while registering or encoding: the registry is
        // still whole (registering pushes, encoding reads).
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sources(&self) -> MutexGuard<'_, views::Sources> {
        // A poisoned lock only means a panic while swapping a handle: the others are intact.
        self.inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
