//! The invariant checks catch what they claim to: each corruption of a valid state, and each illegal
//! event, is reported with a readable message.

use orchestrator_events::{EndReason, Event};

use super::framework::*;
use crate::domain::invariants::{check, check_transition, Violation};
use crate::domain::{SessionStatus, State, VmStatus};

/// vm-1 (capacity 2) holds s1 (active) and s2 (paused); s3 is starting; s4 ended. All of user u1/u2.
fn valid() -> State {
    given(vec![
        vm_registered("vm-1", 2, &[("region", "eu")]),
        vm_registered("vm-2", 1, &[]),
        started("s1", "u1", &[]),
        assigned("s1", "vm-1"),
        started("s2", "u1", &[("region", "eu")]),
        assigned("s2", "vm-1"),
        paused("s2"),
        started("s3", "u2", &[]),
        started("s4", "u2", &[]),
        ended("s4", None),
    ])
    .log
    .state
}

#[track_caller]
fn broken(f: impl FnOnce(&mut State)) -> Violation {
    let mut s = valid();
    f(&mut s);
    check(&s).expect_err("the corruption is caught")
}

#[test]
fn a_valid_state_passes() {
    assert_eq!(check(&valid()), Ok(()));
    assert_eq!(check(&State::default()), Ok(()));
}

#[test]
fn state_corruptions_are_caught() {
    let v = broken(|s| s.vms.get_mut(&vid("vm-1")).unwrap().used = 1);
    assert!(
        matches!(
            v,
            Violation::UsedMismatch {
                used: 1,
                counted: 2,
                ..
            }
        ),
        "{v}"
    );
    assert_eq!(
        v.to_string(),
        "VM vm-1 counts 1 sessions but 2 active or paused sessions are on it"
    );

    let v = broken(|s| s.vms.get_mut(&vid("vm-1")).unwrap().capacity = 1);
    assert!(matches!(v, Violation::OverCapacity { .. }), "{v}");

    let v = broken(|s| {
        for id in ["s1", "s2"] {
            s.sessions.get_mut(&sid(id)).unwrap().status = SessionStatus::Ended;
        }
        s.live_by_user.remove(&uid("u1"));
        let vm = s.vms.get_mut(&vid("vm-2")).unwrap();
        vm.status = VmStatus::Retired;
        s.sessions.get_mut(&sid("s3")).unwrap().status = SessionStatus::Active;
        s.sessions.get_mut(&sid("s3")).unwrap().vm_id = Some(vid("vm-2"));
        s.vms.get_mut(&vid("vm-2")).unwrap().used = 1;
        s.vms.get_mut(&vid("vm-1")).unwrap().used = 0;
    });
    assert!(matches!(v, Violation::RetiredNotEmpty { .. }), "{v}");

    let v = broken(|s| s.sessions.get_mut(&sid("s1")).unwrap().vm_id = Some(vid("vm-9")));
    assert!(matches!(v, Violation::SlotWithoutVm { .. }), "{v}");
    let v = broken(|s| s.sessions.get_mut(&sid("s2")).unwrap().vm_id = None);
    assert!(matches!(v, Violation::SlotWithoutVm { .. }), "{v}");

    let v = broken(|s| s.sessions.get_mut(&sid("s3")).unwrap().vm_id = Some(vid("vm-2")));
    assert!(matches!(v, Violation::StartingOnVm { .. }), "{v}");

    let v = broken(|s| *s.live_by_user.get_mut(&uid("u2")).unwrap() = 2);
    assert!(
        matches!(
            v,
            Violation::LiveCountMismatch {
                recorded: 2,
                counted: 1,
                ..
            }
        ),
        "{v}"
    );
    let v = broken(|s| {
        s.live_by_user.remove(&uid("u2"));
    });
    assert!(
        matches!(
            v,
            Violation::LiveCountMismatch {
                recorded: 0,
                counted: 1,
                ..
            }
        ),
        "{v}"
    );
    let v = broken(|s| {
        s.live_by_user.insert(uid("u9"), 0);
    });
    assert!(
        matches!(
            v,
            Violation::LiveCountMismatch {
                recorded: 0,
                counted: 0,
                ..
            }
        ),
        "{v}"
    );
}

