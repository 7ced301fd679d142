//! The log layer's reads against a real `nats-server` (`$NATS_SERVER_BIN`, default
//! `/usr/sbin/nats-server`): ordered reads that keep their position across a server restart, gets by
//! sequence, foreign and undecodable messages and quarantine. Appends: `tests/log_appends.rs`.
//!
//! Run against both supported servers:
//! `NATS_SERVER_BIN=/usr/sbin/nats-server cargo test --test log_reads` and again with a current one.
//! The replay benchmark is `#[ignore]`d:
//! `cargo test --release --test log_reads -- --ignored --nocapture`.

mod common;
mod log_support;

use log_support::*;

// ---- reads ----

#[tokio::test]
async fn reads_return_everything_in_order() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    let mut sent = Vec::new();
    for i in 0..50u64 {
        let env = if i % 3 == 0 {
            paused(i, "s-a")
        } else {
            drained(i)
        };
        appender.append(&env, i).await.unwrap();
        sent.push(env);
    }
    let all: Vec<_> = collect(reader.read_range(1, 50).await.unwrap())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.len(), 50);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.envelope, sent[i]);
        assert!(e.stored_at > 1_700_000_000_000);
    }
    let mid = collect(reader.read_range(10, 20).await.unwrap()).await;
    let seqs: Vec<u64> = mid.into_iter().map(|r| r.unwrap().seq).collect();
    assert_eq!(seqs, (10..=20).collect::<Vec<_>>());
    assert!(collect(reader.read_range(51, 60).await.unwrap())
        .await
        .is_empty());
    assert!(collect(reader.read_range(20, 10).await.unwrap())
        .await
        .is_empty());

    let (last, rest) = reader.read_to_end(45).await.unwrap();
    assert_eq!(last, 50);
    assert_eq!(collect(rest).await.len(), 6);

    let history = collect(
        reader
            .session_history(&SessionId::parse("s-a").unwrap())
            .await
            .unwrap(),
    )
    .await;
    let seqs: Vec<u64> = history.into_iter().map(|r| r.unwrap().seq).collect();
    assert_eq!(seqs, (0..50).step_by(3).map(|i| i + 1).collect::<Vec<_>>());
    let none = collect(
        reader
            .session_history(&SessionId::parse("nobody").unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert!(none.is_empty());

    // A tail goes on past the end.
    let mut tail = reader.read_from(49).await.unwrap();
    assert_eq!(tail.next().await.unwrap().unwrap().seq, 49);
    assert_eq!(tail.next().await.unwrap().unwrap().seq, 50);
    appender.append(&drained(50), 50).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), tail.next())
        .await
        .unwrap();
    assert_eq!(next.unwrap().unwrap().seq, 51);

    // From a time: everything stored since then.
    let from_time = reader.read_from_time(all[0].stored_at).await.unwrap();
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        from_time.take(1).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(first[0].as_ref().unwrap().seq, 1);
    let future = reader
        .read_from_time(all[49].stored_at + 60_000)
        .await
        .unwrap();
    let nothing = tokio::time::timeout(
        Duration::from_millis(300),
        future.take(1).collect::<Vec<_>>(),
    )
    .await;
    assert!(nothing.is_err(), "nothing was stored in the future");
}

#[tokio::test]
async fn get_fetches_one_event_by_sequence() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    appender.append(&paused(1, "s1"), 0).await.unwrap();
    let got = reader.get(1).await.unwrap().unwrap();
    assert_eq!(got.event.envelope, paused(1, "s1"));
    assert_eq!(got.subject, "orch.default.evt.session.s1");
    assert_eq!(
        got.headers.get("Orch-Event-Type").unwrap().as_str(),
        "SessionPaused"
    );
    assert_eq!(got.headers.get("Nats-Msg-Id").unwrap().as_str(), "evt-1");
    assert!(reader.get(2).await.unwrap().is_none());
    assert!(reader.get(0).await.unwrap().is_none());
}

/// Publishes `payload` on a session subject with `Nats-Expected-Last-Sequence` = `expected`, as a
/// writer would: the server stores it as the writer's.
async fn publish_as_writer(js: &jetstream::Context, expected: u64, payload: &'static [u8]) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
    js.publish_with_headers(
        "orch.default.evt.session.s1",
        headers,
        Bytes::from_static(payload),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test]
async fn a_foreign_message_is_skipped_by_every_read() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    appender.append(&paused(1, "s1"), 0).await.unwrap();
    // A core publish onto the event subjects lands in the stream, without the writer's header.
    js.publish("orch.default.evt.session.zzz", Bytes::from_static(b"hello"))
        .await
        .unwrap()
        .await
        .unwrap();
    appender.append(&paused(3, "s1"), 2).await.unwrap();
    let got = collect(reader.read_range(1, 3).await.unwrap()).await;
    let seqs: Vec<u64> = got.iter().map(|e| e.as_ref().unwrap().seq).collect();
    assert_eq!(seqs, [1, 3], "events only: {got:?}");
    let entries: Vec<Entry> = reader
        .entries_range(1, 3)
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert!(
        matches!(&entries[1], Entry::Skipped(s) if s.seq == 2 && s.why == SkipReason::Foreign),
        "{entries:?}"
    );
    assert!(matches!(
        reader.get(2).await,
        Err(LogError::NotAnEvent { seq: 2, .. })
    ));
}

