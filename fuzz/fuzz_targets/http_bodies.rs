//! The HTTP bridge's command bodies: everything that decides 415, 400, 403 or 422 before a command
//! is sent, for every command route (`http::extract::json_body`, then the route's own checks:
//! `sessions::start_request`, `Assignment::from_body`, `end_reason`, `vms::register_request`).
//!
//! Input: the route (named like its command: `start`, `assign`, `end`, `pause`, `resume`,
//! `vm_register`, `vm_drain`, `vm_retire`), NUL, the caller's role (`player`, `operator`,
//! `service`), NUL, the `Content-Type` (empty: none), NUL, the body.
//!
//! Properties: a refusal is one of those statuses, never a 500; an accepted body's JSON form reads
//! back to the same body; the command it becomes is one the writer reads back to itself in both
//! encodings, and the domain decides it without breaking an invariant.

#![no_main]

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use orchestrator::domain::command::{derive_session_id, EndSession, SessionRef, VmRef};
use orchestrator::domain::Command;
use orchestrator::http::extract::{is_json_content_type, json_body};
use orchestrator::http::sessions::{end_reason, start_request, Assignment};
use orchestrator::http::types::{AssignBody, EmptyBody, EndBody, RegisterVmBody, StartSessionBody};
use orchestrator::http::vms::register_request;
use orchestrator::http::{ApiError, Principal, Role};
use orchestrator::writer::protocol::{encode_request, parse_request};
use orchestrator_events::{CommandId, SessionId};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads a body of type `T` as the route's extractor does, checking that an accepted one's JSON
/// form reads back to itself.
fn body<T>(json: bool, bytes: &[u8], optional: bool) -> Result<Option<T>, ApiError>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let read = json_body::<T>(json, bytes, optional)?;
    if let Some(value) = &read {
        let again = serde_json::to_vec(value).expect("a body has a JSON form");
        let back = json_body::<T>(true, &again, false)
            .unwrap_or_else(|e| panic!("the JSON form of {value:?} is refused: {e}"));
        assert_eq!(
            back.as_ref(),
            Some(value),
            "a body does not survive its JSON form"
        );
    }
    Ok(read)
}

fn session(id: &str) -> SessionId {
    SessionId::parse(id).expect("a valid session id")
}

/// The command a route's body becomes, or the problem it is answered with.
fn command(
    route: &str,
    principal: &Principal,
    command_id: &CommandId,
    json: bool,
    bytes: &[u8],
) -> Result<Vec<Command>, ApiError> {
    let vm = |id: &str| id.parse().expect("a valid VM id");
    Ok(match route {
        "start" => {
            let Some(b) = body::<StartSessionBody>(json, bytes, false)? else {
                panic!("a required body read as none");
            };
            let (start, assignment) = start_request(principal, b)?;
            let id = start
                .session_id
                .clone()
                .unwrap_or_else(|| derive_session_id(&principal.actor(), command_id));
            let mut commands = vec![Command::StartSession(start)];
            commands.extend(assignment.map(|a| a.command(id)));
            commands
        }
        "assign" => {
            let b = body::<AssignBody>(json, bytes, true)?.unwrap_or_default();
            vec![Assignment::from_body(b)?.command(session("s-starting"))]
        }
        "end" => {
            let b = body::<EndBody>(json, bytes, true)?.unwrap_or_default();
            vec![Command::EndSession(EndSession {
                session_id: session("s-active"),
                reason: end_reason(principal.role, b)?,
            })]
        }
        "pause" | "resume" | "vm_drain" | "vm_retire" => {
            body::<EmptyBody>(json, bytes, true)?;
            vec![match route {
                "pause" => Command::PauseSession(SessionRef {
                    session_id: session("s-active"),
                }),
                "resume" => Command::ResumeSession(SessionRef {
                    session_id: session("s-paused"),
                }),
                "vm_drain" => Command::DrainVm(VmRef { vm_id: vm("vm-1") }),
                _ => Command::RetireVm(VmRef { vm_id: vm("vm-2") }),
            }]
        }
        "vm_register" => {
            let Some(b) = body::<RegisterVmBody>(json, bytes, false)? else {
                panic!("a required body read as none");
            };
            vec![Command::RegisterVm(register_request(b)?)]
        }
        _ => Vec::new(),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0);
    let (Some(route), Some(role), Some(content_type), Some(bytes)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let principal = match role {
        b"player" => Principal {
            role: Role::Player,
            id: "u1".into(),
        },
        b"operator" => Principal {
            role: Role::Operator,
            id: "ops".into(),
        },
        b"service" => Principal {
            role: Role::Service,
            id: "gateway".into(),
        },
        _ => return,
    };
    let mut headers = HeaderMap::new();
    if !content_type.is_empty() {
        let Ok(value) = HeaderValue::from_bytes(content_type) else {
            return;
        };
        headers.insert(CONTENT_TYPE, value);
    }
    let json = is_json_content_type(&headers);
    let Ok(route) = std::str::from_utf8(route) else {
        return;
    };
    let command_id: CommandId = "fuzz-key".parse().expect("a valid command id");
    match command(route, &principal, &command_id, json, bytes) {
        Ok(commands) => {
            for command in commands {
                for json in [false, true] {
                    let wire = encode_request(&command_id, &principal.actor(), &command, json);
                    let req = parse_request(command.name(), &wire, json).unwrap_or_else(|e| {
                        panic!("the writer refuses the bridge's {command:?}: {e:?}")
                    });
                    assert_eq!(req.command, command, "the writer reads another command");
                    orchestrator_fuzz::decide(&req);
                }
            }
        }
        Err(e) => {
            let status = e.problem().status;
            assert!(
                matches!(status, 400 | 403 | 415 | 422),
                "{route} answered {status}: {e}"
            );
        }
    }
});
