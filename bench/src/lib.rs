//! The benchmark: how fast the orchestrator is, measured against the raw NATS limit in the same run.
//!
//! For each durability mode (`default` fsync, and `sync_interval: always` on servers >= 2.10) it
//! starts its own `nats-server` in a temporary directory and measures:
//!
//! - [`raw`]: the raw limits on a scratch stream of the log's configuration: sequential
//!   publish-and-ack latency, the pipelined publish rate with consecutive expected sequences, the
//!   ordered-consumer replay rate.
//! - [`orchestrator`]: commands per second and their latency with 1, 16 and 256 concurrent clients
//!   against an in-process writer, on a realistic lifecycle mix over 1,000 VMs.
//! - [`http`]: writes and reads through the HTTP bridge, against the same writer.
//! - [`rebuild`]: the projection rebuild and the writer's cold start (with and without a snapshot)
//!   over N events, next to a raw replay of the same stream.
//!
//! and once, before any server starts, [`memory`]: the writer's resident memory per live session;
//! and once, after the modes, on a server of its own, [`heartbeats`]: how long the writer (a child
//! process) takes to notice a lost VM while N VMs send heartbeats, and the CPU they cost it;
//! and [`failover`]: how soon a standby writer serves after the active one is killed (kill -9),
//! and, in each mode, a standby's warm takeover of the rebuild's log.
//! [`report`] holds the figures, checks the targets, and renders the one table; [`workload`]
//! generates the realistic events and ids; [`stats`] the percentiles.
//!
//! The binary `orchestrator-bench` (`src/main.rs`) parses [`BenchArgs`] and calls [`run`];
//! `orchestrator bench ...` runs it. It uses the `orchestrator` library as any user does.

pub mod failover;
pub mod heartbeats;
pub mod http;
pub mod memory;
pub mod orchestrator;
pub mod raw;
pub mod rebuild;
pub mod report;
pub mod stats;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use report::BenchReport;

use ::orchestrator::log::LogError;
use ::orchestrator::nats_server::{
    binary_version, resolve_binary, Durability, NatsServer, NatsServerConfig, NatsServerError,
};
use ::orchestrator::projections::ProjectionError;
use ::orchestrator::writer::WriterError;
use report::{Machine, ModeFigures, ModeReport, ServerInfo, Settings};

/// The benchmark's flags (`orchestrator-bench`, or `orchestrator bench`, which runs it).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A smoke run for CI: a few thousand commands, 20,000 events, 1 s phases; well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Events in the stream the projection rebuild and the writer's cold start read
    /// [default: 1000000, or 20000 with --quick].
    #[arg(long)]
    pub events: Option<u64>,
    /// How long each timed phase runs (raw sequential, raw pipelined, each level of clients), e.g.
    /// `5s` [default: 5s, or 1s with --quick].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// The durability modes to measure, each on its own server.
    #[arg(long, value_delimiter = ',', default_value = "default,always")]
    pub modes: Vec<Durability>,
    /// The levels of concurrent clients.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub clients: Vec<usize>,
    /// Where the results are written as JSON.
    #[arg(long, default_value = "bench-results.json")]
    pub json_out: PathBuf,
    /// The `nats-server` binary [default: $NATS_SERVER_BIN, /usr/sbin/nats-server, or on PATH].
    #[arg(long)]
    pub nats_server_bin: Option<PathBuf>,
    /// Where the temporary server stores go [default: the system's temp dir].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// VMs that send heartbeats in the heartbeat phase (its own server; the writer runs as a child
    /// process); 0 skips the phase [default: 10000, or 1000 with --quick].
    #[arg(long)]
    pub heartbeat_vms: Option<u32>,
    /// Their heartbeat interval, e.g. `5s` (100ms to 10m) [default: 5s, or 1s with --quick].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Rounds of the failover phase (kill -9 of the active writer, a child process; its own
    /// server); 0 skips the phase [default: 10, or 3 with --quick].
    #[arg(long)]
    pub failover_rounds: Option<u32>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            quick: false,
            events: None,
            duration: None,
            modes: vec![Durability::Default, Durability::SyncAlways],
            clients: vec![1, 16, 256],
            json_out: PathBuf::from("bench-results.json"),
            nats_server_bin: None,
            work_dir: None,
            heartbeat_vms: None,
            heartbeat_interval: None,
            failover_rounds: None,
        }
    }
}

