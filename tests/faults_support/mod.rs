//! Shared by the fault tests (`faults_*.rs`): commands, reading and replaying the log with its
//! checks (each command id at most once, no VM over capacity at any point), `verify` until clean,
//! and the `orchestrator` binary as a child process.
#![allow(dead_code, unused_imports)]

mod load;
pub use load::*;

pub use std::collections::{BTreeMap, BTreeSet};
pub use std::path::Path;
pub use std::process::Stdio;
pub use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
pub use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

pub use crate::common::TestServer;
pub use futures::StreamExt;
pub use orchestrator::admin::{self, WriterStateReport};
pub use orchestrator::client::CommandClient;
pub use orchestrator::domain::command::{AssignVm, EndSession, RegisterVm, StartSession};
pub use orchestrator::domain::Command;
pub use orchestrator::log::{self, Appender, LogError, Reader, StoredEvent};
pub use orchestrator::projections::{projector, Projections};
pub use orchestrator::writer::{self, Reply, WriterConfig};
pub use orchestrator_events::{
    Actor, CellId, CommandId, EndReason, Envelope, Event, SessionId, VmId,
};
pub use tokio::task::JoinHandle;
pub use tokio_util::sync::CancellationToken;

/// Logs to the test's output, filtered by `RUST_LOG` (nothing unless it is set).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    since.as_millis() as i64
}

pub fn cell() -> CellId {
    CellId::default_cell()
}

pub fn actor() -> Actor {
    Actor::service("faults")
}

pub fn cid(id: &str) -> CommandId {
    CommandId::parse(id).unwrap()
}

pub fn register(vm: &str, capacity: u32) -> Command {
    Command::RegisterVm(RegisterVm {
        endpoint: None,
        heartbeat_ms: None,
        vm_id: vm.parse().unwrap(),
        capacity,
        labels: Default::default(),
    })
}

pub fn start(session: &str, user: &str) -> Command {
    Command::StartSession(StartSession {
        session_id: Some(session.parse().unwrap()),
        user_id: user.parse().unwrap(),
        game_id: "g1".parse().unwrap(),
        requirements: Default::default(),
    })
}

pub fn assign(session: &str) -> Command {
    Command::AssignVm(AssignVm {
        wait_ms: None,
        session_id: session.parse().unwrap(),
        vm_id: None,
        policy: None,
    })
}

pub fn end(session: &str) -> Command {
    Command::EndSession(EndSession {
        session_id: session.parse().unwrap(),
        reason: EndReason::User,
    })
}

pub fn accepted(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Accepted { seq, .. } => Some(*seq),
        Reply::Rejected { .. } => None,
    }
}

pub fn code(reply: &Reply) -> &str {
    match reply {
        Reply::Rejected { code, .. } => code,
        Reply::Accepted { .. } => "accepted",
    }
}

/// Sends `command` like a client that retries with the same command id until it gets an answer
/// that is not "unavailable", or `deadline` passes.
pub async fn send_until_answered(
    commands: &CommandClient,
    id: &str,
    command: &Command,
    deadline: Instant,
) -> Reply {
    let mut last = String::new();
    while Instant::now() < deadline {
        match commands.send(&cid(id), &actor(), command).await {
            Ok(reply) if code(&reply) != "unavailable" => return reply,
            Ok(reply) => last = format!("{reply:?}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("command {id} got no answer in time; last: {last}");
}

/// Every event in the log, in order. Retries for a while on an error, since a cluster may answer
/// "JetStream system temporarily unavailable" while a thawed or restarted node rejoins.
pub async fn read_log(client: &async_nats::Client) -> Vec<StoredEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_read_log(client).await {
            Ok(all) => return all,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "reading the log, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot read the log: {e}"),
        }
    }
}

async fn try_read_log(client: &async_nats::Client) -> Result<Vec<StoredEvent>, LogError> {
    let reader = Reader::new(async_nats::jetstream::new(client.clone()), cell()).await?;
    let (last, mut events) = reader.read_to_end(1).await?;
    let mut all = Vec::new();
    while let Some(ev) = events.next().await {
        all.push(ev?);
    }
    assert_eq!(
        all.len() as u64,
        last,
        "the replay stops short of the stream's last sequence"
    );
    Ok(all)
}

pub async fn last_seq(client: &async_nats::Client) -> u64 {
    Reader::new(async_nats::jetstream::new(client.clone()), cell())
        .await
        .unwrap()
        .last_seq()
        .await
        .unwrap()
}

/// What a replay of the log says, after checking, event by event, that no command id appears twice,
/// no session is placed twice, and no VM ever holds more sessions than its capacity.
pub struct Replayed {
    /// Command id → the sequence of its event.
    pub by_command: BTreeMap<String, u64>,
    /// VM → (capacity, sessions held at the end).
    pub vms: BTreeMap<VmId, (u32, u32)>,
    pub last: u64,
}

