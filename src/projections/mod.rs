//! Projections: read models of sessions and VMs in sled, rebuilt from the log at will.
//!
//! - [`model`]: the views readers get.
//! - [`keys`]: the store's layout.
//! - [`apply`]: how an event changes them, over any key-value store (sled, or memory for `verify`).
//! - [`store`]: the sled store: batches atomic with the checkpoint, reads, read-your-writes.
//! - [`open`]: opening it, and replacing a damaged one by an empty store to rebuild.
//! - [`health`]: how damage is found (at open and by reads), rebuilds counted by reason.
//! - [`projector`]: the loop that follows the log into the store, and rebuilds it after damage.
//!
//! sled holds derived state only: deleting it loses nothing.

pub mod apply;
pub mod health;
pub mod keys;
pub mod model;
mod open;
pub mod projector;
pub mod store;

pub use model::{Capacity, QueuedView, SessionCounts, SessionView, VmView};
pub use store::{Opened, Projections, SessionFilter, SessionPage};

/// The version of the read models' layout. Changing it makes every store rebuild from the log.
/// 3: ended sessions have no status index key.
pub const PROJECTION_VERSION: u32 = 3;

/// Why a projection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// sled failed (disk full, I/O error). Stop; the store may be rebuilt.
    #[error("projection store: {0}")]
    Sled(#[from] sled::Error),
    /// Another process holds the store. Use another data directory or stop the other process.
    #[error("projection store {path} is in use by another process")]
    Locked {
        /// The store's directory.
        path: String,
    },
    /// A stored value cannot be decoded, or the store is damaged otherwise. A read answers it as
    /// unavailable; the damage is reported and the projector rebuilds the store from the log.
    #[error("projection store corrupt at key {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// An event does not fit the projected state (it names an unknown session, say). The projector
    /// stops there; the log needs an operator's look.
    #[error("event at sequence {seq} does not fit the projection: {reason}")]
    Inconsistent {
        /// The event's stream sequence.
        seq: u64,
        /// What does not fit.
        reason: String,
    },
    /// Events arrived out of order or with a gap. The projector stops rather than skip.
    #[error("expected the event at sequence {expected}, got {got}")]
    OutOfOrder {
        /// The sequence that should come next.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// An event in the log cannot be decoded. The projector stops there.
    #[error("cannot decode the event at sequence {seq}: {reason}")]
    Decode {
        /// Its stream sequence.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A read-your-writes wait timed out.
    #[error("projection reached sequence {reached}, not {wanted}, in time")]
    Timeout {
        /// The sequence waited for.
        wanted: u64,
        /// Where the projection is.
        reached: u64,
    },
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Log(String),
    /// The store is being rebuilt from the log after damage: reads are refused until it reaches
    /// `target`. Retry shortly.
    #[error("the projections are being rebuilt from the log after damage (at {reached}{})",
        .target.map(|t| format!(" of {t}")).unwrap_or_default())]
    Rebuilding {
        /// Where the rebuild is.
        reached: u64,
        /// The log's end it must reach (`None`: not known yet).
        target: Option<u64>,
    },
}

impl ProjectionError {
    /// Whether this is damage of the store (a value that does not decode, sled's own corruption
    /// or I/O error), which a rebuild from the log repairs.
    pub fn is_damage(&self) -> bool {
        match self {
            ProjectionError::Corrupt { .. } => true,
            ProjectionError::Sled(
                sled::Error::Corruption { .. } | sled::Error::ReportableBug(_),
            ) => true,
            ProjectionError::Sled(sled::Error::Io(io)) => {
                io.kind() != std::io::ErrorKind::WouldBlock
            }
            _ => false,
        }
    }

    /// Whether a read failed for damage or a rebuild in progress: answered as unavailable (the
    /// bridge's 503 `projections_rebuilding`), never as data.
    pub fn is_rebuilding(&self) -> bool {
        self.is_damage() || matches!(self, ProjectionError::Rebuilding { .. })
    }
}
