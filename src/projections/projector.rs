//! The projector: follows the log from the store's checkpoint and applies events in batches.
//!
//! Events are applied in batches of up to [`BATCH`] (as many as are ready, without waiting for more),
//! each batch atomic with the checkpoint, and written to disk every [`FLUSH_EVERY`] (a batch lost in
//! a crash is applied again from the checkpoint on disk). A [`rebuild`] reads ahead in batches of
//! [`REBUILD_BATCH`] while the one before is applied, and flushes once at the end. The projector never reorders, and never skips an event:
//! messages that are not events (foreign, quarantined: see [`crate::log::entry`]) only move the
//! checkpoint, with a warning. An event it cannot decode holds it at that sequence (it logs the
//! error and retries from its checkpoint with a backoff, so a quarantine or an upgrade lets it go
//! on); an event it cannot apply stops it with an error naming the sequence. After any reconnect or
//! failed read it resumes from its own checkpoint.
//!
//! Damage of the store, found by a read or by a batch ([`super::health`]), makes [`run`] replace the
//! store by an empty one and follow the log from its start; reads are refused until it reaches
//! the log's end as it was then.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::apply::{Message, Overlay};
use super::keys::{CHECKPOINT_KEY, VERSION_KEY};
use super::{ProjectionError, Projections, PROJECTION_VERSION};
use crate::log::{Entry, EntryStream, LogError, Reader};

/// The most events applied in one sled batch while following the log.
pub const BATCH: usize = 1000;

/// The most events applied in one sled batch by a rebuild: whole session lifecycles then fall inside
/// one batch, whose index keys deleted in it are never written.
pub const REBUILD_BATCH: usize = 100_000;

/// How often what the projector applied is written to disk while it follows the log.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

fn log_error(e: LogError) -> ProjectionError {
    match e {
        LogError::Decode { seq, error } => ProjectionError::Decode {
            seq,
            reason: error.to_string(),
        },
        other => ProjectionError::Log(other.to_string()),
    }
}

/// Messages read in one go, and the error that ended the read, if one did.
struct Batch {
    events: Vec<Message>,
    error: Option<LogError>,
}

fn message(entry: Entry) -> Message {
    match entry {
        Entry::Event(ev) => (ev.seq, Some(ev.envelope)),
        Entry::Skipped(s) => {
            tracing::warn!(seq = s.seq, subject = %s.subject, why = %s.why.describe(), "projector: message skipped");
            (s.seq, None)
        }
    }
}

/// Reads the next batch: waits for one message, then takes those already there, up to [`BATCH`].
/// An error ends the batch and comes with the messages read before it, so those are applied first
/// and the error is never lost. `None` when the stream ended.
async fn next_batch(entries: &mut EntryStream) -> Option<Batch> {
    let mut batch = Batch {
        events: Vec::with_capacity(64),
        error: None,
    };
    match entries.next().await? {
        Ok(entry) => batch.events.push(message(entry)),
        Err(e) => {
            batch.error = Some(e);
            return Some(batch);
        }
    }
    while batch.events.len() < BATCH {
        match entries.next().now_or_never() {
            Some(Some(Ok(entry))) => batch.events.push(message(entry)),
            Some(Some(Err(e))) => {
                batch.error = Some(e);
                break;
            }
            Some(None) | None => break,
        }
    }
    Some(batch)
}

/// Reads up to `size` messages, waiting for each: for a rebuild, which reads a log it knows the end
/// of. An error ends the batch and comes with the messages read before it. `None` when the stream
/// ended.
async fn fill_batch(entries: &mut EntryStream, size: usize) -> Option<Batch> {
    let mut batch = Batch {
        events: Vec::with_capacity(size.min(4096)),
        error: None,
    };
    while batch.events.len() < size {
        match entries.next().await {
            Some(Ok(entry)) => batch.events.push(message(entry)),
            Some(Err(e)) => {
                batch.error = Some(e);
                break;
            }
            None => break,
        }
    }
    (!batch.events.is_empty() || batch.error.is_some()).then_some(batch)
}

/// Writes the store to disk every [`FLUSH_EVERY`] while batches are applied, one flush at a time,
/// beside the projector so that it never waits for the disk.
struct Flusher {
    store: Projections,
    /// When the next flush is due, once something was applied since the last one.
    due: Option<tokio::time::Instant>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Flusher {
    fn new(store: Projections) -> Self {
        Self {
            store,
            due: None,
            running: None,
        }
    }

    /// A batch was applied.
    fn applied(&mut self) {
        self.due
            .get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_EVERY);
    }

    /// Resolves when a flush is due.
    async fn wait(&self) {
        match self.due {
            Some(due) => tokio::time::sleep_until(due).await,
            None => std::future::pending().await,
        }
    }

    /// Starts a flush, unless one is still running (then tries again later).
    fn start(&mut self) {
        if self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            self.due = Some(tokio::time::Instant::now() + FLUSH_EVERY);
            return;
        }
        self.due = None;
        let store = self.store.clone();
        self.running = Some(tokio::spawn(async move {
            if let Err(e) = store.flush().await {
                tracing::error!(error = %e, "projector: flushing the store failed");
            }
        }));
    }

    /// Waits for the flush running and forgets the one due: the store is being replaced.
    async fn abandon(&mut self) {
        if let Some(running) = self.running.take() {
            // The task only logs: a panic in it leaves nothing to handle here.
            let _ = running.await;
        }
        self.due = None;
    }

    /// Waits for the flush running, then flushes everything.
    async fn finish(&mut self) -> Result<(), ProjectionError> {
        if let Some(running) = self.running.take() {
            // The task only logs: a panic in it leaves nothing to handle here.
            let _ = running.await;
        }
        self.due = None;
        self.store.flush().await
    }
}

