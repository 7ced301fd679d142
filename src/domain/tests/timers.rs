//! Timeouts, the placement queue and lost VMs, with the clock in the test's hands: each automatic
//! command is found by [`crate::domain::timers`] at a given time and decided like the writer does.

use orchestrator_events::{EndReason, Event};

use super::framework::*;
use crate::domain::timers::{due_timeouts, next_placement, Heartbeats, TimerConfig};
use crate::domain::{Decision, DomainConfig, SessionStatus, VmStatus};

const MIN: i64 = 60 * 1000;

fn config() -> TimerConfig {
    TimerConfig {
        pause_timeout_ms: Some(10 * MIN),
        max_session_ms: Some(60 * MIN),
        placement_timeout_ms: Some(5 * MIN),
        heartbeat_misses: 3,
    }
}

/// A VM of capacity 1 with `s1` active on it, paused at `T0 + 3`.
fn paused() -> Log {
    let mut log = Log::new(DomainConfig::default());
    log.submit("vm", T0, &register("vm-1", 1, &[])).unwrap();
    log.submit("start", T0 + 1, &start(Some("s1"), "u1", &[]))
        .unwrap();
    log.submit("assign", T0 + 2, &assign_by("s1", None))
        .unwrap();
    log.submit("pause", T0 + 3, &pause("s1")).unwrap();
    log
}

fn ended_with(d: Decision) -> EndReason {
    match d {
        Decision::Append(Event::SessionEnded { reason, .. }) => reason,
        other => panic!("not an end: {other:?}"),
    }
}

#[test]
fn a_paused_session_ends_once_its_pause_timeout_passes() {
    let mut log = paused();
    assert!(due_timeouts(&log.state, &config(), T0 + 3 + 10 * MIN - 1, 10).is_empty());
    let due = due_timeouts(&log.state, &config(), T0 + 3 + 10 * MIN + 1, 10);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].command_id.as_str(), "timer:pause_timeout:s1:4");
    let at = T0 + 3 + 10 * MIN + 1;
    assert_eq!(
        ended_with(log.system(&due[0], at).unwrap()),
        EndReason::PauseTimeout
    );
    assert!(
        due_timeouts(&log.state, &config(), at + MIN, 10).is_empty(),
        "fires once"
    );
    // Fired again (a writer that took over): the id's first result, nothing appended.
    let n = log.envelopes.len();
    assert!(matches!(
        log.system(&due[0], at + 5).unwrap(),
        Decision::AlreadyApplied { .. }
    ));
    assert_eq!(log.envelopes.len(), n);
    // The slot is free again.
    assert_eq!(log.state.vms[&vid("vm-1")].used, 0);
}

#[test]
fn a_timer_racing_a_resume_yields_one_outcome() {
    let mut log = paused();
    let at = T0 + 3 + 10 * MIN + 1;
    let due = due_timeouts(&log.state, &config(), at, 10);
    // The player resumes first, in the log's order: the timer is refused.
    log.submit("resume", at, &resume("s1")).unwrap();
    assert_eq!(
        log.system(&due[0], at).unwrap_err().code(),
        "invalid_transition"
    );
    assert_eq!(log.state.sessions[&sid("s1")].status, SessionStatus::Active);
    // Paused again later: a new timer, armed by the new pause, with another id.
    log.submit("pause-2", at + 1, &pause("s1")).unwrap();
    let again = due_timeouts(&log.state, &config(), at + 1 + 10 * MIN + 1, 10);
    assert_ne!(again[0].command_id, due[0].command_id);
    // And the other order: the timer first, then the player's resume is refused.
    log.system(&again[0], at + 1 + 10 * MIN + 1).unwrap();
    assert_eq!(
        log.submit("resume-2", at + 1 + 10 * MIN + 2, &resume("s1"))
            .unwrap_err()
            .code(),
        "invalid_transition"
    );
}

#[test]
fn nobody_but_the_system_sends_timer_commands() {
    let mut log = paused();
    let due = due_timeouts(&log.state, &config(), T0 + 11 * MIN, 10);
    assert_eq!(
        log.submit("mine", T0 + 11 * MIN, &due[0].command)
            .unwrap_err()
            .code(),
        "invalid_argument"
    );
}

#[test]
fn max_length_and_placement_timeouts() {
    let mut log = Log::new(DomainConfig::default());
    log.submit("vm", T0, &register("vm-1", 2, &[])).unwrap();
    log.submit("a", T0, &start(Some("long"), "u1", &[]))
        .unwrap();
    log.submit("b", T0, &assign_by("long", None)).unwrap();
    log.submit("c", T0 + MIN, &start(Some("unplaced"), "u2", &[]))
        .unwrap();
    let due = due_timeouts(&log.state, &config(), T0 + 6 * MIN + 1, 10);
    assert_eq!(due.len(), 1);
    assert_eq!(
        ended_with(log.system(&due[0], T0 + 6 * MIN + 1).unwrap()),
        EndReason::PlacementTimeout
    );
    let due = due_timeouts(&log.state, &config(), T0 + 60 * MIN + 1, 10);
    assert_eq!(due.len(), 1);
    assert_eq!(
        ended_with(log.system(&due[0], T0 + 60 * MIN + 1).unwrap()),
        EndReason::MaxLength
    );
    // Off means off.
    let off = TimerConfig {
        pause_timeout_ms: None,
        max_session_ms: None,
        placement_timeout_ms: None,
        heartbeat_misses: 3,
    };
    log.submit("d", T0 + 61 * MIN, &start(Some("later"), "u3", &[]))
        .unwrap();
    assert!(due_timeouts(&log.state, &off, T0 + 1000 * MIN, 10).is_empty());
}

