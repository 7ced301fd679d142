//! Batch command requests against a real nats-server: many commands in one request on
//! `orch.<cell>.cmd.batch`, one reply listing each command's reply in order; and the coalescing
//! client that the HTTP bridge uses to pack concurrent commands into such requests.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use common::TestServer;
use futures::StreamExt;
use orchestrator::client::{CoalescingClient, CommandClient};
use orchestrator::domain::command::{EndSession, StartSession};
use orchestrator::domain::Command;
use orchestrator::writer::{self, Reply, WriterConfig};
use orchestrator_events::{Actor, CellId, EndReason};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Cell {
    _server: TestServer,
    client: async_nats::Client,
    stop: CancellationToken,
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn cell() -> Cell {
    let server = TestServer::start_default().await;
    let client = server.client().await;
    let stop = CancellationToken::new();
    let mut config = WriterConfig::new(CellId::default_cell());
    config.group_commit = true;
    tokio::spawn(writer::run(client.clone(), config, stop.clone()));
    let c = Cell {
        _server: server,
        client,
        stop,
    };
    for _ in 0..100 {
        if c.batch_json(json!({"requests": []})).await.is_some() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no writer answered");
}

impl Cell {
    async fn batch_raw(&self, body: Vec<u8>) -> Option<Value> {
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", "application/json");
        let req = async_nats::Request::new()
            .headers(headers)
            .payload(body.into())
            .timeout(Some(Duration::from_secs(5)));
        let msg = self
            .client
            .send_request("orch.default.cmd.batch", req)
            .await
            .ok()?;
        Some(serde_json::from_slice(&msg.payload).expect("a JSON reply"))
    }

    async fn batch_json(&self, body: Value) -> Option<Value> {
        self.batch_raw(serde_json::to_vec(&body).unwrap()).await
    }

    fn commands(&self) -> CommandClient {
        CommandClient::new(
            self.client.clone(),
            CellId::default_cell(),
            Duration::from_secs(5),
        )
    }
}

fn item(name: &str, id: &str, command: Value) -> Value {
    json!({"name": name, "request": {"command_id": id, "actor": {"kind": "service", "id": "t"}, "command": command}})
}

fn start(i: usize) -> Command {
    Command::StartSession(StartSession {
        session_id: Some(format!("s{i}").parse().unwrap()),
        user_id: format!("u{i}").parse().unwrap(),
        game_id: "g".parse().unwrap(),
        requirements: Default::default(),
    })
}

#[tokio::test]
async fn a_batch_is_answered_in_order_each_command_on_its_own() {
    let c = cell().await;
    let batch = json!({"requests": [
        item("vm_register", "r1", json!({"vm_id": "vm-1", "capacity": 1})),
        item("start", "st1", json!({"session_id": "s1", "user_id": "u1", "game_id": "g"})),
        item("start", "st2", json!({"session_id": "s2", "user_id": "u2", "game_id": "g"})),
        item("assign", "a1", json!({"session_id": "s1"})),
        // No room left: refused, and the others are not affected.
        item("assign", "a2", json!({"session_id": "s2"})),
        item("nope", "x", json!({})),
        item("pause", "p1", json!({"session": "not the field"})),
        item("pause", "p2", json!({"session_id": "s1"})),
    ]});
    let reply = c.batch_json(batch.clone()).await.unwrap();
    let replies = reply["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(replies.len(), 8);
    let seqs: Vec<Option<u64>> = replies
        .iter()
        .map(|r| r["accepted"]["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        [
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            None,
            None,
            None,
            Some(5)
        ]
    );
    let code = |i: usize| replies[i]["rejected"]["code"].as_str().unwrap().to_owned();
    assert_eq!(code(4), "no_capacity");
    assert_eq!(code(5), "unknown_command");
    assert_eq!(code(6), "malformed_request");

    // The same batch again: every applied command answers with its first result.
    let again = c.batch_json(batch).await.unwrap();
    for (first, second) in replies.iter().zip(again["replies"].as_array().unwrap()) {
        if let Some(seq) = first["accepted"]["seq"].as_u64() {
            assert_eq!(second["accepted"]["seq"].as_u64(), Some(seq), "{second}");
            assert_eq!(second["accepted"]["duplicate"], json!(true));
        }
    }
}

#[tokio::test]
async fn a_bad_batch_is_refused_whole_and_applies_nothing() {
    let c = cell().await;
    let code = |v: Value| v["rejected"]["code"].as_str().unwrap().to_owned();
    assert_eq!(
        code(c.batch_raw(b"{not json".to_vec()).await.unwrap()),
        "malformed_request"
    );
    assert_eq!(
        code(c.batch_json(json!({"requests": {}})).await.unwrap()),
        "malformed_request"
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| item("pause", &format!("p{i}"), json!({"session_id": "s"})))
        .collect();
    assert_eq!(
        code(c.batch_json(json!({"requests": many})).await.unwrap()),
        "payload_too_large"
    );
    assert_eq!(
        c.batch_json(json!({"requests": []})).await.unwrap(),
        json!({"replies": []})
    );
    let js = async_nats::jetstream::new(c.client.clone());
    let mut stream = js.get_stream("ORCH_DEFAULT").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        0,
        "nothing applied"
    );
}

#[tokio::test]
async fn postcard_batches_through_the_client() {
    let c = cell().await;
    let actor = Actor::service("t");
    let commands: Vec<_> = (0..20)
        .map(|i| (format!("st{i}").parse().unwrap(), actor.clone(), start(i)))
        .collect();
    let replies = c.commands().send_batch(&commands).await.unwrap();
    let seqs: Vec<u64> = replies
        .iter()
        .map(|r| match r {
            Reply::Accepted { seq, .. } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_are_coalesced_into_batch_requests() {
    let c = cell().await;
    // Watch the batch subject beside the writer (a plain subscriber gets a copy).
    let mut seen = c.client.subscribe("orch.default.cmd.batch").await.unwrap();
    c.client.flush().await.unwrap();
    let coalescing = CoalescingClient::new(c.commands(), 1);
    let actor = Actor::service("t");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (coalescing, actor) = (coalescing.clone(), actor.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("st{i}").parse().unwrap();
            let started = coalescing.send(&id, &actor, &start(i)).await.unwrap();
            let end = Command::EndSession(EndSession {
                session_id: format!("s{i}").parse().unwrap(),
                reason: EndReason::User,
            });
            let paused = coalescing
                .send(&format!("e{i}").parse().unwrap(), &actor, &end)
                .await
                .unwrap();
            (i, started, paused)
        }));
    }
    let mut seqs = std::collections::BTreeSet::new();
    for t in tasks {
        let (i, started, paused) = t.await.unwrap();
        match (&started, &paused) {
            (Reply::Accepted { seq: a, event, .. }, Reply::Accepted { seq: b, .. }) => {
                assert_eq!(
                    event.command_id,
                    format!("st{i}"),
                    "a reply went to another caller"
                );
                assert!(a < b);
                assert!(seqs.insert(*a) && seqs.insert(*b));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs.len(), 400);
    let mut batches = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), seen.next()).await {
        batches += 1;
    }
    println!("{batches} batch requests carried some of the 400 commands");
    assert!(batches > 0, "no command was sent in a batch request");
}
