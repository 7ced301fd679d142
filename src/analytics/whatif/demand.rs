//! The recorded demand: the command a recorded event stands for, as its caller sent it (not the
//! system's results), to decide again in a what-if.

use orchestrator_events::{Envelope, Event, PlacementPolicy};

use crate::domain::command::{AssignVm, EndSession, RegisterVm, SessionRef, StartSession, VmRef};
use crate::domain::Command;

/// The caller's command behind a recorded event of a user, an operator or a service, with the
/// placement policy replaced by `policy` when one is given. `None` for what is not demand: the
/// `system` actor's events, and the pool's events when `pool_events` is false (another pool).
///
/// - `SessionAssigned` by a caller: the VM it named (`explicit`), else a placement by policy
///   (without `wait_ms`: an assignment placed at once does not record whether it would have waited).
/// - `SessionQueued` by a caller: a placement by policy that waits up to the recorded deadline.
pub fn command(
    env: &Envelope,
    policy: Option<PlacementPolicy>,
    pool_events: bool,
) -> Option<Command> {
    if env.actor.kind == orchestrator_events::ActorKind::System {
        return None;
    }
    let pick = |recorded: PlacementPolicy| Some(policy.unwrap_or(recorded));
    Some(match &env.event {
        Event::SessionStarted {
            session_id,
            user_id,
            game_id,
            requirements,
        } => Command::StartSession(StartSession {
            session_id: Some(session_id.clone()),
            user_id: user_id.clone(),
            game_id: game_id.clone(),
            requirements: requirements.clone(),
        }),
        Event::SessionAssigned {
            session_id,
            vm_id,
            placement,
        } => Command::AssignVm(match placement.policy {
            PlacementPolicy::Explicit => AssignVm {
                session_id: session_id.clone(),
                vm_id: Some(vm_id.clone()),
                policy: None,
                wait_ms: None,
            },
            recorded => AssignVm {
                session_id: session_id.clone(),
                vm_id: None,
                policy: pick(recorded),
                wait_ms: None,
            },
        }),
        Event::SessionQueued {
            session_id,
            policy: recorded,
            deadline,
        } => Command::AssignVm(AssignVm {
            session_id: session_id.clone(),
            vm_id: None,
            policy: pick(*recorded),
            wait_ms: Some(
                u64::try_from(deadline - env.occurred_at)
                    .unwrap_or(0)
                    .max(1),
            ),
        }),
        Event::SessionPaused { session_id } => Command::PauseSession(SessionRef {
            session_id: session_id.clone(),
        }),
        Event::SessionResumed { session_id } => Command::ResumeSession(SessionRef {
            session_id: session_id.clone(),
        }),
        Event::SessionEnded {
            session_id, reason, ..
        } => Command::EndSession(EndSession {
            session_id: session_id.clone(),
            reason: *reason,
        }),
        _ if !pool_events => return None,
        Event::VmRegistered {
            vm_id,
            capacity,
            labels,
            heartbeat_ms,
            endpoint,
        } => Command::RegisterVm(RegisterVm {
            vm_id: vm_id.clone(),
            capacity: *capacity,
            labels: labels.clone(),
            heartbeat_ms: *heartbeat_ms,
            endpoint: endpoint.clone(),
        }),
        Event::VmDrained { vm_id } => Command::DrainVm(VmRef {
            vm_id: vm_id.clone(),
        }),
        Event::VmRetired { vm_id } => Command::RetireVm(VmRef {
            vm_id: vm_id.clone(),
        }),
        Event::VmLost { .. } => return None,
    })
}
