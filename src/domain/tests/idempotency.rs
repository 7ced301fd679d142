//! Command ids through [`handle`]: a retry returns the first result, another body is refused, a replay
//! restores both, and the window forgets.

use orchestrator_events::{codec, Actor, EndReason, Envelope};

use super::framework::*;
use crate::domain::command::derive_session_id;
use crate::domain::{evolve, handle, CommandMeta, Decision, DomainConfig, State};

const HOUR: i64 = 3600 * 1000;
const DAY: i64 = 24 * HOUR;

fn code(r: Result<Decision, crate::domain::Rejection>) -> &'static str {
    r.expect_err("a rejection").code()
}

/// A log with one VM and a session `s1` of `u1` on it, started by command `c-start` at seq 2.
fn running() -> Log {
    let mut log = Log::new(DomainConfig::default());
    log.submit("c-vm", T0, &register("vm-1", 2, &[])).unwrap();
    log.submit("c-start", T0 + 1, &start(Some("s1"), "u1", &[]))
        .unwrap();
    log.submit("c-assign", T0 + 2, &assign_by("s1", None))
        .unwrap();
    log
}

#[test]
fn a_retry_returns_the_first_result() {
    let mut log = running();
    let n = log.envelopes.len();
    let retry = log.submit("c-start", T0 + 10, &start(Some("s1"), "u1", &[]));
    assert_eq!(retry, Ok(Decision::AlreadyApplied { seq: 2 }));
    // Also for a command whose decision would now be a rejection, and with another actor.
    let retry = log.submit("c-assign", T0 + 11, &assign_by("s1", None));
    assert_eq!(retry, Ok(Decision::AlreadyApplied { seq: 3 }));
    assert_eq!(log.envelopes.len(), n, "a retry appends nothing");
}

#[test]
fn the_same_id_with_another_body_is_refused() {
    let mut log = running();
    let other = start(Some("s1"), "u2", &[]);
    assert_eq!(
        code(log.submit("c-start", T0 + 10, &other)),
        "command_id_reused"
    );
    // Another command altogether under a used id, too.
    assert_eq!(
        code(log.submit("c-start", T0 + 10, &pause("s1"))),
        "command_id_reused"
    );
}

#[test]
fn a_replay_restores_retries_and_conflicts() {
    let log = running();
    let mut replayed = Log {
        state: log.replay(),
        envelopes: log.envelopes.clone(),
        at: log.at,
    };
    assert_eq!(replayed.state, log.state);
    assert_eq!(
        replayed.submit("c-start", T0 + 10, &start(Some("s1"), "u1", &[])),
        Ok(Decision::AlreadyApplied { seq: 2 })
    );
    assert_eq!(
        code(replayed.submit("c-start", T0 + 10, &start(Some("s1"), "u2", &[]))),
        "command_id_reused"
    );

    // The same through the codec: the digest travels in the envelope.
    let mut state = State::new(DomainConfig::default());
    for (seq, env) in &log.envelopes {
        let decoded: Envelope = codec::decode(&codec::encode(env)).unwrap();
        evolve(&mut state, *seq, &decoded);
    }
    assert_eq!(state, log.state);
}

#[test]
fn the_window_forgets_after_a_day_of_event_time() {
    let mut log = running();
    let same = start(Some("s1"), "u1", &[]);
    // Remembered up to and including the window's end (seq 2 happened at T0 + 1).
    assert_eq!(
        log.submit("c-start", T0 + 1 + DAY, &same),
        Ok(Decision::AlreadyApplied { seq: 2 })
    );
    // Past it, the id is new: the command is decided again, against today's state.
    assert_eq!(
        code(log.submit("c-start", T0 + 2 + DAY, &same)),
        "already_exists"
    );
    // And another body under the old id is no longer a conflict.
    assert_eq!(
        code(log.submit("c-start", T0 + 2 + DAY, &pause("s9"))),
        "session_not_found"
    );
    // Reused after the window, the id is remembered again from its new event on.
    let seq = match log.submit("c-start", T0 + 3 + DAY, &pause("s1")).unwrap() {
        Decision::Append(_) => log.state.last_seq,
        other => panic!("decided again, got {other:?}"),
    };
    for at in [T0 + 4 + DAY, T0 + 5 + DAY, T0 + 3 + 2 * DAY] {
        assert_eq!(
            log.submit("c-start", at, &pause("s1")),
            Ok(Decision::AlreadyApplied { seq }),
            "at {at}"
        );
    }
    assert_eq!(log.replay(), log.state);
}

#[test]
fn the_window_is_configurable() {
    let config = DomainConfig {
        idempotency_window_ms: HOUR,
        ..DomainConfig::default()
    };
    let mut log = Log::new(config);
    log.submit("c-vm", T0, &register("vm-1", 2, &[])).unwrap();
    assert_eq!(
        log.submit("c-vm", T0 + HOUR, &register("vm-1", 2, &[])),
        Ok(Decision::AlreadyApplied { seq: 1 })
    );
    assert_eq!(
        code(log.submit("c-vm", T0 + HOUR + 1, &register("vm-1", 2, &[]))),
        "already_exists"
    );
}

