//! What a local `nats-server` is started with: its binary, store, port and durability, and the
//! configuration file rendered from them.

use std::env;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::{NatsAuth, AUTH_FILE};
use super::{Durability, NatsServerError};

/// The environment variable that names the `nats-server` binary to run.
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// Where Debian's `nats-server` package puts the binary.
pub const DEBIAN_NATS_SERVER: &str = "/usr/sbin/nats-server";

/// The only address the server listens on: it is a local server for this machine's processes.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The file, under the data dir, that the server's configuration is written to.
pub const CONFIG_FILE: &str = "nats-server.conf";

/// The file, under the data dir, that receives the server's stdout and stderr (appended across restarts).
pub const LOG_FILE: &str = "nats-server.log";

/// The file, under the data dir, that a secured server writes its pid to.
pub const PID_FILE: &str = "nats-server.pid";

/// The file, under the data dir, that names a secured server (see [`NatsServerConfig::render_security`]).
pub const NAME_FILE: &str = "server-name.conf";

/// The directory, under the data dir, that holds JetStream's store.
pub const STORE_DIR: &str = "jetstream";

/// How to start a local `nats-server`. Build it with [`NatsServerConfig::new`] or
/// [`NatsServerConfig::from_env`], then adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServerConfig {
    /// The `nats-server` binary.
    pub bin: PathBuf,
    /// The server's directory: its config file, log and JetStream store live here. Created if missing.
    pub data_dir: PathBuf,
    /// The client port on 127.0.0.1; `0` picks a free one at start (and keeps it across restarts).
    pub port: u16,
    /// The fsync mode; [`Durability::SyncAlways`] needs a server >= 2.10.
    pub durability: Durability,
    /// JetStream's limit on memory-backed streams, in bytes.
    pub max_memory_store: u64,
    /// JetStream's limit on file-backed streams, in bytes.
    pub max_file_store: u64,
    /// How long a start may take before it is given up (the server is then killed).
    pub ready_timeout: Duration,
    /// How long a graceful stop may take after SIGTERM before the server is killed.
    pub stop_timeout: Duration,
    /// Start the server in a process group of its own, so that a Ctrl-C at the terminal reaches only
    /// this process, which can then drain its clients before it stops the server. The price: if this
    /// process is killed outright, the server outlives it. Off by default (tests want the server to go
    /// down with the test process).
    pub own_process_group: bool,
    /// The server's name. `None`: a new random name at each launch (a lone server). A cluster node
    /// needs the same name across restarts, since JetStream's replication knows its peers by name.
    pub server_name: Option<String>,
    /// Membership of a JetStream cluster on this machine; `None` for a lone server.
    pub cluster: Option<ClusterMembership>,
    /// Users and their permissions; `None`: any client is let in (and may do anything).
    pub auth: Option<NatsAuth>,
    /// The server's TLS certificate; `None`: plain TCP.
    pub tls: Option<NatsTls>,
}

/// How often a cluster node PINGs its routes and clients (a duration in the server's syntax).
pub const CLUSTER_PING_INTERVAL: &str = "1s";
/// PINGs a cluster node's peer may leave unanswered before the node drops it.
pub const CLUSTER_PING_MAX: u32 = 3;

/// What makes a server one node of a cluster: the cluster's name, the port this node accepts routes
/// on (loopback), and the route ports of every node (its own included, which the server skips).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMembership {
    /// The cluster's name, the same on every node.
    pub name: String,
    /// This node's route port on 127.0.0.1.
    pub route_port: u16,
    /// The route ports of all the nodes.
    pub routes: Vec<u16>,
}

/// A server's TLS certificate and key, and the CA its clients in this process trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTls {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA certificate (PEM) this process's clients verify the server with; `None`: the
    /// certificate itself (a self-signed one).
    pub ca: Option<PathBuf>,
}

impl NatsTls {
    /// The certificate clients trust: the CA, else the certificate itself.
    pub fn client_root(&self) -> &Path {
        self.ca.as_deref().unwrap_or(&self.cert)
    }
}

impl NatsServerConfig {
    /// A config for `bin` storing under `data_dir`: free port, [`Durability::Default`], 256 MiB of
    /// memory store, 8 GiB of file store, 10 s to start and to stop.
    pub fn new(bin: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        NatsServerConfig {
            bin: bin.into(),
            data_dir: data_dir.into(),
            port: 0,
            durability: Durability::Default,
            max_memory_store: 256 * 1024 * 1024,
            max_file_store: 8 * 1024 * 1024 * 1024,
            ready_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            own_process_group: false,
            server_name: None,
            cluster: None,
            auth: None,
            tls: None,
        }
    }

