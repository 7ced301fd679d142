//! The session routes: start (optionally assigning at once), list, read, pause, resume, end, assign.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use orchestrator_events::{CommandId, EndReason, PlacementPolicy, SessionId, VmId};

use super::auth::Auth;
use super::commands::{self, Subject};
use super::errors::ApiError;
use super::extract::{in_range, ApiJson, ApiQuery, IdempotencyKey, OptionalJson, SessionPath};
use super::state::AppState;
use super::tokens::{Principal, Role};
use super::types::{AssignBody, EmptyBody, EndBody, SessionQuery, StartSessionBody};
use crate::domain::command::{AssignVm, EndSession, SessionRef, StartSession, MAX_WAIT_MS};
use crate::domain::Command;
use crate::projections::{SessionFilter, SessionPage, SessionView};

/// The default page size of a listing.
pub const DEFAULT_PAGE: usize = 50;
/// The largest page size of a listing.
pub const MAX_PAGE: usize = 500;

fn store_error(e: crate::projections::ProjectionError) -> ApiError {
    ApiError::projections(e)
}

/// The session if the principal may see it; 404 when it does not exist or is another player's.
/// When it is not found, this bridge's projections may lag behind a write made through another
/// bridge: they are given up to the read-your-writes timeout to reach the stream's end once.
pub async fn visible_session(
    state: &AppState,
    auth: &Auth,
    id: &SessionId,
) -> Result<SessionView, ApiError> {
    let s = state.get();
    let mut view = s.store.session(id).map_err(store_error)?;
    if view.is_none() {
        if let Ok(last) = s.reader.last_seq().await {
            if last > s.store.checkpoint() && s.store.wait_for(last, s.ryw_timeout).await.is_ok() {
                view = s.store.session(id).map_err(store_error)?;
            }
        }
    }
    match view {
        Some(v) if auth.may_see(&v) => Ok(v),
        _ => Err(ApiError::SessionNotFound(id.to_string())),
    }
}

/// The arguments of an assignment, checked before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The VM to use; absent: the policy picks one.
    pub vm_id: Option<VmId>,
    /// The placement policy.
    pub policy: Option<PlacementPolicy>,
    /// How long to wait in the placement queue, 1 to [`MAX_WAIT_MS`].
    pub wait_ms: Option<u64>,
}

impl Assignment {
    /// An assignment's body, checked: a `wait_ms` out of its range is 422 `invalid_argument`.
    pub fn from_body(body: AssignBody) -> Result<Self, ApiError> {
        Ok(Self {
            vm_id: body.vm_id,
            policy: body.policy,
            wait_ms: body.wait_ms.map(wait_ms).transpose()?,
        })
    }

    /// The command that assigns `session_id`.
    pub fn command(self, session_id: SessionId) -> Command {
        Command::AssignVm(AssignVm {
            session_id,
            vm_id: self.vm_id,
            policy: self.policy,
            wait_ms: self.wait_ms,
        })
    }
}

/// What a start's body asks of `principal`, checked before anything is sent (so that a bad
/// `assign` leaves no session behind): the start, and the assignment to send after it.
pub fn start_request(
    principal: &Principal,
    body: StartSessionBody,
) -> Result<(StartSession, Option<Assignment>), ApiError> {
    let assignment = body.assign.map(Assignment::from_body).transpose()?;
    let user_id = match (principal.player(), body.user_id) {
        (Some(me), None) => me,
        (Some(me), Some(u)) if u == me => u,
        (Some(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "a player starts sessions only for themselves".into(),
            ))
        }
        (None, Some(u)) => u,
        (None, None) => {
            return Err(ApiError::InvalidArgument {
                field: "user_id".into(),
                reason: "operators and services must name the user".into(),
            })
        }
    };
    // A player choosing the id could tell another player's session from a free id (409 against
    // 404 for a read): only trusted callers choose it.
    if principal.role == Role::Player && body.session_id.is_some() {
        return Err(ApiError::InvalidArgument {
            field: "session_id".into(),
            reason: "a player may not choose the session id: the orchestrator derives it from \
                     the Idempotency-Key, so a retry names the same session"
                .into(),
        });
    }
    let start = StartSession {
        session_id: body.session_id,
        user_id,
        game_id: body.game_id,
        requirements: body.requirements,
    };
    Ok((start, assignment))
}

/// `POST /v1/sessions`: starts a session, and assigns it at once when `assign` is given (the
/// second command's id is `<Idempotency-Key>:assign`). When the start is applied but the
/// assignment refused, the problem carries the new `session_id` and the start's `seq`: assign it
/// later, or retry the whole request with the same key.
///
/// Only operators and services may give the `session_id`; a player's session gets the id derived
/// from the command id.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<StartSessionBody>,
) -> Result<Response, ApiError> {
    let principal = &auth.0;
    let (start, assignment) = start_request(principal, body)?;
    let (command_id, _guard) = commands::command_id(&state, principal, key)?;
    let assign_id = match &assignment {
        Some(_) => Some(
            CommandId::parse(format!("{command_id}:assign")).map_err(|_| {
                ApiError::Malformed(format!(
                    "Idempotency-Key: at most {} characters for a start with assign",
                    CommandId::MAX_LEN - ":assign".len()
                ))
            })?,
        ),
        None => None,
    };
    let start = Command::StartSession(start);
    let started = commands::send(&state, principal, &command_id, &start).await?;
    let session_id = started
        .event
        .event
        .session_id()
        .cloned()
        .ok_or_else(|| ApiError::Internal("a start answered with a VM event".into()))?;
    let start_seq = started.seq;
    let mut applied = vec![started];
    if let (Some(assignment), Some(assign_id)) = (assignment, assign_id) {
        let command = assignment.command(session_id.clone());
        match commands::send(&state, principal, &assign_id, &command).await {
            Ok(a) => applied.push(a),
            Err(ApiError::Rejected(mut r)) => {
                r.extra
                    .insert("session_id".into(), session_id.as_str().into());
                r.extra.insert("seq".into(), start_seq.into());
                r.message = format!(
                    "session {session_id} started, but not assigned: {}",
                    r.message
                );
                return Err(ApiError::Rejected(r));
            }
            Err(e) => return Err(e),
        }
    }
    commands::respond(
        &state,
        principal,
        applied,
        Subject::Session(session_id),
        true,
    )
    .await
}

