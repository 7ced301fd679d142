//! The command protocol on NATS: requests on `orch.<cell>.cmd.<name>`, replies with the event and its
//! sequence or with a rejection code.
//!
//! A request body is postcard, or JSON when the request carries `Content-Type: application/json`; the
//! reply uses the same encoding. A body that is JSON is answered in JSON whatever its headers say: one
//! sent without that `Content-Type` (or with another) is refused with `unsupported_content_type`, in
//! JSON, so that a JSON client can read why. (No postcard request is valid JSON: the byte after its
//! command id is the actor kind, 0 to 3, a control character JSON never allows there.) The body is a [`CommandRequest`] whose `command` is the body of the
//! command the subject names (see [`crate::domain::command::COMMAND_NAMES`]).
//!
//! Many commands can travel in one request on `orch.<cell>.cmd.batch` ([`batch`]): one reply lists
//! each command's reply, in order.

use async_nats::HeaderMap;
use orchestrator_events::{
    Actor, ActorKind, CommandId, Envelope, Labels, PlacementPolicy, SessionId, VmId,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod batch;

pub use batch::{BatchReply, BATCH, MAX_BATCH_REQUESTS, MAX_BATCH_REQUEST_BYTES};

use crate::domain::command::{AssignVm, EndSession, RegisterVm, SessionRef, StartSession, VmRef};
use crate::domain::{Command, CommandRequest, Rejection};

/// The largest request body accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The content type that selects JSON.
pub const JSON: &str = "application/json";

/// Codes of the replies that are not domain rejections. Stable, like the domain's codes.
///
/// | code | meaning |
/// |---|---|
/// | `malformed_request` | the body does not decode as the command the subject names |
/// | `unknown_command` | the subject names no command |
/// | `payload_too_large` | the body exceeds [`MAX_REQUEST_BYTES`] |
/// | `unsupported_content_type` | a `Content-Type` other than JSON (postcard has none) |
/// | `unavailable` | the writer could not reach the log; the command may or may not be applied: retry with the same command id |
pub const PROTOCOL_CODES: [&str; 5] = [
    "malformed_request",
    "unknown_command",
    "payload_too_large",
    "unsupported_content_type",
    "unavailable",
];

/// The writer's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The command was applied: here is its event.
    Accepted {
        /// The event's stream sequence.
        seq: u64,
        /// Whether this is a retry of a command applied earlier (the event is the first result).
        duplicate: bool,
        /// The event (boxed: it is most of a reply's size).
        event: Box<Envelope>,
    },
    /// The command was not applied.
    Rejected {
        /// A stable code: a domain rejection's or a protocol code.
        code: String,
        /// A human-readable explanation.
        message: String,
        /// The domain rejection with its details, when it is one.
        rejection: Option<Rejection>,
    },
}

impl Reply {
    /// A protocol-level rejection.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Reply::Rejected {
            code: code.to_owned(),
            message: message.into(),
            rejection: None,
        }
    }

    /// A domain rejection.
    pub fn rejected(r: Rejection) -> Self {
        Reply::Rejected {
            code: r.code().to_owned(),
            message: r.to_string(),
            rejection: Some(r),
        }
    }

    /// Encodes the reply as JSON or postcard.
    pub fn encode(&self, json: bool) -> Vec<u8> {
        encode_as(self, json)
    }

    /// Decodes a reply.
    pub fn decode(bytes: &[u8], json: bool) -> Result<Self, String> {
        decode_as(bytes, json)
    }
}

/// Encodes a message of the protocol (plain data) as JSON or postcard.
pub(crate) fn encode_as<T: Serialize + ?Sized>(value: &T, json: bool) -> Vec<u8> {
    if json {
        // Plain data: JSON encoding cannot fail.
        serde_json::to_vec(value).expect("a protocol message always encodes")
    } else {
        // Likewise for postcard.
        postcard::to_stdvec(value).expect("a protocol message always encodes")
    }
}

