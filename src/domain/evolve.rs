//! Folding the log into the decision state.

use orchestrator_events::{Envelope, Event, SessionId, Timestamp, VmId};

use super::idempotency::Seen;
use super::state::{
    ended_key, Mark, Queued, Session, SessionStatus, State, TimerIndex, Vm, VmStatus,
};

/// Applies the event stored at stream sequence `seq` to the state. Total: an event that does not fit
/// the state (it cannot happen for events [`super::decide()`] produced) changes nothing it cannot
/// apply, and never panics.
pub fn evolve(state: &mut State, seq: u64, env: &Envelope) {
    apply(state, seq, env);
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

fn apply(state: &mut State, seq: u64, env: &Envelope) {
    let mark = Mark {
        seq,
        at: env.occurred_at,
    };
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
                    started: mark,
                    since: mark,
                    queued: None,
                },
            );
            index(&mut state.timers, session_id, mark.at, Index::Starting);
            index(&mut state.timers, session_id, mark.at, Index::Live);
            state.placement.want(requirements, &state.vms);
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
            unindex_status(&mut state.timers, session_id, s);
            s.queued = None;
            s.since = mark;
            s.status = SessionStatus::Active;
            s.vm_id = Some(vm_id.clone());
            // Placement is the only reader of the requirements, and a placed session is never placed
            // again: free them (half of a live session's memory). The projections keep them.
            let requirements = std::mem::take(&mut s.requirements);
            state.placement.release(&requirements);
            change_vm(state, vm_id, |vm| vm.used = vm.used.saturating_add(1));
        }
        Event::SessionPaused { session_id } => set_status(
            state,
            session_id,
            mark,
            SessionStatus::Active,
            SessionStatus::Paused,
        ),
        Event::SessionResumed { session_id } => set_status(
            state,
            session_id,
            mark,
            SessionStatus::Paused,
            SessionStatus::Active,
        ),
        Event::SessionQueued {
            session_id,
            policy,
            deadline,
        } => {
            let Some(s) = state.sessions.get_mut(session_id) else {
                return;
            };
            if s.status != SessionStatus::Starting || s.queued.is_some() {
                return;
            }
            unindex_status(&mut state.timers, session_id, s);
            s.queued = Some(Queued {
                since: mark,
                deadline: *deadline,
                policy: *policy,
            });
            state.timers.queue.insert(seq, session_id.clone());
            index(
                &mut state.timers,
                session_id,
                *deadline,
                Index::QueueDeadline,
            );
        }
        Event::SessionEnded { session_id, .. } => {
            // An ended session leaves the state; only the fact that its id was used stays.
            let Some(s) = state.sessions.remove(session_id) else {
                return;
            };
            unindex_status(&mut state.timers, session_id, &s);
            state
                .timers
                .live
                .remove(&(s.started.at, session_id.clone()));
            if s.status == SessionStatus::Starting {
                state.placement.release(&s.requirements);
            }
            if let (true, Some(vm_id)) = (s.status.holds_slot(), &s.vm_id) {
                change_vm(state, vm_id, |vm| vm.used = vm.used.saturating_sub(1));
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
            heartbeat_ms,
            endpoint,
        } => {
            // A lost VM comes back only by registering again, as a new incarnation.
            if state.vm_id_taken(vm_id) {
                return;
            }
            let vm = Vm {
                capacity: *capacity,
                labels: labels.clone(),
                status: VmStatus::Available,
                used: 0,
                heartbeat_ms: *heartbeat_ms,
                endpoint: endpoint.clone(),
                registered: mark,
            };
            if let Some(old) = state.vms.get(vm_id) {
                state.placement.remove_vm(vm_id, old);
            }
            state.placement.add_vm(vm_id, &vm);
            state.vms.insert(vm_id.clone(), vm);
        }
        Event::VmDrained { vm_id } => change_vm(state, vm_id, |vm| {
            if vm.status == VmStatus::Available {
                vm.status = VmStatus::Draining;
            }
        }),
        Event::VmRetired { vm_id } => change_vm(state, vm_id, |vm| vm.status = VmStatus::Retired),
        Event::VmLost { vm_id, .. } => change_vm(state, vm_id, |vm| {
            if vm.status != VmStatus::Retired {
                vm.status = VmStatus::Lost;
            }
        }),
    }
}

/// Changes a VM, keeping the placement index in step: its contribution out before, in after.
fn change_vm(state: &mut State, id: &VmId, change: impl FnOnce(&mut Vm)) {
    if let Some(vm) = state.vms.get_mut(id) {
        state.placement.remove_vm(id, vm);
        change(vm);
        state.placement.add_vm(id, vm);
    }
}

fn set_status(
    state: &mut State,
    id: &SessionId,
    mark: Mark,
    from: SessionStatus,
    to: SessionStatus,
) {
    if let Some(s) = state.sessions.get_mut(id) {
        if s.status == from {
            unindex_status(&mut state.timers, id, s);
            s.status = to;
            s.since = mark;
            if to == SessionStatus::Paused {
                index(&mut state.timers, id, mark.at, Index::Paused);
            }
        }
    }
}

enum Index {
    Starting,
    Paused,
    QueueDeadline,
    Live,
}

fn index(timers: &mut TimerIndex, id: &SessionId, at: Timestamp, which: Index) {
    let set = match which {
        Index::Starting => &mut timers.starting,
        Index::Paused => &mut timers.paused,
        Index::QueueDeadline => &mut timers.queue_deadlines,
        Index::Live => &mut timers.live,
    };
    set.insert((at, id.clone()));
}

/// Removes a session from the index its current status put it in (all but `live`).
fn unindex_status(timers: &mut TimerIndex, id: &SessionId, s: &Session) {
    match (s.status, &s.queued) {
        (SessionStatus::Starting, Some(q)) => {
            timers.queue.remove(&q.since.seq);
            timers.queue_deadlines.remove(&(q.deadline, id.clone()));
        }
        (SessionStatus::Starting, None) => {
            timers.starting.remove(&(s.since.at, id.clone()));
        }
        (SessionStatus::Paused, _) => {
            timers.paused.remove(&(s.since.at, id.clone()));
        }
        _ => {}
    }
}
