//! Every event the orchestrator appends to the log, and the values they carry.
//!
//! Events are facts in the past tense. Their postcard encoding is a contract: a variant or a field is
//! never removed or reordered. A new event type is appended at the end of [`Event`]; a changed shape
//! gets a new schema version in [`crate::codec`] with an upcast from the old one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::envelope::Timestamp;
use crate::ids::{GameId, Host, LabelKey, Labels, SessionId, UserId, VmId};

/// An event: one accepted command's effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Event {
    /// A session was created. It is `starting`: it waits for a VM.
    SessionStarted {
        /// The new session.
        session_id: SessionId,
        /// Whose session it is.
        user_id: UserId,
        /// The game it plays.
        game_id: GameId,
        /// Labels its VM must carry (region, GPU class...).
        requirements: Labels,
    },
    /// A session was placed on a VM and became `active`.
    SessionAssigned {
        /// The session.
        session_id: SessionId,
        /// The VM it now runs on.
        vm_id: VmId,
        /// How and why this VM was chosen.
        placement: Placement,
    },
    /// An `active` session was paused; it keeps its VM slot.
    SessionPaused {
        /// The session.
        session_id: SessionId,
    },
    /// A `paused` session became `active` again.
    SessionResumed {
        /// The session.
        session_id: SessionId,
    },
    /// A session ended; `ended` is final. Its VM slot, if it had one, is free.
    SessionEnded {
        /// The session.
        session_id: SessionId,
        /// Why it ended.
        reason: EndReason,
        /// The VM it was on, if it had been placed.
        vm_id: Option<VmId>,
    },
    /// A VM joined the pool.
    VmRegistered {
        /// The VM.
        vm_id: VmId,
        /// How many sessions (active + paused) it can hold.
        capacity: u32,
        /// Its labels, matched against sessions' requirements.
        labels: Labels,
        /// The interval at which it promised heartbeats, in milliseconds; `None`: it sends none and
        /// is never declared lost (schema 2 and older).
        #[serde(default)]
        heartbeat_ms: Option<u32>,
        /// Where a session's client connects (schema 2 and older: none).
        #[serde(default)]
        endpoint: Option<Endpoint>,
    },
    /// A VM takes no new placements; its sessions keep running.
    VmDrained {
        /// The VM.
        vm_id: VmId,
    },
    /// An empty VM left the pool for good.
    VmRetired {
        /// The VM.
        vm_id: VmId,
    },
    /// A `starting` session found no room and waits in the placement queue until `deadline`.
    SessionQueued {
        /// The session.
        session_id: SessionId,
        /// The policy its placement will use.
        policy: PlacementPolicy,
        /// When it ends with `placement_timeout` if still waiting.
        deadline: Timestamp,
    },
    /// A VM missed its heartbeat deadline and left the pool; its sessions were ended first. It must
    /// register again to come back.
    VmLost {
        /// The VM.
        vm_id: VmId,
        /// When the writer last heard from it (`None`: not since this writer took over).
        last_heartbeat: Option<Timestamp>,
    },
}

/// The name of an event's type, as sent in the `Orch-Event-Type` header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum EventType {
    /// [`Event::SessionStarted`]
    SessionStarted,
    /// [`Event::SessionAssigned`]
    SessionAssigned,
    /// [`Event::SessionPaused`]
    SessionPaused,
    /// [`Event::SessionResumed`]
    SessionResumed,
    /// [`Event::SessionEnded`]
    SessionEnded,
    /// [`Event::VmRegistered`]
    VmRegistered,
    /// [`Event::VmDrained`]
    VmDrained,
    /// [`Event::VmRetired`]
    VmRetired,
    /// [`Event::SessionQueued`]
    SessionQueued,
    /// [`Event::VmLost`]
    VmLost,
}

impl EventType {
    /// Every event type, in declaration order.
    pub const ALL: [EventType; 10] = [
        EventType::SessionStarted,
        EventType::SessionAssigned,
        EventType::SessionPaused,
        EventType::SessionResumed,
        EventType::SessionEnded,
        EventType::VmRegistered,
        EventType::VmDrained,
        EventType::VmRetired,
        EventType::SessionQueued,
        EventType::VmLost,
    ];

