//! Starts and supervises a local `nats-server` with JetStream: the embedded default of `serve`, and the
//! one-server-per-test of the integration tests.
//!
//! [`NatsServer::start`] writes a config file into the data dir (loopback only, the JetStream store
//! under the data dir, `sync_interval` only when asked), spawns the binary with its output appended to
//! a log file there, and returns once JetStream answers. The handle stops it gracefully
//! ([`NatsServer::stop`]), kills it ([`NatsServer::kill`], for crash tests), restarts it on the same
//! port and store ([`NatsServer::restart`], so clients reconnect by themselves), and kills it on drop.
//! With [`NatsServerConfig::auth`] it runs with users and per-role permissions ([`auth`], their
//! file [`credentials`]); with [`NatsServerConfig::tls`] it speaks TLS.

pub mod auth;
mod cluster;
mod config;
pub mod credentials;
mod error;
mod version;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::log::connection::ClientAuth;

pub use auth::{AuthError, NatsAuth, NatsRole, NatsUser};
pub use cluster::{ClusterSpec, NatsCluster, CLUSTER_NAME};
pub use config::{
    free_port, resolve_binary, ClusterMembership, NatsServerConfig, NatsTls, CONFIG_FILE,
    DEBIAN_NATS_SERVER, LOG_FILE, LOOPBACK, NATS_SERVER_BIN_ENV, PID_FILE, STORE_DIR,
};
pub use error::NatsServerError;
pub use version::{
    binary_version, Durability, ParseDurabilityError, ServerVersion, SYNC_ALWAYS_MIN_VERSION,
};

/// How often a starting or stopping server is checked on.
const POLL: Duration = Duration::from_millis(50);

/// How many fresh ports a start with `port: 0` tries when another process takes the picked one first.
const PORT_ATTEMPTS: usize = 3;

/// How many lines of the server's log an error carries.
const LOG_TAIL_LINES: usize = 30;

/// A running (or stopped, until restarted) local `nats-server`. Killed and reaped on drop.
#[derive(Debug)]
pub struct NatsServer {
    config: NatsServerConfig,
    version: ServerVersion,
    port: u16,
    child: Option<Child>,
    /// The `server_name` of the running process, new at each launch.
    name: String,
}

