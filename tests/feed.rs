//! The JSON feed against a real nats-server: every event of the log republished once, in order, as
//! a CloudEvents 1.0 message on its feed subject; consumers that filter by session, VM and type; a
//! role killed midway (and one whose checkpoint file is gone) that neither skips nor repeats; two
//! roles at once; foreign and quarantined log messages; the feed stream's retention.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::Consumer};
use bytes::Bytes;
use common::TestServer;
use futures::StreamExt;
use orchestrator::feed::{self, FeedConfig, FeedError};
use orchestrator::log::quarantine::quarantine;
use orchestrator::log::{ensure_stream, Appender, LogConfig, Reader};
use orchestrator::metrics::FeedMetrics;
use orchestrator_events::subject::{
    feed_session_filter, feed_stream_name, feed_subject, feed_type_filter, feed_vm_filter,
};
use orchestrator_events::{Actor, CellId, EndReason, Envelope, Event, EventType, SessionId, VmId};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn cell() -> CellId {
    CellId::default_cell()
}

/// The `i`-th event of a varied log: sessions paused, resumed and ended by users, services and the
/// system, VMs drained by an operator.
fn event(i: u64) -> Envelope {
    let session = SessionId::parse(format!("s{}", i % 10)).unwrap();
    let user = Actor::user(format!("u{}", i % 10));
    let (actor, event) = match i % 5 {
        0 => (
            Actor::operator("ops"),
            Event::VmDrained {
                vm_id: VmId::parse(format!("vm-{}", i % 3)).unwrap(),
            },
        ),
        1 => (
            user,
            Event::SessionPaused {
                session_id: session,
            },
        ),
        2 => (
            user,
            Event::SessionResumed {
                session_id: session,
            },
        ),
        3 => (
            Actor::system("timers"),
            Event::SessionEnded {
                session_id: session,
                reason: EndReason::PauseTimeout,
                vm_id: Some(VmId::parse("vm-1").unwrap()),
            },
        ),
        _ => (
            Actor::service("gateway"),
            Event::SessionPaused {
                session_id: session,
            },
        ),
    };
    Envelope::new(
        format!("evt-{i}"),
        format!("cmd-{i}"),
        i,
        1_700_000_000_000 + i as i64 * 1_001,
        actor,
        event,
    )
}

/// A log and the handles to write it.
struct Log {
    server: TestServer,
    js: jetstream::Context,
    appender: Appender,
    reader: Reader,
}

async fn log() -> Log {
    let server = TestServer::start_default().await;
    let js = server.jetstream().await;
    ensure_stream(&js, &LogConfig::default()).await.unwrap();
    let reader = Reader::new(js.clone(), cell()).await.unwrap();
    let appender = Appender::new(js.clone(), cell());
    Log {
        server,
        js,
        appender,
        reader,
    }
}

impl Log {
    /// Appends events `from..=to` (pipelined) at log sequences `from..=to`.
    async fn append(&self, from: u64, to: u64) {
        let mut pending = Vec::new();
        for i in from..=to {
            pending.push(self.appender.send(&event(i), i - 1).await.unwrap());
        }
        for p in pending {
            p.ack().await.unwrap();
        }
    }

    fn config(&self, dir: &Path) -> FeedConfig {
        FeedConfig {
            checkpoint_dir: Some(dir.to_path_buf()),
            ..FeedConfig::new(cell())
        }
    }

    /// Runs the feed role on a connection of its own.
    async fn start(&self, config: FeedConfig) -> Role {
        let stop = CancellationToken::new();
        let metrics = FeedMetrics::default();
        let task = tokio::spawn(feed::run(
            self.server.client().await,
            config,
            metrics.clone(),
            stop.clone(),
        ));
        Role {
            stop,
            task,
            metrics,
        }
    }

