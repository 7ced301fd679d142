//! `orchestrator serve`: its flags, turned into a [`ServeConfig`] for [`crate::serve::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use orchestrator_events::CellId;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::domain::timers::TimerConfig;
use crate::domain::DomainConfig;
use crate::http::BridgeArgs;
use crate::log::DEFAULT_LEASE_TTL;
use crate::nats_server::Durability;
use crate::serve::{
    FeedRetention, GroupCommit, NatsMode, NatsSecurity, Roles, ServeConfig, DEFAULT_EMBEDDED_PORT,
};

/// A role `serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The cell's writer: decides commands and appends events (standby until it holds the lease).
    Writer,
    /// The projector: follows the log into `<data-dir>/projections` and answers `verify`.
    Projector,
    /// The HTTP bridge (runs a projector too, since it reads the projections).
    Bridge,
    /// The JSON feed: republishes every event as a CloudEvent into `ORCH_<CELL>_FEED`.
    Feed,
    /// Every role (the default).
    All,
}

/// `serve`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Without --nats-url, serve starts its own nats-server (JetStream, loopback only, store under \
<data-dir>/nats) on 127.0.0.1:4333 (--nats-port), restarts it if it dies and stops it on exit. The \
other subcommands connect to nats://127.0.0.1:4333 by default. The binary is --nats-server-bin, \
$NATS_SERVER_BIN, /usr/sbin/nats-server or nats-server on PATH.

