//! The placement policies: which VM wins, and the explanation recorded in the event.

use std::collections::BTreeMap;

use orchestrator_events::{
    EndReason, Event, Labels, Placement, PlacementPolicy, PlacementReason, VmId,
};

use super::framework::*;
use crate::domain::placement::choose;
use crate::domain::{Rejection, Vm, VmStatus};

fn vm(capacity: u32, used: u32, l: &[(&str, &str)]) -> Vm {
    Vm {
        endpoint: None,
        heartbeat_ms: None,
        registered: Default::default(),
        capacity,
        labels: labels(l),
        status: VmStatus::Available,
        used,
    }
}

fn pool(vms: Vec<(&str, Vm)>) -> BTreeMap<VmId, Vm> {
    vms.into_iter().map(|(id, v)| (vid(id), v)).collect()
}

fn pick(
    vms: &BTreeMap<VmId, Vm>,
    requirements: &Labels,
    policy: PlacementPolicy,
) -> (String, Placement) {
    let (id, p) = choose(vms, requirements, policy).expect("a VM has room");
    (id.to_string(), p)
}

fn placement(
    policy: PlacementPolicy,
    candidates: u32,
    eligible: u32,
    load_before: u32,
    capacity: u32,
    reason: PlacementReason,
) -> Placement {
    Placement {
        queued: None,
        policy,
        candidates,
        eligible,
        load_before,
        capacity,
        reason,
    }
}

#[test]
fn packed_picks_the_fullest_with_room_and_spread_the_emptiest() {
    let vms = pool(vec![
        ("vm-a", vm(4, 1, &[])),
        ("vm-b", vm(4, 3, &[])),
        ("vm-c", vm(3, 3, &[])), // full: fuller, but no room
        ("vm-d", vm(8, 2, &[])),
    ]);
    let none = Labels::new();
    assert_eq!(
        pick(&vms, &none, PlacementPolicy::Packed),
        (
            "vm-b".into(),
            placement(
                PlacementPolicy::Packed,
                4,
                3,
                3,
                4,
                PlacementReason::FullestWithRoom { tied: 1 }
            )
        )
    );
    assert_eq!(
        pick(&vms, &none, PlacementPolicy::Spread),
        (
            "vm-a".into(),
            placement(
                PlacementPolicy::Spread,
                4,
                3,
                1,
                4,
                PlacementReason::EmptiestWithRoom { tied: 1 }
            )
        )
    );
}

#[test]
fn ties_go_to_the_lowest_id_and_are_counted() {
    // Inserted out of order: the map sorts by id.
    let vms = pool(vec![
        ("vm-c", vm(4, 2, &[])),
        ("vm-a", vm(4, 2, &[])),
        ("vm-d", vm(4, 1, &[])),
        ("vm-b", vm(2, 2, &[])), // full: not in the tie
        ("vm-e", vm(4, 2, &[])),
    ]);
    let none = Labels::new();
    let (id, p) = pick(&vms, &none, PlacementPolicy::Packed);
    assert_eq!(id, "vm-a");
    assert_eq!(p.reason, PlacementReason::FullestWithRoom { tied: 3 });
    assert_eq!((p.candidates, p.eligible, p.load_before), (5, 4, 2));

    let (id, p) = pick(&vms, &none, PlacementPolicy::Spread);
    assert_eq!(id, "vm-d");
    assert_eq!(p.reason, PlacementReason::EmptiestWithRoom { tied: 1 });

    // A tie counted before a better VM appears does not carry over to it.
    let vms = pool(vec![
        ("vm-a", vm(4, 1, &[])),
        ("vm-b", vm(4, 1, &[])),
        ("vm-c", vm(4, 3, &[])),
        ("vm-d", vm(4, 0, &[])),
        ("vm-e", vm(4, 0, &[])),
    ]);
    let (id, p) = pick(&vms, &none, PlacementPolicy::Packed);
    assert_eq!(
        (id.as_str(), p.reason),
        ("vm-c", PlacementReason::FullestWithRoom { tied: 1 })
    );
    let (id, p) = pick(&vms, &none, PlacementPolicy::Spread);
    assert_eq!(
        (id.as_str(), p.reason),
        ("vm-d", PlacementReason::EmptiestWithRoom { tied: 2 })
    );
}

