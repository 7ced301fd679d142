//! Faults of two writers at once, end to end against a real nats-server: one active, the standby
//! taking over from a dead one, a stale one fenced by the log, and the lease-overlap interleaving in
//! which the new writer reuses the stale writer's command id. Checks the log itself (see
//! `faults_support`).

mod common;
mod faults_support;

use faults_support::*;

/// Two writers with distinct holders race for one cell: exactly one serves while the other stands
/// by; a burst of concurrent placements never overfills a VM; when the active writer dies (without
/// releasing its lease) the standby takes over and carries on from the same state; and an append by
/// a writer whose state is behind is refused by the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_writer_standby_takes_over_and_a_stale_writer_is_fenced() {
    init_tracing();
    let server = TestServer::start_default().await;
    let stop = CancellationToken::new();
    let mut writers = BTreeMap::new();
    for holder in ["writer-a", "writer-b"] {
        let config = WriterConfig {
            holder_id: holder.to_owned(),
            lease_ttl: Duration::from_secs(1),
            ..WriterConfig::new(cell())
        };
        // Each writer on its own connection, as two processes would be.
        let task = tokio::spawn(writer::run(server.client().await, config, stop.clone()));
        writers.insert(holder.to_owned(), task);
    }
    let client = server.client().await;
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(5));
    let soon = || Instant::now() + Duration::from_secs(10);
    const CAPACITY: u32 = 2;
    let mut acks: Vec<(String, u64)> = Vec::new();
    for vm in ["vm-1", "vm-2", "vm-3"] {
        let id = format!("register-{vm}");
        let reply = send_until_answered(&commands, &id, &register(vm, CAPACITY), soon()).await;
        acks.push((id, accepted(&reply).expect("VM registered")));
    }
    let (store, projector_task) =
        spawn_projector(&client, &server.dir().join("projections"), &stop).await;

    let active = lease_holder(&client)
        .await
        .expect("a writer holds the lease");
    assert_eq!(
        active_writers(&client).await,
        vec![active.clone()],
        "one active writer, the lease's holder"
    );

    // The burst: every session starts, then tries to get a VM until it gets one (a handful of
    // tries); half of those placed end at once, freeing their slot for the others.
    const SESSIONS: usize = 40;
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let s = format!("s{i}");
            let id = format!("start-{i}");
            let reply = commands
                .send(&cid(&id), &actor(), &start(&s, &format!("u{i}")))
                .await
                .unwrap();
            acks.push((
                id,
                accepted(&reply).unwrap_or_else(|| panic!("start {i}: {reply:?}")),
            ));
            for attempt in 0..5 {
                let id = format!("assign-{i}-{attempt}");
                let reply = commands
                    .send(&cid(&id), &actor(), &assign(&s))
                    .await
                    .unwrap();
                match accepted(&reply) {
                    Some(seq) => {
                        acks.push((id, seq));
                        if i % 2 == 0 {
                            let id = format!("end-{i}");
                            let reply = commands.send(&cid(&id), &actor(), &end(&s)).await.unwrap();
                            acks.push((
                                id,
                                accepted(&reply).unwrap_or_else(|| panic!("end {i}: {reply:?}")),
                            ));
                        }
                        break;
                    }
                    None => {
                        assert_eq!(code(&reply), "no_capacity", "assign {i}: {reply:?}");
                        tokio::time::sleep(Duration::from_millis(1 + (i % 7) as u64)).await;
                    }
                }
            }
            acks
        }));
    }
    for t in tasks {
        acks.extend(t.await.unwrap());
    }

    // Every reply of the burst names its own sequence, and together they are the whole log.
    let last = last_seq(&client).await;
    let seqs: BTreeSet<u64> = acks.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        seqs.len(),
        acks.len(),
        "two replies named the same sequence"
    );
    assert_eq!(
        seqs,
        (1..=last).collect(),
        "the replies' sequences are not exactly the log"
    );
    let log = replay(&read_log(&client).await);
    for (id, seq) in &acks {
        assert_eq!(
            log.by_command.get(id),
            Some(seq),
            "{id} is not at the sequence its reply said"
        );
    }
    store.wait_for(last, Duration::from_secs(10)).await.unwrap();
    for vm in store.vms().unwrap() {
        assert!(
            vm.used <= vm.capacity,
            "projection: {} holds {} > {}",
            vm.vm_id,
            vm.used,
            vm.capacity
        );
        assert_eq!(
            vm.used, log.vms[&vm.vm_id].1,
            "projection and replay disagree on {}",
            vm.vm_id
        );
    }
    assert_eq!(
        active_writers(&client).await,
        vec![active.clone()],
        "still one active writer"
    );

    // The active writer dies: its task is aborted, so it neither releases the lease nor answers.
    let standby = writers.keys().find(|h| **h != active).unwrap().clone();
    let dead = writers.remove(&active).unwrap();
    dead.abort();
    assert!(dead.await.unwrap_err().is_cancelled());
    let died = Instant::now();
    // A request can still reach the dead writer's subscription before its connection is gone: a
    // client with a short timeout retries sooner.
    let impatient = CommandClient::new(client.clone(), cell(), Duration::from_millis(500));
    let reply = send_until_answered(
        &impatient,
        "after-start-0",
        &start("after-0", "ua0"),
        soon(),
    )
    .await;
    let took_over = died.elapsed();
    assert_eq!(
        accepted(&reply),
        Some(last + 1),
        "the sequence continues: {reply:?}"
    );
    println!("standby took over {took_over:?} after the active writer died (lease TTL 1 s)");
    assert_eq!(lease_holder(&client).await, Some(standby.clone()));
    assert_eq!(active_writers(&client).await, vec![standby.clone()]);

    // The standby has the dead writer's state: retries get their first result, and it places
    // exactly as many sessions as there are free slots, then refuses.
    for (id, seq) in acks
        .iter()
        .filter(|(id, _)| id.starts_with("start-") || id.starts_with("assign-"))
        .take(6)
    {
        let i: usize = id.split('-').nth(1).unwrap().parse().unwrap();
        let command = if id.starts_with("start-") {
            start(&format!("s{i}"), &format!("u{i}"))
        } else {
            assign(&format!("s{i}"))
        };
        let reply = commands.send(&cid(id), &actor(), &command).await.unwrap();
        match reply {
            Reply::Accepted {
                seq: again,
                duplicate,
                ..
            } => {
                assert_eq!(
                    (again, duplicate),
                    (*seq, true),
                    "{id}: a retry returns the first result"
                )
            }
            other => panic!("{id}: a retry was refused: {other:?}"),
        }
    }
    let free: u32 = log
        .vms
        .values()
        .map(|(capacity, used)| capacity - used)
        .sum();
    let mut now = last + 1;
    for k in 0..=free {
        if k > 0 {
            let reply = commands
                .send(
                    &cid(&format!("after-start-{k}")),
                    &actor(),
                    &start(&format!("after-{k}"), &format!("ua{k}")),
                )
                .await
                .unwrap();
            now += 1;
            assert_eq!(accepted(&reply), Some(now), "{reply:?}");
        }
        let reply = commands
            .send(
                &cid(&format!("after-assign-{k}")),
                &actor(),
                &assign(&format!("after-{k}")),
            )
            .await
            .unwrap();
        if k < free {
            now += 1;
            assert_eq!(
                accepted(&reply),
                Some(now),
                "the standby refuses a free slot: {reply:?}"
            );
        } else {
            assert_eq!(
                code(&reply),
                "no_capacity",
                "the standby overfills a VM: {reply:?}"
            );
        }
    }
    let reply = commands
        .send(&cid("after-vm"), &actor(), &register("vm-4", 1))
        .await
        .unwrap();
    now += 1;
    assert_eq!(accepted(&reply), Some(now), "{reply:?}");
    let reply = commands
        .send(
            &cid("after-assign-last"),
            &actor(),
            &assign(&format!("after-{free}")),
        )
        .await
        .unwrap();
    now += 1;
    assert_eq!(accepted(&reply), Some(now), "{reply:?}");

    // A writer still believing the log ends where the dead one left it is fenced: nothing stored.
    let appender = Appender::new(async_nats::jetstream::new(client.clone()), cell());
    let env = Envelope::new(
        "stale-event".into(),
        "stale-command".into(),
        1,
        now_ms(),
        actor(),
        Event::VmRegistered {
            endpoint: None,
            heartbeat_ms: None,
            vm_id: "vm-stale".parse().unwrap(),
            capacity: 1,
            labels: Default::default(),
        },
    );
    match appender.append(&env, last).await {
        Err(LogError::WrongLastSequence { expected, actual }) => {
            assert_eq!(expected, last);
            assert!(actual.is_none() || actual == Some(now), "actual {actual:?}");
        }
        other => panic!("a stale append was not fenced: {other:?}"),
    }
    assert_eq!(
        last_seq(&client).await,
        now,
        "a fenced append stored something"
    );

    // The other way round: the serving writer's own state falls behind (something else appended
    // at the right sequence). Its next appends are refused; it catches up from the log and decides
    // the commands in flight again.
    let env = Envelope::new(
        "foreign-event".into(),
        "foreign-command".into(),
        1,
        now_ms(),
        actor(),
        Event::VmRegistered {
            endpoint: None,
            heartbeat_ms: None,
            vm_id: "vm-foreign".parse().unwrap(),
            capacity: 1,
            labels: Default::default(),
        },
    );
    let appended = appender.append(&env, now).await.unwrap();
    now += 1;
    assert_eq!((appended.seq, appended.duplicate), (now, false));
    let mut tasks = Vec::new();
    for k in 0..10 {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("late-start-{k}");
            let command = start(&format!("late-{k}"), &format!("ul{k}"));
            commands.send(&cid(&id), &actor(), &command).await
        }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        let reply = t
            .await
            .unwrap()
            .expect("the writer answers after a refused append");
        seqs.insert(accepted(&reply).unwrap_or_else(|| panic!("{reply:?}")));
    }
    assert_eq!(
        seqs,
        (now + 1..=now + 10).collect(),
        "decided again after catching up"
    );
    now += 10;

    let log = replay(&read_log(&client).await);
    assert!(!log.by_command.contains_key("stale-command"));
    assert_eq!(log.by_command.get("foreign-command"), Some(&(now - 10)));
    assert_eq!(log.last, now);
    verify_clean_at(&client, now, Duration::from_secs(10)).await;

    stop.cancel();
    writers
        .remove(&standby)
        .unwrap()
        .await
        .unwrap()
        .expect("the standby stops cleanly");
    projector_task.await.unwrap();
}

