//! Recovering the writer's state: a local snapshot plus the tail of the log.
//!
//! A snapshot is the postcard encoding of the whole decision [`State`], followed by the SHA-256 of
//! those bytes, written to a temporary file of its own, fsynced, and renamed over the previous one
//! (the directory fsynced after). It holds confirmed state only (every event in it was acknowledged
//! by the server). It is used only if its checksum holds, it is of the same cell, and the log still
//! holds its last event with the same event id at the same sequence and reaches at least its
//! position; otherwise the writer replays the whole log. A snapshot is an optimisation: deleting it
//! loses nothing.
//!
//! A standby that followed the log hands its state over instead ([`recover_from`]): checked against
//! the log the same way, then only the tail it has not folded yet is read.
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
// 5: the placement index keeps idle requirement sets, and when each was last wanted.
const SNAPSHOT_FORMAT: u32 = 5;

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
    /// The position of the standby's state it started from, if it did.
    pub warm_seq: Option<u64>,
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

/// Writes `bytes` to a new temporary file beside `path` (a name of its own, so that two writers
/// sharing a data directory never write the same one), fsyncs it, renames it over `path`, and
/// fsyncs the directory so that the rename itself survives a crash of the machine. A crash at any
/// point leaves either the previous snapshot or the new one, whole; a torn file could only be the
/// temporary one (left behind, never read), and a snapshot that is torn anyway fails its checksum
/// and is ignored.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let prefix = format!(
        ".{}.",
        path.file_name()
            .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned())
    );
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
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

/// A state folded from the log up to its position, with its last event: where a recovery starts
/// (a snapshot, or the state a standby kept while it followed the log).
#[derive(Debug, Clone)]
pub struct Folded {
    /// The state.
    pub state: State,
    /// Its last event (`None`: no event folded yet).
    pub last_event: Option<LastEvent>,
}

impl Folded {
    /// The empty state: nothing folded.
    pub fn empty(config: &DomainConfig) -> Self {
        Self {
            state: State::new(config.clone()),
            last_event: None,
        }
    }

    /// Folds one message of the log (see [`fold`]), remembering the last event and logging a
    /// skipped message.
    pub fn fold(&mut self, entry: &Entry) {
        match entry {
            Entry::Event(ev) => {
                self.last_event = Some(LastEvent {
                    seq: ev.seq,
                    event_id: ev.envelope.event_id.clone(),
                })
            }
            Entry::Skipped(s) => tracing::warn!(
                seq = s.seq,
                subject = %s.subject,
                why = %s.why.describe(),
                "writer state: message skipped"
            ),
        }
        fold(&mut self.state, entry);
    }
}

/// Where a recovery of `reader`'s cell starts: the snapshot at `path` when it is valid against the
/// log (and of the same domain config), else the empty state. Also the snapshot's position, if one
/// was used.
pub async fn starting_point(
    reader: &Reader,
    config: &DomainConfig,
    path: Option<&Path>,
) -> Result<(Folded, Option<u64>), LogError> {
    let loaded = match path {
        Some(path) => {
            let (path, cell) = (path.to_owned(), reader.cell().clone());
            // Reading and decoding a large snapshot takes a while: off the runtime's threads.
            tokio::task::spawn_blocking(move || load_snapshot(&path, &cell))
                .await
                .map_err(|e| LogError::Jetstream(format!("loading the snapshot: {e}")))?
        }
        None => None,
    };
    if let Some(snap) = loaded {
        let seq = snap.state.last_seq;
        let folded = Folded {
            state: snap.state,
            last_event: Some(snap.last_event),
        };
        if folded.state.config == *config && matches_log(reader, &folded).await? {
            return Ok((folded, Some(seq)));
        }
        tracing::warn!(
            seq,
            "snapshot does not match the log or the config, replaying from the start"
        );
    }
    Ok((Folded::empty(config), None))
}

/// Folds every message after `folded`'s position up to the log's last sequence when called, and
/// returns how many. On an error `folded` holds what was folded so far: still a prefix of the log.
pub async fn catch_up(reader: &Reader, folded: &mut Folded) -> Result<u64, LogError> {
    let (_, mut entries) = reader.entries_to_end(folded.state.last_seq + 1).await?;
    let mut replayed = 0u64;
    while let Some(entry) = entries.next().await {
        folded.fold(&entry?);
        replayed += 1;
    }
    Ok(replayed)
}

