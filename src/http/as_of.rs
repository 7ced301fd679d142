//! `GET /v1/state?at=<seq|time>` (operators): the cell as of a moment, replayed from the log the
//! way `orchestrator state --at` does ([`crate::analytics::as_of`]); the dashboard's time slider
//! reads it. Without `at`, the whole log.

use axum::extract::State;
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::errors::ApiError;
use super::extract::ApiQuery;
use super::state::AppState;
use super::usage::READ_TIMEOUT;
use crate::analytics::as_of::{replay, snapshot, Snapshot};
use crate::analytics::WindowError;
use crate::log::{parse_point, LogError, Point};

/// Query of `GET /v1/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// The moment: a stream sequence (the state after it) or a time (the state after the last
    /// event at or before it): an RFC 3339 time with `Z` or an offset
    /// (`2026-11-29T00:24:05+01:00`), `now`, or a duration before now (`-15m`, `-2h`, `-1d`).
    /// Default: the end of the log.
    #[serde(default)]
    pub at: Option<String>,
}

/// A point of the log named by a query parameter, or a 400 naming the field. An unencoded `+` in
/// an offset (`at=2026-11-29T00:24:05+01:00`) reaches us as a space: it is read back as `+`.
pub(crate) fn point(field: &str, value: &str) -> Result<Point, ApiError> {
    parse_point(&plus_from_query(value)).map_err(|reason| ApiError::InvalidArgument {
        field: field.to_owned(),
        reason,
    })
}

/// `…05 01:00` (a `+` decoded as a space from a query string) back to `…05+01:00`.
fn plus_from_query(value: &str) -> String {
    let v = value.trim_end();
    match v
        .len()
        .checked_sub(6)
        .and_then(|cut| v.split_at_checked(cut))
    {
        Some((local, zone))
            if local.len() >= 19
                && zone.starts_with(' ')
                && zone.as_bytes()[3] == b':'
                && zone[1..].bytes().filter(u8::is_ascii_digit).count() == 4 =>
        {
            format!("{local}+{}", &zone[1..])
        }
        _ => value.to_owned(),
    }
}

/// Maps a failed read of the log to the problem the caller sees; `fields` names the query
/// parameters an invalid point came from.
pub(crate) fn read_error(fields: &str, what: &str, e: WindowError) -> ApiError {
    match e {
        WindowError::Invalid(reason) => ApiError::InvalidArgument {
            field: fields.to_owned(),
            reason,
        },
        WindowError::Log(LogError::Unavailable(m)) => ApiError::Unavailable(m),
        WindowError::Log(e) => ApiError::Internal(format!("reading {what}: {e}")),
    }
}

/// The problem when a read of the log takes too long.
pub(crate) fn too_long(what: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "reading the log for {what} took over {}s; use the command line for long logs",
        READ_TIMEOUT.as_secs()
    ))
}

/// `GET /v1/state` (operator).
pub async fn state_at(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<ApiQuery<StateQuery>, ApiError>,
) -> Result<Json<Snapshot>, ApiError> {
    auth.require_operator()?;
    let ApiQuery(q) = query?;
    let at = q.at.as_deref().map(|v| point("at", v)).transpose()?;
    // The feeds' connection: a long read of the log never holds up the commands'.
    let reader = &state.get().feed_reader;
    match tokio::time::timeout(READ_TIMEOUT, replay(reader, at)).await {
        Err(_) => Err(too_long("the state")),
        Ok(Ok((st, last))) => Ok(Json(snapshot(&st, last, false))),
        Ok(Err(e)) => Err(read_error("at", "the state", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plus_decoded_as_a_space_is_read_back() {
        assert_eq!(
            plus_from_query("2026-11-29T01:24:05 01:00"),
            "2026-11-29T01:24:05+01:00"
        );
        assert_eq!(
            point("at", "2026-11-29T01:24:05 01:00").ok(),
            Some(Point::Time(1_795_911_845_000))
        );
        assert_eq!(
            plus_from_query("2026-11-29 01:24:05Z"),
            "2026-11-29 01:24:05Z"
        );
        assert_eq!(plus_from_query("-15m"), "-15m");
        assert!(point("at", "2026-11-29T01:24:05").is_err(), "no zone");
    }
}
