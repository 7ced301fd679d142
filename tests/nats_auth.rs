//! NATS secured: a real nats-server per test with the orchestrator's users and per-role permissions
//! (and TLS), `serve`'s roles running against it as their own users.
//!
//! Each role's allowed path works end to end (the bridge user's command is accepted and projected, a
//! reader consumes the log and the feed); each forbidden publish or subscribe is refused by the
//! server and nothing is appended (the next accepted command takes the very next sequence); an
//! unauthenticated client, a wrong password and a client that does not trust the certificate are
//! refused; `nats-user add` gives a new consumer access without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use async_nats::{ConnectOptions, Event};
use common::TestServer;
use futures::StreamExt;
use orchestrator::admin::{projections_subject, ProjectionReport};
use orchestrator::client::CommandClient;
use orchestrator::domain::command::RegisterVm;
use orchestrator::domain::Command;
use orchestrator::http::BridgeArgs;
use orchestrator::log::connection::ClientAuth;
use orchestrator::log::lease::lease_key;
use orchestrator::log::{Reader, DEFAULT_LEASE_BUCKET};
use orchestrator::nats_server::credentials::{self, CREDENTIALS_FILE};
use orchestrator::nats_server::{NatsAuth, NatsRole, NatsServer, NatsServerConfig, NatsTls};
use orchestrator::serve::{self, NatsMode, NatsSecurity, Roles, ServeConfig};
use orchestrator::writer::Reply;
use orchestrator_events::subject::{feed_stream_name, stream_name};
use orchestrator_events::{Actor, CellId, CommandId, VmId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the server may take to refuse something, or a role to come up.
const WAIT: Duration = Duration::from_secs(20);

fn cell() -> CellId {
    CellId::default_cell()
}

/// A client of `server` connected as `auth`, with the server's errors (a refused publish or
/// subscription arrives as one) on the receiver.
async fn connect(
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

async fn connect_as(
    server: &NatsServer,
    role: NatsRole,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    connect(server, &server.client_auth(role)).await
}

/// Waits for the server's permissions violation naming `subject`.
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
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
async fn append_refused(
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

fn register(vm: &str) -> Command {
    Command::RegisterVm(RegisterVm {
        endpoint: None,
        heartbeat_ms: None,
        vm_id: VmId::parse(vm).expect("a VM id"),
        capacity: 4,
        labels: Default::default(),
    })
}

/// Sends `command` until a writer answers (it may still be taking the lease); its sequence.
async fn accepted(commands: &CommandClient, id: &str, command: &Command) -> u64 {
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
fn users(dir: &Path) -> (NatsAuth, PathBuf) {
    let auth = credentials::generate(&cell());
    let path = dir.join(CREDENTIALS_FILE);
    credentials::save(&path, &auth).expect("the file is written");
    (auth, path)
}

/// A self-signed certificate for 127.0.0.1, written into `dir`.
fn certificate(dir: &Path) -> NatsTls {
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
fn serve_config(server: &NatsServer, data: &Path, credentials: PathBuf) -> ServeConfig {
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
async fn last_seq(server: &NatsServer) -> u64 {
    let (client, _) = connect_as(server, NatsRole::Operator).await;
    let reader = Reader::new(jetstream::new(client), cell())
        .await
        .expect("the log");
    reader.last_seq().await.expect("the log's state")
}

/// A secured server with `serve`'s writer, projector and feed on it, and the bridge's client.
struct Running {
    server: TestServer,
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<Result<(), serve::ServeError>>,
    bridge: async_nats::Client,
    commands: CommandClient,
    /// Holds the credentials, the certificate and serve's data; removed last.
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(tls: bool) -> Running {
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

    async fn stop(self) {
        self.stop.cancel();
        self.serving
            .await
            .expect("serve does not panic")
            .expect("serve stops cleanly");
    }
}

/// The bridge's command is accepted, the projector projects it (its `verify` answer, asked by the
/// bridge, covers it with no difference), the feed republishes it and a reader consumes the log and
/// the feed.
async fn each_role_does_its_work(tls: bool) {
    let running = Running::start(tls).await;
    let (server, bridge) = (&running.server, &running.bridge);
    let seq = accepted(&running.commands, "reg-1", &register("vm-1")).await;

    let deadline = Instant::now() + WAIT;
    loop {
        let answer = bridge
            .request(projections_subject(&cell()), "".into())
            .await
            .expect("the projector answers the bridge");
        let report: ProjectionReport = serde_json::from_slice(&answer.payload).expect("a report");
        assert_eq!(report.error, None);
        assert_eq!(report.differences, 0, "{report:?}");
        if report.checkpoint >= seq {
            break;
        }
        assert!(Instant::now() < deadline, "not projected: {report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (reader_client, _) = connect_as(server, NatsRole::Reader).await;
    let js = jetstream::new(reader_client);
    let reader = Reader::new(js.clone(), cell()).await.expect("the log");
    let (_, mut events) = reader.read_to_end(1).await.expect("a read");
    let first = events.next().await.expect("an event").expect("readable");
    assert_eq!(first.seq, seq);

    let feed = js
        .get_stream(feed_stream_name(&cell()))
        .await
        .expect("the reader sees the feed stream");
    let consumer = feed
        .create_consumer(consumer::pull::Config {
            durable_name: Some("analytics".into()),
            ..Default::default()
        })
        .await
        .expect("the reader attaches a durable consumer");
    let mut messages = consumer.messages().await.expect("a pull");
    let message = tokio::time::timeout(WAIT, messages.next())
        .await
        .expect("the feed republished the event")
        .expect("a message")
        .expect("readable");
    let cloud_event: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
    assert!(
        cloud_event["type"]
            .as_str()
            .unwrap_or("")
            .contains("VmRegistered"),
        "{cloud_event}"
    );
    message.ack().await.expect("the reader acknowledges");
    running.stop().await;
}

#[tokio::test]
async fn each_role_does_its_work_as_its_own_user() {
    each_role_does_its_work(false).await;
}

#[tokio::test]
async fn each_role_does_its_work_over_tls() {
    each_role_does_its_work(true).await;
}

#[tokio::test]
async fn forbidden_publishes_and_subscribes_are_refused_and_nothing_is_appended() {
    let running = Running::start(false).await;
    let (server, commands) = (&running.server, &running.commands);
    let before = accepted(commands, "reg-1", &register("vm-1")).await;
    assert_eq!(last_seq(server).await, before);

    let short = Duration::from_millis(500);
    let command_subject = format!("orch.{}.cmd.vm_register", cell());
    // A reader sends a command the writer would accept.
    let (reader, mut reader_errors) = connect_as(server, NatsRole::Reader).await;
    let as_reader = CommandClient::new(reader.clone(), cell(), short);
    let id = CommandId::parse("forged-1").expect("an id");
    assert!(as_reader
        .send(&id, &Actor::operator("x"), &register("vm-forged"))
        .await
        .is_err());
    refused(&mut reader_errors, "publish", &command_subject).await;

    // A VM agent does too.
    let (agent, mut agent_errors) = connect_as(server, NatsRole::Agent).await;
    let as_agent = CommandClient::new(agent.clone(), cell(), short);
    assert!(as_agent
        .send(&id, &Actor::operator("x"), &register("vm-forged"))
        .await
        .is_err());
    refused(&mut agent_errors, "publish", &command_subject).await;

    // The bridge, and a reader, append to the log directly.
    let event_subject = format!("orch.{}.evt.vm.vm-forged", cell());
    let (bridge_probe, mut bridge_errors) = connect_as(server, NatsRole::Bridge).await;
    append_refused(&bridge_probe, &mut bridge_errors, &event_subject, short).await;
    let reader_js = append_refused(&reader, &mut reader_errors, &event_subject, short).await;

    // A reader takes the lease.
    let lease = reader_js
        .get_key_value(DEFAULT_LEASE_BUCKET)
        .await
        .expect("the reader may look at the lease");
    let key = lease_key(&cell());
    assert!(lease.put(&key, "intruder".into()).await.is_err());
    refused(
        &mut reader_errors,
        "publish",
        &format!("$KV.{DEFAULT_LEASE_BUCKET}.{key}"),
    )
    .await;

    // A reader widens the log's subjects, or deletes it.
    let log = stream_name(&cell());
    for api in ["UPDATE", "DELETE"] {
        let subject = format!("$JS.API.STREAM.{api}.{log}");
        let _ = reader.publish(subject.clone(), "{}".into()).await;
        refused(&mut reader_errors, "publish", &subject).await;
    }
    // A reader forges the feed.
    let feed_subject = format!("orch.{}.feed.VmRegistered.vm.vm-forged", cell());
    let _ = reader.publish(feed_subject.clone(), "{}".into()).await;
    refused(&mut reader_errors, "publish", &feed_subject).await;

    // A reader and the bridge listen to the commands.
    let commands_filter = format!("orch.{}.cmd.>", cell());
    let _listening = reader
        .subscribe(commands_filter.clone())
        .await
        .expect("sent");
    refused(&mut reader_errors, "subscription", &commands_filter).await;
    let _listening = bridge_probe
        .subscribe(commands_filter.clone())
        .await
        .expect("sent");
    refused(&mut bridge_errors, "subscription", &commands_filter).await;

    // Nothing was appended: the log ends where it did, and the next command takes the next
    // sequence. The lease was never the reader's.
    assert_eq!(last_seq(server).await, before);
    let next = accepted(commands, "reg-2", &register("vm-2")).await;
    assert_eq!(next, before + 1);
    let mut history = lease.history(&key).await.expect("the lease's history");
    let deadline = tokio::time::Instant::now() + short;
    while let Ok(Some(entry)) = tokio::time::timeout_at(deadline, history.next()).await {
        let entry = entry.expect("readable");
        assert_ne!(&entry.value[..], b"intruder");
    }
    running.stop().await;
}

#[tokio::test]
async fn unauthenticated_clients_and_wrong_passwords_are_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (auth, _) = users(dir.path());
    let writer = auth.user(NatsRole::Writer).expect("a writer").name.clone();
    let server = TestServer::start_secured(auth, None).await;
    let nobody = ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(server.url())
        .await;
    assert!(nobody.is_err(), "a client without a user is refused");
    let wrong = ClientAuth::user(writer, "not-the-password")
        .apply(ConnectOptions::new())
        .connection_timeout(Duration::from_secs(2))
        .connect(server.url())
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");
}

#[tokio::test]
async fn tls_refuses_a_client_that_does_not_trust_the_certificate() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (auth, _) = users(dir.path());
    let tls = certificate(dir.path());
    let server = TestServer::start_secured(auth, Some(tls)).await;
    let user = server.client_auth(NatsRole::Reader);
    let untrusting = ClientAuth {
        tls_root: None,
        tls_required: false,
        ..user.clone()
    }
    .apply(ConnectOptions::new())
    .connection_timeout(Duration::from_secs(2))
    .connect(server.url())
    .await;
    assert!(
        untrusting.is_err(),
        "the system's roots do not know this certificate"
    );
    let (trusting, _) = connect(&server, &user).await;
    trusting
        .flush()
        .await
        .expect("a TLS connection with the CA works");
}

#[tokio::test]
async fn nats_user_add_gives_a_new_consumer_access_without_a_restart() {
    let data = tempfile::tempdir().expect("a temp dir");
    let nats_dir = data.path().join("nats");
    let auth = credentials::load_or_generate(&nats_dir.join(CREDENTIALS_FILE), &cell())
        .expect("generated");
    let config = NatsServerConfig {
        auth: Some(auth),
        ..NatsServerConfig::new(common::server_bin(), &nats_dir)
    };
    let server = NatsServer::start(config).await.expect("a secured server");

    let added = orchestrator::nats_server::credentials::add_user(
        &nats_dir.join(CREDENTIALS_FILE),
        "analytics-probe",
        NatsRole::Reader,
    )
    .expect("added");
    let as_added = ClientAuth::user(added.name.clone(), added.password.clone());
    let unknown = as_added
        .apply(ConnectOptions::new())
        .connection_timeout(Duration::from_secs(2))
        .connect(server.url())
        .await;
    assert!(unknown.is_err(), "unknown to the server until it reloads");

    let cli =
        orchestrator::cli::nats_user::NatsUserCommand::Add(orchestrator::cli::nats_user::AddArgs {
            name: "analytics".into(),
            role: NatsRole::Reader,
            file: orchestrator::cli::nats_user::FileArgs {
                data_dir: data.path().to_path_buf(),
            },
        });
    orchestrator::cli::nats_user::run(cli).expect("nats-user add");
    let users = credentials::load(&nats_dir.join(CREDENTIALS_FILE)).expect("the file");
    let analytics = users
        .users
        .iter()
        .find(|u| u.name == "analytics")
        .expect("written")
        .clone();
    let analytics = ClientAuth::user(analytics.name, analytics.password);
    let deadline = Instant::now() + WAIT;
    loop {
        let connected = analytics
            .apply(ConnectOptions::new())
            .connection_timeout(Duration::from_secs(2))
            .connect(server.url())
            .await;
        match connected {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "never let in: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The user added to the file before is in too: the reload reads the whole file.
    let _ = connect(&server, &as_added).await;

    // A reader all the same: it reads the log's stream info, it may not send commands.
    let (client, mut errors) = connect(&server, &analytics).await;
    let subject = format!("orch.{}.cmd.register_vm", cell());
    client
        .publish(subject.clone(), "x".into())
        .await
        .expect("sent");
    refused(&mut errors, "publish", &subject).await;
}

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

/// The binary with no `ORCH_*` settings inherited.
fn orchestrator() -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORCH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs the binary; its exit status and output.
fn run(args: &[&str]) -> (i32, String) {
    let out = orchestrator().args(args).output().expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `orchestrator serve --nats-auth` with its embedded server; the CLI as the operator, as an added
/// reader, and as nobody.
#[tokio::test]
async fn serve_nats_auth_secures_the_embedded_server_and_the_cli_follows() {
    use std::io::BufRead;
    let data = tempfile::tempdir().expect("a temp dir");
    let data_dir = data.path().to_str().expect("a UTF-8 path").to_owned();
    let port = orchestrator::nats_server::free_port()
        .expect("a free port")
        .to_string();
    let url = format!("nats://127.0.0.1:{port}");
    let mut serve = orchestrator()
        .args(["serve", "--nats-auth", "--role", "writer,projector"])
        .args(["--data-dir", &data_dir, "--nats-port", &port])
        .env("NATS_SERVER_BIN", common::server_bin())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stdout = serve.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut banner = String::new();
    loop {
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("serve never got ready ({e}): {banner}"));
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("ready") {
            break;
        }
    }
    assert!(banner.contains("NATS auth:   7 users"), "{banner}");
    let credentials = data.path().join("nats").join(CREDENTIALS_FILE);
    let creds = credentials.to_str().expect("a UTF-8 path");

    let register = [
        "vm",
        "register",
        "vm-1",
        "--capacity",
        "4",
        "--nats-url",
        &url,
    ];
    let (code, out) = run(&register);
    assert!(
        code == 3 && out.contains("cannot connect"),
        "no user: refused\n{out}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out) = run(&[&register[..], &["--nats-credentials", creds]].concat());
        if code == 0 {
            break;
        }
        assert!(code == 3 && Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (code, out) = run(&[
        "nats-user",
        "add",
        "--role",
        "reader",
        "analytics",
        "--data-dir",
        &data_dir,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reloaded its users"), "{out}");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("the password is printed")
        .trim()
        .to_owned();
    let as_analytics = |args: &[&str]| {
        let out = orchestrator()
            .args(args)
            .args(["--nats-url", &url, "--nats-user", "analytics"])
            .env("ORCH_NATS_PASSWORD", &password)
            .output()
            .expect("the binary runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out) = as_analytics(&["vm", "list"]);
        if code == 0 {
            assert!(out.contains("vm-1"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "the reader never reads: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out) = as_analytics(&["vm", "drain", "vm-1", "--timeout", "1s"]);
    assert_eq!(code, 3, "a reader's command goes nowhere: {out}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(serve.id()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signalled");
    assert!(serve.wait().expect("serve exits").success());
}

/// The embedded cluster (`serve --nats-nodes 3 --nats-auth`) runs every node with the same users: a
/// client without a user is refused by each node, and a reader's command and direct append are
/// refused whichever node it reaches.
#[tokio::test]
async fn every_node_of_a_secured_cluster_enforces_the_permissions() {
    use orchestrator::nats_server::{ClusterSpec, NatsCluster};
    let dir = tempfile::tempdir().expect("a temp dir");
    let (auth, _) = users(dir.path());
    let spec = ClusterSpec {
        auth: Some(auth),
        ..ClusterSpec::new(common::server_bin(), dir.path().join("nats"), 3)
    };
    let cluster = NatsCluster::start(spec).await.expect("the cluster forms");
    let short = Duration::from_millis(500);
    let command_subject = format!("orch.{}.cmd.vm_register", cell());
    let event_subject = format!("orch.{}.evt.vm.vm-forged", cell());
    for i in 0..cluster.len() {
        let node = cluster.node(i);
        let nobody = ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(node.url())
            .await;
        assert!(nobody.is_err(), "node {i} lets in a client without a user");
        let (reader, mut errors) = connect_as(node, NatsRole::Reader).await;
        let as_reader = CommandClient::new(reader.clone(), cell(), short);
        let id = CommandId::parse("forged-1").expect("an id");
        assert!(as_reader
            .send(&id, &Actor::operator("x"), &register("vm-forged"))
            .await
            .is_err());
        refused(&mut errors, "publish", &command_subject).await;
        append_refused(&reader, &mut errors, &event_subject, short).await;
    }
}
