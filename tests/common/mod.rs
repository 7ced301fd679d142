//! Shared by the integration tests: a real `nats-server` per test, on a free loopback port, with its
//! store in a temp dir; killed on drop. The binary is `$NATS_SERVER_BIN` (CI runs the suite once per
//! server version), else `/usr/sbin/nats-server`, else `nats-server` on `PATH`.
//!
//! Each test file uses a subset of these helpers, hence `allow(dead_code)`.
#![allow(dead_code)]

pub mod cluster;

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator::nats_server::{
    binary_version, resolve_binary, Durability, NatsAuth, NatsServer, NatsServerConfig,
    NatsServerError, NatsTls, ServerVersion, DEBIAN_NATS_SERVER,
};
use tempfile::TempDir;

/// The `nats-server` binary under test.
pub fn server_bin() -> PathBuf {
    resolve_binary().expect("a nats-server binary: set NATS_SERVER_BIN or install nats-server")
}

/// The version of the binary under test.
pub fn server_version() -> ServerVersion {
    binary_version(&server_bin()).expect("the nats-server binary prints its version")
}

/// One binary per distinct server version installed here, the one under test first: for the few tests
/// that compare versions within one run. Looks at `$NATS_SERVER_BIN`, `/usr/sbin/nats-server` and
/// every `nats-server` on `PATH`.
pub fn server_bins() -> Vec<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = std::iter::once(server_bin())
        .chain(std::iter::once(PathBuf::from(DEBIAN_NATS_SERVER)))
        .chain(path_dirs.into_iter().map(|dir| dir.join("nats-server")));
    let mut seen: BTreeSet<ServerVersion> = BTreeSet::new();
    let mut ordered = Vec::new();
    for bin in candidates.filter(|bin| bin.is_file()) {
        if let Ok(version) = binary_version(&bin) {
            if seen.insert(version) {
                ordered.push(bin);
            }
        }
    }
    ordered
}

/// A server for one test, with the temp dir that holds its store. Derefs to [`NatsServer`].
/// Field order matters: the server is killed before its directory is removed.
pub struct TestServer {
    server: NatsServer,
    dir: TempDir,
}

impl TestServer {
    /// Starts the binary under test with `durability`; panics with the server's log if it fails.
    pub async fn start(durability: Durability) -> TestServer {
        match TestServer::try_start(durability).await {
            Ok(server) => server,
            Err(err) => panic!("cannot start nats-server {:?}: {err}", server_bin()),
        }
    }

    /// Starts the binary under test with JetStream's default fsync schedule.
    pub async fn start_default() -> TestServer {
        TestServer::start(Durability::Default).await
    }

    /// Starts the binary under test with `durability`, returning the error (for tests of refusals).
    pub async fn try_start(durability: Durability) -> Result<TestServer, NatsServerError> {
        TestServer::try_start_bin(server_bin(), durability).await
    }

    /// Starts `bin` with `durability`, returning the error.
    pub async fn try_start_bin(
        bin: PathBuf,
        durability: Durability,
    ) -> Result<TestServer, NatsServerError> {
        let dir = tempfile::Builder::new()
            .prefix("orchestrator-nats-")
            .tempdir()
            .expect("a temp dir");
        let config = NatsServerConfig {
            durability,
            ..NatsServerConfig::new(bin, dir.path().join("nats"))
        };
        let server = NatsServer::start(config).await?;
        Ok(TestServer { server, dir })
    }

    /// Starts the binary under test with users (`auth`) and, if given, TLS: a secured server.
    pub async fn start_secured(auth: NatsAuth, tls: Option<NatsTls>) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("orchestrator-nats-")
            .tempdir()
            .expect("a temp dir");
        let config = NatsServerConfig {
            auth: Some(auth),
            tls,
            ..NatsServerConfig::new(server_bin(), dir.path().join("nats"))
        };
        match NatsServer::start(config).await {
            Ok(server) => TestServer { server, dir },
            Err(err) => panic!(
                "cannot start a secured nats-server {:?}: {err}",
                server_bin()
            ),
        }
    }

    /// The temp dir holding this server (and anything else the test wants to keep beside it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client with async-nats' defaults (reconnects forever, by itself).
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(self.server.url())
            .await
            .expect("the test server accepts clients")
    }

    /// A JetStream context on a fresh client.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }
}

impl Deref for TestServer {
    type Target = NatsServer;

    fn deref(&self) -> &NatsServer {
        &self.server
    }
}

impl DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut NatsServer {
        &mut self.server
    }
}