    /// Waits until the feed stream holds `n` messages, then a little longer to catch any extra.
    async fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.feed_len().await;
            assert!(got <= n, "more feed messages than events: {got} > {n}");
            if got == n {
                break;
            }
            assert!(Instant::now() < deadline, "the feed has {got} of {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(self.feed_len().await, n, "no extra message came");
    }

    async fn feed_len(&self) -> u64 {
        match self.js.get_stream(feed_stream_name(&cell())).await {
            Ok(mut s) => s.info().await.unwrap().state.messages,
            Err(_) => 0,
        }
    }

    /// Every message of the feed stream, in order.
    async fn feed(&self) -> Vec<FeedMsg> {
        let mut stream = self.js.get_stream(feed_stream_name(&cell())).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            let m = stream.direct_get(seq).await.unwrap();
            out.push(FeedMsg {
                subject: m.subject.to_string(),
                header: m.headers.get("Content-Type").map(|v| v.as_str().to_owned()),
                msg_id: m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()),
                body: serde_json::from_slice(&m.payload).unwrap(),
            });
        }
        out
    }
}

struct Role {
    stop: CancellationToken,
    task: JoinHandle<Result<(), FeedError>>,
    metrics: FeedMetrics,
}

impl Role {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().expect("the feed stops cleanly");
    }
}

#[derive(Debug)]
struct FeedMsg {
    subject: String,
    header: Option<String>,
    msg_id: Option<String>,
    body: Value,
}

impl FeedMsg {
    fn sequence(&self) -> u64 {
        self.body["sequence"].as_str().unwrap().parse().unwrap()
    }
}

/// The log sequences the feed republished, in feed order.
fn sequences(feed: &[FeedMsg]) -> Vec<u64> {
    feed.iter().map(FeedMsg::sequence).collect()
}

#[tokio::test]
async fn every_event_once_in_order_as_a_cloudevent() {
    let log = log().await;
    let dir = tempfile::tempdir().unwrap();
    log.append(1, 500).await;
    let role = log.start(log.config(dir.path())).await;
    log.append(501, 1_000).await;
    log.wait_for(1_000).await;

    let feed = log.feed().await;
    assert_eq!(sequences(&feed), (1..=1_000).collect::<Vec<_>>());
    for msg in &feed {
        let seq = msg.sequence();
        let env = event(seq);
        assert_eq!(msg.subject, feed_subject(&cell(), &env.event));
        assert_eq!(msg.header.as_deref(), Some("application/cloudevents+json"));
        assert_eq!(msg.msg_id.as_deref(), Some(env.event_id.as_str()));
        let subject = match &env.event {
            Event::VmDrained { vm_id } => vm_id.to_string(),
            e => e.session_id().unwrap().to_string(),
        };
        let time = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(env.occurred_at as u64),
        )
        .to_string();
        assert_eq!(
            msg.body,
            json!({
                "specversion": "1.0",
                "id": env.event_id,
                "source": "orch/default",
                "type": env.event.event_type().as_str(),
                "subject": subject,
                "time": time,
                "datacontenttype": "application/json",
                "sequence": seq.to_string(),
                "actor": env.actor.to_string(),
                "actorkind": env.actor.kind.as_str(),
                "commandid": env.command_id,
                "data": serde_json::to_value(&env.event).unwrap(),
            })
        );
    }
    assert_eq!(
        feed[1].subject,
        "orch.default.feed.SessionResumed.session.s2"
    );
    assert_eq!(feed[2].subject, "orch.default.feed.SessionEnded.session.s3");
    assert_eq!(feed[4].subject, "orch.default.feed.VmDrained.vm.vm-2");
    assert_eq!(feed[1].body["actor"], "user:u2");
    assert_eq!(feed[2].body["actorkind"], "system");
    assert_eq!(feed[1].body["time"], "2023-11-14T22:13:22.002Z");

    let deadline = Instant::now() + Duration::from_secs(10);
    while role.metrics.lag() != 0 {
        assert!(Instant::now() < deadline, "lag {}", role.metrics.lag());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(role.metrics.republished(), 1_000);
    role.stop().await;
}

