//! The log layer against a real `nats-server` (`$NATS_SERVER_BIN`, default
//! `/usr/sbin/nats-server`): the server's version, stream setup and conflicts, appends with expected
//! sequences and dedup, pipelines fenced by the event id. Reads: `tests/log_reads.rs`; the writer
//! lease: `tests/lease.rs`.
//!
//! Run against both supported servers:
//! `NATS_SERVER_BIN=/usr/sbin/nats-server cargo test --test log_appends` and again with a current one.

mod common;
mod log_support;

use log_support::*;

// ---- version and stream setup ----

#[tokio::test]
async fn detects_server_version() {
    let (_s, js) = setup().await;
    let v = ServerVersion::of(&js.client()).unwrap();
    assert!(v >= ServerVersion::MINIMUM);
    println!("server {v}: {:?}", v.features());
}

#[tokio::test]
async fn stream_setup_is_idempotent() {
    let (_s, js) = setup().await;
    let config = LogConfig::default();
    let first = ensure_stream(&js, &config).await.unwrap();
    let second = ensure_stream(&js, &config).await.unwrap();
    assert_eq!(first.cached_info().config.name, "ORCH_DEFAULT");
    let c = &second.cached_info().config;
    assert_eq!(c.subjects, vec!["orch.default.evt.>".to_string()]);
    assert!(c.deny_delete && c.deny_purge && c.allow_direct);
    assert_eq!(c.storage, stream::StorageType::File);
}

#[tokio::test]
async fn conflicting_stream_is_refused() {
    let (_s, js) = setup().await;
    let mut memory = LogConfig::default().stream_config();
    memory.storage = stream::StorageType::Memory;
    js.create_stream(memory).await.unwrap();
    match ensure_stream(&js, &LogConfig::default()).await {
        Err(LogError::StreamConflict {
            setting,
            existing,
            wanted,
            ..
        }) => assert_eq!(
            (setting.as_str(), existing.as_str(), wanted.as_str()),
            ("storage", "memory", "file")
        ),
        other => panic!("expected a storage conflict, got {other:?}"),
    }
    js.delete_stream("ORCH_DEFAULT").await.unwrap();

    let mut narrow = LogConfig::default().stream_config();
    narrow.subjects = vec!["orch.default.evt.session.>".into()];
    js.create_stream(narrow).await.unwrap();
    match ensure_stream(&js, &LogConfig::default()).await {
        Err(LogError::StreamConflict { setting, .. }) => assert_eq!(setting, "subjects"),
        other => panic!("expected a subjects conflict, got {other:?}"),
    }
    js.delete_stream("ORCH_DEFAULT").await.unwrap();

    // Another stream already captures the subjects.
    js.create_stream(stream::Config {
        name: "SQUATTER".into(),
        subjects: vec!["orch.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    match ensure_stream(&js, &LogConfig::default()).await {
        Err(LogError::StreamConflict { setting, .. }) => assert_eq!(setting, "subjects"),
        other => panic!("expected a subjects conflict, got {other:?}"),
    }
}

// ---- appends ----

#[tokio::test]
async fn append_checks_the_expected_sequence() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    let a = appender.append(&paused(1, "s1"), 0).await.unwrap();
    assert_eq!(
        a,
        Appended {
            seq: 1,
            duplicate: false
        }
    );

    // Expected 0 on a non-empty stream is refused too (on 2.9 as well).
    match appender.append(&paused(2, "s1"), 0).await {
        Err(LogError::WrongLastSequence {
            expected: 0,
            actual,
        }) => assert_eq!(actual, Some(1)),
        other => panic!("expected WrongLastSequence, got {other:?}"),
    }
    match appender.append(&paused(2, "s1"), 5).await {
        Err(LogError::WrongLastSequence {
            expected: 5,
            actual,
        }) => assert_eq!(actual, Some(1)),
        other => panic!("expected WrongLastSequence, got {other:?}"),
    }
    assert_eq!(reader.last_seq().await.unwrap(), 1);
    let b = appender.append(&paused(2, "s1"), 1).await.unwrap();
    assert_eq!(b.seq, 2);
}

#[tokio::test]
async fn a_pipelined_append_is_fenced_by_the_previous_event_id() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    appender.append(&paused(1, "s1"), 0).await.unwrap();
    // A stale writer decided evt-2 and then evt-3 after it; evt-2 never landed, and meanwhile another
    // writer appended exactly one event. evt-3's expected sequence now matches by accident.
    appender.append(&paused(9, "s1"), 1).await.unwrap();
    let fenced = appender
        .send_after(&paused(3, "s1"), 2, Some("evt-2"))
        .await
        .unwrap()
        .await;
    assert!(
        matches!(fenced, Err(LogError::WrongLastSequence { expected: 2, .. })),
        "{fenced:?}"
    );
    assert_eq!(reader.last_seq().await.unwrap(), 2, "nothing stored");
    // The previous event id, when it is the last event, lets the append through.
    let ok = appender
        .send_after(&paused(3, "s1"), 2, Some("evt-9"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok.seq, 3);
}

#[tokio::test]
async fn a_retried_event_is_reported_as_a_duplicate() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    let first = appender.append(&paused(1, "s1"), 0).await.unwrap();
    // The same event (same event id) sent again: the server keeps one copy.
    let again = appender.append(&paused(1, "s1"), 1).await.unwrap();
    assert_eq!(
        again,
        Appended {
            seq: first.seq,
            duplicate: true
        }
    );
    assert_eq!(reader.last_seq().await.unwrap(), 1);
    // Another event of the same command is not the server's to drop: the writer's idempotency
    // table answers retries, so the server stores what the writer appends.
    let mut other = paused(1, "s1");
    other.event_id = "evt-other".into();
    assert_eq!(appender.append(&other, 1).await.unwrap().seq, 2);

    // A retry that still carries the stale expected sequence (a timed-out first attempt that was
    // in fact stored): what does the server check first, the msg id or the sequence?
    let stale = appender.append(&paused(1, "s1"), 0).await;
    println!("duplicate with a stale expected sequence: {stale:?}");
    match stale {
        Ok(a) => assert_eq!(
            a,
            Appended {
                seq: 1,
                duplicate: true
            }
        ),
        Err(LogError::WrongLastSequence { .. }) => {}
        Err(other) => panic!("unexpected {other:?}"),
    }
    assert_eq!(reader.last_seq().await.unwrap(), 2);
}

