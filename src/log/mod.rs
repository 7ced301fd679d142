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
//! - [`read`]: [`Reader`], one event by sequence, the last sequence, and ordered replays as an
//!   [`EventStream`] (whole log, a range, one session, from a time).
//! - [`lease`]: the writer lease in a KV bucket: one active writer per cell.
//! - [`error`]: [`LogError`] and [`LeaseError`], and how a caller handles each variant.

pub mod append;
pub mod error;
pub mod lease;
pub mod read;
pub mod stream;
pub mod version;

pub use append::{Appended, Appender, PendingAppend};
pub use error::{LeaseError, LogError};
pub use lease::{ensure_lease_bucket, Lease, LeaseHandle, DEFAULT_LEASE_BUCKET, DEFAULT_LEASE_TTL};
pub use read::{EventStream, Reader, StoredEvent, StoredMessage};
pub use stream::{ensure_stream, LogConfig};
pub use version::{Features, ServerVersion};
