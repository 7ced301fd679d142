//! The operational routes: liveness (`/healthz`) and readiness (`/readyz`: the status for anyone,
//! the details for operators and services). Metrics (`/metrics`) are in [`super::metrics`].

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::optional_principal;
use super::state::AppState;
use super::tokens::Role;
use super::types::{Health, Readiness, ReadinessDetails};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The longest a readiness check waits for the stream's last sequence.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The stream's last sequence, or why not.
async fn stream_last_seq(state: &AppState) -> Result<u64, String> {
    match tokio::time::timeout(STREAM_READ_TIMEOUT, state.get().reader.last_seq()).await {
        Ok(Ok(last)) => Ok(last),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {STREAM_READ_TIMEOUT:?}")),
    }
}

fn connection(client: &async_nats::Client) -> (&'static str, bool) {
    use async_nats::connection::State as Conn;
    match client.connection_state() {
        Conn::Connected => ("connected", true),
        Conn::Pending => ("pending", false),
        Conn::Disconnected => ("disconnected", false),
    }
}

/// `GET /readyz`: 200 when NATS is connected and the stream can be read, else 503.
///
/// The route is public, as a Kubernetes probe expects, and then answers `{"ready": bool}` only.
/// With an operator's or a service's bearer token it also says how far the projections lag behind
/// the stream (the figures `/metrics` shows them). Any other token (a player's, an unknown one)
/// gets the public answer, never a 401: the status never depends on the token, so a probe
/// configured with a stale token still reports readiness.
pub async fn readyz(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let staff = optional_principal(&headers, &state)
        .is_some_and(|p| matches!(p.role, Role::Operator | Role::Service));
    let s = state.get();
    let (nats, connected) = connection(&s.nats);
    let last = if connected {
        match stream_last_seq(&state).await {
            Ok(last) => Some(last),
            Err(e) => {
                tracing::warn!(error = %e, "readiness: cannot read the stream's last sequence");
                None
            }
        }
    } else {
        None
    };
    let checkpoint = s.store.checkpoint();
    let body = Readiness {
        ready: connected && last.is_some(),
        details: staff.then(|| ReadinessDetails {
            nats: nats.into(),
            stream_last_seq: last,
            projection_checkpoint: checkpoint,
            projection_lag: last.map(|l| l.saturating_sub(checkpoint)),
            projections_rebuilding: s.store.is_rebuilding(),
        }),
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    // The body depends on the token: no shared cache may hand an operator's answer to anyone.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("authorization"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
    }
    response
}
