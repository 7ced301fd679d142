//! The orchestrator over NATS: an in-process writer ([`orchestrator::writer::run`]) and 1, 16, 256...
//! concurrent clients ([`CommandClient`]), each looping over its own sessions (start, assign by
//! policy, pause, resume, end) so that user quotas hold, after 1,000 VMs are registered.
//!
//! Client tasks and the writer share this process's runtime: on a small machine they compete for
//! the same cores as each other and as the NATS server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_events::{Actor, CellId, CommandId, EndReason, GameId, SessionId, UserId};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::http::HttpFigures;
use super::stats::{per_second, Latency, Samples};
use super::workload::{requirements, vm_id, vm_labels, VM_CAPACITY};
use super::{BenchError, Plan};
use orchestrator::client::{ClientError, CoalescingClient, CommandClient};
use orchestrator::domain::command::{AssignVm, EndSession, RegisterVm, SessionRef, StartSession};
use orchestrator::domain::Command;
use orchestrator::writer::{self, Reply, WriterConfig};

/// How long a client waits for one answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the writer may take to come up and answer.
const WRITER_READY: Duration = Duration::from_secs(30);

/// Concurrent registrations while the pool is set up.
const REGISTRATION_TASKS: usize = 32;

/// What one level of concurrency achieved.
#[derive(Debug, Clone, Serialize)]
pub struct LevelFigures {
    /// Concurrent clients, each with one command outstanding.
    pub clients: usize,
    /// Commands answered (accepted or rejected).
    pub commands: u64,
    /// Over how long, in seconds.
    pub seconds: f64,
    /// Commands answered per second.
    pub per_second: f64,
    /// Each command's round trip, from send to answer.
    pub latency: Latency,
    /// Commands the writer rejected, by code (the workload expects none).
    pub rejected: BTreeMap<String, u64>,
    /// Commands that got no answer (timeouts, no writer).
    pub errors: u64,
}

/// Everything the orchestrator phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct OrchestratorFigures {
    /// VMs registered before the levels ran.
    pub vms: u32,
    /// How long registering them took, in seconds.
    pub registration_seconds: f64,
    /// One entry per level of concurrency.
    pub levels: Vec<LevelFigures>,
    /// The most clients again, their commands packed into batch requests by one
    /// [`CoalescingClient`] (as the HTTP bridge does), [`COALESCED_IN_FLIGHT`] requests at once.
    pub coalesced: Option<LevelFigures>,
}

/// Batch requests in flight for the coalesced level: the bridge's default.
pub const COALESCED_IN_FLIGHT: usize = 4;

/// How a bench client sends: one request per command, or through a coalescing client.
#[derive(Clone)]
pub(crate) enum Sender {
    Direct(CommandClient),
    Coalesced(CoalescingClient),
}

impl Sender {
    async fn send(
        &self,
        id: &CommandId,
        actor: &Actor,
        command: &Command,
    ) -> Result<Reply, ClientError> {
        match self {
            Sender::Direct(c) => c.send(id, actor, command).await,
            Sender::Coalesced(c) => c.send(id, actor, command).await,
        }
    }
}

pub(crate) async fn connect(url: &str) -> Result<async_nats::Client, BenchError> {
    async_nats::connect(url)
        .await
        .map_err(|e| BenchError::Nats(format!("connect to {url}: {e}")))
}

pub(crate) fn new_command_id() -> CommandId {
    // A UUID is printable ASCII without spaces: always a valid command id.
    CommandId::parse(uuid::Uuid::new_v4().to_string()).expect("a valid command id")
}

pub(crate) fn parse<T: std::str::FromStr>(s: String) -> T
where
    T::Err: std::fmt::Debug,
{
    // Ids built here from letters, digits and '-' only: always valid.
    s.parse().expect("a valid benchmark id")
}

fn register(i: u32, heartbeat_ms: Option<u32>) -> Command {
    Command::RegisterVm(RegisterVm {
        vm_id: vm_id(i),
        capacity: VM_CAPACITY,
        labels: vm_labels(),
        heartbeat_ms,
        endpoint: None,
    })
}

