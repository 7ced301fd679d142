//! Folding the log into the decision state.

use orchestrator_events::{Envelope, Event};

use super::idempotency::Seen;
use super::state::{ended_key, Session, SessionStatus, State, Vm, VmStatus};

/// Applies the event stored at stream sequence `seq` to the state. Total: an event that does not fit
/// the state (it cannot happen for events [`super::decide()`] produced) changes nothing it cannot
/// apply, and never panics.
pub fn evolve(state: &mut State, seq: u64, env: &Envelope) {
    apply(state, env);
    state.idempotency.record(
        &env.actor,
        &env.command_id,
        Seen {
            digest: env.command_digest,
            seq,
            at: env.occurred_at,
        },
    );
    state.last_seq = seq;
    state.last_at = env.occurred_at;
}

fn apply(state: &mut State, env: &Envelope) {
    match &env.event {
        Event::SessionStarted {
            session_id,
            user_id,
            game_id,
            requirements,
        } => {
            if state.session_id_taken(session_id) {
                return;
            }
            state.sessions.insert(
                session_id.clone(),
                Session {
                    user_id: user_id.clone(),
                    game_id: game_id.clone(),
                    requirements: requirements.clone(),
                    status: SessionStatus::Starting,
                    vm_id: None,
                    started_at: env.occurred_at,
                },
            );
            *state.live_by_user.entry(user_id.clone()).or_insert(0) += 1;
        }
        Event::SessionAssigned {
            session_id, vm_id, ..
        } => {
            let Some(s) = state.sessions.get_mut(session_id) else {
                return;
            };
            if s.status != SessionStatus::Starting {
                return;
            }
            s.status = SessionStatus::Active;
            s.vm_id = Some(vm_id.clone());
            // Placement is the only reader of the requirements, and a placed session is never placed
            // again: free them (half of a live session's memory). The projections keep them.
            s.requirements = Default::default();
            if let Some(vm) = state.vms.get_mut(vm_id) {
                vm.used = vm.used.saturating_add(1);
            }
        }
        Event::SessionPaused { session_id } => set_status(
            state,
            session_id,
            SessionStatus::Active,
            SessionStatus::Paused,
        ),
        Event::SessionResumed { session_id } => set_status(
            state,
            session_id,
            SessionStatus::Paused,
            SessionStatus::Active,
        ),
        Event::SessionEnded { session_id, .. } => {
            // An ended session leaves the state; only the fact that its id was used stays.
            let Some(s) = state.sessions.remove(session_id) else {
                return;
            };
            if s.status.holds_slot() {
                if let Some(vm) = s.vm_id.as_ref().and_then(|v| state.vms.get_mut(v)) {
                    vm.used = vm.used.saturating_sub(1);
                }
            }
            if s.status != SessionStatus::Ended {
                if let Some(n) = state.live_by_user.get_mut(&s.user_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        state.live_by_user.remove(&s.user_id);
                    }
                }
            }
            state.ended.insert(ended_key(session_id));
        }
        Event::VmRegistered {
            vm_id,
            capacity,
            labels,
        } => {
            state.vms.entry(vm_id.clone()).or_insert_with(|| Vm {
                capacity: *capacity,
                labels: labels.clone(),
                status: VmStatus::Available,
                used: 0,
            });
        }
        Event::VmDrained { vm_id } => {
            if let Some(vm) = state.vms.get_mut(vm_id) {
                if vm.status == VmStatus::Available {
                    vm.status = VmStatus::Draining;
                }
            }
        }
        Event::VmRetired { vm_id } => {
            if let Some(vm) = state.vms.get_mut(vm_id) {
                vm.status = VmStatus::Retired;
            }
        }
    }
}

fn set_status(
    state: &mut State,
    id: &orchestrator_events::SessionId,
    from: SessionStatus,
    to: SessionStatus,
) {
    if let Some(s) = state.sessions.get_mut(id) {
        if s.status == from {
            s.status = to;
        }
    }
}
