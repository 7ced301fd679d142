//! The AsyncAPI 3.0 document of the NATS interface (`schemas/asyncapi.json`): the command subjects
//! with their requests and replies, the postcard log's event subjects, the JSON feed's CloudEvents
//! subjects and the heartbeat subject, with the JSON Schemas generated from the Rust types, so that
//! other languages can generate clients from it. It describes the orchestrator: it *receives*
//! commands (and answers each on the request's reply inbox) and heartbeats, and *sends* events.
//!
//! Generated like the other schema files; `tests/asyncapi.rs` validates it against the AsyncAPI
//! 3.0.0 JSON Schema (vendored, no network) and checks its subjects against the code's.

use orchestrator_events::{Envelope, EventType};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::domain::command::COMMAND_NAMES;
use crate::writer::protocol::batch::{BatchReply, BatchRequest};
use crate::writer::protocol::{Reply, PROTOCOL_CODES};

/// Where the generated schemas live in the document.
const COMPONENTS: &str = "/components/schemas";

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#{COMPONENTS}/{name}") })
}

fn parameter(description: &str) -> Value {
    json!({ "description": description })
}

/// The name of the generated schema that a `$ref` points to.
fn ref_name(schema: &schemars::Schema) -> String {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
        .expect("a named type is referenced")
        .to_owned()
}

/// The CloudEvents 1.0 structured-mode message the JSON feed publishes.
fn cloudevent_schema() -> Value {
    let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    json!({
        "type": "object",
        "description": "A CloudEvents 1.0 event in structured mode (the CloudEvents NATS protocol \
            binding): one log event as JSON.",
        "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype",
                     "sequence", "actor", "actorkind", "commandid", "data"],
        "properties": {
            "specversion": { "const": "1.0" },
            "id": { "type": "string", "description": "The event id (the envelope's `event_id`)." },
            "source": { "type": "string", "description": "The cell: `orch/<cell>`." },
            "type": { "type": "string", "enum": types, "description": "The event type." },
            "subject": { "type": "string", "description": "The session or VM id the event is about." },
            "time": { "type": "string", "format": "date-time",
                      "description": "When the writer decided (`occurred_at`), RFC 3339 UTC." },
            "datacontenttype": { "const": "application/json" },
            "sequence": { "type": "string", "pattern": "^[1-9][0-9]*$",
                          "description": "The event's sequence in the postcard log (CloudEvents \
                              sequence extension: a string)." },
            "actor": { "type": "string", "description": "Who issued the command: `<kind>:<id>`." },
            "actorkind": { "type": "string", "enum": ["user", "operator", "service", "system"] },
            "commandid": { "type": "string", "description": "The command id that produced it." },
            "data": { "$ref": format!("#{COMPONENTS}/Event"),
                      "description": "The event, as `{\"<EventType>\": {fields}}`." }
        }
    })
}

