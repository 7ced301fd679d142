//! Properties over random command sequences.
//!
//! Commands draw from small pools (5 users, 8 sessions, 4 VMs of capacity 1 to 3 (0 now and then, which
//! is refused) with a few labels, 12 reusable command ids) so that collisions, quota limits, full VMs
//! and reused ids happen often. A command mostly names a session in a status it applies to, resolved
//! against the state when the step runs, so sequences go deep into every state; some name any id.
//! Some steps retry an earlier command verbatim, and some time steps jump past the idempotency
//! window. Each
//! command goes through [`handle`] as the writer does; after every step the state and the event are
//! checked against [`invariants`], and every answer to a command id is checked against a model of
//! invariant 3. At the end, folding one event at a time must equal a fresh replay of the envelopes,
//! as they are and after a round trip through the codec.
//!
//! `PROPTEST_CASES` sets the number of cases (default 10,000).

use std::collections::HashMap;

use orchestrator_events::{
    codec, Actor, EndReason, Envelope, Labels, PlacementPolicy, SessionId, Timestamp, VmId,
};
use proptest::prelude::*;
use proptest::sample::Index;

use super::framework::{cid, T0};
use crate::domain::command::{AssignVm, EndSession, RegisterVm, SessionRef, StartSession, VmRef};
use crate::domain::{
    evolve, handle, invariants, Command, CommandMeta, Decision, DomainConfig, SessionStatus, State,
};

const USERS: usize = 5;
const SESSIONS: usize = 8;
const VMS: usize = 4;
const POOLED_IDS: usize = 12;
const MAX_STEPS: usize = 60;
const DEFAULT_CASES: u32 = 10_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Where a step's command id comes from.
#[derive(Debug, Clone)]
enum Id {
    /// One of a few ids, reused across the sequence.
    Pooled(usize),
    /// An id no other step uses.
    Fresh,
}

/// A session a command names, resolved when the step runs so that sequences reach every state: mostly
/// one in a status the command applies to, else one that exists in any status, else any id of the
/// pool, existing or not.
#[derive(Debug, Clone)]
enum Sess {
    Fitting(Index),
    Existing(Index),
    Any(usize),
}

/// A VM a command names, likewise.
#[derive(Debug, Clone)]
enum Machine {
    Existing(Index),
    Any(usize),
}

/// A command with its session or VM still to resolve against the state.
#[derive(Debug, Clone)]
enum Template {
    Start(
        Option<usize>,
        orchestrator_events::UserId,
        &'static str,
        Labels,
    ),
    Assign(Sess, Option<Machine>, Option<PlacementPolicy>),
    Pause(Sess),
    Resume(Sess),
    End(Sess, EndReason),
    Register(usize, u32, Labels),
    Drain(Machine),
    Retire(Machine),
}

#[derive(Debug, Clone)]
enum Step {
    /// A command under a command id, `dt` ms after the previous step.
    Send {
        id: Id,
        actor: usize,
        dt: i64,
        template: Template,
    },
    /// An earlier step's command id and command again, verbatim.
    Retry { which: Index, dt: i64 },
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: Vec<T>) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

fn sess() -> impl Strategy<Value = Sess> {
    prop_oneof![
        4 => any::<Index>().prop_map(Sess::Fitting),
        2 => any::<Index>().prop_map(Sess::Existing),
        1 => (0..SESSIONS).prop_map(Sess::Any),
    ]
}
fn machine() -> impl Strategy<Value = Machine> {
    prop_oneof![
        3 => any::<Index>().prop_map(Machine::Existing),
        1 => (0..VMS).prop_map(Machine::Any),
    ]
}
fn user() -> impl Strategy<Value = orchestrator_events::UserId> {
    (0..USERS).prop_map(|i| format!("u{i}").parse().unwrap())
}

