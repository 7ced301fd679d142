//! The middleware around every route: counts each answered request by route template, method and
//! status, and its latency, whoever answered it (a handler, an extractor's refusal, authentication,
//! the rate limit, the fallbacks for unknown routes and methods).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::state::AppState;
use crate::metrics::bridge::UNMATCHED_ROUTE;

/// Times the request and counts its response in `orch_http_requests_total` and
/// `orch_http_request_duration_seconds`. An event feed counts when its stream starts.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let method = req.method().clone();
    let response = next.run(req).await;
    state.get().metrics.record_request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
