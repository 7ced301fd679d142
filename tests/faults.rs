//! Faults on the one write path, end to end against a real nats-server: two writers at once (one
//! active, the standby taking over from a dead one, a stale one fenced by the log), the
//! orchestrator process killed with SIGKILL in the middle of a burst and restarted, and the
//! nats-server restarted in the middle of a run.
//!
//! Every test checks the log itself: each command id at most once, every acknowledged event where
//! its reply said, no VM over capacity at any point of a replay, and `verify` clean.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use futures::StreamExt;
use orchestrator::admin::{self, WriterStateReport};
use orchestrator::client::CommandClient;
use orchestrator::domain::command::{AssignVm, EndSession, RegisterVm, StartSession};
use orchestrator::domain::Command;
use orchestrator::log::{self, Appender, LogError, Reader, StoredEvent};
use orchestrator::projections::{projector, Projections};
use orchestrator::writer::{self, Reply, WriterConfig};
use orchestrator_events::{Actor, CellId, CommandId, EndReason, Envelope, Event, SessionId, VmId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Logs to the test's output, filtered by `RUST_LOG` (nothing unless it is set).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    since.as_millis() as i64
}

fn cell() -> CellId {
    CellId::default_cell()
}

fn actor() -> Actor {
    Actor::service("faults")
}

fn cid(id: &str) -> CommandId {
    CommandId::parse(id).unwrap()
}

fn register(vm: &str, capacity: u32) -> Command {
    Command::RegisterVm(RegisterVm {
        vm_id: vm.parse().unwrap(),
        capacity,
        labels: Default::default(),
    })
}

fn start(session: &str, user: &str) -> Command {
    Command::StartSession(StartSession {
        session_id: Some(session.parse().unwrap()),
        user_id: user.parse().unwrap(),
        game_id: "g1".parse().unwrap(),
        requirements: Default::default(),
    })
}

fn assign(session: &str) -> Command {
    Command::AssignVm(AssignVm {
        session_id: session.parse().unwrap(),
        vm_id: None,
        policy: None,
    })
}

fn end(session: &str) -> Command {
    Command::EndSession(EndSession {
        session_id: session.parse().unwrap(),
        reason: EndReason::User,
    })
}

fn accepted(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Accepted { seq, .. } => Some(*seq),
        Reply::Rejected { .. } => None,
    }
}

fn code(reply: &Reply) -> &str {
    match reply {
        Reply::Rejected { code, .. } => code,
        Reply::Accepted { .. } => "accepted",
    }
}

/// Sends `command` like a client that retries with the same command id until it gets an answer
/// that is not "unavailable", or `deadline` passes.
async fn send_until_answered(
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

/// Every event in the log, in order.
async fn read_log(client: &async_nats::Client) -> Vec<StoredEvent> {
    let reader = Reader::new(async_nats::jetstream::new(client.clone()), cell())
        .await
        .unwrap();
    let (last, mut events) = reader.read_to_end(1).await.unwrap();
    let mut all = Vec::new();
    while let Some(ev) = events.next().await {
        all.push(ev.unwrap());
    }
    assert_eq!(
        all.len() as u64,
        last,
        "the replay stops short of the stream's last sequence"
    );
    all
}

async fn last_seq(client: &async_nats::Client) -> u64 {
    Reader::new(async_nats::jetstream::new(client.clone()), cell())
        .await
        .unwrap()
        .last_seq()
        .await
        .unwrap()
}

/// What a replay of the log says, after checking, event by event, that no command id appears twice,
/// no session is placed twice, and no VM ever holds more sessions than its capacity.
struct Replayed {
    /// Command id → the sequence of its event.
    by_command: BTreeMap<String, u64>,
    /// VM → (capacity, sessions held at the end).
    vms: BTreeMap<VmId, (u32, u32)>,
    last: u64,
}

fn replay(events: &[StoredEvent]) -> Replayed {
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
async fn active_writers(client: &async_nats::Client) -> Vec<String> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(admin::writer_subject(&cell()), inbox, Default::default())
        .await
        .unwrap();
    let mut holders = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(400);
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, sub.next()).await {
        let report: WriterStateReport = serde_json::from_slice(&msg.payload).unwrap();
        holders.push(report.holder);
    }
    holders
}

