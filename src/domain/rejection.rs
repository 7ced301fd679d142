//! Why a command is refused. Every rejection has a stable, machine-readable code; the codes are part of
//! the API (NATS replies, HTTP problem+json) and are never renamed.
//!
//! | code | meaning | what a caller does |
//! |---|---|---|
//! | `session_not_found` | no session has this id | check the id |
//! | `vm_not_found` | no VM has this id | check the id |
//! | `invalid_transition` | the command does not apply in the current state | read the state; do not retry |
//! | `vm_full` | the named VM has no free slot | pick another VM or let the policy choose |
//! | `vm_draining` | the named VM takes no new sessions | pick another VM |
//! | `vm_retired` | the VM left the pool | pick another VM |
//! | `vm_not_empty` | a VM with sessions cannot be retired | drain it, end its sessions, retry |
//! | `requirements_not_met` | the named VM lacks labels the session requires | pick a matching VM |
//! | `no_capacity` | no VM can take the session now | retry later or register VMs |
//! | `user_quota_exceeded` | the user already has the maximum of concurrent sessions | end one first |
//! | `already_exists` | a session or VM with this id exists | use another id |
//! | `command_id_reused` | this command id was used with another body | use a new command id |
//! | `invalid_argument` | a field is invalid; `field` names it | fix the request |

use orchestrator_events::{CommandId, SessionId, UserId, VmId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which kind of thing a rejection is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// A session.
    Session,
    /// A VM.
    Vm,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// `session_not_found`
    #[error("session {session_id} not found")]
    SessionNotFound {
        /// The id asked for.
        session_id: SessionId,
    },
    /// `vm_not_found`
    #[error("VM {vm_id} not found")]
    VmNotFound {
        /// The id asked for.
        vm_id: VmId,
    },
    /// `invalid_transition`
    #[error("cannot {command} {entity:?} {id}: it is {current}")]
    InvalidTransition {
        /// Session or VM.
        entity: Entity,
        /// Its id.
        id: String,
        /// Its current status, e.g. `ended`.
        current: String,
        /// The refused command's name, e.g. `pause`.
        command: String,
    },
    /// `vm_full`
    #[error("VM {vm_id} is full ({capacity} sessions)")]
    VmFull {
        /// The VM.
        vm_id: VmId,
        /// Its capacity.
        capacity: u32,
    },
    /// `vm_draining`
    #[error("VM {vm_id} is draining and takes no new sessions")]
    VmDraining {
        /// The VM.
        vm_id: VmId,
    },
    /// `vm_retired`
    #[error("VM {vm_id} is retired")]
    VmRetired {
        /// The VM.
        vm_id: VmId,
    },
    /// `vm_not_empty`
    #[error("VM {vm_id} still holds {sessions} sessions")]
    VmNotEmpty {
        /// The VM.
        vm_id: VmId,
        /// How many sessions it holds.
        sessions: u32,
    },
    /// `requirements_not_met`
    #[error("VM {vm_id} lacks the required labels {missing:?}")]
    RequirementsNotMet {
        /// The VM.
        vm_id: VmId,
        /// The required label keys it lacks or has with another value.
        missing: Vec<String>,
    },
    /// `no_capacity`
    #[error("no VM can take the session: {candidates} VMs, {matching} with matching labels, none with room")]
    NoCapacity {
        /// VMs looked at (not retired).
        candidates: u32,
        /// Of those, how many carry the required labels and accept placements.
        matching: u32,
    },
    /// `user_quota_exceeded`
    #[error("user {user_id} already has {limit} concurrent sessions")]
    UserQuotaExceeded {
        /// The user.
        user_id: UserId,
        /// The limit.
        limit: u32,
    },
    /// `already_exists`
    #[error("{entity:?} {id} already exists")]
    AlreadyExists {
        /// Session or VM.
        entity: Entity,
        /// Its id.
        id: String,
    },
    /// `command_id_reused`
    #[error("command id {command_id} was already used with another body")]
    CommandIdReused {
        /// The reused id.
        command_id: CommandId,
    },
    /// `invalid_argument`
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Every rejection code, in the order of the table above.
pub const REJECTION_CODES: [&str; 13] = [
    "session_not_found",
    "vm_not_found",
    "invalid_transition",
    "vm_full",
    "vm_draining",
    "vm_retired",
    "vm_not_empty",
    "requirements_not_met",
    "no_capacity",
    "user_quota_exceeded",
    "already_exists",
    "command_id_reused",
    "invalid_argument",
];

impl Rejection {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::SessionNotFound { .. } => "session_not_found",
            Rejection::VmNotFound { .. } => "vm_not_found",
            Rejection::InvalidTransition { .. } => "invalid_transition",
            Rejection::VmFull { .. } => "vm_full",
            Rejection::VmDraining { .. } => "vm_draining",
            Rejection::VmRetired { .. } => "vm_retired",
            Rejection::VmNotEmpty { .. } => "vm_not_empty",
            Rejection::RequirementsNotMet { .. } => "requirements_not_met",
            Rejection::NoCapacity { .. } => "no_capacity",
            Rejection::UserQuotaExceeded { .. } => "user_quota_exceeded",
            Rejection::AlreadyExists { .. } => "already_exists",
            Rejection::CommandIdReused { .. } => "command_id_reused",
            Rejection::InvalidArgument { .. } => "invalid_argument",
        }
    }

    /// An `invalid_argument` rejection.
    pub fn invalid_argument(field: &str, reason: impl Into<String>) -> Self {
        Rejection::InvalidArgument {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// An `invalid_transition` rejection.
    pub fn invalid_transition(entity: Entity, id: &str, current: &str, command: &str) -> Self {
        Rejection::InvalidTransition {
            entity,
            id: id.to_owned(),
            current: current.to_owned(),
            command: command.to_owned(),
        }
    }
}
