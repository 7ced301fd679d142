//! `schemas/asyncapi.json` is a valid AsyncAPI 3.0 document (checked against the specification's
//! JSON Schema, vendored under `schemas/vendor/`, no network), every reference in it resolves, its
//! subjects are the ones the code uses, and real messages validate against its payload schemas.
//! (That the file matches the Rust types is `tests/schemas.rs`'s drift check.)

use std::path::Path;

use orchestrator::domain::command::{Command, SessionRef, COMMAND_NAMES};
use orchestrator::writer::protocol::{encode_request, Reply};
use orchestrator_events::subject::{command_subject, event_subject, feed_subject};
use orchestrator_events::{Actor, CellId, Envelope, Event, EventType, SessionId, VmId};
use serde_json::{json, Value};

fn read(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn document() -> Value {
    read("schemas/asyncapi.json")
}

#[test]
fn the_document_is_valid_asyncapi_3() {
    let spec = read("schemas/vendor/asyncapi-3.0.0.schema.json");
    let validator = jsonschema::validator_for(&spec).expect("the AsyncAPI schema compiles");
    let doc = document();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid AsyncAPI 3.0.0:\n{}",
        errors.join("\n")
    );
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 50, "{} references", found.len());
    for r in found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r}: not local"));
        assert!(doc.pointer(pointer).is_some(), "{r} resolves to nothing");
    }
}

fn address(doc: &Value, channel: &str) -> String {
    doc["channels"][channel]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no channel {channel}"))
        .to_owned()
}

#[test]
fn the_subjects_are_the_ones_the_code_uses() {
    let doc = document();
    let cell = CellId::parse("eu-1").unwrap();
    for name in COMMAND_NAMES.into_iter().chain(["batch"]) {
        let a = address(&doc, &format!("command_{name}")).replace("{cell}", "eu-1");
        assert_eq!(a, command_subject(&cell, name));
        assert!(
            doc["operations"][format!("receive_{name}")].is_object(),
            "no operation for {name}"
        );
    }
    let session = Event::SessionPaused {
        session_id: SessionId::parse("s-1").unwrap(),
    };
    let vm = Event::VmDrained {
        vm_id: VmId::parse("vm-1").unwrap(),
    };
    let a = address(&doc, "log_session_events")
        .replace("{cell}", "eu-1")
        .replace("{session_id}", "s-1");
    assert_eq!(a, event_subject(&cell, &session));
    let a = address(&doc, "log_vm_events")
        .replace("{cell}", "eu-1")
        .replace("{vm_id}", "vm-1");
    assert_eq!(a, event_subject(&cell, &vm));
    for (channel, event, id_param, id) in [
        ("feed_session_events", &session, "{session_id}", "s-1"),
        ("feed_vm_events", &vm, "{vm_id}", "vm-1"),
    ] {
        let a = address(&doc, channel)
            .replace("{cell}", "eu-1")
            .replace("{event_type}", event.event_type().as_str())
            .replace(id_param, id);
        assert_eq!(a, feed_subject(&cell, event));
    }
    let types = &doc["components"]["messages"]["LogEvent"]["headers"]["properties"]
        ["Orch-Event-Type"]["enum"];
    for t in EventType::ALL {
        assert!(
            types.as_array().unwrap().contains(&json!(t.as_str())),
            "{t} missing from the event types"
        );
    }
}

/// A validator for one of the document's component schemas, resolving references in the document.
fn validator(doc: &Value, schema: &str) -> jsonschema::Validator {
    let root = json!({
        "$ref": format!("#/components/schemas/{schema}"),
        "components": doc["components"].clone(),
    });
    jsonschema::draft7::new(&root).unwrap_or_else(|e| panic!("{schema}: {e}"))
}

fn assert_valid(doc: &Value, schema: &str, instance: &Value) {
    let v = validator(doc, schema);
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{schema}: {instance}\n{}",
        errors.join("\n")
    );
}

#[test]
fn real_messages_validate_against_their_schemas() {
    let doc = document();
    let envelope = Envelope::new(
        "0f5f2a57-8a3c-4b1e-9a43-6f7c1d2e3b4a".into(),
        "c-1".into(),
        u64::MAX,
        1_732_705_443_443,
        Actor::user("alice"),
        Event::SessionPaused {
            session_id: SessionId::parse("s-1").unwrap(),
        },
    );
    let accepted = Reply::Accepted {
        seq: 7,
        duplicate: false,
        event: Box::new(envelope.clone()),
    };
    let messages = &doc["components"]["messages"];
    let reply_schema = messages["CommandReply"]["payload"]["$ref"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_valid(
        &doc,
        reply_schema,
        &serde_json::to_value(&accepted).unwrap(),
    );
    let rejected = Reply::error("malformed_request", "not a pause request");
    assert_valid(
        &doc,
        reply_schema,
        &serde_json::to_value(&rejected).unwrap(),
    );

    let pause = Command::PauseSession(SessionRef {
        session_id: SessionId::parse("s-1").unwrap(),
    });
    let body = encode_request(&"c-1".parse().unwrap(), &Actor::user("alice"), &pause, true);
    let request_schema = messages["Command_pause"]["payload"]["$ref"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    assert_valid(&doc, request_schema, &request);
    // The schema refuses an unknown field, as the writer does.
    let mut extra = request.clone();
    extra["command"]["colour"] = json!("red");
    assert!(!validator(&doc, request_schema).is_valid(&extra));

    let cloudevent = serde_json::to_value(orchestrator::feed::message::cloud_event(
        &CellId::default_cell(),
        7,
        &envelope,
    ))
    .unwrap();
    assert_valid(&doc, "CloudEvent", &cloudevent);
}
