//! The lifecycle on its own, against a real nats-server: a VM that stops sending heartbeats is
//! declared lost with its sessions ended, the placement queue places waiting sessions in arrival
//! order and times out the late ones, and a writer that dies in the middle of a reaping leaves a
//! standby to finish it with no duplicate. Every automatic action is in the log with the `system`
//! actor and its reason.
//!
//! These run in real time (heartbeats and the writer's tick are real), with intervals of a few
//! hundred milliseconds; the rules themselves are tested with a controlled clock in
//! `src/domain/tests/timers.rs`.

mod common;

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use common::TestServer;
use futures::StreamExt;
use orchestrator::domain::timers::TimerConfig;
use orchestrator::log::Reader;
use orchestrator::writer::{self, WriterConfig};
use orchestrator_events::{ActorKind, CellId, EndReason, Envelope, Event};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const HEARTBEAT_MS: u64 = 300;
const MISSES: u32 = 3;

fn config() -> WriterConfig {
    let mut c = WriterConfig::new(CellId::default_cell());
    c.lease_ttl = Duration::from_secs(1);
    c.tick = Duration::from_millis(50);
    c.timers = TimerConfig {
        pause_timeout_ms: None,
        max_session_ms: None,
        placement_timeout_ms: None,
        heartbeat_misses: MISSES,
    };
    c
}

struct Cell {
    server: TestServer,
    client: async_nats::Client,
}

impl Cell {
    async fn start() -> (Cell, CancellationToken) {
        let server = TestServer::start_default().await;
        let client = server.client().await;
        let stop = CancellationToken::new();
        tokio::spawn(writer::run(client.clone(), config(), stop.clone()));
        let c = Cell { server, client };
        c.wait_for_writer().await;
        (c, stop)
    }

    async fn wait_for_writer(&self) {
        for _ in 0..200 {
            if self.send("nope", json!({})).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no writer answered");
    }

    async fn send(&self, name: &str, body: Value) -> Option<Value> {
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", "application/json");
        let req = async_nats::Request::new()
            .headers(headers)
            .payload(serde_json::to_vec(&body).unwrap().into())
            .timeout(Some(Duration::from_secs(5)));
        let msg = self
            .client
            .send_request(format!("orch.default.cmd.{name}"), req)
            .await
            .ok()?;
        Some(serde_json::from_slice(&msg.payload).unwrap())
    }

    async fn cmd(&self, name: &str, id: &str, command: Value) -> Value {
        let body = json!({"command_id": id, "actor": {"kind": "service", "id": "test"}, "command": command});
        let r = self.send(name, body).await.expect("an answer");
        assert!(r["accepted"].is_object(), "{name} {id}: {r}");
        r
    }

    async fn events(&self) -> Vec<(u64, Envelope)> {
        let js = async_nats::jetstream::new(self.client.clone());
        let reader = Reader::new(js, CellId::default_cell()).await.unwrap();
        let (last, stream) = reader.read_to_end(1).await.unwrap();
        if last == 0 {
            return Vec::new();
        }
        stream
            .map(|e| {
                let e = e.unwrap();
                (e.seq, e.envelope)
            })
            .collect()
            .await
    }

    /// Polls the log until `done` holds, for up to `within`.
    async fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[(u64, Envelope)]) -> bool,
    ) -> Vec<(u64, Envelope)> {
        let deadline = Instant::now() + within;
        loop {
            let events = self.events().await;
            if done(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "not within {within:?}: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn lost(events: &[(u64, Envelope)]) -> Vec<&Envelope> {
    events
        .iter()
        .filter(|(_, e)| matches!(e.event, Event::VmLost { .. }))
        .map(|(_, e)| e)
        .collect()
}

fn ended(events: &[(u64, Envelope)], reason: EndReason) -> Vec<&Envelope> {
    events
        .iter()
        .filter(|(_, e)| matches!(&e.event, Event::SessionEnded { reason: r, .. } if *r == reason))
        .map(|(_, e)| e)
        .collect()
}

/// Sends heartbeats of `vm` every interval until `stop`.
fn heartbeats(client: async_nats::Client, vm: &str, stop: CancellationToken) {
    let subject = format!("orch.default.heartbeat.{vm}");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => { let _ = client.publish(subject.clone(), "beat".into()).await; }
            }
        }
    });
}