#[tokio::test]
async fn oversized_event_is_refused_before_publishing() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    let mut big = paused(1, "s1");
    big.actor = Actor::user("x".repeat(orchestrator_events::MAX_EVENT_BYTES));
    assert!(matches!(
        appender.append(&big, 0).await,
        Err(LogError::InvalidEnvelope(_))
    ));
    assert_eq!(reader.last_seq().await.unwrap(), 0);
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let (mut server, _) = setup().await;
    let client = server.client().await;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(client);
    let (appender, reader) = ready(&js).await;
    appender.append(&paused(1, "s1"), 0).await.unwrap();
    server.kill().unwrap();
    let r = appender.append(&paused(2, "s1"), 1).await;
    assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
    let r = reader.last_seq().await;
    assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
    let r = ensure_stream(&js, &LogConfig::default()).await;
    assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn pipelined_appends_succeed() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    let mut pending = Vec::new();
    for i in 0..1000u64 {
        pending.push(appender.send(&drained(i), i).await.unwrap());
    }
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(
            p.await.unwrap(),
            Appended {
                seq: i as u64 + 1,
                duplicate: false
            }
        );
    }
    assert_eq!(reader.last_seq().await.unwrap(), 1000);
}

#[tokio::test]
async fn one_bad_expectation_fails_the_rest_of_the_pipeline() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    let mut pending = Vec::new();
    for i in 0..10u64 {
        let expected = if i == 4 { 99 } else { i };
        pending.push(appender.send(&drained(i), expected).await.unwrap());
    }
    let mut outcome = Vec::new();
    for p in pending {
        outcome.push(p.await);
    }
    for (i, r) in outcome.iter().enumerate() {
        match (i, r) {
            (0..=3, Ok(a)) => assert_eq!(a.seq, i as u64 + 1),
            (4.., Err(LogError::WrongLastSequence { actual, .. })) => {
                assert_eq!(*actual, Some(4))
            }
            _ => panic!("append {i}: unexpected {r:?}"),
        }
    }
    assert_eq!(reader.last_seq().await.unwrap(), 4);
}