/// Why the benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The flags make no sense (no mode, no clients). Fix the command line.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// A server could not be found, started or stopped: check `NATS_SERVER_BIN` and its log.
    #[error(transparent)]
    Server(#[from] NatsServerError),
    /// Connecting or publishing failed: the server went away or is overloaded.
    #[error("NATS: {0}")]
    Nats(String),
    /// The log layer failed (stream setup, reads).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The in-process writer stopped with an error.
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// The projection store failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// A file could not be written or read.
    #[error("{path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The measured system misbehaved (the writer never answered, a replay skipped): a bug to
    /// look at, not a slow result.
    #[error("benchmark: {0}")]
    Setup(String),
}

/// The run's settings, resolved from the flags.
#[derive(Debug, Clone)]
pub struct Plan {
    /// A smoke run.
    pub quick: bool,
    /// Events in the rebuild stream.
    pub events: u64,
    /// Each timed phase's length.
    pub duration: Duration,
    /// The most commands per level of clients (and sequential raw publishes).
    pub max_commands: u64,
    /// The most messages built for the raw pipelined phase.
    pub raw_pipelined: u64,
    /// Appends in flight at most.
    pub in_flight: usize,
    /// Levels of concurrency.
    pub clients: Vec<usize>,
    /// VMs registered.
    pub vms: u32,
    /// Live sessions of the memory phase.
    pub memory_sessions: u64,
    /// VMs of the heartbeat phase (0: skipped).
    pub heartbeat_vms: u32,
    /// Their heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Rounds of the failover phase (0: skipped).
    pub failover_rounds: u32,
}

impl Plan {
    /// The plan the flags ask for.
    pub fn from_args(args: &BenchArgs) -> Result<Self, BenchError> {
        if args.modes.is_empty() {
            return Err(BenchError::Args("--modes names no mode".into()));
        }
        if args.clients.is_empty() || args.clients.contains(&0) {
            return Err(BenchError::Args(
                "--clients needs levels of at least 1".into(),
            ));
        }
        let quick = args.quick;
        let events = args
            .events
            .unwrap_or(if quick { 20_000 } else { 1_000_000 });
        if events < 1_000 {
            return Err(BenchError::Args(
                "--events must be at least 1000 (the VMs come first)".into(),
            ));
        }
        let heartbeat_vms = args
            .heartbeat_vms
            .unwrap_or(if quick { 1_000 } else { 10_000 });
        if heartbeat_vms > 100_000 {
            return Err(BenchError::Args(
                "--heartbeat-vms must be at most 100000".into(),
            ));
        }
        let heartbeat_interval = args
            .heartbeat_interval
            .unwrap_or(Duration::from_secs(if quick { 1 } else { 5 }));
        let range = ::orchestrator::domain::command::HEARTBEAT_MS_RANGE;
        if !u32::try_from(heartbeat_interval.as_millis()).is_ok_and(|ms| range.contains(&ms)) {
            return Err(BenchError::Args(format!(
                "--heartbeat-interval must be {} ms to {} ms",
                range.start(),
                range.end()
            )));
        }
        Ok(Self {
            quick,
            events,
            duration: args
                .duration
                .unwrap_or(Duration::from_secs(if quick { 1 } else { 5 })),
            max_commands: if quick { 1_000 } else { u64::MAX / 2 },
            raw_pipelined: if quick { 20_000 } else { 300_000 },
            in_flight: ::orchestrator::writer::WriterConfig::new(
                orchestrator_events::CellId::default_cell(),
            )
            .max_in_flight,
            clients: args.clients.clone(),
            vms: 1_000,
            memory_sessions: 100_000,
            heartbeat_vms,
            heartbeat_interval,
            failover_rounds: args.failover_rounds.unwrap_or(if quick { 3 } else { 10 }),
        })
    }
}

/// `/proc/loadavg`'s three load averages, or `unknown`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> Machine {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_owned(), |m| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    Machine {
        cpus,
        cpu_model,
        memory_bytes,
    }
}

