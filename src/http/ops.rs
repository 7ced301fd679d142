//! The operational routes: liveness (`/healthz`), readiness (`/readyz`) and Prometheus metrics
//! (`/metrics`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::Auth;
use super::errors::ApiError;
use super::metrics::Gauges;
use super::state::AppState;
use super::types::{Health, Readiness};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The longest a readiness check or a scrape waits for the stream's last sequence.
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

/// `GET /readyz`: 200 when NATS is connected and the stream can be read, else 503; reports how
/// far the projections lag behind the stream.
pub async fn readyz(State(state): State<AppState>) -> Response {
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
        nats: nats.into(),
        stream_last_seq: last,
        projection_checkpoint: checkpoint,
        projection_lag: last.map(|l| l.saturating_sub(checkpoint)),
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(1u64));
    }
    response
}

/// `GET /metrics` (operator, service): Prometheus text format.
pub async fn metrics(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    auth.require_staff()?;
    let s = state.get();
    let (_, connected) = connection(&s.nats);
    let stream_last_seq = if connected {
        stream_last_seq(&state).await.ok()
    } else {
        None
    };
    let gauges = Gauges {
        nats_connected: connected,
        feeds_open: s.feeds.open(),
        stream_last_seq,
        checkpoint: s.store.checkpoint(),
        capacity: s.store.capacity().ok(),
        vms: s.store.vms().unwrap_or_default(),
    };
    let text = s.metrics.render(&gauges);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
