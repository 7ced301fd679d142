//! JetStream: the log.
//!
//! One stream per cell holds every event, in order, forever. This module owns everything that
//! touches it:
//!
//! - [`stream`]: [`LogConfig`] and [`ensure_stream`], which creates the stream or refuses to start
//!   when an existing one has other settings.
//! - [`version`]: the server's version and the [`Features`] it really supports (2.9 silently
//!   ignores several newer ones).
//! - [`append`]: [`Appender`], appends with `Nats-Expected-Last-Sequence` and `Nats-Msg-Id`, one at
//!   a time or pipelined.
//! - [`batch`]: atomic batches of appends (NATS 2.12+), the writer's group commit.
//! - [`read`]: [`Reader`], one message by sequence, the last sequence, and ordered replays that keep
//!   their own position across reconnects: [`EntryStream`] (every message) and [`EventStream`]
//!   (events only), in [`follow`].
//! - [`entry`]: what a stored message is to a reader: a writer's event, or a message every reader
//!   skips (foreign, quarantined).
//! - [`quarantine`]: an operator's record that one undecodable message is skipped by every reader.
//! - [`lease`]: the writer lease in a KV bucket: one active writer per cell.
//! - [`error`]: [`LogError`] and [`LeaseError`], and how a caller handles each variant.
//! - [`connection`]: the options of every NATS connection: its events logged and counted.
//! - [`point`]: [`Point`], a sequence or a time, as the command line and the bridge name one.

pub mod append;
pub mod batch;
pub mod connection;
pub mod entry;
pub mod error;
pub mod filter;
pub mod follow;
pub mod lease;
pub mod point;
pub mod quarantine;
pub mod read;
pub mod stream;
pub mod version;

pub use append::{Appended, Appender, PendingAppend, Prepared};
pub use batch::{batches_allowed, MAX_BATCH};
pub use entry::{Entry, SkipReason, Skipped, StoredEvent};
pub use error::{LeaseError, LogError};
pub use follow::{EntryStream, EventStream};
pub use lease::{ensure_lease_bucket, Lease, LeaseHandle, DEFAULT_LEASE_BUCKET, DEFAULT_LEASE_TTL};
pub use point::{parse_point, parse_point_at, parse_time_at, Point, POINT_FORMATS};
pub use quarantine::{QuarantineRecord, QuarantineSet};
pub use read::{LogIdentity, Reader, StoredMessage};
pub use stream::{ensure_stream, LogConfig, DEFAULT_DUPLICATE_WINDOW};
pub use version::{Features, ServerVersion};
