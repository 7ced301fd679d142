//! The background task that keeps a writer lease alive and says when it is lost.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Lease;
use crate::log::LeaseError;

/// A lease renewed every [`renew_every`](super::renew_every) (TTL/3) by a background task.
///
/// The writer decides only while [`LeaseHandle::lost`] has not fired. Dropping the handle stops the
/// renewals (the lease then lapses after its TTL); [`LeaseHandle::release`] stops them and hands
/// the lease over at once.
#[derive(Debug)]
pub struct LeaseHandle {
    holder: String,
    lost: CancellationToken,
    stop: CancellationToken,
    task: Option<JoinHandle<Option<Lease>>>,
}

impl LeaseHandle {
    pub(super) fn spawn(lease: Lease) -> Self {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let holder = lease.holder.clone();
        let task = tokio::spawn(renew_until_stopped(lease, lost.clone(), stop.clone()));
        Self {
            holder,
            lost,
            stop,
            task: Some(task),
        }
    }

    /// Who holds the lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// A token cancelled when the lease is lost (taken over, or not renewed before its deadline).
    /// Select on `lost().cancelled()` and stop deciding when it fires.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Stops renewing and releases the lease so that a standby takes over at once. Succeeds
    /// without doing anything when the lease was already lost.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.stop.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(Some(lease)) => lease.release().await,
            Ok(None) => Ok(()),
            Err(join) => Err(LeaseError::Jetstream(format!(
                "lease renewal task failed: {join}"
            ))),
        }
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Renews `lease` until `stop` fires (returning it) or it is lost (firing `lost`, returning
/// `None`). A failed renewal is retried every TTL/10 until the lease's deadline.
async fn renew_until_stopped(
    mut lease: Lease,
    lost: CancellationToken,
    stop: CancellationToken,
) -> Option<Lease> {
    let every = super::renew_every(lease.ttl);
    let retry = (lease.ttl / 10).max(Duration::from_millis(10));
    let mut next = Instant::now() + every;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Some(lease),
            _ = tokio::time::sleep_until(next) => {}
        }
        let deadline = lease.deadline();
        match tokio::time::timeout_at(deadline, lease.renew()).await {
            Ok(Ok(())) => next = Instant::now() + every,
            Ok(Err(LeaseError::Lost { holder })) => {
                tracing::warn!(holder = ?holder, "writer lease lost to another holder");
                lost.cancel();
                return None;
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "writer lease renewal failed, retrying");
                if Instant::now() >= deadline {
                    lost.cancel();
                    return None;
                }
                next = (Instant::now() + retry).min(deadline);
            }
            Err(_elapsed) => {
                tracing::warn!("writer lease expired before a renewal got through");
                lost.cancel();
                return None;
            }
        }
    }
}
