//! No single message stops a cell: a poison command, a foreign message in the stream, an event no
//! reader can decode (until it is quarantined), and a writer stopping with appends that failed.

mod common;

use std::time::Duration;

use common::TestServer;
use orchestrator::admin;
use orchestrator::client::{ClientError, CommandClient};
use orchestrator::domain::command::VmRef;
use orchestrator::domain::{Command, CommandRequest, DomainConfig};
use orchestrator::log::quarantine::quarantine;
use orchestrator::log::{Reader, SkipReason};
use orchestrator::projections::{projector, Projections};
use orchestrator::writer::recovery::{snapshot_path, snapshot_seq};
use orchestrator::writer::{self, Reply, WriterConfig};
use orchestrator_events::{Actor, CellId, CommandId, VmId};
use tokio_util::sync::CancellationToken;

struct Cell {
    _server: TestServer,
    client: async_nats::Client,
    commands: CommandClient,
    store: Projections,
    stop: CancellationToken,
    data: tempfile::TempDir,
}

fn cell_id() -> CellId {
    CellId::default_cell()
}

/// A writer (lease lifetime 1 s), a projector and its `verify` responder on a fresh server.
async fn cell() -> Cell {
    cell_with(DomainConfig::default()).await
}

async fn cell_with(domain: DomainConfig) -> Cell {
    let server = TestServer::start_default().await;
    let client = server.client().await;
    let data = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mut config = WriterConfig::new(cell_id());
    config.domain = domain;
    config.lease_ttl = Duration::from_secs(1);
    config.data_dir = Some(data.path().to_path_buf());
    tokio::spawn(writer::run(client.clone(), config, stop.clone()));
    let commands = CommandClient::new(client.clone(), cell_id(), Duration::from_secs(5));
    let (store, _) = Projections::open(&data.path().join("projections")).unwrap();
    let c = Cell {
        _server: server,
        client,
        commands,
        store,
        stop,
        data,
    };
    c.register("vm-0").await;
    let reader = c.reader().await;
    tokio::spawn(projector::run(
        reader.clone(),
        c.store.clone(),
        c.stop.clone(),
    ));
    tokio::spawn(admin::serve_projections(
        c.client.clone(),
        reader,
        c.store.clone(),
        c.stop.clone(),
    ));
    c
}

impl Cell {
    async fn reader(&self) -> Reader {
        Reader::new(async_nats::jetstream::new(self.client.clone()), cell_id())
            .await
            .unwrap()
    }

    async fn send(&self, vm: &str) -> Result<Reply, ClientError> {
        let id = CommandId::parse(format!("register-{vm}")).unwrap();
        let command = Command::RegisterVm(orchestrator::domain::command::RegisterVm {
            endpoint: None,
            heartbeat_ms: None,
            vm_id: VmId::parse(vm).unwrap(),
            capacity: 1,
            labels: Default::default(),
        });
        self.commands
            .send(&id, &Actor::operator("ops"), &command)
            .await
    }

