//! The `orchestrator` binary's `serve` end to end: `rebuild` refused while it serves, then the
//! same data served again; with no URL, its own embedded nats-server run, supervised and stopped.

mod cli_support;
mod common;

use cli_support::*;

#[tokio::test]
async fn rebuild_refuses_while_serving_then_serves_the_same_data() {
    let server = TestServer::start_default().await;
    let url = server.url();
    let data = server.dir().join("data");
    let data_arg = data.to_str().unwrap();
    let (mut serve, listen) = serve_external(&server, &data, true);
    assert!(serve.wait_for("HTTP:", Duration::ZERO).contains(&listen));
    assert_eq!(
        send(&url, &["vm", "register", "vm-1", "--capacity", "4"]).code,
        0
    );
    for s in ["a", "b"] {
        let out = send(&url, &["start", "--user", s, "--game", "g", "--session", s]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(send(&url, &["assign", s, "--policy", "spread"]).code, 0);
    }
    assert_eq!(send(&url, &["end", "a"]).code, 0);
    assert_eq!(http_get(&listen, "/healthz").0, 200, "the bridge runs");

    let out = run(&url, &["rebuild", "--data-dir", data_arg]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("in use"), "{out:?}");

    assert_eq!(serve.stop(), 0, "{}", serve.output());
    let out = run(&url, &["rebuild", "--data-dir", data_arg]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("from 6 events: checkpoint 6"),
        "{out:?}"
    );

    let dir = data.join("projections");
    {
        let (store, opened) = Projections::open(&dir).expect("the store opens once serve is gone");
        assert_eq!(opened, Opened::Resumed { checkpoint: 6 });
        let a = store
            .session(&"a".parse().unwrap())
            .unwrap()
            .expect("session a");
        let b = store
            .session(&"b".parse().unwrap())
            .unwrap()
            .expect("session b");
        assert_eq!(
            (a.status, b.status),
            (SessionStatus::Ended, SessionStatus::Active)
        );
    }

    let (serve, listen) = serve_external(&server, &data, true);
    serve.wait_for(
        "projections: resumed at checkpoint 6",
        Duration::from_secs(1),
    );
    let (status, body) = http_get(&listen, "/v1/sessions/a");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "ended", "{body}");
    let (status, body) = http_get(&listen, "/v1/sessions/b");
    assert_eq!(
        (status, json(&body)["vm_id"].as_str()),
        (200, Some("vm-1")),
        "{body}"
    );
    let out = run(&url, &["verify"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("projections at seq 6"), "{out:?}");
}

#[tokio::test]
async fn serve_without_a_url_runs_supervises_and_stops_its_own_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port().unwrap().to_string();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let bin: PathBuf = server_bin();
    let mut serve = Serve::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--nats-port",
            &port,
            "--listen",
            &listen,
        ],
        &[("NATS_SERVER_BIN", bin.to_str().unwrap())],
    );
    let url = format!("nats://127.0.0.1:{port}");
    let nats_line = serve.wait_for("NATS:", Duration::ZERO);
    assert!(nats_line.contains(&url), "{nats_line}");
    assert!(
        nats_line.contains(&server_version().to_string()),
        "{nats_line}"
    );
    let expected = if Durability::SyncAlways.supported_by(server_version()) {
        "always"
    } else {
        "default"
    };
    let durability = serve.wait_for("durability:", Duration::ZERO);
    assert!(
        durability.contains(&format!("durability:  {expected}:")),
        "{durability}"
    );
    let pid = pid_after(&nats_line, "pid ");
    assert!(process_exists(pid), "nats-server {pid} runs");
    assert!(
        data.join("nats").join("jetstream").is_dir(),
        "its store is under the data dir"
    );

    let out = send(&url, &["vm", "register", "vm-1", "--capacity", "1"]);
    assert_eq!(out.code, 0, "{out:?}");

    // A second serve on the same port refuses instead of using the first one's server.
    let other = dir.path().join("other");
    let out: Run = orchestrator()
        .args([
            "serve",
            "--nats-port",
            &port,
            "--data-dir",
            other.to_str().unwrap(),
        ])
        .env("NATS_SERVER_BIN", &bin)
        .output()
        .expect("the binary runs")
        .into();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!("port {port} is in use")),
        "{out:?}"
    );

    // A crash of the server: serve restarts it on the same port and store.
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let restarted = serve.wait_for("embedded nats-server restarted", Duration::from_secs(10));
    let pid = pid_after(&restarted, "pid=");
    assert!(process_exists(pid), "the restarted nats-server {pid} runs");
    let out = send(&url, &["vm", "register", "vm-2", "--capacity", "1"]);
    assert_eq!(out.code, 0, "{out:?}\n{}", serve.output());
    assert!(
        out.stdout.contains("at seq 2"),
        "the log survived the crash: {out:?}"
    );

    assert_eq!(serve.stop(), 0, "{}", serve.output());
    assert!(!process_exists(pid), "nats-server {pid} stopped with serve");
}
