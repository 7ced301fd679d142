//! The log on a real three-node JetStream cluster (R3 stream, lease and feed), the orchestrator
//! process serving on it, and load running with clients that retry with the same command ids, while
//! one node fails: a follower killed with SIGKILL, the stream's leader killed, the leader frozen
//! (SIGSTOP) for longer than an election and thawed, every node restarted one by one (a rolling
//! upgrade). After each: every acknowledged command is in the log exactly once, no VM was ever over
//! capacity (replayed), retries get their first answer, `verify` is clean, and the cell went no
//! longer than [`SERVICE_BOUND`] without accepting a command (printed).
//!
//! Runs on the binary under test (`NATS_SERVER_BIN`); `scripts/test` runs it on 2.9.10 and 2.15.1.

mod common;
mod faults_support;

use common::cluster::TestCluster;
use faults_support::*;

/// The orchestrator's stream for the default cell.
fn log_stream() -> String {
    orchestrator_events::subject::stream_name(&cell())
}

/// How a node fails.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillFollower,
    KillLeader,
    PauseLeader,
    RollingRestart,
}

/// The longest the cell may go without accepting a command from the fault on, in every case. The
/// longest measured is 13 s on 2.15.1 and 11 s on 2.9.10 (docs/faults.md): an election (5 to 12 s
/// here), the connection's PINGs noticing a frozen node (3 s), an ack's timeout (3 s), a recovery's
/// requests (2 s each). The bound leaves room for a loaded machine; a stall it catches is a bug.
const SERVICE_BOUND: Duration = Duration::from_secs(45);

/// How long a frozen leader stays frozen: past JetStream's election timeout (a few seconds).
const PAUSE_FOR: Duration = Duration::from_secs(8);

/// Runs the cell on a cluster under load through `fault`, then checks the ledger against the log.
async fn survive(fault: Fault) {
    init_tracing();
    let mut cluster = TestCluster::start(3).await;
    let version = cluster.node(0).version();
    if matches!(fault, Fault::PauseLeader)
        && !version.at_least(2, 10)
        && std::env::var_os("FAULT_FROZEN_ON_2_9").is_none()
    {
        // Measured on 2.9.10: after the thaw a live node's JetStream API went unanswered for up to
        // 20 s, and once a replay of the log ended early, served from the thawed node's stale copy
        // (docs/faults.md).
        eprintln!(
            "skipped on nats-server {version}: a frozen leader is only bounded from 2.10 on; \
             FAULT_FROZEN_ON_2_9=1 runs it"
        );
        return;
    }
    let client = cluster.client().await;
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(2));
    let data_dir = cluster.dir().join("orchestrator");
    let mut orch = Orchestrator::spawn_with(&cluster.urls(), &data_dir, 1, &["--replicas", "3"]);
    // 8 slots for 12 workers: some placements are refused, so capacity is at its limit throughout.
    for vm in ["vm-a", "vm-b"] {
        let reply = orch
            .wait_serving(&commands, &format!("register-{vm}"), &register(vm, 4))
            .await;
        assert!(accepted(&reply).is_some(), "{reply:?}");
    }
    let stream = log_stream();
    let leader = cluster
        .wait_replicas_current(&client, &stream, Duration::from_secs(30))
        .await;
    let load = Load::start(&commands, 12, "c");
    load.wait_accepted(300, Duration::from_secs(60)).await;

    let at = Instant::now();
    let before = load.accepted();
    match fault {
        Fault::KillFollower => {
            let follower = (leader + 1) % cluster.len();
            cluster.node_mut(follower).kill().unwrap();
            load.wait_accepted(300, Duration::from_secs(60)).await;
            cluster.restart_node(follower).await.unwrap();
        }
        Fault::KillLeader => {
            cluster.node_mut(leader).kill().unwrap();
            let elected = new_leader(&cluster, &client, &stream, leader).await;
            println!("a new stream leader in {elected:?}");
            load.wait_accepted(300, Duration::from_secs(60)).await;
            cluster.restart_node(leader).await.unwrap();
        }
        Fault::PauseLeader => {
            cluster.node_mut(leader).pause().unwrap();
            let elected = new_leader(&cluster, &client, &stream, leader).await;
            println!("a new stream leader in {elected:?} while the old one is frozen");
            if let Err(e) = load.try_wait_accepted(300, Duration::from_secs(60)).await {
                let output = orch.output();
                let keep = if std::env::var_os("FAULT_PRINT_LOG").is_some() {
                    usize::MAX
                } else {
                    80
                };
                let tail: Vec<&str> = output.lines().rev().take(keep).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "{e} while the leader is frozen; the orchestrator's log ends with:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(PAUSE_FOR.saturating_sub(at.elapsed())).await;
            cluster.node_mut(leader).resume().unwrap();
        }
        Fault::RollingRestart => {
            for node in 0..cluster.len() {
                cluster.restart_node(node).await.unwrap();
                cluster
                    .wait_replicas_current(&client, &stream, Duration::from_secs(60))
                    .await;
                load.wait_accepted(100, Duration::from_secs(60)).await;
            }
        }
    }
    cluster
        .wait_replicas_current(&client, &stream, Duration::from_secs(60))
        .await;
    load.wait_accepted(200, Duration::from_secs(60)).await;
    let ledger = load.finish().await;
    orch.assert_running();
    if std::env::var_os("FAULT_PRINT_LOG").is_some() {
        println!("the orchestrator's log:\n{}", orch.output());
    }
    let replayed = check_ledger(&client, &commands, &ledger).await;
    let gap = ledger.longest_gap_since(at);
    println!(
        "{fault:?} on nats-server {}: {} commands accepted ({} from the fault on), {} refused, {} \
         retried sends, {} events; longest time without an acceptance from the fault on: {:?}",
        cluster.node(0).version(),
        ledger.accepted.len(),
        ledger.accepted.len().saturating_sub(before),
        ledger.rejected.len(),
        ledger.retries,
        replayed.last,
        gap,
    );
    assert!(
        gap <= SERVICE_BOUND,
        "{fault:?}: the cell went {gap:?} without accepting a command (bound {SERVICE_BOUND:?})"
    );
}

/// Waits until the cluster names a leader of `stream` other than `old`; returns how long it took.
async fn new_leader(
    cluster: &TestCluster,
    client: &async_nats::Client,
    stream: &str,
    old: usize,
) -> Duration {
    let from = Instant::now();
    loop {
        match cluster.stream_leader(client, stream).await {
            Some(leader) if leader != old => return from.elapsed(),
            _ => {}
        }
        assert!(
            from.elapsed() < Duration::from_secs(60),
            "no new leader of {stream} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_under_load() {
    survive(Fault::KillFollower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_under_load() {
    survive(Fault::KillLeader).await;
}

/// Skipped on 2.9 (see [`survive`]); `FAULT_FROZEN_ON_2_9=1` runs it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_frozen_past_an_election_then_thawed() {
    survive(Fault::PauseLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_restarted_one_by_one() {
    survive(Fault::RollingRestart).await;
}
