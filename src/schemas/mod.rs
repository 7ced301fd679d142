//! JSON Schemas of the wire contract, generated from the Rust types so they cannot drift from them:
//! the envelope and its events (`schemas/events.schema.json`), the JSON command requests sent on
//! `orch.<cell>.cmd.<name>` (`schemas/commands.schema.json`) and the rejections
//! (`schemas/rejection.schema.json`). The test `tests/schemas.rs` compares the files with these
//! functions; `UPDATE_SCHEMAS=1 cargo test --test schemas` rewrites them. The AsyncAPI document of
//! the NATS interface ([`asyncapi`], `schemas/asyncapi.json`) is generated the same way.

use orchestrator_events::Envelope;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::domain::command::{
    AssignVm, CommandRequest, EndSession, RegisterVm, SessionRef, StartSession, VmRef,
    COMMAND_NAMES,
};
use crate::domain::Rejection;

mod asyncapi;

pub use asyncapi::asyncapi;

/// A function generating one schema.
pub type Generator = fn() -> Value;

/// The schema files under `schemas/`, with the function generating each.
pub const FILES: [(&str, Generator); 4] = [
    ("events.schema.json", events_schema),
    ("commands.schema.json", commands_schema),
    ("rejection.schema.json", rejection_schema),
    ("asyncapi.json", asyncapi),
];

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12()
}

fn root<T: JsonSchema>(id: &str, description: &str) -> Value {
    let mut schema = settings()
        .into_generator()
        .root_schema_for::<T>()
        .to_value();
    if let Value::Object(o) = &mut schema {
        o.insert("$id".into(), json!(id));
        o.insert("description".into(), json!(description));
    }
    schema
}

/// The schema of an event envelope as the JSON API shows it (`tail --json`, the SSE feed, fixtures).
pub fn events_schema() -> Value {
    root::<Envelope>(
        "https://orchestrator.example/schemas/events.schema.json",
        "An event of the session orchestrator's log with its envelope, as JSON. The log itself stores \
         the postcard encoding of the same envelope; the `Orch-Event-Type` header repeats the event's \
         type and the subject is `orch.<cell>.evt.session.<session_id>` or `orch.<cell>.evt.vm.<vm_id>`.",
    )
}

/// The schema of a rejection, as in a command's reply.
pub fn rejection_schema() -> Value {
    root::<Rejection>(
        "https://orchestrator.example/schemas/rejection.schema.json",
        "Why a command was refused. The variant's name is the stable code (`vm_full`, \
         `user_quota_exceeded`...); its fields give the details.",
    )
}

/// The schema of each command's request, in the order of [`COMMAND_NAMES`] (references into the
/// generator's definitions).
fn command_requests(generator: &mut schemars::SchemaGenerator) -> [schemars::Schema; 8] {
    [
        generator.subschema_for::<CommandRequest<StartSession>>(),
        generator.subschema_for::<CommandRequest<AssignVm>>(),
        generator.subschema_for::<CommandRequest<SessionRef>>(),
        generator.subschema_for::<CommandRequest<SessionRef>>(),
        generator.subschema_for::<CommandRequest<EndSession>>(),
        generator.subschema_for::<CommandRequest<RegisterVm>>(),
        generator.subschema_for::<CommandRequest<VmRef>>(),
        generator.subschema_for::<CommandRequest<VmRef>>(),
    ]
}

/// The schema of the JSON command requests: `$defs/<name>` for each command name of
/// `orch.<cell>.cmd.<name>`, and the root accepts any of them.
///
/// The root is an `anyOf`, not a `oneOf`: `pause` and `resume` (and `vm_drain` and `vm_retire`) have
/// the same body, the subject tells them apart. Validate a body against `#/$defs/<name>`.
pub fn commands_schema() -> Value {
    let mut generator = settings().into_generator();
    let refs = command_requests(&mut generator);
    let mut defs = generator.take_definitions(true);
    let mut requests = Map::new();
    let mut any_of = Vec::new();
    for (name, reference) in COMMAND_NAMES.into_iter().zip(refs) {
        // `reference` is `{"$ref": "#/$defs/<type name>"}`; the request types are named after
        // their body, which several commands share, so each name gets its own copy, described.
        let target = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .map(str::to_owned);
        let mut schema = match &target {
            Some(t) => defs.get(t).cloned().unwrap_or(Value::Null),
            None => reference.to_value(),
        };
        if let Value::Object(o) = &mut schema {
            o.insert("title".into(), json!(name));
            o.insert(
                "description".into(),
                json!(format!(
                    "The JSON body of a request on `orch.<cell>.cmd.{name}`."
                )),
            );
        }
        requests.insert(name.to_owned(), schema);
        any_of.push(json!({ "$ref": format!("#/$defs/{name}") }));
    }
    // The request wrappers now live under the command names.
    defs.retain(|k, _| !k.starts_with("CommandRequest"));
    for (name, schema) in requests {
        defs.insert(name, schema);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://orchestrator.example/schemas/commands.schema.json",
        "title": "CommandRequest",
        "description": "A command sent as JSON (`Content-Type: application/json`) on \
            `orch.<cell>.cmd.<name>`: `$defs/<name>` is the body for each name (start, assign, pause, \
            resume, end, vm_register, vm_drain, vm_retire). The subject names the command, so the \
            root accepts any of them.",
        "anyOf": any_of,
        "$defs": defs,
    })
}
