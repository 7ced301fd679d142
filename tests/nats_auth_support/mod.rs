//! Shared by the secured-NATS tests (`tests/nats_auth_*.rs`): a real nats-server per test with the
//! orchestrator's users and per-role permissions (and TLS), clients connected as a user with the
//! server's errors in hand, `serve`'s roles running as their own users.
#![allow(dead_code, unused_imports)]

pub use std::path::{Path, PathBuf};
pub use std::time::{Duration, Instant};

pub use crate::common::TestServer;
pub use async_nats::jetstream::{self, consumer};
pub use async_nats::{ConnectOptions, Event};
pub use futures::StreamExt;
pub use orchestrator::admin::{projections_subject, ProjectionReport};
pub use orchestrator::client::CommandClient;
pub use orchestrator::domain::command::RegisterVm;
pub use orchestrator::domain::Command;
pub use orchestrator::http::BridgeArgs;
pub use orchestrator::log::connection::ClientAuth;
pub use orchestrator::log::lease::lease_key;
pub use orchestrator::log::{Reader, DEFAULT_LEASE_BUCKET};
pub use orchestrator::nats_server::credentials::{self, CREDENTIALS_FILE};
pub use orchestrator::nats_server::{NatsAuth, NatsRole, NatsServer, NatsServerConfig, NatsTls};
pub use orchestrator::serve::{self, NatsMode, NatsSecurity, Roles, ServeConfig};
pub use orchestrator::writer::Reply;
pub use orchestrator_events::subject::{feed_stream_name, stream_name};
pub use orchestrator_events::{Actor, CellId, CommandId, VmId};
pub use tokio::sync::mpsc;
pub use tokio_util::sync::CancellationToken;

/// How long the server may take to refuse something, or a role to come up.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn cell() -> CellId {
    CellId::default_cell()
}

/// A client of `server` connected as `auth`, with the server's errors (a refused publish or
/// subscription arrives as one) on the receiver.
pub async fn connect(
    server: &NatsServer,
    auth: &ClientAuth,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = auth
        .apply(ConnectOptions::new().event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        }))
        .connection_timeout(Duration::from_secs(5))
        .connect(server.url())
        .await
        .expect("the user is let in");
    (client, rx)
}

pub async fn connect_as(
    server: &NatsServer,
    role: NatsRole,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    connect(server, &server.client_auth(role)).await
}

/// Waits for the server's permissions violation naming `subject`.
pub async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
    let wanted = format!("permissions violation for {what} to \"{subject}\"").to_lowercase();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let error = tokio::time::timeout_at(deadline, errors.recv())
            .await
            .unwrap_or_else(|_| panic!("no refusal of {what} to {subject}"))
            .expect("the connection is open");
        if error.to_lowercase().contains(&wanted) {
            return;
        }
    }
}

/// Publishes a forged event to the log's subject with JetStream as `client`: no stream acknowledges
/// it and the server reports the permissions violation. Returns the JetStream context used.
pub async fn append_refused(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
    subject: &str,
    within: Duration,
) -> jetstream::Context {
    let js = jetstream::context::ContextBuilder::new()
        .timeout(within)
        .build(client.clone());
    let ack = js
        .publish(subject.to_owned(), "forged".into())
        .await
        .expect("sent");
    assert!(ack.await.is_err(), "no stream acknowledges it");
    refused(errors, "publish", subject).await;
    js
}

pub fn register(vm: &str) -> Command {
    Command::RegisterVm(RegisterVm {
        endpoint: None,
        heartbeat_ms: None,
        vm_id: VmId::parse(vm).expect("a VM id"),
        capacity: 4,
        labels: Default::default(),
    })
}

/// Sends `command` until a writer answers (it may still be taking the lease); its sequence.
pub async fn accepted(commands: &CommandClient, id: &str, command: &Command) -> u64 {
    let id = CommandId::parse(id).expect("a command id");
    let deadline = Instant::now() + WAIT;
    loop {
        match commands
            .send(&id, &Actor::service("gateway"), command)
            .await
        {
            Ok(Reply::Accepted { seq, .. }) => return seq,
            Ok(other) => panic!("not accepted: {other:?}"),
            Err(e) => assert!(Instant::now() < deadline, "no writer answers: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The users of one cell, written to a credentials file in `dir`.
pub fn users(dir: &Path) -> (NatsAuth, PathBuf) {
    let auth = credentials::generate(&cell());
    let path = dir.join(CREDENTIALS_FILE);
    credentials::save(&path, &auth).expect("the file is written");
    (auth, path)
}

/// A self-signed certificate for 127.0.0.1, written into `dir`.
pub fn certificate(dir: &Path) -> NatsTls {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("a certificate");
    let tls = NatsTls {
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        ca: None,
    };
    std::fs::write(&tls.cert, cert.pem()).expect("written");
    std::fs::write(&tls.key, signing_key.serialize_pem()).expect("written");
    tls
}

/// `serve` with its writer, projector and feed against `server`, each role as its own user.
pub fn serve_config(server: &NatsServer, data: &Path, credentials: PathBuf) -> ServeConfig {
    ServeConfig {
        nats: NatsMode::External { url: server.url() },
        data_dir: data.to_path_buf(),
        cell: cell(),
        replicas: 1,
        roles: Roles {
            writer: true,
            projector: true,
            bridge: false,
            feed: true,
        },
        roles_explicit: true,
        domain: Default::default(),
        lease_ttl: Duration::from_secs(1),
        group_commit: serve::GroupCommit::Auto,
        timers: Default::default(),
        bridge: BridgeArgs::default(),
        metrics_addr: None,
        feed: Default::default(),
        nats_security: NatsSecurity {
            credentials: Some(credentials),
            tls_ca: server
                .config()
                .tls
                .as_ref()
                .map(|t| t.client_root().to_owned()),
            ..NatsSecurity::default()
        },
    }
}

/// The log's last sequence, read by the operator.
pub async fn last_seq(server: &NatsServer) -> u64 {
    let (client, _) = connect_as(server, NatsRole::Operator).await;
    let reader = Reader::new(jetstream::new(client), cell())
        .await
        .expect("the log");
    reader.last_seq().await.expect("the log's state")
}

/// A secured server with `serve`'s writer, projector and feed on it, and the bridge's client.
pub struct Running {
    pub server: TestServer,
    pub stop: CancellationToken,
    pub serving: tokio::task::JoinHandle<Result<(), serve::ServeError>>,
    pub bridge: async_nats::Client,
    pub commands: CommandClient,
    /// Holds the credentials, the certificate and serve's data; removed last.
    pub _dir: tempfile::TempDir,
}

impl Running {
    pub async fn start(tls: bool) -> Running {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (auth, path) = users(dir.path());
        let server = TestServer::start_secured(auth, tls.then(|| certificate(dir.path()))).await;
        let stop = CancellationToken::new();
        let serving = tokio::spawn(serve::run(
            serve_config(&server, &dir.path().join("data"), path),
            stop.clone(),
        ));
        let (bridge, _) = connect_as(&server, NatsRole::Bridge).await;
        let commands = CommandClient::new(bridge.clone(), cell(), Duration::from_secs(2));
        Running {
            server,
            stop,
            serving,
            bridge,
            commands,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.serving
            .await
            .expect("serve does not panic")
            .expect("serve stops cleanly");
    }
}
