//! The NATS connections of this process: each role's connection logs what happens to it (a lost
//! connection at WARN, its return at INFO, a slow consumer or a server error at WARN) and counts
//! the losses, which every scrape of the process shows as `orch_nats_disconnects_total`.
//! [`ClientAuth`] adds who the connection is (a user and password) and how it trusts the server
//! (TLS with a root certificate).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::{ConnectOptions, Event};

static DISCONNECTS: AtomicU64 = AtomicU64::new(0);

/// Connections of this process lost so far (each one reconnects on its own).
pub fn disconnects() -> u64 {
    DISCONNECTS.load(Ordering::Relaxed)
}

/// The servers of a `--nats-url`: one URL, or several separated by commas (the nodes of a cluster;
/// the client tries them in turn and learns the others from the server it reaches).
pub fn addresses(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|addr| !addr.is_empty())
        .collect()
}

/// How often a connection PINGs its server. A server that answers none of three PINGs in a row (a
/// frozen process, a partition that drops packets) is left for another one: about 3 s, where
/// async-nats' default (60 s) would leave every role stuck for minutes on a frozen cluster node.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// Options for a connection named `name` (shown by the server, and in the logs) that reports its
/// events and leaves a server that stops answering PINGs ([`PING_INTERVAL`]).
pub fn options(name: &str) -> ConnectOptions {
    let connection = name.to_owned();
    ConnectOptions::new()
        .name(name)
        .ping_interval(PING_INTERVAL)
        .event_callback(move |event| {
            let connection = connection.clone();
            async move {
                match event {
                    Event::Disconnected => {
                        DISCONNECTS.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%connection, "NATS connection lost: reconnecting");
                    }
                    Event::Connected => tracing::info!(%connection, "NATS connection up"),
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(%connection, sid, "NATS slow consumer: messages dropped")
                    }
                    Event::ServerError(e) => {
                        tracing::warn!(%connection, error = %e, "NATS server error")
                    }
                    Event::ClientError(e) => {
                        tracing::warn!(%connection, error = %e, "NATS client error")
                    }
                    Event::LameDuckMode => {
                        tracing::warn!(%connection, "NATS server in lame duck mode: it will shut down")
                    }
                    Event::Draining | Event::Closed => {
                        tracing::debug!(%connection, %event, "NATS connection")
                    }
                }
            }
        })
}

/// How a connection proves who it is and checks the server: nothing by default.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// A user and its password.
    pub user: Option<(String, String)>,
    /// Require TLS, trusting the server certificate this CA (PEM) signed; `None` with
    /// [`Self::tls_required`]: the system's roots.
    pub tls_root: Option<PathBuf>,
    /// Require TLS.
    pub tls_required: bool,
}

impl std::fmt::Debug for ClientAuth {
    // The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("tls_root", &self.tls_root)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

impl ClientAuth {
    /// As `user` with `password`.
    pub fn user(user: impl Into<String>, password: impl Into<String>) -> Self {
        ClientAuth {
            user: Some((user.into(), password.into())),
            ..ClientAuth::default()
        }
    }

    /// The same, requiring TLS with `root` as the trusted CA when given.
    pub fn with_tls(mut self, root: Option<PathBuf>) -> Self {
        self.tls_required = true;
        self.tls_root = root;
        self
    }

    /// `options` with this user and TLS.
    pub fn apply(&self, mut options: ConnectOptions) -> ConnectOptions {
        if let Some((user, password)) = &self.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if self.tls_required || self.tls_root.is_some() {
            options = options.require_tls(true);
        }
        if let Some(root) = &self.tls_root {
            options = options.add_root_certificates(root.clone());
        }
        options
    }
}
