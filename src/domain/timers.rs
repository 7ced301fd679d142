//! What the orchestrator does on its own: timeouts, the placement queue and lost VMs, as ordinary
//! commands of the `system` actor.
//!
//! Every deadline is derived from the log (the state's [`TimerIndex`]) and the cell's
//! [`TimerConfig`], never from a process's memory, so a writer that takes over finds the same
//! work. Each command carries a deterministic command id (the timer, the entity and the sequence
//! that armed it) and is refused once the entity has moved on ([`super::decide()`] checks the
//! armed sequence), so a timer fired twice across a failover, or racing a user's command, yields
//! one outcome.
//!
//! Heartbeats are the exception: they are not in the log. [`Heartbeats`] keeps the last one per VM
//! in the active writer's memory, and a new writer gives every VM a full deadline of grace.
//!
//! Pure: the time comes in as an argument.

use std::collections::HashMap;

use orchestrator_events::{Actor, CommandId, EndReason, Timestamp, VmId};

use super::command::{AssignVm, Command, DeclareVmLost, ExpireSession};
use super::placement;
use super::state::{State, VmStatus};

/// The id of the `system` actor's commands.
pub const SYSTEM_ID: &str = "orchestrator";

/// The actor of every automatic command.
pub fn system() -> Actor {
    Actor::system(SYSTEM_ID)
}

/// The cell's timeouts. `None` turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// A `paused` session ends with `pause_timeout` this long after it paused. Default 10 min.
    pub pause_timeout_ms: Option<i64>,
    /// A session ends with `max_length` this long after it started. Default off.
    pub max_session_ms: Option<i64>,
    /// A `starting` session not in the queue ends with `placement_timeout` this long after it
    /// started. Default 10 min. (A queued session has its own deadline.)
    pub placement_timeout_ms: Option<i64>,
    /// A VM that sends heartbeats is lost after missing this many intervals. Default 3.
    pub heartbeat_misses: u32,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            pause_timeout_ms: Some(10 * 60 * 1000),
            max_session_ms: None,
            placement_timeout_ms: Some(10 * 60 * 1000),
            heartbeat_misses: 3,
        }
    }
}

/// An automatic command, ready to be decided like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Its deterministic id.
    pub command_id: CommandId,
    /// The command.
    pub command: Command,
}

fn id(s: String) -> CommandId {
    // Built from valid ids, a kind and decimal numbers: printable ASCII of at most ~170 bytes.
    CommandId::parse(s).expect("a timer's command id is valid")
}

fn expire(session: &orchestrator_events::SessionId, reason: EndReason, armed_seq: u64) -> Due {
    Due {
        command_id: id(format!("timer:{}:{session}:{armed_seq}", reason.as_str())),
        command: Command::ExpireSession(ExpireSession {
            session_id: session.clone(),
            reason,
            armed_seq,
        }),
    }
}

/// The timeouts due at `now`, oldest first within each kind, at most `limit`.
pub fn due_timeouts(state: &State, config: &TimerConfig, now: Timestamp, limit: usize) -> Vec<Due> {
    let mut out = Vec::new();
    let idx = &state.timers;
    if let Some(t) = config.pause_timeout_ms {
        for (at, sid) in &idx.paused {
            if out.len() >= limit || at.saturating_add(t) > now {
                break;
            }
            if let Some(s) = state.sessions.get(sid) {
                out.push(expire(sid, EndReason::PauseTimeout, s.since.seq));
            }
        }
    }
    for (deadline, sid) in &idx.queue_deadlines {
        if out.len() >= limit || *deadline > now {
            break;
        }
        if let Some(q) = state.sessions.get(sid).and_then(|s| s.queued) {
            out.push(expire(sid, EndReason::PlacementTimeout, q.since.seq));
        }
    }
    if let Some(t) = config.placement_timeout_ms {
        for (at, sid) in &idx.starting {
            if out.len() >= limit || at.saturating_add(t) > now {
                break;
            }
            if let Some(s) = state.sessions.get(sid) {
                out.push(expire(sid, EndReason::PlacementTimeout, s.since.seq));
            }
        }
    }
    if let Some(t) = config.max_session_ms {
        for (at, sid) in &idx.live {
            if out.len() >= limit || at.saturating_add(t) > now {
                break;
            }
            // Not twice for one session (a pause or placement timeout may be due as well).
            let already = out.iter().any(|d| d.command.session_id() == Some(sid));
            if let (Some(s), false) = (state.sessions.get(sid), already) {
                out.push(expire(sid, EndReason::MaxLength, s.started.seq));
            }
        }
    }
    out
}

