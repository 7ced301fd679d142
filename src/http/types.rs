//! The JSON the bridge accepts and returns, beyond the projections' views. Request bodies refuse
//! unknown fields, so a misspelt field is a 400, never silently ignored.

use orchestrator_events::{
    Actor, ActorKind, EndReason, Endpoint, Envelope, Event, EventType, GameId, Labels,
    PlacementPolicy, SessionId, Timestamp, UserId, VmId,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tokens::{Principal, Role};
use crate::domain::SessionStatus;
use crate::projections::{SessionView, VmView};

/// `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSessionBody {
    /// Whose session. A player may leave it out (their own) and may name only themselves;
    /// operators and services must give it.
    #[serde(default)]
    pub user_id: Option<UserId>,
    /// Which game.
    pub game_id: GameId,
    /// The session's id, for operators and services only: a player's start with it is refused
    /// (422 `invalid_argument`), since a player choosing ids could learn which ones other players'
    /// sessions use. When absent it is derived from the command id (the `Idempotency-Key`), so a
    /// retry names the same session.
    #[serde(default)]
    pub session_id: Option<SessionId>,
    /// Labels the VM must carry, e.g. `{"region": "eu-west"}`.
    #[serde(default)]
    pub requirements: Labels,
    /// Assign a VM at once: the session is started, then assigned (two events).
    #[serde(default)]
    pub assign: Option<AssignBody>,
}

/// `POST /v1/sessions/{id}/assign`, and `assign` of a start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The VM to use; absent: the policy picks one.
    #[serde(default)]
    pub vm_id: Option<VmId>,
    /// `packed` (the default) or `spread`; only without `vm_id`.
    #[serde(default)]
    pub policy: Option<PlacementPolicy>,
    /// When no VM has room, wait in the placement queue up to this many milliseconds (1 to
    /// 3,600,000) instead of answering 409 `no_capacity`: the answer is 202 with the queued session
    /// and its position, and the session is placed first come, first served, as room frees.
    #[serde(default)]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub wait_ms: Option<i64>,
}

/// `POST /v1/sessions/{id}/end`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndBody {
    /// Why. A player's end is always `user` (the only reason a player may give); an operator's
    /// defaults to `operator`, a service's to `user`.
    #[serde(default)]
    pub reason: Option<EndReason>,
}

/// The body of pause, resume, drain and retire: nothing, or `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// `POST /v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterVmBody {
    /// The VM.
    pub vm_id: VmId,
    /// How many sessions (active + paused) it holds, 1 to 1,024. Any other integer (0, negative, too
    /// large) is 422 `invalid_argument` with `field: capacity`, like every semantic range.
    #[schemars(range(min = 1, max = 1024))]
    pub capacity: i64,
    /// Its labels.
    #[serde(default)]
    pub labels: Labels,
    /// The interval of its heartbeats in milliseconds (100 to 600,000), published on
    /// `orch.<cell>.heartbeat.<vm_id>`; absent: it sends none and is never declared lost.
    #[serde(default)]
    #[schemars(range(min = 100, max = 600_000))]
    pub heartbeat_ms: Option<i64>,
    /// Where a session's client connects; shown to the session's owner once placed.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only this user's sessions (a player: only their own).
    pub user_id: Option<UserId>,
    /// Only sessions in this status.
    pub status: Option<SessionStatus>,
    /// Only sessions holding a slot on this VM.
    pub vm_id: Option<VmId>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub after: Option<SessionId>,
}

/// Query of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Start at this stream sequence (inclusive). `Last-Event-ID: n` resumes at n + 1 and wins
    /// over `from`. Neither: only events appended from now on.
    pub from: Option<u64>,
    /// Only these event types, comma-separated, e.g. `SessionStarted,SessionEnded`.
    #[serde(rename = "type")]
    pub types: Option<String>,
    /// Only this session's events.
    pub session_id: Option<SessionId>,
}

/// An actor as the bridge shows it: the JSON of the log's actor
/// (`{"kind": "user", "id": "alice"}`), except that `id` may be left out.
///
/// A player is shown the ids of no one but themselves: on their own sessions, an event an operator,
/// a service or the orchestrator caused shows only its kind (`{"kind": "operator"}`), so that a
/// player does not learn operators' logins or services' names. Operators and services see every id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Actor")]
pub struct ActorView {
    /// What kind of actor.
    pub kind: ActorKind,
    /// The actor's id (a user id, an operator's login, a service's name). Left out when a player
    /// reads an event another actor caused: players see no one's id but their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
}

impl ActorView {
    /// `actor` as `viewer` may see it.
    pub fn seen_by(actor: Actor, viewer: &Principal) -> Self {
        let hidden = viewer.role == Role::Player
            && !(actor.kind == ActorKind::User && actor.id == viewer.id);
        Self {
            kind: actor.kind,
            id: (!hidden).then_some(actor.id),
        }
    }
}

/// An event as the bridge shows it: the envelope, its stream sequence and its type.
///
/// The fields are the envelope's (as in the log's JSON), except `actor`, whose `id` a player sees
/// only when the actor is themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogEvent {
    /// Its stream sequence (the SSE `id`).
    pub seq: u64,
    /// Its type, e.g. `SessionStarted`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The schema version the event was written with (older versions are upcast when read).
    pub schema_version: u16,
    /// A unique id for the event.
    pub event_id: String,
    /// The id of the command that produced it (the idempotency key).
    pub command_id: String,
    /// A digest of the command's body: an unsigned 64-bit integer as a decimal string (it exceeds
    /// 2^53, which JavaScript numbers cannot hold); "0" when unknown (events of schema version 1).
    pub command_digest: String,
    /// When the writer decided, in milliseconds since the Unix epoch.
    pub occurred_at: Timestamp,
    /// The same instant as `occurred_at`, as an RFC 3339 UTC time with milliseconds.
    pub occurred_at_rfc3339: String,
    /// Who issued the command; a player sees another actor's kind only.
    pub actor: ActorView,
    /// What happened.
    pub event: Event,
    /// For a `SessionAssigned` in the event feed: where the session's client connects (the VM's
    /// endpoint), when the VM gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
}

