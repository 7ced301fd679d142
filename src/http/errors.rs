//! The bridge's one error type, [`ApiError`], and how every error becomes an RFC 9457
//! `application/problem+json` response.
//!
//! A problem carries `type` (`urn:orchestrator:problem:<code>`), `title`, `status`, `detail`, `code`
//! (the stable code: a domain rejection's, a protocol code, or one of the bridge's own) and the
//! fields relevant to it (a domain rejection's details, such as `vm_id` and `capacity` for
//! `vm_full`). Internal details (NATS errors, store errors) are logged, never sent. A player is
//! told nothing about VMs: a refusal about one keeps its code and status but not its fields, and
//! its message names no VM ([`Refusal::seen_by`]).
//!
//! | status | code | when | what a caller does |
//! |---|---|---|---|
//! | 400 | `malformed_request` | the body is not JSON of the route's shape (unknown fields included), or an id in the path, query, body or `Idempotency-Key` is invalid | fix the request |
//! | 401 | `unauthorized` | no bearer token, or an unknown one (with `WWW-Authenticate: Bearer`) | send a valid token |
//! | 403 | `forbidden` | the token's role may not do this (VM operations need an operator; a player acts only for themselves) | use another token |
//! | 404 | `session_not_found` | no such session, or another player's session (no command is sent) | check the id |
//! | 404 | `vm_not_found` | no such VM (also a VM named in an assignment) | check the id |
//! | 404 | `not_found` | no such route | check the path |
//! | 405 | `method_not_allowed` | the route exists, not with this method | check the method |
//! | 409 | `invalid_transition` | the command does not apply in the current state | read the state; do not retry |
//! | 409 | `already_exists` | a session or VM with this id exists | use another id |
//! | 409 | `vm_full`, `vm_draining`, `vm_retired`, `requirements_not_met` | the named VM cannot take the session | pick another VM or let the policy choose |
//! | 409 | `vm_not_empty` | a VM with sessions cannot be retired | drain it, end its sessions, retry |
//! | 409 | `no_capacity` | no VM can take the session now | retry later or register VMs |
//! | 409 | `user_quota_exceeded` | the user has the maximum of concurrent sessions | end one first |
//! | 409 | `idempotency_key_in_use` | a request with this `Idempotency-Key` is still in flight in this bridge | wait for it, then retry |
//! | 413 | `payload_too_large` | the body exceeds the limit (`--body-limit`, 64 KiB by default) | send less |
//! | 415 | `unsupported_content_type` | a body that is not `application/json` | send JSON |
//! | 422 | `command_id_reused` | the `Idempotency-Key` was used with another body | use a new key |
//! | 422 | `invalid_argument` | a field is well-formed but not acceptable; `field` names it | fix the field |
//! | 429 | `rate_limited` | the token's request rate is over `--rate-limit` (with `Retry-After`) | slow down |
//! | 429 | `too_many_feeds` | the caller has `--max-feeds-per-caller` event feeds open, or the bridge `--max-feeds` (with `Retry-After`) | close a feed, retry later |
//! | 500 | `internal` | a bug or a version skew between bridge and writer (logged) | report it |
//! | 503 | `unavailable` | NATS is unreachable, no writer answers, or the writer did not answer in time (with `Retry-After`). For a command, it may or may not have been applied: retrying with the same `Idempotency-Key` is safe | retry with the same key |
//! | 503 | `projections_rebuilding` | a read (session, sessions, VM, VMs, capacity) met a damaged projection store, or the store is being rebuilt from the log after damage (with `Retry-After`); no data is answered until the rebuild reaches the log's end | retry shortly, or read from another bridge |
//!
//! The writer's protocol codes `malformed_request`, `unknown_command` and `unsupported_content_type`
//! cannot be caused by an HTTP caller (the bridge encodes every command itself), so they are
//! answered as `internal`; its `payload_too_large` as 413 and its `unavailable` as 503.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::tokens::{Principal, Role};
use crate::domain::rejection::Entity;
use crate::domain::Rejection;

/// The content type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a caller should wait before opening another event feed after a 429 `too_many_feeds`.
const FEEDS_RETRY_AFTER_SECS: u64 = 5;