/// `GET /v1/sessions`: a page of sessions; a player sees only their own.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> Result<Json<SessionPage>, ApiError> {
    let user_id = match auth.0.player() {
        Some(me) => {
            if q.user_id.as_ref().is_some_and(|u| *u != me) {
                return Err(ApiError::Forbidden(
                    "a player lists only their own sessions".into(),
                ));
            }
            Some(me)
        }
        None => q.user_id,
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidArgument {
            field: "limit".into(),
            reason: format!("must be 1 to {MAX_PAGE}"),
        });
    }
    let filter = SessionFilter {
        user_id,
        status: q.status,
        vm_id: q.vm_id,
    };
    let page = state
        .store()
        .sessions(&filter, q.after.as_ref(), limit)
        .map_err(store_error)?;
    Ok(Json(page))
}

/// `GET /v1/sessions/{id}`.
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    SessionPath(id): SessionPath,
) -> Result<Json<SessionView>, ApiError> {
    visible_session(&state, &auth, &id).await.map(Json)
}

/// Checks the session is visible, then sends the command.
async fn session_command(
    state: AppState,
    auth: Auth,
    key: Option<CommandId>,
    id: SessionId,
    command: Command,
) -> Result<Response, ApiError> {
    visible_session(&state, &auth, &id).await?;
    let (command_id, _guard) = commands::command_id(&state, &auth.0, key)?;
    let applied = commands::send(&state, &auth.0, &command_id, &command).await?;
    commands::respond(&state, &auth.0, vec![applied], Subject::Session(id), false).await
}

/// `POST /v1/sessions/{id}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    auth: Auth,
    IdempotencyKey(key): IdempotencyKey,
    SessionPath(id): SessionPath,
    OptionalJson(EmptyBody {}): OptionalJson<EmptyBody>,
) -> Result<Response, ApiError> {
    let command = Command::PauseSession(SessionRef {
        session_id: id.clone(),
    });
    session_command(state, auth, key, id, command).await
}

/// `POST /v1/sessions/{id}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    auth: Auth,
    IdempotencyKey(key): IdempotencyKey,
    SessionPath(id): SessionPath,
    OptionalJson(EmptyBody {}): OptionalJson<EmptyBody>,
) -> Result<Response, ApiError> {
    let command = Command::ResumeSession(SessionRef {
        session_id: id.clone(),
    });
    session_command(state, auth, key, id, command).await
}

/// `POST /v1/sessions/{id}/end`.
pub async fn end(
    State(state): State<AppState>,
    auth: Auth,
    IdempotencyKey(key): IdempotencyKey,
    SessionPath(id): SessionPath,
    OptionalJson(body): OptionalJson<EndBody>,
) -> Result<Response, ApiError> {
    let command = Command::EndSession(EndSession {
        session_id: id.clone(),
        reason: end_reason(auth.0.role, body)?,
    });
    session_command(state, auth, key, id, command).await
}

/// The reason of an end asked by a principal of `role`: a player's is always `user` (403 for any
/// other); an operator's defaults to `operator`, a service's to `user`.
pub fn end_reason(role: Role, body: EndBody) -> Result<EndReason, ApiError> {
    match (role, body.reason) {
        (Role::Player, None | Some(EndReason::User)) => Ok(EndReason::User),
        (Role::Player, Some(_)) => Err(ApiError::Forbidden(
            "a player ends a session with reason `user` only".into(),
        )),
        (Role::Operator, reason) => Ok(reason.unwrap_or(EndReason::Operator)),
        (Role::Service, reason) => Ok(reason.unwrap_or(EndReason::User)),
    }
}

/// An `assign`'s `wait_ms`: 1 to [`MAX_WAIT_MS`], else 422 `invalid_argument`.
fn wait_ms(ms: i64) -> Result<u64, ApiError> {
    in_range("wait_ms", ms, 1..=MAX_WAIT_MS as i64)
}

/// `POST /v1/sessions/{id}/assign`.
pub async fn assign(
    State(state): State<AppState>,
    auth: Auth,
    IdempotencyKey(key): IdempotencyKey,
    SessionPath(id): SessionPath,
    OptionalJson(body): OptionalJson<AssignBody>,
) -> Result<Response, ApiError> {
    let command = Assignment::from_body(body)?.command(id.clone());
    session_command(state, auth, key, id, command).await
}
