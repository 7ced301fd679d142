//! The projections do not depend on how events are batched: one event per batch, a few, or a whole
//! rebuild's worth give the same store, and the same answers to every listing (ended sessions,
//! which have no status index, included). No NATS server: batches are applied directly.

use std::collections::BTreeMap;

use orchestrator::domain::SessionStatus;
use orchestrator::projections::apply::{Message, Overlay};
use orchestrator::projections::{Projections, SessionFilter, SessionView};
use orchestrator_bench::workload::EventMix;
use orchestrator_events::{Actor, Envelope, Event, SessionId, UserId, VmId};

/// VMs, then sessions that start, get assigned, pause, resume and end, from the bench's mix.
fn mix(n: usize) -> Vec<Message> {
    EventMix::new(11, 6, 1_700_000_000_000)
        .take(n)
        .enumerate()
        .map(|(i, env)| (i as u64 + 1, Some(env)))
        .collect()
}

fn applied_in(events: &[Message], batch: usize) -> (tempfile::TempDir, Projections) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Projections::open(dir.path()).unwrap();
    for chunk in events.chunks(batch) {
        store.apply_batch(chunk).unwrap();
    }
    (dir, store)
}

/// Every session, paged through with a small page size.
fn list(store: &Projections, filter: &SessionFilter) -> Vec<SessionView> {
    let mut all = Vec::new();
    let mut after: Option<SessionId> = None;
    loop {
        let page = store.sessions(filter, after.as_ref(), 7).unwrap();
        all.extend(page.sessions);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

#[test]
fn batch_sizes_give_the_same_store_and_answers() {
    // 6 VMs hold 96 sessions at once, moving in step: 61 rounds and 40 assignments of the next
    // leave sessions starting, active and ended.
    let events = mix(6 + 61 * 96 + 40);
    let (_a, one_by_one) = applied_in(&events, 1);
    let (_b, some) = applied_in(&events, 37);
    let (_c, all) = applied_in(&events, events.len());
    let (checkpoint, dump) = all.dump().unwrap();
    assert_eq!(checkpoint, events.len() as u64);
    assert_eq!(one_by_one.dump().unwrap(), (checkpoint, dump.clone()));
    assert_eq!(some.dump().unwrap(), (checkpoint, dump.clone()));

    // The same fold over memory (what `verify` compares the store with), in batches of 500.
    let mut mem = BTreeMap::from([(
        b"_version".to_vec(),
        orchestrator::projections::PROJECTION_VERSION
            .to_be_bytes()
            .to_vec(),
    )]);
    for chunk in events.chunks(500) {
        let mut overlay = Overlay::new(&mem);
        overlay
            .apply_all(chunk[0].0, chunk)
            .expect("the mix applies");
        for (k, v) in overlay.into_writes() {
            match v {
                Some(v) => mem.insert(k, v),
                None => mem.remove(&k),
            };
        }
    }
    assert_eq!(mem, dump);

    // Ended sessions keep only their view and user index.
    let ended = dump.keys().filter(|k| k.starts_with(b"t:ended")).count();
    assert_eq!(ended, 0);

    let everyone = list(&all, &SessionFilter::default());
    assert!(everyone
        .windows(2)
        .all(|w| w[0].session_id < w[1].session_id));
    for status in SessionStatus::ALL {
        let filter = SessionFilter {
            status: Some(status),
            ..SessionFilter::default()
        };
        let expected: Vec<_> = everyone
            .iter()
            .filter(|s| s.status == status)
            .cloned()
            .collect();
        if status != SessionStatus::Paused {
            assert!(!expected.is_empty(), "the mix has {status:?} sessions");
        }
        assert_eq!(list(&all, &filter), expected, "{status:?}");
        assert_eq!(list(&one_by_one, &filter), expected, "{status:?}");
        assert_eq!(
            all.capacity().unwrap().sessions.get(status),
            expected.len() as u64
        );
    }
    let user = everyone[0].user_id.clone();
    let filter = SessionFilter {
        user_id: Some(user.clone()),
        status: Some(SessionStatus::Ended),
        ..SessionFilter::default()
    };
    let expected: Vec<_> = everyone
        .iter()
        .filter(|s| s.user_id == user && s.status == SessionStatus::Ended)
        .cloned()
        .collect();
    assert_eq!(list(&all, &filter), expected);
    let vm = everyone
        .iter()
        .find(|s| s.status.holds_slot())
        .and_then(|s| s.vm_id.clone())
        .expect("a session holds a slot");
    let filter = SessionFilter {
        vm_id: Some(vm.clone()),
        ..SessionFilter::default()
    };
    let expected: Vec<_> = everyone
        .iter()
        .filter(|s| s.vm_id.as_ref() == Some(&vm) && s.status.holds_slot())
        .cloned()
        .collect();
    assert_eq!(list(&all, &filter), expected);
    assert_eq!(list(&one_by_one, &filter), expected);
}

fn env(seq: u64, event: Event) -> Message {
    let env = Envelope::new(
        format!("e{seq}"),
        format!("c{seq}"),
        seq,
        1_700_000_000_000 + seq as i64,
        Actor::operator("t"),
        event,
    );
    (seq, Some(env))
}

fn sid(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

/// A queue and a VM with room for one: sessions queue, one is placed, one ends while queued.
fn queue_story() -> Vec<Message> {
    let vm = VmId::parse("vm-1").unwrap();
    let start = |seq, s: &str| {
        env(
            seq,
            Event::SessionStarted {
                session_id: sid(s),
                user_id: UserId::parse(format!("u-{s}")).unwrap(),
                game_id: orchestrator_events::GameId::parse("g").unwrap(),
                requirements: Default::default(),
            },
        )
    };
    let queued = |seq, s: &str| {
        env(
            seq,
            Event::SessionQueued {
                session_id: sid(s),
                policy: orchestrator_events::PlacementPolicy::Packed,
                deadline: 1_800_000_000_000,
            },
        )
    };
    vec![
        start(1, "a"),
        queued(2, "a"),
        start(3, "b"),
        queued(4, "b"),
        start(5, "c"),
        queued(6, "c"),
        env(
            7,
            Event::VmRegistered {
                vm_id: vm.clone(),
                capacity: 1,
                labels: Default::default(),
                heartbeat_ms: None,
                endpoint: None,
            },
        ),
        env(
            8,
            Event::SessionAssigned {
                session_id: sid("a"),
                vm_id: vm.clone(),
                placement: orchestrator_events::Placement {
                    policy: orchestrator_events::PlacementPolicy::Packed,
                    candidates: 1,
                    eligible: 1,
                    load_before: 0,
                    capacity: 1,
                    reason: orchestrator_events::PlacementReason::FullestWithRoom { tied: 1 },
                    queued: None,
                },
            },
        ),
        env(
            9,
            Event::SessionEnded {
                session_id: sid("b"),
                reason: orchestrator_events::EndReason::PlacementTimeout,
                vm_id: None,
            },
        ),
        env(
            10,
            Event::SessionPaused {
                session_id: sid("a"),
            },
        ),
    ]
}

#[test]
fn the_queue_is_the_same_whatever_the_batches() {
    let events = queue_story();
    let (_a, one_by_one) = applied_in(&events, 1);
    let (_b, together) = applied_in(&events, events.len());
    let (_c, halves) = applied_in(&events, 5);
    let dump = together.dump().unwrap();
    assert_eq!(one_by_one.dump().unwrap(), dump);
    assert_eq!(halves.dump().unwrap(), dump);
    for store in [&one_by_one, &together, &halves] {
        let c = store.session(&sid("c")).unwrap().unwrap();
        assert_eq!(c.queue_position, Some(1), "a placed, b ended: c is next");
        let a = store.session(&sid("a")).unwrap().unwrap();
        assert_eq!((a.status, a.queue_position), (SessionStatus::Paused, None));
        let capacity = store.capacity().unwrap();
        assert_eq!(capacity.queued, 1);
        assert_eq!(capacity.used, 1);
        assert_eq!(capacity.ended_by_reason.get("placement_timeout"), Some(&1));
        let ended = store
            .sessions(
                &SessionFilter {
                    status: Some(SessionStatus::Ended),
                    ..SessionFilter::default()
                },
                None,
                10,
            )
            .unwrap();
        let ids: Vec<_> = ended
            .sessions
            .iter()
            .map(|s| s.session_id.clone())
            .collect();
        assert_eq!(ids, [sid("b")]);
    }
}
