//! A real three-node (or N-node) JetStream cluster per test, on free loopback ports, each node's
//! store in the test's temp dir; every node killed on drop. Derefs to [`NatsCluster`] for killing,
//! pausing and restarting nodes.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use orchestrator::nats_server::{ClusterSpec, Durability, NatsCluster};
use serde_json::Value;
use tempfile::TempDir;

use super::server_bin;

/// A cluster for one test and the temp dir that holds its stores. Field order matters: the nodes are
/// killed before the directory is removed.
pub struct TestCluster {
    cluster: NatsCluster,
    dir: TempDir,
}

impl TestCluster {
    /// Starts `nodes` nodes of the binary under test with JetStream's default fsync; panics with the
    /// error (and the failing node's log tail) if the cluster does not form.
    pub async fn start(nodes: usize) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("orchestrator-cluster-")
            .tempdir()
            .expect("a temp dir");
        let spec = ClusterSpec {
            durability: Durability::Default,
            ..ClusterSpec::new(server_bin(), dir.path().join("nats"), nodes)
        };
        match NatsCluster::start(spec).await {
            Ok(cluster) => TestCluster { cluster, dir },
            Err(err) => panic!(
                "cannot start a {nodes}-node cluster of {:?}: {err}",
                server_bin()
            ),
        }
    }

    /// The temp dir holding the nodes' stores (and anything the test keeps beside them).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client that knows every node and notices a frozen one within about two seconds (PINGs every
    /// 500 ms), so that it moves to another node as a production client should.
    pub async fn client(&self) -> async_nats::Client {
        let urls = self.cluster.urls();
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_millis(500))
            .connect(orchestrator::log::connection::addresses(&urls))
            .await
            .expect("the test cluster accepts clients")
    }

    /// The node leading `stream` now, as the cluster says (`None` while it elects one or when the
    /// answer does not come).
    pub async fn stream_leader(&self, client: &async_nats::Client, stream: &str) -> Option<usize> {
        let info = stream_info(client, stream).await?;
        let leader = info["cluster"]["leader"].as_str()?;
        self.cluster.index_of(leader)
    }

    /// Waits until `stream` has a leader and every other replica is current and online; panics after
    /// `within`. Returns the leader.
    pub async fn wait_replicas_current(
        &self,
        client: &async_nats::Client,
        stream: &str,
        within: Duration,
    ) -> usize {
        let deadline = Instant::now() + within;
        let mut last = Value::Null;
        loop {
            if let Some(info) = stream_info(client, stream).await {
                let cluster = &info["cluster"];
                let leader = cluster["leader"]
                    .as_str()
                    .and_then(|l| self.cluster.index_of(l));
                let replicas = cluster["replicas"].as_array().cloned().unwrap_or_default();
                let all_current = replicas.len() + 1 == self.cluster.len()
                    && replicas.iter().all(|r| {
                        r["current"].as_bool() == Some(true) && r["offline"].as_bool() != Some(true)
                    });
                if let (Some(leader), true) = (leader, all_current) {
                    return leader;
                }
                last = cluster.clone();
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream}: replicas not all current after {within:?}; last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `$JS.API.STREAM.INFO.<stream>`, asked directly so that the cluster part comes as the server sends
/// it; `None` on a timeout or an error answer.
pub async fn stream_info(client: &async_nats::Client, stream: &str) -> Option<Value> {
    let reply = tokio::time::timeout(
        Duration::from_secs(1),
        client.request(format!("$JS.API.STREAM.INFO.{stream}"), bytes::Bytes::new()),
    )
    .await
    .ok()?
    .ok()?;
    let info: Value = serde_json::from_slice(&reply.payload).ok()?;
    info.get("error").is_none().then_some(info)
}

impl Deref for TestCluster {
    type Target = NatsCluster;

    fn deref(&self) -> &NatsCluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut NatsCluster {
        &mut self.cluster
    }
}
