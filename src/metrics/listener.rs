//! The metrics listener of `serve --metrics-addr`: `GET /metrics` with every metric of the
//! process, for the roles that have no HTTP bridge (a writer or a projector alone). It has no
//! authentication: bind it to an address only the scraper reaches (loopback, a private network).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Format, Metrics};

/// Why the metrics listener could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound (in use, no permission). Choose another `--metrics-addr`.
    #[error("binding the metrics listener to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running; `serve` starts it again.
    #[error("serving metrics: {0}")]
    Serve(std::io::Error),
}

/// The answer to a scrape: every metric in the format `headers` ask for.
pub async fn exposition(metrics: &Metrics, headers: &HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let body = metrics.scrape(format).await;
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn scrape(State(metrics): State<Metrics>, headers: HeaderMap) -> Response {
    exposition(&metrics, &headers).await
}

/// `GET /metrics`; anything else is 404.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(metrics)
}

/// Serves `metrics` on `addr` until `shutdown` fires.
pub async fn run(
    addr: SocketAddr,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    tracing::info!(%addr, "metrics listener up");
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(MetricsError::Serve)
}
