//! The event shapes of schema versions 1 and 2, frozen: their postcard layout is the contract of
//! every log written before version 3. Decoding upcasts them to the current [`Event`]; encoding them
//! exists only for fixtures and tests.
//!
//! Version 3 added `heartbeat_ms` and `endpoint` to `VmRegistered`, `queued` to the placement, and
//! the `SessionQueued` and `VmLost` events.

use serde::{Deserialize, Serialize};

use crate::event::{EndReason, Event, Placement, PlacementPolicy, PlacementReason};
use crate::ids::{GameId, Labels, SessionId, UserId, VmId};

/// An event as versions 1 and 2 wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Event2 {
    SessionStarted {
        session_id: SessionId,
        user_id: UserId,
        game_id: GameId,
        requirements: Labels,
    },
    SessionAssigned {
        session_id: SessionId,
        vm_id: VmId,
        placement: Placement2,
    },
    SessionPaused {
        session_id: SessionId,
    },
    SessionResumed {
        session_id: SessionId,
    },
    SessionEnded {
        session_id: SessionId,
        reason: EndReason,
        vm_id: Option<VmId>,
    },
    VmRegistered {
        vm_id: VmId,
        capacity: u32,
        labels: Labels,
    },
    VmDrained {
        vm_id: VmId,
    },
    VmRetired {
        vm_id: VmId,
    },
}

/// A placement explanation as versions 1 and 2 wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Placement2 {
    policy: PlacementPolicy,
    candidates: u32,
    eligible: u32,
    load_before: u32,
    capacity: u32,
    reason: PlacementReason,
}

impl From<Event2> for Event {
    fn from(e: Event2) -> Self {
        match e {
            Event2::SessionStarted {
                session_id,
                user_id,
                game_id,
                requirements,
            } => Event::SessionStarted {
                session_id,
                user_id,
                game_id,
                requirements,
            },
            Event2::SessionAssigned {
                session_id,
                vm_id,
                placement: p,
            } => Event::SessionAssigned {
                session_id,
                vm_id,
                placement: Placement {
                    policy: p.policy,
                    candidates: p.candidates,
                    eligible: p.eligible,
                    load_before: p.load_before,
                    capacity: p.capacity,
                    reason: p.reason,
                    queued: None,
                },
            },
            Event2::SessionPaused { session_id } => Event::SessionPaused { session_id },
            Event2::SessionResumed { session_id } => Event::SessionResumed { session_id },
            Event2::SessionEnded {
                session_id,
                reason,
                vm_id,
            } => Event::SessionEnded {
                session_id,
                reason,
                vm_id,
            },
            Event2::VmRegistered {
                vm_id,
                capacity,
                labels,
            } => Event::VmRegistered {
                vm_id,
                capacity,
                labels,
                heartbeat_ms: None,
                endpoint: None,
            },
            Event2::VmDrained { vm_id } => Event::VmDrained { vm_id },
            Event2::VmRetired { vm_id } => Event::VmRetired { vm_id },
        }
    }
}

impl Event2 {
    /// The old shape of an event, when it has one: not for the events and fields version 3 added.
    pub(super) fn from_current(e: &Event) -> Option<Self> {
        Some(match e.clone() {
            Event::SessionStarted {
                session_id,
                user_id,
                game_id,
                requirements,
            } => Event2::SessionStarted {
                session_id,
                user_id,
                game_id,
                requirements,
            },
            Event::SessionAssigned {
                session_id,
                vm_id,
                placement: p,
            } if p.queued.is_none() => Event2::SessionAssigned {
                session_id,
                vm_id,
                placement: Placement2 {
                    policy: p.policy,
                    candidates: p.candidates,
                    eligible: p.eligible,
                    load_before: p.load_before,
                    capacity: p.capacity,
                    reason: p.reason,
                },
            },
            Event::SessionPaused { session_id } => Event2::SessionPaused { session_id },
            Event::SessionResumed { session_id } => Event2::SessionResumed { session_id },
            Event::SessionEnded {
                session_id,
                reason,
                vm_id,
            } if reason != EndReason::MaxLength => Event2::SessionEnded {
                session_id,
                reason,
                vm_id,
            },
            Event::VmRegistered {
                vm_id,
                capacity,
                labels,
                heartbeat_ms: None,
                endpoint: None,
            } => Event2::VmRegistered {
                vm_id,
                capacity,
                labels,
            },
            Event::VmDrained { vm_id } => Event2::VmDrained { vm_id },
            Event::VmRetired { vm_id } => Event2::VmRetired { vm_id },
            _ => return None,
        })
    }
}
