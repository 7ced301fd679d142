//! The cell's single writer: receives commands, decides, appends, replies.
//!
//! - [`protocol`]: requests and replies on `orch.<cell>.cmd.<name>`.
//! - [`recovery`]: the state from a snapshot plus the tail of the log.
//! - [`standby`]: a standby's own state, folded as the log grows.
//! - [`pipeline`]: decide and append with many appends in flight.
//!
//! A writer first takes the cell's lease. A standby waits here, following the log into a state of
//! its own (from the snapshot on its data directory, if one is there), so that on taking the lease
//! it only reads the tail it has not folded yet: with the default lease TTL (1 s) it serves about
//! 1 s after the active writer died. It then subscribes
//! to the command subjects. Each command is decided against the state including the appends still in
//! flight, and appended with `Nats-Expected-Last-Sequence` = the sequence before it and
//! `Nats-Msg-Id` = its event id. Replies leave in command order, once every earlier append is
//! acknowledged. When an append fails (another writer appended, NATS went away), the writer waits for
//! the rest of the pipeline, recovers its state from the log, and decides the failed commands again.
//! When the lease is lost it stops deciding and goes back to standby. When it cannot make progress
//! (its recoveries keep failing, or the log holds a message it cannot decode) it gives up the lease
//! and waits three lease lifetimes before standing by again, so another writer can take over.

pub mod pipeline;
pub mod protocol;
pub mod recovery;
pub mod standby;

use std::path::PathBuf;
use std::time::Duration;

use orchestrator_events::CellId;
use tokio_util::sync::CancellationToken;

use crate::domain::timers::TimerConfig;
use crate::domain::DomainConfig;
use crate::log::{self, LeaseError, LogConfig, LogError};
use crate::metrics::WriterMetrics;

pub use pipeline::{Term, MAX_FRUITLESS_RECOVERIES};
pub use protocol::{Reply, Request};

/// How a writer runs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The log: cell, replicas, duplicate window.
    pub log: LogConfig,
    /// This writer's name in the lease (host and process, say).
    pub holder_id: String,
    /// The domain's tunables.
    pub domain: DomainConfig,
    /// The data directory: snapshots go to `<data_dir>/writer/<cell>.snapshot`. `None`: no
    /// snapshots, recover from the whole log.
    pub data_dir: Option<PathBuf>,
    /// Take a snapshot every this many events.
    pub snapshot_every: u64,
    /// And at least this often while events come (so that a writer killed before its
    /// `snapshot_every`-th event still leaves a recent snapshot to the next one).
    pub snapshot_interval: Duration,
    /// The most commands in flight at once (decided, not yet answered).
    pub max_in_flight: usize,
    /// Group commit: on servers with atomic batches (2.12+), appends decided while one is in flight
    /// leave together as one batch, stored with one fsync. Off (or on older servers), appends are
    /// pipelined one by one. Worth it when the server fsyncs every message (`sync_interval:
    /// always`); otherwise a batch (which the server fsyncs) costs more than pipelined appends.
    pub group_commit: bool,
    /// The lease's time to live: a standby takes over within about this long after the active
    /// writer died; an active writer that cannot renew it for this long (a pause, a partition)
    /// loses it (see [`log::lease`]).
    pub lease_ttl: Duration,
    /// How long the writer waits for an append's ack before it recovers from the log (a lost
    /// connection that comes back sooner ends the wait at once).
    pub ack_timeout: Duration,
    /// The cell's timeouts and heartbeat deadline.
    pub timers: TimerConfig,
    /// How often the active writer looks for due timers, lost VMs and room for queued sessions.
    pub tick: Duration,
    /// Where the writer counts (registered nowhere by default; `serve` gives the process's).
    pub metrics: WriterMetrics,
}

impl WriterConfig {
    /// The defaults for a cell.
    pub fn new(cell: CellId) -> Self {
        Self {
            log: LogConfig::new(cell),
            holder_id: format!("writer-{}", uuid::Uuid::new_v4()),
            domain: DomainConfig::default(),
            data_dir: None,
            snapshot_every: 100_000,
            snapshot_interval: Duration::from_secs(60),
            max_in_flight: 512,
            group_commit: false,
            lease_ttl: log::DEFAULT_LEASE_TTL,
            ack_timeout: pipeline::ACK_TIMEOUT,
            timers: TimerConfig::default(),
            tick: Duration::from_millis(100),
            metrics: WriterMetrics::default(),
        }
    }
}

/// Why a writer stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The log could not be set up or read in a way that retrying will not fix (a conflicting
    /// stream, an undecodable event). Needs an operator.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The lease bucket failed in a way that retrying will not fix.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Subscribing to the command subjects failed.
    #[error("subscribing to commands: {0}")]
    Subscribe(String),
}

/// Runs a writer until `shutdown` fires: standby until it holds the lease, then the active writer
/// until the lease is lost (then standby again).
pub async fn run(
    client: async_nats::Client,
    config: WriterConfig,
    shutdown: CancellationToken,
) -> Result<(), WriterError> {
    let js = async_nats::jetstream::new(client.clone());
    log::ensure_stream(&js, &config.log).await?;
    let kv = log::ensure_lease_bucket(&js, log::DEFAULT_LEASE_BUCKET, config.log.replicas).await?;
    let cell = config.log.cell.clone();
    loop {
        tracing::info!(cell = %cell, holder = %config.holder_id, "standby: waiting for the writer lease");
        let follower = standby::Follower::spawn(js.clone(), &config);
        let lease =
            match log::Lease::acquire(&kv, &cell, &config.holder_id, config.lease_ttl, &shutdown)
                .await
            {
                Ok(lease) => lease,
                Err(LeaseError::Cancelled) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
        tracing::info!(cell = %cell, holder = %config.holder_id, "active: holding the writer lease");
        config.metrics.lease_taken();
        let handle = lease.keep_alive();
        let warm = follower.take().await;
        let term =
            pipeline::lead(&client, &js, &config, warm, handle.lost(), shutdown.clone()).await;
        if let Err(e) = handle.release().await {
            tracing::warn!(error = %e, "releasing the writer lease");
        }
        config.metrics.lease_gone();
        match term? {
            Term::Shutdown => return Ok(()),
            Term::LeaseLost => tracing::warn!(cell = %cell, "writer lease lost: back to standby"),
            Term::SteppedDown(why) => {
                // Leave the lease to a standby for a while: one that can make progress takes it.
                let pause = config.lease_ttl * 3;
                tracing::error!(
                    cell = %cell,
                    reason = %why,
                    pause_ms = pause.as_millis() as u64,
                    "writer cannot make progress: gave up the lease, standby after a pause"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}