/// Reads every message a new durable consumer with `filter` gets, acking each.
async fn consume(log: &Log, name: &str, filter: String) -> Vec<Value> {
    let stream = log.js.get_stream(feed_stream_name(&cell())).await.unwrap();
    let consumer: Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.into()),
            filter_subject: filter,
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer.fetch().max_messages(500).messages().await.unwrap();
        let before = out.len();
        while let Some(msg) = batch.next().await {
            let msg = msg.unwrap();
            out.push(serde_json::from_slice(&msg.payload).unwrap());
            msg.ack().await.unwrap();
        }
        if out.len() == before {
            return out;
        }
    }
}

#[tokio::test]
async fn consumers_filter_by_session_vm_and_type() {
    let log = log().await;
    let dir = tempfile::tempdir().unwrap();
    log.append(1, 300).await;
    let role = log.start(log.config(dir.path())).await;
    log.wait_for(300).await;

    let seqs = |msgs: &[Value]| -> Vec<u64> {
        msgs.iter()
            .map(|m| m["sequence"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let expect = |keep: &dyn Fn(&Event) -> bool| -> Vec<u64> {
        (1..=300).filter(|&i| keep(&event(i).event)).collect()
    };
    let s3 = SessionId::parse("s3").unwrap();
    let by_session = consume(&log, "by-session", feed_session_filter(&cell(), &s3)).await;
    assert_eq!(seqs(&by_session), expect(&|e| e.session_id() == Some(&s3)));
    assert!(!by_session.is_empty());
    assert!(by_session.iter().all(|m| m["subject"] == "s3"));

    let vm = VmId::parse("vm-1").unwrap();
    let by_vm = consume(&log, "by-vm", feed_vm_filter(&cell(), &vm)).await;
    assert_eq!(
        seqs(&by_vm),
        expect(&|e| matches!(e, Event::VmDrained { vm_id } if *vm_id == vm))
    );
    assert!(!by_vm.is_empty());

    let ended = consume(
        &log,
        "ended",
        feed_type_filter(&cell(), EventType::SessionEnded),
    )
    .await;
    assert_eq!(
        seqs(&ended),
        expect(&|e| e.event_type() == EventType::SessionEnded)
    );
    assert!(ended.iter().all(|m| m["type"] == "SessionEnded"));
    role.stop().await;
}

#[tokio::test]
async fn a_role_killed_midway_neither_skips_nor_repeats() {
    let log = log().await;
    let dir = tempfile::tempdir().unwrap();
    log.append(1, 5_000).await;
    let role = log.start(log.config(dir.path())).await;
    // Kill it (no clean stop, no checkpoint saved) once part of the log is out.
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.feed_len().await < 500 {
        assert!(Instant::now() < deadline, "the feed does not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    role.task.abort();
    let _ = role.task.await;
    let at_kill = log.feed_len().await;
    println!("killed with {at_kill} of 5000 republished");

    log.append(5_001, 6_000).await;
    let role = log.start(log.config(dir.path())).await;
    log.wait_for(6_000).await;
    role.stop().await;
    assert_eq!(
        sequences(&log.feed().await),
        (1..=6_000).collect::<Vec<_>>()
    );

    // Stopped cleanly, its checkpoint file gone: the feed stream alone says where it was.
    std::fs::remove_file(dir.path().join("default.checkpoint")).unwrap();
    log.append(6_001, 6_500).await;
    let role = log.start(log.config(dir.path())).await;
    log.wait_for(6_500).await;
    role.stop().await;
    let feed = log.feed().await;
    assert_eq!(sequences(&feed), (1..=6_500).collect::<Vec<_>>());
    let ids: Vec<String> = feed.iter().map(|m| m.msg_id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=6_500).map(|i| format!("evt-{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn two_roles_at_once_publish_each_event_once() {
    let log = log().await;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    log.append(1, 1_000).await;
    let a = log.start(log.config(a_dir.path())).await;
    let b = log.start(log.config(b_dir.path())).await;
    log.append(1_001, 3_000).await;
    log.wait_for(3_000).await;
    a.stop().await;
    b.stop().await;
    assert_eq!(
        sequences(&log.feed().await),
        (1..=3_000).collect::<Vec<_>>()
    );
}

/// Publishes `payload` on a session subject as a writer would (with the expected sequence).
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
async fn foreign_and_quarantined_messages_have_no_feed_message() {
    let log = log().await;
    let dir = tempfile::tempdir().unwrap();
    log.append(1, 3).await;
    // 4: a stray publish onto the event subjects (foreign); 5: a writer's message no one can read.
    log.js
        .publish("orch.default.evt.session.zzz", Bytes::from_static(b"hello"))
        .await
        .unwrap()
        .await
        .unwrap();
    publish_as_writer(&log.js, 4, b"\x07garbage").await;
    log.append(6, 8).await;
    let role = log.start(log.config(dir.path())).await;

    // Like every reader, the feed holds at the undecodable event...
    log.wait_for(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sequences(&log.feed().await), [1, 2, 3], "held at 5");

    // ...until an operator quarantines it (the record is log sequence 9); then it goes on past it.
    let record = quarantine(
        &log.js,
        &log.reader,
        5,
        "corrupt",
        Actor::operator("ops"),
        0,
    )
    .await
    .unwrap();
    assert_eq!(record, 9);
    let mut tail = event(10);
    tail.event_id = "evt-10".into();
    log.appender.append(&tail, 9).await.unwrap();
    log.wait_for(7).await;
    assert_eq!(sequences(&log.feed().await), [1, 2, 3, 6, 7, 8, 10]);
    role.stop().await;
}

#[tokio::test]
async fn the_feed_stream_has_the_configured_retention() {
    let log = log().await;
    let dir = tempfile::tempdir().unwrap();
    log.append(1, 10).await;
    let config = FeedConfig {
        max_age: Duration::from_secs(3_600),
        max_bytes: Some(64 << 20),
        ..log.config(dir.path())
    };
    let role = log.start(config.clone()).await;
    log.wait_for(10).await;
    role.stop().await;
    let mut stream = log.js.get_stream("ORCH_DEFAULT_FEED").await.unwrap();
    let c = stream.info().await.unwrap().config.clone();
    assert_eq!(c.subjects, ["orch.default.feed.>"]);
    assert_eq!(c.max_age, Duration::from_secs(3_600));
    assert_eq!(c.max_bytes, 64 << 20);
    assert_eq!(c.num_replicas, 1);
    assert_eq!(c.duplicate_window, Duration::from_secs(120));
    assert_eq!(c.storage, jetstream::stream::StorageType::File);
    assert!(c.deny_delete && c.deny_purge);

    // Other flags at the next start: the retention follows them, the messages stay.
    let config = FeedConfig {
        max_age: Duration::from_secs(60),
        max_bytes: None,
        ..config
    };
    let role = log.start(config).await;
    log.append(11, 12).await;
    log.wait_for(12).await;
    role.stop().await;
    let c = stream.info().await.unwrap().config.clone();
    assert_eq!(c.max_age, Duration::from_secs(60));
    assert_eq!(c.max_bytes, -1);
    assert_eq!(
        c.duplicate_window,
        Duration::from_secs(60),
        "at most the age"
    );
    assert_eq!(sequences(&log.feed().await), (1..=12).collect::<Vec<_>>());

    // Deleted, it is rebuilt from the start of the log.
    log.js.delete_stream("ORCH_DEFAULT_FEED").await.unwrap();
    let role = log.start(log.config(dir.path())).await;
    log.wait_for(12).await;
    role.stop().await;
    assert_eq!(sequences(&log.feed().await), (1..=12).collect::<Vec<_>>());
}
