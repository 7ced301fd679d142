//! The seed corpus of the fuzz targets (`fuzz/seeds/`, see docs/fuzzing.md), generated from the
//! golden fixtures: each version 3 event in `schemas/fixtures/` becomes the command that caused it,
//! as a postcard and a JSON request to the writer and as the HTTP body of its route. Every seed is
//! checked to be accepted, so that fuzzing starts from inputs that reach past the decoders.
//!
//! The committed seeds must equal what this generates: after changing a command or a fixture, run
//! `UPDATE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds` and commit `fuzz/seeds/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orchestrator::domain::command::{
    AssignVm, EndSession, RegisterVm, SessionRef, StartSession, VmRef,
};
use orchestrator::domain::Command;
use orchestrator::writer::protocol::batch::encode_batch;
use orchestrator::writer::protocol::{encode_request, parse_request};
use orchestrator_events::{ActorKind, CommandId, Envelope, Event, PlacementPolicy};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The version 3 fixtures, by name (`SessionEnded.operator`).
fn fixtures() -> BTreeMap<String, Envelope> {
    let dir = root().join("schemas/fixtures");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("the fixtures directory") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".v3.json") else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("a readable fixture");
        let env: Envelope = serde_json::from_str(&text).expect("a fixture decodes");
        out.insert(stem.to_owned(), env);
    }
    out
}

/// The command that caused an event, as its actor sent it; `None` for the orchestrator's own.
fn command_of(env: &Envelope) -> Option<Command> {
    if env.actor.kind == ActorKind::System {
        return None;
    }
    Some(match env.event.clone() {
        Event::SessionStarted {
            session_id,
            user_id,
            game_id,
            requirements,
        } => Command::StartSession(StartSession {
            session_id: Some(session_id),
            user_id,
            game_id,
            requirements,
        }),
        Event::SessionAssigned {
            session_id,
            vm_id,
            placement,
        } => {
            let explicit = placement.policy == PlacementPolicy::Explicit;
            Command::AssignVm(AssignVm {
                session_id,
                vm_id: explicit.then_some(vm_id),
                policy: (!explicit).then_some(placement.policy),
                wait_ms: None,
            })
        }
        Event::SessionQueued {
            session_id,
            policy,
            deadline,
        } => Command::AssignVm(AssignVm {
            session_id,
            vm_id: None,
            policy: Some(policy),
            wait_ms: u64::try_from(deadline - env.occurred_at).ok(),
        }),
        Event::SessionPaused { session_id } => Command::PauseSession(SessionRef { session_id }),
        Event::SessionResumed { session_id } => Command::ResumeSession(SessionRef { session_id }),
        Event::SessionEnded {
            session_id, reason, ..
        } => Command::EndSession(EndSession { session_id, reason }),
        Event::VmRegistered {
            vm_id,
            capacity,
            labels,
            heartbeat_ms,
            endpoint,
        } => Command::RegisterVm(RegisterVm {
            vm_id,
            capacity,
            labels,
            heartbeat_ms,
            endpoint,
        }),
        Event::VmDrained { vm_id } => Command::DrainVm(VmRef { vm_id }),
        Event::VmRetired { vm_id } => Command::RetireVm(VmRef { vm_id }),
        Event::VmLost { .. } => return None,
    })
}

/// A command's HTTP route (named like the command), the role that sends it and its JSON body.
fn http_body(command: &Command) -> (&'static str, serde_json::Value) {
    match command {
        Command::StartSession(c) => (
            "operator",
            json!({
                "user_id": c.user_id,
                "game_id": c.game_id,
                "session_id": c.session_id,
                "requirements": c.requirements,
            }),
        ),
        Command::AssignVm(c) => (
            "service",
            json!({"vm_id": c.vm_id, "policy": c.policy, "wait_ms": c.wait_ms}),
        ),
        Command::EndSession(c) => ("operator", json!({ "reason": c.reason })),
        Command::RegisterVm(c) => (
            "operator",
            json!({
                "vm_id": c.vm_id,
                "capacity": c.capacity,
                "labels": c.labels,
                "heartbeat_ms": c.heartbeat_ms,
                "endpoint": c.endpoint,
            }),
        ),
        _ => ("operator", json!({})),
    }
}

