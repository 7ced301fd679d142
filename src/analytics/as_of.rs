//! The cell as of a moment: the log replayed into a fresh domain state up to a sequence or a time,
//! and what that state shows (VMs with their loads, sessions per status, the queue). Used by
//! `orchestrator state --at` and by the bridge's `GET /v1/state?at=`.

use std::collections::BTreeMap;

use futures::StreamExt;
use orchestrator_events::{rfc3339, Labels, SessionId, Timestamp, VmId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::window::WindowError;
use crate::domain::{evolve, SessionStatus, State, VmStatus};
use crate::log::{Entry, Point, Reader};

/// A VM, as of the moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmRow {
    /// The VM.
    pub vm_id: VmId,
    /// Its status.
    pub status: VmStatus,
    /// Sessions it holds.
    pub used: u32,
    /// Sessions it can hold.
    pub capacity: u32,
    /// Its labels.
    pub labels: Labels,
}

/// A session, as of the moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRow {
    /// The session.
    pub session_id: SessionId,
    /// Whose.
    pub user_id: String,
    /// Which game.
    pub game_id: String,
    /// Its status.
    pub status: SessionStatus,
    /// Its VM, once assigned.
    pub vm_id: Option<VmId>,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// While it waits in the placement queue: its deadline, RFC 3339.
    pub queued_until: Option<String>,
}

/// The cell as of a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    /// The last sequence folded in (0: none).
    pub as_of_seq: u64,
    /// The time of that event, RFC 3339 (absent before the first event).
    pub as_of_time: Option<String>,
    /// The time of that event in milliseconds since the Unix epoch (absent before the first
    /// event).
    #[serde(default)]
    pub as_of_ms: Option<Timestamp>,
    /// The log's last sequence when asked.
    pub log_last_seq: u64,
    /// Every VM ever registered, sorted by id.
    pub vms: Vec<VmRow>,
    /// Sessions per status (every status present, 0 when none).
    pub sessions_by_status: BTreeMap<String, u64>,
    /// Sessions waiting in the placement queue.
    pub queued: u64,
    /// When the longest-waiting of them was queued, RFC 3339.
    pub oldest_queued_since: Option<String>,
    /// Slots on VMs neither retired nor lost.
    pub capacity: u64,
    /// Slots in use on them.
    pub used: u64,
    /// The sessions, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<SessionRow>>,
}

/// Folds one message of the log into the state: an event is evolved, a skipped message only moves
/// the state's position past it (as the writer's recovery does).
pub fn fold(state: &mut State, entry: &Entry) {
    match entry {
        Entry::Event(ev) => evolve(state, ev.seq, &ev.envelope),
        Entry::Skipped(s) => state.last_seq = s.seq,
    }
}

/// Folds the log into a fresh state up to `at` (the whole log when `None`): a sequence folds every
/// message up to it, a time every event at or before it. Returns the state and the log's last
/// sequence. A sequence past the log's end is [`WindowError::Invalid`].
pub async fn replay(reader: &Reader, at: Option<Point>) -> Result<(State, u64), WindowError> {
    let last = reader.last_seq().await?;
    let (to, until): (u64, Option<Timestamp>) = match at {
        None => (last, None),
        Some(Point::Seq(seq)) if seq > last => {
            return Err(WindowError::Invalid(format!(
                "sequence {seq} is past the end of the log ({last})"
            )))
        }
        Some(Point::Seq(seq)) => (seq, None),
        Some(Point::Time(t)) => (last, Some(t)),
    };
    let mut state = State::default();
    if to == 0 {
        return Ok((state, last));
    }
    let mut entries = reader.entries_range(1, to).await?;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        // The writer never lets event time go backwards, so the first later event ends the replay.
        if let Entry::Event(ev) = &entry {
            if until.is_some_and(|t| ev.envelope.occurred_at > t) {
                break;
            }
        }
        fold(&mut state, &entry);
    }
    Ok((state, last))
}

/// Sessions per status in `state`, every status present; ended sessions are only counted (the
/// decision state keeps no more of them).
pub fn sessions_by_status(state: &State) -> BTreeMap<String, u64> {
    let mut by_status: BTreeMap<String, u64> = SessionStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for s in state.sessions.values() {
        *by_status.entry(s.status.as_str().to_owned()).or_insert(0) += 1;
    }
    *by_status
        .entry(SessionStatus::Ended.as_str().to_owned())
        .or_insert(0) += state.ended.len() as u64;
    by_status
}

/// Slots on VMs neither retired nor lost, and how many of them are used.
pub fn slots(state: &State) -> (u64, u64) {
    state
        .vms
        .values()
        .filter(|v| !matches!(v.status, VmStatus::Retired | VmStatus::Lost))
        .fold((0, 0), |(cap, used), v| {
            (cap + u64::from(v.capacity), used + u64::from(v.used))
        })
}

/// What the state shows; the sessions are listed when `with_sessions`.
pub fn snapshot(state: &State, log_last_seq: u64, with_sessions: bool) -> Snapshot {
    let vms: Vec<VmRow> = state
        .vms
        .iter()
        .map(|(id, vm)| VmRow {
            vm_id: id.clone(),
            status: vm.status,
            used: vm.used,
            capacity: vm.capacity,
            labels: vm.labels.clone(),
        })
        .collect();
    let (queued, oldest) = crate::domain::timers::queue_stats(state);
    let (capacity, used) = slots(state);
    let sessions = with_sessions.then(|| {
        let mut rows: Vec<SessionRow> = state
            .sessions
            .iter()
            .map(|(id, s)| SessionRow {
                session_id: id.clone(),
                user_id: s.user_id.to_string(),
                game_id: s.game_id.to_string(),
                status: s.status,
                vm_id: s.vm_id.clone(),
                started_at: rfc3339(s.started.at),
                queued_until: s.queued.map(|q| rfc3339(q.deadline)),
            })
            .collect();
        rows.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        rows
    });
    let started = state.last_seq > 0;
    Snapshot {
        as_of_seq: state.last_seq,
        as_of_time: started.then(|| rfc3339(state.last_at)),
        as_of_ms: started.then_some(state.last_at),
        log_last_seq,
        vms,
        sessions_by_status: sessions_by_status(state),
        queued: queued as u64,
        oldest_queued_since: oldest.map(rfc3339),
        capacity,
        used,
        sessions,
    }
}