Durability of the embedded server: `always` fsyncs every event before its command is acknowledged \
(survives a power loss; needs nats-server >= 2.10, the default there); `default` leaves fsync to \
JetStream's schedule (every 2 minutes, 60 s on 2.9: survives a process crash, not a power loss; the \
default on 2.9).")]
pub struct ServeArgs {
    /// A TOML file of serve's settings, its keys the flags' names (`nats-url = "nats://…"`,
    /// `role = ["writer"]`). Precedence: flag > environment > file > default.
    #[arg(long, env = "ORCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The roles to run (repeatable, or a comma list). Default: all.
    #[arg(long = "role", value_enum, value_delimiter = ',')]
    pub roles: Vec<Role>,
    /// A NATS server to use. Absent: start and supervise an embedded nats-server.
    #[arg(long, env = "ORCH_NATS_URL")]
    pub nats_url: Option<String>,
    /// The embedded server's client port on 127.0.0.1.
    #[arg(long, env = "ORCH_NATS_PORT", default_value_t = DEFAULT_EMBEDDED_PORT)]
    pub nats_port: u16,
    /// The embedded server's fsync mode: `always` or `default`. Default: `always` on nats-server
    /// >= 2.10, else `default`.
    #[arg(long, env = "ORCH_DURABILITY", value_name = "always|default")]
    pub durability: Option<Durability>,
    /// Secure the embedded server: users with per-role subject permissions, from
    /// <data-dir>/nats/credentials.toml (one per role, generated at the first start, mode 0600);
    /// each role connects as its user. See docs/security.md.
    #[arg(long, env = "ORCH_NATS_AUTH")]
    pub nats_auth: bool,
    /// The NATS users file the roles connect with (default with --nats-auth:
    /// <data-dir>/nats/credentials.toml). With --nats-url: the users the external server knows.
    #[arg(long, env = "ORCH_NATS_CREDENTIALS", value_name = "FILE")]
    pub nats_credentials: Option<PathBuf>,
    /// The embedded server's TLS certificate (PEM); with --nats-tls-key, it speaks TLS only.
    #[arg(
        long,
        env = "ORCH_NATS_TLS_CERT",
        value_name = "FILE",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// The embedded server's TLS private key (PEM).
    #[arg(
        long,
        env = "ORCH_NATS_TLS_KEY",
        value_name = "FILE",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
    /// The CA (PEM) the roles verify the server's certificate with: default, the embedded server's
    /// certificate itself; with --nats-url it turns TLS on.
    #[arg(long, env = "ORCH_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// The nats-server binary for the embedded server.
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server_bin: Option<PathBuf>,
    /// Where writer snapshots, projections and the embedded server's store live.
    #[arg(long, env = "ORCH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The cell: a pool of VMs with its own writer and stream.
    #[arg(long, env = "ORCH_CELL", default_value = "default")]
    pub cell: CellId,
    /// The embedded NATS as a JetStream cluster of this many nodes on this machine (1: a lone
    /// server). Node i (from 0) takes client port --nats-port + i and route port --nats-port + N + i;
    /// its store is `<data-dir>/nats/node-<i+1>`. 3 is the production shape: one node may fail.
    #[arg(long, env = "ORCH_NATS_NODES", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=7))]
    pub nats_nodes: u16,
    /// Copies of the stream in a NATS cluster (1 on one machine, 3 in production). Default: the
    /// embedded nodes, up to 3; 1 with --nats-url.
    #[arg(long, env = "ORCH_REPLICAS")]
    pub replicas: Option<usize>,
    /// Sessions (not ended) a user may have at once.
    #[arg(long, env = "ORCH_MAX_SESSIONS_PER_USER", default_value_t = 2)]
    pub max_sessions_per_user: u32,
    /// How long a command id is remembered for idempotent retries (event time).
    #[arg(long, env = "ORCH_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_window: Duration,
    /// How many command ids are remembered at the most (the newest; about 60 bytes each). Every
    /// writer of a cell must use the same value.
    #[arg(long, env = "ORCH_MAX_REMEMBERED_COMMANDS", default_value_t = DomainConfig::default().max_remembered_commands)]
    pub max_remembered_commands: u64,
    /// The writer lease's time to live: a standby takes over 2/3 to 1.1 of it after the active
    /// writer died; an active writer that cannot renew it for this long (a pause, a partition)
    /// loses it, which is safe but costs a failover.
    #[arg(long, env = "ORCH_LEASE_TTL", default_value_t = DEFAULT_LEASE_TTL.into())]
    pub lease_ttl: humantime::Duration,
    /// Group commit: the appends decided while one is in flight leave as one atomic batch with one
    /// fsync (nats-server >= 2.12). `auto`: on when the embedded server fsyncs every message; with
    /// an external server, say `on` when it runs `sync_interval: always`.
    #[arg(long, env = "ORCH_GROUP_COMMIT", value_enum, default_value_t = GroupCommit::Auto)]
    pub group_commit: GroupCommit,
    /// A paused session ends with `pause_timeout` this long after it paused (`off`: never).
    #[arg(long, env = "ORCH_PAUSE_TIMEOUT", default_value = "10m", value_parser = parse_timeout)]
    pub pause_timeout: Timeout,
    /// A session ends with `max_length` this long after it started (`off`: never).
    #[arg(long, env = "ORCH_MAX_SESSION_LENGTH", default_value = "off", value_parser = parse_timeout)]
    pub max_session_length: Timeout,
    /// A `starting` session that is not queued ends with `placement_timeout` this long after it
    /// started (`off`: never). A queued session has the deadline its `wait_ms` gave.
    #[arg(long, env = "ORCH_PLACEMENT_TIMEOUT", default_value = "10m", value_parser = parse_timeout)]
    pub placement_timeout: Timeout,
    /// A VM that sends heartbeats is declared lost after missing this many of its intervals.
    #[arg(long, env = "ORCH_HEARTBEAT_MISSES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub heartbeat_misses: u32,
    /// Serve `GET /metrics` (every metric of this process, no authentication) on this address, a
    /// listener of its own: for a writer or a projector run without the bridge. The bridge also
    /// serves them on its own port, to operator and service tokens.
    #[arg(long, env = "ORCH_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How long the JSON feed stream (`ORCH_<CELL>_FEED`) keeps a message (`off`: no age limit).
    /// Applied to an existing feed stream at start.
    #[arg(long, env = "ORCH_FEED_MAX_AGE", default_value = "7d", value_parser = parse_timeout)]
    pub feed_max_age: Timeout,
    /// The most the feed stream keeps, the oldest dropped first: bytes, or with a K, M, G or T
    /// suffix (powers of 1024), or `off`. Applied to an existing feed stream at start.
    #[arg(long, env = "ORCH_FEED_MAX_BYTES", default_value = "off", value_parser = parse_bytes)]
    pub feed_max_bytes: Bytes,
    /// The HTTP bridge.
    #[command(flatten)]
    pub bridge: BridgeArgs,
}