/// Follows the log into `store` until `shutdown` fires.
pub async fn run(
    reader: Reader,
    store: Projections,
    shutdown: CancellationToken,
) -> Result<(), ProjectionError> {
    let mut backoff = Duration::from_millis(100);
    let mut flusher = Flusher::new(store.clone());
    loop {
        if let Some(reason) = store.take_damage() {
            flusher.abandon().await;
            store.replace_damaged(&reason)?;
        }
        if store.rebuild_target_unknown() {
            let last = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = reader.last_seq() => r,
            };
            match last {
                Ok(last) => store.rebuilding_to(last),
                Err(e) => {
                    tracing::warn!(error = %e, "projector: cannot read the log's end, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let from = store.checkpoint() + 1;
        let mut events = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = reader.entries_from(from) => match r {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, from, "projector: cannot read the log, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(100);
        tracing::info!(from, "projector following the log");
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => {
                    flusher.finish().await?;
                    return Ok(());
                }
                _ = flusher.wait() => {
                    flusher.start();
                    continue;
                }
                // Damage reported by a read: the outer loop replaces the store.
                _ = store.damaged() => break,
                b = next_batch(&mut events) => b,
            };
            let Some(batch) = batch else { break };
            match store.apply_batch(&batch.events) {
                Ok(()) => {}
                // Reported by the batch itself: the outer loop replaces the store.
                Err(e) if e.is_damage() => break,
                Err(e) => return Err(e),
            }
            flusher.applied();
            match batch.error {
                None => {}
                Some(e @ LogError::Decode { .. }) => {
                    tracing::error!(
                        error = %e,
                        "projector: an event it cannot decode; upgrade, or quarantine it \
                         (`orchestrator quarantine <seq> --reason ...`); retrying"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                    break;
                }
                Some(e) => {
                    tracing::warn!(error = %e, "projector: log read failed, resuming from the checkpoint");
                    break;
                }
            }
        }
    }
}

/// Clears `store` and rebuilds it from the whole log, calling `progress(done, total)` after each
/// batch. Returns the number of events applied. The log is read ahead, in batches of
/// [`REBUILD_BATCH`], while the batch before is applied on a blocking thread; one flush at the end.
pub async fn rebuild(
    reader: &Reader,
    store: &Projections,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, ProjectionError> {
    store.clear()?;
    let (last, mut events) = reader.entries_to_end(1).await.map_err(log_error)?;
    store.rebuilding_to(last);
    progress(0, last);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(1);
    let read = async move {
        while let Some(batch) = fill_batch(&mut events, REBUILD_BATCH).await {
            let failed = batch.error.is_some();
            // Closed: the applying side stopped on an error of its own.
            if tx.send(batch).await.is_err() || failed {
                break;
            }
        }
    };
    let apply = async {
        let mut done = 0u64;
        while let Some(batch) = rx.recv().await {
            let n = batch.events.len() as u64;
            let (s, events) = (store.clone(), batch.events);
            tokio::task::spawn_blocking(move || s.apply_batch(&events))
                .await
                .map_err(|e| ProjectionError::Log(format!("applying a batch: {e}")))??;
            done += n;
            progress(done, last);
            if let Some(e) = batch.error {
                return Err(log_error(e));
            }
        }
        Ok(done)
    };
    let ((), done) = tokio::join!(read, apply);
    let done = done?;
    store.flush().await?;
    if store.checkpoint() != last {
        return Err(ProjectionError::Log(format!(
            "the log read ended at {} before {last}",
            store.checkpoint()
        )));
    }
    Ok(done)
}

/// Replays the log `1..=to` into memory: what the store must hold at checkpoint `to`.
pub async fn replay_in_memory(
    reader: &Reader,
    to: u64,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, ProjectionError> {
    let mut mem = BTreeMap::new();
    mem.insert(
        VERSION_KEY.to_vec(),
        PROJECTION_VERSION.to_be_bytes().to_vec(),
    );
    let mut events = reader.entries_range(1, to).await.map_err(log_error)?;
    let mut expected = 1;
    while let Some(batch) = next_batch(&mut events).await {
        if let Some(e) = batch.error {
            return Err(log_error(e));
        }
        let mut overlay = Overlay::new(&mem);
        expected = overlay.apply_all(expected, &batch.events)?;
        for (k, v) in overlay.into_writes() {
            match v {
                Some(v) => mem.insert(k, v),
                None => mem.remove(&k),
            };
        }
    }
    if expected - 1 != to {
        return Err(ProjectionError::Log(format!(
            "the log ended at {} before {to}",
            expected - 1
        )));
    }
    if to == 0 {
        mem.remove(CHECKPOINT_KEY);
    }
    Ok(mem)
}

/// The differences between what a store holds and what it should hold, as readable lines (at most
/// `limit`), and how many there are in all.
pub fn diff(
    live: &BTreeMap<Vec<u8>, Vec<u8>>,
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
    limit: usize,
) -> (usize, Vec<String>) {
    let show = |k: &[u8]| String::from_utf8_lossy(k).replace('\0', "/");
    let mut lines = Vec::new();
    let mut count = 0;
    for (k, v) in expected {
        let line = match live.get(k) {
            None => Some(format!("missing in the projection: {}", show(k))),
            Some(lv) if lv != v => Some(format!("differs from the log: {}", show(k))),
            Some(_) => None,
        };
        if let Some(line) = line {
            count += 1;
            if lines.len() < limit {
                lines.push(line);
            }
        }
    }
    for k in live.keys().filter(|k| !expected.contains_key(*k)) {
        count += 1;
        if lines.len() < limit {
            lines.push(format!("not in the log: {}", show(k)));
        }
    }
    (count, lines)
}