/// Labels from `region` in {eu, us} and `gpu` in {a10}, each present with probability `p`.
fn labels(p: f64) -> impl Strategy<Value = Labels> {
    (
        prop::option::weighted(p, pick(vec!["eu", "us"])),
        prop::option::weighted(p, Just("a10")),
    )
        .prop_map(|(region, gpu)| {
            let mut l = Labels::new();
            if let Some(r) = region {
                l.insert("region".parse().unwrap(), r.parse().unwrap());
            }
            if let Some(g) = gpu {
                l.insert("gpu".parse().unwrap(), g.parse().unwrap());
            }
            l
        })
}

fn policy() -> impl Strategy<Value = Option<PlacementPolicy>> {
    prop_oneof![
        4 => Just(None),
        2 => Just(Some(PlacementPolicy::Packed)),
        2 => Just(Some(PlacementPolicy::Spread)),
        1 => Just(Some(PlacementPolicy::Explicit)),
    ]
}

fn reason() -> impl Strategy<Value = EndReason> {
    pick(vec![
        EndReason::User,
        EndReason::Operator,
        EndReason::PauseTimeout,
        EndReason::PlacementTimeout,
        EndReason::VmRetired,
        EndReason::VmLost,
    ])
}

fn template() -> impl Strategy<Value = Template> {
    prop_oneof![
        4 => (
            prop::option::weighted(0.8, 0..SESSIONS),
            user(),
            pick(vec!["g1", "g2"]),
            labels(0.25),
        )
            .prop_map(|(s, u, g, l)| Template::Start(s, u, g, l)),
        5 => (sess(), prop::option::weighted(0.4, machine()), policy()).prop_map(
            |(s, vm, policy)| {
                // A VM and a policy together is invalid: keep it rare.
                let policy = if vm.is_some() && policy != Some(PlacementPolicy::Spread) {
                    None
                } else {
                    policy
                };
                Template::Assign(s, vm, policy)
            }
        ),
        3 => sess().prop_map(Template::Pause),
        3 => sess().prop_map(Template::Resume),
        2 => (sess(), reason()).prop_map(|(s, r)| Template::End(s, r)),
        2 => (0..VMS, prop_oneof![1 => Just(0u32), 8 => 1..=3u32], labels(0.5))
            .prop_map(|(vm, cap, l)| Template::Register(vm, cap, l)),
        1 => machine().prop_map(Template::Drain),
        1 => machine().prop_map(Template::Retire),
    ]
}

/// Resolves a template against the state: `Existing` picks among the sessions or VMs there are.
fn resolve(state: &State, template: Template) -> Command {
    // Sessions in a status among `fits` (any status if none is), sorted so the choice is stable.
    let session = |s: Sess, fits: &[SessionStatus]| -> SessionId {
        let among = |fits: &[SessionStatus]| {
            let mut ids: Vec<&SessionId> = state
                .sessions
                .iter()
                .filter(|(_, x)| fits.is_empty() || fits.contains(&x.status))
                .map(|(id, _)| id)
                .collect();
            ids.sort();
            ids
        };
        let (i, mut ids) = match s {
            Sess::Any(n) => return format!("s{n}").parse().unwrap(),
            Sess::Fitting(i) => (i, among(fits)),
            Sess::Existing(i) => (i, among(&[])),
        };
        if ids.is_empty() {
            ids = among(&[]);
        }
        match ids.is_empty() {
            false => ids[i.index(ids.len())].clone(),
            true => format!("s{}", i.index(SESSIONS)).parse().unwrap(),
        }
    };
    let vm = |m: Machine| -> VmId {
        match m {
            Machine::Existing(i) if !state.vms.is_empty() => state
                .vms
                .keys()
                .nth(i.index(state.vms.len()))
                .unwrap()
                .clone(),
            Machine::Existing(i) => format!("vm{}", i.index(VMS)).parse().unwrap(),
            Machine::Any(n) => format!("vm{n}").parse().unwrap(),
        }
    };
    use SessionStatus::{Active, Paused, Starting};
    let sref = |s, fits: &[SessionStatus]| SessionRef {
        session_id: session(s, fits),
    };
    match template {
        Template::Start(s, user_id, game, requirements) => Command::StartSession(StartSession {
            session_id: s.map(|n| format!("s{n}").parse().unwrap()),
            user_id,
            game_id: game.parse().unwrap(),
            requirements,
        }),
        Template::Assign(s, m, policy) => Command::AssignVm(AssignVm {
            session_id: session(s, &[Starting]),
            vm_id: m.map(vm),
            policy,
        }),
        Template::Pause(s) => Command::PauseSession(sref(s, &[Active])),
        Template::Resume(s) => Command::ResumeSession(sref(s, &[Paused])),
        Template::End(s, reason) => Command::EndSession(EndSession {
            session_id: session(s, &[Starting, Active, Paused]),
            reason,
        }),
        Template::Register(n, capacity, labels) => Command::RegisterVm(RegisterVm {
            vm_id: format!("vm{n}").parse().unwrap(),
            capacity,
            labels,
        }),
        Template::Drain(m) => Command::DrainVm(VmRef { vm_id: vm(m) }),
        Template::Retire(m) => Command::RetireVm(VmRef { vm_id: vm(m) }),
    }
}