impl ServeArgs {
    /// The roles asked for.
    pub fn roles(&self) -> Roles {
        if self.roles.is_empty() || self.roles.contains(&Role::All) {
            return Roles::ALL;
        }
        Roles {
            writer: self.roles.contains(&Role::Writer),
            projector: self.roles.contains(&Role::Projector),
            bridge: self.roles.contains(&Role::Bridge),
            feed: self.roles.contains(&Role::Feed),
        }
    }

    /// The configuration `serve` runs with.
    pub fn config(&self) -> Result<ServeConfig, CliError> {
        let lease_ttl: Duration = self.lease_ttl.into();
        if lease_ttl < Duration::from_millis(100) {
            return Err(CliError::Invalid(
                "--lease-ttl must be at least 100ms".into(),
            ));
        }
        let nodes = usize::from(self.nats_nodes);
        let replicas = match (self.replicas, &self.nats_url) {
            (Some(replicas), _) => replicas,
            (None, Some(_)) => 1,
            (None, None) => nodes.min(3),
        };
        if replicas == 0 {
            return Err(CliError::Invalid("--replicas must be at least 1".into()));
        }
        if self.nats_url.is_none() && replicas > nodes {
            return Err(CliError::Invalid(format!(
                "--replicas {replicas} needs at least as many embedded nodes (--nats-nodes {nodes})"
            )));
        }
        if self.nats_url.is_some() && nodes > 1 {
            return Err(CliError::Invalid(
                "--nats-nodes starts an embedded cluster: it cannot go with --nats-url".into(),
            ));
        }
        let window = i64::try_from(self.idempotency_window.as_millis())
            .map_err(|_| CliError::Invalid("--idempotency-window is too long".into()))?;
        // A retry inside the server's duplicate window must still find its command id: a shorter
        // idempotency window would let the server and the writer disagree about a retry.
        if self.idempotency_window < crate::log::DEFAULT_DUPLICATE_WINDOW {
            return Err(CliError::Invalid(format!(
                "--idempotency-window must be at least the stream's duplicate window ({})",
                humantime::format_duration(crate::log::DEFAULT_DUPLICATE_WINDOW)
            )));
        }
        if self.max_remembered_commands == 0 {
            return Err(CliError::Invalid(
                "--max-remembered-commands must be at least 1".into(),
            ));
        }
        let nats = match &self.nats_url {
            Some(url) => {
                if self.durability.is_some() {
                    tracing::warn!(
                        "--durability applies to the embedded server only: ignored with --nats-url"
                    );
                }
                NatsMode::External { url: url.clone() }
            }
            None => NatsMode::Embedded {
                bin: self.nats_server_bin.clone(),
                port: self.nats_port,
                durability: self.durability,
                nodes,
            },
        };
        Ok(ServeConfig {
            nats,
            data_dir: self.data_dir.clone(),
            cell: self.cell.clone(),
            replicas,
            roles: self.roles(),
            roles_explicit: !self.roles.is_empty(),
            domain: DomainConfig {
                max_sessions_per_user: self.max_sessions_per_user,
                idempotency_window_ms: window,
                max_remembered_commands: self.max_remembered_commands,
                ..DomainConfig::default()
            },
            lease_ttl,
            group_commit: self.group_commit,
            timers: TimerConfig {
                pause_timeout_ms: self.pause_timeout.ms(),
                max_session_ms: self.max_session_length.ms(),
                placement_timeout_ms: self.placement_timeout.ms(),
                heartbeat_misses: self.heartbeat_misses,
            },
            bridge: self.bridge.clone(),
            metrics_addr: self.metrics_addr,
            feed: FeedRetention {
                max_age: self.feed_max_age.0.unwrap_or_default(),
                max_bytes: self.feed_max_bytes.0,
            },
            nats_security: NatsSecurity {
                auth: self.nats_auth,
                credentials: self.nats_credentials.clone(),
                tls_cert: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
                tls_ca: self.nats_tls_ca.clone(),
            },
        })
    }
}

