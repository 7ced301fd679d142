//! Properties over random command sequences.
//!
//! Commands draw from small pools (5 users, 8 sessions, 4 VMs of capacity 1 to 3 (0 now and then, which
//! is refused) with a few labels, 12 reusable command ids) so that collisions, quota limits, full VMs
//! and reused ids happen often. A command mostly names a session in a status it applies to, resolved
//! against the state when the step runs, so sequences go deep into every state; some name any id.
//! Some steps retry an earlier command verbatim, and some time steps jump past the idempotency
//! window (see [`strategy`]). Tick steps let VMs send heartbeats (or not) and decide every
//! automatic command then due, as the writer does, between the callers' commands: timers racing
//! users in any order.
//!
//! Each command goes through [`handle`] as the writer does; after every step the state and the event
//! are checked against [`invariants`], and every answer to a command id is checked against a model of
//! invariant 3 (ids scoped by their sender). At the end, folding one event at a time must equal a fresh replay of the envelopes,
//! as they are and after a round trip through the codec.
//!
//! `PROPTEST_CASES` sets the number of cases (default 10,000).

use std::collections::HashMap;

use orchestrator_events::{codec, Actor, Envelope, PlacementPolicy, Timestamp};
use proptest::prelude::*;

use super::framework::{cid, T0};
use crate::domain::placement;
use crate::domain::timers::{self, Heartbeats, TimerConfig};
use crate::domain::{
    evolve, handle, invariants, Command, CommandMeta, Decision, DomainConfig, State,
};
use strategy::{resolve, step, Id, Step};

mod strategy;

const MAX_STEPS: usize = 60;
const DEFAULT_CASES: u32 = 10_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// The first accepted use of a command id within the window: what invariant 3 says a retry gets.
#[derive(Debug, Clone, Copy)]
struct First {
    digest: u64,
    seq: u64,
    at: Timestamp,
    /// How many ids were accepted before this one: it is forgotten once `max_remembered_commands`
    /// newer ones were.
    accepted_before: u64,
}

