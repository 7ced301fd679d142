//! Shared by the `orchestrator` binary's end-to-end tests (`tests/cli_*.rs`): the binary without
//! inherited `ORCH_*` settings, one run and its output, `serve` as a child process collecting its
//! output, plain HTTP gets.
#![allow(dead_code, unused_imports)]

pub use std::io::{BufRead, BufReader};
pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, Output, Stdio};
pub use std::sync::{Arc, Condvar, Mutex};
pub use std::time::{Duration, Instant};

pub use crate::common::{server_bin, server_version, TestServer};
pub use nix::sys::signal::{kill, Signal};
pub use nix::unistd::Pid;
pub use orchestrator::domain::SessionStatus;
pub use orchestrator::nats_server::{free_port, Durability};
pub use orchestrator::projections::{Opened, Projections};
pub use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

/// The binary with no `ORCH_*` settings inherited from the environment.
pub fn orchestrator() -> Command {
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
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
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
pub fn run(url: &str, args: &[&str]) -> Run {
    orchestrator()
        .args(args)
        .args(["--nats-url", url])
        .output()
        .expect("the binary runs")
        .into()
}

/// Runs a command subcommand, retrying while no writer answers yet (exit 3), for up to 15 s.
pub fn send(url: &str, args: &[&str]) -> Run {
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
pub const CLOSED: &str = "<pipe closed>";

/// A running `orchestrator serve`: its output collected line by line, stopped with SIGTERM on drop
/// (killed if it does not stop).
pub struct Serve {
    pub child: Child,
    pub lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Serve {
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Serve {
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
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
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

    pub fn output(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits for it to exit; returns its exit code.
    pub fn stop(&mut self) -> i32 {
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
pub const TOKENS: &str = "ops-token=operator:ops";

/// `serve` against the test server, with its data in `data` and the bridge on a free port (on only
/// `with_bridge`, which gives it tokens). Returns the bridge's address too.
pub fn serve_external(server: &TestServer, data: &Path, with_bridge: bool) -> (Serve, String) {
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
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
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

pub fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

pub fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"))
}

/// The number right after `marker` in `line`.
pub fn pid_after(line: &str, marker: &str) -> i32 {
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
