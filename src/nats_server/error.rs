//! Why a local `nats-server` could not be started or stopped.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::{ServerVersion, SYNC_ALWAYS_MIN_VERSION};

/// Why a local server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No binary in `$NATS_SERVER_BIN`, at `/usr/sbin/nats-server` or on `PATH`: install one
    /// (`apt-get install nats-server`) or set the variable.
    #[error("no nats-server binary: set NATS_SERVER_BIN or install one at /usr/sbin/nats-server")]
    BinaryNotFound,
    /// The binary could not be run to ask its version: check the path and its permissions.
    #[error("cannot run {bin:?}: {source}")]
    Binary {
        /// The binary that was asked.
        bin: PathBuf,
        /// Why it could not run.
        source: std::io::Error,
    },
    /// `--version` printed no version: the binary is probably not a nats-server.
    #[error("{bin:?} --version printed no version: {output:?}")]
    UnparsableVersion {
        /// The binary that was asked.
        bin: PathBuf,
        /// What it printed.
        output: String,
    },
    /// [`Durability::SyncAlways`] was asked of a server older than 2.10, which has no `sync_interval`:
    /// use a newer server or [`Durability::Default`].
    #[error(
        "durability \"always\" needs nats-server >= {SYNC_ALWAYS_MIN_VERSION}, this one is {version}"
    )]
    SyncAlwaysUnsupported {
        /// The version of the binary.
        version: ServerVersion,
    },
    /// The users cannot be written into the config (a bad name or password): fix the credentials
    /// file.
    #[error("users: {0}")]
    Auth(#[from] super::AuthError),
    /// The store path cannot be written into the config file: choose a plain UTF-8 data dir.
    #[error("data dir path {0:?} cannot be written into a nats-server config file")]
    UnsupportedPath(PathBuf),
    /// A server or cluster name other than letters, digits, `-` and `_`.
    #[error("name {0:?} is not a plain server or cluster name (letters, digits, - and _)")]
    UnsupportedName(String),
    /// The data dir, config file or log file could not be written or read.
    #[error("{path:?}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// No free port could be found on 127.0.0.1.
    #[error("cannot find a free port on 127.0.0.1: {0}")]
    FreePort(std::io::Error),
    /// The process could not be spawned, signalled or waited for.
    #[error("nats-server process: {0}")]
    Process(std::io::Error),
    /// SIGTERM could not be sent.
    #[error("cannot signal nats-server: {0}")]
    Signal(#[from] nix::errno::Errno),
    /// The server exited while starting: its log tail says why (a bad config, a port in use).
    #[error("nats-server exited while starting ({status}); its log ends with:\n{log_tail}")]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The end of what it printed during this start.
        log_tail: String,
    },
    /// JetStream did not answer in time; the server was killed. Its log tail may say why.
    #[error("nats-server not ready after {timeout:?}; its log ends with:\n{log_tail}")]
    NotReady {
        /// How long it was given.
        timeout: Duration,
        /// The end of what it printed during this start.
        log_tail: String,
    },
}
