//! The sled projections: atomic ordered batches, resuming, rebuilding when the layout version changes
//! or the store cannot be read. How the projector meets messages that are not events:
//! `tests/poison.rs` and `tests/log_reads.rs`. A store follows one log: another cell or stream rebuilds it.

mod common;

use orchestrator::projections::{Opened, ProjectionError, Projections, PROJECTION_VERSION};
use orchestrator_events::{Actor, Envelope, Event, SessionId, VmId};

fn env(i: u64, event: Event) -> (u64, Option<Envelope>) {
    (
        i,
        Some(Envelope::new(
            format!("e{i}"),
            format!("c{i}"),
            i,
            1_700_000_000_000 + i as i64,
            Actor::operator("t"),
            event,
        )),
    )
}

fn vm(i: u64, id: &str) -> (u64, Option<Envelope>) {
    env(
        i,
        Event::VmRegistered {
            endpoint: None,
            heartbeat_ms: None,
            vm_id: VmId::parse(id).unwrap(),
            capacity: 2,
            labels: Default::default(),
        },
    )
}

#[test]
fn batches_are_ordered_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opened) = Projections::open(dir.path()).unwrap();
    assert_eq!(opened, Opened::Created);
    store.apply_batch(&[vm(1, "vm-1"), vm(2, "vm-2")]).unwrap();
    assert_eq!(store.checkpoint(), 2);

    // A gap is refused, and nothing of the batch is applied.
    let err = store
        .apply_batch(&[vm(3, "vm-3"), vm(5, "vm-5")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProjectionError::OutOfOrder {
                expected: 4,
                got: 5
            }
        ),
        "{err}"
    );
    assert_eq!(store.checkpoint(), 2);
    assert!(store.vm(&VmId::parse("vm-3").unwrap()).unwrap().is_none());

    // A repeat is refused too.
    let err = store.apply_batch(&[vm(2, "vm-2")]).unwrap_err();
    assert!(
        matches!(
            err,
            ProjectionError::OutOfOrder {
                expected: 3,
                got: 2
            }
        ),
        "{err}"
    );

    // An event that does not fit the state stops there, naming its sequence; nothing is applied.
    let paused = env(
        4,
        Event::SessionPaused {
            session_id: SessionId::parse("ghost").unwrap(),
        },
    );
    let err = store.apply_batch(&[vm(3, "vm-3"), paused]).unwrap_err();
    assert!(
        matches!(err, ProjectionError::Inconsistent { seq: 4, .. }),
        "{err}"
    );
    assert_eq!(store.checkpoint(), 2);
    assert_eq!(store.vms().unwrap().len(), 2);
}

#[test]
fn reopening_resumes_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Projections::open(dir.path()).unwrap();
        store.apply_batch(&[vm(1, "vm-1")]).unwrap();
    }
    let (store, opened) = Projections::open(dir.path()).unwrap();
    assert_eq!(opened, Opened::Resumed { checkpoint: 1 });
    assert_eq!(store.vms().unwrap().len(), 1);
}

#[test]
fn a_store_of_another_version_is_cleared_for_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Projections::open(dir.path()).unwrap();
        store.apply_batch(&[vm(1, "vm-1")]).unwrap();
    }
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("projections").unwrap();
        tree.insert(b"_version", &(PROJECTION_VERSION + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let (store, opened) = Projections::open(dir.path()).unwrap();
    assert_eq!(
        opened,
        Opened::VersionChanged {
            found: PROJECTION_VERSION + 1
        }
    );
    assert_eq!(store.checkpoint(), 0);
    assert!(store.vms().unwrap().is_empty());
}

#[test]
fn an_unreadable_store_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Projections::open(dir.path()).unwrap();
        store.apply_batch(&[vm(1, "vm-1")]).unwrap();
    }
    // Garbage where sled keeps its configuration.
    std::fs::write(dir.path().join("conf"), b"\xffnot a sled config\x00\x01").unwrap();
    let (store, opened) = Projections::open(dir.path()).unwrap();
    assert!(matches!(opened, Opened::Unreadable { .. }), "{opened:?}");
    assert_eq!(store.checkpoint(), 0);
}