/// Who the KV lease names as the cell's writer (`None`: absent or released).
async fn lease_holder(client: &async_nats::Client) -> Option<String> {
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value(log::DEFAULT_LEASE_BUCKET).await.unwrap();
    let entry = kv.entry(log::lease::lease_key(&cell())).await.unwrap()?;
    let record: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
    (record["expires_at_ms"].as_i64() != Some(0))
        .then(|| record["holder"].as_str().unwrap().to_owned())
}

/// A projector (with its `verify` responder) following the log into a store under `dir`.
async fn spawn_projector(
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
async fn verify_clean_at(client: &async_nats::Client, seq: u64, within: Duration) {
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

/// Two writers with distinct holders race for one cell: exactly one serves while the other stands
/// by; a burst of concurrent placements never overfills a VM; when the active writer dies (without
/// releasing its lease) the standby takes over and carries on from the same state; and an append by
/// a writer whose state is behind is refused by the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_writer_standby_takes_over_and_a_stale_writer_is_fenced() {
    init_tracing();
    let server = TestServer::start_default().await;
    let stop = CancellationToken::new();
    let mut writers = BTreeMap::new();
    for holder in ["writer-a", "writer-b"] {
        let config = WriterConfig {
            holder_id: holder.to_owned(),
            lease_ttl: Duration::from_secs(1),
            ..WriterConfig::new(cell())
        };
        // Each writer on its own connection, as two processes would be.
        let task = tokio::spawn(writer::run(server.client().await, config, stop.clone()));
        writers.insert(holder.to_owned(), task);
    }
    let client = server.client().await;
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(5));
    let soon = || Instant::now() + Duration::from_secs(10);
    const CAPACITY: u32 = 2;
    let mut acks: Vec<(String, u64)> = Vec::new();
    for vm in ["vm-1", "vm-2", "vm-3"] {
        let id = format!("register-{vm}");
        let reply = send_until_answered(&commands, &id, &register(vm, CAPACITY), soon()).await;
        acks.push((id, accepted(&reply).expect("VM registered")));
    }
    let (store, projector_task) =
        spawn_projector(&client, &server.dir().join("projections"), &stop).await;

    let active = lease_holder(&client)
        .await
        .expect("a writer holds the lease");
    assert_eq!(
        active_writers(&client).await,
        vec![active.clone()],
        "one active writer, the lease's holder"
    );

    // The burst: every session starts, then tries to get a VM until it gets one (a handful of
    // tries); half of those placed end at once, freeing their slot for the others.
    const SESSIONS: usize = 40;
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let s = format!("s{i}");
            let id = format!("start-{i}");
            let reply = commands
                .send(&cid(&id), &actor(), &start(&s, &format!("u{i}")))
                .await
                .unwrap();
            acks.push((
                id,
                accepted(&reply).unwrap_or_else(|| panic!("start {i}: {reply:?}")),
            ));
            for attempt in 0..5 {
                let id = format!("assign-{i}-{attempt}");
                let reply = commands
                    .send(&cid(&id), &actor(), &assign(&s))
                    .await
                    .unwrap();
                match accepted(&reply) {
                    Some(seq) => {
                        acks.push((id, seq));
                        if i % 2 == 0 {
                            let id = format!("end-{i}");
                            let reply = commands.send(&cid(&id), &actor(), &end(&s)).await.unwrap();
                            acks.push((
                                id,
                                accepted(&reply).unwrap_or_else(|| panic!("end {i}: {reply:?}")),
                            ));
                        }
                        break;
                    }
                    None => {
                        assert_eq!(code(&reply), "no_capacity", "assign {i}: {reply:?}");
                        tokio::time::sleep(Duration::from_millis(1 + (i % 7) as u64)).await;
                    }
                }
            }
            acks
        }));
    }
    for t in tasks {
        acks.extend(t.await.unwrap());
    }

    // Every reply of the burst names its own sequence, and together they are the whole log.
    let last = last_seq(&client).await;
    let seqs: BTreeSet<u64> = acks.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        seqs.len(),
        acks.len(),
        "two replies named the same sequence"
    );
    assert_eq!(
        seqs,
        (1..=last).collect(),
        "the replies' sequences are not exactly the log"
    );
    let log = replay(&read_log(&client).await);
    for (id, seq) in &acks {
        assert_eq!(
            log.by_command.get(id),
            Some(seq),
            "{id} is not at the sequence its reply said"
        );
    }
    store.wait_for(last, Duration::from_secs(10)).await.unwrap();
    for vm in store.vms().unwrap() {
        assert!(
            vm.used <= vm.capacity,
            "projection: {} holds {} > {}",
            vm.vm_id,
            vm.used,
            vm.capacity
        );
        assert_eq!(
            vm.used, log.vms[&vm.vm_id].1,
            "projection and replay disagree on {}",
            vm.vm_id
        );
    }
    assert_eq!(
        active_writers(&client).await,
        vec![active.clone()],
        "still one active writer"
    );

    // The active writer dies: its task is aborted, so it neither releases the lease nor answers.
    let standby = writers.keys().find(|h| **h != active).unwrap().clone();
    let dead = writers.remove(&active).unwrap();
    dead.abort();
    assert!(dead.await.unwrap_err().is_cancelled());
    let died = Instant::now();
    // A request can still reach the dead writer's subscription before its connection is gone: a
    // client with a short timeout retries sooner.
    let impatient = CommandClient::new(client.clone(), cell(), Duration::from_millis(500));
    let reply = send_until_answered(
        &impatient,
        "after-start-0",
        &start("after-0", "ua0"),
        soon(),
    )
    .await;
    let took_over = died.elapsed();
    assert_eq!(
        accepted(&reply),
        Some(last + 1),
        "the sequence continues: {reply:?}"
    );
    println!("standby took over {took_over:?} after the active writer died (lease TTL 1 s)");
    assert_eq!(lease_holder(&client).await, Some(standby.clone()));
    assert_eq!(active_writers(&client).await, vec![standby.clone()]);

    // The standby has the dead writer's state: retries get their first result, and it places
    // exactly as many sessions as there are free slots, then refuses.
    for (id, seq) in acks
        .iter()
        .filter(|(id, _)| id.starts_with("start-") || id.starts_with("assign-"))
        .take(6)
    {
        let i: usize = id.split('-').nth(1).unwrap().parse().unwrap();
        let command = if id.starts_with("start-") {
            start(&format!("s{i}"), &format!("u{i}"))
        } else {
            assign(&format!("s{i}"))
        };
        let reply = commands.send(&cid(id), &actor(), &command).await.unwrap();
        match reply {
            Reply::Accepted {
                seq: again,
                duplicate,
                ..
            } => {
                assert_eq!(
                    (again, duplicate),
                    (*seq, true),
                    "{id}: a retry returns the first result"
                )
            }
            other => panic!("{id}: a retry was refused: {other:?}"),
        }
    }
    let free: u32 = log
        .vms
        .values()
        .map(|(capacity, used)| capacity - used)
        .sum();
    let mut now = last + 1;
    for k in 0..=free {
        if k > 0 {
            let reply = commands
                .send(
                    &cid(&format!("after-start-{k}")),
                    &actor(),
                    &start(&format!("after-{k}"), &format!("ua{k}")),
                )
                .await
                .unwrap();
            now += 1;
            assert_eq!(accepted(&reply), Some(now), "{reply:?}");
        }
        let reply = commands
            .send(
                &cid(&format!("after-assign-{k}")),
                &actor(),
                &assign(&format!("after-{k}")),
            )
            .await
            .unwrap();
        if k < free {
            now += 1;
            assert_eq!(
                accepted(&reply),
                Some(now),
                "the standby refuses a free slot: {reply:?}"
            );
        } else {
            assert_eq!(
                code(&reply),
                "no_capacity",
                "the standby overfills a VM: {reply:?}"
            );
        }
    }
    let reply = commands
        .send(&cid("after-vm"), &actor(), &register("vm-4", 1))
        .await
        .unwrap();
    now += 1;
    assert_eq!(accepted(&reply), Some(now), "{reply:?}");
    let reply = commands
        .send(
            &cid("after-assign-last"),
            &actor(),
            &assign(&format!("after-{free}")),
        )
        .await
        .unwrap();
    now += 1;
    assert_eq!(accepted(&reply), Some(now), "{reply:?}");

    // A writer still believing the log ends where the dead one left it is fenced: nothing stored.
    let appender = Appender::new(async_nats::jetstream::new(client.clone()), cell());
    let env = Envelope::new(
        "stale-event".into(),
        "stale-command".into(),
        1,
        now_ms(),
        actor(),
        Event::VmRegistered {
            vm_id: "vm-stale".parse().unwrap(),
            capacity: 1,
            labels: Default::default(),
        },
    );
    match appender.append(&env, last).await {
        Err(LogError::WrongLastSequence { expected, actual }) => {
            assert_eq!(expected, last);
            assert!(actual.is_none() || actual == Some(now), "actual {actual:?}");
        }
        other => panic!("a stale append was not fenced: {other:?}"),
    }
    assert_eq!(
        last_seq(&client).await,
        now,
        "a fenced append stored something"
    );

    // The other way round: the serving writer's own state falls behind (something else appended
    // at the right sequence). Its next appends are refused; it catches up from the log and decides
    // the commands in flight again.
    let env = Envelope::new(
        "foreign-event".into(),
        "foreign-command".into(),
        1,
        now_ms(),
        actor(),
        Event::VmRegistered {
            vm_id: "vm-foreign".parse().unwrap(),
            capacity: 1,
            labels: Default::default(),
        },
    );
    let appended = appender.append(&env, now).await.unwrap();
    now += 1;
    assert_eq!((appended.seq, appended.duplicate), (now, false));
    let mut tasks = Vec::new();
    for k in 0..10 {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("late-start-{k}");
            let command = start(&format!("late-{k}"), &format!("ul{k}"));
            commands.send(&cid(&id), &actor(), &command).await
        }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        let reply = t
            .await
            .unwrap()
            .expect("the writer answers after a refused append");
        seqs.insert(accepted(&reply).unwrap_or_else(|| panic!("{reply:?}")));
    }
    assert_eq!(
        seqs,
        (now + 1..=now + 10).collect(),
        "decided again after catching up"
    );
    now += 10;

    let log = replay(&read_log(&client).await);
    assert!(!log.by_command.contains_key("stale-command"));
    assert_eq!(log.by_command.get("foreign-command"), Some(&(now - 10)));
    assert_eq!(log.last, now);
    verify_clean_at(&client, now, Duration::from_secs(10)).await;

    stop.cancel();
    writers
        .remove(&standby)
        .unwrap()
        .await
        .unwrap()
        .expect("the standby stops cleanly");
    projector_task.await.unwrap();
}

