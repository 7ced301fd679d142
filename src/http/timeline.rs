//! `GET /v1/stats/timeline?from=&to=&step=` (operators): sessions per status and pool utilisation
//! sampled every `step` over a window, folded from the log ([`crate::analytics::timeline`]); the
//! dashboard's charts draw it.

use axum::extract::State;
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::as_of::{point, read_error, too_long};
use super::auth::Auth;
use super::errors::ApiError;
use super::extract::ApiQuery;
use super::state::AppState;
use super::usage::READ_TIMEOUT;
use crate::analytics::timeline::{timeline as fold_timeline, Timeline};
use crate::analytics::{resolve, Resolved};

/// Query of `GET /v1/stats/timeline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// The window's start: a stream sequence (the time of its event) or a time: an RFC 3339 time
    /// with `Z` or an offset (`2026-11-29T00:24:05+01:00`), `now`, or a duration before now
    /// (`-15m`, `-2h`, `-1d`).
    pub from: String,
    /// The window's end: a stream sequence (the time of its event) or a time, as for `from`.
    pub to: String,
    /// The step between points, e.g. `30s`, `5m` (humantime), or milliseconds; at most 2,000
    /// points per window.
    pub step: String,
}

fn step_ms(s: &str) -> Result<i64, ApiError> {
    let ms = match s.trim().parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => humantime::parse_duration(s.trim())
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .map_err(|e| ApiError::InvalidArgument {
                field: "step".into(),
                reason: format!("not a duration: {e}"),
            })?,
    };
    if ms <= 0 {
        return Err(ApiError::InvalidArgument {
            field: "step".into(),
            reason: "must be positive".into(),
        });
    }
    Ok(ms)
}

/// `GET /v1/stats/timeline` (operator).
pub async fn timeline(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<ApiQuery<TimelineQuery>, ApiError>,
) -> Result<Json<Timeline>, ApiError> {
    auth.require_operator()?;
    let ApiQuery(q) = query?;
    let (from, to, step) = (
        point("from", &q.from)?,
        point("to", &q.to)?,
        step_ms(&q.step)?,
    );
    let reader = &state.get().feed_reader;
    let read = async {
        let Resolved { window, last_seq } = resolve(reader, from, to).await?;
        fold_timeline(reader, window, last_seq, step).await
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Err(_) => Err(too_long("the timeline")),
        Ok(Ok(t)) => Ok(Json(t)),
        Ok(Err(e)) => Err(read_error("from/to/step", "the timeline", e)),
    }
}