#[test]
fn labels_must_all_match_with_their_values() {
    let vms = pool(vec![
        ("vm-a", vm(4, 3, &[("region", "eu")])), // lacks gpu
        ("vm-b", vm(4, 2, &[("region", "us"), ("gpu", "a10")])), // wrong region
        (
            "vm-c",
            vm(4, 0, &[("region", "eu"), ("gpu", "a10"), ("disk", "ssd")]),
        ), // extra label: fine
        ("vm-d", vm(4, 1, &[("region", "eu"), ("gpu", "a10")])),
    ]);
    let want = labels(&[("region", "eu"), ("gpu", "a10")]);
    let (id, p) = pick(&vms, &want, PlacementPolicy::Packed);
    assert_eq!((id.as_str(), p.candidates, p.eligible), ("vm-d", 4, 2));
    let (id, _) = pick(&vms, &want, PlacementPolicy::Spread);
    assert_eq!(id, "vm-c");
    // No requirements: every VM matches.
    let (id, p) = pick(&vms, &Labels::new(), PlacementPolicy::Packed);
    assert_eq!((id.as_str(), p.eligible), ("vm-a", 4));
}

#[test]
fn draining_and_retired_vms_are_skipped() {
    let mut vms = pool(vec![
        ("vm-a", vm(4, 3, &[])),
        ("vm-b", vm(4, 0, &[])),
        ("vm-c", vm(4, 2, &[])),
        ("vm-d", vm(4, 1, &[])),
    ]);
    vms.get_mut(&vid("vm-a")).unwrap().status = VmStatus::Draining;
    vms.get_mut(&vid("vm-b")).unwrap().status = VmStatus::Retired;
    let none = Labels::new();
    // Retired VMs are not candidates; draining ones are, but not eligible.
    let (id, p) = pick(&vms, &none, PlacementPolicy::Packed);
    assert_eq!((id.as_str(), p.candidates, p.eligible), ("vm-c", 3, 2));
    let (id, p) = pick(&vms, &none, PlacementPolicy::Spread);
    assert_eq!((id.as_str(), p.load_before, p.capacity), ("vm-d", 1, 4));
}

#[test]
fn no_capacity_counts_candidates_and_matching_vms() {
    let mut vms = pool(vec![
        ("vm-a", vm(2, 2, &[("region", "eu")])), // matching, full
        ("vm-b", vm(2, 0, &[("region", "us")])), // no match
        ("vm-c", vm(2, 0, &[("region", "eu")])), // draining
        ("vm-d", vm(2, 0, &[("region", "eu")])), // retired
        ("vm-e", vm(1, 1, &[("region", "eu")])), // matching, full
    ]);
    vms.get_mut(&vid("vm-c")).unwrap().status = VmStatus::Draining;
    vms.get_mut(&vid("vm-d")).unwrap().status = VmStatus::Retired;
    let want = labels(&[("region", "eu")]);
    for policy in [PlacementPolicy::Packed, PlacementPolicy::Spread] {
        assert_eq!(
            choose(&vms, &want, policy).unwrap_err(),
            Rejection::NoCapacity {
                candidates: 4,
                matching: 2
            }
        );
    }
    assert_eq!(
        choose(&BTreeMap::new(), &want, PlacementPolicy::Packed).unwrap_err(),
        Rejection::NoCapacity {
            candidates: 0,
            matching: 0
        }
    );
}

