//! What-if: the recorded demand of a window replayed against another placement policy or another
//! pool, in memory, through the domain's own `decide` and `evolve`, and compared side by side with
//! what was recorded (peak and mean VMs used, mean load, rejections, waits in the queue).
//!
//! - [`demand`]: the caller's command behind each recorded event.
//! - [`pool`]: the pool file (`--vms`), JSON or TOML.
//! - [`replay`]: the two runs side by side, and how the system's own work is treated.
//! - [`stats`]: the figures of a run within the window.

pub mod demand;
pub mod pool;
pub mod replay;
pub mod stats;

use orchestrator_events::{PlacementPolicy, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use pool::{Pool, PoolVm};
pub use replay::{Placements, Replay};
pub use stats::{QueueWaits, RunStats};

use super::window::{resolve, Window, WindowError};
use super::{scan, ReadProgress};
use crate::log::point::format_time;
use crate::log::{Point, Reader};

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WhatIfReport {
    /// The window's start (inclusive), RFC 3339.
    pub from: String,
    /// The same, in milliseconds since the Unix epoch.
    pub from_ms: Timestamp,
    /// The window's end (exclusive), RFC 3339.
    pub to: String,
    /// The same, in milliseconds since the Unix epoch.
    pub to_ms: Timestamp,
    /// The what-if's placement policy: `packed`, `spread`, or `recorded` (each as it was).
    pub policy: String,
    /// The what-if's pool: `recorded`, or how many VMs and slots the pool file gives.
    pub pool: String,
    /// What the log recorded.
    pub recorded: RunStats,
    /// What the what-if did.
    pub whatif: RunStats,
    /// Sessions placed within the window in either run.
    pub placements_compared: u64,
    /// Of those, placed on another VM, or placed in one run only.
    pub placements_differing: u64,
    /// Events read.
    pub events_read: u64,
    /// The last sequence read.
    pub last_seq: u64,
}

impl WhatIfReport {
    fn new(
        window: Window,
        policy: Option<PlacementPolicy>,
        pool: Option<&Pool>,
        recorded: RunStats,
        whatif: RunStats,
        (placements_compared, placements_differing): (u64, u64),
        (events_read, last_seq): (u64, u64),
    ) -> Self {
        Self {
            from: format_time(window.from),
            from_ms: window.from,
            to: format_time(window.to),
            to_ms: window.to,
            policy: policy.map_or("recorded", |p| p.as_str()).to_owned(),
            pool: match pool {
                None => "recorded".to_owned(),
                Some(p) => format!(
                    "{} VMs, {} slots",
                    p.vms.len(),
                    p.vms.iter().map(|v| u64::from(v.capacity)).sum::<u64>()
                ),
            },
            recorded,
            whatif,
            placements_compared,
            placements_differing,
            events_read,
            last_seq,
        }
    }
}

/// The comparison, and every placement of each run within the window.
#[derive(Debug, Clone)]
pub struct WhatIfOutcome {
    /// The comparison.
    pub report: WhatIfReport,
    /// The recorded placements.
    pub recorded_placements: Placements,
    /// The what-if's placements.
    pub whatif_placements: Placements,
}

/// Why a what-if could not run.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    /// The window or the log; see [`WindowError`].
    #[error(transparent)]
    Window(#[from] WindowError),
    /// The pool file's VMs cannot be registered (a capacity out of range, an id twice): fix it.
    #[error("{0}")]
    Pool(String),
}

/// Replays the log up to the window's end against `policy` and `pool` (see [`Replay`]); `progress`
/// is called after each event read. The whole log before the window is replayed too, so that the
/// what-if's state at `from` is its own.
pub async fn whatif(
    reader: &Reader,
    from: Point,
    to: Point,
    policy: Option<PlacementPolicy>,
    pool: Option<Pool>,
    progress: impl FnMut(ReadProgress),
) -> Result<WhatIfOutcome, WhatIfError> {
    let resolved = resolve(reader, from, to).await?;
    let mut replay = Replay::new(resolved.window, policy, pool);
    let mut failed = None;
    scan(
        reader,
        resolved.last_seq,
        Some(resolved.window.to),
        |e| {
            if failed.is_none() {
                failed = replay.apply(e.seq, &e.envelope).err();
            }
        },
        progress,
    )
    .await?;
    match failed {
        Some(e) => Err(WhatIfError::Pool(e)),
        None => Ok(replay.finish()),
    }
}
