//! The replay: the recorded log folded as it was (the recorded run) and, beside it, its demand
//! decided again by the domain's [`decide`] and folded by [`evolve`] on another policy or pool (the
//! what-if), with a clock set to each recorded event's time.
//!
//! How the system's own work is treated:
//! - Placements from the queue and queue timeouts are the what-if's own: its queue is served, as the
//!   writer's tick does, at the time of every recorded `system` event (the recorded writer's ticks
//!   that did something) and [`TICK_MS`] after room frees or a session queues while sessions wait
//!   (a recorded tick up to [`TICK_MS`] later stands for that one); a queued session times out at
//!   its deadline.
//! - Other automatic ends (`pause_timeout`, `max_length`, and `placement_timeout` of a session not
//!   waiting in the what-if's queue) are replayed as recorded, at their time, on a session still
//!   live in the what-if: they follow from the user's own timing, not from placement.
//! - A lost VM (recorded pool): at its recorded `VmLost`, the what-if's sessions on it end with
//!   `vm_lost` and it is declared lost; the recorded `vm_lost` ends are not replayed one by one
//!   (the what-if may have other sessions there). With another pool, each recorded `vm_lost` end
//!   is replayed as that session's end.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_events::{
    Actor, EndReason, Envelope, Event, Placement, PlacementPolicy, SessionId, Timestamp, VmId,
};

use super::demand;
use super::pool::Pool;
use super::stats::Observer;
use super::{WhatIfOutcome, WhatIfReport};
use crate::analytics::window::Window;
use crate::domain::command::{DeclareVmLost, EndSession};
use crate::domain::timers::{self, TimerConfig};
use crate::domain::{decide, evolve, Command, DomainConfig, State};

/// How long after a change the what-if's queue is served, as the writer's tick (100 ms).
pub const TICK_MS: Timestamp = 100;

/// The most placements from the queue in one tick.
const PLACEMENTS_PER_TICK: usize = 10_000;

/// Where a session was placed, and why.
pub type Placements = BTreeMap<SessionId, (VmId, Placement)>;

/// One run: its state, its figures, its placements within the window.
struct Run {
    state: State,
    observer: Observer,
    placements: Placements,
}

impl Run {
    fn new(window: Window, config: DomainConfig) -> Self {
        Self {
            state: State::new(config),
            observer: Observer::new(window),
            placements: Placements::new(),
        }
    }

    fn fold(&mut self, seq: u64, env: &Envelope) {
        let at = env.occurred_at;
        self.observer.before(&self.state, at, &env.event);
        evolve(&mut self.state, seq, env);
        self.observer.after(&self.state, at, &env.event);
        if let Event::SessionAssigned {
            session_id,
            vm_id,
            placement,
        } = &env.event
        {
            if self.observer.in_window(at) {
                self.placements
                    .insert(session_id.clone(), (vm_id.clone(), placement.clone()));
            }
        }
    }
}

/// The replay. Feed it the recorded log in order with [`Replay::apply`], then [`Replay::finish`].
pub struct Replay {
    window: Window,
    policy: Option<PlacementPolicy>,
    pool: Option<Pool>,
    recorded: Run,
    whatif: Run,
    /// Times at which the what-if's queue is served.
    ticks: BTreeSet<Timestamp>,
    events_read: u64,
    last_seq: u64,
}

impl Replay {
    /// A replay of `window` with every placement by policy made by `policy` (`None`: as
    /// recorded), on `pool` (`None`: the recorded pool, its registrations, drains and retirements
    /// replayed).
    pub fn new(window: Window, policy: Option<PlacementPolicy>, pool: Option<Pool>) -> Self {
        // The user quota is not placement: every recorded start was accepted, so it is not
        // checked again.
        let config = DomainConfig {
            max_sessions_per_user: u32::MAX,
            ..DomainConfig::default()
        };
        Self {
            window,
            policy,
            pool,
            recorded: Run::new(window, DomainConfig::default()),
            whatif: Run::new(window, config),
            ticks: BTreeSet::new(),
            events_read: 0,
            last_seq: 0,
        }
    }

    /// Folds in the recorded event stored at `seq`.
    pub fn apply(&mut self, seq: u64, env: &Envelope) -> Result<(), String> {
        let at = env.occurred_at;
        if self.events_read == 0 {
            self.register_pool(at)?;
        }
        self.events_read += 1;
        self.last_seq = seq;
        self.recorded.fold(seq, env);
        if env.actor.kind == orchestrator_events::ActorKind::System {
            // The recorded writer's tick, up to a tick late: it stands for the tick the what-if
            // expected within the last TICK_MS, so the same run places at the same time.
            self.ticks.retain(|t| !(at - TICK_MS < *t && *t < at));
        }
        self.serve_queue_before(at);
        if env.actor.kind != orchestrator_events::ActorKind::System {
            if let Some(command) = demand::command(env, self.policy, self.pool.is_none()) {
                match decide(&self.whatif.state, &command, at) {
                    Ok(event) => self.fold_whatif(at, event, &env.actor),
                    Err(r) => self.whatif.observer.rejected(at, r.code()),
                }
            }
            return Ok(());
        }
        // A recorded tick: the what-if's queue is served at the same time.
        self.tick(at);
        match &env.event {
            Event::SessionEnded {
                session_id,
                reason: EndReason::VmLost,
                ..
            } if self.pool.is_some() => self.end(at, session_id, EndReason::VmLost),
            Event::SessionEnded {
                reason: EndReason::VmLost,
                ..
            } => {}
            Event::SessionEnded {
                session_id, reason, ..
            } => {
                let queued = self
                    .whatif
                    .state
                    .sessions
                    .get(session_id)
                    .is_some_and(|s| s.queued.is_some());
                if !(queued && *reason == EndReason::PlacementTimeout) {
                    self.end(at, session_id, *reason);
                }
            }
            Event::VmLost {
                vm_id,
                last_heartbeat,
            } if self.pool.is_none() => self.lose_vm(at, vm_id, *last_heartbeat),
            _ => {}
        }
        Ok(())
    }

