//! Every VM command against a VM in every state, explicit placements the VM refuses, the user quota,
//! ids already taken, and arguments no state makes valid.

use orchestrator_events::ids::MAX_LABELS;
use orchestrator_events::{Event, Labels, Placement, PlacementPolicy, PlacementReason};

use super::framework::*;
use crate::domain::command::{AssignVm, RegisterVm, StartSession};
use crate::domain::{Command, DomainConfig, Rejection};

/// The states a VM can be in, and "no such VM".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    None,
    AvailableEmpty,
    AvailableBusy,
    AvailableHoldingPaused,
    DrainingEmpty,
    DrainingBusy,
    Retired,
    RetiredAfterDraining,
}

const STATES: [V; 8] = [
    V::None,
    V::AvailableEmpty,
    V::AvailableBusy,
    V::AvailableHoldingPaused,
    V::DrainingEmpty,
    V::DrainingBusy,
    V::Retired,
    V::RetiredAfterDraining,
];

/// `vm-1` (capacity 2) in state `v`; busy means session `s1` runs on it. Session `s2` is `starting`.
fn history(v: V) -> Vec<Event> {
    let reg = || vm_registered("vm-1", 2, &[("region", "eu")]);
    let on = || vec![started("s1", "u1", &[]), assigned("s1", "vm-1")];
    let mut h = match v {
        V::None => vec![],
        V::AvailableEmpty => vec![reg()],
        V::AvailableBusy => [vec![reg()], on()].concat(),
        V::AvailableHoldingPaused => [vec![reg()], on(), vec![paused("s1")]].concat(),
        V::DrainingEmpty => vec![reg(), drained("vm-1")],
        V::DrainingBusy => [vec![reg()], on(), vec![drained("vm-1")]].concat(),
        V::Retired => vec![reg(), retired("vm-1")],
        V::RetiredAfterDraining => [
            vec![reg()],
            on(),
            vec![drained("vm-1"), ended("s1", Some("vm-1")), retired("vm-1")],
        ]
        .concat(),
    };
    h.push(started("s2", "u2", &[]));
    h
}

fn expected(command: &str, v: V) -> Expect {
    let load = match v {
        V::AvailableBusy | V::AvailableHoldingPaused => 1,
        _ => 0,
    };
    match (command, v) {
        ("register", V::None) => ok(vm_registered("vm-1", 2, &[("region", "eu")])),
        ("register", _) => rejected("already_exists"),
        (_, V::None) => rejected("vm_not_found"),

        ("drain", V::AvailableEmpty | V::AvailableBusy | V::AvailableHoldingPaused) => {
            ok(drained("vm-1"))
        }
        ("drain", V::DrainingEmpty | V::DrainingBusy) => rejected("invalid_transition"),
        ("drain" | "retire", V::Retired | V::RetiredAfterDraining) => rejected("vm_retired"),

        ("retire", V::AvailableEmpty | V::DrainingEmpty) => ok(retired("vm-1")),
        ("retire", _) => rejected("vm_not_empty"),

        ("assign s2 to it", V::AvailableEmpty | V::AvailableBusy | V::AvailableHoldingPaused) => {
            ok(Event::SessionAssigned {
                session_id: sid("s2"),
                vm_id: vid("vm-1"),
                placement: Placement {
                    queued: None,
                    policy: PlacementPolicy::Explicit,
                    candidates: 1,
                    eligible: 1,
                    load_before: load,
                    capacity: 2,
                    reason: PlacementReason::Requested,
                },
            })
        }
        ("assign s2 to it", V::DrainingEmpty | V::DrainingBusy) => rejected("vm_draining"),
        ("assign s2 to it", _) => rejected("vm_retired"),
        (other, _) => panic!("no expectation for {other}"),
    }
}

#[test]
fn every_vm_command_in_every_state() {
    let commands = [
        ("register", register("vm-1", 2, &[("region", "eu")])),
        ("drain", drain("vm-1")),
        ("retire", retire("vm-1")),
        ("assign s2 to it", assign_to("s2", "vm-1")),
    ];
    let mut rows = Vec::new();
    for (name, command) in &commands {
        for v in STATES {
            rows.push(row(
                format!("{name} when {v:?}"),
                history(v),
                command.clone(),
                expected(name, v),
            ));
        }
    }
    run_table(rows);
}

