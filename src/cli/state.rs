//! `orchestrator state [--at <seq|time>]`: sessions and VM capacity as of a moment, replayed from
//! the log into a fresh domain state.

use std::collections::BTreeMap;

use clap::Args;
use futures::StreamExt;
use orchestrator_events::{Labels, SessionId, Timestamp, VmId};
use serde::Serialize;

use super::format::{self, Point};
use super::{CliError, NatsArgs};
use crate::domain::{SessionStatus, State, VmStatus};
use crate::log::{Entry, Reader};
use crate::writer::recovery::fold;

/// `state`.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The moment: a stream sequence, or an RFC 3339 time (the state after the last event at or
    /// before it). Default: now.
    #[arg(long, value_name = "SEQ|TIME", value_parser = format::parse_point)]
    pub at: Option<Point>,
    /// List the sessions too.
    #[arg(long)]
    pub sessions: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A VM, as of the moment.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The last sequence folded in (0: none).
    pub as_of_seq: u64,
    /// The time of that event, RFC 3339 (absent before the first event).
    pub as_of_time: Option<String>,
    /// The log's last sequence when asked.
    pub log_last_seq: u64,
    /// Every VM ever registered.
    pub vms: Vec<VmRow>,
    /// Sessions per status.
    pub sessions_by_status: BTreeMap<&'static str, u64>,
    /// Sessions waiting in the placement queue.
    pub queued: u64,
    /// When the longest-waiting of them was queued, RFC 3339.
    pub oldest_queued_since: Option<String>,
    /// Slots on available and draining VMs, and how many are used.
    pub capacity: u64,
    /// Slots in use.
    pub used: u64,
    /// The sessions, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<SessionRow>>,
}

/// Folds the log into a fresh state up to `at` (the whole log when `None`).
pub async fn replay(reader: &Reader, at: Option<Point>) -> Result<(State, u64), CliError> {
    let last = reader.last_seq().await?;
    let (to, until): (u64, Option<Timestamp>) = match at {
        None => (last, None),
        Some(Point::Seq(seq)) if seq > last => {
            return Err(CliError::Invalid(format!(
                "sequence {seq} is past the end of the log ({last})"
            )))
        }
        Some(Point::Seq(seq)) => (seq, None),
        Some(Point::Time(t)) => (last, Some(t)),
    };
    let mut state = State::default();
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

/// What the state shows.
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
    let mut by_status: BTreeMap<&'static str, u64> =
        SessionStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for s in state.sessions.values() {
        *by_status.entry(s.status.as_str()).or_insert(0) += 1;
    }
    // Ended sessions are only counted: the decision state keeps no more of them.
    *by_status.entry(SessionStatus::Ended.as_str()).or_insert(0) += state.ended.len() as u64;
    let (queued, oldest) = crate::domain::timers::queue_stats(state);
    let live = vms
        .iter()
        .filter(|v| !matches!(v.status, VmStatus::Retired | VmStatus::Lost));
    let capacity = live.clone().map(|v| u64::from(v.capacity)).sum();
    let used = live.map(|v| u64::from(v.used)).sum();
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
                started_at: format::time(s.started.at),
                queued_until: s.queued.map(|q| format::time(q.deadline)),
            })
            .collect();
        rows.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        rows
    });
    Snapshot {
        as_of_seq: state.last_seq,
        as_of_time: (state.last_seq > 0).then(|| format::time(state.last_at)),
        log_last_seq,
        vms,
        sessions_by_status: by_status,
        queued: queued as u64,
        oldest_queued_since: oldest.map(format::time),
        capacity,
        used,
        sessions,
    }
}

/// Prints the state.
pub async fn run(args: StateArgs) -> Result<(), CliError> {
    let (client, reader) = args.nats.reader("state").await?;
    let (state, last) = replay(&reader, args.at).await?;
    // Best effort: everything was read.
    let _ = client.drain().await;
    let snap = snapshot(&state, last, args.sessions);
    if args.json {
        // Plain data: JSON encoding cannot fail.
        outln!(
            "{}",
            serde_json::to_string(&snap).expect("a snapshot always encodes")
        );
        return Ok(());
    }
    print_human(&snap, args.nats.cell.as_str());
    Ok(())
}

fn print_human(s: &Snapshot, cell: &str) {
    match &s.as_of_time {
        Some(t) => outln!(
            "cell {cell} as of seq {} ({t}); the log is at seq {}",
            s.as_of_seq,
            s.log_last_seq
        ),
        None => outln!(
            "cell {cell} before any event; the log is at seq {}",
            s.log_last_seq
        ),
    }
    outln!();
    outln!("{:<24} {:<10} {:>10}  LABELS", "VM", "STATUS", "USED/CAP");
    for vm in &s.vms {
        outln!(
            "{:<24} {:<10} {:>10}  {}",
            vm.vm_id.as_str(),
            vm.status.as_str(),
            format!("{}/{}", vm.used, vm.capacity),
            format::labels(&vm.labels)
        );
    }
    if s.vms.is_empty() {
        outln!("(no VMs)");
    }
    outln!(
        "capacity: {}/{} slots used on VMs not retired or lost",
        s.used,
        s.capacity
    );
    let counts: Vec<String> = SessionStatus::ALL
        .iter()
        .map(|st| {
            format!(
                "{} {}",
                st.as_str(),
                s.sessions_by_status.get(st.as_str()).unwrap_or(&0)
            )
        })
        .collect();
    outln!("sessions: {}", counts.join(", "));
    if s.queued > 0 {
        outln!(
            "queue: {} waiting, the oldest since {}",
            s.queued,
            s.oldest_queued_since.as_deref().unwrap_or("-")
        );
    }
    if let Some(sessions) = &s.sessions {
        outln!();
        outln!(
            "{:<26} {:<20} {:<20} {:<9} {:<24} STARTED",
            "SESSION",
            "USER",
            "GAME",
            "STATUS",
            "VM"
        );
        for r in sessions {
            outln!(
                "{:<26} {:<20} {:<20} {:<9} {:<24} {}",
                r.session_id.as_str(),
                r.user_id,
                r.game_id,
                r.status.as_str(),
                r.vm_id.as_ref().map_or("-", |v| v.as_str()),
                match &r.queued_until {
                    Some(until) => format!("{} (queued until {until})", r.started_at),
                    None => r.started_at.clone(),
                }
            );
        }
    }
}
