//! Recovering the writer's state: a local snapshot plus the tail of the log.
//!
//! A snapshot is the postcard encoding of the whole decision [`State`], followed by the SHA-256 of
//! those bytes, written to a temporary file, fsynced, and renamed over the previous one. It holds
//! confirmed state only (every event in it was acknowledged by the server). It is used only if its
//! checksum holds, it is of the same cell, and the log still holds its last event with the same
//! event id at the same sequence and reaches at least its position; otherwise the writer replays the
//! whole log. A snapshot is an optimisation: deleting it loses nothing.
//!
//! Messages that are not events (foreign, quarantined: see [`crate::log::entry`]) only move the
//! state's position ([`fold`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use orchestrator_events::CellId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{evolve, DomainConfig, State};
use crate::log::{Entry, LogError, Reader};

// 2: placed sessions no longer keep their requirements.
// 3: ended sessions and remembered command ids are compact; the last event's sequence is kept, since
//    the state's position may be a skipped message.
// 4: sessions keep the marks that arm their timers and their place in the queue; VMs their heartbeat
//    interval, endpoint and registration; the state its timer indexes and its placement index.
const SNAPSHOT_FORMAT: u32 = 4;

/// The snapshot as written: borrows the state, so saving copies nothing more.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    format: u32,
    cell: &'a CellId,
    last_event: &'a LastEvent,
    state: &'a State,
}

/// The snapshot as read; the same encoding as [`SnapshotRef`].
#[derive(Deserialize)]
struct Snapshot {
    format: u32,
    cell: CellId,
    last_event: LastEvent,
    state: State,
}

/// The last event folded into a state: its sequence and event id. A snapshot is checked against
/// the log with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastEvent {
    /// Its stream sequence.
    pub seq: u64,
    /// Its event id.
    pub event_id: String,
}

/// Folds one message of the log into the state: an event is evolved, a skipped message only moves
/// the state's position past it.
pub fn fold(state: &mut State, entry: &Entry) {
    match entry {
        Entry::Event(ev) => evolve(state, ev.seq, &ev.envelope),
        Entry::Skipped(s) => state.last_seq = s.seq,
    }
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

/// Writes a snapshot of `state`, whose last event is `last_event`. Blocking: call it from
/// `spawn_blocking`.
pub fn save_snapshot(
    path: &Path,
    cell: &CellId,
    last_event: &LastEvent,
    state: &State,
) -> std::io::Result<()> {
    let snap = SnapshotRef {
        format: SNAPSHOT_FORMAT,
        cell,
        last_event,
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

/// The position (last sequence) of the valid snapshot at `path`, if there is one.
pub fn snapshot_seq(path: &Path, cell: &CellId) -> Option<u64> {
    load_snapshot(path, cell).map(|s| s.state.last_seq)
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
/// log, then every later message. Returns the state, its last event and how it went.
pub async fn recover(
    reader: &Reader,
    config: &DomainConfig,
    path: Option<&Path>,
) -> Result<(State, Option<LastEvent>, Recovered), LogError> {
    let started = Instant::now();
    let mut state = State::new(config.clone());
    let mut last_event = None;
    let mut snapshot_seq = None;
    if let Some(snap) = path.and_then(|p| load_snapshot(p, reader.cell())) {
        let seq = snap.state.last_seq;
        if snapshot_matches(reader, &snap).await? && snap.state.config == *config {
            state = snap.state;
            last_event = Some(snap.last_event);
            snapshot_seq = Some(seq);
        } else {
            tracing::warn!(
                seq,
                "snapshot does not match the log or the config, replaying from the start"
            );
        }
    }
    let (_, mut entries) = reader.entries_to_end(state.last_seq + 1).await?;
    let mut replayed = 0u64;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        match &entry {
            Entry::Event(ev) => {
                last_event = Some(LastEvent {
                    seq: ev.seq,
                    event_id: ev.envelope.event_id.clone(),
                })
            }
            Entry::Skipped(s) => tracing::warn!(
                seq = s.seq,
                subject = %s.subject,
                why = %s.why.describe(),
                "writer recovery: message skipped"
            ),
        }
        fold(&mut state, &entry);
        replayed += 1;
    }
    Ok((
        state,
        last_event,
        Recovered {
            snapshot_seq,
            replayed,
            elapsed: started.elapsed(),
        },
    ))
}

/// Whether the log still holds the snapshot's last event at its sequence and reaches its position.
async fn snapshot_matches(reader: &Reader, snap: &Snapshot) -> Result<bool, LogError> {
    if snap.state.last_seq == 0 || reader.last_seq().await? < snap.state.last_seq {
        return Ok(false);
    }
    match reader.get(snap.last_event.seq).await {
        Ok(Some(m)) => Ok(m.event.envelope.event_id == snap.last_event.event_id),
        Ok(None) | Err(LogError::Decode { .. } | LogError::NotAnEvent { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