/// The interleaving of a lease overlap: the new writer stores a caller's command under the command id
/// the stale writer's first in-flight append also carries. The stale writer's second append, decided
/// after its first, must not land on the new writer's event.
///
/// On a capacity-1 VM holding s0: the stale writer decided "end s0" (c1) then "assign s1 to the VM"
/// (c2, decided after the end freed the slot); the new writer stored a pause of s0 under c1. Had c2
/// landed, the VM would hold s0 and s1.
#[tokio::test]
async fn a_stale_pipeline_is_fenced_when_another_writer_reused_its_command_id() {
    let server = TestServer::start_default().await;
    let js = server.jetstream().await;
    log::ensure_stream(&js, &log::LogConfig::new(cell()))
        .await
        .unwrap();
    let appender = Appender::new(js.clone(), cell());
    let reader = Reader::new(js.clone(), cell()).await.unwrap();
    let vm = VmId::parse("vm-1").unwrap();
    let s0 = SessionId::parse("s0").unwrap();
    let s1 = SessionId::parse("s1").unwrap();
    let env = |event_id: &str, command_id: &str, event: Event| {
        Envelope::new(
            event_id.into(),
            command_id.into(),
            1,
            1_700_000_000_000,
            Actor::service("gw"),
            event,
        )
    };
    let placed = |session: &SessionId| Event::SessionAssigned {
        session_id: session.clone(),
        vm_id: vm.clone(),
        placement: orchestrator_events::Placement {
            queued: None,
            policy: orchestrator_events::PlacementPolicy::Explicit,
            candidates: 1,
            eligible: 1,
            load_before: 0,
            capacity: 1,
            reason: orchestrator_events::PlacementReason::Requested,
        },
    };
    let setup_events = [
        env(
            "e1",
            "r",
            Event::VmRegistered {
                endpoint: None,
                heartbeat_ms: None,
                vm_id: vm.clone(),
                capacity: 1,
                labels: Default::default(),
            },
        ),
        env(
            "e2",
            "st0",
            Event::SessionStarted {
                session_id: s0.clone(),
                user_id: "u0".parse().unwrap(),
                game_id: "g".parse().unwrap(),
                requirements: Default::default(),
            },
        ),
        env("e3", "a0", placed(&s0)),
        env(
            "e4",
            "st1",
            Event::SessionStarted {
                session_id: s1.clone(),
                user_id: "u1".parse().unwrap(),
                game_id: "g".parse().unwrap(),
                requirements: Default::default(),
            },
        ),
    ];
    for (i, e) in setup_events.iter().enumerate() {
        appender.append(e, i as u64).await.unwrap();
    }
    // The new writer appends first: a pause of s0 under command id c1.
    let pause = env(
        "new-writer-event",
        "c1",
        Event::SessionPaused {
            session_id: s0.clone(),
        },
    );
    appender.append(&pause, 4).await.unwrap();
    // The stale writer's pipeline, decided on the log as of 4.
    let end = env(
        "stale-end",
        "c1",
        Event::SessionEnded {
            session_id: s0.clone(),
            reason: orchestrator_events::EndReason::User,
            vm_id: Some(vm.clone()),
        },
    );
    let assign = env("stale-assign", "c2", placed(&s1));
    let first = appender.send_after(&end, 4, None).await.unwrap();
    let second = appender
        .send_after(&assign, 5, Some(&end.event_id))
        .await
        .unwrap();
    assert!(first.await.is_err(), "the stale first append is refused");
    let second = second.await;
    assert!(
        matches!(
            second,
            Err(orchestrator::log::LogError::WrongLastSequence { .. })
        ),
        "the stale second append must be fenced: {second:?}"
    );
    assert_eq!(
        reader.last_seq().await.unwrap(),
        5,
        "nothing of the stale writer stored"
    );
    let got = reader.get(5).await.unwrap().unwrap();
    assert_eq!(got.event.envelope.event_id, "new-writer-event");
}
