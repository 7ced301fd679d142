//! Every session command against a session in every state: none, starting, active, paused, ended.

use orchestrator_events::{EndReason, Event, Placement, PlacementPolicy, PlacementReason};

use super::framework::*;
use crate::domain::Command;

/// The states a session can be in, and "no such session".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum S {
    None,
    Starting,
    Active,
    Paused,
    Ended,
}

const STATES: [S; 5] = [S::None, S::Starting, S::Active, S::Paused, S::Ended];

/// One VM `vm-1` (capacity 2, region eu) and session `s1` of user `u1`, requiring region eu, in `s`.
fn history(s: S) -> Vec<Event> {
    let mut h = vec![vm_registered(
        "vm-1",
        2,
        &[("region", "eu"), ("gpu", "a10")],
    )];
    if s == S::None {
        return h;
    }
    h.push(started("s1", "u1", &[("region", "eu")]));
    match s {
        S::None | S::Starting => {}
        S::Active => h.push(assigned("s1", "vm-1")),
        S::Paused => h.extend([assigned("s1", "vm-1"), paused("s1")]),
        S::Ended => h.extend([assigned("s1", "vm-1"), ended("s1", Some("vm-1"))]),
    }
    h
}

fn placement(policy: PlacementPolicy, reason: PlacementReason) -> Placement {
    Placement {
        queued: None,
        policy,
        candidates: 1,
        eligible: 1,
        load_before: 0,
        capacity: 2,
        reason,
    }
}

fn assigned_event(policy: PlacementPolicy, reason: PlacementReason) -> Expect {
    ok(Event::SessionAssigned {
        session_id: sid("s1"),
        vm_id: vid("vm-1"),
        placement: placement(policy, reason),
    })
}

/// What each command must give in each state.
fn expected(command: &str, s: S) -> Expect {
    let not_found = rejected("session_not_found");
    let invalid = rejected("invalid_transition");
    match (command, s) {
        ("start", S::None) => ok(Event::SessionStarted {
            session_id: sid("s1"),
            user_id: uid("u1"),
            game_id: gid("g-1"),
            requirements: labels(&[("region", "eu")]),
        }),
        ("start", _) => rejected("already_exists"),

        (_, S::None) => not_found,

        ("assign explicit", S::Starting) => {
            assigned_event(PlacementPolicy::Explicit, PlacementReason::Requested)
        }
        ("assign default policy" | "assign packed", S::Starting) => assigned_event(
            PlacementPolicy::Packed,
            PlacementReason::FullestWithRoom { tied: 1 },
        ),
        ("assign spread", S::Starting) => assigned_event(
            PlacementPolicy::Spread,
            PlacementReason::EmptiestWithRoom { tied: 1 },
        ),
        ("assign explicit" | "assign default policy" | "assign packed" | "assign spread", _) => {
            invalid
        }

        ("pause", S::Active) => ok(paused("s1")),
        ("pause", _) => invalid,

        ("resume", S::Paused) => ok(resumed("s1")),
        ("resume", _) => invalid,

        ("end", S::Starting) => ok(ended("s1", None)),
        ("end", S::Active | S::Paused) => ok(ended("s1", Some("vm-1"))),
        ("end", S::Ended) => invalid,

        (other, _) => panic!("no expectation for {other}"),
    }
}

fn commands() -> Vec<(&'static str, Command)> {
    vec![
        ("start", start(Some("s1"), "u1", &[("region", "eu")])),
        ("assign explicit", assign_to("s1", "vm-1")),
        ("assign default policy", assign_by("s1", None)),
        (
            "assign packed",
            assign_by("s1", Some(PlacementPolicy::Packed)),
        ),
        (
            "assign spread",
            assign_by("s1", Some(PlacementPolicy::Spread)),
        ),
        ("pause", pause("s1")),
        ("resume", resume("s1")),
        ("end", end("s1", EndReason::User)),
    ]
}

#[test]
fn every_session_command_in_every_state() {
    let mut rows = Vec::new();
    for (name, command) in commands() {
        for s in STATES {
            rows.push(row(
                format!("{name} when {s:?}"),
                history(s),
                command.clone(),
                expected(name, s),
            ));
        }
    }
    assert_eq!(rows.len(), 8 * 5);
    run_table(rows);
}

#[test]
fn a_session_ended_from_any_state_stays_ended() {
    // Ended from starting, and from paused: every command still refuses it.
    for history in [
        vec![
            vm_registered("vm-1", 2, &[]),
            started("s1", "u1", &[]),
            ended("s1", None),
        ],
        vec![
            vm_registered("vm-1", 2, &[]),
            started("s1", "u1", &[]),
            assigned("s1", "vm-1"),
            paused("s1"),
            ended("s1", Some("vm-1")),
        ],
    ] {
        for (name, command) in commands() {
            let code = if name == "start" {
                "already_exists"
            } else {
                "invalid_transition"
            };
            given(history.clone()).when(command).then_rejected(code);
        }
    }
}

#[test]
fn every_end_reason_is_recorded() {
    for reason in [
        EndReason::User,
        EndReason::Operator,
        EndReason::PauseTimeout,
        EndReason::PlacementTimeout,
        EndReason::VmRetired,
        EndReason::VmLost,
    ] {
        given(history(S::Paused))
            .when(end("s1", reason))
            .then_event(Event::SessionEnded {
                session_id: sid("s1"),
                reason,
                vm_id: Some(vid("vm-1")),
            });
    }
}

#[test]
fn an_invalid_transition_names_the_state_and_command() {
    let r = given(history(S::Starting))
        .when(pause("s1"))
        .then_rejected("invalid_transition");
    assert_eq!(r.to_string(), "cannot pause Session s1: it is starting");
}

#[test]
fn pause_and_resume_keep_the_slot() {
    let mut log = given(history(S::Active)).log;
    let vm = |log: &Log| log.state.vms[&vid("vm-1")].used;
    assert_eq!(vm(&log), 1);
    log.submit("p", log.at + STEP_MS, &pause("s1")).unwrap();
    assert_eq!(vm(&log), 1);
    log.submit("r", log.at + STEP_MS, &resume("s1")).unwrap();
    assert_eq!(vm(&log), 1);
    log.submit("e", log.at + STEP_MS, &end("s1", EndReason::User))
        .unwrap();
    assert_eq!(vm(&log), 0);
    assert_eq!(log.state.live_sessions_of(&uid("u1")), 0);
}
