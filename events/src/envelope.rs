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
#[serde(deny_unknown_fields)]
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
///
/// It has two serialised forms, chosen by the format:
/// - **binary** (postcard, in the command replies): the fields below, in this order;
/// - **JSON** (every JSON form of an event: replies, `tail --json`, the bridge, the schemas):
///   the same fields, except that `command_digest` is a decimal string (it exceeds 2^53, which
///   JavaScript numbers cannot hold), and with `occurred_at_rfc3339` (the same instant as an RFC 3339
///   UTC time with milliseconds) after `occurred_at`. Reading JSON also takes a number for
///   `command_digest` and no `occurred_at_rfc3339` (the JSON of earlier releases); `occurred_at` is
///   the one that counts.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The last millisecond RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const LAST_RFC3339_MS: Timestamp = 253_402_300_799_999;

/// A time as RFC 3339 UTC with milliseconds, e.g. `2026-11-29T08:58:49.123Z`. Times before the
/// Unix epoch show as the epoch, and times after year 9999 (which RFC 3339 cannot write) as its
/// last millisecond; the writer records neither, but a message in the log may hold any time.
pub fn rfc3339(ms: Timestamp) -> String {
    let ms = u64::try_from(ms.clamp(0, LAST_RFC3339_MS)).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The binary form: the fields in their order.
#[derive(Serialize)]
struct WireRef<'a> {
    schema_version: u16,
    event_id: &'a str,
    command_id: &'a str,
    command_digest: u64,
    occurred_at: Timestamp,
    actor: &'a Actor,
    event: &'a Event,
}

#[derive(Deserialize)]
struct Wire {
    schema_version: u16,
    event_id: String,
    command_id: String,
    command_digest: u64,
    occurred_at: Timestamp,
    actor: Actor,
    event: Event,
}

/// An event with its metadata, as stored in the log, in its JSON form.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Envelope")]
struct JsonRef<'a> {
    /// The schema version this envelope was written with. Decoding upcasts older versions, so this is
    /// the version the bytes carried, kept for audit.
    schema_version: u16,
    /// A unique id for the event: a UUID (version 4) for events written by this release; earlier
    /// releases wrote ULIDs. Treat it as an opaque string.
    event_id: &'a str,
    /// The id of the command that produced it (the idempotency key).
    command_id: &'a str,
    /// A digest of the command's body, as a decimal string (an unsigned 64-bit integer), so that a
    /// reused command id with another body is refused even after a replay. "0" when unknown (events
    /// written with schema version 1).
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,19})$"))]
    command_digest: String,
    /// When the writer decided, in milliseconds since the Unix epoch.
    occurred_at: Timestamp,
    /// The same instant as `occurred_at`, as an RFC 3339 UTC time with milliseconds.
    #[schemars(extend("format" = "date-time"))]
    occurred_at_rfc3339: String,
    /// Who issued the command.
    actor: &'a Actor,
    /// What happened.
    event: &'a Event,
}

/// `command_digest` in JSON: a decimal string, or a number (earlier releases).
#[derive(Deserialize)]
#[serde(untagged)]
enum Digest {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
struct JsonOwned {
    schema_version: u16,
    event_id: String,
    command_id: String,
    command_digest: Digest,
    occurred_at: Timestamp,
    #[serde(default, rename = "occurred_at_rfc3339")]
    _occurred_at_rfc3339: Option<String>,
    actor: Actor,
    event: Event,
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            JsonRef {
                schema_version: self.schema_version,
                event_id: &self.event_id,
                command_id: &self.command_id,
                command_digest: self.command_digest.to_string(),
                occurred_at: self.occurred_at,
                occurred_at_rfc3339: rfc3339(self.occurred_at),
                actor: &self.actor,
                event: &self.event,
            }
            .serialize(serializer)
        } else {
            WireRef {
                schema_version: self.schema_version,
                event_id: &self.event_id,
                command_id: &self.command_id,
                command_digest: self.command_digest,
                occurred_at: self.occurred_at,
                actor: &self.actor,
                event: &self.event,
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let j = JsonOwned::deserialize(deserializer)?;
            let command_digest = match j.command_digest {
                Digest::Number(n) => n,
                Digest::Text(s) => s.parse().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "command_digest {s:?} is not an unsigned 64-bit decimal integer"
                    ))
                })?,
            };
            Ok(Envelope {
                schema_version: j.schema_version,
                event_id: j.event_id,
                command_id: j.command_id,
                command_digest,
                occurred_at: j.occurred_at,
                actor: j.actor,
                event: j.event,
            })
        } else {
            let w = Wire::deserialize(deserializer)?;
            Ok(Envelope {
                schema_version: w.schema_version,
                event_id: w.event_id,
                command_id: w.command_id,
                command_digest: w.command_digest,
                occurred_at: w.occurred_at,
                actor: w.actor,
                event: w.event,
            })
        }
    }
}

