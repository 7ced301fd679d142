//! The sled projections: atomic ordered batches, resuming, rebuilding when the layout version changes
//! or the store cannot be read. How the projector meets messages that are not events:
//! `tests/foreign.rs`.

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
