//! `orchestrator serve`: the whole system in one process (or one role of it), with an embedded,
//! supervised `nats-server` when no NATS URL is given.
//!
//! [`run`] starts the embedded server if asked, connects, makes sure the cell's stream exists, then
//! runs each role as a task on a NATS connection of its own: the **writer**
//! ([`crate::writer::run`]), the **projector** ([`crate::projections::projector::run`] with its
//! `verify` responder) and the **bridge** (the HTTP API, which always runs with a projector since it
//! reads the projections; its event feeds have a connection of their own too) and the **feed**
//! ([`crate::feed::run`]: every event republished as a CloudEvent into `ORCH_<CELL>_FEED`).
//!
//! One role's failure never stops another: a role that fails (or ends by itself) is logged and
//! started again after a backoff (100 ms doubling to 5 s), while the others go on. Only a
//! configuration error at a role's first start (no tokens, the HTTP address in use, a conflicting
//! stream) stops everything, as does the embedded server when it cannot be restarted. When
//! `shutdown` fires every role is stopped, the NATS clients drained, and the embedded server
//! stopped.
//!
//! Every role registers its metrics into one [`Metrics`] registry of the process. The bridge shows
//! them on its `GET /metrics`; `--metrics-addr` serves them on a listener of their own (for a
//! writer or a projector without a bridge), supervised like a role.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orchestrator_events::CellId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::timers::TimerConfig;
use crate::domain::DomainConfig;
use crate::http::{BridgeArgs, HttpError};
use crate::log::connection::ClientAuth;
use crate::log::{self, LogConfig, LogError, Reader};
use crate::metrics::{Metrics, MetricsError};
use crate::nats_server::credentials::CredentialsError;
use crate::nats_server::{Durability, NatsRole, NatsServer, NatsServerError};
use crate::projections::{projector, Opened, ProjectionError, Projections};
use crate::writer::{self, WriterConfig, WriterError};

mod embedded;
mod security;
mod supervise;

pub use embedded::{choose_durability, durability_meaning, DEFAULT_EMBEDDED_PORT};
use embedded::{start_embedded, supervise};
pub use security::NatsSecurity;
use security::Secured;
use supervise::Failures;

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
        /// 1: a lone server; more: a JetStream cluster of that many nodes on this machine (client
        /// ports from `port` on, route ports after them, stores under `<data-dir>/nats/node-<i>`).
        nodes: usize,
    },
}

/// Whether the writer groups its appends into atomic batches ([`WriterConfig::group_commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GroupCommit {
    /// On when the embedded nats-server fsyncs every message (`sync_interval: always`), where one
    /// fsync per batch instead of per event is the gain; off otherwise (a client cannot see an
    /// external server's fsync policy, and without it a batch costs more than pipelined appends).
    #[default]
    Auto,
    /// Always (servers >= 2.12; older ones get pipelined appends all the same).
    On,
    /// Never: appends are pipelined one by one.
    Off,
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
    /// The JSON feed: the log republished as CloudEvents into the feed stream.
    pub feed: bool,
}

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles {
        writer: true,
        projector: true,
        bridge: true,
        feed: true,
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
        if self.feed {
            names.push("feed");
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
    /// Whether the roles were asked for by name. When they were not (every role by default) and the
    /// bridge has no tokens, the bridge is left out with a warning instead of failing the start.
    pub roles_explicit: bool,
    /// The domain's tunables (every writer of a cell must use the same).
    pub domain: DomainConfig,
    /// The writer lease's time to live.
    pub lease_ttl: Duration,
    /// Group commit.
    pub group_commit: GroupCommit,
    /// The cell's timeouts and heartbeat deadline.
    pub timers: TimerConfig,
    /// The HTTP bridge's settings (its address, tokens, limits).
    pub bridge: BridgeArgs,
    /// Where to serve `GET /metrics` on a listener of its own (no authentication), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// The feed stream's retention.
    pub feed: FeedRetention,
    /// NATS users and TLS (none by default).
    pub nats_security: NatsSecurity,
}

/// How long and how much the feed stream keeps (its replicas are the log's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedRetention {
    /// How long a message is kept (zero: no age limit).
    pub max_age: Duration,
    /// The most bytes kept, the oldest dropped first (`None`: no limit).
    pub max_bytes: Option<u64>,
}