fn n_labels(n: usize) -> Labels {
    (0..n)
        .map(|i| (format!("k{i}").parse().unwrap(), "v".parse().unwrap()))
        .collect()
}

fn full_vm() -> Vec<Event> {
    vec![
        vm_registered("vm-1", 1, &[("region", "eu")]),
        started("s1", "u1", &[]),
        assigned("s1", "vm-1"),
        started("s2", "u2", &[("region", "eu")]),
    ]
}

#[test]
fn refusals_and_limits() {
    let with = |base: Vec<Event>, more: Vec<Event>| [base, more].concat();
    let two_live = vec![started("s1", "u1", &[]), started("s2", "u1", &[])];
    let rows = vec![
        // Explicit placement the VM refuses.
        row(
            "assign to a full VM",
            full_vm(),
            assign_to("s2", "vm-1"),
            rejected("vm_full"),
        ),
        row(
            "a paused session keeps its slot",
            with(full_vm(), vec![paused("s1")]),
            assign_to("s2", "vm-1"),
            rejected("vm_full"),
        ),
        row(
            "an ended session frees its slot",
            with(full_vm(), vec![ended("s1", Some("vm-1"))]),
            assign_to("s2", "vm-1"),
            ok(Event::SessionAssigned {
                session_id: sid("s2"),
                vm_id: vid("vm-1"),
                placement: Placement {
                    queued: None,
                    policy: PlacementPolicy::Explicit,
                    candidates: 1,
                    eligible: 1,
                    load_before: 0,
                    capacity: 1,
                    reason: PlacementReason::Requested,
                },
            }),
        ),
        row(
            "assign to a VM lacking labels",
            vec![
                vm_registered("vm-1", 2, &[("region", "us")]),
                started("s2", "u2", &[("region", "eu")]),
            ],
            assign_to("s2", "vm-1"),
            rejected("requirements_not_met"),
        ),
        row(
            "assign to an unknown VM",
            vec![vm_registered("vm-1", 2, &[]), started("s2", "u2", &[])],
            assign_to("s2", "vm-9"),
            rejected("vm_not_found"),
        ),
        row(
            "an unknown session before an unknown VM",
            vec![],
            assign_to("s2", "vm-9"),
            rejected("session_not_found"),
        ),
        // Policy placement with nowhere to go.
        row(
            "no VM at all",
            vec![started("s2", "u2", &[])],
            assign_by("s2", None),
            rejected("no_capacity"),
        ),
        row(
            "every VM full",
            full_vm(),
            assign_by("s2", None),
            rejected("no_capacity"),
        ),
        row(
            "only a draining VM",
            vec![
                vm_registered("vm-1", 2, &[]),
                drained("vm-1"),
                started("s2", "u2", &[]),
            ],
            assign_by("s2", Some(PlacementPolicy::Spread)),
            rejected("no_capacity"),
        ),
        row(
            "no VM with the labels",
            vec![
                vm_registered("vm-1", 2, &[("region", "us")]),
                started("s2", "u2", &[("region", "eu")]),
            ],
            assign_by("s2", None),
            rejected("no_capacity"),
        ),
        // The user quota (default 2 live sessions).
        row(
            "a third live session",
            two_live.clone(),
            start(Some("s3"), "u1", &[]),
            rejected("user_quota_exceeded"),
        ),
        row(
            "active and paused sessions count",
            vec![
                vm_registered("vm-1", 2, &[]),
                started("s1", "u1", &[]),
                assigned("s1", "vm-1"),
                started("s2", "u1", &[]),
                assigned("s2", "vm-1"),
                paused("s2"),
            ],
            start(Some("s3"), "u1", &[]),
            rejected("user_quota_exceeded"),
        ),
        row(
            "an ended session frees quota",
            with(two_live.clone(), vec![ended("s1", None)]),
            start(Some("s3"), "u1", &[]),
            ok(started("s3", "u1", &[])),
        ),
        row(
            "the quota is per user",
            two_live.clone(),
            start(Some("s3"), "u2", &[]),
            ok(started("s3", "u2", &[])),
        ),
        row(
            "quota is checked after the id",
            two_live.clone(),
            start(Some("s1"), "u1", &[]),
            rejected("already_exists"),
        ),
        // Ids already taken.
        row(
            "a session id of another user",
            vec![started("s1", "u1", &[])],
            start(Some("s1"), "u2", &[]),
            rejected("already_exists"),
        ),
        row(
            "an ended session's id stays taken",
            vec![started("s1", "u1", &[]), ended("s1", None)],
            start(Some("s1"), "u1", &[]),
            rejected("already_exists"),
        ),
        row(
            "a retired VM's id stays taken",
            vec![vm_registered("vm-1", 2, &[]), retired("vm-1")],
            register("vm-1", 2, &[]),
            rejected("already_exists"),
        ),
        // Arguments.
        row(
            "capacity 0",
            vec![],
            register("vm-1", 0, &[]),
            rejected("invalid_argument"),
        ),
        row(
            "capacity over the maximum",
            vec![],
            register("vm-1", 1025, &[]),
            rejected("invalid_argument"),
        ),
        row(
            "capacity at the maximum",
            vec![],
            register("vm-1", 1024, &[]),
            ok(vm_registered("vm-1", 1024, &[])),
        ),
        row(
            "arguments are checked before the state",
            vec![vm_registered("vm-1", 2, &[])],
            register("vm-1", 0, &[]),
            rejected("invalid_argument"),
        ),
        row(
            "too many labels",
            vec![],
            Command::RegisterVm(RegisterVm {
                endpoint: None,
                heartbeat_ms: None,
                vm_id: vid("vm-1"),
                capacity: 2,
                labels: n_labels(MAX_LABELS + 1),
            }),
            rejected("invalid_argument"),
        ),
        row(
            "as many labels as allowed",
            vec![],
            Command::RegisterVm(RegisterVm {
                endpoint: None,
                heartbeat_ms: None,
                vm_id: vid("vm-1"),
                capacity: 2,
                labels: n_labels(MAX_LABELS),
            }),
            ok(Event::VmRegistered {
                endpoint: None,
                heartbeat_ms: None,
                vm_id: vid("vm-1"),
                capacity: 2,
                labels: n_labels(MAX_LABELS),
            }),
        ),
        row(
            "too many requirements",
            vec![],
            Command::StartSession(StartSession {
                session_id: Some(sid("s1")),
                user_id: uid("u1"),
                game_id: gid("g-1"),
                requirements: n_labels(MAX_LABELS + 1),
            }),
            rejected("invalid_argument"),
        ),
        row(
            "vm_id and policy together",
            vec![vm_registered("vm-1", 2, &[]), started("s1", "u1", &[])],
            Command::AssignVm(AssignVm {
                wait_ms: None,
                session_id: sid("s1"),
                vm_id: Some(vid("vm-1")),
                policy: Some(PlacementPolicy::Packed),
            }),
            rejected("invalid_argument"),
        ),
        row(
            "the explicit policy without a VM",
            vec![vm_registered("vm-1", 2, &[]), started("s1", "u1", &[])],
            assign_by("s1", Some(PlacementPolicy::Explicit)),
            rejected("invalid_argument"),
        ),
    ];
    run_table(rows);
}