/// The next placement from the queue: the longest-waiting session some VM can take now, placed by
/// its queued policy. `None` when no queued session fits anywhere.
pub fn next_placement(state: &State) -> Option<Due> {
    state.timers.queue.iter().find_map(|(qseq, sid)| {
        let s = state.sessions.get(sid)?;
        let q = s.queued?;
        placement::choose_in(state, &s.requirements, q.policy).ok()?;
        Some(Due {
            command_id: id(format!("queue:{sid}:{qseq}")),
            command: Command::AssignVm(AssignVm {
                session_id: sid.clone(),
                vm_id: None,
                policy: None,
                wait_ms: None,
            }),
        })
    })
}

/// The last heartbeat of each VM, as the active writer heard them. Not in the log.
#[derive(Debug, Clone)]
pub struct Heartbeats {
    last: HashMap<VmId, Timestamp>,
    /// When this writer took over: every VM gets a full deadline of grace from here.
    since: Timestamp,
}

impl Heartbeats {
    /// A writer taking over at `now`.
    pub fn new(now: Timestamp) -> Self {
        Self {
            last: HashMap::new(),
            since: now,
        }
    }

    /// A heartbeat of `vm` heard at `now`.
    pub fn beat(&mut self, vm: VmId, now: Timestamp) {
        self.last.insert(vm, now);
    }

    /// The commands that declare the VMs past their deadline at `now` lost: for each, one end per
    /// session on it (reason `vm_lost`), then its `DeclareVmLost`. At most `max_vms` VMs.
    pub fn lost(
        &self,
        state: &State,
        config: &TimerConfig,
        now: Timestamp,
        max_vms: usize,
    ) -> Vec<Due> {
        let mut out = Vec::new();
        let mut vms = 0;
        for (vm_id, vm) in &state.vms {
            if vms >= max_vms {
                break;
            }
            let Some(interval) = vm.heartbeat_ms else {
                continue;
            };
            if !matches!(vm.status, VmStatus::Available | VmStatus::Draining) {
                continue;
            }
            let heard = self.last.get(vm_id).copied();
            // A full deadline of grace from this writer's start and from the VM's registration,
            // whichever is later, before its first heartbeat must have come.
            let from = heard
                .unwrap_or(self.since)
                .max(self.since)
                .max(vm.registered.at);
            let deadline = from
                .saturating_add(i64::from(interval) * i64::from(config.heartbeat_misses.max(1)));
            if now <= deadline {
                continue;
            }
            vms += 1;
            let armed = vm.registered.seq;
            let mut on_it: Vec<_> = state
                .sessions
                .iter()
                .filter(|(_, s)| s.status.holds_slot() && s.vm_id.as_ref() == Some(vm_id))
                .map(|(sid, _)| sid)
                .collect();
            on_it.sort();
            for sid in on_it {
                out.push(Due {
                    command_id: id(format!("vm_lost:{vm_id}:{armed}:{sid}")),
                    command: Command::ExpireSession(ExpireSession {
                        session_id: sid.clone(),
                        reason: EndReason::VmLost,
                        armed_seq: armed,
                    }),
                });
            }
            out.push(Due {
                command_id: id(format!("vm_lost:{vm_id}:{armed}")),
                command: Command::DeclareVmLost(DeclareVmLost {
                    vm_id: vm_id.clone(),
                    registered_seq: armed,
                    last_heartbeat: heard,
                }),
            });
        }
        out
    }
}

/// How many sessions wait in the queue, and since when the oldest has.
pub fn queue_stats(state: &State) -> (usize, Option<Timestamp>) {
    let oldest = state
        .timers
        .queue
        .values()
        .next()
        .and_then(|sid| state.sessions.get(sid))
        .and_then(|s| s.queued.map(|q| q.since.at));
    (state.timers.queue.len(), oldest)
}