/// Recovers the state of `reader`'s cell: from the snapshot at `path` when it is valid against the
/// log, then every later message. Returns the state, its last event and how it went.
pub async fn recover(
    reader: &Reader,
    config: &DomainConfig,
    path: Option<&Path>,
) -> Result<(State, Option<LastEvent>, Recovered), LogError> {
    recover_from(reader, config, path, &mut None).await
}

/// Like [`recover`], but from `warm` when there is one and the log still holds its last event at
/// its sequence (a standby's state, folded as the log grew: see [`super::standby`]): then only the
/// tail it has not folded yet is read, and the snapshot is not. `warm` is taken once the recovery
/// succeeds; after an error it holds what was folded so far, for the next attempt.
pub async fn recover_from(
    reader: &Reader,
    config: &DomainConfig,
    path: Option<&Path>,
    warm: &mut Option<Folded>,
) -> Result<(State, Option<LastEvent>, Recovered), LogError> {
    let started = Instant::now();
    if let Some(folded) = warm.as_mut() {
        let seq = folded.state.last_seq;
        if folded.state.config == *config && matches_log(reader, folded).await? {
            let replayed = catch_up(reader, folded).await?;
            // Checked just above: `warm` holds a state.
            let folded = warm.take().expect("a warm state");
            return Ok((
                folded.state,
                folded.last_event,
                Recovered {
                    snapshot_seq: None,
                    warm_seq: Some(seq),
                    replayed,
                    elapsed: started.elapsed(),
                },
            ));
        }
        tracing::warn!(
            seq,
            "the standby's state does not match the log: recovering without it"
        );
        *warm = None;
    }
    let (mut folded, snapshot_seq) = starting_point(reader, config, path).await?;
    let replayed = catch_up(reader, &mut folded).await?;
    Ok((
        folded.state,
        folded.last_event,
        Recovered {
            snapshot_seq,
            warm_seq: None,
            replayed,
            elapsed: started.elapsed(),
        },
    ))
}

/// Whether the log still holds `folded`'s last event at its sequence and reaches its position
/// (a stream deleted and created again under the same name does not). The empty state always
/// matches; a state with no event but a position (only skipped messages) never does.
async fn matches_log(reader: &Reader, folded: &Folded) -> Result<bool, LogError> {
    let last_seq = folded.state.last_seq;
    if last_seq == 0 {
        return Ok(true);
    }
    let Some(last_event) = &folded.last_event else {
        return Ok(false);
    };
    if reader.last_seq().await? < last_seq {
        return Ok(false);
    }
    match reader.get(last_event.seq).await {
        Ok(Some(m)) => Ok(m.event.envelope.event_id == last_event.event_id),
        Ok(None) | Err(LogError::Decode { .. } | LogError::NotAnEvent { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &Path) -> (PathBuf, CellId, State) {
        let cell = CellId::default_cell();
        let path = snapshot_path(dir, &cell);
        let mut state = State::new(DomainConfig::default());
        state.last_seq = 42;
        let last_event = LastEvent {
            seq: 42,
            event_id: "e-42".into(),
        };
        save_snapshot(&path, &cell, &last_event, &state).unwrap();
        (path, cell, state)
    }

    #[test]
    fn a_snapshot_is_written_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, cell, state) = saved(dir.path());
        let snap = load_snapshot(&path, &cell).expect("a whole snapshot loads");
        assert_eq!(snap.state, state);
        assert_eq!(snap.last_event.seq, 42);
        let files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, vec![path.file_name().unwrap().to_owned()]);
        // Saved again over it: still one file, the new one.
        save_snapshot(
            &path,
            &cell,
            &LastEvent {
                seq: 43,
                event_id: "e-43".into(),
            },
            &state,
        )
        .unwrap();
        assert_eq!(load_snapshot(&path, &cell).unwrap().last_event.seq, 43);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_torn_or_corrupt_snapshot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (path, cell, _) = saved(dir.path());
        let whole = std::fs::read(&path).unwrap();
        for cut in [0, 1, 31, whole.len() / 2, whole.len() - 1] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert!(load_snapshot(&path, &cell).is_none(), "cut at {cut}");
        }
        for at in [0, whole.len() / 2, whole.len() - 1] {
            let mut bad = whole.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(load_snapshot(&path, &cell).is_none(), "byte {at} flipped");
        }
        // A temporary file left by a crash is never read.
        std::fs::write(&path, &whole).unwrap();
        std::fs::write(
            path.with_file_name(".default.snapshot.crashed.tmp"),
            &whole[..10],
        )
        .unwrap();
        assert!(load_snapshot(&path, &cell).is_some());
        assert!(load_snapshot(&path, &CellId::parse("other").unwrap()).is_none());
    }
}
