//! A given/when/then harness for the domain, after cqrs-es' `TestFramework`: given past events, when a
//! command arrives, then expect one event or a rejection code.
//!
//! ```ignore
//! given([vm_registered("vm-1", 2, &[]), started("s1", "u1", &[])])
//!     .when(pause("s1"))
//!     .then_rejected("invalid_transition");
//! ```
//!
//! Every event given or produced goes through [`invariants::check_transition`] and
//! [`invariants::check`], so a test whose history is impossible fails loudly instead of testing
//! nothing. Tables of rows run every row and report every failing one at once.

use orchestrator_events::{
    Actor, CommandId, EndReason, Envelope, Event, GameId, Labels, Placement, PlacementPolicy,
    PlacementReason, SessionId, Timestamp, UserId, VmId,
};

use crate::domain::command::{AssignVm, EndSession, RegisterVm, SessionRef, StartSession, VmRef};
use crate::domain::{
    evolve, handle, invariants, Command, CommandMeta, Decision, DomainConfig, Rejection, State,
};

/// When the first given event happens.
pub const T0: Timestamp = 1_700_000_000_000;
/// Time between consecutive events of a test log.
pub const STEP_MS: i64 = 1_000;

pub fn sid(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}
pub fn vid(s: &str) -> VmId {
    VmId::parse(s).unwrap()
}
pub fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
pub fn gid(s: &str) -> GameId {
    GameId::parse(s).unwrap()
}
pub fn cid(s: &str) -> CommandId {
    CommandId::parse(s).unwrap()
}
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
        .collect()
}

// Events.

pub fn vm_registered(vm: &str, capacity: u32, l: &[(&str, &str)]) -> Event {
    Event::VmRegistered {
        endpoint: None,
        heartbeat_ms: None,
        vm_id: vid(vm),
        capacity,
        labels: labels(l),
    }
}
pub fn started(session: &str, user: &str, requirements: &[(&str, &str)]) -> Event {
    Event::SessionStarted {
        session_id: sid(session),
        user_id: uid(user),
        game_id: gid("g-1"),
        requirements: labels(requirements),
    }
}
/// An explicit assignment; the placement's details do not matter to the state.
pub fn assigned(session: &str, vm: &str) -> Event {
    Event::SessionAssigned {
        session_id: sid(session),
        vm_id: vid(vm),
        placement: Placement {
            queued: None,
            policy: PlacementPolicy::Explicit,
            candidates: 1,
            eligible: 1,
            load_before: 0,
            capacity: 1,
            reason: PlacementReason::Requested,
        },
    }
}
pub fn paused(session: &str) -> Event {
    Event::SessionPaused {
        session_id: sid(session),
    }
}
pub fn resumed(session: &str) -> Event {
    Event::SessionResumed {
        session_id: sid(session),
    }
}
pub fn ended(session: &str, vm: Option<&str>) -> Event {
    Event::SessionEnded {
        session_id: sid(session),
        reason: EndReason::User,
        vm_id: vm.map(vid),
    }
}
pub fn drained(vm: &str) -> Event {
    Event::VmDrained { vm_id: vid(vm) }
}
pub fn retired(vm: &str) -> Event {
    Event::VmRetired { vm_id: vid(vm) }
}

// Commands.

