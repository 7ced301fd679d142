//! Failover: how soon a standby writer serves after the active one is killed, and what taking over
//! a long log costs a standby that followed it.
//!
//! - [`measure`], once after the modes, on a `nats-server` of its own: two writers run as child
//!   processes (`orchestrator serve --role writer`, default settings, each on a data directory of
//!   its own). The active one is killed with SIGKILL (no lease release, no goodbye) at a random
//!   moment of its renewal period ([`KILL_SPREAD`]), and a client sends a probe command (a pause
//!   of a session that does not exist: refused, nothing appended) every few milliseconds until
//!   one is answered: the time from the kill to that answer is the takeover. A new standby is then started and the next
//!   round kills the new active writer. Commands flow before each kill, so the standby has a log
//!   to follow.
//! - [`warm_takeover`], in each mode, on the rebuild phase's N-event log: a [`Follower`] (what a
//!   standby runs while it waits) folds the whole log, then [`recover_from`] starts from its state
//!   as a writer taking the lease does: the time a standby needs to be warm, and the takeover's
//!   own recovery, next to the cold starts measured on the same log.
//!
//! The writer children run the `orchestrator` binary beside this one, or `$ORCH_BENCH_WRITER_BIN`
//! when set (to measure another build's takeover on the same machine).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use orchestrator_events::{Actor, CellId};
use serde::Serialize;

use super::heartbeats::{probe_until_answered, WriterProcess};
use super::orchestrator::{connect, new_command_id, parse, register_pool};
use super::rebuild::FILL_CELL;
use super::stats::thousands;
use super::workload::Rng;
use super::{BenchError, Plan};
use orchestrator::client::CommandClient;
use orchestrator::domain::command::StartSession;
use orchestrator::domain::Command;
use orchestrator::log::Reader;
use orchestrator::nats_server::{Durability, NatsServer, NatsServerConfig};
use orchestrator::writer::recovery::recover_from;
use orchestrator::writer::standby::Follower;
use orchestrator::writer::WriterConfig;

/// How long a probe waits for its answer: short, so that a probe caught by the dying writer is
/// sent again soon.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// The pause between two probes that found no writer.
const PROBE_PAUSE: Duration = Duration::from_millis(5);

/// How long the standby has after its start to be waiting for the lease (and following the log).
const STANDBY_READY: Duration = Duration::from_secs(30);

/// A pause after the standby is ready, so that it has folded the log before the kill.
const SETTLE: Duration = Duration::from_secs(1);

/// The kill comes at a random moment within this long after [`SETTLE`]: the renewal period of a
/// lease TTL of 5 s (the default before 1 s), and a whole number of the default's (TTL/3), so that
/// the kill is spread evenly over the active writer's renewal period with either.
const KILL_SPREAD: Duration = Duration::from_millis(5_000 / 3);

/// VMs registered before the first round.
const VMS: u32 = 100;

/// Sessions started before each kill.
const SESSIONS_PER_ROUND: u32 = 50;

/// The takeovers after a kill -9 of the active writer.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverFigures {
    /// The writers' lease TTL (this build's default), in ms; `None` when they ran another build.
    pub lease_ttl_ms: Option<u64>,
    /// The writer binary the children ran.
    pub writer_bin: String,
    /// Each round's time from the kill to the first answer, in seconds.
    pub takeover_seconds: Vec<f64>,
    /// The log's last sequence at the last kill.
    pub events: u64,
}

impl FailoverFigures {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.takeover_seconds.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    /// The median takeover, in seconds.
    pub fn median_seconds(&self) -> f64 {
        let s = self.sorted();
        if s.is_empty() {
            return f64::NAN;
        }
        s[(s.len() - 1) / 2]
    }
}

/// A standby's warm takeover of the rebuild phase's log.
#[derive(Debug, Clone, Serialize)]
pub struct WarmTakeoverFigures {
    /// Events in the log.
    pub events: u64,
    /// From the follower's start (no snapshot) until its state reached the log's end, in seconds:
    /// how long a standby started next to this log takes to be warm.
    pub follow_seconds: f64,
    /// `recover_from` the follower's state, nothing new in the log: the takeover's own recovery,
    /// in seconds.
    pub takeover_seconds: f64,
}