/// The `orchestrator` binary, serving the writer and projector roles against `url`.
struct Orchestrator {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Orchestrator {
    fn spawn(url: &str, data_dir: &Path, run: usize) -> Orchestrator {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.join(format!("orchestrator-{run}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["serve", "--nats-url", url, "--data-dir"])
            .arg(data_dir)
            .args(["--role", "writer,projector", "--lease-ttl", "1s"])
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

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its output if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("orchestrator exited with {status}:\n{}", self.output());
        }
    }

    /// Waits until its writer answers a command.
    async fn wait_serving(
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
fn burst_command(n: usize) -> (String, Command) {
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

/// The orchestrator process is killed with SIGKILL in the middle of a burst of commands, restarted,
/// and every command is sent again with the same id, as a client retrying would: every
/// acknowledged command is in the log exactly once, its retry returns the first result, and verify
/// is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_killed_mid_burst_then_restarted_applies_each_command_once() {
    init_tracing();
    let server = TestServer::start_default().await;
    let data_dir = server.dir().join("orchestrator");
    let client = server.client().await;
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(2));
    // Room for 120 of the 150 sessions: the last 30 placements are refused.
    const CAPACITY: u32 = 120;
    let mut orch = Orchestrator::spawn(&server.url(), &data_dir, 1);
    let reply = orch
        .wait_serving(&commands, "k-register", &register("vm-k", CAPACITY))
        .await;
    assert_eq!(accepted(&reply), Some(1), "{reply:?}");

    // The burst: N commands from N/2 concurrent tasks (each a start, then an assign); the
    // process is killed once a third of them are acknowledged.
    const N: usize = 300;
    let acked = Arc::new(AtomicUsize::new(0));
    let pid = nix::unistd::Pid::from_raw(orch.child.id().expect("running") as i32);
    let first: Arc<Mutex<BTreeMap<String, Reply>>> = Default::default();
    let mut tasks = Vec::new();
    for i in 0..N / 2 {
        let (commands, acked, first) = (commands.clone(), acked.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            for n in [2 * i, 2 * i + 1] {
                let (id, command) = burst_command(n);
                if let Ok(reply) = commands.send(&cid(&id), &actor(), &command).await {
                    if accepted(&reply).is_some()
                        && acked.fetch_add(1, Ordering::SeqCst) + 1 == N / 3
                    {
                        // From here, not from the test's task: the burst is still going.
                        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
                    }
                    first.lock().unwrap().insert(id, reply);
                }
            }
        }));
    }
    let status = tokio::time::timeout(Duration::from_secs(30), orch.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the burst stalled before a third was acknowledged:\n{}",
                orch.output()
            )
        })
        .unwrap();
    let at_kill = acked.load(Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    let first = std::mem::take(&mut *first.lock().unwrap());
    let acknowledged: BTreeMap<String, u64> = first
        .iter()
        .filter_map(|(id, r)| accepted(r).map(|seq| (id.clone(), seq)))
        .collect();
    let stored_at_kill = last_seq(&client).await;
    println!(
        "killed with {at_kill} commands acknowledged ({} in all, {stored_at_kill} events stored)",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() < N,
        "the kill came after the whole burst: nothing was tested"
    );

    // Restart; the client resends every command with its id.
    let mut orch = Orchestrator::spawn(&server.url(), &data_dir, 2);
    let reply = orch
        .wait_serving(&commands, "k-register", &register("vm-k", CAPACITY))
        .await;
    assert!(
        matches!(
            reply,
            Reply::Accepted {
                seq: 1,
                duplicate: true,
                ..
            }
        ),
        "{reply:?}"
    );
    let mut tasks = Vec::new();
    for i in 0..N / 2 {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            for n in [2 * i, 2 * i + 1] {
                let (id, command) = burst_command(n);
                let reply = send_until_answered(
                    &commands,
                    &id,
                    &command,
                    Instant::now() + Duration::from_secs(20),
                )
                .await;
                replies.push((id, reply));
            }
            replies
        }));
    }
    let mut second = BTreeMap::new();
    for t in tasks {
        second.extend(t.await.unwrap());
    }
    orch.assert_running();

    let mut stored_unacknowledged = 0;
    let mut refused = 0;
    for (id, reply) in &second {
        match (acknowledged.get(id), reply) {
            (
                Some(seq),
                Reply::Accepted {
                    seq: again,
                    duplicate,
                    ..
                },
            ) => {
                assert_eq!(
                    (*again, *duplicate),
                    (*seq, true),
                    "{id}: the retry is not the first result"
                )
            }
            (Some(seq), other) => panic!("{id} was acknowledged at {seq}, its retry got {other:?}"),
            (
                None,
                Reply::Accepted {
                    duplicate: true, ..
                },
            ) => stored_unacknowledged += 1,
            (None, Reply::Accepted { .. }) => {}
            (None, other) if id.starts_with("k-assign-") && code(other) == "no_capacity" => {
                refused += 1
            }
            (None, other) => panic!("{id} was refused after the restart: {other:?}"),
        }
    }
    println!(
        "{stored_unacknowledged} commands were stored but their reply was lost with the process"
    );

    let log = replay(&read_log(&client).await);
    for (id, seq) in &acknowledged {
        assert_eq!(
            log.by_command.get(id),
            Some(seq),
            "acknowledged {id} is not in the log at {seq}"
        );
    }
    for (id, reply) in &second {
        assert_eq!(
            log.by_command.get(id),
            accepted(reply).as_ref(),
            "{id}: the reply is not what the log holds"
        );
    }
    assert_eq!(
        refused,
        N / 2 - CAPACITY as usize,
        "placements refused with room left"
    );
    assert_eq!(
        log.by_command.len(),
        N + 1 - refused,
        "every accepted command (and the registration) is in the log once"
    );
    verify_clean_at(&client, log.last, Duration::from_secs(15)).await;

    // A graceful stop at the end.
    let pid = nix::unistd::Pid::from_raw(orch.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), orch.child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "SIGTERM: {status:?}\n{}",
        orch.output()
    );
}

