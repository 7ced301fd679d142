//! Group commit against a real nats-server: on servers with atomic batches (2.12+) appends decided
//! while one is in flight are stored as one batch; on 2.9 they are pipelined one by one. Either way
//! every command is applied once, at consecutive sequences, and a stale writer's batch stores
//! nothing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::HeaderMap;
use common::{server_version, TestServer};
use orchestrator::log::{self, Appender, LogConfig, LogError, Reader};
use orchestrator::nats_server::Durability;
use orchestrator::writer::{self, WriterConfig};
use orchestrator_events::{Actor, CellId, Envelope, Event, SessionId};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn cell() -> CellId {
    CellId::default_cell()
}

fn batches_supported() -> bool {
    server_version().features().atomic_batch
}

async fn command(client: &async_nats::Client, name: &str, id: &str, command: Value) -> Value {
    let body =
        json!({"command_id": id, "actor": {"kind": "service", "id": "t"}, "command": command});
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    let req = async_nats::Request::new()
        .headers(headers)
        .payload(serde_json::to_vec(&body).unwrap().into())
        .timeout(Some(Duration::from_secs(10)));
    let msg = client
        .send_request(format!("orch.default.cmd.{name}"), req)
        .await
        .unwrap();
    serde_json::from_slice(&msg.payload).unwrap()
}

/// The headers of every message of the cell's stream, in order.
async fn stored_headers(js: &async_nats::jetstream::Context) -> Vec<HeaderMap> {
    let stream = js.get_stream("ORCH_DEFAULT").await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut all = Vec::new();
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await.unwrap();
        all.push(msg.headers);
    }
    all
}

async fn writer_on(
    server: &TestServer,
    durability_note: &str,
) -> (async_nats::Client, CancellationToken) {
    let client = server.client().await;
    let stop = CancellationToken::new();
    let mut config = WriterConfig::new(cell());
    config.lease_ttl = Duration::from_secs(2);
    config.group_commit = true;
    tokio::spawn(writer::run(client.clone(), config, stop.clone()));
    for _ in 0..100 {
        let req = async_nats::Request::new()
            .payload(b"{}".as_slice().into())
            .timeout(Some(Duration::from_millis(200)));
        if client
            .send_request("orch.default.cmd.nope", req)
            .await
            .is_ok()
        {
            return (client, stop);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no writer answered ({durability_note})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_are_grouped_on_servers_with_atomic_batches() {
    let durability = if server_version().features().sync_always {
        Durability::SyncAlways
    } else {
        Durability::Default
    };
    let server = TestServer::start(durability).await;
    let (client, stop) = writer_on(&server, "sync always").await;
    let r = command(
        &client,
        "vm_register",
        "r1",
        json!({"vm_id": "vm-1", "capacity": 5}),
    )
    .await;
    assert!(r.get("accepted").is_some(), "{r}");

    // 200 clients at once: starts, then an assignment each, on a VM with room for 5.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let s = format!("s{i}");
            let started = command(
                &client,
                "start",
                &format!("st{i}"),
                json!({"session_id": s, "user_id": format!("u{i}"), "game_id": "g"}),
            )
            .await;
            let assigned = command(
                &client,
                "assign",
                &format!("as{i}"),
                json!({"session_id": s}),
            )
            .await;
            // A retry of the same start is answered with its first result.
            let again = command(
                &client,
                "start",
                &format!("st{i}"),
                json!({"session_id": s, "user_id": format!("u{i}"), "game_id": "g"}),
            )
            .await;
            (started, assigned, again)
        }));
    }
    let mut seqs = BTreeSet::new();
    let mut placed = 0;
    for t in tasks {
        let (started, assigned, again) = t.await.unwrap();
        let seq = started["accepted"]["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{started}"));
        assert!(seqs.insert(seq), "two commands at {seq}");
        assert_eq!(again["accepted"]["seq"].as_u64(), Some(seq), "{again}");
        assert_eq!(again["accepted"]["duplicate"], json!(true), "{again}");
        match assigned.get("accepted") {
            Some(a) => {
                placed += 1;
                assert!(seqs.insert(a["seq"].as_u64().unwrap()));
            }
            None => assert_eq!(
                assigned["rejected"]["code"],
                json!("no_capacity"),
                "{assigned}"
            ),
        }
    }
    assert_eq!(placed, 5, "the VM's capacity holds");
    stop.cancel();

    // Every accepted command is in the log once, at consecutive sequences after the registration.
    let js = server.jetstream().await;
    let headers = stored_headers(&js).await;
    assert_eq!(headers.len(), 1 + 200 + 5);
    assert_eq!(seqs, (2..=206).collect::<BTreeSet<u64>>());
    let in_batches = headers
        .iter()
        .filter(|h| h.get("Nats-Batch-Id").is_some())
        .count();
    if batches_supported() {
        assert!(in_batches > 0, "no append was grouped into a batch");
        for h in headers.iter().filter(|h| h.get("Nats-Batch-Id").is_some()) {
            assert!(
                h.get("Nats-Msg-Id").is_none(),
                "a batch carries no message id"
            );
        }
    } else {
        assert_eq!(in_batches, 0, "a server without atomic batches gets none");
    }
    // And every message reads back as an event of a writer.
    let reader = Reader::new(js, cell()).await.unwrap();
    let mut events = reader.read_range(1, 206).await.unwrap();
    let mut n = 0;
    while let Some(e) = futures::StreamExt::next(&mut events).await {
        e.unwrap();
        n += 1;
    }
    assert_eq!(n, 206);
}

