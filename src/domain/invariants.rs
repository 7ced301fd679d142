//! The invariants of the design, as checks: [`check`] on a state, [`check_transition`] on an event
//! about to be folded into a state.
//!
//! The domain's tests run both after every step of random command sequences, and `orchestrator verify`
//! runs them over a replay of a cell's log. What they hold (DESIGN.md, "Domain"):
//!
//! - a VM's `used` is the number of `active` and `paused` sessions on it, never above its capacity, and
//!   a retired VM holds none;
//! - an `active` or `paused` session is on a VM that exists; a `starting` one is on none;
//! - `live_by_user` counts each user's sessions that are not ended, with no zero entries;
//! - a session is assigned only from `starting`, only to an `available` VM with room and the labels it
//!   requires; only the transitions of the design's table happen; `ended` is final.

use std::collections::BTreeMap;
use std::collections::HashMap;

use orchestrator_events::{Event, EventType, SessionId, UserId, VmId};

use super::state::{Session, SessionStatus, State, VmStatus};

/// An invariant that does not hold. The message says which and where; a violation is a bug (in the
/// domain, or in whatever wrote the log), never a caller's mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A VM's slot count disagrees with the sessions on it.
    #[error("VM {vm_id} counts {used} sessions but {counted} active or paused sessions are on it")]
    UsedMismatch {
        /// The VM.
        vm_id: VmId,
        /// Its `used` field.
        used: u32,
        /// Active and paused sessions whose `vm_id` is this VM.
        counted: u32,
    },
    /// A VM holds more sessions than its capacity.
    #[error("VM {vm_id} holds {used} sessions, over its capacity of {capacity}")]
    OverCapacity {
        /// The VM.
        vm_id: VmId,
        /// Sessions it holds.
        used: u32,
        /// Its capacity.
        capacity: u32,
    },
    /// A retired VM still holds sessions.
    #[error("VM {vm_id} is retired but holds {used} sessions")]
    RetiredNotEmpty {
        /// The VM.
        vm_id: VmId,
        /// Sessions it holds.
        used: u32,
    },
    /// An active or paused session has no VM, or one that does not exist.
    #[error("session {session_id} is {status} on {vm_id:?}, which is not a registered VM")]
    SlotWithoutVm {
        /// The session.
        session_id: SessionId,
        /// Its status.
        status: &'static str,
        /// Its VM, if it names one.
        vm_id: Option<VmId>,
    },
    /// A starting session is already on a VM.
    #[error("session {session_id} is starting but is on VM {vm_id}")]
    StartingOnVm {
        /// The session.
        session_id: SessionId,
        /// The VM it names.
        vm_id: VmId,
    },
    /// A user's count of live sessions disagrees with their sessions.
    #[error("user {user_id} is counted with {recorded} live sessions but has {counted} not ended")]
    LiveCountMismatch {
        /// The user.
        user_id: UserId,
        /// The count in `live_by_user` (0 when absent).
        recorded: u32,
        /// Sessions of the user that are not ended.
        counted: u32,
    },
    /// An event names a session that does not exist.
    #[error("{event} for session {session_id}, which does not exist")]
    UnknownSession {
        /// The event's type.
        event: EventType,
        /// The session.
        session_id: SessionId,
    },
    /// An event names a VM that does not exist.
    #[error("{event} for VM {vm_id}, which does not exist")]
    UnknownVm {
        /// The event's type.
        event: EventType,
        /// The VM.
        vm_id: VmId,
    },
    /// An event creates a session or VM whose id is taken.
    #[error("{event} for {id}, which already exists")]
    AlreadyExists {
        /// The event's type.
        event: EventType,
        /// The session or VM id.
        id: String,
    },
    /// Something happened to an ended session.
    #[error("{event} for session {session_id}, which has ended (ended is final)")]
    AfterEnd {
        /// The event's type.
        event: EventType,
        /// The session.
        session_id: SessionId,
    },
    /// A session or VM event that the transition table does not allow from the current status.
    #[error("{event} for {id}, which is {status}; it is allowed only from {allowed}")]
    InvalidTransition {
        /// The event's type.
        event: EventType,
        /// The session or VM id.
        id: String,
        /// Its current status.
        status: &'static str,
        /// The statuses it is allowed from.
        allowed: &'static str,
    },
    /// A session was assigned to a VM that takes no placements.
    #[error("session {session_id} assigned to VM {vm_id}, which is {status}")]
    AssignedToUnavailableVm {
        /// The session.
        session_id: SessionId,
        /// The VM.
        vm_id: VmId,
        /// The VM's status.
        status: &'static str,
    },
    /// A session was assigned to a full VM.
    #[error("session {session_id} assigned to VM {vm_id}, which is full ({capacity} sessions)")]
    AssignedToFullVm {
        /// The session.
        session_id: SessionId,
        /// The VM.
        vm_id: VmId,
        /// The VM's capacity.
        capacity: u32,
    },
    /// A session was assigned to a VM lacking labels it requires.
    #[error("session {session_id} assigned to VM {vm_id}, which lacks its required labels")]
    RequirementsNotMet {
        /// The session.
        session_id: SessionId,
        /// The VM.
        vm_id: VmId,
    },
    /// A session ended naming another VM than the one it was on.
    #[error("session {session_id} ended naming VM {named:?} but was on {actual:?}")]
    EndedOnOtherVm {
        /// The session.
        session_id: SessionId,
        /// The VM the event names.
        named: Option<VmId>,
        /// The VM the session was on.
        actual: Option<VmId>,
    },
    /// A VM was registered with a capacity outside 1 to the configured maximum.
    #[error("VM {vm_id} registered with capacity {capacity}, outside 1 to {max}")]
    BadCapacity {
        /// The VM.
        vm_id: VmId,
        /// The capacity it was registered with.
        capacity: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A VM holding sessions was retired or declared lost.
    #[error("VM {vm_id} left the pool while holding {used} sessions")]
    RetiredWithSessions {
        /// The VM.
        vm_id: VmId,
        /// Sessions it held.
        used: u32,
    },
}

