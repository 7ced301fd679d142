//! Warm failover against a real nats-server: a standby that followed the log hands over exactly the
//! log's state (the same as a cold recovery), events appended after its last fold included; a
//! standby's state that does not match the log is not used; and end to end, a standby writer that
//! takes over from a dead one serves the state a replay of the log gives.

mod common;
mod faults_support;

use faults_support::*;
use orchestrator::admin::replay_state;
use orchestrator::domain::DomainConfig;
use orchestrator::writer::recovery::{recover, recover_from, snapshot_path, starting_point};
use orchestrator::writer::standby::Follower;

/// Sends `n` registrations `vm-<from>`.. through `commands`; returns the last sequence.
async fn register_vms(commands: &CommandClient, from: usize, n: usize) -> u64 {
    let mut last = 0;
    for i in from..from + n {
        let vm = format!("vm-{i}");
        let reply = send_until_answered(
            commands,
            &format!("register-{vm}"),
            &register(&vm, 2),
            Instant::now() + Duration::from_secs(10),
        )
        .await;
        last = accepted(&reply).unwrap_or_else(|| panic!("{vm}: {reply:?}"));
    }
    last
}

/// A session started and placed, and one started and ended, so that the state holds more than VMs.
async fn some_sessions(commands: &CommandClient, tag: &str) -> u64 {
    let deadline = || Instant::now() + Duration::from_secs(10);
    let placed = format!("s-{tag}-placed");
    let ended = format!("s-{tag}-ended");
    let mut last = 0;
    for (id, command) in [
        (
            format!("start-{placed}"),
            start(&placed, &format!("u-{tag}-1")),
        ),
        (format!("assign-{placed}"), assign(&placed)),
        (
            format!("start-{ended}"),
            start(&ended, &format!("u-{tag}-2")),
        ),
        (format!("end-{ended}"), end(&ended)),
    ] {
        let reply = send_until_answered(commands, &id, &command, deadline()).await;
        last = accepted(&reply).unwrap_or_else(|| panic!("{id}: {reply:?}"));
    }
    last
}

/// Waits until the follower's state reaches `seq`.
async fn folded_to(follower: &Follower, seq: u64) {
    let mut position = follower.position();
    tokio::time::timeout(Duration::from_secs(10), position.wait_for(|at| *at >= seq))
        .await
        .unwrap_or_else(|_| panic!("the follower did not reach {seq}"))
        .unwrap();
}

fn config(data_dir: Option<&Path>) -> WriterConfig {
    WriterConfig {
        holder_id: "follower".into(),
        data_dir: data_dir.map(Path::to_path_buf),
        ..WriterConfig::new(cell())
    }
}

/// A follower started from the active writer's snapshot folds the log as it grows; the state it
/// hands over, caught up with the events appended after its last fold, is the log's: the same as a
/// cold recovery and a replay. Without a snapshot too.
#[tokio::test]
async fn a_followers_state_caught_up_equals_a_cold_recovery() {
    init_tracing();
    let server = TestServer::start_default().await;
    let client = server.client().await;
    let data = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let active = WriterConfig {
        holder_id: "active".into(),
        data_dir: Some(data.path().to_path_buf()),
        snapshot_every: 5,
        lease_ttl: Duration::from_secs(1),
        ..WriterConfig::new(cell())
    };
    let writer_task = tokio::spawn(writer::run(server.client().await, active, stop.clone()));
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(5));
    register_vms(&commands, 0, 8).await;
    let js = async_nats::jetstream::new(client.clone());
    let reader = Reader::new(js.clone(), cell()).await.unwrap();
    let domain = DomainConfig::default();
    let path = snapshot_path(data.path(), &cell());
    // The active writer's snapshot by count, as a standby on the same data directory finds it.
    let mut snapshot_seq = None;
    for _ in 0..100 {
        snapshot_seq = starting_point(&reader, &domain, Some(&path))
            .await
            .unwrap()
            .1;
        if snapshot_seq.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot_seq = snapshot_seq.expect("the active writer saved a snapshot");
    assert!(snapshot_seq >= 5);

    let from_snapshot = Follower::spawn(js.clone(), &config(Some(data.path())));
    let from_start = Follower::spawn(js.clone(), &config(None));
    // Events while they follow.
    let followed = some_sessions(&commands, "a").await;
    folded_to(&from_snapshot, followed).await;
    folded_to(&from_start, followed).await;
    let mut warm_snapshot = from_snapshot.take().await;
    let mut warm_start = from_start.take().await;
    assert_eq!(
        warm_snapshot.as_ref().map(|f| f.state.last_seq),
        Some(followed)
    );

    // Events after the last fold: the takeover reads them, and only them.
    register_vms(&commands, 8, 3).await;
    let last = some_sessions(&commands, "b").await;
    let replayed = replay_state(&reader, &domain, last).await.unwrap();
    assert!(replayed.violation.is_none());
    let (cold, _, _) = recover(&reader, &domain, None).await.unwrap();
    assert_eq!(cold.fingerprint(), replayed.state.fingerprint());
    for warm in [&mut warm_snapshot, &mut warm_start] {
        let (state, last_event, how) = recover_from(&reader, &domain, Some(&path), warm)
            .await
            .unwrap();
        assert!(warm.is_none(), "the warm state is taken");
        assert_eq!(how.warm_seq, Some(followed), "{how:?}");
        assert_eq!(how.snapshot_seq, None, "{how:?}");
        assert_eq!(how.replayed, last - followed, "only the tail is read");
        assert_eq!(state.last_seq, last);
        assert_eq!(last_event.map(|e| e.seq), Some(last));
        assert_eq!(state, cold, "the warm state is the cold recovery's");
        assert_eq!(state.fingerprint(), replayed.state.fingerprint());
    }
    stop.cancel();
    writer_task.await.unwrap().unwrap();
}

