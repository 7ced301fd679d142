//! The write path against a real nats-server: JSON commands through NATS, the writer, the log and
//! the projections.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use common::TestServer;
use orchestrator::projections::{projector, Projections};
use orchestrator::writer::{self, Reply, WriterConfig};
use orchestrator_events::CellId;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Cell {
    _server: TestServer,
    client: async_nats::Client,
    store: Projections,
    stop: CancellationToken,
}

async fn cell() -> Cell {
    let server = TestServer::start_default().await;
    let client = server.client().await;
    let stop = CancellationToken::new();
    let mut config = WriterConfig::new(CellId::default_cell());
    config.lease_ttl = Duration::from_secs(2);
    tokio::spawn(writer::run(client.clone(), config, stop.clone()));
    let (store, _) = Projections::open(&server.dir().join("projections")).unwrap();
    // The projector needs the stream, which the writer creates: wait for the writer to answer.
    let c = Cell {
        _server: server,
        client,
        store,
        stop,
    };
    c.wait_for_writer().await;
    let js = async_nats::jetstream::new(c.client.clone());
    let reader = orchestrator::log::Reader::new(js, CellId::default_cell())
        .await
        .unwrap();
    tokio::spawn(projector::run(reader, c.store.clone(), c.stop.clone()));
    c
}

