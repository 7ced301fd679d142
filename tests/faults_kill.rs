//! The orchestrator process killed with SIGKILL in the middle of a burst and restarted, end to end
//! against a real nats-server. Checks the log itself (see `faults_support`).

mod common;
mod faults_support;

use faults_support::*;

/// The orchestrator process is killed with SIGKILL in the middle of a burst of commands, restarted,
/// and every command is sent again with the same id, as a client retrying would: every
/// acknowledged command is in the log exactly once, its retry returns the first result, and verify
/// is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_killed_mid_burst_then_restarted_applies_each_command_once() {
    init_tracing();
    let server = TestServer::start_default().await;
    let data_dir = server.dir().join("orchestrator");
    let client = server.client().await;
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(2));
    // Room for 120 of the 150 sessions: the last 30 placements are refused.
    const CAPACITY: u32 = 120;
    let mut orch = Orchestrator::spawn(&server.url(), &data_dir, 1);
    let reply = orch
        .wait_serving(&commands, "k-register", &register("vm-k", CAPACITY))
        .await;
    assert_eq!(accepted(&reply), Some(1), "{reply:?}");

    // The burst: N commands from N/2 concurrent tasks (each a start, then an assign); the
    // process is killed once a third of them are acknowledged.
    const N: usize = 300;
    let acked = Arc::new(AtomicUsize::new(0));
    let pid = nix::unistd::Pid::from_raw(orch.child.id().expect("running") as i32);
    let first: Arc<Mutex<BTreeMap<String, Reply>>> = Default::default();
    let mut tasks = Vec::new();
    for i in 0..N / 2 {
        let (commands, acked, first) = (commands.clone(), acked.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            for n in [2 * i, 2 * i + 1] {
                let (id, command) = burst_command(n);
                if let Ok(reply) = commands.send(&cid(&id), &actor(), &command).await {
                    if accepted(&reply).is_some()
                        && acked.fetch_add(1, Ordering::SeqCst) + 1 == N / 3
                    {
                        // From here, not from the test's task: the burst is still going.
                        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
                    }
                    first.lock().unwrap().insert(id, reply);
                }
            }
        }));
    }
    let status = tokio::time::timeout(Duration::from_secs(30), orch.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the burst stalled before a third was acknowledged:\n{}",
                orch.output()
            )
        })
        .unwrap();
    let at_kill = acked.load(Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    let first = std::mem::take(&mut *first.lock().unwrap());
    let acknowledged: BTreeMap<String, u64> = first
        .iter()
        .filter_map(|(id, r)| accepted(r).map(|seq| (id.clone(), seq)))
        .collect();
    let stored_at_kill = last_seq(&client).await;
    println!(
        "killed with {at_kill} commands acknowledged ({} in all, {stored_at_kill} events stored)",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() < N,
        "the kill came after the whole burst: nothing was tested"
    );

    // Restart; the client resends every command with its id.
    let mut orch = Orchestrator::spawn(&server.url(), &data_dir, 2);
    let reply = orch
        .wait_serving(&commands, "k-register", &register("vm-k", CAPACITY))
        .await;
    assert!(
        matches!(
            reply,
            Reply::Accepted {
                seq: 1,
                duplicate: true,
                ..
            }
        ),
        "{reply:?}"
    );
    let mut tasks = Vec::new();
    for i in 0..N / 2 {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            for n in [2 * i, 2 * i + 1] {
                let (id, command) = burst_command(n);
                let reply = send_until_answered(
                    &commands,
                    &id,
                    &command,
                    Instant::now() + Duration::from_secs(20),
                )
                .await;
                replies.push((id, reply));
            }
            replies
        }));
    }
    let mut second = BTreeMap::new();
    for t in tasks {
        second.extend(t.await.unwrap());
    }
    orch.assert_running();

    let mut stored_unacknowledged = 0;
    let mut refused = 0;
    for (id, reply) in &second {
        match (acknowledged.get(id), reply) {
            (
                Some(seq),
                Reply::Accepted {
                    seq: again,
                    duplicate,
                    ..
                },
            ) => {
                assert_eq!(
                    (*again, *duplicate),
                    (*seq, true),
                    "{id}: the retry is not the first result"
                )
            }
            (Some(seq), other) => panic!("{id} was acknowledged at {seq}, its retry got {other:?}"),
            (
                None,
                Reply::Accepted {
                    duplicate: true, ..
                },
            ) => stored_unacknowledged += 1,
            (None, Reply::Accepted { .. }) => {}
            (None, other) if id.starts_with("k-assign-") && code(other) == "no_capacity" => {
                refused += 1
            }
            (None, other) => panic!("{id} was refused after the restart: {other:?}"),
        }
    }
    println!(
        "{stored_unacknowledged} commands were stored but their reply was lost with the process"
    );

    let log = replay(&read_log(&client).await);
    for (id, seq) in &acknowledged {
        assert_eq!(
            log.by_command.get(id),
            Some(seq),
            "acknowledged {id} is not in the log at {seq}"
        );
    }
    for (id, reply) in &second {
        assert_eq!(
            log.by_command.get(id),
            accepted(reply).as_ref(),
            "{id}: the reply is not what the log holds"
        );
    }
    assert_eq!(
        refused,
        N / 2 - CAPACITY as usize,
        "placements refused with room left"
    );
    assert_eq!(
        log.by_command.len(),
        N + 1 - refused,
        "every accepted command (and the registration) is in the log once"
    );
    verify_clean_at(&client, log.last, Duration::from_secs(15)).await;
    // Where the server has atomic batches, the killed writer was grouping its appends: the kill
    // came with batches in flight, and the log holds the ones that were committed.
    if crate::common::server_version().features().atomic_batch {
        let js = async_nats::jetstream::new(client.clone());
        let stream = js.get_stream("ORCH_DEFAULT").await.unwrap();
        let mut batched = 0;
        for seq in 1..=stored_at_kill {
            let msg = stream.get_raw_message(seq).await.unwrap();
            batched += usize::from(msg.headers.get("Nats-Batch-Id").is_some());
        }
        println!("{batched} of the {stored_at_kill} events stored before the kill came in batches");
        assert!(batched > 0, "the killed writer never grouped its appends");
    }

    // A graceful stop at the end.
    let pid = nix::unistd::Pid::from_raw(orch.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), orch.child.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "SIGTERM: {status:?}\n{}",
        orch.output()
    );
}
