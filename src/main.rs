//! The `orchestrator` binary: parses the command line, installs tracing, wires Ctrl-C and SIGTERM to
//! a shutdown token, and runs the subcommand from the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use orchestrator::cli::{self, EXIT_USAGE};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a projection rebuild and a writer's cold start over a long
/// log run faster with it (measured in docs/performance.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cli::config::parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            // Nothing useful to do if the terminal is gone.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.default_log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signals(shutdown.clone()));
    cli::run(cli, shutdown).await
}

/// Cancels `shutdown` on SIGINT or SIGTERM. Shutdown is bounded (an embedded nats-server that
/// ignores SIGTERM is killed after a timeout), so later signals only say it is under way: exiting
/// at once would leave the embedded server running.
async fn on_signals(shutdown: CancellationToken) {
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => (int, term),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for signals; Ctrl-C will not stop gracefully");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if shutdown.is_cancelled() {
            tracing::warn!("already shutting down");
        } else {
            tracing::info!("signal received: shutting down");
            shutdown.cancel();
        }
    }
}