/// Decodes a message of the protocol from JSON or postcard.
pub(crate) fn decode_as<T: DeserializeOwned>(bytes: &[u8], json: bool) -> Result<T, String> {
    if json {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// Whether a request's headers select JSON. Any other content type is refused.
// The error is the reply to send, built once per refused request: its size costs nothing.
#[allow(clippy::result_large_err)]
pub fn wants_json(headers: Option<&HeaderMap>) -> Result<bool, Reply> {
    let Some(ct) = headers.and_then(|h| h.get("Content-Type")) else {
        return Ok(false);
    };
    let ct = ct.as_str();
    let base = ct.split(';').next().unwrap_or("").trim();
    if base.eq_ignore_ascii_case(JSON) {
        Ok(true)
    } else {
        Err(Reply::error(
            "unsupported_content_type",
            format!("content type {ct:?}: send postcard with no Content-Type, or {JSON}"),
        ))
    }
}

/// Whether a body is a JSON document (of any shape).
pub fn is_json(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// How a request is read and answered: the encoding of its body, or the refusal to send and the
/// encoding to send it in (JSON when the body is JSON, so that a JSON client can read it).
// The error is the reply to send, built once per refused request: its size costs nothing.
#[allow(clippy::result_large_err)]
pub fn request_encoding(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<bool, (Reply, bool)> {
    match wants_json(headers) {
        Ok(true) => Ok(true),
        Ok(false) if !is_json(payload) => Ok(false),
        Ok(false) => Err((
            Reply::error(
                "unsupported_content_type",
                format!(
                    "the body is JSON but the request has no Content-Type: send it with \
                     Content-Type: {JSON} (without one, a body is read as postcard)"
                ),
            ),
            true,
        )),
        Err(reply) => Err((reply, is_json(payload))),
    }
}

fn body<C: DeserializeOwned>(payload: &[u8], json: bool) -> Result<CommandRequest<C>, String> {
    if json {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    } else {
        let (req, rest) = postcard::take_from_bytes(payload).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes", rest.len()));
        }
        Ok(req)
    }
}

/// A postcard body of the current shape, or of the shape before optional fields were added at its
/// end (postcard has no defaults: an old client's body ends where they would start).
fn body_or_old<C: DeserializeOwned, Old: DeserializeOwned + Into<C>>(
    payload: &[u8],
    json: bool,
) -> Result<CommandRequest<C>, String> {
    match body::<C>(payload, json) {
        Ok(r) => Ok(r),
        Err(e) if json => Err(e),
        Err(e) => match body::<Old>(payload, false) {
            Ok(r) => Ok(CommandRequest {
                command_id: r.command_id,
                actor: r.actor,
                command: r.command.into(),
            }),
            Err(_) => Err(e),
        },
    }
}

/// `assign` before `wait_ms`.
#[derive(Deserialize)]
struct AssignVm1 {
    session_id: SessionId,
    vm_id: Option<VmId>,
    policy: Option<PlacementPolicy>,
}

impl From<AssignVm1> for AssignVm {
    fn from(c: AssignVm1) -> Self {
        AssignVm {
            session_id: c.session_id,
            vm_id: c.vm_id,
            policy: c.policy,
            wait_ms: None,
        }
    }
}

/// `vm_register` before `heartbeat_ms` and `endpoint`.
#[derive(Deserialize)]
struct RegisterVm1 {
    vm_id: VmId,
    capacity: u32,
    labels: Labels,
}

impl From<RegisterVm1> for RegisterVm {
    fn from(c: RegisterVm1) -> Self {
        RegisterVm {
            vm_id: c.vm_id,
            capacity: c.capacity,
            labels: c.labels,
            heartbeat_ms: None,
            endpoint: None,
        }
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The idempotency key.
    pub command_id: CommandId,
    /// Who issued it.
    pub actor: Actor,
    /// The command.
    pub command: Command,
}

/// Decodes the body of a request sent to the command `name`.
// The error is the reply to send, built once per refused request: its size costs nothing.
#[allow(clippy::result_large_err)]
pub fn parse_request(name: &str, payload: &[u8], json: bool) -> Result<Request, Reply> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(Reply::error(
            "payload_too_large",
            format!("{} bytes, the limit is {MAX_REQUEST_BYTES}", payload.len()),
        ));
    }
    fn wrap<C: DeserializeOwned>(
        payload: &[u8],
        json: bool,
        f: fn(C) -> Command,
    ) -> Result<Request, String> {
        request(body::<C>(payload, json)?, f)
    }
    fn request<C>(r: CommandRequest<C>, f: fn(C) -> Command) -> Result<Request, String> {
        Ok(Request {
            command_id: r.command_id,
            actor: r.actor,
            command: f(r.command),
        })
    }
    let parsed = match name {
        "start" => wrap::<StartSession>(payload, json, Command::StartSession),
        "assign" => body_or_old::<AssignVm, AssignVm1>(payload, json)
            .and_then(|r| request(r, Command::AssignVm)),
        "pause" => wrap::<SessionRef>(payload, json, Command::PauseSession),
        "resume" => wrap::<SessionRef>(payload, json, Command::ResumeSession),
        "end" => wrap::<EndSession>(payload, json, Command::EndSession),
        "vm_register" => body_or_old::<RegisterVm, RegisterVm1>(payload, json)
            .and_then(|r| request(r, Command::RegisterVm)),
        "vm_drain" => wrap::<VmRef>(payload, json, Command::DrainVm),
        "vm_retire" => wrap::<VmRef>(payload, json, Command::RetireVm),
        other => {
            return Err(Reply::error(
                "unknown_command",
                format!("no command named {other:?}"),
            ))
        }
    };
    let request = parsed.map_err(|e| {
        Reply::error(
            "malformed_request",
            format!(
                "not a {name} request ({} body): {e}",
                if json { "JSON" } else { "postcard" }
            ),
        )
    })?;
    if request.actor.kind == ActorKind::System {
        // Timers and the queue send their commands with deterministic ids in the system actor's
        // scope: nobody else may claim those ids or speak for the orchestrator.
        return Err(Reply::rejected(Rejection::invalid_argument(
            "actor.kind",
            "`system` is reserved for the orchestrator's own commands",
        )));
    }
    Ok(request)
}

/// Encodes a request for the command it carries: the body to send to `orch.<cell>.cmd.<name>`.
pub fn encode_request(
    command_id: &CommandId,
    actor: &Actor,
    command: &Command,
    json: bool,
) -> Vec<u8> {
    fn enc<C: Serialize>(command_id: &CommandId, actor: &Actor, c: &C, json: bool) -> Vec<u8> {
        let req = CommandRequest {
            command_id: command_id.clone(),
            actor: actor.clone(),
            command: c,
        };
        encode_as(&req, json)
    }
    match command {
        Command::StartSession(c) => enc(command_id, actor, c, json),
        Command::AssignVm(c) => enc(command_id, actor, c, json),
        Command::PauseSession(c) | Command::ResumeSession(c) => enc(command_id, actor, c, json),
        Command::EndSession(c) => enc(command_id, actor, c, json),
        Command::RegisterVm(c) => enc(command_id, actor, c, json),
        Command::DrainVm(c) | Command::RetireVm(c) => enc(command_id, actor, c, json),
        // The writer sends these to itself; on the wire they are refused as unknown commands.
        Command::ExpireSession(c) => enc(command_id, actor, c, json),
        Command::DeclareVmLost(c) => enc(command_id, actor, c, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_encodings() {
        let cmd = Command::EndSession(EndSession {
            session_id: "s1".parse().unwrap(),
            reason: orchestrator_events::EndReason::User,
        });
        let id: CommandId = "c1".parse().unwrap();
        for json in [false, true] {
            let bytes = encode_request(&id, &Actor::user("u1"), &cmd, json);
            let req = parse_request("end", &bytes, json).unwrap();
            assert_eq!(req.command, cmd);
        }
    }

    #[test]
    fn bad_input_gets_codes() {
        let code = |r: Reply| match r {
            Reply::Rejected { code, .. } => code,
            Reply::Accepted { .. } => panic!("accepted"),
        };
        assert_eq!(
            code(parse_request("nope", b"{}", true).unwrap_err()),
            "unknown_command"
        );
        assert_eq!(
            code(parse_request("start", b"\xff\x00garbage", false).unwrap_err()),
            "malformed_request"
        );
        assert_eq!(
            code(parse_request("start", b"{\"user_id\":1}", true).unwrap_err()),
            "malformed_request"
        );
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            code(parse_request("start", &big, true).unwrap_err()),
            "payload_too_large"
        );
        let bad_id = br#"{"command_id":"c 1","actor":{"kind":"user","id":"u"},"command":{"session_id":"s1"}}"#;
        assert_eq!(
            code(parse_request("pause", bad_id, true).unwrap_err()),
            "malformed_request"
        );
    }

    #[test]
    fn bodies_from_before_the_optional_fields_still_decode() {
        #[derive(Serialize)]
        struct Old<C> {
            command_id: CommandId,
            actor: Actor,
            command: C,
        }
        #[derive(Serialize)]
        struct Assign1<'a>(&'a str, Option<&'a str>, Option<PlacementPolicy>);
        #[derive(Serialize)]
        struct Register1<'a>(&'a str, u32, Labels);
        let assign = postcard::to_stdvec(&Old {
            command_id: "c1".parse().unwrap(),
            actor: Actor::user("u1"),
            command: Assign1("s1", None, Some(PlacementPolicy::Spread)),
        })
        .unwrap();
        match parse_request("assign", &assign, false).unwrap().command {
            Command::AssignVm(a) => {
                assert_eq!(a.policy, Some(PlacementPolicy::Spread));
                assert_eq!(a.wait_ms, None);
            }
            other => panic!("{other:?}"),
        }
        let register = postcard::to_stdvec(&Old {
            command_id: "c2".parse().unwrap(),
            actor: Actor::operator("ops"),
            command: Register1("vm-1", 4, Labels::new()),
        })
        .unwrap();
        match parse_request("vm_register", &register, false)
            .unwrap()
            .command
        {
            Command::RegisterVm(r) => {
                assert_eq!(r.capacity, 4);
                assert_eq!((r.heartbeat_ms, r.endpoint), (None, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_json_body_is_answered_in_json_whatever_its_headers() {
        let json_body = br#"{"command_id":"c1"}"#;
        let postcard_body = encode_request(
            &"c1".parse().unwrap(),
            &Actor::user("u1"),
            &Command::PauseSession(SessionRef {
                session_id: "s1".parse().unwrap(),
            }),
            false,
        );
        assert!(!is_json(&postcard_body));
        assert_eq!(request_encoding(None, &postcard_body), Ok(false));
        let mut plain = HeaderMap::new();
        plain.insert("Content-Type", "text/plain");
        for headers in [None, Some(&plain)] {
            match request_encoding(headers, json_body) {
                Err((Reply::Rejected { code, .. }, true)) => {
                    assert_eq!(code, "unsupported_content_type")
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            request_encoding(Some(&plain), &postcard_body),
            Err((_, false))
        ));
        let mut json = HeaderMap::new();
        json.insert("Content-Type", "application/json; charset=utf-8");
        assert_eq!(request_encoding(Some(&json), json_body), Ok(true));
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        for body in [
            &br#"{"command_id":"c","actor":{"kind":"user","id":"u"},"command":{"session_id":"s1","x":1}}"#[..],
            br#"{"command_id":"c","actor":{"kind":"user","id":"u","x":1},"command":{"session_id":"s1"}}"#,
            br#"{"command_id":"c","actor":{"kind":"user","id":"u"},"command":{"session_id":"s1"},"x":1}"#,
        ] {
            match parse_request("pause", body, true) {
                Err(Reply::Rejected { code, .. }) => assert_eq!(code, "malformed_request"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn nobody_speaks_as_the_system_actor() {
        let cmd = Command::PauseSession(SessionRef {
            session_id: "s1".parse().unwrap(),
        });
        let system = Actor {
            kind: ActorKind::System,
            id: "timer".into(),
        };
        for json in [false, true] {
            let bytes = encode_request(&"pause-timeout:s1:7".parse().unwrap(), &system, &cmd, json);
            match parse_request("pause", &bytes, json).unwrap_err() {
                Reply::Rejected {
                    code, rejection, ..
                } => {
                    assert_eq!(code, "invalid_argument");
                    assert!(matches!(
                        rejection,
                        Some(Rejection::InvalidArgument { field, .. }) if field == "actor.kind"
                    ));
                }
                Reply::Accepted { .. } => panic!("accepted"),
            }
        }
    }
}