/// Checks the invariants that hold on any state folded from a valid log.
pub fn check(state: &State) -> Result<(), Violation> {
    let mut on_vm: BTreeMap<&VmId, u32> = BTreeMap::new();
    let mut live: HashMap<&UserId, u32> = HashMap::new();
    for (id, s) in &state.sessions {
        check_session(state, id, s)?;
        if s.status.holds_slot() {
            if let Some(vm) = &s.vm_id {
                *on_vm.entry(vm).or_insert(0) += 1;
            }
        }
        if s.status != SessionStatus::Ended {
            *live.entry(&s.user_id).or_insert(0) += 1;
        }
    }
    for (id, vm) in &state.vms {
        let counted = on_vm.get(id).copied().unwrap_or(0);
        if vm.used != counted {
            return Err(Violation::UsedMismatch {
                vm_id: id.clone(),
                used: vm.used,
                counted,
            });
        }
        if vm.used > vm.capacity {
            return Err(Violation::OverCapacity {
                vm_id: id.clone(),
                used: vm.used,
                capacity: vm.capacity,
            });
        }
        if vm.status == VmStatus::Retired && vm.used > 0 {
            return Err(Violation::RetiredNotEmpty {
                vm_id: id.clone(),
                used: vm.used,
            });
        }
    }
    for (user, &recorded) in &state.live_by_user {
        let counted = live.get(user).copied().unwrap_or(0);
        if recorded != counted || recorded == 0 {
            return Err(Violation::LiveCountMismatch {
                user_id: user.clone(),
                recorded,
                counted,
            });
        }
    }
    for (user, &counted) in &live {
        if !state.live_by_user.contains_key(*user) {
            return Err(Violation::LiveCountMismatch {
                user_id: (*user).clone(),
                recorded: 0,
                counted,
            });
        }
    }
    Ok(())
}

fn check_session(state: &State, id: &SessionId, s: &Session) -> Result<(), Violation> {
    match s.status {
        SessionStatus::Active | SessionStatus::Paused => {
            let registered = s.vm_id.as_ref().is_some_and(|v| state.vms.contains_key(v));
            if !registered {
                return Err(Violation::SlotWithoutVm {
                    session_id: id.clone(),
                    status: s.status.as_str(),
                    vm_id: s.vm_id.clone(),
                });
            }
        }
        SessionStatus::Starting => {
            if let Some(vm) = &s.vm_id {
                return Err(Violation::StartingOnVm {
                    session_id: id.clone(),
                    vm_id: vm.clone(),
                });
            }
        }
        SessionStatus::Ended => {}
    }
    Ok(())
}

