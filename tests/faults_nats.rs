//! The nats-server restarted in the middle of a run, end to end. Checks the log itself (see
//! `faults_support`).

mod common;
mod faults_support;

use faults_support::*;
use orchestrator::nats_server::Durability;

/// The nats-server is restarted while commands keep coming: the writer and the projector reconnect
/// by themselves, every command (retried with its id by its client) is eventually accepted, no
/// acknowledged event is lost, the projection catches up and verify is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_mid_run_loses_nothing() {
    restart_mid_run(Durability::Default, writer::pipeline::ACK_TIMEOUT, false).await;
}

/// The same with `sync_interval: always` (where the server has it), the server killed with SIGKILL
/// (so acks in flight are lost with it) and an ack timeout far longer than the test's waits:
/// appends in flight when the server goes away are recovered from the log as soon as the
/// connection is back, not after their ack timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_flight_at_a_restart_do_not_wait_for_their_ack_timeout() {
    let durability = if crate::common::server_version().features().sync_always {
        Durability::SyncAlways
    } else {
        Durability::Default
    };
    restart_mid_run(durability, Duration::from_secs(600), true).await;
}

/// Restarts the server (killed with SIGKILL when `kill`) in the middle of a run.
async fn restart_mid_run(durability: Durability, ack_timeout: Duration, kill: bool) {
    init_tracing();
    let mut server = TestServer::start(durability).await;
    let stop = CancellationToken::new();
    let client = server.client().await;
    let config = WriterConfig {
        lease_ttl: Duration::from_secs(2),
        ack_timeout,
        ..WriterConfig::new(cell())
    };
    let writer_task = tokio::spawn(writer::run(client.clone(), config, stop.clone()));
    let commands = CommandClient::new(server.client().await, cell(), Duration::from_secs(1));
    let soon = Instant::now() + Duration::from_secs(10);
    let reply = send_until_answered(&commands, "r-register", &register("vm-r", 1000), soon).await;
    assert_eq!(accepted(&reply), Some(1), "{reply:?}");
    let (store, projector_task) =
        spawn_projector(&client, &server.dir().join("projections"), &stop).await;

    // Senders: each runs sessions one after another (start, assign, end), retrying every command
    // with its id until it is accepted, until told to stop.
    let acks: Arc<Mutex<Vec<(String, u64)>>> = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    const SENDERS: usize = 16;
    for t in 0..SENDERS {
        let (commands, acks, done) = (commands.clone(), acks.clone(), done.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                let s = format!("r{t}-{i}");
                let steps = [
                    (format!("{s}-start"), start(&s, &format!("ru{t}"))),
                    (format!("{s}-assign"), assign(&s)),
                    (format!("{s}-end"), end(&s)),
                ];
                for (id, command) in steps {
                    let reply = send_until_answered(
                        &commands,
                        &id,
                        &command,
                        Instant::now() + Duration::from_secs(30),
                    )
                    .await;
                    let seq = accepted(&reply).unwrap_or_else(|| panic!("{id} refused: {reply:?}"));
                    acks.lock().unwrap().push((id, seq));
                }
                i += 1;
            }
        }));
    }
    let count = || acks.lock().unwrap().len();
    let wait_for = |n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count() < n {
            assert!(
                Instant::now() < deadline,
                "stuck at {} acknowledged commands, waiting for {n}",
                count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for(150).await;
    let pid = server.pid();
    let before = count();
    let restarting = Instant::now();
    if kill {
        server.kill().unwrap();
    }
    server.restart().await.unwrap();
    let restart_took = restarting.elapsed();
    assert_ne!(server.pid(), pid, "the server was not restarted");
    let back = Instant::now();
    let after_restart = count();
    wait_for(after_restart + 150).await;
    let resumed_in = back.elapsed();
    done.store(true, Ordering::SeqCst);
    for s in senders {
        tokio::time::timeout(Duration::from_secs(40), s)
            .await
            .expect("a sender is stuck")
            .unwrap();
    }
    println!(
        "restart at {before} acknowledged took {restart_took:?}; 150 more acknowledged {resumed_in:?} after it was back"
    );

    assert!(
        !writer_task.is_finished(),
        "the writer task ended: {:?}",
        writer_task.await
    );
    assert!(!projector_task.is_finished(), "the projector task ended");
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let log = replay(&read_log(&client).await);
    for (id, seq) in &acks {
        assert_eq!(
            log.by_command.get(id),
            Some(seq),
            "acknowledged {id} is not in the log at {seq}"
        );
    }
    assert_eq!(
        log.by_command.len(),
        acks.len() + 1,
        "the log holds commands no one acknowledged"
    );
    store
        .wait_for(log.last, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(store.checkpoint(), log.last);
    verify_clean_at(&client, log.last, Duration::from_secs(10)).await;

    stop.cancel();
    writer_task
        .await
        .unwrap()
        .expect("the writer stops cleanly");
    projector_task.await.unwrap();
}