/// Milliseconds to the next step: mostly seconds, sometimes hours, sometimes past the window.
fn dt(window: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0..5_000i64,
        2 => 0..window / 4,
        1 => window - 2..window + 2,
        1 => window..3 * window,
    ]
}

fn step(window: i64) -> impl Strategy<Value = Step> {
    let id = prop_oneof![
        1 => (0..POOLED_IDS).prop_map(Id::Pooled),
        2 => Just(Id::Fresh),
    ];
    prop_oneof![
        5 => (id, 0..3usize, dt(window), template())
            .prop_map(|(id, actor, dt, template)| Step::Send { id, actor, dt, template }),
        1 => (any::<Index>(), dt(window)).prop_map(|(which, dt)| Step::Retry { which, dt }),
    ]
}

/// The first accepted use of a command id within the window: what invariant 3 says a retry gets.
#[derive(Debug, Clone, Copy)]
struct First {
    digest: u64,
    seq: u64,
    at: Timestamp,
}

fn run(config: DomainConfig, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let window = config.idempotency_window_ms;
    let actors = [
        Actor::user("u0"),
        Actor::operator("ops"),
        Actor::service("gateway"),
    ];
    let mut state = State::new(config.clone());
    let mut log: Vec<(u64, Envelope)> = Vec::new();
    let mut sent: Vec<(String, usize, Command)> = Vec::new();
    let mut firsts: HashMap<String, First> = HashMap::new();
    let mut at = T0;

    for (i, step) in steps.into_iter().enumerate() {
        let (command_id, actor, command) = match step {
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
            .get(&command_id)
            .copied()
            .filter(|f| f.at >= at - window);
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
                firsts.insert(command_id.clone(), First { digest, seq, at });
            }
        }
        if let Err(v) = invariants::check(&state) {
            return Err(TestCaseError::fail(format!("{}: {v}", context())));
        }
    }

    // Invariant 3 on the log itself: one event per command id within any window.
    let mut last_use: HashMap<&str, Timestamp> = HashMap::new();
    for (seq, env) in &log {
        if let Some(prev) = last_use.insert(&env.command_id, env.occurred_at) {
            prop_assert!(
                env.occurred_at - prev > window,
                "{} appended again at seq {seq}, {} ms after its first use",
                env.command_id,
                env.occurred_at - prev
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

    /// Another quota and a short window, so limits and forgetting are hit under other numbers.
    #[test]
    fn random_commands_under_other_limits(
        quota in 1..=3u32,
        steps in prop::collection::vec(step(60_000), 0..=MAX_STEPS)
    ) {
        let config = DomainConfig {
            max_sessions_per_user: quota,
            idempotency_window_ms: 60_000,
            max_vm_capacity: 3,
        };
        run(config, steps)?;
    }
}
