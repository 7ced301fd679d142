//! The `orchestrator-bench` binary: parses the flags, installs tracing, runs the benchmark from the
//! library. `orchestrator bench ...` runs this binary with the same flags.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use orchestrator_bench::BenchArgs;
use tracing_subscriber::EnvFilter;

/// Measure the orchestrator against the raw NATS limit, on servers of its own.
#[derive(Debug, Parser)]
#[command(name = "orchestrator-bench", version)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

/// mimalloc instead of glibc's malloc: a projection rebuild and a writer's cold start over a long
/// log run faster with it (measured in docs/performance.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,orchestrator_bench=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match orchestrator_bench::run(cli.args).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
