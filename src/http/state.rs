//! The state every handler shares: cheap handles to NATS, the projections and the log, plus this
//! bridge's in-process caches (rate buckets, in-flight keys, metrics). Nothing here is the
//! orchestrator's state: many bridges can run side by side.

use std::sync::Arc;
use std::time::Duration;

use orchestrator_events::CellId;
use tokio_util::sync::CancellationToken;

use super::args::BridgeArgs;
use super::feeds::FeedLimits;
use super::idempotency::InFlight;
use super::rate_limit::RateLimiter;
use super::server::HttpError;
use super::tokens::Tokens;
use crate::client::{CoalescingClient, CommandClient};
use crate::log::Reader;
use crate::metrics::{BridgeMetrics, Metrics};
use crate::projections::Projections;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Commands to the writer, concurrent ones packed into batch requests.
    pub(crate) commands: CoalescingClient,
    pub(crate) nats: async_nats::Client,
    pub(crate) store: Projections,
    pub(crate) reader: Reader,
    /// Reads for the event feeds: on a connection of their own when [`AppState::feeds_on`] gave
    /// one, so that a slow feed never fills the commands' connection.
    pub(crate) feed_reader: Reader,
    pub(crate) feeds: FeedLimits,
    pub(crate) tokens: Tokens,
    pub(crate) limiter: RateLimiter,
    pub(crate) in_flight: InFlight,
    /// This bridge's own counters.
    pub(crate) metrics: BridgeMetrics,
    /// Every metric of the process, which `/metrics` shows.
    pub(crate) process_metrics: Metrics,
    pub(crate) body_limit: usize,
    pub(crate) ryw_timeout: Duration,
    pub(crate) shutdown: CancellationToken,
    pub(crate) openapi: Arc<serde_json::Value>,
}

impl AppState {
    /// The state of a bridge configured by `args`: loads the tokens (at least one is required)
    /// and opens a reader of `cell`'s stream. `shutdown` also ends the event feeds. Its metrics
    /// are in a registry of its own.
    pub async fn new(
        args: &BridgeArgs,
        client: async_nats::Client,
        cell: CellId,
        store: Projections,
        shutdown: CancellationToken,
    ) -> Result<Self, HttpError> {
        Self::with_metrics(args, client, cell, store, shutdown, Metrics::new()).await
    }

    /// As [`AppState::new`], registering the bridge's metrics into the process's `metrics`.
    pub async fn with_metrics(
        args: &BridgeArgs,
        client: async_nats::Client,
        cell: CellId,
        store: Projections,
        shutdown: CancellationToken,
        metrics: Metrics,
    ) -> Result<Self, HttpError> {
        let mut tokens = Tokens::new();
        if let Some(path) = &args.tokens_file {
            tokens.add_file(path)?;
        }
        if let Some(spec) = &args.tokens {
            tokens.add_inline(spec)?;
        }
        if tokens.is_empty() {
            return Err(HttpError::Config(
                "no tokens: set ORCH_TOKENS (token=role:id,...) or --tokens-file".into(),
            ));
        }
        let reader = Reader::new(async_nats::jetstream::new(client.clone()), cell.clone()).await?;
        let feeds = FeedLimits::new(args.max_feeds_per_caller, args.max_feeds);
        metrics.watch_connection("bridge", client.clone());
        metrics.watch_projections(store.clone(), reader.clone());
        metrics.watch_feeds(feeds.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                commands: CoalescingClient::new(
                    CommandClient::new(client.clone(), cell, args.command_timeout),
                    args.command_requests.into(),
                ),
                nats: client,
                store,
                feed_reader: reader.clone(),
                feeds,
                reader,
                tokens,
                limiter: RateLimiter::new(args.rate_limit, args.rate_burst),
                in_flight: InFlight::new(),
                metrics: metrics.bridge(),
                process_metrics: metrics,
                body_limit: args.body_limit,
                ryw_timeout: args.read_your_writes_timeout,
                shutdown,
                openapi: Arc::new(super::openapi::document()),
            }),
        })
    }

    /// Reads the event feeds through `client` (a connection of their own) instead of the
    /// commands' connection.
    pub async fn feeds_on(mut self, client: async_nats::Client) -> Result<Self, HttpError> {
        let cell = self.inner.reader.cell().clone();
        let reader = Reader::new(async_nats::jetstream::new(client), cell).await?;
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.feed_reader = reader,
            None => {
                return Err(HttpError::Config(
                    "the feeds' connection must be set before the bridge serves".into(),
                ))
            }
        }
        Ok(self)
    }

    pub(crate) fn get(&self) -> &Inner {
        &self.inner
    }

    /// The projections this bridge reads.
    pub fn store(&self) -> &Projections {
        &self.inner.store
    }

    /// The largest body accepted.
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }
}
