//! Heartbeats: how long the writer takes to notice a lost VM while N VMs send heartbeats, and the
//! CPU those heartbeats cost it.
//!
//! On a `nats-server` of its own, the writer runs as a child process (`orchestrator serve --role
//! writer`), so that its CPU time can be read from `/proc/<pid>/stat` apart from this process's,
//! which publishes the heartbeats on a connection of its own. In order:
//!
//! 1. the writer's CPU over a window while it serves an empty cell: no VM, no heartbeat;
//! 2. heartbeats start for N VMs, spread evenly over each interval (VM `i` in slot `i mod slots`,
//!    one slot every 10 ms); the N VMs are then registered with that interval (the heartbeats come
//!    first so that no VM reaches its deadline while the others register), and one session is
//!    started and placed on VM 0;
//! 3. the writer's CPU over a window of the same length with every VM heartbeating;
//! 4. VM 0 stops (the others go on): the time from its last heartbeat sent to the `VmLost` event's
//!    `occurred_at`, next to the deadline (misses x interval) and its bound (the deadline plus the
//!    writer's tick), and how the session on it ended.
//!
//! The idle window comes before the VMs are registered because a registered VM that sends nothing
//! is declared lost after misses x interval, sooner than a window lasts. The difference between
//! the windows is therefore what N heartbeating VMs cost the writer at rest: receiving the
//! heartbeats, and the deadline scan over the N VMs on every tick. To tell the two apart, the scan
//! ([`Heartbeats::lost`] over a state of N such VMs, all heard from) is also timed in this process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use orchestrator_events::{Actor, CellId, EndReason, Event, SessionId, Timestamp, VmId};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::orchestrator::{connect, new_command_id, parse, register_pool};
use super::workload::{requirements, vm_id};
use super::{BenchError, Plan};
use orchestrator::cli::agent::heartbeat_subject;
use orchestrator::client::{ClientError, CommandClient};
use orchestrator::clock::now_ms;
use orchestrator::domain::command::{AssignVm, SessionRef, StartSession};
use orchestrator::domain::timers::{Heartbeats, TimerConfig};
use orchestrator::domain::{evolve, Command, DomainConfig, State};
use orchestrator::nats_server::{Durability, NatsServer, NatsServerConfig};
use orchestrator::writer::{Reply, WriterConfig};

/// Missed intervals after which the writer declares a VM lost (`serve --heartbeat-misses`).
pub const MISSES: u32 = 3;

/// How often the publisher sends a slot's share of the heartbeats.
const SLOT: Duration = Duration::from_millis(10);

/// The shortest CPU window.
const MIN_WINDOW: Duration = Duration::from_secs(5);

/// A pause after the writer answers and after the registrations, so that neither start-up nor
/// registering is counted in a window.
const SETTLE: Duration = Duration::from_secs(1);

/// How long a client waits for one answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the writer may take to come up and answer.
const WRITER_READY: Duration = Duration::from_secs(30);

/// The writer's CPU (and the server's) over one window.
#[derive(Debug, Clone, Serialize)]
pub struct CpuFigures {
    /// The window's length, in seconds.
    pub seconds: f64,
    /// The writer process's user + system time over the window, in % of one core.
    pub writer_percent: f64,
    /// The same for `nats-server`, when its pid is known.
    pub server_percent: Option<f64>,
    /// One clock tick of `/proc/<pid>/stat` over the window, in % of one core: the resolution.
    pub resolution_percent: f64,
    /// Heartbeats this process published during the window, per second.
    pub heartbeats_per_second: f64,
}

/// How the lost VM was noticed.
#[derive(Debug, Clone, Serialize)]
pub struct LossFigures {
    /// The VM that stopped.
    pub vm_id: String,
    /// When its last heartbeat was published (ms since the epoch, this process's clock).
    pub last_sent_at: Timestamp,
    /// When the writer last heard from it, as `VmLost.last_heartbeat` says.
    pub last_heard_at: Option<Timestamp>,
    /// `VmLost.occurred_at`: when the writer declared it lost.
    pub declared_at: Timestamp,
    /// `declared_at - last_sent_at`, in ms.
    pub detection_ms: i64,
    /// misses x interval, in ms: the earliest the writer may declare it.
    pub deadline_ms: u64,
    /// The deadline plus the writer's tick, in ms: the latest it should declare it.
    pub bound_ms: u64,
    /// When this process received the `VmLost` event, minus `last_sent_at`, in ms.
    pub observed_ms: i64,
    /// The end of the session placed on it: reason and actor kind, e.g. `vm_lost by system`.
    pub session_end: Option<String>,
    /// Whether that session ended with `vm_lost`, by the `system` actor, before the `VmLost`.
    pub session_ended_vm_lost: bool,
    /// Other VMs declared lost meanwhile (all of them kept sending: 0 expected).
    pub other_vms_lost: u64,
}

