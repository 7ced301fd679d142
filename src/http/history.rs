//! `GET /v1/sessions/{id}/history`: a session's timeline read from the log (not the projections),
//! with the time it spent in each status.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use futures::StreamExt;
use orchestrator_events::Timestamp;

use super::auth::Auth;
use super::errors::ApiError;
use super::extract::SessionPath;
use super::sessions::visible_session;
use super::state::AppState;
use super::tokens::Principal;
use super::types::{History, HistoryEntry, LogEvent};
use crate::clock::now_ms;
use crate::domain::timeline::{TimeInStatus, Timeline};
use crate::domain::SessionStatus;
use crate::log::{LogError, StoredEvent};

/// The longest a history read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn log_error(e: LogError) -> ApiError {
    match e {
        LogError::Unavailable(m) => ApiError::Unavailable(m),
        other => ApiError::Internal(format!("reading a session's history: {other}")),
    }
}

/// Builds the timeline of a session's events (in stream order) as `viewer` may see it, counting an
/// open status up to `as_of`.
pub fn timeline(
    events: Vec<StoredEvent>,
    as_of: Timestamp,
    viewer: &Principal,
) -> (Vec<HistoryEntry>, SessionStatus, TimeInStatus) {
    let t = Timeline::of(
        events
            .iter()
            .map(|e| (e.envelope.occurred_at, &e.envelope.event)),
    );
    let entries = events
        .into_iter()
        .zip(&t.steps)
        .map(|(e, step)| HistoryEntry {
            event: LogEvent::new(e.seq, e.envelope, viewer),
            stored_at: e.stored_at,
            stored_at_rfc3339: orchestrator_events::rfc3339(e.stored_at),
            status: step.status,
            ms_in_previous_status: step.ms_in_previous_status,
        })
        .collect();
    (entries, t.status, t.time_in_status(as_of))
}

/// `GET /v1/sessions/{id}/history`.
pub async fn history(
    State(state): State<AppState>,
    auth: Auth,
    SessionPath(id): SessionPath,
) -> Result<Json<History>, ApiError> {
    visible_session(&state, &auth, &id).await?;
    let stream = state
        .get()
        .reader
        .session_history(&id)
        .await
        .map_err(log_error)?;
    let read = tokio::time::timeout(READ_TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .map_err(|_| ApiError::Unavailable("reading a session's history timed out".into()))?;
    let events = read
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(log_error)?;
    if events.is_empty() {
        // The projection knows it, so the log does too: only a log read in trouble gets here.
        return Err(ApiError::Unavailable(format!(
            "no events read for session {id}"
        )));
    }
    let as_of = now_ms();
    let (events, status, time_in_status_ms) = timeline(events, as_of, &auth.0);
    Ok(Json(History {
        session_id: id,
        status,
        events,
        time_in_status_ms,
        as_of,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_events::{Actor, EndReason, Envelope, Event};

    fn ev(seq: u64, at: Timestamp, event: Event) -> StoredEvent {
        StoredEvent {
            seq,
            stored_at: at,
            envelope: Envelope::new(
                format!("e{seq}"),
                format!("c{seq}"),
                1,
                at,
                Actor::user("u"),
                event,
            ),
        }
    }

    #[test]
    fn counts_time_in_each_status() {
        let viewer = Principal {
            role: crate::http::Role::Operator,
            id: "ops".into(),
        };
        let s = || "s1".parse().unwrap();
        let events = vec![
            ev(
                1,
                1000,
                Event::SessionStarted {
                    session_id: s(),
                    user_id: "u".parse().unwrap(),
                    game_id: "g".parse().unwrap(),
                    requirements: Default::default(),
                },
            ),
            ev(2, 1500, Event::SessionPaused { session_id: s() }),
            ev(3, 1600, Event::SessionResumed { session_id: s() }),
            ev(
                4,
                2600,
                Event::SessionEnded {
                    session_id: s(),
                    reason: EndReason::User,
                    vm_id: None,
                },
            ),
        ];
        let (entries, status, t) = timeline(events.clone(), 99_999, &viewer);
        assert_eq!(status, SessionStatus::Ended);
        assert_eq!(
            t,
            TimeInStatus {
                starting: 500,
                active: 1000,
                paused: 100
            }
        );
        assert_eq!(entries[1].ms_in_previous_status, 500);
        let (_, status, t) = timeline(events[..3].to_vec(), 2000, &viewer);
        assert_eq!(status, SessionStatus::Active);
        assert_eq!(t.active, 400, "an open status counts up to as_of");
    }
}
