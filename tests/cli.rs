//! The `orchestrator` binary end to end: `serve` against a real nats-server per test (or its own
//! embedded one), driven through the client subcommands, then read back with `history`, `state`,
//! `tail`, `verify` and `rebuild`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{server_bin, server_version, TestServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use orchestrator::domain::SessionStatus;
use orchestrator::nats_server::{free_port, Durability};
use orchestrator::projections::{Opened, Projections};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

/// The binary with no `ORCH_*` settings inherited from the environment.
fn orchestrator() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORCH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// The output of one run, with its text.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs a subcommand against `url` and waits for it.
fn run(url: &str, args: &[&str]) -> Run {
    orchestrator()
        .args(args)
        .args(["--nats-url", url])
        .output()
        .expect("the binary runs")
        .into()
}

/// Runs a command subcommand, retrying while no writer answers yet (exit 3), for up to 15 s.
fn send(url: &str, args: &[&str]) -> Run {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = run(url, args);
        if out.code != 3 || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the output of a `serve` shows when one of its pipes closes.
const CLOSED: &str = "<pipe closed>";

/// A running `orchestrator serve`: its output collected line by line, stopped with SIGTERM on drop
/// (killed if it does not stop).
struct Serve {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Serve {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Serve {
        let mut cmd = orchestrator();
        cmd.arg("serve")
            .args(args)
            .env("RUST_LOG", "info,async_nats=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("serve starts");
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                let (store, cv) = &*lines;
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    store.lock().unwrap().push(line);
                    cv.notify_all();
                }
                store.lock().unwrap().push(CLOSED.to_owned());
                cv.notify_all();
            });
        }
        let serve = Serve { child, lines };
        serve.wait_for("ready", Duration::from_secs(20));
        serve
    }

    /// The first line containing `needle`, waiting up to `timeout`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let (store, cv) = &*self.lines;
        let deadline = Instant::now() + timeout;
        let mut lines = store.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let closed = lines.iter().filter(|l| *l == CLOSED).count() == 2;
            assert!(
                !left.is_zero() && !closed,
                "no line with {needle:?} from serve (it exited, or {timeout:?} passed):\n{}",
                lines.join("\n")
            );
            lines = cv.wait_timeout(lines, left).unwrap().0;
        }
    }

    fn output(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits for it to exit; returns its exit code.
    fn stop(&mut self) -> i32 {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on serve") {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serve did not stop on SIGTERM:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The bridge's token in these tests.
const TOKENS: &str = "ops-token=operator:ops";

/// `serve` against the test server, with its data in `data` and the bridge on a free port (on only
/// `with_bridge`, which gives it tokens). Returns the bridge's address too.
fn serve_external(server: &TestServer, data: &Path, with_bridge: bool) -> (Serve, String) {
    let listen = format!("127.0.0.1:{}", free_port().expect("a free port"));
    let data = data.to_str().expect("a UTF-8 temp path");
    let envs: &[(&str, &str)] = if with_bridge {
        &[("ORCH_TOKENS", TOKENS)]
    } else {
        &[]
    };
    let serve = Serve::start(
        &[
            "--nats-url",
            &server.url(),
            "--data-dir",
            data,
            "--listen",
            &listen,
        ],
        envs,
    );
    (serve, listen)
}

/// `GET path` on the bridge as the operator: the status and the body. Retries the connection for a
/// few seconds (the bridge binds its port as it starts).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => {
                panic!("the bridge at {addr} does not answer: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer ops-token\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"))
}