#[test]
fn requirements_not_met_names_the_missing_labels() {
    let r = given(vec![
        vm_registered("vm-1", 2, &[("region", "eu"), ("gpu", "t4")]),
        started(
            "s1",
            "u1",
            &[("region", "eu"), ("gpu", "a10"), ("tier", "gold")],
        ),
    ])
    .when(assign_to("s1", "vm-1"))
    .then_rejected("requirements_not_met");
    assert_eq!(
        r,
        Rejection::RequirementsNotMet {
            vm_id: vid("vm-1"),
            missing: vec!["gpu".into(), "tier".into()],
        }
    );
}

#[test]
fn the_quota_is_configurable() {
    let config = DomainConfig {
        max_sessions_per_user: 3,
        ..DomainConfig::default()
    };
    let history = || vec![started("s1", "u1", &[]), started("s2", "u1", &[])];
    given_with(config.clone(), history())
        .when(start(Some("s3"), "u1", &[]))
        .then_event(started("s3", "u1", &[]));
    let r = given_with(config, [history(), vec![started("s3", "u1", &[])]].concat())
        .when(start(Some("s4"), "u1", &[]))
        .then_rejected("user_quota_exceeded");
    assert_eq!(
        r,
        Rejection::UserQuotaExceeded {
            user_id: uid("u1"),
            limit: 3
        }
    );
}
