//! One feed message: an event of the log as a CloudEvents 1.0 JSON object (structured mode), with
//! the headers and the subject it is published with.
//!
//! The body follows the CloudEvents NATS protocol binding in structured mode
//! (`Content-Type: application/cloudevents+json`): the context attributes and the event's data in
//! one JSON object. Extension attributes have lowercase alphanumeric names, as the specification
//! requires: `sequence` (the log sequence, a string as the CloudEvents sequence extension says),
//! `actor`, `actorkind` and `commandid`. `data` is the JSON serde gives the envelope's [`Event`]
//! (externally tagged: `{"SessionStarted": {...}}`), the same as `tail --json` prints.

use async_nats::header::{HeaderMap, NATS_EXPECTED_LAST_MESSAGE_ID, NATS_MESSAGE_ID};
use orchestrator_events::event::Aggregate;
use orchestrator_events::subject::feed_subject;
use orchestrator_events::{CellId, Envelope, Event};
use serde::{Deserialize, Serialize};

/// The content type of a structured-mode CloudEvent in JSON.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The CloudEvents `source` of a cell's events: the URI-reference `orch/<cell>`.
pub fn source(cell: &CellId) -> String {
    format!("orch/{cell}")
}

/// A feed message's body: a CloudEvents 1.0 event in the JSON format. `D` is its data: the event
/// itself when publishing (encoded in one pass), any JSON value when reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<D = serde_json::Value> {
    /// Always `1.0`.
    pub specversion: String,
    /// The event id (the envelope's `event_id`), unique per event.
    pub id: String,
    /// `orch/<cell>`.
    pub source: String,
    /// The event type, e.g. `SessionStarted`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The session or VM the event is about.
    pub subject: String,
    /// When the writer decided, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The event's sequence in the cell's log, as a decimal string.
    pub sequence: String,
    /// Who issued the command, `<kind>:<id>` (e.g. `user:alice`).
    pub actor: String,
    /// The actor's kind: `user`, `operator`, `service` or `system`.
    pub actorkind: String,
    /// The command's id.
    pub commandid: String,
    /// The event, as JSON.
    pub data: D,
}

/// A feed message ready to publish.
#[derive(Debug, Clone)]
pub struct FeedMessage {
    /// `orch.<cell>.feed.<EventType>.session.<id>` or `…vm.<id>`.
    pub subject: String,
    /// `Content-Type`, `Nats-Msg-Id` (the event id) and, when given, `Nats-Expected-Last-Msg-Id`.
    pub headers: HeaderMap,
    /// The CloudEvent's JSON.
    pub body: Vec<u8>,
}

/// The CloudEvent of the event stored at `seq`.
pub fn cloud_event<'a>(cell: &CellId, seq: u64, envelope: &'a Envelope) -> CloudEvent<&'a Event> {
    let subject = match envelope.event.aggregate() {
        Aggregate::Session(id) => id.to_string(),
        Aggregate::Vm(id) => id.to_string(),
    };
    CloudEvent {
        specversion: "1.0".to_owned(),
        id: envelope.event_id.clone(),
        source: source(cell),
        kind: envelope.event.event_type().as_str().to_owned(),
        subject,
        time: orchestrator_events::rfc3339(envelope.occurred_at),
        datacontenttype: "application/json".to_owned(),
        sequence: seq.to_string(),
        actor: envelope.actor.to_string(),
        actorkind: envelope.actor.kind.as_str().to_owned(),
        commandid: envelope.command_id.clone(),
        data: &envelope.event,
    }
}

/// The message that republishes the event stored at `seq`. `previous` is the event id of the feed
/// message it must follow (`Nats-Expected-Last-Msg-Id`), when the publisher knows it.
pub fn feed_message(
    cell: &CellId,
    seq: u64,
    envelope: &Envelope,
    previous: Option<&str>,
) -> FeedMessage {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", CLOUDEVENTS_JSON);
    headers.insert(NATS_MESSAGE_ID, envelope.event_id.as_str());
    if let Some(previous) = previous {
        headers.insert(NATS_EXPECTED_LAST_MESSAGE_ID, previous);
    }
    // Strings and an event, which is plain data (strings, integers, maps with string keys):
    // serde_json always encodes them.
    let body = serde_json::to_vec(&cloud_event(cell, seq, envelope))
        .expect("a CloudEvent always encodes as JSON");
    FeedMessage {
        subject: feed_subject(cell, &envelope.event),
        headers,
        body,
    }
}

/// The log sequence a feed message's body names, if it is a feed message.
pub fn sequence_of(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Sequence {
        specversion: String,
        sequence: String,
    }
    let s: Sequence = serde_json::from_slice(body).ok()?;
    (s.specversion == "1.0").then_some(())?;
    s.sequence.parse().ok()
}

#[cfg(test)]
mod tests {
    use orchestrator_events::{Actor, EndReason, SessionId, VmId};

    use super::*;

    fn ended() -> Envelope {
        Envelope::new(
            "0b6f7c6e-1111-4222-8333-944455556666".into(),
            "cmd-9".into(),
            7,
            1_700_000_000_123,
            Actor::user("alice"),
            Event::SessionEnded {
                session_id: SessionId::parse("s-1").unwrap(),
                reason: EndReason::User,
                vm_id: Some(VmId::parse("vm-1").unwrap()),
            },
        )
    }

    #[test]
    fn a_structured_cloudevent_with_the_extensions() {
        let cell = CellId::default_cell();
        let msg = feed_message(&cell, 42, &ended(), Some("prev-id"));
        assert_eq!(msg.subject, "orch.default.feed.SessionEnded.session.s-1");
        let header = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header("Content-Type").as_deref(), Some(CLOUDEVENTS_JSON));
        assert_eq!(
            header("Nats-Msg-Id").as_deref(),
            Some("0b6f7c6e-1111-4222-8333-944455556666")
        );
        assert_eq!(
            header("Nats-Expected-Last-Msg-Id").as_deref(),
            Some("prev-id")
        );
        let body: serde_json::Value = serde_json::from_slice(&msg.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "specversion": "1.0",
                "id": "0b6f7c6e-1111-4222-8333-944455556666",
                "source": "orch/default",
                "type": "SessionEnded",
                "subject": "s-1",
                "time": "2023-11-14T22:13:20.123Z",
                "datacontenttype": "application/json",
                "sequence": "42",
                "actor": "user:alice",
                "actorkind": "user",
                "commandid": "cmd-9",
                "data": {"SessionEnded": {"session_id": "s-1", "reason": "user", "vm_id": "vm-1"}},
            })
        );
        assert_eq!(sequence_of(&msg.body), Some(42));
        assert_eq!(sequence_of(b"hello"), None);
        let first = feed_message(&cell, 1, &ended(), None);
        assert!(first.headers.get("Nats-Expected-Last-Msg-Id").is_none());
    }

    #[test]
    fn extension_names_are_lowercase_alphanumeric() {
        let body = serde_json::to_value(cloud_event(&CellId::default_cell(), 1, &ended())).unwrap();
        for name in body.as_object().unwrap().keys() {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{name}"
            );
        }
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(orchestrator_events::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            orchestrator_events::rfc3339(1_700_000_000_005),
            "2023-11-14T22:13:20.005Z"
        );
    }
}