#[tokio::test]
async fn an_undecodable_event_stops_the_read_until_quarantined() {
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    appender.append(&paused(1, "s1"), 0).await.unwrap();
    publish_as_writer(&js, 1, b"\x07garbage").await;
    appender.append(&paused(3, "s1"), 2).await.unwrap();
    let got = collect(reader.read_range(1, 3).await.unwrap()).await;
    assert_eq!(got.len(), 2, "the read ends at the bad message: {got:?}");
    assert_eq!(got[0].as_ref().unwrap().seq, 1);
    assert!(
        matches!(got[1], Err(LogError::Decode { seq: 2, .. })),
        "{:?}",
        got[1]
    );
    assert!(matches!(
        reader.get(2).await,
        Err(LogError::Decode { seq: 2, .. })
    ));

    // Only an undecodable writer's message can be quarantined.
    let operator = Actor::operator("ops");
    let refused = quarantine(&js, &reader, 1, "no", operator.clone(), 0).await;
    assert!(
        matches!(refused, Err(QuarantineError::Readable(1))),
        "{refused:?}"
    );
    let refused = quarantine(&js, &reader, 9, "no", operator.clone(), 0).await;
    assert!(
        matches!(refused, Err(QuarantineError::NoSuchMessage(9))),
        "{refused:?}"
    );
    let record = quarantine(&js, &reader, 2, "corrupt payload", operator, 0)
        .await
        .unwrap();
    assert_eq!(record, 4);

    let entries: Vec<Entry> = reader
        .entries_range(1, 4)
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    let seqs: Vec<u64> = entries.iter().map(Entry::seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(
        matches!(&entries[1], Entry::Skipped(s) if matches!(&s.why, SkipReason::Quarantined { record_seq: 4, reason } if reason == "corrupt payload")),
        "{entries:?}"
    );
    assert!(
        matches!(&entries[3], Entry::Skipped(s) if matches!(&s.why, SkipReason::QuarantineRecord(r) if r.target_seq == 2)),
        "{entries:?}"
    );
    let events = collect(reader.read_range(1, 4).await.unwrap()).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let again = quarantine(&js, &reader, 2, "twice", Actor::operator("ops"), 0).await;
    assert!(
        matches!(again, Err(QuarantineError::AlreadySkipped { seq: 2, .. })),
        "{again:?}"
    );
}

/// After a server restart, async-nats recreates an ordered consumer that had delivered nothing from
/// the start of the stream; the read notices and goes on from its own position.
#[tokio::test]
async fn a_follower_resumes_at_its_position_after_the_server_restarts() {
    let server = TestServer::start_default().await;
    let js = server.jetstream().await;
    let (appender, reader) = ready(&js).await;
    for i in 0..20 {
        appender.append(&paused(i + 1, "s1"), i).await.unwrap();
    }
    // Idle at the end of the log.
    let mut follow = reader.entries_from(21).await.unwrap();
    let mut server = server;
    server.restart().await.expect("the server restarts");
    // The client reconnects by itself; append once it is back.
    let mut appended = None;
    for _ in 0..100 {
        match appender.append(&paused(21, "s1"), 20).await {
            Ok(a) => {
                appended = Some(a);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(appended.expect("appended after the restart").seq, 21);
    let next = tokio::time::timeout(Duration::from_secs(20), follow.next())
        .await
        .expect("the follower delivers")
        .expect("the follower goes on")
        .expect("no error");
    assert_eq!(next.seq(), 21, "{next:?}");
}

// ---- measurements (not assertions) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test log_reads -- --ignored --nocapture"]
async fn replay_rate() {
    let n: u64 = std::env::var("REPLAY_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let (_s, js) = setup().await;
    let (appender, reader) = ready(&js).await;
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let env = if i % 2 == 0 {
            paused(i, &format!("s{}", i % 1000))
        } else {
            drained(i)
        };
        pending.push_back(appender.send(&env, i).await.unwrap());
        if pending.len() >= 4096 {
            pending.pop_front().unwrap().await.unwrap();
        }
    }
    for p in pending {
        p.await.unwrap();
    }
    let append = started.elapsed();
    println!(
        "server {}: appended {n} pipelined in {append:?} ({:.0}/s)",
        js.client().server_info().version,
        n as f64 / append.as_secs_f64()
    );
    for round in 0..3 {
        let started = Instant::now();
        let mut stream = reader.read_range(1, n).await.unwrap();
        let mut count = 0u64;
        while let Some(e) = stream.next().await {
            let e = e.unwrap();
            count += 1;
            assert_eq!(e.seq, count);
        }
        let t = started.elapsed();
        assert_eq!(count, n);
        println!(
            "round {round}: read_range replayed {n} in {t:?} ({:.0} events/s)",
            n as f64 / t.as_secs_f64()
        );
    }
    let started = Instant::now();
    let h = collect(
        reader
            .session_history(&SessionId::parse("s42").unwrap())
            .await
            .unwrap(),
    )
    .await;
    println!(
        "session_history: {} events in {:?}",
        h.len(),
        started.elapsed()
    );
}
