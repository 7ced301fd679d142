//! docs/events.md gives the postcard variant index of every enum of the log, so that a reader in
//! another language never has to guess. This test reads those tables back and checks each index
//! against the bytes the code writes.

use std::collections::BTreeMap;
use std::path::Path;

use orchestrator_events::{ActorKind, EndReason, Event, PlacementPolicy, PlacementReason};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

fn docs() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.md");
    std::fs::read_to_string(path).unwrap()
}

/// The `index name` pairs of the row of `enum_name` in the table of variant indices.
fn documented(enum_name: &str) -> Vec<(u8, String)> {
    let docs = docs();
    let prefix = format!("| `{enum_name}` | ");
    let row = docs
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("docs/events.md has no variant row for {enum_name}"));
    let cells = row[prefix.len()..].trim_end_matches(" |");
    // Variants are separated by ", <digit>": split on a comma followed by an index.
    let mut out = Vec::new();
    let words: Vec<&str> = cells.split(' ').collect();
    for pair in words.windows(2) {
        let (n, name) = (pair[0], pair[1]);
        if let Ok(index) = n.parse::<u8>() {
            if name.starts_with('`') {
                out.push((
                    index,
                    name.trim_matches(|c| c == '`' || c == ',').to_owned(),
                ));
            }
        }
    }
    assert!(!out.is_empty(), "no variants read from {row}");
    out
}

/// The variant index postcard writes for `value` (every index here fits one byte).
fn index_of<T: Serialize>(value: &T) -> u8 {
    postcard::to_stdvec(value).unwrap()[0]
}

fn check_simple<T: Serialize + DeserializeOwned>(enum_name: &str, count: usize) {
    let rows = documented(enum_name);
    assert_eq!(rows.len(), count, "{enum_name}: {rows:?}");
    for (index, name) in rows {
        let value: T = serde_json::from_value(json!(name))
            .or_else(|_| serde_json::from_value(json!({ name.clone(): {"tied": 0} })))
            .unwrap_or_else(|e| panic!("{enum_name}: {name} is no variant ({e})"));
        assert_eq!(index_of(&value), index, "{enum_name}::{name}");
    }
}

#[test]
fn the_documented_variant_indices_are_the_ones_written() {
    check_simple::<ActorKind>("ActorKind", 4);
    check_simple::<EndReason>("EndReason", 7);
    check_simple::<PlacementPolicy>("PlacementPolicy", 3);
    check_simple::<PlacementReason>("PlacementReason", 3);

    // Events: each type's index from the golden fixtures of the current version.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/fixtures");
    let mut written: BTreeMap<String, u8> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".v3.bin") {
            continue;
        }
        let env = orchestrator_events::decode(&std::fs::read(&path).unwrap()).unwrap();
        let value: Value = serde_json::to_value(&env.event).unwrap();
        let type_name = value.as_object().unwrap().keys().next().unwrap().clone();
        written.insert(type_name, index_of::<Event>(&env.event));
    }
    let rows = documented("Event");
    assert_eq!(
        rows.len(),
        written.len(),
        "documented {rows:?}, written {written:?}"
    );
    for (index, name) in rows {
        assert_eq!(written.get(&name), Some(&index), "Event::{name}");
    }
}