/// Runs every phase of one mode against a fresh server storing under `dir`.
async fn run_mode(
    bin: &Path,
    durability: Durability,
    plan: &Plan,
    dir: &Path,
) -> Result<ModeFigures, BenchError> {
    let mut server = NatsServer::start(NatsServerConfig {
        durability,
        ..NatsServerConfig::new(bin, dir.join("nats"))
    })
    .await?;
    tracing::info!(mode = %durability, url = %server.url(), version = %server.version(), "server started");
    let figures = async {
        let client = async_nats::connect(server.url())
            .await
            .map_err(|e| BenchError::Nats(format!("connect: {e}")))?;
        let raw = raw::measure(&client, plan, "raw", true).await?;
        let (orchestrator, http) = orchestrator::measure(
            &server.url(),
            plan,
            &dir.join("writer"),
            durability == Durability::SyncAlways,
        )
        .await?;
        tracing::info!("raw limits again, to show how much they drifted meanwhile");
        let raw_after = raw::measure(&client, plan, "raw2", false).await?;
        let version = ::orchestrator::log::ServerVersion::of(&client)?;
        let (rebuild, cold_start) =
            rebuild::measure(&client, plan, durability, version, &dir.join("rebuild")).await?;
        let warm_takeover = failover::warm_takeover(&client, rebuild.events).await?;
        let _ = client.drain().await;
        Ok(ModeFigures {
            raw,
            raw_after,
            orchestrator,
            http,
            rebuild,
            cold_start,
            warm_takeover,
        })
    }
    .await;
    server.stop().await?;
    figures
}

