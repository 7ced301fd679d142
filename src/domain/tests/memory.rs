//! What the decision state keeps: an ended session leaves it (16 bytes remember its id), and the
//! idempotency table is bounded by count as well as by time.

use orchestrator_events::ids::MAX_LABELS;
use orchestrator_events::EndReason;

use super::framework::*;
use crate::domain::{Decision, DomainConfig, SessionStatus};

/// 32 labels, each key and value at its longest: a session's requirements at their largest.
fn largest_requirements(i: usize) -> Vec<(String, String)> {
    (0..MAX_LABELS)
        .map(|l| {
            let key = format!("{l:02}{}", "k".repeat(61));
            let value = format!("{i:08}{}", "v".repeat(120));
            (key, value)
        })
        .collect()
}

#[test]
fn ended_sessions_leave_the_decision_state() {
    const CYCLES: usize = 7_500;
    let mut log = Log::new(DomainConfig::default());
    for i in 0..CYCLES {
        let reqs = largest_requirements(i);
        let pairs: Vec<(&str, &str)> = reqs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let session = format!("s{i}");
        log.submit(
            &format!("start-{i}"),
            T0 + i as i64,
            &start(Some(&session), "u1", &pairs),
        )
        .unwrap();
        log.submit(
            &format!("end-{i}"),
            T0 + i as i64,
            &end(&session, EndReason::User),
        )
        .unwrap();
    }
    let state = &log.state;
    assert!(state.sessions.is_empty(), "no ended session is kept");
    assert_eq!(state.ended.len(), CYCLES);
    assert_eq!(state.idempotency.len(), 2 * CYCLES);

    // What a snapshot stores: the whole state, postcard-encoded.
    let total = postcard::to_stdvec(state).unwrap().len();
    let ids = postcard::to_stdvec(&state.idempotency).unwrap().len();
    // The placement index keeps the last few requirement sets whatever the number of sessions: a
    // bounded constant, not a cost per ended session.
    assert!(state.placement.sets().count() <= crate::domain::placement::IDLE_SETS_KEPT as usize);
    let index = postcard::to_stdvec(&state.placement).unwrap().len();
    let per_ended = (total - ids - index) as f64 / CYCLES as f64;
    let per_id = ids as f64 / (2 * CYCLES) as f64;
    println!(
        "snapshot bytes: {per_ended:.1} per ended session, {per_id:.1} per remembered command id"
    );
    assert!(per_ended < 24.0, "{per_ended:.1} bytes per ended session");
    assert!(per_id < 64.0, "{per_id:.1} bytes per remembered command id");

    // Commands on an ended session are refused as before, and its id stays taken.
    let again = log.submit("again", T0 + 10_000_000, &start(Some("s7"), "u2", &[]));
    assert_eq!(again.unwrap_err().code(), "already_exists");
    for command in [
        pause("s7"),
        resume("s7"),
        end("s7", EndReason::User),
        assign_by("s7", None),
    ] {
        let r = log.submit("on-ended", T0 + 10_000_001, &command);
        assert_eq!(r.unwrap_err().code(), "invalid_transition", "{command:?}");
    }
    assert_eq!(state_status(&log, "s7"), Some(SessionStatus::Ended));
    assert_eq!(state_status(&log, "nope"), None);
    assert_eq!(log.replay().fingerprint(), log.state.fingerprint());
}

fn state_status(log: &Log, session: &str) -> Option<SessionStatus> {
    log.state.session_status(&sid(session))
}

#[test]
fn the_count_bound_forgets_the_oldest_command_ids() {
    let mut log = Log::new(DomainConfig {
        max_remembered_commands: 3,
        ..DomainConfig::default()
    });
    for i in 1..=5 {
        log.submit(
            &format!("c{i}"),
            T0 + i,
            &register(&format!("vm-{i}"), 1, &[]),
        )
        .unwrap();
    }
    assert_eq!(log.state.idempotency.len(), 3);
    // The newest three are remembered: a retry gets the first result.
    for i in 3..=5 {
        let retry = log.submit(
            &format!("c{i}"),
            T0 + 10,
            &register(&format!("vm-{i}"), 1, &[]),
        );
        assert_eq!(retry, Ok(Decision::AlreadyApplied { seq: i as u64 }));
    }
    // The two oldest are forgotten: decided again (and refused now: the VM exists).
    for i in 1..=2 {
        let retry = log.submit(
            &format!("c{i}"),
            T0 + 10,
            &register(&format!("vm-{i}"), 1, &[]),
        );
        assert_eq!(retry.unwrap_err().code(), "already_exists");
    }
    assert_eq!(log.replay().fingerprint(), log.state.fingerprint());
}