pub fn start(session: Option<&str>, user: &str, requirements: &[(&str, &str)]) -> Command {
    Command::StartSession(StartSession {
        session_id: session.map(sid),
        user_id: uid(user),
        game_id: gid("g-1"),
        requirements: labels(requirements),
    })
}
pub fn assign_to(session: &str, vm: &str) -> Command {
    Command::AssignVm(AssignVm {
        wait_ms: None,
        session_id: sid(session),
        vm_id: Some(vid(vm)),
        policy: None,
    })
}
pub fn assign_by(session: &str, policy: Option<PlacementPolicy>) -> Command {
    Command::AssignVm(AssignVm {
        wait_ms: None,
        session_id: sid(session),
        vm_id: None,
        policy,
    })
}
pub fn pause(session: &str) -> Command {
    Command::PauseSession(SessionRef {
        session_id: sid(session),
    })
}
pub fn resume(session: &str) -> Command {
    Command::ResumeSession(SessionRef {
        session_id: sid(session),
    })
}
pub fn end(session: &str, reason: EndReason) -> Command {
    Command::EndSession(EndSession {
        session_id: sid(session),
        reason,
    })
}
pub fn assign_waiting(session: &str, wait_ms: u64) -> Command {
    Command::AssignVm(AssignVm {
        wait_ms: Some(wait_ms),
        session_id: sid(session),
        vm_id: None,
        policy: None,
    })
}
pub fn register_beating(vm: &str, capacity: u32, heartbeat_ms: u32) -> Command {
    Command::RegisterVm(RegisterVm {
        endpoint: None,
        heartbeat_ms: Some(heartbeat_ms),
        vm_id: vid(vm),
        capacity,
        labels: Labels::new(),
    })
}
pub fn register(vm: &str, capacity: u32, l: &[(&str, &str)]) -> Command {
    Command::RegisterVm(RegisterVm {
        endpoint: None,
        heartbeat_ms: None,
        vm_id: vid(vm),
        capacity,
        labels: labels(l),
    })
}
pub fn drain(vm: &str) -> Command {
    Command::DrainVm(VmRef { vm_id: vid(vm) })
}
pub fn retire(vm: &str) -> Command {
    Command::RetireVm(VmRef { vm_id: vid(vm) })
}

/// A log being written: the state, and the envelopes with their sequences.
pub struct Log {
    pub state: State,
    pub envelopes: Vec<(u64, Envelope)>,
    /// The time of the last event (or [`T0`] before the first).
    pub at: Timestamp,
}

impl Log {
    pub fn new(config: DomainConfig) -> Self {
        Self {
            state: State::new(config),
            envelopes: Vec::new(),
            at: T0,
        }
    }

    /// Folds an event in at time `at`, after checking it is a legal transition; returns its sequence.
    #[track_caller]
    pub fn append(&mut self, command_id: &str, digest: u64, at: Timestamp, event: Event) -> u64 {
        self.append_as(Actor::system("test"), command_id, digest, at, event)
    }

    /// Appends an event of `actor`'s command.
    pub fn append_as(
        &mut self,
        actor: Actor,
        command_id: &str,
        digest: u64,
        at: Timestamp,
        event: Event,
    ) -> u64 {
        if let Err(v) = invariants::check_transition(&self.state, &event) {
            panic!("illegal event {event:?}: {v}");
        }
        let seq = self.state.last_seq + 1;
        let env = Envelope::new(
            format!("evt-{seq}"),
            command_id.to_owned(),
            digest,
            at,
            actor,
            event,
        );
        evolve(&mut self.state, seq, &env);
        if let Err(v) = invariants::check(&self.state) {
            panic!("invariant broken after {:?}: {v}", env.event);
        }
        self.envelopes.push((seq, env));
        self.at = at;
        seq
    }

    /// Decides a command through [`handle`] at `at`, appending the event if one is decided.
    pub fn submit(
        &mut self,
        command_id: &str,
        at: Timestamp,
        command: &Command,
    ) -> Result<Decision, Rejection> {
        let meta = CommandMeta {
            command_id: cid(command_id),
            actor: Actor::service("gateway"),
            at,
        };
        let decision = handle(&self.state, &meta, command)?;
        if let Decision::Append(event) = &decision {
            self.append_as(meta.actor, command_id, command.digest(), at, event.clone());
        }
        Ok(decision)
    }

    /// Decides an automatic command as the writer does: with the `system` actor and its
    /// deterministic id.
    pub fn system(
        &mut self,
        due: &crate::domain::timers::Due,
        at: Timestamp,
    ) -> Result<Decision, Rejection> {
        let meta = CommandMeta {
            command_id: due.command_id.clone(),
            actor: crate::domain::timers::system(),
            at,
        };
        let decision = handle(&self.state, &meta, &due.command)?;
        if let Decision::Append(event) = &decision {
            self.append_as(
                meta.actor,
                due.command_id.as_str(),
                due.command.digest(),
                at,
                event.clone(),
            );
        }
        Ok(decision)
    }

