//! The JSON Schemas in `schemas/` match the Rust types they are generated from.
//!
//! When a type changes on purpose, run `UPDATE_SCHEMAS=1 cargo test --test schemas` to rewrite the
//! files, and review the diff: it is a change of the wire contract.

use std::fs;
use std::path::{Path, PathBuf};

use orchestrator::domain::command::COMMAND_NAMES;
use orchestrator::domain::rejection::REJECTION_CODES;
use orchestrator::schemas::{self, FILES};
use orchestrator_events::EventType;
use serde_json::Value;

fn path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file)
}

#[test]
fn schema_files_match_the_types() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for (file, generate) in FILES {
        let generated = generate();
        let p = path(file);
        if update {
            let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
            fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            continue;
        }
        let on_disk: Option<Value> = fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if on_disk.as_ref() != Some(&generated) {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "{drifted:?} differ from the Rust types (or are missing). If the change is intended, run \
         `UPDATE_SCHEMAS=1 cargo test --test schemas` and review the diff: it changes the wire \
         contract."
    );
}

#[test]
fn the_event_schema_names_every_event_type() {
    let text = serde_json::to_string(&schemas::events_schema()).unwrap();
    for t in EventType::ALL {
        assert!(text.contains(&format!("\"{t}\"")), "{t} missing");
    }
}

#[test]
fn the_command_schema_has_every_command_name() {
    let schema = schemas::commands_schema();
    for name in COMMAND_NAMES {
        let def = &schema["$defs"][name];
        let required = def["required"].as_array().expect("an object schema");
        for field in ["command_id", "actor", "command"] {
            assert!(required.contains(&Value::from(field)), "{name}: {field}");
        }
        assert!(
            schema["anyOf"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({ "$ref": format!("#/$defs/{name}") })),
            "{name} not in anyOf"
        );
    }
}

#[test]
fn the_rejection_schema_has_every_code() {
    let text = serde_json::to_string(&schemas::rejection_schema()).unwrap();
    for code in REJECTION_CODES {
        assert!(text.contains(&format!("\"{code}\"")), "{code} missing");
    }
}