/// A timeout, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

impl Timeout {
    fn ms(self) -> Option<i64> {
        self.0
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Parses `off` or a duration such as `10m`.
fn parse_timeout(s: &str) -> Result<Timeout, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Timeout(None));
    }
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e}: a duration such as 10m, or off"))?;
    if d.is_zero() {
        return Err("0 would fire at once: use off".into());
    }
    Ok(Timeout(Some(d)))
}

/// A size in bytes, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub Option<u64>);

/// Parses `off` or a size such as `512M` (K, M, G, T: powers of 1024).
fn parse_bytes(s: &str) -> Result<Bytes, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Bytes(None));
    }
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return Err(format!("{s}: a size such as 512M or 10G, or off")),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|e| format!("{s}: {e}: a size such as 512M or 10G, or off"))?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("0 would keep nothing: use off for no limit".into()),
        Some(b) if b <= i64::MAX as u64 => Ok(Bytes(Some(b))),
        _ => Err(format!("{s} is too large")),
    }
}

/// Runs `serve` until `shutdown`.
pub async fn run(args: ServeArgs, shutdown: CancellationToken) -> Result<(), CliError> {
    let config = args.config()?;
    crate::serve::run(config, shutdown)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, CliCommand};

    fn serve(args: &[&str]) -> ServeArgs {
        let argv = ["orchestrator", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("the flags parse").command {
            CliCommand::Serve(args) => *args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_idempotency_window_shorter_than_the_duplicate_window_is_refused() {
        let err = serve(&["--idempotency-window", "1m"]).config().unwrap_err();
        assert!(err.to_string().contains("duplicate window"), "{err}");
        assert!(serve(&["--idempotency-window", "2m"]).config().is_ok());
    }

    #[test]
    fn timeouts_are_durations_or_off() {
        let c = serve(&[
            "--pause-timeout",
            "off",
            "--max-session-length",
            "4h",
            "--heartbeat-misses",
            "5",
        ])
        .config()
        .unwrap();
        assert_eq!(c.timers.pause_timeout_ms, None);
        assert_eq!(c.timers.max_session_ms, Some(4 * 3600 * 1000));
        assert_eq!(c.timers.placement_timeout_ms, Some(600_000), "the default");
        assert_eq!(c.timers.heartbeat_misses, 5);
        let argv = ["orchestrator", "serve", "--pause-timeout", "0s"];
        assert!(Cli::try_parse_from(argv).is_err(), "0 would fire at once");
    }

    #[test]
    fn the_feed_is_a_role_with_its_retention() {
        let c = serve(&[]).config().unwrap();
        assert!(c.roles.feed, "on by default");
        assert_eq!(c.feed.max_age, crate::feed::DEFAULT_MAX_AGE);
        assert_eq!(c.feed.max_bytes, None);
        let c = serve(&["--role", "writer,feed", "--feed-max-age", "1h"])
            .config()
            .unwrap();
        assert!(c.roles.writer && c.roles.feed && !c.roles.projector && !c.roles.bridge);
        assert_eq!(c.feed.max_age, Duration::from_secs(3600));
        let c = serve(&["--role", "writer", "--feed-max-bytes", "2G"])
            .config()
            .unwrap();
        assert!(!c.roles.feed);
        assert_eq!(c.feed.max_bytes, Some(2 << 30));
        assert_eq!(parse_bytes("100").unwrap(), Bytes(Some(100)));
        assert_eq!(parse_bytes("off").unwrap(), Bytes(None));
        assert!(parse_bytes("0").is_err() && parse_bytes("5X").is_err());
        let off = serve(&["--feed-max-age", "off"]).config().unwrap();
        assert!(off.feed.max_age.is_zero(), "no age limit");
    }
}