impl JsonSchema for Envelope {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Envelope".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        JsonRef::json_schema(generator)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::VmId;

    fn sample() -> Envelope {
        Envelope::new(
            "e1".into(),
            "c1".into(),
            u64::MAX - 1,
            1_732_705_565_449,
            Actor::operator("ops"),
            Event::VmDrained {
                vm_id: VmId::parse("vm-1").unwrap(),
            },
        )
    }

    #[test]
    fn the_binary_form_is_the_fields_in_order() {
        let env = sample();
        let fields = (
            env.schema_version,
            &env.event_id,
            &env.command_id,
            env.command_digest,
            env.occurred_at,
            &env.actor,
            &env.event,
        );
        let bytes = postcard::to_stdvec(&env).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&fields).unwrap());
        assert_eq!(postcard::from_bytes::<Envelope>(&bytes).unwrap(), env);
    }

    #[test]
    fn the_json_form_has_a_string_digest_and_an_rfc3339_time() {
        let env = sample();
        let v = serde_json::to_value(&env).unwrap();
        assert_eq!(v["command_digest"], "18446744073709551614");
        assert_eq!(v["occurred_at"], 1_732_705_565_449_i64);
        assert_eq!(v["occurred_at_rfc3339"], "2024-11-27T11:06:05.449Z");
        assert_eq!(serde_json::from_value::<Envelope>(v).unwrap(), env);
    }

    #[test]
    fn json_of_earlier_releases_still_reads() {
        let env = sample();
        let mut v = serde_json::to_value(&env).unwrap();
        v["command_digest"] = serde_json::json!(u64::MAX - 1);
        v.as_object_mut().unwrap().remove("occurred_at_rfc3339");
        assert_eq!(serde_json::from_value::<Envelope>(v.clone()).unwrap(), env);
        v["command_digest"] = serde_json::json!("-1");
        assert!(serde_json::from_value::<Envelope>(v).is_err());
    }

    #[test]
    fn a_time_after_year_9999_has_a_json_form() {
        // Found by the fuzz target envelope_decode: the JSON form of this version 2 envelope, whose
        // occurred_at is after year 9999, panicked (RFC 3339 has four-digit years).
        const CRASH: &[u8] =
            b"\x02\x1a01JDQ8ZK6X1Q8M2N4P{\x00\x00\x000V04)idem-7d2e9b40-0004-\x00\x00\x00\
          \x00\x00\x00\x00\x00e-52b8a1c6d0e7\x84\x80\x80\x8b\xf0Z\x80\xe0\x9b\x92\xec\
          \xe5\xd4\xedd\x01\x14jdoe@ops.example.com\x01\x19s3f9c1a7e52d04b8e9a61c2f0\x11\
          eu-west-1-g5-0042\x00\x0c\x010\x08\x00";
        let env = crate::codec::decode(CRASH).unwrap();
        assert!(env.occurred_at > LAST_RFC3339_MS);
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["occurred_at_rfc3339"], "9999-12-31T23:59:59.999Z");
        assert_eq!(serde_json::from_value::<Envelope>(json).unwrap(), env);
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(LAST_RFC3339_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(i64::MIN), "1970-01-01T00:00:00.000Z");
    }
}
