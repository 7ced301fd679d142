//! Who may do what: the bearer-token extractor (which also applies the per-principal rate limit)
//! and the authorization rules.
//!
//! | route | player | operator | service |
//! |---|---|---|---|
//! | sessions: start, list, read, history, pause, resume, end, assign | own sessions only (another's answers 404) | all | all |
//! | event feed | own sessions' events | all | all |
//! | VMs: list, read; capacity; metrics | no (403) | yes | yes |
//! | VMs: register, drain, retire | no (403) | yes | no (403) |
//! | health, readiness, OpenAPI | no token needed (readiness: status only) | | |
//! | readiness details (lag, stream sequence) | no | yes | yes |

use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::errors::ApiError;
use super::state::AppState;
use super::tokens::{Principal, Role};
use crate::projections::SessionView;

/// The bearer token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// The principal of a request's bearer token on a public route, which answers without one:
/// `None` without a token or with an unknown one (no 401, no rate limit).
pub fn optional_principal(headers: &HeaderMap, state: &AppState) -> Option<Principal> {
    state.get().tokens.lookup(bearer(headers)?).cloned()
}

/// The authenticated principal of a request.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let principal = state
            .get()
            .tokens
            .lookup(token)
            .cloned()
            .ok_or(ApiError::Unauthorized)?;
        state
            .get()
            .limiter
            .check(&principal.key(), Instant::now())
            .map_err(|wait| ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            })?;
        Ok(Auth(principal))
    }
}

impl Auth {
    /// Operators only (VM changes).
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Operator => Ok(()),
            _ => Err(ApiError::Forbidden("this needs an operator token".into())),
        }
    }

    /// Operators and services (reading VMs, capacity, metrics).
    pub fn require_staff(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Operator | Role::Service => Ok(()),
            Role::Player => Err(ApiError::Forbidden(
                "this needs an operator or service token".into(),
            )),
        }
    }

    /// Whether the principal may see (and act on) a session.
    pub fn may_see(&self, session: &SessionView) -> bool {
        match self.0.role {
            Role::Player => session.user_id.as_str() == self.0.id,
            Role::Operator | Role::Service => true,
        }
    }
}