/// The nats-server is restarted while commands keep coming: the writer and the projector reconnect
/// by themselves, every command (retried with its id by its client) is eventually accepted, no
/// acknowledged event is lost, the projection catches up and verify is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_mid_run_loses_nothing() {
    init_tracing();
    let mut server = TestServer::start_default().await;
    let stop = CancellationToken::new();
    let client = server.client().await;
    let config = WriterConfig {
        lease_ttl: Duration::from_secs(2),
        ..WriterConfig::new(cell())
    };
    let writer_task = tokio::spawn(writer::run(client.clone(), config, stop.clone()));
    let commands = CommandClient::new(server.client().await, cell(), Duration::from_secs(1));
    let soon = Instant::now() + Duration::from_secs(10);
    let reply = send_until_answered(&commands, "r-register", &register("vm-r", 1000), soon).await;
    assert_eq!(accepted(&reply), Some(1), "{reply:?}");
    let (store, projector_task) =
        spawn_projector(&client, &server.dir().join("projections"), &stop).await;

    // Senders: each runs sessions one after another (start, assign, end), retrying every command
    // with its id until it is accepted, until told to stop.
    let acks: Arc<Mutex<Vec<(String, u64)>>> = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    const SENDERS: usize = 16;
    for t in 0..SENDERS {
        let (commands, acks, done) = (commands.clone(), acks.clone(), done.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                let s = format!("r{t}-{i}");
                let steps = [
                    (format!("{s}-start"), start(&s, &format!("ru{t}"))),
                    (format!("{s}-assign"), assign(&s)),
                    (format!("{s}-end"), end(&s)),
                ];
                for (id, command) in steps {
                    let reply = send_until_answered(
                        &commands,
                        &id,
                        &command,
                        Instant::now() + Duration::from_secs(30),
                    )
                    .await;
                    let seq = accepted(&reply).unwrap_or_else(|| panic!("{id} refused: {reply:?}"));
                    acks.lock().unwrap().push((id, seq));
                }
                i += 1;
            }
        }));
    }
    let count = || acks.lock().unwrap().len();
    let wait_for = |n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count() < n {
            assert!(
                Instant::now() < deadline,
                "stuck at {} acknowledged commands, waiting for {n}",
                count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for(150).await;
    let pid = server.pid();
    let before = count();
    let restarting = Instant::now();
    server.restart().await.unwrap();
    let restart_took = restarting.elapsed();
    assert_ne!(server.pid(), pid, "the server was not restarted");
    let back = Instant::now();
    let after_restart = count();
    wait_for(after_restart + 150).await;
    let resumed_in = back.elapsed();
    done.store(true, Ordering::SeqCst);
    for s in senders {
        tokio::time::timeout(Duration::from_secs(40), s)
            .await
            .expect("a sender is stuck")
            .unwrap();
    }
    println!(
        "restart at {before} acknowledged took {restart_took:?}; 150 more acknowledged {resumed_in:?} after it was back"
    );

    assert!(
        !writer_task.is_finished(),
        "the writer task ended: {:?}",
        writer_task.await
    );
    assert!(!projector_task.is_finished(), "the projector task ended");
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let log = replay(&read_log(&client).await);
    for (id, seq) in &acks {
        assert_eq!(
            log.by_command.get(id),
            Some(seq),
            "acknowledged {id} is not in the log at {seq}"
        );
    }
    assert_eq!(
        log.by_command.len(),
        acks.len() + 1,
        "the log holds commands no one acknowledged"
    );
    store
        .wait_for(log.last, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(store.checkpoint(), log.last);
    verify_clean_at(&client, log.last, Duration::from_secs(10)).await;

    stop.cancel();
    writer_task
        .await
        .unwrap()
        .expect("the writer stops cleanly");
    projector_task.await.unwrap();
}