impl NatsServer {
    /// Starts a server as `config` says and waits until JetStream answers (up to
    /// `config.ready_timeout`). With `port: 0` it picks a free port, and picks another if the server
    /// finds it taken. Refuses [`Durability::SyncAlways`] on a server < 2.10 before starting anything.
    pub async fn start(config: NatsServerConfig) -> Result<NatsServer, NatsServerError> {
        let version = checked_version(&config.bin, config.durability).await?;
        fs::create_dir_all(&config.data_dir).map_err(|source| NatsServerError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let attempts = if config.port == 0 { PORT_ATTEMPTS } else { 1 };
        let mut attempt = 1;
        loop {
            let port = match config.port {
                0 => free_port()?,
                port => port,
            };
            let mut server = NatsServer {
                config: config.clone(),
                version,
                port,
                child: None,
                name: String::new(),
            };
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(NatsServerError::Exited { log_tail, .. })
                    if attempt < attempts && log_tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{LOOPBACK}:{}", self.port)
    }

    /// The client port; the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The version of the binary this server runs.
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// The fsync mode this server runs in.
    pub fn durability(&self) -> Durability {
        self.config.durability
    }

    /// The directory holding the config file, the log and the JetStream store.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The file the server's output is appended to.
    pub fn log_path(&self) -> PathBuf {
        self.config.log_path()
    }

    /// The config this server was started with (its `port` as asked, maybe 0; see [`Self::port`]).
    pub fn config(&self) -> &NatsServerConfig {
        &self.config
    }

    /// How a client of this process connects to this server: as the first user of `role` (any
    /// user if none has it) when the server has users, over TLS trusting its certificate's CA when
    /// it speaks TLS.
    pub fn client_auth(&self, role: NatsRole) -> ClientAuth {
        client_auth(&self.config, role)
    }

    /// The process id, while a process has been started and not yet stopped, killed or reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running; reaps it if it has exited, so a supervisor loop can call
    /// [`Self::restart`] then.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Stops the server gracefully: SIGTERM, so JetStream flushes its store, then waits up to
    /// `config.stop_timeout` and kills it if it is still there. Does nothing if it is not running.
    pub async fn stop(&mut self) -> Result<(), NatsServerError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child
            .try_wait()
            .map_err(NatsServerError::Process)?
            .is_none()
        {
            let pid = i32::try_from(child.id()).map_err(|_| {
                NatsServerError::Process(std::io::Error::other("pid does not fit an i32"))
            })?;
            match signal::kill(Pid::from_raw(pid), Signal::SIGTERM) {
                // ESRCH: it exited between try_wait and the signal; it is reaped below.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(err) => return Err(err.into()),
            }
            // A paused server (SIGSTOP) handles the SIGTERM only once it runs again.
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGCONT);
            let deadline = Instant::now() + self.config.stop_timeout;
            while child
                .try_wait()
                .map_err(NatsServerError::Process)?
                .is_none()
            {
                if Instant::now() >= deadline {
                    tracing::warn!(pid, "nats-server ignored SIGTERM, killing it");
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        self.kill()
    }

    /// Kills the server at once (SIGKILL) and reaps it: a crash, for tests. What JetStream had written
    /// to the OS survives; what it had not fsynced survives too, unless the machine loses power.
    pub fn kill(&mut self) -> Result<(), NatsServerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child
            .try_wait()
            .map_err(NatsServerError::Process)?
            .is_none()
        {
            child.kill().map_err(NatsServerError::Process)?;
        }
        child.wait().map_err(NatsServerError::Process)?;
        Ok(())
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but answers nothing, like a node stuck in a
    /// long pause. [`Self::resume`] thaws it. Does nothing if it is not running.
    pub fn pause(&mut self) -> Result<(), NatsServerError> {
        self.signal(Signal::SIGSTOP)
    }

    /// Thaws a process frozen by [`Self::pause`] (SIGCONT).
    pub fn resume(&mut self) -> Result<(), NatsServerError> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&mut self, signal: Signal) -> Result<(), NatsServerError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let pid = i32::try_from(pid).map_err(|_| {
            NatsServerError::Process(std::io::Error::other("pid does not fit an i32"))
        })?;
        match signal::kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// The name the running process was given (`--server_name`); empty before the first launch.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the server if it runs (gracefully), then starts it again on the same port with the same
    /// store, and waits until JetStream answers. Clients that reconnect find their streams.
    pub async fn restart(&mut self) -> Result<(), NatsServerError> {
        self.stop().await?;
        self.launch().await
    }

    /// Writes the config, spawns the process and waits until it is ready; kills it on failure.
    async fn launch(&mut self) -> Result<(), NatsServerError> {
        let log_start = self.spawn()?;
        self.await_ready(log_start).await
    }

    /// Waits until a spawned server is ready; kills it on failure.
    async fn await_ready(&mut self, log_start: u64) -> Result<(), NatsServerError> {
        let ready = self.wait_ready(log_start).await;
        if ready.is_err() {
            // Already failing: a kill error would hide the reason that matters.
            let _ = self.kill();
        }
        ready
    }

    /// Writes the config and spawns the process without waiting for it; returns where this launch's
    /// output starts in the log file.
    fn spawn(&mut self) -> Result<u64, NatsServerError> {
        let config_path = self.config.config_path();
        let rendered = self.config.render(self.port)?;
        if let Some(auth) = &self.config.auth {
            let path = self.config.auth_path();
            credentials::write_private(&path, &auth.render()?).map_err(|e| match e {
                credentials::CredentialsError::Io { path, source } => {
                    NatsServerError::Io { path, source }
                }
                other => NatsServerError::Process(std::io::Error::other(other.to_string())),
            })?;
        }
        fs::write(&config_path, rendered).map_err(|source| NatsServerError::Io {
            path: config_path.clone(),
            source,
        })?;
        let log_path = self.config.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| NatsServerError::Io {
                path: log_path.clone(),
                source,
            })?;
        let log_start = log
            .metadata()
            .map_err(|source| NatsServerError::Io {
                path: log_path.clone(),
                source,
            })?
            .len();
        let stderr = log.try_clone().map_err(|source| NatsServerError::Io {
            path: log_path.clone(),
            source,
        })?;
        // A lone server gets a name of this launch's own, so readiness is checked on this server and
        // not on another one that already holds the port; a cluster node keeps its configured name.
        self.name = match &self.config.server_name {
            Some(name) if config::plain_name(name) => name.clone(),
            Some(name) => return Err(NatsServerError::UnsupportedName(name.clone())),
            None => format!("orch-{}", uuid::Uuid::new_v4().simple()),
        };
        if self.config.auth.is_some() {
            let path = self.config.data_dir.join(config::NAME_FILE);
            let text = format!("server_name: \"{}\"\n", self.name);
            fs::write(&path, text).map_err(|source| NatsServerError::Io { path, source })?;
        }
        let mut command = Command::new(&self.config.bin);
        command
            .arg("-c")
            .arg(&config_path)
            .arg("--server_name")
            .arg(&self.name)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        if self.config.own_process_group {
            command.process_group(0);
        }
        let child = command.spawn().map_err(NatsServerError::Process)?;
        tracing::debug!(pid = child.id(), port = self.port, version = %self.version, name = %self.name, "nats-server spawned");
        self.child = Some(child);
        Ok(log_start)
    }

    /// Polls until JetStream answers, the process exits, or `ready_timeout` passes.
    async fn wait_ready(&mut self, log_start: u64) -> Result<(), NatsServerError> {
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().map_err(NatsServerError::Process)?,
                None => {
                    return Err(NatsServerError::Process(std::io::Error::other(
                        "not spawned",
                    )))
                }
            };
            if let Some(status) = exited {
                self.child = None;
                let log_tail = log_tail(&self.config.log_path(), log_start);
                return Err(NatsServerError::Exited { status, log_tail });
            }
            let auth = client_auth(&self.config, NatsRole::Operator);
            if jetstream_ready(self.port, &self.name, &auth).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log_tail = log_tail(&self.config.log_path(), log_start);
                return Err(NatsServerError::NotReady {
                    timeout: self.config.ready_timeout,
                    log_tail,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Nothing to do about a failure while dropping; the process is gone or will be reparented.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The version of `bin`, once it is known to support `durability`.
async fn checked_version(
    bin: &Path,
    durability: Durability,
) -> Result<ServerVersion, NatsServerError> {
    let bin = bin.to_owned();
    let version = tokio::task::spawn_blocking(move || binary_version(&bin))
        .await
        .map_err(|join| NatsServerError::Process(std::io::Error::other(join)))??;
    if !durability.supported_by(version) {
        return Err(NatsServerError::SyncAlwaysUnsupported { version });
    }
    Ok(version)
}

/// Whether the server on `port` is the one named `name`, accepts a client and answers JetStream's
/// account info without an error.
/// Asks `$JS.API.INFO` directly: async-nats' `query_account` expects fields 2.9 does not send.
async fn jetstream_ready(port: u16, name: &str, auth: &ClientAuth) -> bool {
    // A bare TCP connect first: cheap while the server is still binding its port.
    if tokio::net::TcpStream::connect((LOOPBACK, port))
        .await
        .is_err()
    {
        return false;
    }
    let connected = auth
        .apply(async_nats::ConnectOptions::new())
        .connection_timeout(Duration::from_millis(500))
        .connect(format!("nats://{LOOPBACK}:{port}"))
        .await;
    let Ok(client) = connected else {
        return false;
    };
    if client.server_info().server_name != name {
        return false;
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(1),
        client.request("$JS.API.INFO", bytes::Bytes::new()),
    )
    .await;
    let Ok(Ok(message)) = reply else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&message.payload)
        .map(|info| info.get("error").is_none())
        .unwrap_or(false)
}

/// See [`NatsServer::client_auth`].
fn client_auth(config: &NatsServerConfig, role: NatsRole) -> ClientAuth {
    let mut auth = ClientAuth::default();
    if let Some(users) = &config.auth {
        if let Some(user) = users.user(role).or(users.users.first()) {
            auth = ClientAuth::user(user.name.clone(), user.password.clone());
        }
    }
    if let Some(tls) = &config.tls {
        auth = auth.with_tls(Some(tls.client_root().to_owned()));
    }
    auth
}

/// The last lines the server wrote to `path` from `start` on, or a note saying why they are missing.
fn log_tail(path: &Path, start: u64) -> String {
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(start))?;
        file.read_to_end(&mut bytes)
    });
    if let Err(err) = read {
        return format!("(cannot read {}: {err})", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[from..].join("\n")
}