/// A standby's state that the log does not hold (the stream was deleted and created again, with
/// other events) is not used: the recovery starts over, from the log it reads.
#[tokio::test]
async fn a_followers_state_of_another_log_is_not_used() {
    init_tracing();
    let first = TestServer::start_default().await;
    let stop = CancellationToken::new();
    let writer_task = tokio::spawn(writer::run(
        first.client().await,
        WriterConfig::new(cell()),
        stop.clone(),
    ));
    let client = first.client().await;
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(5));
    let followed = register_vms(&commands, 0, 4).await;
    let follower = Follower::spawn(async_nats::jetstream::new(client.clone()), &config(None));
    folded_to(&follower, followed).await;
    let mut warm = follower.take().await;
    stop.cancel();
    writer_task.await.unwrap().unwrap();

    // Another log, longer, whose events differ.
    let other = TestServer::start_default().await;
    let stop = CancellationToken::new();
    let writer_task = tokio::spawn(writer::run(
        other.client().await,
        WriterConfig::new(cell()),
        stop.clone(),
    ));
    let commands = CommandClient::new(other.client().await, cell(), Duration::from_secs(5));
    let last = register_vms(&commands, 100, 6).await;
    let reader = Reader::new(other.jetstream().await, cell()).await.unwrap();
    let domain = DomainConfig::default();
    let (state, _, how) = recover_from(&reader, &domain, None, &mut warm)
        .await
        .unwrap();
    assert!(warm.is_none());
    assert_eq!(how.warm_seq, None, "{how:?}");
    assert_eq!(how.replayed, last);
    let replayed = replay_state(&reader, &domain, last).await.unwrap();
    assert_eq!(state.fingerprint(), replayed.state.fingerprint());
    assert!(!state.vms.contains_key(&"vm-0".parse::<VmId>().unwrap()));
    stop.cancel();
    writer_task.await.unwrap().unwrap();
}

/// End to end: writer `a` serves, writer `b` stands by (following the log); commands keep coming;
/// `a` dies without releasing its lease. `b` takes over, continues the log's sequence, answers a
/// retry with its first result, and its state's fingerprint is a replay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_followed_the_log_takes_over_with_the_logs_state() {
    init_tracing();
    let server = TestServer::start_default().await;
    let stop = CancellationToken::new();
    let writer_config = |holder: &str| WriterConfig {
        holder_id: holder.to_owned(),
        data_dir: Some(server.dir().join(holder)),
        lease_ttl: Duration::from_secs(1),
        ..WriterConfig::new(cell())
    };
    let a = tokio::spawn(writer::run(
        server.client().await,
        writer_config("writer-a"),
        stop.clone(),
    ));
    let client = server.client().await;
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(5));
    assert_eq!(register_vms(&commands, 0, 3).await, 3);
    assert_eq!(lease_holder(&client).await.as_deref(), Some("writer-a"));
    let b = tokio::spawn(writer::run(
        server.client().await,
        writer_config("writer-b"),
        stop.clone(),
    ));
    some_sessions(&commands, "a").await;
    register_vms(&commands, 3, 2).await;
    let before = some_sessions(&commands, "b").await;
    assert_eq!(active_writers(&client).await, vec!["writer-a".to_owned()]);

    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    let impatient = CommandClient::new(client.clone(), cell(), Duration::from_millis(500));
    let reply = send_until_answered(
        &impatient,
        "after-start",
        &start("s-after", "u-after"),
        Instant::now() + Duration::from_secs(15),
    )
    .await;
    assert_eq!(accepted(&reply), Some(before + 1), "{reply:?}");
    assert_eq!(lease_holder(&client).await.as_deref(), Some("writer-b"));

    // A retry gets its first result from the new writer.
    let retry = commands
        .send(&cid("register-vm-0"), &actor(), &register("vm-0", 2))
        .await
        .unwrap();
    assert!(
        matches!(retry, Reply::Accepted { seq, duplicate: true, .. } if seq == 1),
        "{retry:?}"
    );

    // Its state is a replay's.
    let reports = writer_states(&client).await;
    let [report] = reports.as_slice() else {
        panic!("one active writer: {reports:?}")
    };
    assert_eq!(report.holder, "writer-b");
    assert_eq!(report.last_seq, before + 1);
    let reader = Reader::new(async_nats::jetstream::new(client.clone()), cell())
        .await
        .unwrap();
    let replayed = replay_state(&reader, &report.config, report.last_seq)
        .await
        .unwrap();
    assert!(replayed.violation.is_none());
    assert_eq!(report.fingerprint, replayed.state.fingerprint());
    stop.cancel();
    b.await.unwrap().unwrap();
}
