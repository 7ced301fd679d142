//! Every field has a bound such that any accepted command yields an event within the log's limit:
//! the largest accepted command of each kind, wrapped in its envelope as the writer does, encodes
//! under [`MAX_EVENT_BYTES`]; a longer actor id is refused before anything is decided.

use orchestrator_events::ids::MAX_LABELS;
use orchestrator_events::{codec, Actor, EndReason, Envelope, MAX_EVENT_BYTES};

use super::framework::*;
use crate::domain::command::{StartSession, MAX_ACTOR_ID_BYTES};
use crate::domain::{handle, Command, CommandMeta, Decision, DomainConfig};

fn longest(prefix: &str, len: usize) -> String {
    format!("{prefix}{}", "x".repeat(len - prefix.len()))
}

/// 32 labels, each key and value at its longest.
fn largest_labels(tag: &str) -> Vec<(String, String)> {
    (0..MAX_LABELS)
        .map(|l| {
            (
                format!("{l:02}{}", "k".repeat(61)),
                longest(&format!("{tag}{l:02}"), 128),
            )
        })
        .collect()
}

fn pairs(labels: &[(String, String)]) -> Vec<(&str, &str)> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn the_largest_accepted_command_of_each_kind_fits_the_log() {
    let session = longest("s", 64);
    let vm = longest("v", 64);
    let labels = largest_labels("l");
    let actor = Actor::service(longest("a", MAX_ACTOR_ID_BYTES));
    let mut log = Log::new(DomainConfig::default());
    let start_command = Command::StartSession(StartSession {
        session_id: Some(sid(&session)),
        user_id: uid(&longest("u", 128)),
        game_id: gid(&longest("g", 128)),
        requirements: labels_of(&labels),
    });
    let commands = [
        register(
            &vm,
            DomainConfig::default().max_vm_capacity,
            &pairs(&labels),
        ),
        start_command,
        assign_to(&session, &vm),
        pause(&session),
        resume(&session),
        end(&session, EndReason::Operator),
        drain(&vm),
        retire(&vm),
    ];
    let mut largest = 0;
    for (i, command) in commands.iter().enumerate() {
        let command_id = longest(&format!("c{i}-"), 255);
        let meta = CommandMeta {
            command_id: cid(&command_id),
            actor: actor.clone(),
            at: T0 + i as i64,
        };
        let Ok(Decision::Append(event)) = handle(&log.state, &meta, command) else {
            panic!("{command:?} is accepted");
        };
        let env = Envelope::new(
            uuid::Uuid::new_v4().to_string(),
            command_id.clone(),
            command.digest(),
            meta.at,
            actor.clone(),
            event.clone(),
        );
        let bytes = codec::encode(&env).len();
        assert!(
            bytes <= MAX_EVENT_BYTES,
            "{} encodes to {bytes} bytes",
            command.name()
        );
        largest = largest.max(bytes);
        log.append(&command_id, command.digest(), meta.at, event);
    }
    println!("the largest event of an accepted command: {largest} bytes");
}

#[test]
fn an_actor_id_past_its_bound_is_refused_before_deciding() {
    let log = Log::new(DomainConfig::default());
    for id in [
        longest("a", MAX_ACTOR_ID_BYTES + 1),
        "x".repeat(65_000),
        String::new(),
        "a b".into(),
    ] {
        let meta = CommandMeta {
            command_id: cid("c1"),
            actor: Actor::service(id.clone()),
            at: T0,
        };
        let r = handle(&log.state, &meta, &register("vm-1", 1, &[]));
        let err = r.expect_err("refused");
        assert_eq!(err.code(), "invalid_argument", "{id:?}");
    }
}

fn labels_of(l: &[(String, String)]) -> orchestrator_events::Labels {
    labels(&pairs(l))
}