async fn register_with_sessions(c: &Cell, vm: &str, sessions: usize) {
    c.cmd(
        "vm_register",
        &format!("reg-{vm}"),
        json!({"vm_id": vm, "capacity": sessions.max(1), "heartbeat_ms": HEARTBEAT_MS}),
    )
    .await;
    for i in 0..sessions {
        let s = format!("{vm}-s{i}");
        c.cmd(
            "start",
            &format!("start-{s}"),
            json!({"session_id": s, "user_id": format!("u-{s}"), "game_id": "g"}),
        )
        .await;
        c.cmd(
            "assign",
            &format!("assign-{s}"),
            json!({"session_id": s, "vm_id": vm}),
        )
        .await;
    }
}

#[tokio::test]
async fn a_vm_that_stops_its_heartbeats_is_lost_with_its_sessions_ended() {
    let (c, _stop) = Cell::start().await;
    let beating = CancellationToken::new();
    heartbeats(c.client.clone(), "vm-1", beating.clone());
    heartbeats(c.client.clone(), "vm-2", CancellationToken::new());
    register_with_sessions(&c, "vm-1", 2).await;
    register_with_sessions(&c, "vm-2", 1).await;
    // Alive while its heartbeats come, well past one deadline.
    let deadline_ms = HEARTBEAT_MS * u64::from(MISSES);
    tokio::time::sleep(Duration::from_millis(deadline_ms * 2)).await;
    assert!(lost(&c.events().await).is_empty(), "lost while beating");

    beating.cancel();
    let events = c
        .wait_until(Duration::from_secs(15), |e| !lost(e).is_empty())
        .await;
    let ends = ended(&events, EndReason::VmLost);
    assert_eq!(ends.len(), 2, "one end per session on vm-1");
    let gone = lost(&events);
    assert_eq!(gone.len(), 1);
    for e in ends.iter().chain(gone.iter()) {
        assert_eq!(e.actor.kind, ActorKind::System, "{e:?}");
    }
    // Ends first, then the VM's loss.
    let last_end = events
        .iter()
        .filter(|(_, e)| matches!(e.event, Event::SessionEnded { .. }))
        .map(|(s, _)| *s)
        .max()
        .unwrap();
    let lost_seq = events
        .iter()
        .find(|(_, e)| matches!(e.event, Event::VmLost { .. }))
        .unwrap()
        .0;
    assert!(last_end < lost_seq);
    // Within the deadline plus one interval of its last heartbeat (the writer's tick is 50 ms).
    let Event::VmLost {
        vm_id,
        last_heartbeat,
    } = &gone[0].event
    else {
        unreachable!()
    };
    assert_eq!(vm_id.as_str(), "vm-1");
    let after = gone[0].occurred_at - last_heartbeat.expect("heard from it");
    println!("declared lost {after} ms after its last heartbeat (deadline {deadline_ms} ms)");
    assert!(
        after <= (deadline_ms + HEARTBEAT_MS) as i64,
        "{after} ms after the last heartbeat"
    );
    // vm-2 keeps beating and keeps its session; a lost VM takes no placement until it registers again.
    assert!(ended(&events, EndReason::VmLost).iter().all(|e| e
        .event
        .session_id()
        .unwrap()
        .as_str()
        .starts_with("vm-1")));
    c.cmd(
        "start",
        "start-x",
        json!({"session_id": "x", "user_id": "ux", "game_id": "g"}),
    )
    .await;
    let r = c
        .send(
            "assign",
            json!({"command_id": "assign-x", "actor": {"kind": "service", "id": "test"},
                   "command": {"session_id": "x", "vm_id": "vm-1"}}),
        )
        .await
        .unwrap();
    assert_eq!(r["rejected"]["code"], "invalid_transition", "{r}");
    c.cmd(
        "vm_register",
        "reg-vm-1-again",
        json!({"vm_id": "vm-1", "capacity": 2, "heartbeat_ms": HEARTBEAT_MS}),
    )
    .await;
}

