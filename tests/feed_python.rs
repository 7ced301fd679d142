//! The Python analytics consumer of `examples/python` against a real nats-server and the
//! orchestrator binary (`serve --role writer,feed`): started after 100,000 events, killed with
//! SIGKILL midway and started again, it ends with exactly the events of the log, in order, none
//! missing or repeated, and its time in each state per game equals the same computed here from the
//! log.
//!
//! The interpreter is `$PYTHON` (default `python3`), with nats-py installed (`scripts/test` makes a
//! venv with `scripts/python-venv` from `examples/python/requirements.txt`). Without nats-py the
//! test fails when `CI` is set and is skipped, saying why, otherwise.

mod common;
mod feed_support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestServer;
use feed_support::{lifecycles, register_vms, serve};
use futures::TryStreamExt;
use orchestrator::client::CommandClient;
use orchestrator::log::Reader;
use orchestrator_events::{CellId, Envelope, Event};

/// Sessions started, placed, paused, resumed and ended: five events each.
const SESSIONS: usize = 20_000;
const VMS: usize = 20;

fn python() -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let found = std::process::Command::new(&python)
        .args(["-c", "import nats"])
        .output();
    let why = match found {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned(),
        Err(e) => e.to_string(),
    };
    let message = format!(
        "nats-py is not importable by {python} ({why}): run the tests with `scripts/test`, or \
         set PYTHON to the python that `scripts/python-venv` prints"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    println!("skipped: {message}");
    None
}

fn consumer(python: &str, url: &str, dir: &Path) -> tokio::process::Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/feed_analytics.py");
    tokio::process::Command::new(python)
        .arg(script)
        .args([
            "--server",
            url,
            "--batch",
            "500",
            "--until-idle",
            "5",
            "--report",
        ])
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("--ids-out")
        .arg(dir.join("ids.txt"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("report.json")).unwrap())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the python consumer starts")
}

/// Time in each state per game, as the example computes it (every session here ends).
fn expected_report(events: &[Envelope]) -> BTreeMap<String, [i64; 4]> {
    let mut games: BTreeMap<String, [i64; 4]> = BTreeMap::new();
    let mut open: HashMap<String, (String, usize, i64)> = HashMap::new();
    for env in events {
        let at = env.occurred_at;
        let (sid, next) = match &env.event {
            Event::SessionStarted {
                session_id,
                game_id,
                ..
            } => {
                games.entry(game_id.to_string()).or_default()[0] += 1;
                open.insert(session_id.to_string(), (game_id.to_string(), 1, at));
                continue;
            }
            Event::SessionAssigned { session_id, .. } | Event::SessionResumed { session_id } => {
                (session_id, Some(2))
            }
            Event::SessionPaused { session_id } => (session_id, Some(3)),
            Event::SessionEnded { session_id, .. } => (session_id, None),
            _ => continue,
        };
        let (game, state, since) = open.remove(sid.as_str()).unwrap();
        games.get_mut(&game).unwrap()[state] += at - since;
        if let Some(next) = next {
            open.insert(sid.to_string(), (game, next, at));
        }
    }
    games
}

fn lines(path: &PathBuf) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_killed_midway_ends_with_exactly_the_log() {
    let Some(python) = python() else { return };
    let server = TestServer::start_default().await;
    let url = server.url();
    let mut orchestrator = serve(&url, &server.dir().join("orchestrator"), "writer,feed");
    let commands = CommandClient::new(
        server.client().await,
        CellId::default_cell(),
        Duration::from_secs(60),
    );

    // The writer takes its lease, then 100,000 events arrive in batch requests, 4 in flight.
    register_vms(&commands, VMS).await;
    let started = Instant::now();
    lifecycles(&commands, 0, SESSIONS).await;
    let js = server.jetstream().await;
    let reader = Reader::new(js.clone(), CellId::default_cell())
        .await
        .unwrap();
    let (last, events) = reader.read_to_end(1).await.unwrap();
    let events: Vec<_> = events.try_collect().await.unwrap();
    assert_eq!(events.len(), VMS + 5 * SESSIONS);
    assert_eq!(last, events.len() as u64);
    println!("{last} events written in {:?}", started.elapsed());

    // The feed has them all before the consumer starts.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut feed = js.get_stream("ORCH_DEFAULT_FEED").await.unwrap();
        let n = feed.info().await.unwrap().state.messages;
        if n == last {
            break;
        }
        assert!(orchestrator.try_wait().unwrap().is_none(), "serve exited");
        assert!(Instant::now() < deadline, "the feed has {n} of {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("the feed caught up {:?} after the start", started.elapsed());

    // The consumer, killed outright a third of the way in, then started again.
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.txt");
    let mut first_run = consumer(&python, &url, dir.path());
    let deadline = Instant::now() + Duration::from_secs(300);
    while lines(&ids) < 30_000 {
        assert!(
            first_run.try_wait().unwrap().is_none(),
            "the consumer exited early"
        );
        assert!(Instant::now() < deadline, "the consumer is too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first_run.start_kill().unwrap(); // SIGKILL
    first_run.wait().await.unwrap();
    let at_kill = lines(&ids);
    println!("consumer killed after {at_kill} lines");
    assert!((at_kill as u64) < last, "killed midway");

    let mut second_run = consumer(&python, &url, dir.path());
    let status = tokio::time::timeout(Duration::from_secs(600), second_run.wait())
        .await
        .expect("the consumer finishes")
        .unwrap();
    assert!(status.success(), "{status}");

    let got: Vec<String> = std::fs::read_to_string(&ids)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = events
        .iter()
        .map(|e| format!("{} {}", e.seq, e.envelope.event_id))
        .collect();
    assert_eq!(got.len(), want.len(), "as many lines as events");
    assert!(got == want, "exactly the log, in order");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let envelopes: Vec<Envelope> = events.into_iter().map(|e| e.envelope).collect();
    let want = expected_report(&envelopes);
    assert_eq!(want.len(), 7);
    for (game, [sessions, starting, active, paused]) in want {
        let g = &report["games"][&game];
        assert_eq!(
            (
                g["sessions"].as_i64(),
                g["starting_ms"].as_i64(),
                g["active_ms"].as_i64(),
                g["paused_ms"].as_i64()
            ),
            (Some(sessions), Some(starting), Some(active), Some(paused)),
            "{game}"
        );
    }
    orchestrator.start_kill().unwrap();
}
