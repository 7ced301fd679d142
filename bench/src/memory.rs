//! The writer's memory: the growth of this process's resident set (`VmRSS` in `/proc/self/status`)
//! while a decision [`State`] is folded, with [`evolve`]:
//!
//! - per live session: from empty to N `active` sessions on as many VMs as they need;
//! - per ended session: N sessions started and ended (all under one command id, so the idempotency
//!   table does not grow);
//! - per remembered command id: N events with distinct command ids that change nothing else.
//!
//! Measured before any other phase, and every state is kept until the last is measured, so that
//! memory freed by one phase does not hide the growth of the next.

use orchestrator_events::{EndReason, Event};
use serde::Serialize;

use super::workload::{now_ms, EventMix, VM_CAPACITY};
use orchestrator::domain::{evolve, DomainConfig, SessionStatus, State};

/// What holding N live sessions costs the writer.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryFigures {
    /// Live (`active`) sessions in the state.
    pub sessions: u64,
    /// VMs registered to hold them.
    pub vms: u32,
    /// Resident set with an empty state, in bytes.
    pub rss_empty_bytes: u64,
    /// Resident set with the N sessions, in bytes.
    pub rss_full_bytes: u64,
    /// The growth divided by N (VMs, per-user counts and idempotency entries included).
    pub bytes_per_session: f64,
    /// Ended sessions of the second phase.
    pub ended_sessions: u64,
    /// The growth per ended session.
    pub bytes_per_ended_session: f64,
    /// Command ids of the third phase.
    pub remembered_ids: u64,
    /// The growth per remembered command id.
    pub bytes_per_remembered_id: f64,
}

/// This process's resident set in bytes, if `/proc/self/status` says.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Folds `sessions` started-and-assigned sessions into an empty state and measures the growth, then
/// as many ended sessions, then as many remembered command ids. `None` where the resident set
/// cannot be read (not Linux). Blocking: CPU and memory only.
pub fn measure(sessions: u64) -> Option<MemoryFigures> {
    let vms = u32::try_from(sessions.div_ceil(u64::from(VM_CAPACITY)).max(1)).unwrap_or(u32::MAX);
    let mut mix = EventMix::new(0x5eed_0003, vms, now_ms());
    let mut state = State::new(DomainConfig::default());
    let rss_empty_bytes = rss_bytes()?;
    let mut seq = 0u64;
    let mut fold = |state: &mut State, env| {
        seq += 1;
        evolve(state, seq, &env);
    };
    for i in 0..vms {
        fold(&mut state, mix.register_vm(i, VM_CAPACITY));
    }
    for n in 0..sessions {
        let vm = u32::try_from(n / u64::from(VM_CAPACITY)).unwrap_or(u32::MAX);
        let load = u32::try_from(n % u64::from(VM_CAPACITY)).unwrap_or(0);
        fold(&mut state, mix.start(n));
        fold(&mut state, mix.assign(n, vm, load, VM_CAPACITY));
    }
    let rss_full_bytes = rss_bytes()?;
    let live = state
        .sessions
        .values()
        .filter(|s| s.status == SessionStatus::Active)
        .count() as u64;
    debug_assert_eq!(live, sessions);

    // Ended sessions, all under one command id: only what the state keeps of an ended session grows.
    let mut ended = State::new(DomainConfig::default());
    let before = rss_bytes()?;
    for n in sessions..2 * sessions {
        let mut start = mix.start(n);
        start.command_id = "one".into();
        let Event::SessionStarted { session_id, .. } = &start.event else {
            continue;
        };
        let mut end = start.clone();
        end.event = Event::SessionEnded {
            session_id: session_id.clone(),
            reason: EndReason::User,
            vm_id: None,
        };
        fold(&mut ended, start);
        fold(&mut ended, end);
    }
    let bytes_per_ended_session =
        rss_bytes()?.saturating_sub(before) as f64 / ended.ended.len().max(1) as f64;

    // Command ids: the same event again and again (it changes nothing after the first), each under
    // its own command id.
    let mut ids = State::new(DomainConfig::default());
    let before = rss_bytes()?;
    let mut drain = mix.register_vm(0, VM_CAPACITY);
    if let Event::VmRegistered { vm_id, .. } = &drain.event {
        drain.event = Event::VmDrained {
            vm_id: vm_id.clone(),
        };
    }
    for n in 0..sessions {
        let mut env = drain.clone();
        env.command_id = format!("command-{n:012}");
        fold(&mut ids, env);
    }
    let bytes_per_remembered_id =
        rss_bytes()?.saturating_sub(before) as f64 / ids.idempotency.len().max(1) as f64;
    let figures = MemoryFigures {
        sessions: live,
        vms,
        rss_empty_bytes,
        rss_full_bytes,
        bytes_per_session: rss_full_bytes.saturating_sub(rss_empty_bytes) as f64
            / live.max(1) as f64,
        ended_sessions: ended.ended.len() as u64,
        bytes_per_ended_session,
        remembered_ids: ids.idempotency.len() as u64,
        bytes_per_remembered_id,
    };
    drop((state, ended, ids));
    Some(figures)
}
