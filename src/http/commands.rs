//! Sending commands to the writer and answering with read-your-writes: the one path every
//! command route takes.
//!
//! 1. The `Idempotency-Key` (or a fresh UUID) becomes the command id; while a key's first request is
//!    in flight in this bridge, another with the same key (same principal) gets 409.
//! 2. The command goes to the writer through [`CommandClient::send`](crate::client::CommandClient);
//!    a rejection becomes a problem (see [`super::errors`]; a player's tells nothing about VMs), no
//!    answer a 503.
//! 3. After an accepted reply with sequence N the bridge waits until its projections reach N, then
//!    reads the session or VM: the caller sees its own write. When that wait times out the answer
//!    is 202 with the event but without the state.
//!
//! A retry of an applied command gets the writer's first event; the response is built from it the
//! same way (same status, same events and `seq`, `replayed: true`, header `Idempotent-Replayed:
//! true`); the state in it is read now, so it shows later changes too.
//!
//! The events in a response are shown as the caller may see them: a player sees no actor's id but
//! their own ([`LogEvent::new`]).

use std::time::Instant;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchestrator_events::{CommandId, Envelope, Event, SessionId, VmId};

use super::errors::{ApiError, Refusal};
use super::idempotency::InFlightGuard;
use super::state::AppState;
use super::tokens::Principal;
use super::types::{CommandResponse, LogEvent};
use crate::domain::Command;
use crate::metrics::Outcome;
use crate::writer::Reply;

/// An applied command's event.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Its stream sequence.
    pub seq: u64,
    /// Whether it was applied by an earlier request with the same command id.
    pub duplicate: bool,
    /// The event.
    pub event: Envelope,
}

/// The command id of a request: the key, or a new UUID; and the in-flight guard of a key.
pub fn command_id(
    state: &AppState,
    principal: &Principal,
    key: Option<CommandId>,
) -> Result<(CommandId, Option<InFlightGuard>), ApiError> {
    match key {
        Some(key) => {
            let guard = state
                .get()
                .in_flight
                .begin(&principal.key(), key.as_str())
                .ok_or(ApiError::KeyInFlight)?;
            Ok((key, Some(guard)))
        }
        // A UUID is printable ASCII of 36 characters: always a valid command id.
        None => Ok((
            CommandId::parse(uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid command id"),
            None,
        )),
    }
}

/// Sends one command and returns its event, or the problem it becomes.
#[tracing::instrument(skip_all, fields(command = command.name(), command_id = %command_id, actor = %principal.actor(), seq))]
pub async fn send(
    state: &AppState,
    principal: &Principal,
    command_id: &CommandId,
    command: &Command,
) -> Result<Applied, ApiError> {
    let started = Instant::now();
    let reply = state
        .get()
        .commands
        .send(command_id, &principal.actor(), command)
        .await;
    let metrics = &state.get().metrics;
    let name = command.name();
    match reply {
        Ok(Reply::Accepted {
            seq,
            duplicate,
            event,
        }) => {
            let outcome = if duplicate {
                Outcome::Duplicate
            } else {
                Outcome::Accepted
            };
            metrics.record(name, outcome, None, started.elapsed());
            tracing::Span::current().record("seq", seq);
            tracing::info!(duplicate, "command applied");
            Ok(Applied {
                seq,
                duplicate,
                event: *event,
            })
        }
        Ok(Reply::Rejected {
            code,
            message,
            rejection,
        }) => {
            metrics.record(name, Outcome::Rejected, Some(&code), started.elapsed());
            if code == "unavailable" {
                return Err(ApiError::CommandUnavailable(message));
            }
            tracing::debug!(%code, %message, "command rejected");
            let refusal = Refusal {
                code,
                message,
                rejection,
                extra: Default::default(),
            };
            Err(ApiError::Rejected(Box::new(refusal.seen_by(principal))))
        }
        Err(e) => {
            metrics.record(name, Outcome::Unavailable, None, started.elapsed());
            Err(ApiError::CommandUnavailable(e.to_string()))
        }
    }
}

/// What a command's response shows after its events.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A session.
    Session(SessionId),
    /// A VM.
    Vm(VmId),
}

/// Builds the response to applied commands: waits for the projections to reach the last event,
/// then reads `subject`. `created` answers 201 (with `Location`) instead of 200; a session that
/// was queued (its last event is `SessionQueued`) answers 202, with its place in the queue. The events are
/// shown as `viewer` may see them (see [`LogEvent::new`]).
pub async fn respond(
    state: &AppState,
    viewer: &Principal,
    applied: Vec<Applied>,
    subject: Subject,
    created: bool,
) -> Result<Response, ApiError> {
    let seq = applied.iter().map(|a| a.seq).max().unwrap_or(0);
    let replayed = !applied.is_empty() && applied.iter().all(|a| a.duplicate);
    let queued = applied
        .last()
        .is_some_and(|a| matches!(a.event.event, Event::SessionQueued { .. }));
    let events = applied
        .into_iter()
        .map(|a| LogEvent::new(a.seq, a.event, viewer))
        .collect();
    let mut body = CommandResponse {
        seq,
        replayed,
        events,
        session: None,
        vm: None,
        pending: None,
    };
    let store = &state.get().store;
    let location = match &subject {
        Subject::Session(id) => format!("/v1/sessions/{id}"),
        Subject::Vm(id) => format!("/v1/vms/{id}"),
    };
    let status = match store.wait_for(seq, state.get().ryw_timeout).await {
        Ok(_) => {
            let read = match &subject {
                Subject::Session(id) => store.session(id).map(|s| body.session = s),
                Subject::Vm(id) => store.vm(id).map(|v| body.vm = v),
            };
            match read {
                Ok(()) if queued => StatusCode::ACCEPTED,
                Ok(()) if created => StatusCode::CREATED,
                Ok(()) => StatusCode::OK,
                // Applied all the same: answered like projections that have not caught up.
                Err(e) if e.is_rebuilding() => {
                    tracing::warn!(seq, error = %e, "projections rebuilding: answering 202");
                    body.pending = Some(format!(
                        "the command is applied at seq {seq}, but this bridge's projections are \
                         being rebuilt; read {location} again shortly"
                    ));
                    StatusCode::ACCEPTED
                }
                Err(e) => return Err(ApiError::Internal(format!("reading after seq {seq}: {e}"))),
            }
        }
        Err(e) => {
            tracing::warn!(seq, error = %e, "read-your-writes wait timed out: answering 202");
            body.pending = Some(format!(
                "the command is applied at seq {seq}, but this bridge's projections have not \
                 caught up yet; read {location} again shortly"
            ));
            StatusCode::ACCEPTED
        }
    };
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if created {
        if let Ok(v) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, v);
        }
    }
    Ok(response)
}
