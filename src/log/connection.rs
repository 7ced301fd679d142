//! The NATS connections of this process: each role's connection logs what happens to it (a lost
//! connection at WARN, its return at INFO, a slow consumer or a server error at WARN) and counts
//! the losses, which every scrape of the process shows as `orch_nats_disconnects_total`.

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