/// Checks that `event` may be folded into `before`: the transition is one of the design's table, from
/// a status it is allowed from, and an assignment respects the VM's status, room and labels.
pub fn check_transition(before: &State, event: &Event) -> Result<(), Violation> {
    let ty = event.event_type();
    match event {
        Event::SessionStarted { session_id, .. } => {
            if before.session_id_taken(session_id) {
                return Err(Violation::AlreadyExists {
                    event: ty,
                    id: session_id.to_string(),
                });
            }
        }
        Event::SessionAssigned {
            session_id, vm_id, ..
        } => {
            let s = live_session(before, ty, session_id, SessionStatus::Starting, "starting")?;
            let vm = before.vms.get(vm_id).ok_or_else(|| Violation::UnknownVm {
                event: ty,
                vm_id: vm_id.clone(),
            })?;
            if vm.status != VmStatus::Available {
                return Err(Violation::AssignedToUnavailableVm {
                    session_id: session_id.clone(),
                    vm_id: vm_id.clone(),
                    status: vm.status.as_str(),
                });
            }
            if vm.used >= vm.capacity {
                return Err(Violation::AssignedToFullVm {
                    session_id: session_id.clone(),
                    vm_id: vm_id.clone(),
                    capacity: vm.capacity,
                });
            }
            if !vm.matches(&s.requirements) {
                return Err(Violation::RequirementsNotMet {
                    session_id: session_id.clone(),
                    vm_id: vm_id.clone(),
                });
            }
        }
        Event::SessionPaused { session_id } => {
            live_session(before, ty, session_id, SessionStatus::Active, "active")?;
        }
        Event::SessionResumed { session_id } => {
            live_session(before, ty, session_id, SessionStatus::Paused, "paused")?;
        }
        Event::SessionEnded {
            session_id, vm_id, ..
        } => {
            let s = existing_session(before, ty, session_id)?;
            let actual = s.vm_id.as_ref();
            if vm_id.as_ref() != actual {
                return Err(Violation::EndedOnOtherVm {
                    session_id: session_id.clone(),
                    named: vm_id.clone(),
                    actual: actual.cloned(),
                });
            }
        }
        Event::SessionQueued { session_id, .. } => {
            let s = live_session(before, ty, session_id, SessionStatus::Starting, "starting")?;
            if s.queued.is_some() {
                return Err(Violation::InvalidTransition {
                    event: ty,
                    id: session_id.to_string(),
                    status: "queued",
                    allowed: "starting, not queued",
                });
            }
        }
        Event::VmRegistered {
            vm_id, capacity, ..
        } => {
            if before.vm_id_taken(vm_id) {
                return Err(Violation::AlreadyExists {
                    event: ty,
                    id: vm_id.to_string(),
                });
            }
            let max = before.config.max_vm_capacity;
            if *capacity == 0 || *capacity > max {
                return Err(Violation::BadCapacity {
                    vm_id: vm_id.clone(),
                    capacity: *capacity,
                    max,
                });
            }
        }
        Event::VmDrained { vm_id } => {
            let vm = before.vms.get(vm_id).ok_or_else(|| Violation::UnknownVm {
                event: ty,
                vm_id: vm_id.clone(),
            })?;
            if vm.status != VmStatus::Available {
                return Err(Violation::InvalidTransition {
                    event: ty,
                    id: vm_id.to_string(),
                    status: vm.status.as_str(),
                    allowed: "available",
                });
            }
        }
        // Both leave the pool: from available or draining, and empty (a lost VM's sessions are
        // ended first).
        Event::VmRetired { vm_id } | Event::VmLost { vm_id, .. } => {
            let vm = before.vms.get(vm_id).ok_or_else(|| Violation::UnknownVm {
                event: ty,
                vm_id: vm_id.clone(),
            })?;
            if matches!(vm.status, VmStatus::Retired | VmStatus::Lost) {
                return Err(Violation::InvalidTransition {
                    event: ty,
                    id: vm_id.to_string(),
                    status: vm.status.as_str(),
                    allowed: "available or draining",
                });
            }
            if vm.used > 0 {
                return Err(Violation::RetiredWithSessions {
                    vm_id: vm_id.clone(),
                    used: vm.used,
                });
            }
        }
    }
    Ok(())
}

/// The session, which must exist and not have ended.
fn existing_session<'a>(
    state: &'a State,
    event: EventType,
    id: &SessionId,
) -> Result<&'a Session, Violation> {
    let Some(s) = state.sessions.get(id) else {
        return Err(if state.session_id_taken(id) {
            Violation::AfterEnd {
                event,
                session_id: id.clone(),
            }
        } else {
            Violation::UnknownSession {
                event,
                session_id: id.clone(),
            }
        });
    };
    if s.status == SessionStatus::Ended {
        return Err(Violation::AfterEnd {
            event,
            session_id: id.clone(),
        });
    }
    Ok(s)
}

/// The session, which must exist, not have ended, and be in `from`.
fn live_session<'a>(
    state: &'a State,
    event: EventType,
    id: &SessionId,
    from: SessionStatus,
    allowed: &'static str,
) -> Result<&'a Session, Violation> {
    let s = existing_session(state, event, id)?;
    if s.status != from {
        return Err(Violation::InvalidTransition {
            event,
            id: id.to_string(),
            status: s.status.as_str(),
            allowed,
        });
    }
    Ok(s)
}
