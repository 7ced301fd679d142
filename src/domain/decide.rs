//! The decision: one command against the state yields one event or a rejection.

use orchestrator_events::{ActorKind, EndReason, Event, PlacementPolicy, QueueWait, Timestamp};

use super::command::{
    AssignVm, Command, CommandMeta, DeclareVmLost, EndSession, ExpireSession, RegisterVm,
    SessionRef, StartSession, VmRef,
};
use super::idempotency::Lookup;
use super::placement;
use super::rejection::{Entity, Rejection};
use super::state::{SessionStatus, State, VmStatus};

/// What the writer does with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append this event.
    Append(Event),
    /// The command id was already applied with the same body: answer with the event at `seq`.
    AlreadyApplied {
        /// The stream sequence of the first result.
        seq: u64,
    },
}

/// Handles a command the way the writer does: normalises it, checks its command id against the
/// idempotency window, then [`decide`]s. The digest is of the body as the caller sent it, so a retry
/// that leaves the same fields out matches.
pub fn handle(state: &State, meta: &CommandMeta, command: &Command) -> Result<Decision, Rejection> {
    meta.validate()?;
    if command.system_only() && meta.actor.kind != ActorKind::System {
        return Err(Rejection::invalid_argument(
            "actor.kind",
            format!("{} is the orchestrator's own command", command.name()),
        ));
    }
    let digest = command.digest();
    match state
        .idempotency
        .lookup(&meta.actor, meta.command_id.as_str(), digest, meta.at)
    {
        Lookup::Repeat { seq } => return Ok(Decision::AlreadyApplied { seq }),
        Lookup::Conflict => {
            return Err(Rejection::CommandIdReused {
                command_id: meta.command_id.clone(),
            })
        }
        Lookup::New => {}
    }
    let mut command = command.clone();
    command.normalise(&meta.actor, &meta.command_id);
    decide(state, &command, meta.at).map(Decision::Append)
}

/// Decides a normalised command (see [`Command::normalise`]) against the state at time `now` (the
/// command's, from its metadata). Pure: no I/O, no clock, no randomness; the same state, command
/// and time always give the same result.
pub fn decide(state: &State, command: &Command, now: Timestamp) -> Result<Event, Rejection> {
    command.validate(&state.config)?;
    match command {
        Command::StartSession(c) => start(state, c),
        Command::AssignVm(c) => assign(state, c, now),
        Command::ExpireSession(c) => expire(state, c, command),
        Command::DeclareVmLost(c) => vm_lost(state, c, command),
        Command::PauseSession(SessionRef { session_id }) => {
            let status = status(state, session_id)?;
            if status != SessionStatus::Active {
                return Err(transition_err(session_id.as_str(), status, command));
            }
            Ok(Event::SessionPaused {
                session_id: session_id.clone(),
            })
        }
        Command::ResumeSession(SessionRef { session_id }) => {
            let status = status(state, session_id)?;
            if status != SessionStatus::Paused {
                return Err(transition_err(session_id.as_str(), status, command));
            }
            Ok(Event::SessionResumed {
                session_id: session_id.clone(),
            })
        }
        Command::EndSession(EndSession { session_id, reason }) => {
            let s = live(state, session_id, command)?;
            Ok(Event::SessionEnded {
                session_id: session_id.clone(),
                reason: *reason,
                vm_id: s.vm_id.clone(),
            })
        }
        Command::RegisterVm(RegisterVm {
            vm_id,
            capacity,
            labels,
            heartbeat_ms,
            endpoint,
        }) => {
            if state.vm_id_taken(vm_id) {
                return Err(Rejection::AlreadyExists {
                    entity: Entity::Vm,
                    id: vm_id.to_string(),
                });
            }
            Ok(Event::VmRegistered {
                vm_id: vm_id.clone(),
                capacity: *capacity,
                labels: labels.clone(),
                heartbeat_ms: *heartbeat_ms,
                endpoint: endpoint.clone(),
            })
        }
        Command::DrainVm(VmRef { vm_id }) => {
            let vm = state.vms.get(vm_id).ok_or_else(|| Rejection::VmNotFound {
                vm_id: vm_id.clone(),
            })?;
            match vm.status {
                VmStatus::Available => Ok(Event::VmDrained {
                    vm_id: vm_id.clone(),
                }),
                VmStatus::Retired => Err(Rejection::VmRetired {
                    vm_id: vm_id.clone(),
                }),
                VmStatus::Draining | VmStatus::Lost => Err(Rejection::invalid_transition(
                    Entity::Vm,
                    vm_id.as_str(),
                    vm.status.as_str(),
                    command.name(),
                )),
            }
        }
        Command::RetireVm(VmRef { vm_id }) => {
            let vm = state.vms.get(vm_id).ok_or_else(|| Rejection::VmNotFound {
                vm_id: vm_id.clone(),
            })?;
            if vm.status == VmStatus::Retired {
                return Err(Rejection::VmRetired {
                    vm_id: vm_id.clone(),
                });
            }
            if vm.status == VmStatus::Lost {
                return Err(Rejection::invalid_transition(
                    Entity::Vm,
                    vm_id.as_str(),
                    vm.status.as_str(),
                    command.name(),
                ));
            }
            if vm.used > 0 {
                return Err(Rejection::VmNotEmpty {
                    vm_id: vm_id.clone(),
                    sessions: vm.used,
                });
            }
            Ok(Event::VmRetired {
                vm_id: vm_id.clone(),
            })
        }
    }
}

