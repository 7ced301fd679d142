//! `orchestrator serve`: the whole system in one process (or one role of it), with an embedded,
//! supervised `nats-server` when no NATS URL is given.
//!
//! [`run`] starts the embedded server if asked, connects, makes sure the cell's stream exists, then
//! runs each role as a task: the **writer** ([`crate::writer::run`]), the **projector**
//! ([`crate::projections::projector::run`] with its `verify` responder) and the **bridge** (the HTTP
//! API, which always runs with a projector since it reads the projections). When `shutdown` fires,
//! or a role fails, every role is stopped, the NATS client drained, and the embedded server stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator_events::CellId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::DomainConfig;
use crate::log::{self, LogConfig, LogError, Reader};
use crate::nats_server::{
    binary_version, resolve_binary, Durability, NatsServer, NatsServerConfig, NatsServerError,
    ServerVersion,
};
use crate::projections::{projector, Opened, ProjectionError, Projections};
use crate::writer::{self, WriterConfig, WriterError};

/// The port the embedded `nats-server` listens on unless told otherwise; the client subcommands'
/// default URL points at it.
pub const DEFAULT_EMBEDDED_PORT: u16 = 4333;

/// How often the embedded server is checked on.
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);

/// Restarts of the embedded server that may fail in a row before `serve` gives up.
const MAX_RESTART_FAILURES: u32 = 5;

/// Where the log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsMode {
    /// A NATS server run by someone else, at this URL.
    External {
        /// e.g. `nats://127.0.0.1:4222`.
        url: String,
    },
    /// A `nats-server` this process starts, supervises and stops, storing under `<data-dir>/nats`.
    Embedded {
        /// The binary; `None`: [`resolve_binary`] (`$NATS_SERVER_BIN`, Debian's, `PATH`).
        bin: Option<PathBuf>,
        /// The client port on 127.0.0.1 (0: a free one).
        port: u16,
        /// The fsync mode; `None`: `always` when the server supports it (>= 2.10), else `default`.
        durability: Option<Durability>,
    },
}

/// Which roles run. The bridge implies a projector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The cell's writer (standby until it holds the lease).
    pub writer: bool,
    /// The projector, following the log into `<data-dir>/projections`.
    pub projector: bool,
    /// The HTTP bridge.
    pub bridge: bool,
}

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles {
        writer: true,
        projector: true,
        bridge: true,
    };

    /// The roles' names, for humans.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.writer {
            names.push("writer");
        }
        if self.projector || self.bridge {
            names.push("projector");
        }
        if self.bridge {
            names.push("bridge");
        }
        names
    }
}