fn headers(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

/// The AsyncAPI 3.0 document.
pub fn asyncapi() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = COMPONENTS.into();
    let mut generator = settings.into_generator();
    let requests = super::command_requests(&mut generator);
    let reply = ref_name(&generator.subschema_for::<Reply>());
    let batch_request = ref_name(&generator.subschema_for::<BatchRequest>());
    let batch_reply = ref_name(&generator.subschema_for::<BatchReply>());
    let envelope = ref_name(&generator.subschema_for::<Envelope>());
    let mut schemas = generator.take_definitions(true);
    schemas.insert("CloudEvent".into(), cloudevent_schema());

    let json_headers = headers(
        json!({ "Content-Type": { "const": "application/json" } }),
        &["Content-Type"],
    );
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();

    // Replies go to the request's reply inbox, whose address the requester chooses.
    channels.insert(
        "command_reply".into(),
        json!({
            "address": null,
            "description": "The reply inbox of a command request (NATS request-reply): one reply \
                per request, in the request's encoding.",
            "messages": {
                "reply": { "$ref": "#/components/messages/CommandReply" },
                "batch_reply": { "$ref": "#/components/messages/BatchReply" }
            }
        }),
    );
    messages.insert(
        "CommandReply".into(),
        json!({
            "name": "CommandReply",
            "title": "A command's reply",
            "summary": "`accepted` with the event and its sequence, or `rejected` with a stable code.",
            "description": format!(
                "JSON (with `Content-Type: application/json`) when the request was JSON or its body \
                 is JSON; postcard otherwise. `rejected.rejection` is the domain rejection's details, \
                 or null for the protocol codes: {}.",
                PROTOCOL_CODES.join(", ")
            ),
            "contentType": "application/json",
            "payload": schema_ref(&reply),
        }),
    );
    messages.insert(
        "BatchReply".into(),
        json!({
            "name": "BatchReply",
            "title": "A batch request's reply",
            "summary": "Each command's reply in the order of the request, or one rejection of the \
                whole batch.",
            "contentType": "application/json",
            "payload": schema_ref(&batch_reply),
        }),
    );

    for (name, reference) in COMMAND_NAMES.into_iter().zip(requests) {
        let channel = format!("command_{name}");
        let message = format!("Command_{name}");
        channels.insert(
            channel.clone(),
            json!({
                "address": format!("orch.{{cell}}.cmd.{name}"),
                "title": format!("The `{name}` command"),
                "parameters": { "cell": parameter("The cell, e.g. `default`.") },
                "messages": { "request": { "$ref": format!("#/components/messages/{message}") } }
            }),
        );
        messages.insert(
            message.clone(),
            json!({
                "name": message,
                "title": format!("A `{name}` request"),
                "summary": "A command id (the idempotency key), the actor and the command's body.",
                "description": "JSON with `Content-Type: application/json`, or postcard with no \
                    Content-Type (the same fields in order, docs/events.md). A JSON body with an \
                    unknown field is refused with `malformed_request`.",
                "contentType": "application/json",
                "headers": json_headers,
                "payload": schema_ref(&ref_name(&reference)),
            }),
        );
        operations.insert(
            format!("receive_{name}"),
            json!({
                "action": "receive",
                "title": format!("Decide a `{name}` command"),
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": [{ "$ref": format!("#/channels/{channel}/messages/request") }],
                "reply": {
                    "channel": { "$ref": "#/channels/command_reply" },
                    "messages": [{ "$ref": "#/channels/command_reply/messages/reply" }]
                }
            }),
        );
    }
    channels.insert(
        "command_batch".into(),
        json!({
            "address": "orch.{cell}.cmd.batch",
            "title": "Many commands in one request",
            "parameters": { "cell": parameter("The cell, e.g. `default`.") },
            "messages": { "request": { "$ref": "#/components/messages/BatchRequest" } }
        }),
    );
    messages.insert(
        "BatchRequest".into(),
        json!({
            "name": "BatchRequest",
            "title": "A batch command request",
            "summary": "Up to 1,000 commands (1 MiB), each decided as if sent alone, in order.",
            "description": "Each item's `request` is the body its command's own subject takes. In \
                postcard: a list of (name, body) pairs, each body the postcard request.",
            "contentType": "application/json",
            "headers": json_headers,
            "payload": schema_ref(&batch_request),
        }),
    );
    operations.insert(
        "receive_batch".into(),
        json!({
            "action": "receive",
            "title": "Decide a batch of commands",
            "channel": { "$ref": "#/channels/command_batch" },
            "messages": [{ "$ref": "#/channels/command_batch/messages/request" }],
            "reply": {
                "channel": { "$ref": "#/channels/command_reply" },
                "messages": [{ "$ref": "#/channels/command_reply/messages/batch_reply" }]
            }
        }),
    );

    // The postcard log.
    let log_headers = headers(
        json!({
            "Orch-Event-Type": { "type": "string", "enum": EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>() },
            "Orch-Schema-Version": { "type": "string", "pattern": "^[0-9]+$" },
            "Nats-Msg-Id": { "type": "string", "description": "The event id; absent in an atomic batch." },
            "Nats-Expected-Last-Sequence": { "type": "string", "pattern": "^[0-9]+$",
                "description": "The sequence before this one; in an atomic batch only on its first event." },
            "Nats-Expected-Last-Msg-Id": { "type": "string" },
            "Nats-Batch-Id": { "type": "string" },
            "Nats-Batch-Sequence": { "type": "string", "pattern": "^[1-9][0-9]*$" },
            "Nats-Batch-Commit": { "const": "1" }
        }),
        &["Orch-Event-Type", "Orch-Schema-Version"],
    );
    messages.insert(
        "LogEvent".into(),
        json!({
            "name": "LogEvent",
            "title": "An event of the log (postcard)",
            "summary": "The source of truth: the event's envelope in postcard, behind its schema version.",
            "description": "The payload is the schema version as a varint, then the postcard \
                encoding of the envelope's fields in order (docs/events.md, \"The binary encoding, \
                byte by byte\"); the schema gives the same fields in their JSON form (where \
                `command_digest` is a u64 in postcard and a decimal string in JSON, and \
                `occurred_at_rfc3339` exists in JSON only). A message whose \
                `Nats-Expected-Last-Sequence` does not name the sequence before it was not appended \
                by a writer: skip it.",
            "contentType": "application/x-postcard",
            "headers": log_headers,
            "payload": schema_ref(&envelope),
        }),
    );
    for (aggregate, id) in [("session", "session_id"), ("vm", "vm_id")] {
        let channel = format!("log_{aggregate}_events");
        channels.insert(
            channel.clone(),
            json!({
                "address": format!("orch.{{cell}}.evt.{aggregate}.{{{id}}}"),
                "title": format!("A {aggregate}'s events in the postcard log"),
                "description": "Stored in the JetStream stream `ORCH_<CELL>` (subjects \
                    `orch.<cell>.evt.>`); read it with a JetStream consumer.",
                "parameters": {
                    "cell": parameter("The cell, e.g. `default`."),
                    id: parameter(&format!("The {aggregate}'s id: 1 to 64 of A-Z a-z 0-9 _ -."))
                },
                "messages": { "event": { "$ref": "#/components/messages/LogEvent" } }
            }),
        );
        operations.insert(
            format!("send_log_{aggregate}_event"),
            json!({
                "action": "send",
                "title": format!("Append a {aggregate}'s event to the log"),
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": [{ "$ref": format!("#/channels/{channel}/messages/event") }]
            }),
        );
    }

    // The JSON feed.
    messages.insert(
        "FeedEvent".into(),
        json!({
            "name": "FeedEvent",
            "title": "An event of the JSON feed (CloudEvents)",
            "summary": "Every event of the log, in order, exactly once, as a CloudEvents 1.0 JSON message.",
            "contentType": "application/cloudevents+json",
            "headers": headers(
                json!({
                    "Content-Type": { "const": "application/cloudevents+json" },
                    "Nats-Msg-Id": { "type": "string", "description": "The event id." },
                    "Nats-Expected-Last-Msg-Id": { "type": "string",
                        "description": "The event id of the feed message before it (a server \
                            check; absent on the first message of each publish batch): consumers \
                            ignore it." }
                }),
                &["Content-Type", "Nats-Msg-Id"],
            ),
            "payload": schema_ref("CloudEvent"),
        }),
    );
    let event_types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    for (aggregate, id) in [("session", "session_id"), ("vm", "vm_id")] {
        let channel = format!("feed_{aggregate}_events");
        channels.insert(
            channel.clone(),
            json!({
                "address": format!("orch.{{cell}}.feed.{{event_type}}.{aggregate}.{{{id}}}"),
                "title": format!("A {aggregate}'s events in the JSON feed"),
                "description": "Stored in the JetStream stream `ORCH_<CELL>_FEED` (subjects \
                    `orch.<cell>.feed.>`, its own retention). Filter one session with \
                    `orch.<cell>.feed.*.session.<id>`, one type with `orch.<cell>.feed.<Type>.>`.",
                "parameters": {
                    "cell": parameter("The cell, e.g. `default`."),
                    "event_type": { "enum": event_types, "description": "The event type." },
                    id: parameter(&format!("The {aggregate}'s id."))
                },
                "messages": { "event": { "$ref": "#/components/messages/FeedEvent" } }
            }),
        );
        operations.insert(
            format!("send_feed_{aggregate}_event"),
            json!({
                "action": "send",
                "title": format!("Republish a {aggregate}'s event as JSON"),
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": [{ "$ref": format!("#/channels/{channel}/messages/event") }]
            }),
        );
    }

    // Heartbeats.
    channels.insert(
        "heartbeat".into(),
        json!({
            "address": "orch.{cell}.heartbeat.{vm_id}",
            "title": "A VM's heartbeats",
            "description": "Core NATS, not stored. A VM registered with `heartbeat_ms` publishes at \
                that interval; after `--heartbeat-misses` missed intervals it is lost.",
            "parameters": {
                "cell": parameter("The cell, e.g. `default`."),
                "vm_id": parameter("The VM's id.")
            },
            "messages": { "heartbeat": { "$ref": "#/components/messages/Heartbeat" } }
        }),
    );
    messages.insert(
        "Heartbeat".into(),
        json!({
            "name": "Heartbeat",
            "title": "A heartbeat",
            "summary": "Any payload; `orchestrator agent` sends the time as text.",
            "contentType": "text/plain",
            "payload": { "type": "string" }
        }),
    );
    operations.insert(
        "receive_heartbeat".into(),
        json!({
            "action": "receive",
            "title": "Hear a VM's heartbeat",
            "channel": { "$ref": "#/channels/heartbeat" },
            "messages": [{ "$ref": "#/channels/heartbeat/messages/heartbeat" }]
        }),
    );

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Session orchestrator",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The NATS interface of the event-sourced session orchestrator: commands \
                (request-reply), the postcard event log (the source of truth), the JSON event feed \
                (CloudEvents) and VM heartbeats. docs/events.md is the prose contract."
        },
        "servers": {
            "local": {
                "host": "127.0.0.1:4333",
                "protocol": "nats",
                "description": "The embedded nats-server of `scripts/serve`."
            }
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": { "schemas": schemas, "messages": messages }
    })
}