/// The writers' cell.
fn cell() -> CellId {
    parse("failover".to_owned())
}

/// The binary the writer children run: `$ORCH_BENCH_WRITER_BIN`, else the `orchestrator` beside
/// this one.
fn writer_bin_override() -> Option<std::ffi::OsString> {
    std::env::var_os("ORCH_BENCH_WRITER_BIN").filter(|b| !b.is_empty())
}

/// Runs the kill -9 rounds on a server of their own under `dir`.
pub async fn measure(bin: &Path, plan: &Plan, dir: &Path) -> Result<FailoverFigures, BenchError> {
    let mut server = NatsServer::start(NatsServerConfig {
        durability: Durability::Default,
        ..NatsServerConfig::new(bin, dir.join("nats"))
    })
    .await?;
    tracing::info!(url = %server.url(), rounds = plan.failover_rounds, "failover: server started");
    let mut writers = Vec::new();
    let figures = rounds(&server.url(), plan.failover_rounds, dir, &mut writers).await;
    for w in writers {
        w.stop().await;
    }
    server.stop().await?;
    figures
}

/// Starts a writer under `dir/w<n>` and waits until it stands by (or serves).
async fn start_writer(url: &str, dir: &Path, n: usize) -> Result<WriterProcess, BenchError> {
    let writer = WriterProcess::start_with(
        url,
        &cell(),
        &dir.join(format!("w{n}")),
        writer_bin_override(),
    )?;
    let deadline = Instant::now() + STANDBY_READY;
    while !writer.log_contains("standby: waiting for the writer lease") {
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "the writer did not start: {}",
                writer.log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(writer)
}

async fn rounds(
    url: &str,
    rounds: u32,
    dir: &Path,
    writers: &mut Vec<WriterProcess>,
) -> Result<FailoverFigures, BenchError> {
    let cell = cell();
    let ttl = orchestrator::log::DEFAULT_LEASE_TTL;
    let client = CommandClient::new(connect(url).await?, cell.clone(), PROBE_TIMEOUT);
    let slow = CommandClient::new(client.nats().clone(), cell.clone(), Duration::from_secs(30));
    writers.push(start_writer(url, dir, 0).await?);
    probe_until_answered(&slow, &mut writers[0], PROBE_PAUSE).await?;
    register_pool(&slow, VMS, None).await?;
    let mut rng = Rng::new(0x5eed_0010);
    let mut takeover_seconds = Vec::new();
    let mut session = 0u64;
    for round in 0..rounds as usize {
        writers.push(start_writer(url, dir, round + 1).await?);
        start_sessions(&slow, &mut session, SESSIONS_PER_ROUND).await?;
        // A random moment of the renewal period, after the standby has folded the log.
        let jitter = KILL_SPREAD.mul_f64((rng.next_u64() % 1_000) as f64 / 1_000.0);
        tokio::time::sleep(SETTLE + jitter).await;
        // The active writer is the older of the two: the new one only stands by.
        let active = writers.remove(0);
        let pid = active.pid()?;
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(pid).map_err(|_| BenchError::Setup(format!("pid {pid}")))?,
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| BenchError::Setup(format!("kill -9 {pid}: {e}")))?;
        let killed = Instant::now();
        probe_until_answered(&client, &mut writers[0], PROBE_PAUSE).await?;
        let took = killed.elapsed();
        tracing::info!(round, seconds = took.as_secs_f64(), "failover: took over");
        takeover_seconds.push(took.as_secs_f64());
        active.stop().await;
    }
    let events =
        orchestrator::log::Reader::new(async_nats::jetstream::new(client.nats().clone()), cell)
            .await?
            .last_seq()
            .await?;
    Ok(FailoverFigures {
        lease_ttl_ms: writer_bin_override()
            .is_none()
            .then_some(ttl.as_millis() as u64),
        writer_bin: writer_bin_override().map_or_else(
            || "the orchestrator binary".to_owned(),
            |b| b.to_string_lossy().into_owned(),
        ),
        takeover_seconds,
        events,
    })
}