#[tokio::test]
async fn the_queue_places_in_arrival_order_and_times_out_the_late() {
    let (c, _stop) = Cell::start().await;
    c.cmd(
        "vm_register",
        "reg",
        json!({"vm_id": "vm-1", "capacity": 1}),
    )
    .await;
    let start = |s: &str| json!({"session_id": s, "user_id": format!("u-{s}"), "game_id": "g"});
    c.cmd("start", "start-s0", start("s0")).await;
    c.cmd("assign", "assign-s0", json!({"session_id": "s0"}))
        .await;
    // Three wait for room: two with time to spare, the last with 600 ms.
    for (s, wait) in [("s1", 60_000), ("s2", 60_000), ("s3", 600)] {
        c.cmd("start", &format!("start-{s}"), start(s)).await;
        let r = c
            .cmd(
                "assign",
                &format!("assign-{s}"),
                json!({"session_id": s, "wait_ms": wait}),
            )
            .await;
        assert!(
            r["accepted"]["event"]["event"]["SessionQueued"].is_object(),
            "{r}"
        );
    }
    let events = c
        .wait_until(Duration::from_secs(10), |e| {
            !ended(e, EndReason::PlacementTimeout).is_empty()
        })
        .await;
    let late = ended(&events, EndReason::PlacementTimeout);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].event.session_id().unwrap().as_str(), "s3");
    assert_eq!(late[0].actor.kind, ActorKind::System);

    // Room frees twice: s1, then s2, each by the system, from the queue.
    c.cmd(
        "end",
        "end-s0",
        json!({"session_id": "s0", "reason": "user"}),
    )
    .await;
    let events = c
        .wait_until(Duration::from_secs(10), |e| placed_from_queue(e).len() == 1)
        .await;
    assert_eq!(placed_from_queue(&events), vec!["s1".to_owned()]);
    c.cmd(
        "end",
        "end-s1",
        json!({"session_id": "s1", "reason": "user"}),
    )
    .await;
    let events = c
        .wait_until(Duration::from_secs(10), |e| placed_from_queue(e).len() == 2)
        .await;
    assert_eq!(
        placed_from_queue(&events),
        vec!["s1".to_owned(), "s2".to_owned()]
    );
}

/// Waits, up to 15 s, for the first event on `appended` (a core subscription to event subjects)
/// that `wanted` accepts: the moment the writer starts a job.
async fn first_appended(
    appended: &mut async_nats::Subscriber,
    wanted: impl Fn(&Event) -> bool,
) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(m) = appended.next().await {
            let env = orchestrator_events::decode(&m.payload).unwrap();
            if wanted(&env.event) {
                return;
            }
        }
    })
    .await
}

fn placed_from_queue(events: &[(u64, Envelope)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::SessionAssigned {
                session_id,
                placement,
                ..
            } if placement.queued.is_some() => {
                assert_eq!(e.actor.kind, ActorKind::System);
                Some(session_id.to_string())
            }
            _ => None,
        })
        .collect()
}