/// Everything `serve` is configured with, read once at start.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The NATS server to use, or the embedded one.
    pub nats: NatsMode,
    /// Writer snapshots under `writer/`, projections under `projections/`, the embedded server under
    /// `nats/`.
    pub data_dir: PathBuf,
    /// The cell.
    pub cell: CellId,
    /// The stream's replicas (1 on one machine, 3 in production).
    pub replicas: usize,
    /// What runs.
    pub roles: Roles,
    /// The domain's tunables (every writer of a cell must use the same).
    pub domain: DomainConfig,
    /// The writer lease's time to live.
    pub lease_ttl: Duration,
    /// Where the HTTP bridge listens.
    pub listen: SocketAddr,
}

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be created. Check the path and permissions.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The embedded `nats-server` could not be started or stopped (see the variant for what to do).
    #[error("embedded nats-server: {0}")]
    NatsServer(#[from] NatsServerError),
    /// The embedded server died and could not be restarted; everything was stopped.
    #[error("embedded nats-server exited and {failures} restarts failed; last error: {last}")]
    NatsServerLost {
        /// Restarts tried.
        failures: u32,
        /// The last restart's error.
        last: String,
    },
    /// NATS could not be reached at start. Check the URL and that the server runs.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The stream could not be set up (a conflicting stream, JetStream disabled...).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The writer stopped with an error.
    #[error("writer: {0}")]
    Writer(#[from] WriterError),
    /// The projections failed (the store is locked by another process, or an event does not fit).
    #[error("projections: {0}")]
    Projection(#[from] ProjectionError),
    /// The `verify` responder could not subscribe.
    #[error("verify responder: {0}")]
    Admin(String),
    /// A role ended by itself, which it never should.
    #[error("the {0} role stopped unexpectedly")]
    RoleEnded(&'static str),
}

/// The `always`/`default` choice and what it means, for the start banner.
pub fn durability_meaning(durability: Durability) -> &'static str {
    match durability {
        Durability::SyncAlways => {
            "every event is fsynced before its command is acknowledged: an acknowledged command \
             survives a power loss"
        }
        Durability::Default => {
            "JetStream fsyncs every 2 minutes (60 s on 2.9): an acknowledged command survives a \
             crash of the process, not a power loss of this machine"
        }
    }
}

/// The durability to run: the one asked for, else `always` when `version` supports it.
pub fn choose_durability(asked: Option<Durability>, version: ServerVersion) -> Durability {
    asked.unwrap_or(if Durability::SyncAlways.supported_by(version) {
        Durability::SyncAlways
    } else {
        Durability::Default
    })
}

/// Runs `serve` until `shutdown` fires or a role fails.
pub async fn run(mut config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let data_dir_error = |source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
    config.data_dir = std::path::absolute(&config.data_dir).map_err(data_dir_error)?;
    let stop = shutdown.child_token();
    let (url, nats_line, supervisor) = match &config.nats {
        NatsMode::External { url } => (url.clone(), String::new(), None),
        NatsMode::Embedded {
            bin,
            port,
            durability,
        } => {
            let server = start_embedded(bin.clone(), *port, *durability, &config.data_dir).await?;
            let line = format!(
                "{} (embedded nats-server {}, pid {}, log {})\n  durability:  {}: {}",
                server.url(),
                server.version(),
                server.pid().unwrap_or(0),
                server.log_path().display(),
                server.durability(),
                durability_meaning(server.durability()),
            );
            let url = server.url();
            let nats_stop = CancellationToken::new();
            let handle = tokio::spawn(supervise(server, nats_stop.clone(), stop.clone()));
            (url, line, Some((handle, nats_stop)))
        }
    };
    let outcome = run_roles(&config, &url, &nats_line, stop).await;
    let mut stopped = Ok(());
    if let Some((handle, nats_stop)) = supervisor {
        nats_stop.cancel();
        stopped = match handle.await {
            Ok(r) => r,
            Err(join) => Err(ServeError::NatsServer(NatsServerError::Process(
                std::io::Error::other(join),
            ))),
        };
    }
    outcome.and(stopped)
}

async fn start_embedded(
    bin: Option<PathBuf>,
    port: u16,
    durability: Option<Durability>,
    data_dir: &Path,
) -> Result<NatsServer, ServeError> {
    let bin = match bin {
        Some(bin) => bin,
        None => resolve_binary()?,
    };
    let probe = bin.clone();
    let version = tokio::task::spawn_blocking(move || binary_version(&probe))
        .await
        .map_err(|join| NatsServerError::Process(std::io::Error::other(join)))??;
    let durability = choose_durability(durability, version);
    let config = NatsServerConfig {
        port,
        durability,
        // Ctrl-C at a terminal must reach only `serve`, which drains its clients before it stops
        // the server.
        own_process_group: true,
        ..NatsServerConfig::new(bin, data_dir.join("nats"))
    };
    tracing::info!(version = %version, port, durability = %durability, "starting the embedded nats-server");
    let server = NatsServer::start(config).await?;
    tracing::info!(
        url = %server.url(),
        pid = server.pid().unwrap_or(0),
        durability = %durability,
        meaning = durability_meaning(durability),
        "embedded nats-server running"
    );
    Ok(server)
}

/// Restarts the server whenever it exits, until `nats_stop`; then stops it. Gives up (and fires
/// `roles_stop`) after [`MAX_RESTART_FAILURES`] failed restarts in a row.
async fn supervise(
    mut server: NatsServer,
    nats_stop: CancellationToken,
    roles_stop: CancellationToken,
) -> Result<(), ServeError> {
    let mut failures = 0;
    let outcome = loop {
        tokio::select! {
            _ = nats_stop.cancelled() => break Ok(()),
            _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
        }
        if server.is_running() {
            continue;
        }
        tracing::error!(
            port = server.port(),
            "embedded nats-server exited unexpectedly, restarting it"
        );
        match server.restart().await {
            Ok(()) => {
                failures = 0;
                tracing::warn!(
                    pid = server.pid().unwrap_or(0),
                    port = server.port(),
                    "embedded nats-server restarted"
                );
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, failures, "restarting the embedded nats-server failed");
                if failures >= MAX_RESTART_FAILURES {
                    roles_stop.cancel();
                    break Err(ServeError::NatsServerLost {
                        failures,
                        last: e.to_string(),
                    });
                }
                tokio::select! {
                    _ = nats_stop.cancelled() => break Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500) * failures) => {}
                }
            }
        }
    };
    tracing::info!(
        pid = server.pid().unwrap_or(0),
        "stopping the embedded nats-server"
    );
    server.stop().await?;
    outcome
}