impl LogEvent {
    /// The event at `seq`, as `viewer` may see it.
    pub fn new(seq: u64, envelope: Envelope, viewer: &Principal) -> Self {
        let Envelope {
            schema_version,
            event_id,
            command_id,
            command_digest,
            occurred_at,
            actor,
            event,
        } = envelope;
        Self {
            seq,
            event_type: event.event_type(),
            schema_version,
            event_id,
            command_id,
            command_digest: command_digest.to_string(),
            occurred_at,
            occurred_at_rfc3339: orchestrator_events::rfc3339(occurred_at),
            actor: ActorView::seen_by(actor, viewer),
            event,
            endpoint: None,
        }
    }
}

/// The answer to a command: its event(s), and the new state read with read-your-writes.
///
/// Status 201 (created) or 200 when the state shows the command's effect; 202 when the session was
/// queued (its last event is `SessionQueued`; `session.queued` and `session.queue_position` say
/// where it stands), or when the projections did not catch up within `--read-your-writes-timeout`:
/// the command **is** applied (`events`, `seq`), but `session`/`vm` are absent and `pending` says
/// so; read the resource again later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommandResponse {
    /// The stream sequence of the last event.
    pub seq: u64,
    /// Whether every event is a replay of an earlier request with the same `Idempotency-Key`
    /// (also sent as the `Idempotent-Replayed: true` header).
    pub replayed: bool,
    /// The events the command produced (two for a start with `assign`).
    pub events: Vec<LogEvent>,
    /// The session after the command, when it is about a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionView>,
    /// The VM after the command, when it is about a VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmView>,
    /// Set when the state could not be read in time (status 202).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// `GET /v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmList {
    /// Every VM, sorted by id.
    pub vms: Vec<VmView>,
    /// The stream sequence the list was read at (at least).
    pub as_of_seq: u64,
}

/// One entry of a session's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    /// The event.
    #[serde(flatten)]
    pub event: LogEvent,
    /// When the server stored it (ms since the epoch).
    pub stored_at: Timestamp,
    /// The same instant as `stored_at`, as an RFC 3339 UTC time with milliseconds.
    pub stored_at_rfc3339: String,
    /// The session's status after it.
    pub status: SessionStatus,
    /// How long the session stayed in the status before this event, in ms (0 for the first).
    pub ms_in_previous_status: i64,
}

pub use crate::domain::timeline::TimeInStatus;

/// `GET /v1/sessions/{id}/history`: the session's timeline from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct History {
    /// The session.
    pub session_id: SessionId,
    /// Its status after the last event.
    pub status: SessionStatus,
    /// Its events, in order.
    pub events: Vec<HistoryEntry>,
    /// Time in each status, from the events' times. A session not yet ended is counted up to
    /// `as_of`.
    pub time_in_status_ms: TimeInStatus,
    /// The bridge's clock when the history was read (ms since the epoch).
    pub as_of: Timestamp,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`: `{"ready": true}` for anyone (a probe needs no more); with an operator's or a
/// service's token, also how the bridge sees NATS, the stream and the projections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Readiness {
    /// Whether the bridge can serve (NATS connected and the stream readable); 503 when not.
    pub ready: bool,
    /// The details, for operators and services only (the same figures as `/metrics`).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ReadinessDetails>,
}

/// What `GET /readyz` adds for an operator or a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReadinessDetails {
    /// The NATS connection: `connected`, `pending` or `disconnected`.
    pub nats: String,
    /// The stream's last sequence, when it could be read.
    pub stream_last_seq: Option<u64>,
    /// The last sequence the projections applied.
    pub projection_checkpoint: u64,
    /// Events not yet projected, when the stream could be read.
    pub projection_lag: Option<u64>,
    /// The projections are being rebuilt from the log (after damage, or a store of another log):
    /// reads answer 503 `projections_rebuilding` until the rebuild reaches the log's end; commands
    /// are taken and answered 202 without the state.
    pub projections_rebuilding: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, id: &str) -> Principal {
        Principal {
            role,
            id: id.into(),
        }
    }

    #[test]
    fn a_player_sees_no_id_but_their_own() {
        let alice = principal(Role::Player, "alice");
        let shown = |actor: Actor, viewer: &Principal| {
            serde_json::to_value(ActorView::seen_by(actor, viewer)).unwrap()
        };
        let me = serde_json::json!({"kind": "user", "id": "alice"});
        assert_eq!(shown(Actor::user("alice"), &alice), me);
        for (actor, kind) in [
            (Actor::operator("ops"), "operator"),
            (Actor::service("gateway"), "service"),
            (Actor::system("orchestrator"), "system"),
            (Actor::user("bob"), "user"),
        ] {
            assert_eq!(
                shown(actor.clone(), &alice),
                serde_json::json!({ "kind": kind })
            );
            for staff in [
                principal(Role::Operator, "ops"),
                principal(Role::Service, "gateway"),
            ] {
                assert_eq!(
                    shown(actor.clone(), &staff),
                    serde_json::to_value(&actor).unwrap(),
                    "{staff:?} sees every id"
                );
            }
        }
        // An operator whose login is the player's id is still not the player.
        assert_eq!(
            shown(Actor::operator("alice"), &alice),
            serde_json::json!({"kind": "operator"})
        );
    }
}
