//! The embedded `nats-server` of `serve`: which durability it runs, starting it, and supervising it
//! (restarted when it exits unexpectedly, stopped on the way out).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::security::Secured;
use super::ServeError;
use crate::nats_server::{
    binary_version, resolve_binary, ClusterSpec, Durability, NatsCluster, NatsServer,
    NatsServerConfig, NatsServerError, ServerVersion, LOOPBACK,
};

/// The port the embedded `nats-server` listens on unless told otherwise; the client subcommands'
/// default URL points at it.
pub const DEFAULT_EMBEDDED_PORT: u16 = 4333;

/// How often the embedded server is checked on.
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);

/// Restarts of the embedded server that may fail in a row before `serve` gives up.
const MAX_RESTART_FAILURES: u32 = 5;

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

/// Starts the embedded server, or with `nodes` > 1 a cluster of that many nodes on consecutive
/// client ports from `port` and route ports after them.
pub(super) async fn start_embedded(
    bin: Option<PathBuf>,
    port: u16,
    durability: Option<Durability>,
    nodes: usize,
    data_dir: &Path,
    secured: &Secured,
) -> Result<Vec<NatsServer>, ServeError> {
    let bin = match bin {
        Some(bin) => bin,
        None => resolve_binary()?,
    };
    let probe = bin.clone();
    let version = tokio::task::spawn_blocking(move || binary_version(&probe))
        .await
        .map_err(|join| NatsServerError::Process(std::io::Error::other(join)))??;
    let durability = choose_durability(durability, version);
    if !durability.supported_by(version) {
        return Err(NatsServerError::SyncAlwaysUnsupported { version }.into());
    }
    if nodes > 1 {
        return start_cluster(bin, port, durability, nodes, data_dir, secured).await;
    }
    let config = NatsServerConfig {
        port,
        durability,
        // Ctrl-C at a terminal must reach only `serve`, which drains its clients before it stops
        // the server.
        own_process_group: true,
        auth: secured.users.clone(),
        tls: secured.tls.clone(),
        ..NatsServerConfig::new(bin, data_dir.join("nats"))
    };
    tracing::info!(
        version = %version,
        port,
        durability = %durability,
        users = config.auth.as_ref().map_or(0, |a| a.users.len()),
        tls = config.tls.is_some(),
        "starting the embedded nats-server"
    );
    // A server already on the port would answer the readiness check for ours.
    if !port_free(port) {
        return Err(ServeError::PortInUse { port });
    }
    let mut server = NatsServer::start(config).await.map_err(|e| match e {
        NatsServerError::Exited { ref log_tail, .. }
            if log_tail.contains("address already in use") =>
        {
            ServeError::PortInUse { port }
        }
        other => other.into(),
    })?;
    if !server.is_running() {
        return Err(ServeError::PortInUse { port });
    }
    tracing::info!(
        url = %server.url(),
        pid = server.pid().unwrap_or(0),
        durability = %durability,
        meaning = durability_meaning(durability),
        "embedded nats-server running"
    );
    Ok(vec![server])
}

/// The cluster of [`start_embedded`]: every port checked free first, since a server already on one
/// would answer for ours.
async fn start_cluster(
    bin: PathBuf,
    port: u16,
    durability: Durability,
    nodes: usize,
    data_dir: &Path,
    secured: &Secured,
) -> Result<Vec<NatsServer>, ServeError> {
    let ports: Vec<u16> = (0..2 * nodes)
        .map(|i| {
            u16::try_from(i)
                .ok()
                .and_then(|i| port.checked_add(i))
                .ok_or(ServeError::PortInUse { port })
        })
        .collect::<Result<_, _>>()?;
    if let Some(&taken) = ports.iter().find(|&&p| !port_free(p)) {
        return Err(ServeError::PortInUse { port: taken });
    }
    let spec = ClusterSpec {
        durability,
        client_ports: ports[..nodes].to_vec(),
        route_ports: ports[nodes..].to_vec(),
        own_process_group: true,
        auth: secured.users.clone(),
        tls: secured.tls.clone(),
        ..ClusterSpec::new(bin, data_dir.join("nats"), nodes)
    };
    tracing::info!(nodes, client_ports = ?spec.client_ports, route_ports = ?spec.route_ports, durability = %durability, "starting the embedded nats-server cluster");
    let cluster = NatsCluster::start(spec).await?;
    tracing::info!(
        urls = %cluster.urls(),
        durability = %durability,
        meaning = durability_meaning(durability),
        "embedded nats-server cluster running"
    );
    Ok(cluster.into_nodes())
}

/// Whether nothing listens on `port` of the loopback (0: a free one is picked anyway).
fn port_free(port: u16) -> bool {
    port == 0 || std::net::TcpListener::bind((LOOPBACK, port)).is_ok()
}

/// Restarts each server whenever it exits, until `nats_stop`; then stops them all. Gives up (and
/// fires `roles_stop`) after [`MAX_RESTART_FAILURES`] failed restarts in a row of one server.
pub(super) async fn supervise(
    mut servers: Vec<NatsServer>,
    nats_stop: CancellationToken,
    roles_stop: CancellationToken,
) -> Result<(), ServeError> {
    let mut failures = vec![0; servers.len()];
    let outcome = 'supervise: loop {
        tokio::select! {
            _ = nats_stop.cancelled() => break Ok(()),
            _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
        }
        for (server, failures) in servers.iter_mut().zip(failures.iter_mut()) {
            if server.is_running() {
                continue;
            }
            match restart(server).await {
                Ok(()) => *failures = 0,
                Err(e) => {
                    *failures += 1;
                    tracing::error!(error = %e, failures = *failures, port = server.port(), "restarting the embedded nats-server failed");
                    if *failures >= MAX_RESTART_FAILURES {
                        roles_stop.cancel();
                        break 'supervise Err(ServeError::NatsServerLost {
                            failures: *failures,
                            last: e,
                        });
                    }
                    tokio::select! {
                        _ = nats_stop.cancelled() => break 'supervise Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(500) * *failures) => {}
                    }
                }
            }
        }
    };
    for server in &mut servers {
        tracing::info!(
            pid = server.pid().unwrap_or(0),
            port = server.port(),
            "stopping the embedded nats-server"
        );
        server.stop().await?;
    }
    tracing::info!("embedded nats-server stopped");
    outcome
}

/// Starts a server that exited unexpectedly again, on its port and store.
async fn restart(server: &mut NatsServer) -> Result<(), String> {
    tracing::error!(
        port = server.port(),
        "embedded nats-server exited unexpectedly, restarting it"
    );
    if !port_free(server.port()) {
        return Err(format!(
            "port {} is taken by another process",
            server.port()
        ));
    }
    server.restart().await.map_err(|e| e.to_string())?;
    if !server.is_running() {
        return Err("it exited right after starting".to_owned());
    }
    tracing::warn!(
        pid = server.pid().unwrap_or(0),
        port = server.port(),
        "embedded nats-server restarted"
    );
    Ok(())
}