/// The active writer dies while it ends a lost VM's sessions; the standby takes over, gives the VM
/// a deadline of grace, and finishes: every session ended once, the VM lost once.
#[tokio::test]
async fn a_standby_finishes_a_reaping_its_predecessor_died_in() {
    // More than the writer decides in one tick (256), so the reaping spans several.
    const SESSIONS: usize = 700;
    let server = TestServer::start_default().await;
    let client_a = server.client().await;
    let stop_a = CancellationToken::new();
    let active = tokio::spawn(writer::run(client_a.clone(), config(), stop_a.clone()));
    let c = Cell {
        client: server.client().await,
        server,
    };
    c.wait_for_writer().await;
    // Watching from before the registration: on a busy machine the VM's deadline can pass while
    // its sessions are still being registered.
    let mut appended = c
        .client
        .subscribe("orch.default.evt.session.>")
        .await
        .unwrap();
    // The VM beats while its sessions are registered (on a busy machine that takes longer than
    // its deadline), then falls silent.
    let beats = CancellationToken::new();
    heartbeats(c.client.clone(), "vm-1", beats.clone());
    register_with_sessions(&c, "vm-1", SESSIONS).await;
    beats.cancel();
    // The standby waits for the lease.
    let client_b = c.server.client().await;
    let stop_b = CancellationToken::new();
    tokio::spawn(writer::run(client_b, config(), stop_b.clone()));

    // No heartbeat comes any more: once the reaping has begun, the active writer dies mid-way.
    first_appended(&mut appended, |e| matches!(e, Event::SessionEnded { .. }))
        .await
        .expect("the reaping begins");
    active.abort();
    drop(client_a);
    let mid = ended(&c.events().await, EndReason::VmLost).len();
    println!("{mid} of {SESSIONS} ended when the active writer died");

    let events = c
        .wait_until(Duration::from_secs(30), |e| !lost(e).is_empty())
        .await;
    let ends = ended(&events, EndReason::VmLost);
    let mut ids: Vec<_> = ends.iter().map(|e| e.event.session_id().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ends.len(), SESSIONS, "every session ended");
    assert_eq!(ids.len(), SESSIONS, "none twice");
    assert_eq!(lost(&events).len(), 1);
    stop_b.cancel();
    stop_a.cancel();
}

/// The active writer dies while it places a long queue on a VM that just joined; the standby
/// takes over and places the rest: every queued session assigned once, in arrival order.
#[tokio::test]
async fn a_standby_finishes_the_queue_placements_its_predecessor_died_in() {
    const QUEUED: usize = 600;
    let server = TestServer::start_default().await;
    let client_a = server.client().await;
    let active = tokio::spawn(writer::run(
        client_a.clone(),
        config(),
        CancellationToken::new(),
    ));
    let c = Cell {
        client: server.client().await,
        server,
    };
    c.wait_for_writer().await;
    for i in 0..QUEUED {
        let s = format!("q{i:04}");
        c.cmd(
            "start",
            &format!("start-{s}"),
            json!({"session_id": s, "user_id": format!("u-{s}"), "game_id": "g"}),
        )
        .await;
        c.cmd(
            "assign",
            &format!("assign-{s}"),
            json!({"session_id": s, "wait_ms": 600_000}),
        )
        .await;
    }
    let stop_b = CancellationToken::new();
    tokio::spawn(writer::run(
        c.server.client().await,
        config(),
        stop_b.clone(),
    ));

    let mut appended = c
        .client
        .subscribe("orch.default.evt.session.>")
        .await
        .unwrap();
    // Room for every one of them at once.
    c.cmd(
        "vm_register",
        "reg-big",
        json!({"vm_id": "vm-big", "capacity": QUEUED}),
    )
    .await;
    first_appended(&mut appended, |e| {
        matches!(e, Event::SessionAssigned { .. })
    })
    .await
    .expect("the placements begin");
    active.abort();
    drop(client_a);
    let mid = placed_from_queue(&c.events().await).len();
    println!("{mid} of {QUEUED} placed when the active writer died");

    let events = c
        .wait_until(Duration::from_secs(30), |e| {
            placed_from_queue(e).len() >= QUEUED
        })
        .await;
    let placed = placed_from_queue(&events);
    assert_eq!(placed.len(), QUEUED, "each placed once");
    let mut in_order = placed.clone();
    in_order.sort();
    assert_eq!(placed, in_order, "in arrival order");
    stop_b.cancel();
}
