//! Recovering the writer's state: a local snapshot plus the tail of the log.
//!
//! A snapshot is the postcard encoding of the whole decision [`State`], followed by the SHA-256 of
//! those bytes, written to a temporary file, fsynced, and renamed over the previous one. It is used
//! only if its checksum holds, it is of the same cell, and the log still holds the event it was taken
//! at with the same event id; otherwise the writer replays the whole log. A snapshot is an
//! optimisation: deleting it loses nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use orchestrator_events::CellId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{evolve, DomainConfig, State};
use crate::log::{LogError, Reader};

// 2: placed sessions no longer keep their requirements.
const SNAPSHOT_FORMAT: u32 = 2;

/// The snapshot as written: borrows the state, so saving copies nothing more.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    format: u32,
    cell: &'a CellId,
    last_event_id: &'a str,
    state: &'a State,
}

/// The snapshot as read; the same encoding as [`SnapshotRef`].
#[derive(Deserialize)]
struct Snapshot {
    format: u32,
    cell: CellId,
    last_event_id: String,
    state: State,
}

/// How the state was recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The sequence of the snapshot used, if one was.
    pub snapshot_seq: Option<u64>,
    /// Events replayed from the log after it.
    pub replayed: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Where a cell's snapshot lives under a data directory.
pub fn snapshot_path(data_dir: &Path, cell: &CellId) -> PathBuf {
    data_dir.join("writer").join(format!("{cell}.snapshot"))
}

/// Writes a snapshot of `state`, whose last event has `last_event_id`. Blocking: call it from
/// `spawn_blocking`.
pub fn save_snapshot(
    path: &Path,
    cell: &CellId,
    last_event_id: &str,
    state: &State,
) -> std::io::Result<()> {
    let snap = SnapshotRef {
        format: SNAPSHOT_FORMAT,
        cell,
        last_event_id,
        state,
    };
    let bytes = encode_snapshot(&snap);
    write_atomically(path, &bytes)
}

/// Encodes an already-taken snapshot; lets a caller clone the state quickly and write elsewhere.
fn encode_snapshot(snap: &SnapshotRef<'_>) -> Vec<u8> {
    // A state is plain data: postcard encoding cannot fail.
    let mut bytes = postcard::to_stdvec(snap).expect("a state always encodes");
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    bytes
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("snapshot.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn load_snapshot(path: &Path, cell: &CellId) -> Option<Snapshot> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 32 {
        tracing::warn!(path = %path.display(), "snapshot too short, ignored");
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        tracing::warn!(path = %path.display(), "snapshot checksum mismatch, ignored");
        return None;
    }
    match postcard::from_bytes::<Snapshot>(body) {
        Ok(s) if s.format == SNAPSHOT_FORMAT && &s.cell == cell => Some(s),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "snapshot of another format or cell, ignored");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "snapshot undecodable, ignored");
            None
        }
    }
}

/// Recovers the state of `reader`'s cell: from the snapshot at `path` when it is valid against the
/// log, then every later event. Returns the state, the id of its last event and how it went.
pub async fn recover(
    reader: &Reader,
    config: &DomainConfig,
    path: Option<&Path>,
) -> Result<(State, Option<String>, Recovered), LogError> {
    let started = Instant::now();
    let mut state = State::new(config.clone());
    let mut last_event_id = None;
    let mut snapshot_seq = None;
    if let Some(snap) = path.and_then(|p| load_snapshot(p, reader.cell())) {
        let seq = snap.state.last_seq;
        let at_seq = if seq == 0 {
            None
        } else {
            reader.get(seq).await?
        };
        let matches = at_seq
            .as_ref()
            .is_some_and(|m| m.event.envelope.event_id == snap.last_event_id);
        if matches && snap.state.config == *config {
            state = snap.state;
            last_event_id = Some(snap.last_event_id);
            snapshot_seq = Some(seq);
        } else {
            tracing::warn!(
                seq,
                "snapshot does not match the log or the config, replaying from the start"
            );
        }
    }
    let (_, mut events) = reader.read_to_end(state.last_seq + 1).await?;
    let mut replayed = 0u64;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        if ev.seq != state.last_seq + 1 {
            return Err(LogError::Jetstream(format!(
                "log gap: expected sequence {}, read {}",
                state.last_seq + 1,
                ev.seq
            )));
        }
        evolve(&mut state, ev.seq, &ev.envelope);
        last_event_id = Some(ev.envelope.event_id);
        replayed += 1;
    }
    Ok((
        state,
        last_event_id,
        Recovered {
            snapshot_seq,
            replayed,
            elapsed: started.elapsed(),
        },
    ))
}