/// Seconds a caller should wait before retrying after a 503.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// An RFC 9457 problem, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// `urn:orchestrator:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem's kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a human.
    pub detail: String,
    /// The stable, machine-readable code (see the mapping table).
    pub code: String,
    /// Fields relevant to the problem: a rejection's details (`vm_id`, `capacity`, `field`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Every way a request can fail. Each variant names the response it becomes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_request`.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// 401 `unauthorized`.
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// 403 `forbidden`.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404 `session_not_found`: also another player's session.
    #[error("session {0} not found")]
    SessionNotFound(String),
    /// 404 `vm_not_found`.
    #[error("VM {0} not found")]
    VmNotFound(String),
    /// 404 `not_found`: no such route.
    #[error("no such route")]
    RouteNotFound,
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 `idempotency_key_in_use`.
    #[error("a request with this Idempotency-Key is still in flight")]
    KeyInFlight,
    /// 413 `payload_too_large`.
    #[error("the body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 415 `unsupported_content_type`.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// 422 `invalid_argument`, found by the bridge before sending.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// 429 `rate_limited`.
    #[error("rate limited")]
    RateLimited {
        /// Whole seconds until a request will be accepted.
        retry_after_secs: u64,
    },
    /// 429 `too_many_feeds`.
    #[error("too many event feeds open ({limit} per {scope})")]
    TooManyFeeds {
        /// The cap reached.
        limit: usize,
        /// `caller` or `bridge`.
        scope: &'static str,
    },
    /// The writer refused the command: the status follows the code (see the table).
    #[error("rejected ({}): {}", .0.code, .0.message)]
    Rejected(Box<Refusal>),
    /// 503 `unavailable` for a command: it may or may not have been applied.
    #[error("command outcome unknown: {0}")]
    CommandUnavailable(String),
    /// 503 `unavailable` for a read.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 503 `projections_rebuilding`: the projections are damaged or being rebuilt after damage.
    #[error("projections rebuilding: {0}")]
    ProjectionsRebuilding(String),
    /// 500 `internal`.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A command the writer refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The stable code.
    pub code: String,
    /// The writer's message (for a player, one that names no VM: see [`Refusal::seen_by`]).
    pub message: String,
    /// The domain rejection, when it is one.
    pub rejection: Option<Rejection>,
    /// Fields to add to the problem (the session a start-and-assign created, say).
    pub extra: Map<String, Value>,
}

impl Refusal {
    /// The refusal as `viewer` may see it. A player is told nothing about VMs: a refusal about a
    /// VM (`vm_full`, `no_capacity`, `requirements_not_met`...) keeps its code, hence its status,
    /// but loses the rejection's fields (VM ids, capacities, label keys, candidate counts) and
    /// gets a message that names no VM. Fields the bridge added (the `session_id` and `seq` of a
    /// start whose assignment was refused) stay: they are the player's own. Operators and services
    /// see everything.
    pub fn seen_by(mut self, viewer: &Principal) -> Refusal {
        if viewer.role != Role::Player {
            return self;
        }
        if let Some(message) = self.rejection.as_ref().and_then(player_message) {
            self.message = message.to_owned();
            self.rejection = None;
        }
        self
    }
}

/// What a player is told instead of a rejection that is about VMs; `None` for the others, which
/// name only the player's own ids (their session, their user id, their key, their fields).
fn player_message(r: &Rejection) -> Option<&'static str> {
    Some(match r {
        Rejection::VmNotFound { .. } => "the VM named does not exist",
        Rejection::VmFull { .. } => "the VM named has no free slot",
        Rejection::VmDraining { .. } => "the VM named takes no new sessions",
        Rejection::VmRetired { .. } => "the VM named is retired",
        Rejection::VmNotEmpty { .. } => "the VM still holds sessions",
        Rejection::RequirementsNotMet { .. } => "the VM named lacks labels the session requires",
        Rejection::NoCapacity { .. } => "no VM can take the session now",
        Rejection::AlreadyExists {
            entity: Entity::Vm, ..
        } => "the VM already exists",
        Rejection::InvalidTransition {
            entity: Entity::Vm, ..
        } => "the command does not apply to the VM in its current state",
        Rejection::SessionNotFound { .. }
        | Rejection::InvalidTransition { .. }
        | Rejection::UserQuotaExceeded { .. }
        | Rejection::AlreadyExists { .. }
        | Rejection::CommandIdReused { .. }
        | Rejection::InvalidArgument { .. } => return None,
    })
}