#[test]
fn a_store_in_use_is_never_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Projections::open(dir.path()).unwrap();
    store.apply_batch(&[vm(1, "vm-1")]).unwrap();
    let err = Projections::open(dir.path())
        .err()
        .expect("a second open fails");
    assert!(matches!(err, ProjectionError::Locked { .. }), "{err}");
    assert_eq!(store.checkpoint(), 1);
    assert_eq!(store.vms().unwrap().len(), 1, "the data is still there");
}

/// Appends `n` VM registrations (`<prefix>-0`..) to `cell`'s stream, creating it; returns a reader.
async fn log_with_vms(
    js: &async_nats::jetstream::Context,
    cell: &str,
    prefix: &str,
    n: u64,
) -> orchestrator::log::Reader {
    use orchestrator::log::{ensure_stream, Appender, LogConfig, Reader};
    let cell = orchestrator_events::CellId::parse(cell).unwrap();
    ensure_stream(js, &LogConfig::new(cell.clone()))
        .await
        .unwrap();
    let appender = Appender::new(js.clone(), cell.clone());
    for i in 0..n {
        let (_, env) = vm(i + 1, &format!("{prefix}-{i}"));
        appender.append(&env.unwrap(), i).await.unwrap();
    }
    Reader::new(js.clone(), cell).await.unwrap()
}

async fn follow(reader: &orchestrator::log::Reader, store: &Projections) {
    let last = reader.last_seq().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(orchestrator::projections::projector::run(
        reader.clone(),
        store.clone(),
        stop.clone(),
    ));
    store
        .wait_for(last, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    stop.cancel();
    run.await.unwrap().unwrap();
}

fn vm_ids(store: &Projections) -> Vec<String> {
    store
        .vms()
        .unwrap()
        .into_iter()
        .map(|v| v.vm_id.to_string())
        .collect()
}

/// The same data dir used for another cell, or for a stream created anew (even a shorter one), is
/// rebuilt from that log instead of mixing both.
#[tokio::test]
async fn a_store_follows_one_log_and_is_rebuilt_for_another() {
    let server = common::TestServer::start_default().await;
    let js = server.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let a = log_with_vms(&js, "cell-a", "a", 5).await;
    let b = log_with_vms(&js, "cell-b", "b", 2).await;

    let (store, _) = Projections::open(dir.path()).unwrap();
    assert_eq!(store.bind(&a.identity().await.unwrap()).unwrap(), None);
    follow(&a, &store).await;
    assert_eq!(store.checkpoint(), 5);
    // Again on the same log: it resumes.
    assert_eq!(store.bind(&a.identity().await.unwrap()).unwrap(), None);
    assert_eq!(store.checkpoint(), 5);

    // Another cell: cleared, and rebuilt from that cell's log only.
    let other = store.bind(&b.identity().await.unwrap()).unwrap();
    assert!(
        matches!(&other, Some(Opened::OtherLog { reason }) if reason.contains("cell-b")),
        "{other:?}"
    );
    assert_eq!(store.checkpoint(), 0);
    follow(&b, &store).await;
    assert_eq!(vm_ids(&store), ["b-0", "b-1"]);

    // The stream deleted and created again with fewer events: another log.
    js.delete_stream("ORCH_CELL_B").await.unwrap();
    let b_again = log_with_vms(&js, "cell-b", "c", 1).await;
    let other = store.bind(&b_again.identity().await.unwrap()).unwrap();
    assert!(matches!(other, Some(Opened::OtherLog { .. })), "{other:?}");
    follow(&b_again, &store).await;
    assert_eq!(vm_ids(&store), ["c-0"]);
    drop(store);

    // A store that does not say which log it follows (an earlier release's) is rebuilt too.
    let old = tempfile::tempdir().unwrap();
    let (store, _) = Projections::open(old.path()).unwrap();
    store.apply_batch(&[vm(1, "x-0")]).unwrap();
    let other = store.bind(&a.identity().await.unwrap()).unwrap();
    assert!(matches!(other, Some(Opened::OtherLog { .. })), "{other:?}");
    assert_eq!(store.checkpoint(), 0);
}