#[test]
fn illegal_events_are_caught() {
    let s = valid();
    let is = |e: Event| check_transition(&s, &e).err();
    let mut drained_vm1 = valid();
    drained_vm1.vms.get_mut(&vid("vm-1")).unwrap().status = VmStatus::Draining;

    // Legal ones pass.
    for e in [
        started("s5", "u3", &[]),
        assigned("s3", "vm-2"),
        paused("s1"),
        resumed("s2"),
        ended("s1", Some("vm-1")),
        ended("s3", None),
        vm_registered("vm-3", 1, &[]),
        drained("vm-1"),
        retired("vm-2"),
    ] {
        assert_eq!(check_transition(&s, &e), Ok(()), "{e:?}");
    }

    assert!(matches!(
        is(started("s1", "u1", &[])),
        Some(Violation::AlreadyExists { .. })
    ));
    assert!(matches!(
        is(assigned("s9", "vm-2")),
        Some(Violation::UnknownSession { .. })
    ));
    assert!(matches!(
        is(assigned("s1", "vm-2")),
        Some(Violation::InvalidTransition { .. })
    ));
    assert!(matches!(
        is(assigned("s3", "vm-9")),
        Some(Violation::UnknownVm { .. })
    ));
    assert!(matches!(
        is(assigned("s3", "vm-1")),
        Some(Violation::AssignedToFullVm { .. })
    ));
    assert!(matches!(
        check_transition(&drained_vm1, &assigned("s3", "vm-1")),
        Err(Violation::AssignedToUnavailableVm { .. })
    ));
    let mut eu_only = valid();
    eu_only.sessions.get_mut(&sid("s3")).unwrap().requirements = labels(&[("region", "eu")]);
    assert!(matches!(
        check_transition(&eu_only, &assigned("s3", "vm-2")),
        Err(Violation::RequirementsNotMet { .. })
    ));
    assert!(matches!(
        is(paused("s2")),
        Some(Violation::InvalidTransition { .. })
    ));
    assert!(matches!(
        is(paused("s3")),
        Some(Violation::InvalidTransition { .. })
    ));
    assert!(matches!(
        is(resumed("s1")),
        Some(Violation::InvalidTransition { .. })
    ));
    assert!(matches!(
        is(ended("s1", None)),
        Some(Violation::EndedOnOtherVm { .. })
    ));
    assert!(matches!(
        is(ended("s3", Some("vm-1"))),
        Some(Violation::EndedOnOtherVm { .. })
    ));
    assert!(matches!(
        is(vm_registered("vm-1", 2, &[])),
        Some(Violation::AlreadyExists { .. })
    ));
    assert!(matches!(
        is(vm_registered("vm-3", 0, &[])),
        Some(Violation::BadCapacity { .. })
    ));
    assert!(matches!(
        is(drained("vm-9")),
        Some(Violation::UnknownVm { .. })
    ));
    assert!(matches!(
        check_transition(&drained_vm1, &drained("vm-1")),
        Err(Violation::InvalidTransition { .. })
    ));
    assert!(matches!(
        is(retired("vm-1")),
        Some(Violation::RetiredWithSessions { used: 2, .. })
    ));

    // Nothing happens to an ended session.
    for e in [
        assigned("s4", "vm-2"),
        paused("s4"),
        resumed("s4"),
        Event::SessionEnded {
            session_id: sid("s4"),
            reason: EndReason::Operator,
            vm_id: None,
        },
    ] {
        let v = is(e.clone()).expect("refused");
        assert!(matches!(v, Violation::AfterEnd { .. }), "{e:?}: {v}");
        assert!(v.to_string().contains("ended is final"), "{v}");
    }
}