/// A session's status, ended ones included.
fn status(state: &State, id: &orchestrator_events::SessionId) -> Result<SessionStatus, Rejection> {
    state
        .session_status(id)
        .ok_or_else(|| Rejection::SessionNotFound {
            session_id: id.clone(),
        })
}

/// A session that has not ended; an ended one refuses `command` as an invalid transition.
fn live<'a>(
    state: &'a State,
    id: &orchestrator_events::SessionId,
    command: &Command,
) -> Result<&'a super::state::Session, Rejection> {
    match state.sessions.get(id) {
        Some(s) if s.status != SessionStatus::Ended => Ok(s),
        _ => Err(transition_err(id.as_str(), status(state, id)?, command)),
    }
}

fn transition_err(id: &str, current: SessionStatus, command: &Command) -> Rejection {
    Rejection::invalid_transition(Entity::Session, id, current.as_str(), command.name())
}

fn start(state: &State, c: &StartSession) -> Result<Event, Rejection> {
    let session_id = c
        .session_id
        .clone()
        .ok_or_else(|| Rejection::invalid_argument("session_id", "required once normalised"))?;
    if state.session_id_taken(&session_id) {
        return Err(Rejection::AlreadyExists {
            entity: Entity::Session,
            id: session_id.to_string(),
        });
    }
    let limit = state.config.max_sessions_per_user;
    if state.live_sessions_of(&c.user_id) >= limit {
        return Err(Rejection::UserQuotaExceeded {
            user_id: c.user_id.clone(),
            limit,
        });
    }
    Ok(Event::SessionStarted {
        session_id,
        user_id: c.user_id.clone(),
        game_id: c.game_id.clone(),
        requirements: c.requirements.clone(),
    })
}

fn assign(state: &State, c: &AssignVm, now: Timestamp) -> Result<Event, Rejection> {
    let current = status(state, &c.session_id)?;
    let s = match state.sessions.get(&c.session_id) {
        Some(s) if current == SessionStatus::Starting => s,
        _ => {
            return Err(Rejection::invalid_transition(
                Entity::Session,
                c.session_id.as_str(),
                current.as_str(),
                "assign",
            ))
        }
    };
    let (vm_id, mut placement) = match &c.vm_id {
        Some(vm_id) => (
            vm_id.clone(),
            placement::explicit(&state.vms, vm_id, &s.requirements)?,
        ),
        None => {
            // A queued session keeps the policy it was queued with unless the command names one.
            let policy = c
                .policy
                .or(s.queued.map(|q| q.policy))
                .unwrap_or(PlacementPolicy::Packed);
            match placement::choose_in(state, &s.requirements, policy) {
                Ok((id, p)) => (id, p),
                Err(Rejection::NoCapacity { .. }) if c.wait_ms.is_some() && s.queued.is_none() => {
                    let wait = c.wait_ms.unwrap_or_default();
                    return Ok(Event::SessionQueued {
                        session_id: c.session_id.clone(),
                        policy,
                        deadline: now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    };
    if let Some(q) = s.queued {
        placement.queued = Some(QueueWait {
            since: q.since.at,
            waited_ms: u64::try_from(now.saturating_sub(q.since.at)).unwrap_or(0),
        });
    }
    Ok(Event::SessionAssigned {
        session_id: c.session_id.clone(),
        vm_id,
        placement,
    })
}

/// A timer or a lost VM ends a session, if the session is still where the timer found it.
fn expire(state: &State, c: &ExpireSession, command: &Command) -> Result<Event, Rejection> {
    let s = live(state, &c.session_id, command)?;
    let armed = match c.reason {
        EndReason::PauseTimeout => s.status == SessionStatus::Paused && s.since.seq == c.armed_seq,
        EndReason::PlacementTimeout => {
            s.status == SessionStatus::Starting
                && match s.queued {
                    Some(q) => q.since.seq == c.armed_seq,
                    None => s.since.seq == c.armed_seq,
                }
        }
        EndReason::MaxLength => s.started.seq == c.armed_seq,
        EndReason::VmLost => {
            s.status.holds_slot()
                && s.vm_id
                    .as_ref()
                    .and_then(|v| state.vms.get(v))
                    .is_some_and(|vm| vm.registered.seq == c.armed_seq)
        }
        // `validate` refuses the others.
        _ => false,
    };
    if !armed {
        return Err(transition_err(c.session_id.as_str(), s.status, command));
    }
    Ok(Event::SessionEnded {
        session_id: c.session_id.clone(),
        reason: c.reason,
        vm_id: s.vm_id.clone(),
    })
}

/// A VM whose sessions were all ended is declared lost, if it is still the incarnation that missed
/// its heartbeats.
fn vm_lost(state: &State, c: &DeclareVmLost, command: &Command) -> Result<Event, Rejection> {
    let vm = state
        .vms
        .get(&c.vm_id)
        .ok_or_else(|| Rejection::VmNotFound {
            vm_id: c.vm_id.clone(),
        })?;
    let fits = matches!(vm.status, VmStatus::Available | VmStatus::Draining)
        && vm.registered.seq == c.registered_seq
        && vm.heartbeat_ms.is_some();
    if !fits {
        return Err(Rejection::invalid_transition(
            Entity::Vm,
            c.vm_id.as_str(),
            vm.status.as_str(),
            command.name(),
        ));
    }
    if vm.used > 0 {
        return Err(Rejection::VmNotEmpty {
            vm_id: c.vm_id.clone(),
            sessions: vm.used,
        });
    }
    Ok(Event::VmLost {
        vm_id: c.vm_id.clone(),
        last_heartbeat: c.last_heartbeat,
    })
}