/// Starts `n` sessions (without a VM: they wait for a placement).
async fn start_sessions(client: &CommandClient, next: &mut u64, n: u32) -> Result<(), BenchError> {
    for _ in 0..n {
        *next += 1;
        let user = format!("user-fo-{}", *next % 1_000);
        let command = Command::StartSession(StartSession {
            session_id: Some(parse(format!("s-fo-{next}"))),
            user_id: parse(user.clone()),
            game_id: parse("game-fo".to_owned()),
            requirements: super::workload::requirements(),
        });
        match client
            .send(&new_command_id(), &Actor::user(&user), &command)
            .await
        {
            Ok(_) => {}
            Err(e) => return Err(BenchError::Setup(format!("starting a session: {e}"))),
        }
    }
    Ok(())
}

/// A follower folds the rebuild phase's log (its cell, `events` long), then a takeover recovers
/// from its state.
pub async fn warm_takeover(
    client: &async_nats::Client,
    events: u64,
) -> Result<WarmTakeoverFigures, BenchError> {
    let js = async_nats::jetstream::new(client.clone());
    let cell: CellId = parse(FILL_CELL.to_owned());
    let config = WriterConfig::new(cell.clone());
    tracing::info!(events, "warm takeover: a standby follows the log");
    let started = Instant::now();
    let follower = Follower::spawn(js.clone(), &config);
    let mut position = follower.position();
    position
        .wait_for(|seq| *seq >= events)
        .await
        .map_err(|_| BenchError::Setup("the follower stopped".into()))?;
    let follow_seconds = started.elapsed().as_secs_f64();
    let mut warm = follower.take().await;
    let reader = Reader::new(js, cell).await?;
    tracing::info!(events, "warm takeover: recover from the standby's state");
    let (state, _, how) = recover_from(&reader, &config.domain, None, &mut warm).await?;
    if how.warm_seq != Some(events) || state.last_seq != events {
        return Err(BenchError::Setup(format!(
            "the warm takeover started at {:?}, reached {} of {events}",
            how.warm_seq, state.last_seq
        )));
    }
    Ok(WarmTakeoverFigures {
        events,
        follow_seconds,
        takeover_seconds: how.elapsed.as_secs_f64(),
    })
}

/// The mode table's rows for the warm takeover (5 columns, as the rest of that table).
pub fn render_warm(t: &mut String, mode: &str, w: &WarmTakeoverFigures) {
    let events = thousands(w.events as f64);
    let _ = writeln!(
        t,
        "| {mode} | writer warm takeover (standby followed the log), {events} events | {:.3} s | {:.2} s to follow it | - |",
        w.takeover_seconds, w.follow_seconds
    );
}

/// The failover phase's own small table.
pub fn render(t: &mut String, f: &FailoverFigures) {
    let ttl = f.lease_ttl_ms.map(|ms| ms as f64 / 1000.0);
    let _ = writeln!(
        t,
        "failover: the active writer (a child process: {}, lease TTL {}) killed with SIGKILL, a \
         standby waiting; {} rounds, {} events in the log",
        f.writer_bin,
        ttl.map_or_else(|| "its default".to_owned(), |s| format!("{s:.1} s")),
        f.takeover_seconds.len(),
        thousands(f.events as f64),
    );
    let _ = writeln!(t);
    let _ = writeln!(t, "| figure | measured | bound |");
    let _ = writeln!(t, "|---|---|---|");
    let s = f.sorted();
    if let (Some(min), Some(max)) = (s.first(), s.last()) {
        let bound = ttl.map_or_else(
            || "-".to_owned(),
            |ttl| {
                format!(
                    "lease {:.2} to {:.2} s, plus the recovery",
                    ttl * 2.0 / 3.0,
                    ttl * 1.1
                )
            },
        );
        let _ = writeln!(
            t,
            "| writer takeover after kill -9, from the kill to the first answer (min / median / max) | {min:.2} / {:.2} / {max:.2} s | {bound} |",
            f.median_seconds(),
        );
        let all: Vec<String> = f
            .takeover_seconds
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect();
        let _ = writeln!(t, "| every round, s | {} | - |", all.join(", "));
    }
}