/// Everything the heartbeat phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatFigures {
    /// VMs registered with a heartbeat interval, all heartbeating.
    pub vms: u32,
    /// Their interval, in ms.
    pub interval_ms: u64,
    /// Missed intervals before a VM is lost.
    pub misses: u32,
    /// How often the writer checks the deadlines, in ms.
    pub tick_ms: u64,
    /// How long registering the VMs took, in seconds.
    pub registration_seconds: f64,
    /// The writer serving an empty cell, no heartbeats.
    pub idle: CpuFigures,
    /// The writer with every VM heartbeating.
    pub heartbeating: CpuFigures,
    /// `heartbeating - idle` writer CPU per 1,000 heartbeats/s, in % of one core.
    pub writer_percent_per_1000_per_second: f64,
    /// One deadline scan over the N VMs ([`Heartbeats::lost`], timed in this process), in µs.
    pub scan_us: f64,
    /// That scan once per tick, in % of one core.
    pub scan_percent: f64,
    /// `heartbeating - idle - scan` writer CPU per 1,000 heartbeats/s: receiving them, in % of one
    /// core.
    pub receive_percent_per_1000_per_second: f64,
    /// Heartbeats that could not be published.
    pub publish_errors: u64,
    /// The lost VM.
    pub loss: LossFigures,
}

impl HeartbeatFigures {
    /// The heartbeat rate the VMs promise: N / interval.
    pub fn nominal_per_second(&self) -> f64 {
        f64::from(self.vms) * 1000.0 / self.interval_ms as f64
    }
}