/// Runs the benchmark, prints its table, writes its JSON, and returns the report.
pub async fn run(args: BenchArgs) -> Result<BenchReport, BenchError> {
    let plan = Plan::from_args(&args)?;
    let bin = match &args.nats_server_bin {
        Some(bin) => bin.clone(),
        None => resolve_binary()?,
    };
    let version = {
        let bin = bin.clone();
        tokio::task::spawn_blocking(move || binary_version(&bin))
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))??
    };
    let work = match &args.work_dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("orchestrator-bench-")
            .tempdir_in(dir),
        None => tempfile::Builder::new()
            .prefix("orchestrator-bench-")
            .tempdir(),
    }
    .map_err(|source| BenchError::Io {
        path: args.work_dir.clone().unwrap_or_else(std::env::temp_dir),
        source,
    })?;

    tracing::info!(
        sessions = plan.memory_sessions,
        "memory: state with live sessions"
    );
    let sessions = plan.memory_sessions;
    let memory = tokio::task::spawn_blocking(move || memory::measure(sessions))
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;

    let mut load = vec![format!("at start {}", load_average())];
    let mut modes = Vec::with_capacity(plan.clients.len());
    for &durability in &args.modes {
        if !durability.supported_by(version) {
            modes.push(ModeReport {
                mode: durability.to_string(),
                not_supported: Some(format!(
                    "not supported: nats-server {version} has no sync_interval (needs >= {})",
                    durability.min_version()
                )),
                figures: None,
            });
            continue;
        }
        let dir = work.path().join(durability.to_string());
        let figures = run_mode(&bin, durability, &plan, &dir).await?;
        // The mode's store can be large (N events twice): free the disk before the next mode.
        let _ = std::fs::remove_dir_all(&dir);
        load.push(format!("after {durability} {}", load_average()));
        modes.push(ModeReport {
            mode: durability.to_string(),
            not_supported: None,
            figures: Some(figures),
        });
    }

    let heartbeats = if plan.heartbeat_vms > 0 {
        tracing::info!(
            vms = plan.heartbeat_vms,
            interval = ?plan.heartbeat_interval,
            "heartbeats: a lost VM among heartbeating ones, and the writer's CPU"
        );
        let dir = work.path().join("heartbeats");
        let figures = heartbeats::measure(&bin, &plan, &dir).await?;
        let _ = std::fs::remove_dir_all(&dir);
        load.push(format!("after heartbeats {}", load_average()));
        Some(figures)
    } else {
        None
    };

    let failover = if plan.failover_rounds > 0 {
        tracing::info!(
            rounds = plan.failover_rounds,
            "failover: kill -9 of the active writer"
        );
        let dir = work.path().join("failover");
        let figures = failover::measure(&bin, &plan, &dir).await?;
        let _ = std::fs::remove_dir_all(&dir);
        load.push(format!("after failover {}", load_average()));
        Some(figures)
    } else {
        None
    };

    let targets = report::evaluate(memory.as_ref(), &modes, heartbeats.as_ref());
    let report = BenchReport {
        machine: machine(),
        server: ServerInfo {
            bin: bin.display().to_string(),
            version: version.to_string(),
        },
        settings: Settings {
            quick: plan.quick,
            events: plan.events,
            phase_seconds: plan.duration.as_secs_f64(),
            max_commands_per_level: plan.quick.then_some(plan.max_commands),
            clients: plan.clients.clone(),
            vms: plan.vms,
            in_flight: plan.in_flight,
        },
        notes: vec![
            "the writer runs in this process: client tasks and the writer share one tokio runtime, and \
             the machine's cores with nats-server"
                .into(),
            "raw figures publish the writer's exact messages (subjects, headers, postcard envelopes), \
             built before the clock starts; raw replay decodes every envelope"
                .into(),
            "ratios and targets use the raw limits measured just before the orchestrator phases; \
             'after' repeats them once the NATS and HTTP phases are done: the gap shows how much \
             the machine's capacity moved during the run"
                .into(),
            "with sync always on servers >= 2.12 the writer groups the appends decided while one \
             is in flight into one atomic batch (group commit, as `serve` does with its embedded \
             server); in the default mode, and on older servers, it pipelines them one by one. \
             The raw atomic-batch rate sends batches as large as the most clients of the run, \
             one at a time"
                .into(),
            "with sync always on servers >= 2.12 the rebuild stream is filled with atomic batches \
             (one fsync per batch) into a stream of the log's configuration plus allow_atomic; \
             what is read back is the same"
                .into(),
            "writer memory is measured once (no NATS involved) and shown in each mode".into(),
            "heartbeats: on a server of their own, against a writer in a child process (`serve \
             --role writer`) whose CPU is read from /proc; idle is that writer serving an empty \
             cell, before the VMs are registered (a registered VM that sends nothing would be \
             lost within a window)"
                .into(),
            format!(
                "load average (1/5/15 min; other processes share the machine): {}",
                load.join("; ")
            ),
        ],
        memory,
        modes,
        heartbeats,
        failover,
        targets,
    };
    println!("{}", report.render());
    let json = serde_json::to_vec_pretty(&report).map_err(|e| BenchError::Setup(e.to_string()))?;
    std::fs::write(&args.json_out, json).map_err(|source| BenchError::Io {
        path: args.json_out.clone(),
        source,
    })?;
    tracing::info!(path = %args.json_out.display(), "results written");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the benchmark for real: `cargo test --release -p orchestrator-bench --lib
    /// tests::run_bench -- --ignored --nocapture`, with `BENCH_ARGS="--quick"` (any of the binary's
    /// flags) and `NATS_SERVER_BIN` as wanted; it needs the `orchestrator` binary built beside it.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "starts nats-servers and runs for minutes; a benchmark, not a test"]
    async fn run_bench() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "orchestrator_bench=info,warn".into()),
            )
            .with_writer(std::io::stderr)
            .try_init();
        let extra = std::env::var("BENCH_ARGS").unwrap_or_default();
        let argv = std::iter::once("bench").chain(extra.split_whitespace());
        let cli = Cli::parse_from(argv);
        let report = run(cli.args).await.expect("the benchmark runs");
        assert!(!report.modes.is_empty());
    }

    #[test]
    fn quick_plan_is_small() {
        let plan = Plan::from_args(&BenchArgs {
            quick: true,
            ..BenchArgs::default()
        })
        .unwrap();
        assert_eq!(plan.events, 20_000);
        assert_eq!(plan.duration, Duration::from_secs(1));
        assert_eq!(plan.heartbeat_vms, 1_000);
        assert_eq!(plan.heartbeat_interval, Duration::from_secs(1));
        assert!(Plan::from_args(&BenchArgs {
            heartbeat_interval: Some(Duration::from_millis(10)),
            ..BenchArgs::default()
        })
        .is_err());
        assert!(Plan::from_args(&BenchArgs {
            clients: vec![0],
            ..BenchArgs::default()
        })
        .is_err());
    }
}