impl Cell {
    async fn wait_for_writer(&self) {
        for _ in 0..100 {
            let r = self.send_json("nope", json!({})).await;
            if r.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no writer answered");
    }

    async fn send_raw(&self, name: &str, body: Vec<u8>, json: bool) -> Option<Value> {
        let mut headers = HeaderMap::new();
        if json {
            headers.insert("Content-Type", "application/json");
        }
        let req = async_nats::Request::new()
            .headers(headers)
            .payload(body.into())
            .timeout(Some(Duration::from_secs(5)));
        let msg = self
            .client
            .send_request(format!("orch.default.cmd.{name}"), req)
            .await
            .ok()?;
        if json {
            Some(serde_json::from_slice(&msg.payload).expect("a JSON reply"))
        } else {
            let reply = Reply::decode(&msg.payload, false).expect("a postcard reply");
            Some(serde_json::to_value(reply).unwrap())
        }
    }

    async fn send_json(&self, name: &str, body: Value) -> Option<Value> {
        self.send_raw(name, serde_json::to_vec(&body).unwrap(), true)
            .await
    }

    async fn cmd(&self, name: &str, id: &str, command: Value) -> Value {
        let body = json!({"command_id": id, "actor": {"kind": "service", "id": "test"}, "command": command});
        self.send_json(name, body).await.expect("an answer")
    }

    async fn last_seq(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut s = js.get_stream("ORCH_DEFAULT").await.unwrap();
        s.info().await.unwrap().state.last_sequence
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn seq(v: &Value) -> u64 {
    v["accepted"]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("not accepted: {v}"))
}

fn code(v: &Value) -> &str {
    v["rejected"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not rejected: {v}"))
}

#[tokio::test]
async fn full_lifecycle_through_json_commands() {
    let c = cell().await;
    let r = c
        .cmd(
            "vm_register",
            "c1",
            json!({"vm_id": "vm-1", "capacity": 2, "labels": {"region": "eu"}}),
        )
        .await;
    assert_eq!(seq(&r), 1);
    let r = c.cmd("start", "c2", json!({"session_id": "s1", "user_id": "u1", "game_id": "g1", "requirements": {"region": "eu"}})).await;
    assert_eq!(seq(&r), 2);
    assert_eq!(
        r["accepted"]["event"]["event"]["SessionStarted"]["session_id"],
        "s1"
    );
    let r = c.cmd("assign", "c3", json!({"session_id": "s1"})).await;
    let placed = &r["accepted"]["event"]["event"]["SessionAssigned"];
    assert_eq!(placed["vm_id"], "vm-1");
    assert_eq!(placed["placement"]["policy"], "packed");
    seq(&c.cmd("pause", "c4", json!({"session_id": "s1"})).await);
    seq(&c.cmd("resume", "c5", json!({"session_id": "s1"})).await);
    let r = c
        .cmd("end", "c6", json!({"session_id": "s1", "reason": "user"}))
        .await;
    assert_eq!(seq(&r), 6);
    assert_eq!(
        code(&c.cmd("pause", "c7", json!({"session_id": "s1"})).await),
        "invalid_transition"
    );

    // Read-your-writes: the projection reaches the sequence the command returned.
    c.store.wait_for(6, Duration::from_secs(5)).await.unwrap();
    let s = c.store.session(&"s1".parse().unwrap()).unwrap().unwrap();
    assert_eq!(s.status.as_str(), "ended");
    let vm = c.store.vm(&"vm-1".parse().unwrap()).unwrap().unwrap();
    assert_eq!((vm.used, vm.free), (0, 2));
}

#[tokio::test]
async fn a_retried_command_id_returns_the_first_result() {
    let c = cell().await;
    let body = json!({"vm_id": "vm-1", "capacity": 2});
    let first = c.cmd("vm_register", "k1", body.clone()).await;
    let again = c.cmd("vm_register", "k1", body).await;
    assert_eq!(seq(&first), seq(&again));
    assert_eq!(again["accepted"]["duplicate"], true);
    assert_eq!(first["accepted"]["event"], again["accepted"]["event"]);
    let other = c
        .cmd("vm_register", "k1", json!({"vm_id": "vm-2", "capacity": 2}))
        .await;
    assert_eq!(code(&other), "command_id_reused");
    assert_eq!(c.last_seq().await, 1);
}

/// Command ids are scoped by their sender over NATS too: another actor's `k1` is a command of its
/// own, and nobody outside the writer may send as the `system` actor, whose ids timers use.
#[tokio::test]
async fn command_ids_are_scoped_by_their_sender() {
    let c = cell().await;
    let first = c
        .cmd("vm_register", "k1", json!({"vm_id": "vm-1", "capacity": 2}))
        .await;
    let as_ = |kind: &str, id: &str, command_id: &str, command: Value| json!({"command_id": command_id, "actor": {"kind": kind, "id": id}, "command": command});
    let other = c
        .send_json(
            "vm_register",
            as_(
                "operator",
                "ops",
                "k1",
                json!({"vm_id": "vm-2", "capacity": 2}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(seq(&other), seq(&first) + 1, "{other}");
    assert_eq!(other["accepted"]["duplicate"], false);

    // Two players' starts without a session id under one key name two sessions.
    let start = |user: &str| {
        as_(
            "user",
            user,
            "start-42",
            json!({"user_id": user, "game_id": "g1"}),
        )
    };
    let a = c.send_json("start", start("alice")).await.unwrap();
    let b = c.send_json("start", start("bob")).await.unwrap();
    let id = |v: &Value| v["accepted"]["event"]["event"]["SessionStarted"]["session_id"].clone();
    assert_ne!(id(&a), id(&b), "{a} {b}");

    let system = c
        .send_json(
            "pause",
            as_(
                "system",
                "orchestrator",
                "pause-timeout:s1:3",
                json!({"session_id": "s1"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(code(&system), "invalid_argument", "{system}");
    assert_eq!(c.last_seq().await, 4);
}

#[tokio::test]
async fn bad_input_is_rejected_and_appends_nothing() {
    let c = cell().await;
    seq(&c
        .cmd("vm_register", "c1", json!({"vm_id": "vm-1", "capacity": 1}))
        .await);
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        ("start", b"\x00\xff\xfe garbage".to_vec(), false, "malformed_request"),
        ("start", b"{not json".to_vec(), true, "malformed_request"),
        ("start", br#"{"command_id":"x","actor":{"kind":"user","id":"u"},"command":{"user_id":5}}"#.to_vec(), true, "malformed_request"),
        ("start", br#"{"command_id":"x","actor":{"kind":"user","id":"u"},"command":{"session_id":"a.b","user_id":"u","game_id":"g"}}"#.to_vec(), true, "malformed_request"),
        ("start", br#"{"command_id":"x","actor":{"kind":"user","id":"u"},"command":{"user_id":"u","game_id":"g","colour":"red"}}"#.to_vec(), true, "malformed_request"),
        ("vm_drain", br#"{"command_id":"x","actor":{"kind":"operator","id":"o"},"command":{"vm_id":"vm-1"},"priority":1}"#.to_vec(), true, "malformed_request"),
        ("launch", b"{}".to_vec(), true, "unknown_command"),
        ("start", vec![b' '; 70 * 1024], true, "payload_too_large"),
        ("vm_register", br#"{"command_id":"y","actor":{"kind":"operator","id":"o"},"command":{"vm_id":"vm-9","capacity":0}}"#.to_vec(), true, "invalid_argument"),
        ("pause", br#"{"command_id":"z","actor":{"kind":"user","id":"u"},"command":{"session_id":"nope"}}"#.to_vec(), true, "session_not_found"),
    ];
    for (name, body, json, want) in cases {
        let r = c.send_raw(name, body, json).await.expect("an answer");
        assert_eq!(code(&r), want, "{name}: {r}");
    }
    assert_eq!(
        c.last_seq().await,
        1,
        "no rejected command appended anything"
    );
}

/// A JSON body is answered in JSON whatever its headers say, so a JSON client can read why it was
/// refused; and the batch subject answers the same way, with a batch rejection.
#[tokio::test]
async fn json_bodies_get_json_replies_without_or_with_another_content_type() {
    let c = cell().await;
    let body = br#"{"command_id":"j1","actor":{"kind":"operator","id":"o"},"command":{"vm_id":"vm-1","capacity":1}}"#;
    for (subject, content_type) in [
        ("vm_register", None),
        ("vm_register", Some("text/plain")),
        ("batch", None),
        ("batch", Some("text/plain; charset=utf-8")),
    ] {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert("Content-Type", ct);
        }
        let req = async_nats::Request::new()
            .headers(headers)
            .payload(body.to_vec().into())
            .timeout(Some(Duration::from_secs(5)));
        let msg = c
            .client
            .send_request(format!("orch.default.cmd.{subject}"), req)
            .await
            .expect("an answer");
        let ct = msg.headers.as_ref().and_then(|h| h.get("Content-Type"));
        assert_eq!(ct.map(|v| v.as_str()), Some("application/json"));
        let reply: Value = serde_json::from_slice(&msg.payload)
            .unwrap_or_else(|e| panic!("{subject} {content_type:?}: not JSON ({e})"));
        assert_eq!(code(&reply), "unsupported_content_type", "{reply}");
        assert!(
            reply["rejected"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{reply}"
        );
    }
    // A postcard body with another content type is still answered in postcard.
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "text/plain");
    let req = async_nats::Request::new()
        .headers(headers)
        .payload(vec![1, b'x', 0].into())
        .timeout(Some(Duration::from_secs(5)));
    let msg = c
        .client
        .send_request("orch.default.cmd.start", req)
        .await
        .unwrap();
    match Reply::decode(&msg.payload, false).expect("a postcard reply") {
        Reply::Rejected { code, .. } => assert_eq!(code, "unsupported_content_type"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.last_seq().await, 0, "nothing was appended");
}

/// Only an accepted command's id is remembered: a rejection appends nothing, so the same command id
/// sent again later is decided again, and may then be accepted.
#[tokio::test]
async fn a_rejected_command_id_is_decided_again() {
    let c = cell().await;
    let drain = json!({"vm_id": "vm-1"});
    let first = c.cmd("vm_drain", "d1", drain.clone()).await;
    assert_eq!(code(&first), "vm_not_found");
    assert!(
        first["rejected"]["rejection"]["vm_not_found"].is_object(),
        "{first}"
    );
    seq(&c
        .cmd("vm_register", "r1", json!({"vm_id": "vm-1", "capacity": 1}))
        .await);
    let again = c.cmd("vm_drain", "d1", drain.clone()).await;
    assert_eq!(again["accepted"]["duplicate"], false, "{again}");
    let retry = c.cmd("vm_drain", "d1", drain).await;
    assert_eq!(retry["accepted"]["duplicate"], true, "{retry}");
    assert_eq!(seq(&again), seq(&retry));
    // A protocol rejection has no domain details.
    let bad = c.send_json("vm_drain", json!({"nope": 1})).await.unwrap();
    assert_eq!(code(&bad), "malformed_request");
    assert!(bad["rejected"]["rejection"].is_null(), "{bad}");
}

/// The JSON form of an event: the body digest as a decimal string (it exceeds 2^53) and the time
/// in RFC 3339 beside the epoch milliseconds.
#[tokio::test]
async fn json_events_carry_the_digest_as_a_string_and_an_rfc3339_time() {
    let c = cell().await;
    let r = c
        .cmd("vm_register", "r1", json!({"vm_id": "vm-1", "capacity": 1}))
        .await;
    let event = &r["accepted"]["event"];
    let digest = event["command_digest"].as_str().expect("a string");
    assert!(digest.parse::<u64>().unwrap() > 0, "{event}");
    let ms = event["occurred_at"].as_i64().unwrap();
    let text = event["occurred_at_rfc3339"].as_str().unwrap();
    let parsed = humantime::parse_rfc3339(text).unwrap();
    let back = parsed
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(back as i64, ms, "{text}");
    assert!(text.ends_with('Z'));
}

#[tokio::test]
async fn capacity_holds_under_concurrent_assignments() {
    let c = cell().await;
    seq(&c
        .cmd("vm_register", "r1", json!({"vm_id": "vm-1", "capacity": 3}))
        .await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = c.client.clone();
        tasks.push(tokio::spawn(async move {
            let send = |name: &'static str, id: String, command: Value| {
                let client = client.clone();
                async move {
                    let body = json!({"command_id": id, "actor": {"kind": "service", "id": "t"}, "command": command});
                    let mut h = HeaderMap::new();
                    h.insert("Content-Type", "application/json");
                    let req = async_nats::Request::new().headers(h).payload(serde_json::to_vec(&body).unwrap().into());
                    let m = client.send_request(format!("orch.default.cmd.{name}"), req).await.unwrap();
                    serde_json::from_slice::<Value>(&m.payload).unwrap()
                }
            };
            let s = format!("s{i}");
            send("start", format!("st{i}"), json!({"session_id": s, "user_id": format!("u{i}"), "game_id": "g"})).await;
            send("assign", format!("as{i}"), json!({"session_id": s})).await
        }));
    }
    let mut placed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.get("accepted").is_some() {
            placed += 1;
        } else {
            assert_eq!(code(&r), "no_capacity");
        }
    }
    assert_eq!(placed, 3);
    let last = c.last_seq().await;
    c.store
        .wait_for(last, Duration::from_secs(5))
        .await
        .unwrap();
    let vm = c.store.vm(&"vm-1".parse().unwrap()).unwrap().unwrap();
    assert_eq!(vm.used, 3);
}

#[tokio::test]
async fn recovers_from_a_snapshot_and_ignores_one_the_log_does_not_match() {
    use orchestrator::log::{ensure_stream, Appender, LogConfig, Reader};
    use orchestrator::writer::recovery::{recover, snapshot_path};

    let server = TestServer::start_default().await;
    let client = server.client().await;
    let data = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mut config = WriterConfig::new(CellId::default_cell());
    config.data_dir = Some(data.path().to_path_buf());
    config.snapshot_every = 5;
    let writer = tokio::spawn(writer::run(client.clone(), config.clone(), stop.clone()));
    let c = Cell {
        _server: server,
        client: client.clone(),
        store: Projections::open(&data.path().join("p")).unwrap().0,
        stop: stop.clone(),
    };
    c.wait_for_writer().await;
    for i in 0..12 {
        seq(&c
            .cmd(
                "vm_register",
                &format!("r{i}"),
                json!({"vm_id": format!("vm-{i}"), "capacity": 1}),
            )
            .await);
    }
    stop.cancel();
    writer.await.unwrap().unwrap();
    let path = snapshot_path(data.path(), &CellId::default_cell());
    assert!(path.exists(), "a snapshot was saved");

    // The snapshot plus the tail equals a replay of the whole log.
    let js = async_nats::jetstream::new(client.clone());
    let reader = Reader::new(js, CellId::default_cell()).await.unwrap();
    let (state, _, how) = recover(&reader, &config.domain, Some(&path)).await.unwrap();
    let snap_seq = how.snapshot_seq.expect("the snapshot was used");
    assert!(snap_seq >= 5, "{how:?}");
    assert_eq!(snap_seq + how.replayed, 12);
    let replayed = orchestrator::admin::replay_state(&reader, &config.domain, 12)
        .await
        .unwrap();
    assert!(replayed.violation.is_none());
    assert_eq!(state.fingerprint(), replayed.state.fingerprint());

    // Against another log (a new stream whose event at that sequence differs), it is ignored.
    let other = TestServer::start_default().await;
    let js = other.jetstream().await;
    ensure_stream(&js, &LogConfig::new(CellId::default_cell()))
        .await
        .unwrap();
    let appender = Appender::new(js.clone(), CellId::default_cell());
    for i in 0..snap_seq {
        let env = orchestrator_events::Envelope::new(
            format!("other-{i}"),
            format!("o{i}"),
            1,
            1_700_000_000_000,
            orchestrator_events::Actor::operator("t"),
            orchestrator_events::Event::VmDrained {
                vm_id: "vm-x".parse().unwrap(),
            },
        );
        appender.append(&env, i).await.unwrap();
    }
    let reader = Reader::new(js, CellId::default_cell()).await.unwrap();
    let (state, _, how) = recover(&reader, &config.domain, Some(&path)).await.unwrap();
    assert_eq!(
        how.snapshot_seq, None,
        "a snapshot of another log is not used"
    );
    assert_eq!(how.replayed, snap_seq);
    assert!(state.vms.is_empty());
}

/// Snapshots are taken by time as well as by count: a writer killed long before its
/// `snapshot_every`-th event still leaves a snapshot that the next writer starts from.
#[tokio::test]
async fn a_writer_killed_before_its_snapshot_count_leaves_a_snapshot_by_time() {
    use orchestrator::log::Reader;
    use orchestrator::writer::recovery::{recover, snapshot_path};

    let server = TestServer::start_default().await;
    let client = server.client().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = WriterConfig::new(CellId::default_cell());
    config.data_dir = Some(data.path().to_path_buf());
    config.snapshot_every = 1_000_000;
    config.snapshot_interval = Duration::from_millis(200);
    let writer = tokio::spawn(writer::run(
        client.clone(),
        config.clone(),
        CancellationToken::new(),
    ));
    let c = Cell {
        _server: server,
        client: client.clone(),
        store: Projections::open(&data.path().join("p")).unwrap().0,
        stop: CancellationToken::new(),
    };
    c.wait_for_writer().await;
    for i in 0..7 {
        seq(&c
            .cmd(
                "vm_register",
                &format!("r{i}"),
                json!({"vm_id": format!("vm-{i}"), "capacity": 1}),
            )
            .await);
    }
    let path = snapshot_path(data.path(), &CellId::default_cell());
    let js = async_nats::jetstream::new(client.clone());
    let reader = Reader::new(js, CellId::default_cell()).await.unwrap();
    let mut used = None;
    for _ in 0..100 {
        if path.exists() {
            let (_, _, how) = recover(&reader, &config.domain, Some(&path)).await.unwrap();
            if how.snapshot_seq == Some(7) {
                used = how.snapshot_seq;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Killed, not stopped: no snapshot on the way out.
    writer.abort();
    assert_eq!(used, Some(7), "a snapshot by time, while the writer ran");
}