    /// Serves the queue until the window's end and returns both runs' figures.
    pub fn finish(mut self) -> WhatIfOutcome {
        self.serve_queue_before(self.window.to);
        let compared: BTreeSet<&SessionId> = self
            .recorded
            .placements
            .keys()
            .chain(self.whatif.placements.keys())
            .collect();
        let differing = compared
            .iter()
            .filter(|s| {
                let vm = |p: &Placements| p.get(**s).map(|(vm, _)| vm.clone());
                vm(&self.recorded.placements) != vm(&self.whatif.placements)
            })
            .count();
        let report = WhatIfReport::new(
            self.window,
            self.policy,
            self.pool.as_ref(),
            self.recorded.observer.finish(),
            self.whatif.observer.finish(),
            (compared.len() as u64, differing as u64),
            (self.events_read, self.last_seq),
        );
        WhatIfOutcome {
            report,
            recorded_placements: self.recorded.placements,
            whatif_placements: self.whatif.placements,
        }
    }

    fn register_pool(&mut self, at: Timestamp) -> Result<(), String> {
        let Some(pool) = self.pool.clone() else {
            return Ok(());
        };
        for vm in pool.commands() {
            let id = vm.vm_id.clone();
            let event = decide(&self.whatif.state, &Command::RegisterVm(vm), at)
                .map_err(|r| format!("the pool's VM {id}: {r}"))?;
            self.fold_whatif(at, event, &Actor::operator("whatif"));
        }
        Ok(())
    }

    fn fold_whatif(&mut self, at: Timestamp, event: Event, actor: &Actor) {
        let seq = self.whatif.state.last_seq + 1;
        let env = Envelope::new(
            format!("whatif-{seq}"),
            format!("whatif-{seq}"),
            0,
            at,
            actor.clone(),
            event,
        );
        // Room freed or a session queued: the writer's next tick looks at the queue.
        let may_place = matches!(
            env.event,
            Event::SessionEnded { vm_id: Some(_), .. }
                | Event::SessionQueued { .. }
                | Event::VmRegistered { .. }
        );
        self.whatif.fold(seq, &env);
        if may_place && !self.whatif.state.timers.queue.is_empty() {
            self.ticks.insert(at.saturating_add(TICK_MS));
        }
    }

    /// Decides a `system` command in the what-if; one that no longer applies changes nothing.
    fn system(&mut self, at: Timestamp, command: &Command) -> bool {
        match decide(&self.whatif.state, command, at) {
            Ok(event) => {
                self.fold_whatif(at, event, &timers::system());
                true
            }
            Err(_) => false,
        }
    }

    fn end(&mut self, at: Timestamp, session_id: &SessionId, reason: EndReason) {
        let command = Command::EndSession(EndSession {
            session_id: session_id.clone(),
            reason,
        });
        self.system(at, &command);
    }

    fn lose_vm(&mut self, at: Timestamp, vm_id: &VmId, last_heartbeat: Option<Timestamp>) {
        let mut on_it: Vec<SessionId> = self
            .whatif
            .state
            .sessions
            .iter()
            .filter(|(_, s)| s.status.holds_slot() && s.vm_id.as_ref() == Some(vm_id))
            .map(|(id, _)| id.clone())
            .collect();
        on_it.sort();
        for id in on_it {
            self.end(at, &id, EndReason::VmLost);
        }
        if let Some(vm) = self.whatif.state.vms.get(vm_id) {
            let command = Command::DeclareVmLost(DeclareVmLost {
                vm_id: vm_id.clone(),
                registered_seq: vm.registered.seq,
                last_heartbeat,
            });
            self.system(at, &command);
        }
    }

    /// Serves the queue at every tick and deadline before `at`.
    fn serve_queue_before(&mut self, at: Timestamp) {
        let mut previous = None;
        loop {
            let deadline = self
                .whatif
                .state
                .timers
                .queue_deadlines
                .first()
                .map(|(t, _)| *t);
            let next = match (self.ticks.first().copied(), deadline) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return,
                },
            };
            // A deadline whose expiry was refused stays: never serve the same moment twice.
            if next >= at || previous.is_some_and(|p| next <= p) {
                return;
            }
            previous = Some(next);
            self.tick(next);
        }
    }

    /// The what-if writer's tick at `now`: queue deadlines, then placements from the queue.
    fn tick(&mut self, now: Timestamp) {
        while self.ticks.first().is_some_and(|t| *t <= now) {
            self.ticks.pop_first();
        }
        let queue_only = TimerConfig {
            pause_timeout_ms: None,
            max_session_ms: None,
            placement_timeout_ms: None,
            heartbeat_misses: 1,
        };
        for due in timers::due_timeouts(&self.whatif.state, &queue_only, now, usize::MAX) {
            self.system(now, &due.command);
        }
        for _ in 0..PLACEMENTS_PER_TICK {
            let Some(due) = timers::next_placement(&self.whatif.state) else {
                break;
            };
            if !self.system(now, &due.command) {
                break;
            }
        }
    }
}
