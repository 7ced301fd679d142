//! What the fuzz targets share: the input format of the command targets and the properties every
//! accepted command must have, from the bytes on the wire down to the event in the log.
//!
//! The targets in `fuzz_targets/` are thin: each reads its input and calls into here. docs/fuzzing.md
//! says what each covers and how to run them.
//!
//! Input of the command targets (and of the seeds in `fuzz/seeds/`): the command's name as on its
//! subject (`start`, `vm_register`, `batch`, ...), a NUL byte, then the request body.

use std::sync::OnceLock;

use orchestrator::domain::command::{AssignVm, RegisterVm, SessionRef, StartSession, VmRef};
use orchestrator::domain::invariants;
use orchestrator::domain::{evolve, handle, Command, CommandMeta, Decision, State};
use orchestrator::writer::protocol::{
    self, batch, encode_request, parse_request, Reply, Request, PROTOCOL_CODES,
};
use orchestrator_events::{codec, Actor, Envelope, Labels, SessionId, Timestamp};

/// The writer's clock for every decision: a fixed time, so a crash reproduces.
pub const NOW: Timestamp = 1_800_000_000_000;

/// Splits an input into the command name before its first NUL byte and the body after it; `None`
/// when it has no NUL or the name is not UTF-8 (the subject a name comes from is text).
pub fn split_named(data: &[u8]) -> Option<(&str, &[u8])> {
    let nul = data.iter().position(|b| *b == 0)?;
    let name = std::str::from_utf8(&data[..nul]).ok()?;
    Some((name, &data[nul + 1..]))
}

/// A request body as the writer reads one sent to `orch.<cell>.cmd.<name>` with (`json`) or
/// without a JSON `Content-Type`, checked against every property below.
pub fn command_request(name: &str, payload: &[u8], json: bool) {
    if !json && protocol::is_json(payload) {
        // The writer refuses it before decoding: a JSON body without the JSON content type.
        return;
    }
    if name == batch::BATCH {
        match batch::parse_batch(payload, json) {
            Ok(items) => {
                for (name, body) in items {
                    one_request(&name, &body, json);
                }
            }
            Err(batch::BatchReply::Rejected { code, .. }) => {
                assert!(PROTOCOL_CODES.contains(&code.as_str()), "batch code {code}")
            }
            Err(other) => panic!("a refused batch answered {other:?}"),
        }
    } else {
        one_request(name, payload, json);
    }
}

/// One command's request: refused with a stable code, or decoded into a request that re-encodes to
/// itself and that the domain decides without breaking an invariant.
pub fn one_request(name: &str, payload: &[u8], json: bool) {
    match parse_request(name, payload, json) {
        Ok(req) => {
            // A request the writer reads as postcard must not look like JSON: the writer would
            // refuse it as a JSON body sent without its content type.
            assert!(
                json || !protocol::is_json(payload),
                "a postcard request that is JSON"
            );
            let bytes = encode_request(&req.command_id, &req.actor, &req.command, json);
            let again = parse_request(name, &bytes, json)
                .unwrap_or_else(|e| panic!("a re-encoded {name} request is refused: {e:?}"));
            assert_eq!(again, req, "a request does not survive re-encoding");
            decide(&req);
        }
        Err(Reply::Rejected {
            code, rejection, ..
        }) => {
            let domain = rejection.is_some_and(|r| r.code() == code);
            assert!(
                PROTOCOL_CODES.contains(&code.as_str()) || domain,
                "refused with code {code}"
            );
        }
        Err(Reply::Accepted { .. }) => panic!("a refusal that is an acceptance"),
    }
}

/// Decides a decoded request against [`state`] the way the writer does. An accepted command's
/// event encodes within the log's limit and decodes to itself, and folding it keeps every
/// invariant.
pub fn decide(req: &Request) {
    let before = state();
    let meta = CommandMeta {
        command_id: req.command_id.clone(),
        actor: req.actor.clone(),
        at: NOW,
    };
    let Ok(Decision::Append(event)) = handle(before, &meta, &req.command) else {
        return;
    };
    if let Err(v) = invariants::check_transition(before, &event) {
        panic!("{event:?} breaks an invariant: {v}");
    }
    let env = Envelope::new(
        "fuzz-event".into(),
        meta.command_id.to_string(),
        req.command.digest(),
        meta.at,
        meta.actor,
        event,
    );
    let bytes = codec::encode(&env);
    assert!(
        bytes.len() <= codec::MAX_EVENT_BYTES,
        "an accepted command's event takes {} bytes",
        bytes.len()
    );
    assert_eq!(codec::decode(&bytes).as_ref(), Ok(&env));
    let mut after = before.clone();
    evolve(&mut after, before.last_seq + 1, &env);
    if let Err(v) = invariants::check(&after) {
        panic!("the state after {:?} breaks an invariant: {v}", env.event);
    }
}

/// The cell every decision is made against, so that commands reach more than "not found", built by
/// deciding commands the way the writer does: VMs `vm-1` (capacity 3, `region=eu`) and `vm-2`
/// (capacity 1, drained); sessions `s-active` and `s-paused` on `vm-1`, and `s-starting`.
pub fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let session = |s: &str| SessionId::parse(s).expect("a valid session id");
        let vm = |s: &str| s.parse().expect("a valid VM id");
        let mut labels = Labels::new();
        labels.insert(
            "region".parse().expect("a valid label key"),
            "eu".parse().expect("a valid label value"),
        );
        let register = |id: &str, capacity, labels| {
            Command::RegisterVm(RegisterVm {
                vm_id: vm(id),
                capacity,
                labels,
                heartbeat_ms: None,
                endpoint: None,
            })
        };
        let start = |id: &str, user: &str| {
            Command::StartSession(StartSession {
                session_id: Some(session(id)),
                user_id: user.parse().expect("a valid user id"),
                game_id: "g1".parse().expect("a valid game id"),
                requirements: Labels::new(),
            })
        };
        let assign = |id: &str| {
            Command::AssignVm(AssignVm {
                session_id: session(id),
                vm_id: Some(vm("vm-1")),
                policy: None,
                wait_ms: None,
            })
        };
        let commands = [
            register("vm-1", 3, labels),
            register("vm-2", 1, Labels::new()),
            Command::DrainVm(VmRef { vm_id: vm("vm-2") }),
            start("s-active", "u1"),
            assign("s-active"),
            start("s-paused", "u2"),
            assign("s-paused"),
            Command::PauseSession(SessionRef {
                session_id: session("s-paused"),
            }),
            start("s-starting", "u3"),
        ];
        let mut state = State::default();
        for (i, command) in commands.into_iter().enumerate() {
            let meta = CommandMeta {
                command_id: format!("setup-{i}").parse().expect("a valid command id"),
                actor: Actor::operator("ops"),
                at: NOW - 1_000,
            };
            let Ok(Decision::Append(event)) = handle(&state, &meta, &command) else {
                panic!("the fuzz state's command {command:?} is refused");
            };
            let env = Envelope::new(
                format!("setup-event-{i}"),
                meta.command_id.to_string(),
                command.digest(),
                meta.at,
                meta.actor,
                event,
            );
            evolve(&mut state, i as u64 + 1, &env);
        }
        state
    })
}