#[test]
fn the_queue_places_first_come_first_served_and_times_out_the_late() {
    let mut log = Log::new(DomainConfig::default());
    log.submit("vm", T0, &register("vm-1", 1, &[])).unwrap();
    for (i, s) in ["s0", "s1", "s2", "s3"].iter().enumerate() {
        let t = T0 + i as i64;
        log.submit(
            &format!("start-{s}"),
            t,
            &start(Some(s), &format!("u{i}"), &[]),
        )
        .unwrap();
        let d = log
            .submit(
                &format!("assign-{s}"),
                t,
                &assign_waiting(s, 2 * MIN as u64),
            )
            .unwrap();
        if i == 0 {
            assert!(matches!(d, Decision::Append(Event::SessionAssigned { .. })));
        } else {
            assert!(
                matches!(d, Decision::Append(Event::SessionQueued { .. })),
                "{d:?}"
            );
        }
    }
    assert!(next_placement(&log.state).is_none(), "no room yet");
    // Room frees: the oldest waiting session gets it, with the wait in its explanation.
    log.submit("end-s0", T0 + MIN, &end("s0", EndReason::User))
        .unwrap();
    let next = next_placement(&log.state).unwrap();
    match log.system(&next, T0 + MIN).unwrap() {
        Decision::Append(Event::SessionAssigned {
            session_id,
            placement,
            ..
        }) => {
            assert_eq!(session_id, sid("s1"));
            let q = placement.queued.expect("from the queue");
            assert_eq!(q.waited_ms, (MIN - 1) as u64);
        }
        other => panic!("{other:?}"),
    }
    assert!(next_placement(&log.state).is_none(), "full again");
    // Past their deadline, the others time out, in queue order.
    let due = due_timeouts(&log.state, &config(), T0 + 3 + 2 * MIN + 1, 10);
    let ids: Vec<_> = due
        .iter()
        .map(|d| d.command.session_id().cloned())
        .collect();
    assert_eq!(ids, vec![Some(sid("s2")), Some(sid("s3"))]);
    for d in &due {
        assert_eq!(
            ended_with(log.system(d, T0 + 3 + 2 * MIN + 1).unwrap()),
            EndReason::PlacementTimeout
        );
    }
    assert!(log.state.timers.queue.is_empty());
    assert_eq!(log.replay(), log.state, "a replay rebuilds the queue");
}

#[test]
fn a_vm_past_its_heartbeat_deadline_is_lost_after_its_sessions_end() {
    let mut log = Log::new(DomainConfig::default());
    log.submit("vm", T0, &register_beating("vm-1", 2, 1_000))
        .unwrap();
    log.submit("quiet", T0, &register("vm-2", 2, &[])).unwrap();
    for s in ["a", "b"] {
        log.submit(&format!("start-{s}"), T0, &start(Some(s), "u1", &[]))
            .unwrap();
        log.submit(&format!("assign-{s}"), T0, &assign_to(s, "vm-1"))
            .unwrap();
    }
    let took_over = T0 + 10;
    let mut beats = Heartbeats::new(took_over);
    // A new writer gives a full deadline of grace, then counts from the last heartbeat.
    assert!(beats
        .lost(&log.state, &config(), took_over + 3_000, 10)
        .is_empty());
    beats.beat(vid("vm-1"), took_over + 2_500);
    assert!(beats
        .lost(&log.state, &config(), took_over + 5_500, 10)
        .is_empty());
    let due = beats.lost(&log.state, &config(), took_over + 5_501, 10);
    assert_eq!(
        due.len(),
        3,
        "two ends, then the loss; vm-2 sends no heartbeats"
    );
    for d in &due {
        log.system(d, took_over + 5_501).unwrap();
    }
    assert_eq!(log.state.vms[&vid("vm-1")].status, VmStatus::Lost);
    assert!(log.state.sessions.is_empty());
    let ends: Vec<_> = log
        .envelopes
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::SessionEnded { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![EndReason::VmLost, EndReason::VmLost]);
    // Done again by a writer that took over halfway: nothing new.
    let n = log.envelopes.len();
    for d in &due {
        assert!(matches!(
            log.system(d, took_over + 6_000),
            Ok(Decision::AlreadyApplied { .. })
        ));
    }
    assert_eq!(log.envelopes.len(), n);
    // A VM registered long after the writer took over gets a full deadline from its registration.
    log.submit(
        "late",
        took_over + 600_000,
        &register_beating("vm-3", 1, 1_000),
    )
    .unwrap();
    let late = beats.lost(&log.state, &config(), took_over + 602_999, 10);
    assert!(
        late.iter().all(|d| !d.command_id.as_str().contains("vm-3")),
        "{late:?}"
    );
    let late = beats.lost(&log.state, &config(), took_over + 603_001, 10);
    assert!(late.iter().any(|d| d.command_id.as_str().contains("vm-3")));
    // A lost VM takes no sessions and comes back by registering again.
    assert!(beats
        .lost(&log.state, &config(), took_over + 60_000, 10)
        .is_empty());
    log.submit(
        "back",
        took_over + 7_000,
        &register_beating("vm-1", 2, 1_000),
    )
    .unwrap();
    assert_eq!(log.state.vms[&vid("vm-1")].status, VmStatus::Available);
    assert_eq!(log.replay(), log.state);
}
