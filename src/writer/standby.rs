//! A standby writer's own copy of the state, folded as the log grows, so that taking over needs no
//! replay.
//!
//! While a writer waits for the lease, a [`Follower`] starts from the snapshot on its data
//! directory (when one is there and valid against the log) and folds every later message of the
//! log into its own [`State`](crate::domain::State) as it is appended, through an ordered consumer
//! that keeps its own position ([`Reader::entries_from`]). On taking the lease the writer stops it
//! ([`Follower::take`]) and recovers from its state ([`recovery::recover_from`]): the log is checked
//! to still hold the state's last event, then only the messages appended since the last fold are
//! read. The state is therefore exactly the log's, as a cold recovery's is.
//!
//! A read that fails (NATS gone, a message no reader can decode) is opened again at the state's
//! position after a backoff; what was folded stays. The follower's position is published on a
//! watch channel ([`Follower::position`]), for tests and the benchmark.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::recovery::{self, Folded};
use super::WriterConfig;
use crate::domain::DomainConfig;
use crate::log::{LogError, Reader};

/// The longest pause between two attempts to follow the log.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A background task folding the log into a standby's state.
#[derive(Debug)]
pub struct Follower {
    stop: CancellationToken,
    position: watch::Receiver<u64>,
    task: Option<JoinHandle<Option<Folded>>>,
}

impl Follower {
    /// Starts following `config`'s cell from the snapshot on its data directory, if any.
    pub fn spawn(js: async_nats::jetstream::Context, config: &WriterConfig) -> Self {
        let cell = config.log.cell.clone();
        let snapshot = config
            .data_dir
            .as_ref()
            .map(|d| recovery::snapshot_path(d, &cell));
        let stop = CancellationToken::new();
        let (tx, position) = watch::channel(0);
        let task = tokio::spawn(follow(
            js,
            cell,
            config.domain.clone(),
            snapshot,
            tx,
            stop.clone(),
        ));
        Self {
            stop,
            position,
            task: Some(task),
        }
    }

    /// The position (last sequence) of the state folded so far, updated as it moves.
    pub fn position(&self) -> watch::Receiver<u64> {
        self.position.clone()
    }

    /// Stops following and returns the state folded so far: a prefix of the log, from its start.
    /// `None` when it did not get as far as a starting point (the snapshot and the log were still
    /// being read).
    pub async fn take(mut self) -> Option<Folded> {
        self.stop.cancel();
        let task = self.task.take()?;
        match task.await {
            Ok(folded) => folded,
            Err(e) => {
                tracing::warn!(error = %e, "the standby's follower failed");
                None
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Folds the log into a state until `stop` fires, then returns it.
async fn follow(
    js: async_nats::jetstream::Context,
    cell: orchestrator_events::CellId,
    domain: DomainConfig,
    snapshot: Option<PathBuf>,
    position: watch::Sender<u64>,
    stop: CancellationToken,
) -> Option<Folded> {
    let mut folded: Option<Folded> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let reader = Reader::new(js.clone(), cell.clone()).await?;
            let folded = match &mut folded {
                Some(folded) => folded,
                None => {
                    let (start, snapshot_seq) =
                        recovery::starting_point(&reader, &domain, snapshot.as_deref()).await?;
                    tracing::info!(
                        seq = start.state.last_seq,
                        snapshot_seq,
                        "standby: following the log"
                    );
                    folded.insert(start)
                }
            };
            position.send_replace(folded.state.last_seq);
            let mut entries = reader.entries_from(folded.state.last_seq + 1).await?;
            while let Some(entry) = entries.next().await {
                folded.fold(&entry?);
                position.send_replace(folded.state.last_seq);
                backoff = Duration::from_millis(100);
            }
            Err::<Infallible, _>(LogError::Jetstream("the log's follow ended".into()))
        };
        let e = tokio::select! {
            biased;
            _ = stop.cancelled() => return folded,
            ended = attempt => match ended {
                Ok(never) => match never {},
                Err(e) => e,
            },
        };
        tracing::warn!(
            error = %e,
            seq = folded.as_ref().map(|f| f.state.last_seq),
            "standby: following the log failed, trying again"
        );
        tokio::select! {
            _ = stop.cancelled() => return folded,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
