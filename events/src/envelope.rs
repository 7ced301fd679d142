//! The envelope around every event: who did what, when, under which command.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// Milliseconds since the Unix epoch, UTC. Time comes from the writer's clock when it decides.
pub type Timestamp = i64;

/// Who issued a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A player, acting on their own sessions.
    User,
    /// A human operator.
    Operator,
    /// Another service acting for users (the gateway, a matchmaker).
    Service,
    /// The orchestrator itself (timers, automatic actions).
    System,
}

impl ActorKind {
    /// The kind as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Operator => "operator",
            ActorKind::Service => "service",
            ActorKind::System => "system",
        }
    }
}

/// Who issued a command: a kind and an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorKind,
    /// The actor's id (a user id, an operator's login, a service's name).
    pub id: String,
}

impl Actor {
    /// A player.
    pub fn user(id: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::User,
            id: id.into(),
        }
    }
    /// An operator.
    pub fn operator(id: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::Operator,
            id: id.into(),
        }
    }
    /// A service.
    pub fn service(id: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::Service,
            id: id.into(),
        }
    }
    /// The orchestrator itself.
    pub fn system(id: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::System,
            id: id.into(),
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

/// An event with its metadata, as stored in the log (schema version [`crate::CURRENT_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// The schema version this envelope was written with. Decoding upcasts older versions, so this is
    /// the version the bytes carried, kept for audit.
    pub schema_version: u16,
    /// A unique id for the event.
    pub event_id: String,
    /// The id of the command that produced it (the idempotency key).
    pub command_id: String,
    /// A digest of the command's body, so that a reused command id with another body is refused even
    /// after a replay. Zero when unknown (events written with schema version 1).
    pub command_digest: u64,
    /// When the writer decided, in milliseconds since the Unix epoch.
    pub occurred_at: Timestamp,
    /// Who issued the command.
    pub actor: Actor,
    /// What happened.
    pub event: Event,
}

impl Envelope {
    /// An envelope of the current schema version.
    pub fn new(
        event_id: String,
        command_id: String,
        command_digest: u64,
        occurred_at: Timestamp,
        actor: Actor,
        event: Event,
    ) -> Self {
        Self {
            schema_version: crate::codec::CURRENT_VERSION,
            event_id,
            command_id,
            command_digest,
            occurred_at,
            actor,
            event,
        }
    }
}