    /// [`NatsServerConfig::new`] with the binary chosen by [`resolve_binary`].
    pub fn from_env(data_dir: impl Into<PathBuf>) -> Result<Self, NatsServerError> {
        Ok(NatsServerConfig::new(resolve_binary()?, data_dir))
    }

    /// Where the configuration file is written.
    pub fn config_path(&self) -> PathBuf {
        self.data_dir.join(CONFIG_FILE)
    }

    /// Where the server's output goes.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// Where JetStream keeps its streams.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join(STORE_DIR)
    }

    /// The configuration file for a server listening on `port`. `sync_interval` appears only for
    /// [`Durability::SyncAlways`], since 2.9 refuses the key. Fails on a store path that cannot be
    /// written as a quoted string of the config language (not UTF-8, or holding `"`, `\` or a control
    /// character).
    pub fn render(&self, port: u16) -> Result<String, NatsServerError> {
        let store_dir = self.store_dir();
        let store =
            quotable(&store_dir).ok_or(NatsServerError::UnsupportedPath(store_dir.clone()))?;
        let mut text = String::new();
        // Writing into a String cannot fail, hence the ignored fmt::Results below.
        let _ = writeln!(
            text,
            "# Written by the orchestrator at each start; edits are overwritten."
        );
        let _ = writeln!(text, "listen: \"{LOOPBACK}:{port}\"");
        let _ = writeln!(text, "jetstream {{");
        let _ = writeln!(text, "  store_dir: \"{store}\"");
        let _ = writeln!(text, "  max_memory_store: {}", self.max_memory_store);
        let _ = writeln!(text, "  max_file_store: {}", self.max_file_store);
        if self.durability == Durability::SyncAlways {
            let _ = writeln!(text, "  sync_interval: always");
        }
        let _ = writeln!(text, "}}");
        if let Some(cluster) = &self.cluster {
            let name = cluster.name.as_str();
            if !plain_name(name) {
                return Err(NatsServerError::UnsupportedName(name.to_owned()));
            }
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|port| format!("\"nats-route://{LOOPBACK}:{port}\""))
                .collect();
            // Servers PING each other (routes) and their clients every second and drop a peer that
            // misses three: a frozen node's routes then close in seconds, not the default minutes,
            // and with them the subscriptions learned through it. Until then the others route a
            // share of every queue group's messages (the writer's commands) to a subscription
            // that was on the frozen node and is gone, and those requests are lost.
            let _ = writeln!(text, "ping_interval: \"{CLUSTER_PING_INTERVAL}\"");
            let _ = writeln!(text, "ping_max: {CLUSTER_PING_MAX}");
            let _ = writeln!(text, "cluster {{");
            let _ = writeln!(text, "  name: \"{name}\"");
            let _ = writeln!(text, "  listen: \"{LOOPBACK}:{}\"", cluster.route_port);
            let _ = writeln!(text, "  routes: [{}]", routes.join(", "));
            let _ = writeln!(text, "}}");
        }
        text.push_str(&self.render_security()?);
        Ok(text)
    }

    /// Where the `authorization` block is written when [`Self::auth`] is set.
    pub fn auth_path(&self) -> PathBuf {
        self.data_dir.join(AUTH_FILE)
    }

    /// Where the server writes its pid when [`Self::auth`] is set, so `orchestrator nats-user add`
    /// can make it reload its users (SIGHUP).
    pub fn pid_path(&self) -> PathBuf {
        self.data_dir.join(PID_FILE)
    }

    /// The lines that secure the server: the include of the users' file and the pid file (with
    /// [`Self::auth`]), the `tls` block (with [`Self::tls`]). Empty when neither is set.
    pub fn render_security(&self) -> Result<String, NatsServerError> {
        let mut text = String::new();
        if self.auth.is_some() {
            let pid = self.pid_path();
            let pid = quotable(&pid).ok_or(NatsServerError::UnsupportedPath(pid.clone()))?;
            // Writing into a String cannot fail, hence the ignored fmt::Results below.
            let _ = writeln!(text, "pid_file: \"{pid}\"");
            let _ = writeln!(text, "include {AUTH_FILE}");
            // A reload (SIGHUP) reads the name from the config: without it, the name given on the
            // command line would count as a change, which the server refuses to reload.
            let _ = writeln!(text, "include {NAME_FILE}");
        }
        if let Some(tls) = &self.tls {
            let quote = |path: &Path| {
                quotable(path)
                    .map(str::to_owned)
                    .ok_or(NatsServerError::UnsupportedPath(path.to_owned()))
            };
            let _ = writeln!(text, "tls {{");
            let _ = writeln!(text, "  cert_file: \"{}\"", quote(&tls.cert)?);
            let _ = writeln!(text, "  key_file: \"{}\"", quote(&tls.key)?);
            let _ = writeln!(text, "}}");
        }
        Ok(text)
    }
}

