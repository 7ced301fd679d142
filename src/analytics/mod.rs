//! Analyses of the recorded log: pure folds over its events that sit above the domain (they reuse
//! its rules) and below the command line and the bridge (which print and serve them).
//!
//! - [`window`]: a window of event time and how a sequence or a time becomes its bounds.
//! - [`as_of`]: the cell as of a sequence or a time, replayed from the log (`state --at`,
//!   `GET /v1/state`).
//! - [`timeline`]: sessions per status and pool utilisation sampled over a window (the dashboard's
//!   charts).
//! - [`read`]: streams the log into an analysis, with progress.
//! - [`usage`]: time in each status per user, game or VM, for billing.
//! - [`whatif`]: the recorded demand replayed against another placement policy or pool, compared
//!   with what was recorded.

pub mod as_of;
pub mod read;
pub mod timeline;
pub mod usage;
pub mod whatif;
pub mod window;

pub use read::{scan, ReadProgress};
pub use usage::{GroupBy, UsageFold, UsageReport, UsageRow};
pub use window::{resolve, Resolved, Window, WindowError};

use crate::log::{Point, Reader};

/// The usage of the window `[from, to)` grouped `by`, read from the log; `progress` is called after
/// each event read.
pub async fn usage(
    reader: &Reader,
    from: Point,
    to: Point,
    by: GroupBy,
    progress: impl FnMut(ReadProgress),
) -> Result<UsageReport, WindowError> {
    let resolved = resolve(reader, from, to).await?;
    let mut fold = UsageFold::new(resolved.window, by);
    scan(
        reader,
        resolved.last_seq,
        Some(resolved.window.to),
        |e| fold.apply(e.seq, e.envelope.occurred_at, &e.envelope.event),
        progress,
    )
    .await?;
    Ok(fold.finish())
}