    /// Registers a VM, retrying while no writer answers (at start, or after a step-down).
    async fn register(&self, vm: &str) -> u64 {
        for _ in 0..300 {
            match self.send(vm).await {
                Ok(Reply::Accepted { seq, .. }) => return seq,
                Ok(Reply::Rejected { code, .. }) if code == "unavailable" => {}
                Ok(other) => panic!("registering {vm}: {other:?}"),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no writer accepted {vm}");
    }

    /// Asserts that another holder can take the writer lease within `within`.
    async fn lease_is_free(&self, within: Duration) {
        let js = async_nats::jetstream::new(self.client.clone());
        let kv =
            orchestrator::log::ensure_lease_bucket(&js, orchestrator::log::DEFAULT_LEASE_BUCKET, 1)
                .await
                .unwrap();
        let (cell, cancel) = (cell_id(), CancellationToken::new());
        let probe =
            orchestrator::log::Lease::acquire(&kv, &cell, "probe", Duration::from_secs(1), &cancel);
        tokio::time::timeout(within, probe)
            .await
            .expect("the writer gave up the lease")
            .unwrap();
    }

    async fn last_seq(&self) -> u64 {
        self.reader().await.last_seq().await.unwrap()
    }

    async fn projected(&self, seq: u64) {
        self.store
            .wait_for(seq, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("the projections reach {seq}: {e}"));
    }

    /// Publishes `payload` as a writer would (the expected sequence names the last one), so the
    /// stream stores it as the writer's.
    async fn publish_as_writer(&self, payload: &'static [u8]) -> u64 {
        let last = self.last_seq().await;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Expected-Last-Sequence", last.to_string().as_str());
        let js = async_nats::jetstream::new(self.client.clone());
        js.publish_with_headers("orch.default.evt.vm.vm-0", headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A postcard request just under the 64 KiB request limit whose event would be just over the
/// 64 KiB event limit: refused on its own, and the next command goes through.
#[tokio::test]
async fn a_poison_command_is_refused_and_the_cell_goes_on() {
    let c = cell().await;
    let mut actor_len = 65_000;
    let body = loop {
        let request = CommandRequest {
            command_id: CommandId::parse("poison").unwrap(),
            actor: Actor::service("x".repeat(actor_len)),
            command: VmRef {
                vm_id: VmId::parse("vm-0").unwrap(),
            },
        };
        let body = postcard::to_stdvec(&request).unwrap();
        if body.len() >= orchestrator::writer::protocol::MAX_REQUEST_BYTES - 8 {
            break body;
        }
        actor_len += 1;
    };
    assert!(body.len() <= orchestrator::writer::protocol::MAX_REQUEST_BYTES);
    let reply = c
        .commands
        .send_raw("vm_drain", body, None)
        .await
        .expect("the poison command is answered");
    assert!(
        matches!(&reply, Reply::Rejected { code, .. } if code != "unavailable"),
        "refused for good, not 'retry later': {reply:?}"
    );
    let before = c.last_seq().await;
    let seq = match c.send("vm-1").await.expect("answered") {
        Reply::Accepted { seq, .. } => seq,
        other => panic!("the next command is accepted: {other:?}"),
    };
    assert_eq!(seq, before + 1, "the poison command appended nothing");
}

/// A core publish of `hello` onto the event subjects lands in the stream: every reader skips it,
/// the writer goes on and starts again over it, and `verify` lists it.
#[tokio::test]
async fn a_foreign_message_stops_nothing() {
    let c = cell().await;
    c.client
        .publish("orch.default.evt.session.zzz", "hello".into())
        .await
        .unwrap();
    c.client.flush().await.unwrap();
    let foreign = 2;
    let seq = c.register("vm-1").await;
    assert_eq!(seq, foreign + 1, "decided after the foreign message");
    c.projected(seq).await;
    assert_eq!(c.store.vms().unwrap().len(), 2);

    let report = admin::verify(&c.client, &cell_id(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert_eq!(report.skipped[0].seq, foreign);
    assert_eq!(report.skipped[0].why, SkipReason::Foreign);
    assert!(report.to_string().contains("foreign"), "{report}");

    // A writer starting over the log starts (it once refused to).
    let mut config = WriterConfig::new(cell_id());
    config.lease_ttl = Duration::from_secs(1);
    let reader = c.reader().await;
    let (state, _, _) = writer::recovery::recover(&reader, &config.domain, None)
        .await
        .expect("recovery skips the foreign message");
    assert_eq!(state.last_seq, seq);
}

/// An event carrying the writer's header that no reader can decode: the writer gives up its lease
/// instead of looping, the projector holds there; once an operator quarantines it, both go on by
/// themselves.
#[tokio::test]
async fn an_undecodable_event_holds_the_cell_until_quarantined() {
    let c = cell().await;
    c.projected(1).await;
    let bad = c.publish_as_writer(b"\x07not an envelope").await;
    assert_eq!(bad, 2);
    // The writer's next append finds the stream moved, recovers, cannot read it, steps down.
    let answer = c.send("vm-1").await;
    assert!(
        !matches!(answer, Ok(Reply::Accepted { .. })),
        "nothing is decided past an unreadable event: {answer:?}"
    );
    // It gave up the lease: another holder takes it at once.
    c.lease_is_free(Duration::from_secs(3)).await;
    let js = async_nats::jetstream::new(c.client.clone());
    assert_eq!(c.store.checkpoint(), 1, "the projector holds before it");

    let reader = c.reader().await;
    let record = quarantine(&js, &reader, bad, "corrupt", Actor::operator("ops"), 0)
        .await
        .unwrap();
    let seq = c.register("vm-1").await;
    assert!(seq > record, "decided after the quarantine record");
    c.projected(seq).await;
    assert_eq!(c.store.vms().unwrap().len(), 2);
    let report = admin::verify(&c.client, &cell_id(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(
        report.to_string().contains("quarantined by the record at"),
        "{report}"
    );
}

/// A writer that stops while its appends fail saves no snapshot of state the log does not hold.
#[tokio::test]
async fn a_snapshot_holds_confirmed_state_only() {
    let c = cell().await;
    assert_eq!(c.last_seq().await, 1);
    // Appends now fail: the stream is gone.
    let js = async_nats::jetstream::new(c.client.clone());
    js.delete_stream("ORCH_DEFAULT").await.unwrap();
    let answer = c.send("vm-1").await;
    assert!(!matches!(answer, Ok(Reply::Accepted { .. })), "{answer:?}");
    c.stop.cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let path = snapshot_path(c.data.path(), &cell_id());
    let saved = snapshot_seq(&path, &cell_id());
    assert!(
        saved.is_none_or(|seq| seq <= 1),
        "a snapshot at {saved:?} holds an event the log never stored"
    );
}

/// A command id reused after the writer's idempotency window but within the server's duplicate
/// window is decided again and stored: the server never takes the new event for the old one (the
/// message id is the event id), so the writer does not loop on a duplicate ack.
#[tokio::test]
async fn a_command_id_past_the_idempotency_window_is_decided_again() {
    let c = cell_with(DomainConfig {
        idempotency_window_ms: 1,
        ..DomainConfig::default()
    })
    .await;
    let user = Actor::user("u1");
    let session = orchestrator_events::SessionId::parse("s1").unwrap();
    let send = |id: &'static str, command: Command| {
        let commands = c.commands.clone();
        let user = user.clone();
        async move {
            match commands
                .send(&CommandId::parse(id).unwrap(), &user, &command)
                .await
            {
                Ok(Reply::Accepted { seq, duplicate, .. }) => (seq, duplicate),
                other => panic!("{id}: {other:?}"),
            }
        }
    };
    let session_ref = || orchestrator::domain::command::SessionRef {
        session_id: session.clone(),
    };
    send(
        "start",
        Command::StartSession(orchestrator::domain::command::StartSession {
            session_id: Some(session.clone()),
            user_id: "u1".parse().unwrap(),
            game_id: "g".parse().unwrap(),
            requirements: Default::default(),
        }),
    )
    .await;
    send(
        "assign",
        Command::AssignVm(orchestrator::domain::command::AssignVm {
            wait_ms: None,
            session_id: session.clone(),
            vm_id: None,
            policy: None,
        }),
    )
    .await;
    let (first, _) = send("pause", Command::PauseSession(session_ref())).await;
    send("resume", Command::ResumeSession(session_ref())).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (again, duplicate) = tokio::time::timeout(
        Duration::from_secs(10),
        send("pause", Command::PauseSession(session_ref())),
    )
    .await
    .expect("answered, not looping");
    assert!(!duplicate);
    assert_eq!(again, first + 2, "a new event after the resume");
}

/// A log that refuses every append (here: a stream limited to the events it holds, discarding new
/// ones): after a few recoveries that store nothing, the writer gives up its lease instead of
/// holding the cell.
#[tokio::test]
async fn a_writer_that_cannot_store_anything_gives_up_its_lease() {
    let c = cell().await;
    let js = async_nats::jetstream::new(c.client.clone());
    let mut stream = js.get_stream("ORCH_DEFAULT").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_messages = 1;
    config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    js.update_stream(config).await.unwrap();
    for i in 0..(writer::MAX_FRUITLESS_RECOVERIES + 2) {
        let answer = c.send(&format!("vm-{}", i + 1)).await;
        assert!(
            !matches!(answer, Ok(Reply::Accepted { .. })),
            "nothing can be stored: {answer:?}"
        );
    }
    c.lease_is_free(Duration::from_secs(5)).await;
}