async fn connect(url: &str) -> Result<async_nats::Client, ServeError> {
    async_nats::ConnectOptions::new()
        .name("orchestrator serve")
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| ServeError::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

fn describe_opened(opened: &Opened) -> String {
    match opened {
        Opened::Resumed { checkpoint } => format!("resumed at checkpoint {checkpoint}"),
        Opened::Created => "created, building from the log".to_owned(),
        Opened::VersionChanged { found } => {
            format!("rebuilding from the log: the store had layout version {found}")
        }
        Opened::Unreadable { reason } => {
            format!("rebuilding from the log: the store was unreadable ({reason})")
        }
    }
}

/// Records the first failure and stops every role.
#[derive(Clone)]
struct Failures {
    first: std::sync::Arc<std::sync::Mutex<Option<ServeError>>>,
    stop: CancellationToken,
}

impl Failures {
    async fn watch<E: Into<ServeError>>(
        self,
        role: &'static str,
        task: impl std::future::Future<Output = Result<(), E>>,
    ) {
        let error = match task.await {
            Ok(()) if self.stop.is_cancelled() => return,
            Ok(()) => ServeError::RoleEnded(role),
            Err(e) => e.into(),
        };
        tracing::error!(role, error = %error, "role failed, shutting down");
        // A poisoned lock only means another role panicked while recording; keep the first error.
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert(error);
        }
        self.stop.cancel();
    }
}

async fn run_roles(
    config: &ServeConfig,
    url: &str,
    nats_line: &str,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let client = connect(url).await?;
    let nats_line = if nats_line.is_empty() {
        format!(
            "{url} (external nats-server {})\n  durability:  as configured on that server",
            client.server_info().version
        )
    } else {
        nats_line.to_owned()
    };
    let js = async_nats::jetstream::new(client.clone());
    let log_config = LogConfig {
        replicas: config.replicas,
        ..LogConfig::new(config.cell.clone())
    };
    log::ensure_stream(&js, &log_config).await?;
    let tracker = TaskTracker::new();
    let failures = Failures {
        first: Default::default(),
        stop: stop.clone(),
    };
    let roles = config.roles;
    let mut projections_line = "not run here".to_owned();
    let store = if roles.projector || roles.bridge {
        let (store, opened) = Projections::open(&config.data_dir.join("projections"))?;
        projections_line = describe_opened(&opened);
        match &opened {
            Opened::Resumed { .. } | Opened::Created => {
                tracing::info!(outcome = ?opened, "projections opened")
            }
            _ => tracing::warn!(outcome = ?opened, "projections rebuilt from the log"),
        }
        let reader = Reader::new(js.clone(), config.cell.clone()).await?;
        tracker.spawn(failures.clone().watch(
            "projector",
            projector::run(reader.clone(), store.clone(), stop.clone()),
        ));
        let responder =
            crate::admin::serve_projections(client.clone(), reader, store.clone(), stop.clone());
        tracker.spawn(failures.clone().watch("verify responder", async move {
            responder
                .await
                .map_err(|e| ServeError::Admin(e.to_string()))
        }));
        Some(store)
    } else {
        None
    };
    if roles.writer {
        let writer_config = WriterConfig {
            log: log_config.clone(),
            domain: config.domain.clone(),
            // Snapshots go to `<data-dir>/writer/<cell>.snapshot`: the writer adds `writer/`.
            data_dir: Some(config.data_dir.clone()),
            lease_ttl: config.lease_ttl,
            ..WriterConfig::new(config.cell.clone())
        };
        tracker.spawn(failures.clone().watch(
            "writer",
            writer::run(client.clone(), writer_config, stop.clone()),
        ));
    }
    let mut http_line = "not run here".to_owned();
    if roles.bridge {
        // TODO(bridge): switch on once `src/http/mod.rs` provides `run_bridge`:
        // tracker.spawn(failures.clone().watch("bridge", crate::http::run_bridge(bridge, client.clone(), store.clone(), stop.clone())));
        let _ = &store;
        http_line = format!("http://{} (bridge not built yet)", config.listen);
        tracing::warn!("the HTTP bridge is not part of this build yet");
    }
    tracker.close();
    println!("orchestrator serve");
    println!("  cell:        {}", config.cell);
    println!("  roles:       {}", roles.names().join(", "));
    println!("  data dir:    {}", config.data_dir.display());
    println!("  NATS:        {nats_line}");
    println!("  HTTP:        {http_line}");
    println!("  projections: {projections_line}");
    println!("ready (Ctrl-C or SIGTERM stops it)");
    stop.cancelled().await;
    tracing::info!("shutting down: waiting for the roles to finish");
    tracker.wait().await;
    if let Err(e) = client.drain().await {
        tracing::warn!(error = %e, "draining the NATS client");
    }
    tracing::info!("stopped");
    // A poisoned lock only means a role panicked while recording; nothing more to report then.
    let first = failures.first.lock().ok().and_then(|mut f| f.take());
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
