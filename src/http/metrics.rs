//! `GET /metrics` (operator, service): every metric of the process (see [`crate::metrics`]), in
//! the Prometheus text format 0.0.4, or OpenMetrics 1.0 when `Accept` asks for it.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::auth::Auth;
use super::errors::ApiError;
use super::state::AppState;

/// `GET /metrics` (operator, service).
pub async fn metrics(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.require_staff()?;
    Ok(crate::metrics::listener::exposition(&state.get().process_metrics, &headers).await)
}
