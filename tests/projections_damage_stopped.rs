//! A projection store damaged while it is closed, against a real nats-server: sled files truncated,
//! flipped or deleted (every case reopens consistent, or is found damaged and rebuilt, and ends
//! equal to a replay of the log); values well-formed for sled but wrong for the read models, found
//! by the scan at open.
//!
//! Deterministic: fixed offsets and a seeded generator; "eventually" is polled with a deadline.

mod faults_support;
mod http_support;
mod projections_damage_support;

// One copy of the shared helpers: `faults_support` finds them at `crate::common`.
use http_support::common;

use projections_damage_support::*;

/// Every damage of a closed store: it reopens at a consistent checkpoint and catches up, or it is
/// found damaged, moved aside and rebuilt; either way it ends equal to a replay of the log.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_damaged_while_stopped_reopens_consistent_or_is_rebuilt() {
    faults_support::init_tracing();
    let server = common::TestServer::start_default().await;
    let client = server.client().await;
    let stop = CancellationToken::new();
    let mut config = orchestrator::writer::WriterConfig::new(cell());
    config.lease_ttl = Duration::from_secs(2);
    let writer = tokio::spawn(orchestrator::writer::run(
        client.clone(),
        config,
        stop.clone(),
    ));
    let commands = CommandClient::new(client.clone(), cell(), Duration::from_secs(5));
    let work = tempfile::tempdir().unwrap();
    let pristine = work.path().join("pristine");
    let (store, handle) = faults_support::spawn_projector(&client, &pristine, &stop).await;
    // Bound to its log as `serve` binds it: a store that does not say which log it follows is
    // rebuilt whatever its state.
    let reader = Reader::new(async_nats::jetstream::new(client.clone()), cell())
        .await
        .unwrap();
    let identity = reader.identity().await.unwrap();
    assert_eq!(store.bind(&identity).unwrap(), None);
    let last = workload(&commands).await;
    store.wait_for(last, Duration::from_secs(20)).await.unwrap();
    stop.cancel();
    handle.await.unwrap();
    writer.await.unwrap().unwrap();
    drop(store);

    let identity = reader.identity().await.unwrap();
    let mut outcomes = Vec::new();
    for (i, case) in damages(&pristine).into_iter().enumerate() {
        let dir = work.path().join(format!("case-{i}"));
        copy_dir(&pristine, &dir);
        (case.apply)(&dir);
        let (store, opened) = Projections::open(&dir)
            .unwrap_or_else(|e| panic!("{}: the store does not open: {e}", case.name));
        let opened = store.bind(&identity).unwrap().unwrap_or(opened);
        let rebuilt = store.rebuilds().iter().map(|(_, n)| n).sum::<u64>();
        match &opened {
            Opened::Resumed { checkpoint } => {
                assert!(*checkpoint <= last, "{}: {opened:?}", case.name);
                assert_eq!(rebuilt, 0, "{}", case.name);
            }
            // Only a store that lost its origin record and no data is rebuilt for that reason.
            Opened::OtherLog { .. } => assert_eq!(rebuilt, 1, "{}: counted", case.name),
            Opened::Unreadable { .. } | Opened::Corrupt { .. } => {
                assert_eq!(rebuilt, 1, "{}: counted", case.name);
                assert!(
                    dir.with_file_name(format!("case-{i}.damaged")).exists()
                        || matches!(opened, Opened::OtherLog { .. }),
                    "{}: moved aside",
                    case.name
                );
            }
            Opened::Created => {}
            Opened::VersionChanged { .. } => panic!("{}: {opened:?}", case.name),
        }
        assert_rebuilt_right(&store, &reader, last, &case.name).await;
        println!("{:<40} {opened:?}", case.name);
        outcomes.push(opened);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The cases are not all the same outcome: some reopen behind, some are found damaged.
    assert!(outcomes.iter().any(|o| matches!(o, Opened::Resumed { .. })));
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, Opened::Unreadable { .. } | Opened::Corrupt { .. })));
}

/// What sled's CRC cannot see, found by the scan at open: a closed store whose values are
/// well-formed for sled but wrong for the read models is moved aside and counted as `corrupt`.
#[test]
fn the_scan_at_open_finds_what_a_crc_cannot() {
    type Wreck = fn(&sled::Tree);
    let wrecks: [(&str, Wreck); 4] = [
        ("garbage in a VM view", |t| {
            t.insert(b"m:vm-1", &b"\xff\xff\xff"[..]).unwrap();
        }),
        ("a counter that disagrees with the views", |t| {
            t.insert(b"c:active", &7u64.to_be_bytes()).unwrap();
        }),
        ("no checkpoint", |t| {
            t.remove(b"_checkpoint").unwrap();
        }),
        ("a key of no known kind", |t| {
            t.insert(b"x:what", &b""[..]).unwrap();
        }),
    ];
    for (case, wreck) in wrecks {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("projections");
        {
            let (store, _) = Projections::open(&dir).unwrap();
            store.apply_batch(&[vm_registered(1)]).unwrap();
            wreck(&store.raw_tree());
            store.raw_tree().flush().unwrap();
        }
        let (store, opened) = Projections::open(&dir).unwrap();
        assert!(
            matches!(opened, Opened::Corrupt { .. }),
            "{case}: {opened:?}"
        );
        assert_eq!(store.checkpoint(), 0, "{case}");
        assert!(work.path().join("projections.damaged").is_dir(), "{case}");
        assert!(store.rebuilds().contains(&("corrupt", 1)), "{case}");
    }
}

fn vm_registered(seq: u64) -> (u64, Option<orchestrator_events::Envelope>) {
    use orchestrator_events::{Actor, Envelope, Event, VmId};
    let event = Event::VmRegistered {
        endpoint: None,
        heartbeat_ms: None,
        vm_id: VmId::parse("vm-1").unwrap(),
        capacity: 2,
        labels: Default::default(),
    };
    let env = Envelope::new(
        "e1".into(),
        "c1".into(),
        1,
        1_700_000_000_000,
        Actor::operator("t"),
        event,
    );
    (seq, Some(env))
}
