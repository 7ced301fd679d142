//! The strategies of the command-sequence properties: steps that send a command (whose session or VM
//! is resolved against the state when the step runs) or retry an earlier one verbatim.

use orchestrator_events::{EndReason, Labels, PlacementPolicy, SessionId, VmId};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::domain::command::{AssignVm, EndSession, RegisterVm, SessionRef, StartSession, VmRef};
use crate::domain::{Command, SessionStatus, State};

const USERS: usize = 5;
const SESSIONS: usize = 8;
const VMS: usize = 4;
const POOLED_IDS: usize = 12;

/// Where a step's command id comes from.
#[derive(Debug, Clone)]
pub(super) enum Id {
    /// One of a few ids, reused across the sequence.
    Pooled(usize),
    /// An id no other step uses.
    Fresh,
}

/// A session a command names, resolved when the step runs so that sequences reach every state: mostly
/// one in a status the command applies to, else one that exists in any status, else any id of the
/// pool, existing or not.
#[derive(Debug, Clone)]
pub(super) enum Sess {
    Fitting(Index),
    Existing(Index),
    Any(usize),
}

/// A VM a command names, likewise.
#[derive(Debug, Clone)]
pub(super) enum Machine {
    Existing(Index),
    Any(usize),
}

/// A command with its session or VM still to resolve against the state.
#[derive(Debug, Clone)]
pub(super) enum Template {
    Start(
        Option<usize>,
        orchestrator_events::UserId,
        &'static str,
        Labels,
    ),
    Assign(Sess, Option<Machine>, Option<PlacementPolicy>, Option<u64>),
    Pause(Sess),
    Resume(Sess),
    End(Sess, EndReason),
    Register(usize, u32, Labels, Option<u32>),
    Drain(Machine),
    Retire(Machine),
}

#[derive(Debug, Clone)]
pub(super) enum Step {
    /// A command under a command id, `dt` ms after the previous step.
    Send {
        id: Id,
        actor: usize,
        dt: i64,
        template: Template,
    },
    /// An earlier step's command id and command again, verbatim.
    Retry { which: Index, dt: i64 },
    /// `dt` ms later, the VMs whose bit is set in `heard` send a heartbeat, then the writer decides
    /// every automatic command due (lost VMs, timeouts, queue placements).
    Tick { dt: i64, heard: u8 },
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: Vec<T>) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

pub(super) fn sess() -> impl Strategy<Value = Sess> {
    prop_oneof![
        4 => any::<Index>().prop_map(Sess::Fitting),
        2 => any::<Index>().prop_map(Sess::Existing),
        1 => (0..SESSIONS).prop_map(Sess::Any),
    ]
}
pub(super) fn machine() -> impl Strategy<Value = Machine> {
    prop_oneof![
        3 => any::<Index>().prop_map(Machine::Existing),
        1 => (0..VMS).prop_map(Machine::Any),
    ]
}
pub(super) fn user() -> impl Strategy<Value = orchestrator_events::UserId> {
    (0..USERS).prop_map(|i| format!("u{i}").parse().unwrap())
}

/// Labels from `region` in {eu, us} and `gpu` in {a10}, each present with probability `p`.
pub(super) fn labels(p: f64) -> impl Strategy<Value = Labels> {
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

pub(super) fn policy() -> impl Strategy<Value = Option<PlacementPolicy>> {
    prop_oneof![
        4 => Just(None),
        2 => Just(Some(PlacementPolicy::Packed)),
        2 => Just(Some(PlacementPolicy::Spread)),
        1 => Just(Some(PlacementPolicy::Explicit)),
    ]
}

pub(super) fn reason() -> impl Strategy<Value = EndReason> {
    pick(vec![
        EndReason::MaxLength,
        EndReason::User,
        EndReason::Operator,
        EndReason::PauseTimeout,
        EndReason::PlacementTimeout,
        EndReason::VmRetired,
        EndReason::VmLost,
    ])
}

pub(super) fn template() -> impl Strategy<Value = Template> {
    prop_oneof![
        4 => (
            prop::option::weighted(0.8, 0..SESSIONS),
            user(),
            pick(vec!["g1", "g2"]),
            labels(0.25),
        )
            .prop_map(|(s, u, g, l)| Template::Start(s, u, g, l)),
        5 => (
            sess(),
            prop::option::weighted(0.4, machine()),
            policy(),
            prop::option::weighted(0.3, prop_oneof![1_000..60_000u64, Just(0u64)]),
        )
            .prop_map(|(s, vm, policy, wait)| {
                // A VM and a policy together is invalid: keep it rare.
                let policy = if vm.is_some() && policy != Some(PlacementPolicy::Spread) {
                    None
                } else {
                    policy
                };
                Template::Assign(s, vm, policy, wait)
            }),
        3 => sess().prop_map(Template::Pause),
        3 => sess().prop_map(Template::Resume),
        2 => (sess(), reason()).prop_map(|(s, r)| Template::End(s, r)),
        2 => (
            0..VMS,
            prop_oneof![1 => Just(0u32), 8 => 1..=3u32],
            labels(0.5),
            prop::option::weighted(0.4, Just(1_000u32)),
        )
            .prop_map(|(vm, cap, l, hb)| Template::Register(vm, cap, l, hb)),
        1 => machine().prop_map(Template::Drain),
        1 => machine().prop_map(Template::Retire),
    ]
}

/// Resolves a template against the state: `Existing` picks among the sessions or VMs there are.
pub(super) fn resolve(state: &State, template: Template) -> Command {
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
        Template::Assign(s, m, policy, wait) => Command::AssignVm(AssignVm {
            wait_ms: wait,
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
        Template::Register(n, capacity, labels, heartbeat_ms) => Command::RegisterVm(RegisterVm {
            endpoint: None,
            heartbeat_ms,
            vm_id: format!("vm{n}").parse().unwrap(),
            capacity,
            labels,
        }),
        Template::Drain(m) => Command::DrainVm(VmRef { vm_id: vm(m) }),
        Template::Retire(m) => Command::RetireVm(VmRef { vm_id: vm(m) }),
    }
}

/// Milliseconds to the next step: mostly seconds, sometimes hours, sometimes past the window.
pub(super) fn dt(window: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0..5_000i64,
        2 => 0..window / 4,
        1 => window - 2..window + 2,
        1 => window..3 * window,
    ]
}

pub(super) fn step(window: i64) -> impl Strategy<Value = Step> {
    let id = prop_oneof![
        1 => (0..POOLED_IDS).prop_map(Id::Pooled),
        2 => Just(Id::Fresh),
    ];
    prop_oneof![
        5 => (id, 0..3usize, dt(window), template())
            .prop_map(|(id, actor, dt, template)| Step::Send { id, actor, dt, template }),
        1 => (any::<Index>(), dt(window)).prop_map(|(which, dt)| Step::Retry { which, dt }),
        2 => (prop_oneof![3 => 0..5_000i64, 1 => 0..1_200_000i64], any::<u8>())
            .prop_map(|(dt, heard)| Step::Tick { dt, heard }),
    ]
}
