//! The tables the CLI prints, one line a row: VMs and sessions, as `state`, `vm list` and
//! `session list` show them.

use super::format;
use crate::analytics::as_of::{SessionRow, VmRow};

/// The VM table: id, status, used/capacity, labels.
pub fn vms(rows: &[VmRow]) {
    outln!("{:<24} {:<10} {:>10}  LABELS", "VM", "STATUS", "USED/CAP");
    for vm in rows {
        outln!(
            "{:<24} {:<10} {:>10}  {}",
            vm.vm_id.as_str(),
            vm.status.as_str(),
            format!("{}/{}", vm.used, vm.capacity),
            format::labels(&vm.labels)
        );
    }
}

/// The session table: id, user, game, status, VM, start time (followed by `(queued until ...)`
/// for a queued session when `queue` is set).
pub fn sessions(rows: &[SessionRow], queue: bool) {
    outln!(
        "{:<26} {:<20} {:<20} {:<9} {:<24} STARTED",
        "SESSION",
        "USER",
        "GAME",
        "STATUS",
        "VM"
    );
    for r in rows {
        outln!(
            "{:<26} {:<20} {:<20} {:<9} {:<24} {}",
            r.session_id.as_str(),
            r.user_id,
            r.game_id,
            r.status.as_str(),
            r.vm_id.as_ref().map_or("-", |v| v.as_str()),
            match &r.queued_until {
                Some(until) if queue => format!("{} (queued until {until})", r.started_at),
                _ => r.started_at.clone(),
            }
        );
    }
}