/// Whether `name` is a server or cluster name this module writes: letters, digits, `-` and `_`.
pub(super) fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The path as text fit for a double-quoted config string, if it is one.
fn quotable(path: &Path) -> Option<&str> {
    let text = path.to_str()?;
    let plain = !text
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control());
    plain.then_some(text)
}

/// The `nats-server` binary to run: `$NATS_SERVER_BIN` if set (and not empty), else the first that
/// exists of [`DEBIAN_NATS_SERVER`] and `nats-server` on `PATH`. Never picks by `PATH` order first,
/// since two different server versions may be installed.
pub fn resolve_binary() -> Result<PathBuf, NatsServerError> {
    if let Some(bin) = env::var_os(NATS_SERVER_BIN_ENV).filter(|bin| !bin.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let debian = PathBuf::from(DEBIAN_NATS_SERVER);
    if debian.is_file() {
        return Ok(debian);
    }
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(NatsServerError::BinaryNotFound)
}

/// A port on 127.0.0.1 that was free a moment ago (bound, read, released). Another process may take it
/// before the server binds it; [`super::NatsServer::start`] retries on a fresh port then.
pub fn free_port() -> Result<u16, NatsServerError> {
    let listener = TcpListener::bind((LOOPBACK, 0)).map_err(NatsServerError::FreePort)?;
    let port = listener
        .local_addr()
        .map_err(NatsServerError::FreePort)?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(durability: Durability) -> NatsServerConfig {
        NatsServerConfig {
            durability,
            ..NatsServerConfig::new("/usr/sbin/nats-server", "/var/lib/orchestrator/nats")
        }
    }

    #[test]
    fn default_durability_renders_no_sync_interval() {
        let text = config(Durability::Default)
            .render(4333)
            .expect("plain path");
        assert!(!text.contains("sync_interval"), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:4333\""), "{text}");
        assert!(
            text.contains("store_dir: \"/var/lib/orchestrator/nats/jetstream\""),
            "{text}"
        );
        assert!(text.contains("max_file_store: 8589934592"), "{text}");
    }

    #[test]
    fn sync_always_renders_sync_interval_inside_jetstream() {
        let text = config(Durability::SyncAlways)
            .render(4333)
            .expect("plain path");
        let jetstream = text.split("jetstream {").nth(1).expect("a jetstream block");
        assert!(jetstream.contains("sync_interval: always"), "{text}");
    }

    #[test]
    fn refuses_a_store_path_it_cannot_quote() {
        let mut config = config(Durability::Default);
        config.data_dir = PathBuf::from("/tmp/with\"quote");
        assert!(matches!(
            config.render(1),
            Err(NatsServerError::UnsupportedPath(_))
        ));
    }

    #[test]
    fn a_cluster_node_renders_its_routes() {
        let mut config = config(Durability::Default);
        config.cluster = Some(ClusterMembership {
            name: "orch".into(),
            route_port: 6001,
            routes: vec![6001, 6002, 6003],
        });
        let text = config.render(4333).expect("plain path");
        let cluster = text.split("cluster {").nth(1).expect("a cluster block");
        assert!(cluster.contains("name: \"orch\""), "{text}");
        assert!(cluster.contains("listen: \"127.0.0.1:6001\""), "{text}");
        assert!(
            text.contains("ping_interval: \"1s\"\nping_max: 3\n"),
            "{text}"
        );
        assert!(
            cluster.contains("\"nats-route://127.0.0.1:6002\", \"nats-route://127.0.0.1:6003\""),
            "{text}"
        );
        config.cluster.as_mut().unwrap().name = "a b".into();
        assert!(config.render(4333).is_err());
    }

    #[test]
    fn free_port_is_not_zero() {
        assert_ne!(free_port().expect("loopback can bind"), 0);
    }
}
