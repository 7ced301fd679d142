//! The `orchestrator` binary with its projection store deleted and overwritten while it serves, its
//! writer snapshot corrupted while it is stopped, against a real nats-server.
//!
//! Deterministic: fixed offsets and a seeded generator; "eventually" is polled with a deadline.

mod faults_support;
mod http_support;
mod projections_damage_support;

// One copy of the shared helpers: `faults_support` finds them at `crate::common`.
use http_support::common;

use projections_damage_support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `orchestrator serve` with every role but the feed, against `url`, its bridge on `port`.
fn spawn_serve(url: &str, data: &Path, port: u16, run: usize) -> faults_support::Orchestrator {
    let log = data.join(format!("serve-{run}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["serve", "--nats-url", url, "--data-dir"])
        .arg(data.join("data"))
        .args(["--role", "writer,projector,bridge", "--lease-ttl", "1s"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("ORCH_TOKENS", http_support::TOKENS)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("the orchestrator binary starts");
    faults_support::Orchestrator { child, log }
}

/// A tiny HTTP client of the bridge as the operator.
struct Bridge {
    http: reqwest::Client,
    base: String,
}

impl Bridge {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(http_support::OPS);
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn wait_ready(&self, orch: &mut faults_support::Orchestrator) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            orch.assert_running();
            // A command answered means the writer holds the lease too. The bridge answers a moment
            // before `serve` prints its banner (the projections' line, read below), so that too.
            let (status, _) = self.call("GET", "/v1/vms", None).await;
            let (ping, _) = self
                .call("POST", "/v1/vms/none/drain", Some(json!({})))
                .await;
            let banner = orch.output().lines().any(|l| l.starts_with("ready ("));
            if status == 200 && ping == 404 && banner {
                return;
            }
            assert!(Instant::now() < deadline, "never ready:\n{}", orch.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every read answers the data in `expected` (path → body) or 503 `projections_rebuilding`;
    /// returns how many answered the data.
    async fn reads_right_or_refused(&self, expected: &[(String, Value)], case: &str) -> usize {
        let mut right = 0;
        for (path, was) in expected {
            let (status, body) = self.call("GET", path, None).await;
            match status {
                200 => {
                    assert_eq!(&body, was, "{case}: {path} answered wrong data");
                    right += 1;
                }
                503 => assert_eq!(
                    body["code"], "projections_rebuilding",
                    "{case}: {path}: {body}"
                ),
                other => panic!("{case}: {path}: {other} {body}"),
            }
        }
        right
    }

    /// Polls until every read answers its expected data.
    async fn until_right(
        &self,
        expected: &[(String, Value)],
        case: &str,
        orch: &mut faults_support::Orchestrator,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.reads_right_or_refused(expected, case).await < expected.len() {
            orch.assert_running();
            assert!(
                Instant::now() < deadline,
                "{case}: never right again:\n{}",
                orch.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Stops `orch` with SIGTERM and waits for a clean exit.
async fn stop_gracefully(orch: &mut faults_support::Orchestrator) {
    use nix::sys::signal::{kill, Signal};
    let pid = orch.child.id().expect("running") as i32;
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let status = orch.child.wait().await.unwrap();
    assert!(status.success(), "{status}:\n{}", orch.output());
}

/// Overwrites `path` in place (the same inode a running sled holds open) with a fixed pattern
/// every 4 KiB.
fn overwrite_in_place(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(path).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut at = 0;
    while at < len {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0xa5; 512]).unwrap();
        at += 4096;
    }
    f.sync_all().unwrap();
}

/// The binary end to end: the store overwritten in place, then deleted, while it serves (reads
/// answer the right data or 503, commands go on); stopped; its writer snapshot and its store
/// corrupted; restarted: the store is found damaged and rebuilt, the writer ignores the snapshot
/// and recovers from the log (a full VM stays full), and `verify` is clean.
#[tokio::test(flavor = "multi_thread")]
async fn a_serving_orchestrator_answers_right_data_or_none_while_its_store_is_destroyed() {
    let server = common::TestServer::start_default().await;
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let bridge = Bridge {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let mut orch = spawn_serve(&server.url(), work.path(), port, 0);
    bridge.wait_ready(&mut orch).await;
    for v in 0..2 {
        let (status, body) = bridge
            .call(
                "POST",
                "/v1/vms",
                Some(json!({"vm_id": format!("vm-{v}"), "capacity": 3})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut ids = Vec::new();
    for u in 0..6 {
        let body = json!({"game_id": "chess", "user_id": format!("u{u}"), "assign": {"vm_id": format!("vm-{}", u % 2)}});
        let (status, body) = bridge.call("POST", "/v1/sessions", Some(body)).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["session"]["session_id"].as_str().unwrap().to_owned());
    }
    let (status, body) = bridge
        .call(
            "POST",
            &format!("/v1/sessions/{}/end", ids[0]),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut paths: Vec<String> = ids.iter().map(|id| format!("/v1/sessions/{id}")).collect();
    paths.extend([
        "/v1/vms".to_owned(),
        "/v1/vms/vm-1".to_owned(),
        "/v1/capacity".to_owned(),
    ]);
    let mut expected = Vec::new();
    for path in &paths {
        let (status, body) = bridge.call("GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        expected.push((path.clone(), body));
    }
    // `as_of_seq` moves with every command: capacity is compared without it.
    let strip = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("as_of_seq");
        }
        v
    };
    let store = work.path().join("data").join("projections");
    // What the reads below may answer, besides 503: what they answered before (`/v1/vms` and the
    // capacity change with the late session below, so they are left out after it).
    let before = &expected[..paths.len() - 1];
    let stable: Vec<(String, Value)> = expected
        .iter()
        .filter(|(p, _)| p.starts_with("/v1/sessions/") || p == "/v1/vms/vm-1")
        .cloned()
        .collect();

    // Deleted while it serves.
    std::fs::remove_dir_all(&store).unwrap();
    bridge.reads_right_or_refused(before, "deleted").await;
    // The writer goes on: vm-0 holds two sessions of three.
    let body = json!({"session_id": "late", "game_id": "chess", "user_id": "late", "assign": {"vm_id": "vm-0"}});
    let (status, body) = bridge.call("POST", "/v1/sessions", Some(body)).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    orch.assert_running();
    stop_gracefully(&mut orch).await;

    // Restarted without a store: created and built from the log.
    let mut orch = spawn_serve(&server.url(), work.path(), port, 1);
    bridge.wait_ready(&mut orch).await;
    bridge
        .until_right(&stable, "restarted without a store", &mut orch)
        .await;
    assert!(
        orch.output().contains("projections: created"),
        "{}",
        orch.output()
    );

    // Overwritten in place while it serves.
    overwrite_in_place(&store.join("db"));
    for snap in files(&store, "snap.") {
        overwrite_in_place(&snap);
    }
    bridge.reads_right_or_refused(&stable, "overwritten").await;
    stop_gracefully(&mut orch).await;

    // Damaged while stopped: the store again, and the writer's snapshot.
    let snapshot =
        orchestrator::writer::recovery::snapshot_path(&work.path().join("data"), &cell());
    assert!(snapshot.exists(), "a snapshot was saved at shutdown");
    let len = std::fs::metadata(&snapshot).unwrap().len();
    flip(&snapshot, len / 2);
    overwrite_in_place(&store.join("db"));

    let mut orch = spawn_serve(&server.url(), work.path(), port, 2);
    bridge.wait_ready(&mut orch).await;
    bridge
        .until_right(&stable, "restarted with a damaged store", &mut orch)
        .await;
    let output = orch.output();
    let line = output
        .lines()
        .find(|l| l.contains("projections:"))
        .unwrap_or_default();
    println!("restarted with a damaged store: {line}");
    let (status, capacity) = bridge.call("GET", "/v1/capacity", None).await;
    assert_eq!(status, 200);
    let was = strip(expected.last().unwrap().1.clone());
    let now = strip(capacity);
    assert_eq!(now["capacity"], was["capacity"]);
    assert_eq!(
        now["used"].as_u64().unwrap(),
        was["used"].as_u64().unwrap() + 1,
        "the late session holds a slot: {now}"
    );
    let (status, body) = bridge.call("GET", "/v1/sessions/late", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    // The writer recovered from the log, not from the corrupt snapshot: vm-0 is full.
    let body = json!({"game_id": "chess", "user_id": "one-too-many", "assign": {"vm_id": "vm-0"}});
    let (status, body) = bridge.call("POST", "/v1/sessions", Some(body)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "vm_full", "{body}");
    assert!(output.contains("snapshot checksum mismatch"), "{output}");

    let verify = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["verify", "--nats-url", &server.url()])
        .output()
        .await
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
