//! Role supervision: a role that fails (or ends by itself) is started again after a backoff while
//! the others go on; only a configuration error at its first start stops everything.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ServeError;
use crate::http::HttpError;
use crate::log::LogError;
use crate::metrics::MetricsError;

/// Records a failure that stops everything (a role's configuration refused at its first start).
#[derive(Clone)]
pub(super) struct Failures {
    pub(super) first: std::sync::Arc<std::sync::Mutex<Option<ServeError>>>,
    pub(super) stop: CancellationToken,
}

impl Failures {
    fn fatal(&self, role: &'static str, error: ServeError) {
        tracing::error!(role, error = %error, "role cannot start, shutting down");
        // A poisoned lock only means another role panicked while recording; keep the first error.
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert(error);
        }
        self.stop.cancel();
    }

    /// Runs a role until shutdown, restarting it after a failure (or an unexpected end) with a
    /// capped exponential backoff while the other roles go on. Only a configuration error at the
    /// role's first start stops everything.
    pub(super) async fn supervise<F, Fut, E>(self, role: &'static str, mut run: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: Into<ServeError>,
    {
        let mut backoff = MIN_BACKOFF;
        let mut restarts = 0u64;
        loop {
            let started = std::time::Instant::now();
            let outcome = run().await;
            if self.stop.is_cancelled() {
                return;
            }
            let error = match outcome {
                Ok(()) => ServeError::RoleEnded(role),
                Err(e) => e.into(),
            };
            if restarts == 0 && error.is_configuration() {
                return self.fatal(role, error);
            }
            if started.elapsed() > HEALTHY_RUN {
                backoff = MIN_BACKOFF;
            }
            restarts += 1;
            tracing::error!(
                role,
                error = %error,
                restarts,
                backoff_ms = backoff.as_millis() as u64,
                "role failed: restarting it; the other roles go on"
            );
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The first wait before a failed role is started again.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between restarts of a failing role.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A role that ran this long before failing starts again after the shortest wait.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

impl ServeError {
    /// Whether this is a configuration refused at start (no tokens, an address in use), which no
    /// restart can fix.
    fn is_configuration(&self) -> bool {
        matches!(
            self,
            ServeError::Http(HttpError::Config(_) | HttpError::Tokens(_) | HttpError::Bind { .. })
                | ServeError::Metrics(MetricsError::Bind { .. })
                | ServeError::Log(LogError::StreamConflict { .. })
        )
    }
}