/// The HTTP status of a stable code (domain, protocol or bridge code).
pub fn status_for_code(code: &str) -> StatusCode {
    match code {
        "malformed_request" => StatusCode::BAD_REQUEST,
        "unauthorized" => StatusCode::UNAUTHORIZED,
        "forbidden" => StatusCode::FORBIDDEN,
        "session_not_found" | "vm_not_found" | "not_found" => StatusCode::NOT_FOUND,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "invalid_transition"
        | "already_exists"
        | "vm_full"
        | "vm_draining"
        | "vm_retired"
        | "requirements_not_met"
        | "vm_not_empty"
        | "no_capacity"
        | "user_quota_exceeded"
        | "idempotency_key_in_use" => StatusCode::CONFLICT,
        "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported_content_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "command_id_reused" | "invalid_argument" => StatusCode::UNPROCESSABLE_ENTITY,
        "rate_limited" | "too_many_feeds" => StatusCode::TOO_MANY_REQUESTS,
        "unavailable" | "projections_rebuilding" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The writer's protocol codes that only a bug or a version skew can cause.
const WRITER_BUG_CODES: [&str; 3] = [
    "malformed_request",
    "unknown_command",
    "unsupported_content_type",
];

impl ApiError {
    /// A read of the projections that failed: damage or a rebuild in progress is 503
    /// `projections_rebuilding`, anything else internal.
    pub fn projections(e: crate::projections::ProjectionError) -> Self {
        if e.is_rebuilding() {
            ApiError::ProjectionsRebuilding(e.to_string())
        } else {
            ApiError::Internal(format!("projection store: {e}"))
        }
    }

    /// A rejection from the writer's reply.
    pub fn rejected(code: String, message: String, rejection: Option<Rejection>) -> Self {
        ApiError::Rejected(Box::new(Refusal {
            code,
            message,
            rejection,
            extra: Map::new(),
        }))
    }

    /// The stable code this error answers with.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Malformed(_) => "malformed_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::SessionNotFound(_) => "session_not_found",
            ApiError::VmNotFound(_) => "vm_not_found",
            ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::KeyInFlight => "idempotency_key_in_use",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_content_type",
            ApiError::InvalidArgument { .. } => "invalid_argument",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooManyFeeds { .. } => "too_many_feeds",
            ApiError::Rejected(r) if WRITER_BUG_CODES.contains(&r.code.as_str()) => "internal",
            ApiError::Rejected(r) => &r.code,
            ApiError::CommandUnavailable(_) | ApiError::Unavailable(_) => "unavailable",
            ApiError::ProjectionsRebuilding(_) => "projections_rebuilding",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The problem this error is sent as.
    pub fn problem(&self) -> Problem {
        let code = self.code().to_owned();
        let status = status_for_code(&code);
        let mut extra = Map::new();
        let detail = match self {
            ApiError::Malformed(d) | ApiError::Forbidden(d) => d.clone(),
            ApiError::Unauthorized => {
                "send `Authorization: Bearer <token>` with a valid token".to_owned()
            }
            ApiError::SessionNotFound(id) => {
                extra.insert("session_id".into(), Value::String(id.clone()));
                self.to_string()
            }
            ApiError::VmNotFound(id) => {
                extra.insert("vm_id".into(), Value::String(id.clone()));
                self.to_string()
            }
            ApiError::PayloadTooLarge { limit } => {
                extra.insert("limit".into(), Value::from(*limit));
                self.to_string()
            }
            ApiError::InvalidArgument { field, reason } => {
                extra.insert("field".into(), Value::String(field.clone()));
                extra.insert("reason".into(), Value::String(reason.clone()));
                self.to_string()
            }
            ApiError::RateLimited { retry_after_secs } => {
                extra.insert("retry_after".into(), Value::from(*retry_after_secs));
                "too many requests for this token; retry after the given seconds".to_owned()
            }
            ApiError::TooManyFeeds { limit, scope } => {
                extra.insert("limit".into(), Value::from(*limit));
                extra.insert("scope".into(), Value::from(*scope));
                format!("{self}: close a feed or retry later")
            }
            ApiError::Rejected(_) if code == "internal" => internal_detail(),
            ApiError::Rejected(r) => {
                if let Some(fields) = r.rejection.as_ref().and_then(rejection_fields) {
                    extra.extend(fields);
                }
                extra.extend(r.extra.clone());
                r.message.clone()
            }
            ApiError::CommandUnavailable(_) => {
                extra.insert("retryable".into(), Value::Bool(true));
                "the command could not be confirmed: it may or may not have been applied. \
                 Retrying with the same Idempotency-Key is safe."
                    .to_owned()
            }
            ApiError::Unavailable(_) => {
                "the orchestrator is unavailable right now; retry shortly".to_owned()
            }
            ApiError::ProjectionsRebuilding(_) => {
                extra.insert("retryable".into(), Value::Bool(true));
                "this bridge's read models were found damaged and are being rebuilt from the log; \
                 retry shortly"
                    .to_owned()
            }
            ApiError::Internal(_) => internal_detail(),
            ApiError::RouteNotFound | ApiError::MethodNotAllowed | ApiError::KeyInFlight => {
                self.to_string()
            }
            ApiError::UnsupportedMediaType => self.to_string(),
        };
        Problem {
            problem_type: format!("urn:orchestrator:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code,
            extra,
        }
    }
}

fn internal_detail() -> String {
    "an internal error occurred; it has been logged".to_owned()
}

/// The fields of a domain rejection (`{"vm_full": {"vm_id": .., "capacity": ..}}` → its inner object).
fn rejection_fields(r: &Rejection) -> Option<Map<String, Value>> {
    match serde_json::to_value(r).ok()? {
        Value::Object(outer) => outer.into_iter().next().and_then(|(_, inner)| match inner {
            Value::Object(fields) => Some(
                fields
                    .into_iter()
                    .filter(|(k, _)| {
                        !matches!(k.as_str(), "type" | "title" | "status" | "detail" | "code")
                    })
                    .collect(),
            ),
            _ => None,
        }),
        _ => None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        match &self {
            ApiError::Internal(_) => tracing::error!(error = %self, "request failed"),
            ApiError::Rejected(_) if problem.code == "internal" => {
                tracing::error!(error = %self, "the writer refused a request the bridge built")
            }
            ApiError::CommandUnavailable(_)
            | ApiError::Unavailable(_)
            | ApiError::ProjectionsRebuilding(_) => {
                tracing::warn!(error = %self, "request failed: unavailable")
            }
            _ => tracing::debug!(error = %self, code = %problem.code, "request refused"),
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A problem is plain data: encoding cannot fail.
        let body = serde_json::to_vec(&problem).expect("a problem always encodes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::TooManyFeeds { .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(FEEDS_RETRY_AFTER_SECS),
                );
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_code_has_a_client_status() {
        for code in crate::domain::rejection::REJECTION_CODES {
            let s = status_for_code(code);
            assert!(s.is_client_error(), "{code} → {s}");
        }
    }

    #[test]
    fn rejection_fields_are_flattened() {
        let r = Rejection::VmFull {
            vm_id: "vm-1".parse().unwrap(),
            capacity: 2,
        };
        let e = ApiError::rejected(r.code().into(), r.to_string(), Some(r));
        let p = e.problem();
        assert_eq!(p.status, 409);
        assert_eq!(p.code, "vm_full");
        assert_eq!(p.extra["vm_id"], "vm-1");
        assert_eq!(p.extra["capacity"], 2);
    }

    #[test]
    fn a_player_is_told_nothing_about_vms() {
        let refusal = |r: Rejection| Refusal {
            code: r.code().into(),
            message: r.to_string(),
            rejection: Some(r),
            extra: Map::new(),
        };
        let full = Rejection::VmFull {
            vm_id: "vm-1".parse().unwrap(),
            capacity: 2,
        };
        let player = Principal {
            role: Role::Player,
            id: "alice".into(),
        };
        let p = ApiError::Rejected(Box::new(refusal(full.clone()).seen_by(&player))).problem();
        assert_eq!((p.status, p.code.as_str()), (409, "vm_full"));
        assert!(p.extra.is_empty(), "{p:?}");
        assert!(!p.detail.contains("vm-1"), "{p:?}");
        for role in [Role::Operator, Role::Service] {
            let staff = Principal {
                role,
                id: "x".into(),
            };
            let p = ApiError::Rejected(Box::new(refusal(full.clone()).seen_by(&staff))).problem();
            assert_eq!(p.extra["vm_id"], "vm-1");
            assert!(p.detail.contains("vm-1"));
        }
        // A refusal about the player's own things keeps its fields.
        let own = Rejection::invalid_transition(Entity::Session, "s-1", "paused", "pause");
        let p = ApiError::Rejected(Box::new(refusal(own).seen_by(&player))).problem();
        assert_eq!(p.extra["current"], "paused");
    }

    #[test]
    fn writer_bugs_are_internal_and_say_nothing() {
        let e = ApiError::rejected("unknown_command".into(), "secret detail".into(), None);
        let p = e.problem();
        assert_eq!((p.status, p.code.as_str()), (500, "internal"));
        assert!(!p.detail.contains("secret"));
    }
}