#[test]
fn the_event_records_the_policys_choice() {
    let history = vec![
        vm_registered("vm-1", 4, &[("region", "eu")]),
        vm_registered("vm-2", 4, &[("region", "eu")]),
        vm_registered("vm-3", 4, &[("region", "us")]),
        started("a", "u1", &[]),
        assigned("a", "vm-2"),
        started("s1", "u2", &[("region", "eu")]),
    ];
    given(history.clone())
        .when(assign_by("s1", None))
        .then_event(Event::SessionAssigned {
            session_id: sid("s1"),
            vm_id: vid("vm-2"),
            placement: placement(
                PlacementPolicy::Packed,
                3,
                2,
                1,
                4,
                PlacementReason::FullestWithRoom { tied: 1 },
            ),
        });
    given(history.clone())
        .when(assign_by("s1", Some(PlacementPolicy::Spread)))
        .then_event(Event::SessionAssigned {
            session_id: sid("s1"),
            vm_id: vid("vm-1"),
            placement: placement(
                PlacementPolicy::Spread,
                3,
                2,
                0,
                4,
                PlacementReason::EmptiestWithRoom { tied: 1 },
            ),
        });
    // An explicit choice counts the candidates but only the named VM as eligible.
    given(history)
        .when(assign_to("s1", "vm-1"))
        .then_event(Event::SessionAssigned {
            session_id: sid("s1"),
            vm_id: vid("vm-1"),
            placement: placement(
                PlacementPolicy::Explicit,
                3,
                1,
                0,
                4,
                PlacementReason::Requested,
            ),
        });
}

/// Sessions started and placed one at a time keep their requirement set indexed (no walk over every
/// VM at each start); past `IDLE_SETS_KEPT` idle sets, the least recently wanted is dropped, and
/// a set wanted again is indexed again with the same choices as a walk.
#[test]
fn idle_requirement_sets_stay_indexed_up_to_the_bound() {
    use crate::domain::placement::IDLE_SETS_KEPT;
    use crate::domain::DomainConfig;

    let sets = IDLE_SETS_KEPT as usize + 4;
    let zone = |i: usize| format!("z{i:02}");
    let mut log = Log::new(DomainConfig::default());
    let mut at = T0;
    for i in 0..sets {
        at += STEP_MS;
        log.submit(
            &format!("vm-{i}"),
            at,
            &register(&format!("vm-{i:02}"), 4, &[("zone", &zone(i))]),
        )
        .expect("registered");
    }
    for i in 0..sets {
        let session = format!("s-{i:02}");
        at += STEP_MS;
        log.submit(
            &format!("start-{i}"),
            at,
            &start(Some(&session), "u", &[("zone", &zone(i))]),
        )
        .expect("started");
        at += STEP_MS;
        log.submit(&format!("assign-{i}"), at, &assign_by(&session, None))
            .expect("placed");
        at += STEP_MS;
        log.submit(&format!("end-{i}"), at, &end(&session, EndReason::User))
            .expect("ended");
    }
    let held: Vec<usize> = (0..sets)
        .filter(|&i| log.state.placement.holds(&labels(&[("zone", &zone(i))])))
        .collect();
    assert_eq!(
        held,
        (4..sets).collect::<Vec<_>>(),
        "the 16 most recently wanted sets stay"
    );
    assert!(log.state.placement.sets().all(|(_, waiting)| waiting == 0));
    assert_eq!(log.replay(), log.state, "a replay keeps the same sets");

    // The first set, dropped, comes back with its next session and chooses as a walk does.
    let first = labels(&[("zone", &zone(0))]);
    at += STEP_MS;
    log.submit(
        "start-again",
        at,
        &start(Some("s-again"), "u", &[("zone", &zone(0))]),
    )
    .expect("started");
    assert!(log.state.placement.holds(&first));
    let walked =
        choose(&log.state.vms, &first, PlacementPolicy::Packed).map(|(id, p)| (id.clone(), p));
    let indexed = log
        .state
        .placement
        .choose(&log.state.vms, &first, PlacementPolicy::Packed)
        .expect("indexed");
    assert_eq!(indexed, walked);
    // Once that session ends, its set is the most recently wanted idle one, and the oldest goes.
    at += STEP_MS;
    log.submit("end-again", at, &end("s-again", EndReason::User))
        .expect("ended");
    let idle = log.state.placement.sets().filter(|(_, w)| *w == 0).count();
    assert_eq!(idle, IDLE_SETS_KEPT as usize);
    assert!(log.state.placement.holds(&first));
    assert!(!log.state.placement.holds(&labels(&[("zone", &zone(4))])));
}