fn env(event_id: &str, command_id: &str, session: &str) -> Envelope {
    Envelope::new(
        event_id.into(),
        command_id.into(),
        1,
        1_700_000_000_000,
        Actor::service("gw"),
        Event::SessionStarted {
            session_id: SessionId::parse(session).unwrap(),
            user_id: "u".parse().unwrap(),
            game_id: "g".parse().unwrap(),
            requirements: Default::default(),
        },
    )
}

/// A server for a test of atomic batches, or `None` (the test is skipped) on one without them.
async fn server_with_batches() -> Option<TestServer> {
    if !batches_supported() {
        eprintln!(
            "skipped: nats-server {} has no atomic batches",
            server_version()
        );
        return None;
    }
    Some(TestServer::start_default().await)
}

/// A server with atomic batches and the cell's stream set up on it, with an appender to it; `None`
/// (the test is skipped) on a server without them.
async fn log_with_batches() -> Option<(TestServer, async_nats::jetstream::Context, Appender)> {
    let server = server_with_batches().await?;
    let js = server.jetstream().await;
    log::ensure_stream(&js, &LogConfig::new(cell()))
        .await
        .unwrap();
    let appender = Appender::new(js.clone(), cell());
    Some((server, js, appender))
}

fn prepared(appender: &Appender, ids: &[&str]) -> Vec<log::Prepared> {
    ids.iter()
        .map(|id| appender.prepare(&env(id, id, id)).unwrap())
        .collect()
}

#[tokio::test]
async fn a_stale_batch_stores_nothing() {
    let Some((_server, js, appender)) = log_with_batches().await else {
        return;
    };
    let reader = Reader::new(js.clone(), cell()).await.unwrap();
    appender.append(&env("e1", "c1", "s1"), 0).await.unwrap();
    // Another writer appends after 1; the stale one sends a batch decided on 1.
    appender.append(&env("e2", "c2", "s2"), 1).await.unwrap();
    let batch = prepared(&appender, &["x1", "x2", "x3"]);
    let stale = appender.send_batch(batch, 1).await.unwrap().await;
    assert!(
        matches!(stale, Err(LogError::WrongLastSequence { expected: 1, .. })),
        "{stale:?}"
    );
    assert_eq!(
        reader.last_seq().await.unwrap(),
        2,
        "nothing of the batch stored"
    );

    // The same batch expecting the real last sequence is stored whole, in order.
    let batch = prepared(&appender, &["y1", "y2", "y3"]);
    let ack = appender.send_batch(batch, 2).await.unwrap().await.unwrap();
    assert_eq!(ack.seq, 5);
    for (seq, id) in [(3, "y1"), (4, "y2"), (5, "y3")] {
        let got = reader.get(seq).await.unwrap().unwrap();
        assert_eq!(got.event.envelope.event_id, id);
    }
}

#[tokio::test]
async fn a_stream_from_before_atomic_batches_is_upgraded() {
    let Some(server) = server_with_batches().await else {
        return;
    };
    let js = server.jetstream().await;
    // The stream as an older build created it: no allow_atomic.
    let config = LogConfig::new(cell());
    js.create_stream(config.stream_config()).await.unwrap();
    let appender = Appender::new(js.clone(), cell());
    let batch = || prepared(&appender, &["a", "b"]);
    let refused = appender.send_batch(batch(), 0).await.unwrap().await;
    assert!(
        matches!(refused, Err(LogError::Unsupported(_))),
        "{refused:?}"
    );
    // Setting the stream up again allows batches, and changes nothing else.
    let stream = log::ensure_stream(&js, &config).await.unwrap();
    assert!(stream.cached_info().config.allow_atomic_publish);
    assert_eq!(
        appender
            .send_batch(batch(), 0)
            .await
            .unwrap()
            .await
            .unwrap()
            .seq,
        2
    );
}

/// Not a test: prints what one atomic batch costs by its size, one at a time, on the server under
/// test (docs/performance.md, "Group commit"). Run with
/// `cargo test --release --test group_commit -- --ignored --nocapture batch_latency`.
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn batch_latency() {
    let Some((_server, _, appender)) = log_with_batches().await else {
        return;
    };
    let mut last = 0u64;
    let mut n = 0usize;
    const ROUNDS: u32 = 20;
    for size in [1usize, 2, 16, 256] {
        let started = std::time::Instant::now();
        for _ in 0..ROUNDS {
            let ids: Vec<String> = (0..size)
                .map(|_| {
                    n += 1;
                    format!("b{n}")
                })
                .collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut batch = prepared(&appender, &ids);
            let pending = if size == 1 {
                appender.send_prepared(batch.remove(0), last, None).await
            } else {
                appender.send_batch(batch, last).await
            };
            last = pending.unwrap().await.unwrap().seq;
        }
        println!(
            "batch of {size}: {:?} per batch",
            started.elapsed() / ROUNDS
        );
    }
}
