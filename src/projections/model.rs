//! The read models: what a reader sees of a session and of a VM.

use orchestrator_events::{
    EndReason, Endpoint, GameId, Labels, Placement, SessionId, Timestamp, UserId, VmId,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{SessionStatus, VmStatus};

/// A session as projected from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionView {
    /// The session.
    pub session_id: SessionId,
    /// Whose.
    pub user_id: UserId,
    /// Which game.
    pub game_id: GameId,
    /// Labels its VM must carry.
    pub requirements: Labels,
    /// Where it is in its lifecycle.
    pub status: SessionStatus,
    /// Its VM, once assigned (kept after it ends).
    pub vm_id: Option<VmId>,
    /// How its VM was chosen.
    pub placement: Option<Placement>,
    /// Why it ended, once ended.
    pub end_reason: Option<EndReason>,
    /// Set while it waits in the placement queue.
    pub queued: Option<QueuedView>,
    /// Its place in the queue while it waits (1: next to be placed). Computed when read.
    #[serde(default)]
    pub queue_position: Option<u64>,
    /// Where its client connects, once placed on a VM that gave an endpoint.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// When it started (ms since the epoch).
    pub started_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The stream sequence of its last event.
    pub last_seq: u64,
}

/// A session's place in the placement queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QueuedView {
    /// When it was queued.
    pub since: Timestamp,
    /// When it ends with `placement_timeout` if still waiting.
    pub deadline: Timestamp,
    /// The sequence of its `SessionQueued`: its place in the first-come, first-served order.
    pub seq: u64,
}

/// A VM as projected from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmView {
    /// The VM.
    pub vm_id: VmId,
    /// Sessions it can hold.
    pub capacity: u32,
    /// Sessions it holds (active + paused).
    pub used: u32,
    /// Free slots (0 when it takes no placements is NOT implied: see `status`).
    pub free: u32,
    /// Whether it takes placements.
    pub status: VmStatus,
    /// Its labels.
    pub labels: Labels,
    /// Its heartbeat interval in milliseconds, if it sends heartbeats.
    pub heartbeat_ms: Option<u32>,
    /// Where clients connect.
    pub endpoint: Option<Endpoint>,
    /// When it was registered.
    pub registered_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The stream sequence of its last event.
    pub last_seq: u64,
}

/// Capacity of the cell, summed over VMs that are not retired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Capacity {
    /// VMs taking placements.
    pub vms_available: u32,
    /// VMs draining.
    pub vms_draining: u32,
    /// VMs retired.
    pub vms_retired: u32,
    /// VMs lost (missed their heartbeats).
    pub vms_lost: u32,
    /// Sessions waiting in the placement queue.
    pub queued: u64,
    /// When the longest-waiting of them was queued.
    pub oldest_queued_since: Option<Timestamp>,
    /// Sessions ended, by reason (`vm_lost`, `pause_timeout`...), over the whole log.
    pub ended_by_reason: std::collections::BTreeMap<String, u64>,
    /// Slots on available and draining VMs.
    pub capacity: u64,
    /// Slots in use.
    pub used: u64,
    /// Free slots on available VMs: what new sessions can get.
    pub placeable: u64,
    /// Sessions per status.
    pub sessions: SessionCounts,
    /// The stream sequence this was read at.
    pub as_of_seq: u64,
}

/// Sessions per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionCounts {
    /// `starting`
    pub starting: u64,
    /// `active`
    pub active: u64,
    /// `paused`
    pub paused: u64,
    /// `ended`
    pub ended: u64,
}

impl SessionCounts {
    /// The count of one status.
    pub fn get(&self, s: SessionStatus) -> u64 {
        match s {
            SessionStatus::Starting => self.starting,
            SessionStatus::Active => self.active,
            SessionStatus::Paused => self.paused,
            SessionStatus::Ended => self.ended,
        }
    }

    /// The count of one status, mutably.
    pub fn get_mut(&mut self, s: SessionStatus) -> &mut u64 {
        match s {
            SessionStatus::Starting => &mut self.starting,
            SessionStatus::Active => &mut self.active,
            SessionStatus::Paused => &mut self.paused,
            SessionStatus::Ended => &mut self.ended,
        }
    }
}