pub fn replay(events: &[StoredEvent]) -> Replayed {
    let mut by_command = BTreeMap::new();
    let mut vms: BTreeMap<VmId, (u32, u32)> = BTreeMap::new();
    let mut placed: BTreeMap<SessionId, VmId> = BTreeMap::new();
    for (i, ev) in events.iter().enumerate() {
        let seq = ev.seq;
        assert_eq!(seq, i as u64 + 1, "gap in the log");
        let env = &ev.envelope;
        if let Some(first) = by_command.insert(env.command_id.clone(), seq) {
            panic!(
                "command {} applied twice: at {first} and at {seq}",
                env.command_id
            );
        }
        match &env.event {
            Event::VmRegistered {
                vm_id, capacity, ..
            } => {
                assert!(
                    vms.insert(vm_id.clone(), (*capacity, 0)).is_none(),
                    "{vm_id} registered twice"
                );
            }
            Event::SessionAssigned {
                session_id, vm_id, ..
            } => {
                let before = placed.insert(session_id.clone(), vm_id.clone());
                assert!(before.is_none(), "{session_id} placed twice (seq {seq})");
                let (capacity, used) = vms.get_mut(vm_id).expect("placed on a registered VM");
                *used += 1;
                assert!(
                    *used <= *capacity,
                    "{vm_id} holds {used} > capacity {capacity} at seq {seq}"
                );
            }
            Event::SessionEnded {
                session_id,
                vm_id: Some(vm),
                ..
            } => {
                assert_eq!(
                    placed.get(session_id),
                    Some(vm),
                    "{session_id} ended on another VM"
                );
                vms.get_mut(vm).expect("a registered VM").1 -= 1;
            }
            _ => {}
        }
    }
    Replayed {
        by_command,
        vms,
        last: events.len() as u64,
    }
}

/// Asks `writer_state` once and collects every answer for a while: the holders of the writers
/// that serve as the active one.
pub async fn active_writers(client: &async_nats::Client) -> Vec<String> {
    writer_states(client)
        .await
        .into_iter()
        .map(|report| report.holder)
        .collect()
}

/// Asks `writer_state` once and collects every answer for a while: the reports of the writers that
/// serve as the active one.
pub async fn writer_states(client: &async_nats::Client) -> Vec<WriterStateReport> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(admin::writer_subject(&cell()), inbox, Default::default())
        .await
        .unwrap();
    let mut reports = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(400);
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, sub.next()).await {
        reports.push(serde_json::from_slice(&msg.payload).unwrap());
    }
    reports
}

/// Who the KV lease names as the cell's writer (`None`: absent or released).
pub async fn lease_holder(client: &async_nats::Client) -> Option<String> {
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value(log::DEFAULT_LEASE_BUCKET).await.unwrap();
    let entry = kv.entry(log::lease::lease_key(&cell())).await.unwrap()?;
    let record: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
    (record["expires_at_ms"].as_i64() != Some(0))
        .then(|| record["holder"].as_str().unwrap().to_owned())
}

/// A projector (with its `verify` responder) following the log into a store under `dir`.
pub async fn spawn_projector(
    client: &async_nats::Client,
    dir: &Path,
    stop: &CancellationToken,
) -> (Projections, JoinHandle<()>) {
    let (store, _) = Projections::open(dir).unwrap();
    let reader = Reader::new(async_nats::jetstream::new(client.clone()), cell())
        .await
        .unwrap();
    let run = tokio::spawn(projector::run(reader.clone(), store.clone(), stop.clone()));
    let responder = tokio::spawn(admin::serve_projections(
        client.clone(),
        reader,
        store.clone(),
        stop.clone(),
    ));
    let handle = tokio::spawn(async move {
        run.await
            .unwrap()
            .expect("the projector runs until stopped");
        responder
            .await
            .unwrap()
            .expect("the verify responder runs until stopped");
    });
    (store, handle)
}

/// Calls `verify` until it is clean with the projections at `seq`, or panics with its last report.
pub async fn verify_clean_at(client: &async_nats::Client, seq: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let report = admin::verify(client, &cell(), Duration::from_secs(2))
            .await
            .unwrap();
        let at = report.projections.as_ref().map(|p| p.checkpoint);
        let writer_at = report.writer.as_ref().map(|(w, _)| w.last_seq);
        if report.is_clean() && at == Some(seq) && writer_at == Some(seq) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "verify not clean at seq {seq}:\n{report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `orchestrator` binary, serving the writer and projector roles against `url`.
pub struct Orchestrator {
    pub child: tokio::process::Child,
    pub log: std::path::PathBuf,
}

impl Orchestrator {
    pub fn spawn(url: &str, data_dir: &Path, run: usize) -> Orchestrator {
        Orchestrator::spawn_with(url, data_dir, run, &[])
    }

    /// [`Orchestrator::spawn`] with more `serve` arguments (`--replicas 3` on a cluster).
    pub fn spawn_with(url: &str, data_dir: &Path, run: usize, extra: &[&str]) -> Orchestrator {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.join(format!("orchestrator-{run}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["serve", "--nats-url", url, "--data-dir"])
            .arg(data_dir)
            .args([
                "--role",
                "writer,projector",
                "--lease-ttl",
                "1s",
                "--group-commit",
                "on",
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("the orchestrator binary starts");
        Orchestrator { child, log }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its output if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("orchestrator exited with {status}:\n{}", self.output());
        }
    }

    /// Waits until its writer answers a command.
    pub async fn wait_serving(
        &mut self,
        commands: &CommandClient,
        id: &str,
        command: &Command,
    ) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.assert_running();
            match commands.send(&cid(id), &actor(), command).await {
                Ok(reply) if code(&reply) != "unavailable" => return reply,
                _ if Instant::now() > deadline => {
                    panic!("orchestrator never served:\n{}", self.output())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// One of the burst's commands: task `i` starts session `k{i}`, then places it.
pub fn burst_command(n: usize) -> (String, Command) {
    let i = n / 2;
    if n % 2 == 0 {
        (
            format!("k-start-{i}"),
            start(&format!("k{i}"), &format!("ku{i}")),
        )
    } else {
        (format!("k-assign-{i}"), assign(&format!("k{i}")))
    }
}
