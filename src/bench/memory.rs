//! The writer's memory per live session: the growth of this process's resident set (`VmRSS` in
//! `/proc/self/status`) while a decision [`State`] is folded, with [`evolve`], from empty to N
//! `active` sessions on as many VMs as they need.
//!
//! Measured before any other phase, so that memory freed by earlier phases does not hide growth.

use serde::Serialize;

use super::workload::{now_ms, EventMix, VM_CAPACITY};
use crate::domain::{evolve, DomainConfig, SessionStatus, State};

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
}

/// This process's resident set in bytes, if `/proc/self/status` says.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Folds `sessions` started-and-assigned sessions into an empty state and measures the growth.
/// `None` where the resident set cannot be read (not Linux). Blocking: CPU and memory only.
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
    drop(state);
    Some(MemoryFigures {
        sessions: live,
        vms,
        rss_empty_bytes,
        rss_full_bytes,
        bytes_per_session: rss_full_bytes.saturating_sub(rss_empty_bytes) as f64
            / live.max(1) as f64,
    })
}