    /// A fresh replay of every envelope into an empty state.
    pub fn replay(&self) -> State {
        let mut state = State::new(self.state.config.clone());
        for (seq, env) in &self.envelopes {
            evolve(&mut state, *seq, env);
        }
        state
    }
}

pub fn given(events: impl IntoIterator<Item = Event>) -> Given {
    given_with(DomainConfig::default(), events)
}

pub fn given_with(config: DomainConfig, events: impl IntoIterator<Item = Event>) -> Given {
    let mut log = Log::new(config);
    for (i, e) in events.into_iter().enumerate() {
        let at = T0 + i as i64 * STEP_MS;
        log.append(&format!("given-{i}"), i as u64 + 1, at, e);
    }
    Given { log }
}

/// Past events, folded.
pub struct Given {
    pub log: Log,
}

impl Given {
    /// Handles a command with a new command id, one step after the last event.
    pub fn when(self, command: Command) -> Then {
        let at = self.log.at + STEP_MS;
        let meta = CommandMeta {
            command_id: cid("when"),
            actor: Actor::service("gateway"),
            at,
        };
        let result = handle(&self.log.state, &meta, &command);
        Then {
            before: self.log.state,
            result,
        }
    }
}

/// The decision, to check.
pub struct Then {
    pub before: State,
    pub result: Result<Decision, Rejection>,
}

/// What a row expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Event(Event),
    Rejected(&'static str),
}

impl Then {
    /// The outcome, checked for legality when it is an event.
    pub fn outcome(&self) -> Result<Expect, String> {
        match &self.result {
            Ok(Decision::Append(e)) => {
                invariants::check_transition(&self.before, e)
                    .map_err(|v| format!("decided an illegal event {e:?}: {v}"))?;
                let mut after = self.before.clone();
                let env = Envelope::new(
                    "e".into(),
                    "when".into(),
                    1,
                    self.before.last_at + STEP_MS,
                    Actor::system("test"),
                    e.clone(),
                );
                let seq = after.last_seq + 1;
                evolve(&mut after, seq, &env);
                invariants::check(&after)
                    .map_err(|v| format!("invariant broken after {e:?}: {v}"))?;
                Ok(Expect::Event(e.clone()))
            }
            Ok(Decision::AlreadyApplied { seq }) => Err(format!("already applied at {seq}")),
            Err(r) => Ok(Expect::Rejected(r.code())),
        }
    }

    #[track_caller]
    pub fn then_event(self, expected: Event) {
        assert_eq!(self.outcome(), Ok(Expect::Event(expected)));
    }

    #[track_caller]
    pub fn then_rejected(self, code: &'static str) -> Rejection {
        assert_eq!(
            self.outcome(),
            Ok(Expect::Rejected(code)),
            "{:?}",
            self.result
        );
        self.result.expect_err("checked above")
    }
}

/// One row of a table: a name, a history, a command and what it must give.
pub struct Row {
    pub name: String,
    pub given: Vec<Event>,
    pub when: Command,
    pub then: Expect,
}

pub fn row(name: impl Into<String>, given: Vec<Event>, when: Command, then: Expect) -> Row {
    Row {
        name: name.into(),
        given,
        when,
        then,
    }
}

pub fn ok(e: Event) -> Expect {
    Expect::Event(e)
}
pub fn rejected(code: &'static str) -> Expect {
    Expect::Rejected(code)
}

/// Runs every row and fails listing every row that did not give what it expects.
#[track_caller]
pub fn run_table(rows: Vec<Row>) {
    let total = rows.len();
    let mut failures = Vec::new();
    for r in rows {
        let got = given(r.given).when(r.when).outcome();
        if got.as_ref() != Ok(&r.then) {
            failures.push(format!(
                "  {}:\n    expected {:?}\n    got      {:?}",
                r.name, r.then, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