fn run(config: DomainConfig, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let window = config.idempotency_window_ms;
    let max_ids = config.max_remembered_commands;
    let actors = [
        Actor::user("u0"),
        Actor::operator("ops"),
        Actor::service("gateway"),
    ];
    let mut state = State::new(config.clone());
    let mut log: Vec<(u64, Envelope)> = Vec::new();
    let mut sent: Vec<(String, usize, Command)> = Vec::new();
    let mut firsts: HashMap<(usize, String), First> = HashMap::new();
    let mut at = T0;
    let timers = TimerConfig {
        pause_timeout_ms: Some(600_000),
        max_session_ms: Some(3_600_000),
        placement_timeout_ms: Some(300_000),
        heartbeat_misses: 3,
    };
    let mut beats = Heartbeats::new(T0);

    for (i, step) in steps.into_iter().enumerate() {
        let (command_id, actor, command) = match step {
            Step::Tick { dt, heard } => {
                at += dt;
                for (n, vm) in state.vms.keys().enumerate() {
                    if heard & (1 << (n % 8)) != 0 {
                        beats.beat(vm.clone(), at);
                    }
                }
                tick(&mut state, &mut log, &timers, &beats, at)?;
                continue;
            }
            Step::Send {
                id,
                actor,
                dt,
                template,
            } => {
                at += dt;
                let command_id = match id {
                    Id::Pooled(n) => format!("pooled-{n}"),
                    Id::Fresh => format!("fresh-{i}"),
                };
                (command_id, actor, resolve(&state, template))
            }
            Step::Retry { which, dt } => {
                if sent.is_empty() {
                    continue;
                }
                at += dt;
                sent[which.index(sent.len())].clone()
            }
        };
        sent.push((command_id.clone(), actor, command.clone()));
        let meta = CommandMeta {
            command_id: cid(&command_id),
            actor: actors[actor].clone(),
            at,
        };
        let digest = command.digest();
        let first = firsts
            .get(&(actor, command_id.clone()))
            .copied()
            // Every event appended since counts, the automatic ones included.
            .filter(|f| f.at >= at - window && log.len() as u64 - f.accepted_before <= max_ids);
        let result = handle(&state, &meta, &command);
        let context = || format!("step {i}: {command_id} {command:?} at {at}: {result:?}");

        match (&result, first) {
            (Ok(Decision::AlreadyApplied { seq }), Some(f)) => {
                prop_assert_eq!(f.digest, digest, "{}", context());
                prop_assert_eq!(*seq, f.seq, "{}", context());
            }
            (Err(r), Some(f)) if r.code() == "command_id_reused" => {
                prop_assert_ne!(f.digest, digest, "{}", context());
            }
            (_, Some(f)) => {
                return Err(TestCaseError::fail(format!(
                    "{}: the id was applied at seq {} within the window",
                    context(),
                    f.seq
                )))
            }
            (Ok(Decision::AlreadyApplied { .. }), None) => {
                return Err(TestCaseError::fail(format!("{}: a new id", context())))
            }
            (Err(r), None) => {
                prop_assert_ne!(r.code(), "command_id_reused", "{}", context());
            }
            (Ok(Decision::Append(event)), None) => {
                if let Err(v) = invariants::check_transition(&state, event) {
                    return Err(TestCaseError::fail(format!("{}: {v}", context())));
                }
                let seq = state.last_seq + 1;
                let env = Envelope::new(
                    format!("evt-{seq}"),
                    command_id.clone(),
                    digest,
                    at,
                    meta.actor.clone(),
                    event.clone(),
                );
                evolve(&mut state, seq, &env);
                log.push((seq, env));
                firsts.insert(
                    (actor, command_id.clone()),
                    First {
                        digest,
                        seq,
                        at,
                        accepted_before: log.len() as u64 - 1,
                    },
                );
            }
        }
        if let Err(v) = invariants::check(&state) {
            return Err(TestCaseError::fail(format!("{}: {v}", context())));
        }
        placement_agrees(&state).map_err(|e| TestCaseError::fail(format!("{}: {e}", context())))?;
    }

    // The system's ids are decided once each.
    let system: Vec<_> = log
        .iter()
        .filter(|(_, e)| e.actor == timers::system())
        .map(|(_, e)| e.command_id.as_str())
        .collect();
    let mut unique = system.clone();
    unique.sort_unstable();
    unique.dedup();
    prop_assert_eq!(
        unique.len(),
        system.len(),
        "an automatic command applied twice"
    );

    // Invariant 3 on the log itself: one event per command id of a sender within the window and the
    // newest `max_remembered_commands` accepted ids.
    let mut last_use: HashMap<(&Actor, &str), (usize, Timestamp)> = HashMap::new();
    for (i, (seq, env)) in log.iter().enumerate() {
        let key = (&env.actor, env.command_id.as_str());
        if let Some((prev_i, prev_at)) = last_use.insert(key, (i, env.occurred_at)) {
            let newer = (i - prev_i - 1) as u64;
            prop_assert!(
                env.occurred_at - prev_at > window || newer >= max_ids,
                "{} appended again at seq {seq}, {} ms and {newer} ids after its first use",
                env.command_id,
                env.occurred_at - prev_at
            );
        }
    }

    // Invariant 4: folding one event at a time equals a fresh replay, before and after the codec.
    let mut replayed = State::new(config.clone());
    let mut decoded = State::new(config);
    for (seq, env) in &log {
        evolve(&mut replayed, *seq, env);
        let back = codec::decode(&codec::encode(env))
            .map_err(|e| TestCaseError::fail(format!("seq {seq} does not decode: {e}")))?;
        prop_assert_eq!(&back, env);
        evolve(&mut decoded, *seq, &back);
    }
    prop_assert_eq!(&replayed, &state, "a replay differs from the folded state");
    prop_assert_eq!(&decoded, &state, "a replay through the codec differs");
    Ok(())
}