/// Times [`Heartbeats::lost`] over a state of `vms` VMs with a heartbeat interval, all heard from
/// (so none is due): the writer's work on every tick. Returns µs per scan. Blocking.
fn time_scan(vms: u32, interval_ms: u32) -> f64 {
    let now = now_ms();
    let mut mix = super::workload::EventMix::new(0x5eed_0004, vms, now);
    let mut state = State::new(DomainConfig::default());
    let mut heartbeats = Heartbeats::new(now);
    for i in 0..vms {
        let mut env = mix.register_vm(i, super::workload::VM_CAPACITY);
        if let Event::VmRegistered { heartbeat_ms, .. } = &mut env.event {
            *heartbeat_ms = Some(interval_ms);
        }
        evolve(&mut state, u64::from(i) + 1, &env);
        heartbeats.beat(vm_id(i), now);
    }
    let config = TimerConfig::default();
    let started = Instant::now();
    let mut scans = 0u32;
    while scans < 10 || started.elapsed() < Duration::from_millis(500) {
        std::hint::black_box(heartbeats.lost(&state, &config, now + 1, 64));
        scans += 1;
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(scans)
}

/// The `orchestrator` binary, beside this one (`target/<profile>/orchestrator-bench`) or beside the
/// directory of the library's test harness (`target/<profile>/deps/orchestrator_bench-<hash>`).
fn orchestrator_binary() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let dir = exe.parent();
    let found = [dir, dir.and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(|dir| dir.join("orchestrator"))
        .find(|bin| bin.is_file());
    found.ok_or_else(|| {
        BenchError::Setup(format!(
            "no orchestrator binary beside {}: build it first (`cargo build --release`)",
            exe.display()
        ))
    })
}

/// The writer as a child process.
pub(super) struct WriterProcess {
    child: tokio::process::Child,
    log: PathBuf,
}

impl WriterProcess {
    /// `orchestrator serve --role writer` against `url`, its output to `<dir>/writer.log`.
    fn start(url: &str, cell: &CellId, dir: &Path) -> Result<Self, BenchError> {
        Self::start_with(url, cell, dir, None)
    }

    /// The same, running `bin` instead of the orchestrator binary when given.
    pub(super) fn start_with(
        url: &str,
        cell: &CellId,
        dir: &Path,
        bin: Option<std::ffi::OsString>,
    ) -> Result<Self, BenchError> {
        let bin = match bin {
            Some(bin) => PathBuf::from(bin),
            None => orchestrator_binary()?,
        };
        let io = |source| BenchError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let log = dir.join("writer.log");
        let out = std::fs::File::create(&log).map_err(io)?;
        let err = out.try_clone().map_err(io)?;
        let child = tokio::process::Command::new(&bin)
            .arg("serve")
            .args([
                "--role",
                "writer",
                "--nats-url",
                url,
                "--cell",
                cell.as_str(),
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--heartbeat-misses", &MISSES.to_string()])
            .env("RUST_LOG", "info,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BenchError::Io { path: bin, source })?;
        Ok(Self { child, log })
    }

    pub(super) fn pid(&self) -> Result<u32, BenchError> {
        self.child
            .id()
            .ok_or_else(|| BenchError::Setup(format!("the writer exited: {}", self.log_tail())))
    }

    /// Why it is no longer running, if it is not.
    pub(super) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Whether its log has a line containing `text` yet.
    pub(super) fn log_contains(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text))
    }

    /// The end of its log, for an error message.
    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        format!("{} ends with:\n{tail}", self.log.display())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
            tracing::warn!(pid, "the writer ignored SIGTERM: killing it");
        }
        let _ = self.child.kill().await;
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// A process's user + system time so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it, where
    // field 3 is the first; utime is field 14, stime field 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The writer's and the server's CPU over `window`, and the heartbeats published meanwhile.
async fn cpu_window(
    writer: u32,
    server: Option<u32>,
    sent: &AtomicU64,
    window: Duration,
) -> Result<CpuFigures, BenchError> {
    let gone = || BenchError::Setup(format!("cannot read /proc/{writer}/stat"));
    let w0 = cpu_ticks(writer).ok_or_else(gone)?;
    let s0 = server.and_then(cpu_ticks);
    let n0 = sent.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let w1 = cpu_ticks(writer).ok_or_else(gone)?;
    let s1 = server.and_then(cpu_ticks);
    let n1 = sent.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let percent = |ticks: u64| ticks as f64 / clock_ticks() / seconds * 100.0;
    Ok(CpuFigures {
        seconds,
        writer_percent: percent(w1.saturating_sub(w0)),
        server_percent: s0.zip(s1).map(|(a, b)| percent(b.saturating_sub(a))),
        resolution_percent: percent(1),
        heartbeats_per_second: (n1 - n0) as f64 / seconds,
    })
}

/// Heartbeats of VMs `0..vms`, each once per interval, spread evenly over it.
struct Publisher {
    sent: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    /// Asks the publisher to stop VM 0; it answers with the time of VM 0's last heartbeat.
    stop_vm0: Option<oneshot::Sender<oneshot::Sender<Timestamp>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn spawn(client: async_nats::Client, cell: &CellId, vms: u32, interval: Duration) -> Self {
        let subjects: Vec<async_nats::Subject> = (0..vms)
            .map(|i| heartbeat_subject(cell, &vm_id(i)).into())
            .collect();
        let slots = u32::try_from(interval.as_nanos() / SLOT.as_nanos())
            .unwrap_or(u32::MAX)
            .max(1);
        let sent = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (stop_vm0, mut vm0_rx) = oneshot::channel::<oneshot::Sender<Timestamp>>();
        let task = {
            let (sent, errors, stop) = (sent.clone(), errors.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval / slots);
                let mut vm0_last: Option<Timestamp> = None;
                let mut vm0_stopped = false;
                for n in 0u64.. {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let slot = (n % u64::from(slots)) as usize;
                    let now = now_ms();
                    let payload = Bytes::from(now.to_string());
                    for i in (slot..subjects.len()).step_by(slots as usize) {
                        if i == 0 {
                            if !vm0_stopped {
                                if let Ok(reply) = vm0_rx.try_recv() {
                                    vm0_stopped = true;
                                    let _ = reply.send(vm0_last.unwrap_or(now));
                                }
                            }
                            if vm0_stopped {
                                continue;
                            }
                            vm0_last = Some(now_ms());
                        }
                        match client.publish(subjects[i].clone(), payload.clone()).await {
                            Ok(()) => sent.fetch_add(1, Ordering::Relaxed),
                            // Core NATS: a heartbeat not sent is only a miss.
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
                let _ = client.flush().await;
            })
        };
        Self {
            sent,
            errors,
            stop_vm0: Some(stop_vm0),
            stop,
            task,
        }
    }

    /// Stops VM 0's heartbeats at its next turn; returns when its last one was published.
    async fn stop_vm0(&mut self) -> Result<Timestamp, BenchError> {
        let (tx, rx) = oneshot::channel();
        self.stop_vm0
            .take()
            .ok_or_else(|| BenchError::Setup("VM 0 was already stopped".into()))?
            .send(tx)
            .map_err(|_| BenchError::Setup("the heartbeat publisher stopped".into()))?;
        rx.await
            .map_err(|_| BenchError::Setup("the heartbeat publisher stopped".into()))
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Waits until the writer answers a command (a pause of a session that does not exist: refused).
async fn wait_for_writer(
    client: &CommandClient,
    writer: &mut WriterProcess,
) -> Result<(), BenchError> {
    probe_until_answered(client, writer, Duration::from_millis(50)).await
}

/// The same, probing every `pause` while no writer answers.
pub(super) async fn probe_until_answered(
    client: &CommandClient,
    writer: &mut WriterProcess,
    pause: Duration,
) -> Result<(), BenchError> {
    let probe = Command::PauseSession(SessionRef {
        session_id: parse("s-hb-probe".to_owned()),
    });
    let operator = Actor::operator("ops-bench");
    let deadline = Instant::now() + WRITER_READY;
    loop {
        if let Some(status) = writer.exited() {
            return Err(BenchError::Setup(format!(
                "the writer exited ({status}); {}",
                writer.log_tail()
            )));
        }
        match client.send(&new_command_id(), &operator, &probe).await {
            Ok(_) => return Ok(()),
            Err(ClientError::NoWriter(_) | ClientError::Timeout(_))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                return Err(BenchError::Setup(format!(
                    "the writer does not answer: {e}; {}",
                    writer.log_tail()
                )))
            }
        }
    }
}

/// Starts a session and places it on VM 0.
async fn session_on_vm0(client: &CommandClient, session_id: &SessionId) -> Result<(), BenchError> {
    let user = "user-hb";
    let actor = Actor::user(user);
    let steps = [
        Command::StartSession(StartSession {
            session_id: Some(session_id.clone()),
            user_id: parse(user.to_owned()),
            game_id: parse("game-000".to_owned()),
            requirements: requirements(),
        }),
        Command::AssignVm(AssignVm {
            session_id: session_id.clone(),
            vm_id: Some(vm_id(0)),
            policy: None,
            wait_ms: None,
        }),
    ];
    for command in &steps {
        match client.send(&new_command_id(), &actor, command).await {
            Ok(Reply::Accepted { .. }) => {}
            Ok(Reply::Rejected { code, message, .. }) => {
                return Err(BenchError::Setup(format!(
                    "{}: {code}: {message}",
                    command.name()
                )))
            }
            Err(e) => return Err(BenchError::Setup(format!("{}: {e}", command.name()))),
        }
    }
    Ok(())
}

/// What the event feed showed once VM 0 stopped.
struct Seen {
    declared_at: Timestamp,
    last_heard_at: Option<Timestamp>,
    observed_at: Timestamp,
    session_end: Option<(EndReason, String)>,
    other_vms_lost: u64,
}

/// Follows the cell's events until VM 0's `VmLost`, or `timeout`.
async fn wait_for_loss(
    mut events: async_nats::Subscriber,
    vm0: &VmId,
    session_id: &SessionId,
    timeout: Duration,
) -> Result<Seen, BenchError> {
    let mut session_end = None;
    let mut other_vms_lost = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(BenchError::Nats("the event subscription closed".into())),
            Err(_) => {
                return Err(BenchError::Setup(format!(
                    "{vm0} was not declared lost within {timeout:?} of its last heartbeat"
                )))
            }
        };
        let observed_at = now_ms();
        let Ok(envelope) = orchestrator_events::decode(&msg.payload) else {
            continue;
        };
        match envelope.event {
            Event::SessionEnded {
                session_id: s,
                reason,
                ..
            } if &s == session_id => {
                session_end = Some((reason, envelope.actor.kind.as_str().to_owned()));
            }
            Event::VmLost {
                vm_id,
                last_heartbeat,
            } => {
                if &vm_id != vm0 {
                    other_vms_lost += 1;
                    continue;
                }
                return Ok(Seen {
                    declared_at: envelope.occurred_at,
                    last_heard_at: last_heartbeat,
                    observed_at,
                    session_end,
                    other_vms_lost,
                });
            }
            _ => {}
        }
    }
}

/// Runs the heartbeat phase on a server of its own under `dir`.
pub async fn measure(bin: &Path, plan: &Plan, dir: &Path) -> Result<HeartbeatFigures, BenchError> {
    let mut server = NatsServer::start(NatsServerConfig {
        durability: Durability::Default,
        ..NatsServerConfig::new(bin, dir.join("nats"))
    })
    .await?;
    tracing::info!(url = %server.url(), "heartbeats: server started");
    let mut writer = WriterProcess::start(&server.url(), &cell(), &dir.join("writer"))?;
    let figures = run(&server, &mut writer, plan).await;
    writer.stop().await;
    server.stop().await?;
    figures
}

fn cell() -> CellId {
    parse("bench".to_owned())
}

async fn run(
    server: &NatsServer,
    writer: &mut WriterProcess,
    plan: &Plan,
) -> Result<HeartbeatFigures, BenchError> {
    let cell = cell();
    let vms = plan.heartbeat_vms;
    let interval = plan.heartbeat_interval;
    let interval_ms = u32::try_from(interval.as_millis())
        .map_err(|_| BenchError::Args("--heartbeat-interval is too long".into()))?;
    let window = (interval * 2).max(MIN_WINDOW);
    let tick = WriterConfig::new(cell.clone()).tick;
    let client = CommandClient::new(connect(&server.url()).await?, cell.clone(), COMMAND_TIMEOUT);
    let measured = async {
        wait_for_writer(&client, writer).await?;
        let writer_pid = writer.pid()?;
        tokio::time::sleep(SETTLE).await;
        tracing::info!(
            seconds = window.as_secs_f64(),
            "heartbeats: writer CPU, empty cell, no heartbeats"
        );
        let idle = cpu_window(writer_pid, server.pid(), &AtomicU64::new(0), window).await?;

        tracing::info!(vms, interval = ?interval, "heartbeats: publishing, registering the VMs");
        let mut publisher = Publisher::spawn(connect(&server.url()).await?, &cell, vms, interval);
        let outcome = async {
            let registration = register_pool(&client, vms, Some(interval_ms)).await?;
            let session_id: SessionId = parse("s-hb-vm0".to_owned());
            session_on_vm0(&client, &session_id).await?;
            tokio::time::sleep(SETTLE).await;
            tracing::info!(
                seconds = window.as_secs_f64(),
                "heartbeats: writer CPU, every VM heartbeating"
            );
            let heartbeating =
                cpu_window(writer_pid, server.pid(), &publisher.sent, window).await?;

            let vm0 = vm_id(0);
            let events = client
                .nats()
                .subscribe(orchestrator_events::subject::all_events(&cell))
                .await
                .map_err(|e| BenchError::Nats(format!("subscribe: {e}")))?;
            client
                .nats()
                .flush()
                .await
                .map_err(|e| BenchError::Nats(format!("flush: {e}")))?;
            tracing::info!(vm = %vm0, "heartbeats: stopping one VM, waiting for it to be lost");
            let last_sent_at = publisher.stop_vm0().await?;
            let deadline = interval * MISSES;
            let seen = wait_for_loss(
                events,
                &vm0,
                &session_id,
                deadline * 2 + Duration::from_secs(10),
            )
            .await?;
            Ok::<_, BenchError>((registration, heartbeating, last_sent_at, seen))
        }
        .await;
        let publish_errors = publisher.errors.load(Ordering::Relaxed);
        publisher.stop().await;
        let (registration, heartbeating, last_sent_at, seen) = outcome?;
        let deadline_ms = u64::from(interval_ms) * u64::from(MISSES);
        let tick_ms = u64::try_from(tick.as_millis()).unwrap_or(u64::MAX);
        let extra = heartbeating.writer_percent - idle.writer_percent;
        let scan_us = tokio::task::spawn_blocking(move || time_scan(vms, interval_ms))
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let scan_percent = scan_us / tick.as_secs_f64() / 1e6 * 100.0;
        let rate = heartbeating.heartbeats_per_second;
        let per_1000 = |percent: f64| {
            if rate > 0.0 {
                percent / rate * 1000.0
            } else {
                f64::NAN
            }
        };
        let session_ended_vm_lost = matches!(
            &seen.session_end,
            Some((EndReason::VmLost, kind)) if kind == "system"
        );
        Ok(HeartbeatFigures {
            vms,
            interval_ms: u64::from(interval_ms),
            misses: MISSES,
            tick_ms,
            registration_seconds: registration.as_secs_f64(),
            writer_percent_per_1000_per_second: per_1000(extra),
            receive_percent_per_1000_per_second: per_1000(extra - scan_percent),
            scan_us,
            scan_percent,
            idle,
            heartbeating,
            publish_errors,
            loss: LossFigures {
                vm_id: vm_id(0).to_string(),
                last_sent_at,
                last_heard_at: seen.last_heard_at,
                declared_at: seen.declared_at,
                detection_ms: seen.declared_at - last_sent_at,
                deadline_ms,
                bound_ms: deadline_ms + tick_ms,
                observed_ms: seen.observed_at - last_sent_at,
                session_end: seen
                    .session_end
                    .map(|(reason, kind)| format!("{} by {kind}", reason.as_str())),
                session_ended_vm_lost,
                other_vms_lost: seen.other_vms_lost,
            },
        })
    }
    .await;
    let _ = client.nats().drain().await;
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_time() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(clock_ticks() > 0.0);
    }
}
