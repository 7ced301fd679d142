//! The feed role: follows the log from where the feed stream ends and republishes each event as a
//! CloudEvent, a batch at a time (the publishes of a batch pipelined, their acks awaited in order).

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use futures::{FutureExt, StreamExt};
use orchestrator_events::CellId;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{start_position, Checkpoint, CheckpointFile};
use super::message::feed_message;
use super::stream::{ensure_feed_stream, feed_end};
use super::{FeedConfig, FeedError};
use crate::log::{Entry, EntryStream, LogError, Reader, SkipReason};
use crate::metrics::FeedMetrics;

/// The most log messages republished in one batch (publishes in flight at once).
pub const BATCH: usize = 1_000;

/// How often the lag is measured and the checkpoint file saved.
const TICK: Duration = Duration::from_secs(1);

/// How long the role waits before reading again past an event it cannot decode.
const DECODE_RETRY: Duration = Duration::from_secs(2);

/// Republishes `config.cell`'s log into its feed stream until `shutdown` fires, on `client` (a
/// connection of the role's own). Returns an error for `serve` to restart it; a restart resumes
/// from the feed stream's end (see [`super`] for why that is exactly once).
pub async fn run(
    client: async_nats::Client,
    config: FeedConfig,
    metrics: FeedMetrics,
    shutdown: CancellationToken,
) -> Result<(), FeedError> {
    let js = jetstream::new(client);
    let reader = Reader::new(js.clone(), config.cell.clone()).await?;
    let log = reader.identity().await?;
    let mut stream = ensure_feed_stream(&js, &config, &log).await?;
    let created = stream
        .cached_info()
        .created
        .unix_timestamp_nanos()
        .to_string();
    let file = CheckpointFile::new(config.checkpoint_dir.as_deref(), &config.cell);
    let end = feed_end(&mut stream).await?;
    let mut position = start_position(end, file.load(), &created)?;
    metrics.set_position(position);
    metrics.log_last_seq(log.last_seq);
    tracing::info!(from = position + 1, feed_end = ?end, "feed: republishing the log");
    let mut publisher = Publisher {
        js,
        cell: config.cell.clone(),
        previous: None,
        metrics: metrics.clone(),
    };
    let mut saver = Saver {
        file,
        created,
        saved: position,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut entries = tokio::select! {
            _ = shutdown.cancelled() => return saver.save(position),
            r = reader.entries_from(position + 1) => r?,
        };
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return saver.save(position),
                _ = tick.tick() => {
                    if let Ok(Ok(last)) = tokio::time::timeout(TICK, reader.last_seq()).await {
                        metrics.log_last_seq(last);
                    }
                    saver.save(position)?;
                }
                batch = next_batch(&mut entries) => {
                    let Some((batch, error)) = batch else { break };
                    position = publisher.publish(position, batch).await?;
                    match error {
                        None => {}
                        Some(e @ LogError::Decode { .. }) => {
                            tracing::error!(
                                error = %e,
                                "feed: an event it cannot decode; upgrade, or quarantine it \
                                 (`orchestrator quarantine <seq> --reason ...`); retrying"
                            );
                            tokio::select! {
                                _ = shutdown.cancelled() => return saver.save(position),
                                _ = tokio::time::sleep(DECODE_RETRY) => {}
                            }
                            break;
                        }
                        Some(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

/// Reads the next batch: waits for one message, then takes those already there, up to [`BATCH`].
/// An error ends the batch and comes with the messages read before it. `None` when the read ended.
async fn next_batch(entries: &mut EntryStream) -> Option<(Vec<Entry>, Option<LogError>)> {
    let mut batch = Vec::new();
    match entries.next().await? {
        Ok(entry) => batch.push(entry),
        Err(e) => return Some((batch, Some(e))),
    }
    while batch.len() < BATCH {
        match entries.next().now_or_never() {
            Some(Some(Ok(entry))) => batch.push(entry),
            Some(Some(Err(e))) => return Some((batch, Some(e))),
            Some(None) | None => break,
        }
    }
    Some((batch, None))
}

/// Publishes feed messages, each expecting the one before it.
struct Publisher {
    js: jetstream::Context,
    cell: CellId,
    /// The event id of the last message of this batch so far: the next one must follow it.
    previous: Option<String>,
    metrics: FeedMetrics,
}

impl Publisher {
    /// Republishes `batch` (which follows `position`) and returns the new position once every
    /// publish is acknowledged.
    async fn publish(&mut self, mut position: u64, batch: Vec<Entry>) -> Result<u64, FeedError> {
        let mut acks: Vec<(u64, Option<PublishAckFuture>)> = Vec::with_capacity(batch.len());
        // Every publish before this batch is acknowledged: its first message follows a stored one
        // and needs no check (the server's memory of the last message id is only sure within the
        // duplicate window, and the feed may have been idle longer).
        self.previous = None;
        for entry in batch {
            match entry {
                Entry::Skipped(s) => {
                    match &s.why {
                        SkipReason::QuarantineRecord(_) => {
                            tracing::debug!(seq = s.seq, why = %s.why.describe(), "feed: not an event")
                        }
                        why => tracing::warn!(
                            seq = s.seq,
                            subject = %s.subject,
                            why = %why.describe(),
                            "feed: message skipped, no feed message for it"
                        ),
                    }
                    acks.push((s.seq, None));
                }
                Entry::Event(e) => {
                    let msg =
                        feed_message(&self.cell, e.seq, &e.envelope, self.previous.as_deref());
                    let ack = self
                        .js
                        .publish_with_headers(msg.subject, msg.headers, msg.body.into())
                        .await
                        .map_err(|err| FeedError::Publish(err.to_string()))?;
                    self.previous = Some(e.envelope.event_id);
                    acks.push((e.seq, Some(ack)));
                }
            }
        }
        let mut stored = 0;
        for (seq, ack) in acks {
            if let Some(ack) = ack {
                let ack = ack.await.map_err(|err| {
                    FeedError::Publish(format!("the feed message of log sequence {seq}: {err}"))
                })?;
                if ack.duplicate {
                    tracing::debug!(seq, "feed: already in the feed stream");
                } else {
                    stored += 1;
                }
            }
            position = seq;
        }
        self.metrics.advanced(stored, position);
        Ok(position)
    }
}

/// Saves the checkpoint file when the position moved.
struct Saver {
    file: CheckpointFile,
    created: String,
    saved: u64,
}

impl Saver {
    fn save(&mut self, position: u64) -> Result<(), FeedError> {
        if position == self.saved {
            return Ok(());
        }
        self.file.save(&Checkpoint {
            feed_stream_created: self.created.clone(),
            seq: position,
        })?;
        self.saved = position;
        Ok(())
    }
}
