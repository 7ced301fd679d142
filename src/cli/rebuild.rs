//! `orchestrator rebuild`: clears the projections of a data dir and rebuilds them from the whole log,
//! with a progress bar. Refuses while a running `serve` holds the store.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use orchestrator_events::CellId;

use super::{connect, CliError};
use crate::log::Reader;
use crate::nats_server::{resolve_binary, Durability, NatsServer, NatsServerConfig, STORE_DIR};
use crate::projections::{projector, ProjectionError, Projections};
use crate::serve::DEFAULT_EMBEDDED_PORT;

/// `rebuild`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Without --nats-url, rebuild reads from nats://127.0.0.1:<nats-port>; when nothing answers there and \
the data dir holds an embedded server's store (`serve` is stopped), it starts that server on a free \
port for the rebuild and stops it after.")]
pub struct RebuildArgs {
    /// The data dir whose `projections/` to rebuild.
    #[arg(long, env = "ORCH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The NATS server holding the log.
    #[arg(long, env = "ORCH_NATS_URL")]
    pub nats_url: Option<String>,
    /// The embedded server's port, tried when no --nats-url is given.
    #[arg(long, env = "ORCH_NATS_PORT", default_value_t = DEFAULT_EMBEDDED_PORT)]
    pub nats_port: u16,
    /// The cell.
    #[arg(long, env = "ORCH_CELL", default_value = "default")]
    pub cell: CellId,
    /// How long to wait for NATS.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Who to connect as, and TLS.
    #[command(flatten)]
    pub auth: super::nats_auth::ClientAuthArgs,
}

/// Connects to the URL given, or to the embedded port; `None` when no URL was given and nothing
/// answers on the embedded port but the data dir holds an embedded server's store.
async fn try_connect(args: &RebuildArgs) -> Result<Option<async_nats::Client>, CliError> {
    if let Some(url) = &args.nats_url {
        return Ok(Some(
            connect(url, "rebuild", args.timeout, &args.auth.client_auth()?).await?,
        ));
    }
    let url = format!("nats://127.0.0.1:{}", args.nats_port);
    match connect(&url, "rebuild", args.timeout, &args.auth.client_auth()?).await {
        Ok(client) => Ok(Some(client)),
        Err(_) if args.data_dir.join("nats").join(STORE_DIR).is_dir() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Starts the data dir's own nats-server on a free port, for the rebuild only.
async fn start_data_dir_server(
    args: &RebuildArgs,
) -> Result<(async_nats::Client, NatsServer), CliError> {
    let bin = resolve_binary().map_err(|e| CliError::Failed(e.to_string()))?;
    let config = NatsServerConfig {
        // Reads only: the fsync mode does not matter, and `default` runs on every version.
        durability: Durability::Default,
        ..NatsServerConfig::new(bin, args.data_dir.join("nats"))
    };
    let server = NatsServer::start(config)
        .await
        .map_err(|e| CliError::Failed(format!("starting the data dir's nats-server: {e}")))?;
    eprintln!(
        "nothing answers on port {}: started the data dir's nats-server {} at {} for the rebuild",
        args.nats_port,
        server.version(),
        server.url()
    );
    let client = connect(&server.url(), "rebuild", args.timeout, &Default::default()).await?;
    Ok((client, server))
}

/// Rebuilds.
pub async fn run(args: RebuildArgs) -> Result<(), CliError> {
    let connected = try_connect(&args).await?;
    let dir = args.data_dir.join("projections");
    let (store, opened) = Projections::open(&dir).map_err(|e| match e {
        ProjectionError::Locked { path } => CliError::Failed(format!(
            "the projection store {path} is in use by another process, most likely a running \
             `orchestrator serve`: stop it first (serve itself rebuilds a store whose version changed)"
        )),
        other => CliError::Failed(other.to_string()),
    })?;
    tracing::info!(outcome = ?opened, path = %dir.display(), "projection store opened");
    let (client, mut server) = match connected {
        Some(client) => (client, None),
        None => {
            let (client, server) = start_data_dir_server(&args).await?;
            (client, Some(server))
        }
    };
    let outcome = rebuild(&client, &args.cell, &store).await;
    // Best effort: everything was read.
    let _ = client.drain().await;
    if let Some(server) = server.as_mut() {
        if let Err(e) = server.stop().await {
            tracing::warn!(error = %e, "stopping the data dir's nats-server");
        }
    }
    let applied = outcome?;
    outln!(
        "rebuilt {} from {applied} events: checkpoint {}",
        dir.display(),
        store.checkpoint()
    );
    Ok(())
}

async fn rebuild(
    client: &async_nats::Client,
    cell: &CellId,
    store: &Projections,
) -> Result<u64, CliError> {
    let reader = Reader::new(async_nats::jetstream::new(client.clone()), cell.clone()).await?;
    // The store now follows this log (a rebuild clears it anyway).
    store
        .bind(&reader.identity().await?)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} rebuilding [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)",
        )
        // The template is a constant known to parse.
        .expect("a valid progress template")
        .progress_chars("=> "),
    );
    let applied = projector::rebuild(&reader, store, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await
    .map_err(|e| match e {
        ProjectionError::Log(reason) => CliError::Unavailable(format!("reading the log: {reason}")),
        other => CliError::Failed(other.to_string()),
    });
    bar.finish_and_clear();
    applied
}
