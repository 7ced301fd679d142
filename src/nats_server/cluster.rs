//! A JetStream cluster of local `nats-server`s on the loopback: each node has its own client port,
//! route port, store and stable name, and routes to every other node. For tests of replicated
//! streams and for trying the production shape (three replicas) on one machine
//! (`orchestrator serve --nats-nodes 3`).
//!
//! The nodes start together (a node's JetStream answers only once the cluster has elected its meta
//! leader, which needs a majority), then each is an ordinary [`NatsServer`]: kill, pause, resume and
//! restart one through [`NatsCluster::node_mut`].

use std::path::PathBuf;
use std::time::Duration;

use super::config::free_port;
use super::{
    ClusterMembership, Durability, NatsAuth, NatsServer, NatsServerConfig, NatsServerError, NatsTls,
};

/// The name of the clusters started here.
pub const CLUSTER_NAME: &str = "orch";

/// How a local cluster is started. Build it with [`ClusterSpec::new`], then adjust the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The `nats-server` binary of every node.
    pub bin: PathBuf,
    /// Node `i` (from 1) keeps its config, log and store under `<data_dir>/node-<i>`.
    pub data_dir: PathBuf,
    /// How many nodes: 3 tolerates the loss of one.
    pub nodes: usize,
    /// The fsync mode of every node.
    pub durability: Durability,
    /// Client ports on 127.0.0.1, one per node; empty picks free ones.
    pub client_ports: Vec<u16>,
    /// Route ports on 127.0.0.1, one per node; empty picks free ones.
    pub route_ports: Vec<u16>,
    /// See [`NatsServerConfig::own_process_group`].
    pub own_process_group: bool,
    /// How long the cluster may take to elect its JetStream meta leader.
    pub ready_timeout: Duration,
    /// Users and permissions of every node (see [`NatsServerConfig::auth`]).
    pub auth: Option<NatsAuth>,
    /// TLS of every node's client port (see [`NatsServerConfig::tls`]).
    pub tls: Option<NatsTls>,
}

impl ClusterSpec {
    /// `nodes` nodes of `bin` under `data_dir`, on free ports, with JetStream's default fsync.
    pub fn new(bin: impl Into<PathBuf>, data_dir: impl Into<PathBuf>, nodes: usize) -> Self {
        ClusterSpec {
            bin: bin.into(),
            data_dir: data_dir.into(),
            nodes,
            durability: Durability::Default,
            client_ports: Vec::new(),
            route_ports: Vec::new(),
            own_process_group: false,
            ready_timeout: Duration::from_secs(30),
            auth: None,
            tls: None,
        }
    }

    /// The name of node `i` (from 0): stable across restarts, as JetStream's replication needs.
    pub fn node_name(i: usize) -> String {
        format!("node-{}", i + 1)
    }

    fn ports(
        given: &[u16],
        nodes: usize,
        taken: &mut Vec<u16>,
    ) -> Result<Vec<u16>, NatsServerError> {
        if !given.is_empty() {
            if given.len() != nodes {
                return Err(NatsServerError::Process(std::io::Error::other(format!(
                    "{} ports given for {nodes} nodes",
                    given.len()
                ))));
            }
            taken.extend_from_slice(given);
            return Ok(given.to_vec());
        }
        let mut ports = Vec::with_capacity(nodes);
        while ports.len() < nodes {
            let port = free_port()?;
            if !taken.contains(&port) {
                taken.push(port);
                ports.push(port);
            }
        }
        Ok(ports)
    }
}

/// A running local JetStream cluster. Every node is killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts every node of `spec` and waits until each one's JetStream answers (the cluster has a
    /// meta leader). On failure every node is killed and the first error returned.
    pub async fn start(spec: ClusterSpec) -> Result<NatsCluster, NatsServerError> {
        let version = super::checked_version(&spec.bin, spec.durability).await?;
        let mut taken = Vec::new();
        let client_ports = ClusterSpec::ports(&spec.client_ports, spec.nodes, &mut taken)?;
        let route_ports = ClusterSpec::ports(&spec.route_ports, spec.nodes, &mut taken)?;
        let mut nodes = Vec::with_capacity(spec.nodes);
        for (i, (&port, &route_port)) in client_ports.iter().zip(&route_ports).enumerate() {
            let name = ClusterSpec::node_name(i);
            let data_dir = spec.data_dir.join(&name);
            std::fs::create_dir_all(&data_dir).map_err(|source| NatsServerError::Io {
                path: data_dir.clone(),
                source,
            })?;
            let config = NatsServerConfig {
                port,
                durability: spec.durability,
                own_process_group: spec.own_process_group,
                ready_timeout: spec.ready_timeout,
                server_name: Some(name),
                auth: spec.auth.clone(),
                tls: spec.tls.clone(),
                cluster: Some(ClusterMembership {
                    name: CLUSTER_NAME.to_owned(),
                    route_port,
                    routes: route_ports.clone(),
                }),
                ..NatsServerConfig::new(&spec.bin, data_dir)
            };
            nodes.push(NatsServer {
                config,
                version,
                port,
                child: None,
                name: String::new(),
            });
        }
        let mut starts = Vec::with_capacity(nodes.len());
        for node in &mut nodes {
            starts.push(node.spawn()?);
        }
        let ready = futures::future::join_all(
            nodes
                .iter_mut()
                .zip(starts)
                .map(|(node, log_start)| node.await_ready(log_start)),
        )
        .await;
        if let Some(err) = ready.into_iter().find_map(Result::err) {
            for node in &mut nodes {
                let _ = node.kill();
            }
            return Err(err);
        }
        Ok(NatsCluster { nodes })
    }

    /// Every node's client URL, comma separated: what `--nats-url` takes for a cluster.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` (from 0).
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Node `i` (from 0), to kill, pause, resume or restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the node named `name` (as JetStream names a stream's leader).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name() == name)
    }

    /// Starts node `i` again on its port and store, after a kill or a stop, and waits until its
    /// JetStream answers. Restarts it gracefully if it runs.
    pub async fn restart_node(&mut self, i: usize) -> Result<(), NatsServerError> {
        self.nodes[i].restart().await
    }

    /// The nodes, for a supervisor that restarts each one when it dies.
    pub fn into_nodes(self) -> Vec<NatsServer> {
        self.nodes
    }

    /// Stops every node gracefully.
    pub async fn stop(&mut self) -> Result<(), NatsServerError> {
        for node in &mut self.nodes {
            node.stop().await?;
        }
        Ok(())
    }
}