    /// The type's name, as in the header and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionStarted => "SessionStarted",
            EventType::SessionAssigned => "SessionAssigned",
            EventType::SessionPaused => "SessionPaused",
            EventType::SessionResumed => "SessionResumed",
            EventType::SessionEnded => "SessionEnded",
            EventType::VmRegistered => "VmRegistered",
            EventType::VmDrained => "VmDrained",
            EventType::VmRetired => "VmRetired",
            EventType::SessionQueued => "SessionQueued",
            EventType::VmLost => "VmLost",
        }
    }

    /// Parses a type name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event is about: the aggregate whose subject it is published on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate<'a> {
    /// A session.
    Session(&'a SessionId),
    /// A VM.
    Vm(&'a VmId),
}

impl Event {
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            Event::SessionStarted { .. } => EventType::SessionStarted,
            Event::SessionAssigned { .. } => EventType::SessionAssigned,
            Event::SessionPaused { .. } => EventType::SessionPaused,
            Event::SessionResumed { .. } => EventType::SessionResumed,
            Event::SessionEnded { .. } => EventType::SessionEnded,
            Event::VmRegistered { .. } => EventType::VmRegistered,
            Event::VmDrained { .. } => EventType::VmDrained,
            Event::VmRetired { .. } => EventType::VmRetired,
            Event::SessionQueued { .. } => EventType::SessionQueued,
            Event::VmLost { .. } => EventType::VmLost,
        }
    }

    /// The aggregate the event belongs to.
    pub fn aggregate(&self) -> Aggregate<'_> {
        match self {
            Event::SessionStarted { session_id, .. }
            | Event::SessionAssigned { session_id, .. }
            | Event::SessionPaused { session_id }
            | Event::SessionResumed { session_id }
            | Event::SessionEnded { session_id, .. }
            | Event::SessionQueued { session_id, .. } => Aggregate::Session(session_id),
            Event::VmRegistered { vm_id, .. }
            | Event::VmDrained { vm_id }
            | Event::VmRetired { vm_id }
            | Event::VmLost { vm_id, .. } => Aggregate::Vm(vm_id),
        }
    }

    /// The session the event is about, if any.
    pub fn session_id(&self) -> Option<&SessionId> {
        match self.aggregate() {
            Aggregate::Session(id) => Some(id),
            Aggregate::Vm(_) => None,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The player ended it.
    User,
    /// An operator ended it.
    Operator,
    /// It stayed paused past the pause timeout.
    PauseTimeout,
    /// No VM could take it before its placement deadline.
    PlacementTimeout,
    /// Its VM was being retired.
    VmRetired,
    /// Its VM stopped answering.
    VmLost,
    /// It ran past the cell's maximum session length.
    MaxLength,
}

impl EndReason {
    /// The reason as in the JSON, e.g. `pause_timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::User => "user",
            EndReason::Operator => "operator",
            EndReason::PauseTimeout => "pause_timeout",
            EndReason::PlacementTimeout => "placement_timeout",
            EndReason::VmRetired => "vm_retired",
            EndReason::VmLost => "vm_lost",
            EndReason::MaxLength => "max_length",
        }
    }
}

/// How a VM is chosen when a session is assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementPolicy {
    /// The caller named the VM.
    Explicit,
    /// Fill the fullest VM that still has room, so whole VMs stay free (the default).
    #[default]
    Packed,
    /// Use the emptiest VM, so load spreads evenly.
    Spread,
}

impl PlacementPolicy {
    /// The policy as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementPolicy::Explicit => "explicit",
            PlacementPolicy::Packed => "packed",
            PlacementPolicy::Spread => "spread",
        }
    }
}

/// Why the chosen VM won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementReason {
    /// The command named this VM and it could take the session.
    Requested,
    /// It had the most sessions among the eligible VMs (packed). `tied` VMs had the same load; the
    /// lowest VM id won among them.
    FullestWithRoom {
        /// How many eligible VMs shared the winning load (1 when there was no tie).
        tied: u32,
    },
    /// It had the fewest sessions among the eligible VMs (spread). `tied` VMs had the same load; the
    /// lowest VM id won among them.
    EmptiestWithRoom {
        /// How many eligible VMs shared the winning load (1 when there was no tie).
        tied: u32,
    },
}

/// The explanation of a placement, recorded in [`Event::SessionAssigned`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Placement {
    /// The policy that chose.
    pub policy: PlacementPolicy,
    /// How many VMs were looked at (every VM that is not retired).
    pub candidates: u32,
    /// How many of those could take the session: accepting placements, labels matching, with room.
    pub eligible: u32,
    /// The chosen VM's sessions (active + paused) before this one.
    pub load_before: u32,
    /// The chosen VM's capacity.
    pub capacity: u32,
    /// Why it won.
    pub reason: PlacementReason,
    /// Set when the session waited in the placement queue and the writer placed it as room freed
    /// (schema 2 and older: none).
    #[serde(default)]
    pub queued: Option<QueueWait>,
}

/// How long a session waited in the placement queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QueueWait {
    /// When it was queued (the time of its `SessionQueued`).
    pub since: Timestamp,
    /// How long it waited, in milliseconds.
    pub waited_ms: u64,
}

/// The most named ports an [`Endpoint`] carries.
pub const MAX_PORTS: usize = 16;

/// Where a client connects to a VM: an address and named ports (`{"stream": 47998, "control": 47999}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Endpoint {
    /// A host name or IP address.
    pub address: Host,
    /// Ports by name, at most [`MAX_PORTS`].
    #[serde(default)]
    pub ports: BTreeMap<LabelKey, u16>,
}
