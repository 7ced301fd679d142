//! `GET /v1/usage?from=&to=&by=` (operators): the time each user's, game's or VM's sessions spent in
//! each status within a window, read from the log (see [`crate::analytics::usage`]).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::as_of::point;
use super::auth::Auth;
use super::errors::ApiError;
use super::extract::ApiQuery;
use super::state::AppState;
use crate::analytics::{self, GroupBy, UsageReport, WindowError};
use crate::log::LogError;

/// The longest a usage read may take: it reads the log from its first event.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Query of `GET /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The window's start (inclusive): a stream sequence (the time of its event) or a time: an
    /// RFC 3339 time with `Z` or an offset (`2026-11-29T00:24:05+01:00`), `now`, or a duration
    /// before now (`-15m`, `-2h`, `-1d`).
    pub from: String,
    /// The window's end (exclusive): a stream sequence (the time of its event) or a time, as for
    /// `from`.
    pub to: String,
    /// One row per `user`, `game` or `vm` (a session counts for its VM only while assigned to it).
    pub by: GroupBy,
}

/// `GET /v1/usage` (operator).
pub async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<ApiQuery<UsageQuery>, ApiError>,
) -> Result<Json<UsageReport>, ApiError> {
    // Who asks first: a player learns nothing about the query's shape.
    auth.require_operator()?;
    let ApiQuery(q) = query?;
    let (from, to) = (point("from", &q.from)?, point("to", &q.to)?);
    // The feeds' connection: a long read of the log never holds up the commands'.
    let reader = &state.get().feed_reader;
    let read = analytics::usage(reader, from, to, q.by, |_| {});
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Err(_) => Err(ApiError::Unavailable(format!(
            "reading the log for usage took over {}s; ask for a shorter window's end or use \
             `orchestrator usage`",
            READ_TIMEOUT.as_secs()
        ))),
        Ok(Ok(report)) => Ok(Json(report)),
        Ok(Err(WindowError::Invalid(reason))) => Err(ApiError::InvalidArgument {
            field: "from/to".to_owned(),
            reason,
        }),
        Ok(Err(WindowError::Log(LogError::Unavailable(m)))) => Err(ApiError::Unavailable(m)),
        Ok(Err(WindowError::Log(e))) => Err(ApiError::Internal(format!("reading usage: {e}"))),
    }
}