impl Default for FeedRetention {
    fn default() -> Self {
        Self {
            max_age: crate::feed::DEFAULT_MAX_AGE,
            max_bytes: None,
        }
    }
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
    /// The embedded server's port is taken: another `serve` runs (or a nats-server left behind by a
    /// `serve` that was killed outright). Stop it, or choose another `--nats-port`.
    #[error(
        "port {port} is in use: another `orchestrator serve` (or a nats-server left by a killed one) \
         runs; stop it, or choose another --nats-port"
    )]
    PortInUse {
        /// The port.
        port: u16,
    },
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
    /// The HTTP bridge could not start or failed (no tokens, address in use...).
    #[error("HTTP bridge: {0}")]
    Http(#[from] HttpError),
    /// The metrics listener could not start (its address in use...) or failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The feed role failed (see the variant for what to do).
    #[error("feed: {0}")]
    Feed(#[from] crate::feed::FeedError),
    /// The `verify` responder could not subscribe.
    #[error("verify responder: {0}")]
    Admin(String),
    /// The NATS security settings do not fit together (see the message).
    #[error("NATS security: {0}")]
    Security(String),
    /// The NATS credentials file could not be read or written (see the variant).
    #[error("NATS credentials: {0}")]
    Credentials(#[from] CredentialsError),
    /// A role ended by itself, which it never should.
    #[error("the {0} role stopped unexpectedly")]
    RoleEnded(&'static str),
}

/// Runs `serve` until `shutdown` fires or a role fails.
pub async fn run(mut config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let data_dir_error = |source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    let no_tokens = config.bridge.tokens.is_none() && config.bridge.tokens_file.is_none();
    if config.roles.bridge && config.roles_explicit && no_tokens {
        return Err(HttpError::Config(
            "no tokens: set ORCH_TOKENS (token=role:id,...) or --tokens-file".into(),
        )
        .into());
    }
    std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
    config.data_dir = std::path::absolute(&config.data_dir).map_err(data_dir_error)?;
    let embedded = matches!(config.nats, NatsMode::Embedded { .. });
    let secured = config
        .nats_security
        .resolve(embedded, &config.data_dir, &config.cell)?;
    let stop = shutdown.child_token();
    let mut fsync_each = false;
    let (url, nats_line, supervisor) = match &config.nats {
        NatsMode::External { url } => (url.clone(), String::new(), None),
        NatsMode::Embedded {
            bin,
            port,
            durability,
            nodes,
        } => {
            let servers = start_embedded(
                bin.clone(),
                *port,
                *durability,
                *nodes,
                &config.data_dir,
                &secured,
            )
            .await?;
            let durability = servers[0].durability();
            fsync_each = durability == Durability::SyncAlways;
            let url = servers
                .iter()
                .map(NatsServer::url)
                .collect::<Vec<_>>()
                .join(",");
            let what = match servers.len() {
                1 => format!("embedded nats-server {}", servers[0].version()),
                n => format!(
                    "embedded {n}-node cluster of nats-server {}",
                    servers[0].version()
                ),
            };
            let pids: Vec<String> = servers
                .iter()
                .map(|s| s.pid().unwrap_or(0).to_string())
                .collect();
            let logs: Vec<String> = servers
                .iter()
                .map(|s| s.log_path().display().to_string())
                .collect();
            let line = format!(
                "{url} ({what}, pid {}, log {})\n  durability:  {durability}: {}",
                pids.join(" "),
                logs.join(" "),
                durability_meaning(durability),
            );
            let nats_stop = CancellationToken::new();
            let handle = tokio::spawn(supervise(servers, nats_stop.clone(), stop.clone()));
            (url, line, Some((handle, nats_stop)))
        }
    };
    if config.group_commit == GroupCommit::Auto {
        config.group_commit = if fsync_each {
            GroupCommit::On
        } else {
            GroupCommit::Off
        };
    }
    let outcome = run_roles(&config, &url, &nats_line, &secured, stop).await;
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
    let outcome = outcome.and(stopped);
    match &outcome {
        Ok(()) => tracing::info!("serve stopped"),
        Err(e) => tracing::error!(error = %e, "serve stopped with an error"),
    }
    outcome
}

async fn connect(
    url: &str,
    role: &str,
    auth: &ClientAuth,
) -> Result<async_nats::Client, ServeError> {
    auth.apply(crate::log::connection::options(&format!(
        "orchestrator serve: {role}"
    )))
    .connection_timeout(Duration::from_secs(5))
    .connect(crate::log::connection::addresses(url))
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
            format!("rebuilding from the log: the store was unreadable ({reason}); moved aside")
        }
        Opened::Corrupt { reason } => {
            format!("rebuilding from the log: the store was damaged ({reason}); moved aside")
        }
        Opened::OtherLog { reason } => {
            format!("rebuilding from the log: the store was of another log ({reason})")
        }
    }
}

async fn run_roles(
    config: &ServeConfig,
    url: &str,
    nats_line: &str,
    secured: &Secured,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    // One connection per role, so that one role's traffic (a slow event feed, a replay) never
    // fills another's buffers. Setting the stream up may create it: the writer's user may.
    let roles = config.roles;
    let setup_role = if roles.writer {
        NatsRole::Writer
    } else if roles.feed {
        NatsRole::Feed
    } else {
        NatsRole::Projector
    };
    let client = connect(url, "setup", &secured.client(setup_role)?).await?;
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
    let metrics = Metrics::new();
    metrics.watch_connection("setup", client.clone());
    let mut clients = vec![client.clone()];
    let tracker = TaskTracker::new();
    let failures = Failures {
        first: Default::default(),
        stop: stop.clone(),
    };
    let mut projections_line = "not run here".to_owned();
    let store = if roles.projector || roles.bridge {
        let reader = Reader::new(js.clone(), config.cell.clone()).await?;
        let (store, opened) = Projections::open(&config.data_dir.join("projections"))?;
        let opened = store.bind(&reader.identity().await?)?.unwrap_or(opened);
        projections_line = describe_opened(&opened);
        match &opened {
            Opened::Resumed { .. } | Opened::Created => {
                tracing::info!(outcome = ?opened, "projections opened")
            }
            _ => tracing::warn!(outcome = ?opened, "projections rebuilt from the log"),
        }
        let projector_client =
            connect(url, "projector", &secured.client(NatsRole::Projector)?).await?;
        clients.push(projector_client.clone());
        metrics.watch_connection("projector", projector_client.clone());
        let reader = Reader::new(
            async_nats::jetstream::new(projector_client.clone()),
            config.cell.clone(),
        )
        .await?;
        metrics.watch_projections(store.clone(), reader.clone());
        let (r, st, sp) = (reader.clone(), store.clone(), stop.clone());
        tracker.spawn(failures.clone().supervise("projector", move || {
            projector::run(r.clone(), st.clone(), sp.clone())
        }));
        let (c, r, st, sp) = (projector_client, reader, store.clone(), stop.clone());
        tracker.spawn(failures.clone().supervise("verify responder", move || {
            let responder =
                crate::admin::serve_projections(c.clone(), r.clone(), st.clone(), sp.clone());
            async move {
                responder
                    .await
                    .map_err(|e| ServeError::Admin(e.to_string()))
            }
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
            group_commit: config.group_commit == GroupCommit::On,
            timers: config.timers,
            metrics: metrics.writer(),
            ..WriterConfig::new(config.cell.clone())
        };
        let writer_client = connect(url, "writer", &secured.client(NatsRole::Writer)?).await?;
        clients.push(writer_client.clone());
        metrics.watch_connection("writer", writer_client.clone());
        let sp = stop.clone();
        tracker.spawn(failures.clone().supervise("writer", move || {
            writer::run(writer_client.clone(), writer_config.clone(), sp.clone())
        }));
    }
    let mut feed_line = "not run here".to_owned();
    if roles.feed {
        let feed_config = crate::feed::FeedConfig {
            cell: config.cell.clone(),
            replicas: config.replicas,
            max_age: config.feed.max_age,
            max_bytes: config.feed.max_bytes,
            checkpoint_dir: Some(config.data_dir.join("feed")),
        };
        feed_line = format!(
            "{} over {} (kept {})",
            orchestrator_events::subject::feed_stream_name(&config.cell),
            orchestrator_events::subject::all_feed(&config.cell),
            match (config.feed.max_age.is_zero(), config.feed.max_bytes) {
                (true, None) => "forever".to_owned(),
                (false, None) => humantime::format_duration(config.feed.max_age).to_string(),
                (true, Some(b)) => format!("up to {b} bytes"),
                (false, Some(b)) => format!(
                    "{}, up to {b} bytes",
                    humantime::format_duration(config.feed.max_age)
                ),
            }
        );
        let feed_client = connect(url, "feed", &secured.client(NatsRole::Feed)?).await?;
        clients.push(feed_client.clone());
        metrics.watch_connection("feed", feed_client.clone());
        let (m, sp) = (metrics.feed(), stop.clone());
        tracker.spawn(failures.clone().supervise("feed", move || {
            crate::feed::run(
                feed_client.clone(),
                feed_config.clone(),
                m.clone(),
                sp.clone(),
            )
        }));
    }
    let mut bridge_listen: Option<SocketAddr> = None;
    let mut http_line = "not run here".to_owned();
    let no_tokens = config.bridge.tokens.is_none() && config.bridge.tokens_file.is_none();
    if roles.bridge && no_tokens && !config.roles_explicit {
        http_line =
            "off: no tokens (set ORCH_TOKENS=token=role:id,... or --tokens-file)".to_owned();
        tracing::warn!(
            "the HTTP bridge is off: it has no tokens; set ORCH_TOKENS=token=role:id,... or \
             --tokens-file, or ask for the roles by name (--role writer,projector)"
        );
    } else if let (true, Some(store)) = (roles.bridge, store) {
        http_line = format!("http://{}", config.bridge.listen);
        bridge_listen = Some(config.bridge.listen);
        let bridge_auth = secured.client(NatsRole::Bridge)?;
        let bridge_client = connect(url, "bridge", &bridge_auth).await?;
        let feeds_client = connect(url, "bridge event feeds", &bridge_auth).await?;
        clients.extend([bridge_client.clone(), feeds_client.clone()]);
        metrics.watch_connection("bridge event feeds", feeds_client.clone());
        let (args, cell, sp) = (config.bridge.clone(), config.cell.clone(), stop.clone());
        let m = metrics.clone();
        tracker.spawn(failures.clone().supervise("bridge", move || {
            crate::http::run_bridge(
                args.clone(),
                bridge_client.clone(),
                feeds_client.clone(),
                cell.clone(),
                store.clone(),
                sp.clone(),
                m.clone(),
            )
        }));
    }
    let metrics_line = match (config.metrics_addr, http_line.starts_with("http")) {
        (Some(addr), _) => format!("http://{addr}/metrics"),
        (None, true) => "GET /metrics on the bridge (operator or service token)".to_owned(),
        (None, false) => "not served (--metrics-addr)".to_owned(),
    };
    if let Some(addr) = config.metrics_addr {
        let sp = stop.clone();
        tracker.spawn(failures.clone().supervise("metrics listener", move || {
            crate::metrics::listener::run(addr, metrics.clone(), sp.clone())
        }));
    }
    tracker.close();
    if let Some(addr) = bridge_listen {
        wait_listening(addr, &stop).await;
    }
    println!("orchestrator serve");
    println!("  cell:        {}", config.cell);
    println!("  roles:       {}", roles.names().join(", "));
    println!("  data dir:    {}", config.data_dir.display());
    println!("  NATS:        {nats_line}");
    println!("  NATS auth:   {}", secured.describe());
    println!("  HTTP:        {http_line}");
    println!("  metrics:     {metrics_line}");
    println!("  projections: {projections_line}");
    println!("  feed:        {feed_line}");
    println!("ready (Ctrl-C or SIGTERM stops it)");
    stop.cancelled().await;
    tracing::info!("shutting down: waiting for the roles to finish");
    tracker.wait().await;
    for client in clients {
        if let Err(e) = client.drain().await {
            tracing::warn!(error = %e, "draining a NATS client");
        }
    }
    tracing::info!("roles stopped, NATS clients drained");
    // A poisoned lock only means a role panicked while recording; nothing more to report then.
    let first = failures.first.lock().ok().and_then(|mut f| f.take());
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits until the bridge accepts connections on `addr` (its task binds once its state is set up),
/// so that the `ready` line means the HTTP listener is up. Gives up after 30 s with a warning (the
/// bridge's supervisor logs why it could not start); does not wait for a port chosen by the system.
async fn wait_listening(addr: SocketAddr, stop: &CancellationToken) {
    if addr.port() == 0 {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline && !stop.is_cancelled() {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(%addr, "the HTTP bridge is not listening yet");
}
