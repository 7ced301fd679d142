//! NATS secured by the `orchestrator` binary: `serve --nats-auth` secures its embedded server and
//! the CLI follows as the operator, as an added reader and as nobody; every node of a secured
//! cluster enforces the permissions.

mod common;
mod nats_auth_support;

use nats_auth_support::*;

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