/// Registers the pool (VMs that promise heartbeats at `heartbeat_ms`, when given), waiting for the
/// writer to answer the first registration.
pub(crate) async fn register_pool(
    client: &CommandClient,
    vms: u32,
    heartbeat_ms: Option<u32>,
) -> Result<Duration, BenchError> {
    let operator = Actor::operator("ops-bench");
    let first_id = new_command_id();
    let deadline = Instant::now() + WRITER_READY;
    loop {
        match client
            .send(&first_id, &operator, &register(0, heartbeat_ms))
            .await
        {
            Ok(Reply::Accepted { .. }) => break,
            Ok(Reply::Rejected { code, message, .. }) => {
                return Err(BenchError::Setup(format!(
                    "registering vm 0: {code}: {message}"
                )))
            }
            Err(ClientError::NoWriter(_) | ClientError::Timeout(_))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(BenchError::Setup(format!(
                    "the writer does not answer: {e}"
                )))
            }
        }
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..REGISTRATION_TASKS as u32 {
        let client = client.clone();
        let operator = operator.clone();
        tasks.spawn(async move {
            for i in (1..vms).filter(|i| i % REGISTRATION_TASKS as u32 == t) {
                match client
                    .send(&new_command_id(), &operator, &register(i, heartbeat_ms))
                    .await
                {
                    Ok(Reply::Accepted { .. }) => {}
                    Ok(Reply::Rejected { code, .. }) => return Err(format!("vm {i}: {code}")),
                    Err(e) => return Err(format!("vm {i}: {e}")),
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| BenchError::Setup(e.to_string()))?
            .map_err(|e| BenchError::Setup(format!("registering the pool: {e}")))?;
    }
    Ok(started.elapsed())
}

/// What one client task saw.
pub(crate) struct ClientOutcome {
    /// Each request's round trip.
    pub(crate) samples: Samples,
    /// Refusals by code.
    pub(crate) rejected: BTreeMap<String, u64>,
    /// Requests that got no answer.
    pub(crate) errors: u64,
}

impl ClientOutcome {
    /// Nothing seen yet.
    pub(crate) fn new() -> Self {
        Self {
            samples: Samples::with_capacity(4096),
            rejected: BTreeMap::new(),
            errors: 0,
        }
    }
}

/// One client: its own user, its sessions one after the other, five commands each.
pub(crate) async fn client_loop(
    client: Sender,
    level: usize,
    k: usize,
    deadline: Instant,
    budget: Arc<AtomicI64>,
) -> ClientOutcome {
    let user: UserId = parse(format!("user-l{level}-c{k}"));
    let actor = Actor::user(user.as_str());
    let game: GameId = parse(format!("game-{:03}", k % 200));
    let mut out = ClientOutcome::new();
    for n in 0.. {
        let session_id: SessionId = parse(format!("s-l{level}-c{k}-{n}"));
        let steps = [
            Command::StartSession(StartSession {
                session_id: Some(session_id.clone()),
                user_id: user.clone(),
                game_id: game.clone(),
                requirements: requirements(),
            }),
            Command::AssignVm(AssignVm {
                session_id: session_id.clone(),
                vm_id: None,
                policy: None,
                wait_ms: None,
            }),
            Command::PauseSession(SessionRef {
                session_id: session_id.clone(),
            }),
            Command::ResumeSession(SessionRef {
                session_id: session_id.clone(),
            }),
            Command::EndSession(EndSession {
                session_id,
                reason: EndReason::User,
            }),
        ];
        for command in &steps {
            if Instant::now() >= deadline || budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
                return out;
            }
            let id = new_command_id();
            let started = Instant::now();
            let reply = client.send(&id, &actor, command).await;
            out.samples.push(started.elapsed());
            match reply {
                Ok(Reply::Accepted { .. }) => {}
                Ok(Reply::Rejected { code, .. }) => *out.rejected.entry(code).or_default() += 1,
                Err(_) => out.errors += 1,
            }
        }
    }
    out
}

/// Runs `clients` tasks made by `make(k, deadline, budget)` for `plan.duration` (or until `plan`'s
/// command budget is spent) and sums up what they saw.
pub(crate) async fn run_clients<F, Fut>(
    clients: usize,
    plan: &Plan,
    make: F,
) -> Result<LevelFigures, BenchError>
where
    F: Fn(usize, Instant, Arc<AtomicI64>) -> Fut,
    Fut: std::future::Future<Output = ClientOutcome> + Send + 'static,
{
    let budget = Arc::new(AtomicI64::new(
        i64::try_from(plan.max_commands).unwrap_or(i64::MAX),
    ));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..clients {
        tasks.spawn(make(k, deadline, budget.clone()));
    }
    let mut samples = Samples::default();
    let mut rejected = BTreeMap::new();
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let out = done.map_err(|e| BenchError::Setup(e.to_string()))?;
        samples.extend(out.samples);
        for (code, n) in out.rejected {
            *rejected.entry(code).or_default() += n;
        }
        errors += out.errors;
    }
    let elapsed = started.elapsed();
    let commands = samples.len() as u64;
    Ok(LevelFigures {
        clients,
        commands,
        seconds: elapsed.as_secs_f64(),
        per_second: per_second(commands, elapsed),
        latency: samples.summary(),
        rejected,
        errors,
    })
}

/// Runs the writer in this process against the server at `url`, registers the pool, and measures
/// each level of concurrency of `plan` over NATS, then through the HTTP bridge.
pub async fn measure(
    url: &str,
    plan: &Plan,
    data_dir: &std::path::Path,
    group_commit: bool,
) -> Result<(OrchestratorFigures, HttpFigures), BenchError> {
    let cell: CellId = parse("bench".to_owned());
    let writer_client = connect(url).await?;
    let config = WriterConfig {
        data_dir: Some(data_dir.to_path_buf()),
        max_in_flight: plan.in_flight,
        group_commit,
        ..WriterConfig::new(cell.clone())
    };
    let shutdown = CancellationToken::new();
    let writer_task = tokio::spawn(writer::run(writer_client.clone(), config, shutdown.clone()));
    let client = CommandClient::new(connect(url).await?, cell.clone(), COMMAND_TIMEOUT);
    let measured = async {
        tracing::info!(vms = plan.vms, "orchestrator: registering the pool");
        let registration = register_pool(&client, plan.vms, None).await?;
        let mut levels = Vec::with_capacity(plan.clients.len());
        for &clients in &plan.clients {
            tracing::info!(clients, "orchestrator: commands over NATS");
            let client = client.clone();
            levels.push(
                run_clients(clients, plan, move |k, deadline, budget| {
                    client_loop(Sender::Direct(client.clone()), clients, k, deadline, budget)
                })
                .await?,
            );
        }
        let most = plan.clients.iter().copied().max().unwrap_or(1);
        tracing::info!(
            clients = most,
            "orchestrator: commands over NATS, coalesced"
        );
        let coalescing =
            Sender::Coalesced(CoalescingClient::new(client.clone(), COALESCED_IN_FLIGHT));
        // Levels of their own, so that sessions and users never collide with the plain levels'.
        let level = most + 1_000_000;
        let coalesced = Some(
            run_clients(most, plan, move |k, deadline, budget| {
                client_loop(coalescing.clone(), level, k, deadline, budget)
            })
            .await?,
        );
        let http =
            super::http::measure(url, plan, &data_dir.join("http-projections"), &cell).await?;
        Ok::<_, BenchError>((
            OrchestratorFigures {
                vms: plan.vms,
                registration_seconds: registration.as_secs_f64(),
                levels,
                coalesced,
            },
            http,
        ))
    }
    .await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), writer_task).await;
    let _ = client.nats().drain().await;
    let _ = writer_client.drain().await;
    match stopped {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e.into()),
        Ok(Err(e)) => return Err(BenchError::Setup(format!("writer task: {e}"))),
        Err(_) => {
            return Err(BenchError::Setup(
                "the writer did not stop within 30 s".into(),
            ))
        }
    }
    measured
}