/// The placement index chooses exactly as a walk over every VM does, for every set it holds (idle
/// ones included), under both policies; it holds the requirements of every session waiting for a VM,
/// and no more idle sets than it keeps.
fn placement_agrees(state: &State) -> Result<(), String> {
    for s in state.sessions.values() {
        if s.status == crate::domain::SessionStatus::Starting
            && !state.placement.holds(&s.requirements)
        {
            return Err(format!("requirements {:?} not indexed", s.requirements));
        }
    }
    let mut idle = 0;
    for (requirements, waiting) in state.placement.sets() {
        if waiting == 0 {
            idle += 1;
        }
        for policy in [PlacementPolicy::Packed, PlacementPolicy::Spread] {
            let walked =
                placement::choose(&state.vms, requirements, policy).map(|(id, p)| (id.clone(), p));
            let indexed = state
                .placement
                .choose(&state.vms, requirements, policy)
                .ok_or_else(|| format!("requirements {requirements:?} not indexed"))?;
            if walked != indexed {
                return Err(format!(
                    "placement index {indexed:?} != walk {walked:?} for {requirements:?} by {policy:?}"
                ));
            }
        }
    }
    if idle > placement::IDLE_SETS_KEPT {
        return Err(format!(
            "{idle} idle requirement sets indexed, more than {}",
            placement::IDLE_SETS_KEPT
        ));
    }
    Ok(())
}

/// Decides what is due at `at` the way the writer's tick does: lost VMs, timeouts, then the queue,
/// one command at a time against the state the last one left.
fn tick(
    state: &mut State,
    log: &mut Vec<(u64, Envelope)>,
    config: &TimerConfig,
    beats: &Heartbeats,
    at: Timestamp,
) -> Result<(), TestCaseError> {
    let mut due = beats.lost(state, config, at, usize::MAX);
    due.extend(timers::due_timeouts(state, config, at, usize::MAX));
    let mut due = due.into_iter();
    let mut placements = 0;
    loop {
        let d = match due.next() {
            Some(d) => d,
            None => match timers::next_placement(state) {
                Some(d) if placements < 100 => {
                    placements += 1;
                    d
                }
                _ => break,
            },
        };
        let meta = CommandMeta {
            command_id: d.command_id.clone(),
            actor: timers::system(),
            at,
        };
        let context = || format!("tick at {at}: {} {:?}", d.command_id, d.command);
        match handle(state, &meta, &d.command) {
            Ok(Decision::Append(event)) => {
                if let Err(v) = invariants::check_transition(state, &event) {
                    return Err(TestCaseError::fail(format!("{}: {v}", context())));
                }
                let seq = state.last_seq + 1;
                let env = Envelope::new(
                    format!("evt-{seq}"),
                    d.command_id.to_string(),
                    d.command.digest(),
                    at,
                    meta.actor.clone(),
                    event,
                );
                evolve(state, seq, &env);
                log.push((seq, env));
            }
            // An earlier automatic command of this tick got there first (a paused session on a
            // lost VM): refused, nothing appended.
            Err(r) if r.code() == "invalid_transition" => {}
            other => {
                return Err(TestCaseError::fail(format!("{}: {other:?}", context())));
            }
        }
        if let Err(v) = invariants::check(state) {
            return Err(TestCaseError::fail(format!("{}: {v}", context())));
        }
        placement_agrees(state).map_err(|e| TestCaseError::fail(format!("{}: {e}", context())))?;
    }
    // Nothing is left due, and no queued session could be placed.
    prop_assert!(
        timers::due_timeouts(state, config, at, 1).is_empty(),
        "still due after a tick at {}",
        at
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    /// Default configuration: quota 2, window 24 h.
    #[test]
    fn random_commands_keep_every_invariant(
        steps in prop::collection::vec(step(DomainConfig::default().idempotency_window_ms), 0..=MAX_STEPS)
    ) {
        run(DomainConfig::default(), steps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases() / 10,
        ..ProptestConfig::default()
    })]

    /// Another quota, a short window and a small count bound, so limits and forgetting are hit under
    /// other numbers.
    #[test]
    fn random_commands_under_other_limits(
        quota in 1..=3u32,
        steps in prop::collection::vec(step(60_000), 0..=MAX_STEPS)
    ) {
        let config = DomainConfig {
            max_sessions_per_user: quota,
            idempotency_window_ms: 60_000,
            max_remembered_commands: 8,
            max_vm_capacity: 3,
        };
        run(config, steps)?;
    }
}