/// Joins the parts of an input with NUL bytes (see the targets' input formats).
fn named(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

/// Every seed, by target and file name.
fn seeds() -> BTreeMap<(&'static str, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut batch: [Vec<(&str, Vec<u8>)>; 2] = Default::default();
    for (stem, env) in fixtures() {
        let Some(command) = command_of(&env) else {
            continue;
        };
        let name = command.name();
        let id = CommandId::parse(env.command_id.clone()).expect("a fixture's command id");
        for (json, target) in [(false, "command_postcard"), (true, "command_json")] {
            let body = encode_request(&id, &env.actor, &command, json);
            let req = parse_request(name, &body, json).expect("a seed is accepted");
            assert_eq!(req.command, command, "{stem}");
            // A body from before the optional fields at its end were added (postcard only).
            let legacy = match &command {
                Command::AssignVm(c) if c.wait_ms.is_none() => 1,
                Command::RegisterVm(c) if c.heartbeat_ms.is_none() && c.endpoint.is_none() => 2,
                _ => 0,
            };
            if !json && legacy > 0 {
                let old = &body[..body.len() - legacy];
                let req = parse_request(name, old, false).expect("a legacy seed is accepted");
                assert_eq!(req.command, command, "{stem} (legacy)");
                out.insert(
                    (target, format!("{stem}.legacy")),
                    named(&[name.as_bytes(), old]),
                );
            }
            out.insert((target, stem.clone()), named(&[name.as_bytes(), &body]));
            batch[usize::from(json)].push((name, body));
        }
        let (role, body) = http_body(&command);
        let body = serde_json::to_vec_pretty(&body).expect("JSON encodes");
        out.insert(
            ("http_bodies", stem.clone()),
            named(&[name.as_bytes(), role.as_bytes(), b"application/json", &body]),
        );
    }
    for (json, target) in [(false, "command_postcard"), (true, "command_json")] {
        let body = encode_batch(&batch[usize::from(json)], json);
        out.insert((target, "batch".into()), named(&[b"batch", &body]));
    }
    for (route, role) in [("pause", "player"), ("end", "player"), ("start", "player")] {
        let body: &[u8] = if route == "start" {
            br#"{"game_id": "g1", "assign": {"policy": "spread", "wait_ms": 30000}}"#
        } else {
            b""
        };
        out.insert(
            ("http_bodies", format!("{route}.{role}")),
            named(&[route.as_bytes(), role.as_bytes(), b"", body]),
        );
    }
    out
}

fn read_dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("a directory entry").path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("a readable seed"))
        })
        .collect()
}

#[test]
fn the_committed_seeds_are_the_generated_ones() {
    let seeds = seeds();
    let dir = root().join("fuzz/seeds");
    let update = std::env::var_os("UPDATE_FUZZ_SEEDS").is_some();
    let targets = ["command_postcard", "command_json", "http_bodies"];
    for target in targets {
        let want: BTreeMap<String, Vec<u8>> = seeds
            .iter()
            .filter(|((t, _), _)| *t == target)
            .map(|((_, name), bytes)| (name.clone(), bytes.clone()))
            .collect();
        assert!(want.len() > 10, "{target}: only {} seeds", want.len());
        let target_dir = dir.join(target);
        if update {
            let _ = std::fs::remove_dir_all(&target_dir);
            std::fs::create_dir_all(&target_dir).expect("the seeds directory");
            for (name, bytes) in &want {
                std::fs::write(target_dir.join(name), bytes).expect("a seed written");
            }
        }
        assert!(
            read_dir_files(&target_dir) == want,
            "fuzz/seeds/{target} is not what the fixtures give: run `UPDATE_FUZZ_SEEDS=1 cargo \
             test --test fuzz_seeds` and commit fuzz/seeds/"
        );
    }
}