#[tokio::test]
async fn commands_then_history_state_tail_and_verify() {
    let server = TestServer::start_default().await;
    let url = server.url();
    let (serve, _) = serve_external(&server, &server.dir().join("data"), false);
    let http = serve.wait_for("HTTP:", Duration::ZERO);
    assert!(
        http.contains("off: no tokens"),
        "no tokens, no bridge: {http}"
    );

    let out = send(
        &url,
        &[
            "vm",
            "register",
            "vm-1",
            "--capacity",
            "2",
            "--label",
            "region=eu",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("VmRegistered at seq 1"), "{out:?}");

    let out = send(
        &url,
        &[
            "start",
            "--user",
            "u1",
            "--game",
            "g1",
            "--session",
            "s1",
            "--require",
            "region=eu",
            "--json",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let reply = json(out.stdout.trim());
    assert_eq!(reply["accepted"]["seq"], 2, "{out:?}");
    assert_eq!(
        reply["accepted"]["event"]["event"]["SessionStarted"]["session_id"],
        "s1"
    );

    let out = send(&url, &["assign", "s1", "--command-id", "assign-s1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("SessionAssigned at seq 3") && out.stdout.contains("vm-1"),
        "{out:?}"
    );
    let retry = send(&url, &["assign", "s1", "--command-id", "assign-s1"]);
    assert_eq!(retry.code, 0, "{retry:?}");
    assert!(
        retry.stdout.contains("at seq 3") && retry.stdout.contains("retry"),
        "{retry:?}"
    );

    assert_eq!(send(&url, &["pause", "s1"]).code, 0);
    let again = send(&url, &["pause", "s1"]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("invalid_transition"), "{again:?}");
    let rejected = send(&url, &["pause", "s1", "--json"]);
    assert_eq!(rejected.code, 2, "{rejected:?}");
    assert_eq!(
        json(rejected.stdout.trim())["rejected"]["code"],
        "invalid_transition"
    );
    assert_eq!(send(&url, &["resume", "s1"]).code, 0);
    let out = send(&url, &["end", "s1", "--reason", "user"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("SessionEnded at seq 6") && out.stdout.contains("reason user"),
        "{out:?}"
    );

    // Nothing listens there: unavailable, not rejected.
    let dead = format!("nats://127.0.0.1:{}", free_port().unwrap());
    let out = run(&dead, &["pause", "s1", "--timeout", "1s"]);
    assert_eq!(out.code, 3, "{out:?}");

    let out = run(&url, &["history", "s1"]);
    assert_eq!(out.code, 0, "{out:?}");
    for needle in [
        "SessionStarted",
        "SessionAssigned",
        "SessionPaused",
        "SessionResumed",
        "SessionEnded",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {out:?}");
    }
    assert!(out.stdout.contains("time in each state"), "{out:?}");
    assert!(
        out.stdout.contains("assign-s1"),
        "the command id shows: {out:?}"
    );
    assert!(
        out.stdout.contains("fullest VM with room"),
        "the placement shows: {out:?}"
    );
    let out = run(&url, &["history", "s1", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let h = json(out.stdout.trim());
    let at: Vec<i64> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(at.len(), 5);
    assert_eq!(h["status"], "ended");
    assert_eq!(h["time_in_state_ms"]["starting"], at[1] - at[0]);
    assert_eq!(
        h["time_in_state_ms"]["active"],
        (at[2] - at[1]) + (at[4] - at[3])
    );
    assert_eq!(h["time_in_state_ms"]["paused"], at[3] - at[2]);
    assert_eq!(run(&url, &["history", "nope"]).code, 1);

    let out = run(&url, &["state", "--at", "3", "--json", "--sessions"]);
    assert_eq!(out.code, 0, "{out:?}");
    let s = json(out.stdout.trim());
    assert_eq!(s["as_of_seq"], 3);
    assert_eq!(s["vms"][0]["used"], 1);
    assert_eq!(s["sessions_by_status"]["active"], 1);
    assert_eq!(s["sessions"][0]["status"], "active");
    let out = run(&url, &["state"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("as of seq 6"), "{out:?}");
    assert!(
        out.stdout.contains("vm-1") && out.stdout.contains("0/2"),
        "{out:?}"
    );
    assert!(out.stdout.contains("ended 1"), "{out:?}");
    let time = h["events"][1]["at"].as_str().unwrap();
    let out = run(&url, &["state", "--at", time, "--json"]);
    assert_eq!(json(out.stdout.trim())["as_of_seq"], 3, "{out:?}");
    assert_eq!(run(&url, &["state", "--at", "99"]).code, 1);
    // The same moment with an offset, `now`, a time before the first event, and one without a zone.
    let at_ms = h["events"][1]["at_ms"].as_i64().unwrap();
    let plus_one = orchestrator::log::point::format_time(at_ms + 3_600_000).replace('Z', "+01:00");
    let out = run(&url, &["state", "--at", &plus_one, "--json"]);
    assert_eq!(
        json(out.stdout.trim())["as_of_seq"],
        3,
        "{plus_one}: {out:?}"
    );
    let out = run(&url, &["state", "--at", "now", "--json"]);
    assert_eq!(json(out.stdout.trim())["as_of_seq"], 6, "{out:?}");
    let out = run(&url, &["state", "--at", "-3650d", "--json"]);
    assert_eq!(json(out.stdout.trim())["as_of_seq"], 0, "{out:?}");
    let zoneless = time.trim_end_matches('Z');
    let out = run(&url, &["state", "--at", zoneless]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("add Z or an offset"), "{out:?}");

    // The pool and the sessions, read from the log.
    let out = run(&url, &["vm", "list", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let vms = json(out.stdout.trim());
    assert_eq!(vms[0]["vm_id"], "vm-1", "{out:?}");
    assert_eq!(
        (vms[0]["used"].as_u64(), vms[0]["capacity"].as_u64()),
        (Some(0), Some(2))
    );
    let out = run(&url, &["vm", "list", "--status", "draining", "--json"]);
    assert_eq!(json(out.stdout.trim()), serde_json::json!([]), "{out:?}");
    let out = run(&url, &["vm", "ls"]);
    assert!(
        out.stdout.contains("vm-1") && out.stdout.contains("0/2"),
        "{out:?}"
    );
    let out = run(&url, &["vm", "get", "vm-1", "--json"]);
    assert_eq!(json(out.stdout.trim())["labels"]["region"], "eu", "{out:?}");
    let out = run(&url, &["vm", "get", "vm-9"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no VM vm-9"), "{out:?}");
    let out = run(&url, &["session", "get", "s1", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let got = json(out.stdout.trim());
    assert_eq!(
        (got["status"].as_str(), got["vm_id"].as_str()),
        (Some("ended"), Some("vm-1"))
    );
    let out = run(&url, &["session", "get", "s1"]);
    assert!(out.stdout.contains("ended since"), "{out:?}");
    assert_eq!(run(&url, &["session", "get", "s9"]).code, 1);
    assert_eq!(got["end_reason"], "user", "{out:?}");
    let out = run(&url, &["session", "list", "--user", "u1", "--json"]);
    assert_eq!(
        json(out.stdout.trim()),
        serde_json::json!([]),
        "s1 ended: {out:?}"
    );
    let out = run(&url, &["session", "list", "--status", "active", "--json"]);
    assert_eq!(json(out.stdout.trim()), serde_json::json!([]), "{out:?}");

    // End reasons are listed as the events spell them.
    let out = run(&url, &["end", "--help"]);
    assert!(
        out.stdout.contains("pause_timeout") && !out.stdout.contains("pause-timeout"),
        "{out:?}"
    );

    let out = run(&url, &["tail", "--from", "start", "--count", "4", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<Value> = out.stdout.lines().map(json).collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(lines[0]["type"], "VmRegistered");
    assert!(lines[1]["command_id"].is_string() && lines[1]["actor"]["kind"] == "operator");
    let out = run(
        &url,
        &[
            "tail",
            "--from",
            "start",
            "--type",
            "SessionEnded",
            "--count",
            "1",
            "--json",
        ],
    );
    assert_eq!(json(out.stdout.trim())["seq"], 6, "{out:?}");
    let out = run(
        &url,
        &[
            "tail",
            "--from",
            "start",
            "--session",
            "s1",
            "--vm",
            "vm-1",
            "--count",
            "2",
            "--json",
        ],
    );
    let seqs: Vec<u64> = out
        .stdout
        .lines()
        .map(|l| json(l)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        [3, 6],
        "the assignment and the end name vm-1: {out:?}"
    );
    let out = run(
        &url,
        &["tail", "--from", "-3650d", "--count", "1", "--json"],
    );
    assert_eq!(json(out.stdout.trim())["seq"], 1, "{out:?}");
    let out = run(&url, &["tail", "--from", "5", "--count", "2"]);
    assert!(
        out.stdout.contains("SessionResumed") && out.stdout.contains("SessionEnded"),
        "{out:?}"
    );

    let out = run(&url, &["verify"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("verify: clean"), "{out:?}");
}

#[tokio::test]
async fn a_cell_without_a_log_is_named_with_its_own_exit_status() {
    let server = TestServer::start_default().await;
    let url = server.url();
    for args in [
        &["verify", "--cell", "nope"][..],
        &["state", "--cell", "nope"],
        &["tail", "--cell", "nope", "--count", "1"],
        &["history", "s1", "--cell", "nope"],
        &[
            "usage", "--cell", "nope", "--from", "1", "--to", "2", "--by", "user",
        ],
        &[
            "whatif", "--cell", "nope", "--from", "1", "--to", "2", "--policy", "spread",
        ],
        &["vm", "list", "--cell", "nope"],
        &["session", "get", "s1", "--cell", "nope"],
    ] {
        let out = run(&url, args);
        assert_eq!(out.code, 4, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(
                "no log stream ORCH_NOPE for cell nope: is the cell name right, has a writer run?"
            ),
            "{args:?}: {out:?}"
        );
        assert!(!out.stdout.contains("DIVERGENCE"), "{args:?}: {out:?}");
    }
}

#[test]
fn completions_name_the_subcommands() {
    let out: Run = orchestrator()
        .args(["completions", "bash"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    for sub in [
        "serve",
        "state",
        "tail",
        "verify",
        "vm",
        "session",
        "list",
        "get",
        "completions",
    ] {
        assert!(out.stdout.contains(sub), "{sub}: {out:?}");
    }
    let out: Run = orchestrator()
        .args(["completions", "zsh"])
        .output()
        .unwrap()
        .into();
    assert!(
        out.code == 0 && out.stdout.contains("#compdef orchestrator"),
        "{out:?}"
    );
    let out: Run = orchestrator()
        .args(["completions", "fish"])
        .output()
        .unwrap()
        .into();
    assert!(
        out.code == 0 && out.stdout.contains("complete -c orchestrator"),
        "{out:?}"
    );
}

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

/// The number right after `marker` in `line`.
fn pid_after(line: &str, marker: &str) -> i32 {
    let rest = &line[line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {line}"))
        + marker.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("a pid after {marker:?} in {line}"))
}
