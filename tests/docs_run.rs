//! The shell examples of README.md and docs/http.md run as written: every ```sh block (but those
//! marked `<!-- not run -->` just before the fence: starting the system, installing, NATS CLI
//! calls, the benchmark) runs in order with `bash -euo pipefail` against a real system like
//! `scripts/serve`'s: `orchestrator serve` with its embedded nats-server, the demo tokens of
//! scripts/serve, a fresh data directory. Only the addresses and the binary are rewritten (to free
//! ports and the debug binary). The examples check their own statuses (`curl --fail-with-body`, or
//! the status curl prints last compared with `grep`), so a call answering anything but what the
//! docs say fails the block; a curl call that checks nothing fails this test too.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use orchestrator::nats_server::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");
const NOT_RUN: &str = "<!-- not run -->";

/// One runnable block: where it starts, and its text.
struct Block {
    line: usize,
    text: String,
}

/// The ```sh and ```bash blocks of `markdown`, but those marked [`NOT_RUN`].
fn runnable_blocks(markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let fence = line.trim_end();
        if fence == "```sh" || fence == "```bash" {
            let marked = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim() == NOT_RUN);
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_end() == "```")
                .unwrap_or_else(|| panic!("line {}: an unclosed block", i + 1));
            if !marked {
                blocks.push(Block {
                    line: i + 1,
                    text: lines[i + 1..end].join("\n"),
                });
            }
            i = end;
        }
        i += 1;
    }
    blocks
}

/// Every curl call of `block` checks its status: `--fail-with-body` (2xx), or a `grep` of the
/// status curl prints last (` 404$`).
fn unchecked_curls(block: &str) -> Vec<String> {
    block
        .replace("\\\n", " ")
        .lines()
        .filter(|l| l.trim_start().starts_with("curl "))
        .filter(|l| !checks_status(l))
        .map(str::to_owned)
        .collect()
}

/// `--fail-with-body` (a 2xx or nothing), or the status curl prints last compared with `grep`.
fn checks_status(curl: &str) -> bool {
    let fails = curl.contains("--fail-with-body");
    let compared = curl.contains("%{http_code}") && curl.contains("| grep ' ");
    fails || compared
}

/// The demo tokens scripts/serve sets, read from the script itself.
fn serve_tokens() -> String {
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/serve"))
            .expect("scripts/serve");
    let line = script
        .lines()
        .find(|l| l.contains("ORCH_TOKENS=\"${ORCH_TOKENS:-"))
        .expect("scripts/serve sets ORCH_TOKENS");
    let start = line.find(":-").expect("a default") + 2;
    let end = line.rfind("}\"").expect("the default's end");
    line[start..end].to_owned()
}

/// `orchestrator serve` as scripts/serve runs it, on free ports; killed on drop.
struct System {
    child: Child,
    nats_port: u16,
    http_port: u16,
    _dir: tempfile::TempDir,
}

impl System {
    fn start() -> System {
        let dir = tempfile::tempdir().expect("a temp dir");
        let nats_port = free_port().expect("a free port");
        let http_port = free_port().expect("a free port");
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ORCH_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .arg("serve")
            .args(["--nats-port", &nats_port.to_string()])
            .args(["--listen", &format!("127.0.0.1:{http_port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env("ORCH_TOKENS", serve_tokens())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let system = System {
            child,
            nats_port,
            http_port,
            _dir: dir,
        };
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.starts_with("ready") => break,
                Ok(_) => {}
                Err(e) => panic!("serve did not get ready: {e}"),
            }
        }
        system
    }

    /// Runs `blocks` of `doc` in order in one bash, so that variables carry from block to block;
    /// returns what they printed.
    fn run(&self, doc: &str, blocks: &[Block]) -> String {
        let mut script = String::from("set -euo pipefail\n");
        for b in blocks {
            let text = b
                .text
                .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.http_port))
                .replace("localhost:8080", &format!("127.0.0.1:{}", self.http_port))
                .replace("127.0.0.1:4333", &format!("127.0.0.1:{}", self.nats_port))
                .replace("target/release/orchestrator", BIN);
            script.push_str(&format!("echo '>>> {doc}:{}' >&2\n{text}\n", b.line));
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env(
                "ORCH_NATS_URL",
                format!("nats://127.0.0.1:{}", self.nats_port),
            )
            .env("RUST_LOG", "warn")
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{doc}: a block failed ({}); the last '>>>' line names it\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        eprintln!("{doc}:\n{stderr}");
        stdout.into_owned()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn doc(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

#[test]
fn every_curl_of_the_docs_checks_its_status() {
    let mut unchecked = Vec::new();
    for path in ["README.md", "docs/http.md"] {
        for b in runnable_blocks(&doc(path)) {
            for c in unchecked_curls(&b.text) {
                unchecked.push(format!("{path}:{}: {c}", b.line));
            }
        }
    }
    assert!(
        unchecked.is_empty(),
        "curl calls that check no status:\n{}",
        unchecked.join("\n")
    );
}

#[test]
fn the_readme_and_the_http_walkthrough_run_as_written() {
    let readme = runnable_blocks(&doc("README.md"));
    let http = runnable_blocks(&doc("docs/http.md"));
    assert!(readme.len() >= 3 && http.len() >= 8, "blocks lost");
    let system = System::start();
    // The README's examples first, then the walkthrough on the same log: their ids do not meet.
    let out = system.run("README.md", &readme);
    for shown in [
        r#""session_id":"s-1""#,
        "already_exists",
        r#""type":"SessionEnded""#,
    ] {
        assert!(out.contains(shown), "README.md: no {shown} in\n{out}");
    }
    let out = system.run("docs/http.md", &http);
    // The session id the walkthrough names is the one alice's key derives, and a resent end is a
    // replay.
    let named = doc("docs/http.md")
        .lines()
        .find_map(|l| l.strip_prefix("S=").map(str::to_owned))
        .expect("the walkthrough names its session");
    for shown in [
        format!(r#""session_id":"{named}""#),
        r#""replayed":true"#.to_owned(),
        "invalid_argument".to_owned(),
        "malformed_request".to_owned(),
        "orch_http_requests_total{".to_owned(),
    ] {
        assert!(out.contains(&shown), "docs/http.md: no {shown} in\n{out}");
    }
}