#[test]
fn a_start_without_a_session_id_names_the_same_session_on_retry() {
    let mut log = Log::new(DomainConfig::default());
    let cmd = start(None, "u1", &[("region", "eu")]);
    let first = log.submit("k-1", T0, &cmd).unwrap();
    let derived = derive_session_id(&gateway(), &cid("k-1"));
    assert_eq!(first, Decision::Append(started_as(&derived)));
    assert!(log.state.sessions.contains_key(&derived));
    assert_eq!(
        log.submit("k-1", T0 + 5, &cmd),
        Ok(Decision::AlreadyApplied { seq: 1 })
    );
    // After the window, the retry derives the same id, which is taken.
    assert_eq!(
        code(log.submit("k-1", T0 + DAY + 1, &cmd)),
        "already_exists"
    );
    // Another command id derives another session.
    let other = log.submit("k-2", T0 + DAY + 2, &cmd).unwrap();
    assert_eq!(
        other,
        Decision::Append(started_as(&derive_session_id(&gateway(), &cid("k-2"))))
    );
    assert_ne!(derive_session_id(&gateway(), &cid("k-2")), derived);
}

fn started_as(id: &orchestrator_events::SessionId) -> orchestrator_events::Event {
    orchestrator_events::Event::SessionStarted {
        session_id: id.clone(),
        user_id: uid("u1"),
        game_id: gid("g-1"),
        requirements: labels(&[("region", "eu")]),
    }
}

#[test]
fn a_rejected_command_is_not_remembered() {
    let mut log = running();
    // Ending an unknown session is refused; once it exists, the same command id succeeds.
    let end_s2 = end("s2", EndReason::User);
    assert_eq!(
        code(log.submit("c-end", T0 + 10, &end_s2)),
        "session_not_found"
    );
    log.submit("c-start2", T0 + 11, &start(Some("s2"), "u1", &[]))
        .unwrap();
    assert!(matches!(
        log.submit("c-end", T0 + 12, &end_s2),
        Ok(Decision::Append(_))
    ));
}

#[test]
fn a_schema_1_event_matches_any_body_of_the_same_actor_only() {
    // Schema 1 envelopes carry no digest (0): a retry cannot be told from a conflict, so it is
    // answered with the first result; but only in its sender's scope.
    let mut state = State::new(DomainConfig::default());
    let env = Envelope {
        schema_version: 1,
        ..Envelope::new(
            "e".into(),
            "old".into(),
            0,
            T0,
            gateway(),
            vm_registered("vm-1", 2, &[]),
        )
    };
    evolve(&mut state, 7, &env);
    let mut log = Log {
        state,
        envelopes: vec![(7, env)],
        at: T0,
    };
    assert_eq!(
        log.submit("old", T0 + 1, &drain("vm-1")),
        Ok(Decision::AlreadyApplied { seq: 7 })
    );
    let other = meta_of(Actor::operator("ops"), "old", T0 + 1);
    assert!(matches!(
        handle(&log.state, &other, &drain("vm-1")),
        Ok(Decision::Append(_))
    ));
}

fn gateway() -> Actor {
    Actor::service("gateway")
}

fn meta_of(actor: Actor, command_id: &str, at: i64) -> CommandMeta {
    CommandMeta {
        command_id: cid(command_id),
        actor,
        at,
    }
}

#[test]
fn command_ids_are_scoped_by_their_sender() {
    let mut log = running();
    let n = log.envelopes.len();
    // Another sender's `c-start` is a command of its own: decided, not a retry, not a conflict.
    let player = meta_of(Actor::user("u2"), "c-start", T0 + 10);
    let own = start(Some("s2"), "u2", &[]);
    let decision = handle(&log.state, &player, &own).unwrap();
    assert!(matches!(decision, Decision::Append(_)), "{decision:?}");
    // The same kind with another id is another sender too.
    let operator = meta_of(Actor::operator("gateway"), "c-start", T0 + 10);
    assert!(matches!(
        handle(&log.state, &operator, &start(Some("s1"), "u1", &[])),
        Err(crate::domain::Rejection::AlreadyExists { .. })
    ));
    assert_eq!(log.envelopes.len(), n);
    // And the sender's own retry still gets its first result.
    assert_eq!(
        log.submit("c-start", T0 + 11, &start(Some("s1"), "u1", &[])),
        Ok(Decision::AlreadyApplied { seq: 2 })
    );
}

#[test]
fn derived_session_ids_are_scoped_by_their_sender() {
    let key = cid("start-42");
    let a = derive_session_id(&Actor::user("alice"), &key);
    let b = derive_session_id(&Actor::user("bob"), &key);
    let c = derive_session_id(&Actor::service("alice"), &key);
    assert_ne!(a, b);
    assert_ne!(a, c, "the kind is part of the scope");
    assert_eq!(a, derive_session_id(&Actor::user("alice"), &key));
    // Length-prefixed: ("ab", "c…") and ("a", "bc…") are different scopes.
    assert_ne!(
        derive_session_id(&Actor::user("ab"), &cid("c1")),
        derive_session_id(&Actor::user("a"), &cid("bc1"))
    );
}
