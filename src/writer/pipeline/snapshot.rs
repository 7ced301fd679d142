//! Snapshots of the confirmed state, saved in the background while commands go on.

use super::Pipeline;
use crate::writer::recovery;

impl Pipeline<'_> {
    /// Starts saving a snapshot of the state in the background: the copy is taken here, the
    /// encoding, write and fsync happen on a blocking thread while commands go on.
    /// Only confirmed state is saved: when an event folded into the state was not acknowledged
    /// (the writer stops with appends that failed), no snapshot is taken.
    pub(super) fn start_snapshot(&mut self) {
        self.since_snapshot = 0;
        self.last_snapshot = tokio::time::Instant::now();
        let (Some(path), Some(last_event)) = (self.snapshot.clone(), self.last_event.clone())
        else {
            return;
        };
        if self.state.last_seq != self.confirmed_seq {
            tracing::info!(
                seq = self.state.last_seq,
                confirmed = self.confirmed_seq,
                "no snapshot: the state holds events the log did not confirm"
            );
            return;
        }
        let state = self.state.clone();
        let cell = self.config.log.cell.clone();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            let seq = state.last_seq;
            recovery::save_snapshot(&path, &cell, &last_event, &state).map(|()| seq)
        }));
    }

    /// Logs a finished background save.
    pub(super) fn reap_snapshot(&mut self) {
        if self.saving.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(saving) = self.saving.take() {
                log_snapshot(
                    futures::FutureExt::now_or_never(saving).unwrap_or_else(|| {
                        Ok(Err(std::io::Error::other("finished task not ready")))
                    }),
                );
            }
        }
    }
}

pub(super) type Saving = tokio::task::JoinHandle<std::io::Result<u64>>;

pub(super) fn log_snapshot(res: Result<std::io::Result<u64>, tokio::task::JoinError>) {
    match res {
        Ok(Ok(seq)) => tracing::info!(seq, "writer snapshot saved"),
        Ok(Err(e)) => tracing::warn!(error = %e, "writer snapshot failed"),
        Err(e) => tracing::warn!(error = %e, "writer snapshot task failed"),
    }
}
