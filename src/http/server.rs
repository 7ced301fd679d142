//! The router and the server loop: [`router`] for tests (`Router::oneshot`), [`serve`] on a bound
//! listener, [`run_bridge`] for `orchestrator serve`.

use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use orchestrator_events::CellId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::args::BridgeArgs;
use super::errors::ApiError;
use super::state::AppState;
use super::tokens::TokenError;
use super::{
    as_of, dashboard, events, history, metrics, observe, ops, sessions, timeline, usage, vms,
};
use crate::log::LogError;
use crate::metrics::Metrics;
use crate::projections::Projections;

/// Why the bridge could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configuration is unusable (no tokens, say). Fix the flags or the environment.
    #[error("bridge configuration: {0}")]
    Config(String),
    /// The tokens could not be loaded. Fix the tokens file or `ORCH_TOKENS`.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// The log reader could not be set up. Check NATS and the cell.
    #[error("opening the log: {0}")]
    Log(#[from] LogError),
    /// The address could not be bound (in use, no permission). Choose another `--listen`.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.get().openapi.as_ref().clone())
}

/// Every route of the bridge, with its body limit and problem answers for unknown routes and
/// methods.
pub fn router(state: AppState) -> Router {
    let limit = state.body_limit();
    Router::new()
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route("/v1/sessions/{id}", get(sessions::get))
        .route("/v1/sessions/{id}/pause", post(sessions::pause))
        .route("/v1/sessions/{id}/resume", post(sessions::resume))
        .route("/v1/sessions/{id}/end", post(sessions::end))
        .route("/v1/sessions/{id}/assign", post(sessions::assign))
        .route("/v1/sessions/{id}/history", get(history::history))
        .route("/v1/vms", post(vms::register).get(vms::list))
        .route("/v1/vms/{id}", get(vms::get))
        .route("/v1/vms/{id}/drain", post(vms::drain))
        .route("/v1/vms/{id}/retire", post(vms::retire))
        .route("/v1/capacity", get(vms::capacity))
        .route("/v1/events", get(events::events))
        .route("/v1/usage", get(usage::usage))
        .route("/v1/state", get(as_of::state_at))
        .route("/v1/stats/timeline", get(timeline::timeline))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/", get(dashboard::page))
        .route("/dashboard/{file}", get(dashboard::asset))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::track,
        ))
        .with_state(state)
}

/// Serves the bridge on `listener` until `shutdown` fires, then finishes the requests in hand
/// (event feeds end at once).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "HTTP bridge listening"),
        Err(e) => tracing::warn!(error = %e, "HTTP bridge listening on an unknown address"),
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(HttpError::Serve)?;
    tracing::info!("HTTP bridge stopped");
    Ok(())
}

/// Runs the bridge configured by `args` for `cell` until `shutdown` fires: commands go to the
/// cell's writer over `client`, event feeds read the log over `feeds` (a connection of their own),
/// reads come from `store` (kept up to date by a projector the caller runs). The bridge registers
/// its metrics into `metrics`, and its `GET /metrics` shows everything registered there.
pub async fn run_bridge(
    args: BridgeArgs,
    client: async_nats::Client,
    feeds: async_nats::Client,
    cell: CellId,
    store: Projections,
    shutdown: CancellationToken,
    metrics: Metrics,
) -> Result<(), HttpError> {
    let state = AppState::with_metrics(&args, client, cell, store, shutdown.clone(), metrics)
        .await?
        .feeds_on(feeds)
        .await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: args.listen,
            source,
        })?;
    serve(listener, state, shutdown).await
}
