//! The JSON feed: every event of the log, in log order, exactly once, as a CloudEvents 1.0 JSON
//! message in a stream of its own, so that a consumer in any language attaches a plain JetStream
//! durable consumer and reads JSON.
//!
//! - [`message`]: one event as a CloudEvent (structured mode), its subject and headers.
//! - [`stream`]: the feed stream `ORCH_<CELL>_FEED` over `orch.<cell>.feed.>`, its retention, and
//!   what its last message says.
//! - [`checkpoint`]: the local checkpoint file, for when the stream cannot tell.
//! - [`run`] (in [`publisher`]): the role: reads the log from where the feed stopped and republishes.
//!
//! # Exactly once
//!
//! The feed stream is its own checkpoint: its last message carries the log sequence it republished
//! (`sequence`), and it is stored in the same act as the publish, so a crash cannot fall between
//! "published" and "checkpoint saved". At every start the role reads the feed stream's last
//! message and resumes at the next log sequence: nothing skipped, nothing repeated. A local file
//! ([`checkpoint`]) only fills in what the stream cannot say: that the log messages after the last
//! feed message were skipped ones, or where the feed stood when retention emptied the stream.
//!
//! Two more guards cover publishes still in flight when a run fails (an ack lost with the
//! connection, a publish that reaches the server after the next run read the stream's end):
//!
//! - `Nats-Msg-Id` = the event id: the server drops a second copy of an event within the feed
//!   stream's duplicate window (2 minutes), so a publish sent again by the next run is stored once.
//! - `Nats-Expected-Last-Msg-Id` = the event id of the previous feed message, on every publish of a
//!   batch but its first (the role publishes up to 1,000 messages at once and awaits their acks
//!   before the next batch, so a batch's first message always follows a stored one): a message can
//!   only be stored right after the one before it, so a publish that lost its predecessor (written
//!   to a connection that broke, while it waited in the client's buffer) is refused instead of
//!   leaving a gap. The run then fails, and the next one starts again from the stream's end.
//!
//! `Nats-Expected-Last-Sequence` cannot serve here: it names the feed stream's own sequence, which
//! is not the log's (a foreign or quarantined log message has no feed message, and a rebuilt feed
//! starts again at 1), and a run that just started does not know which feed sequence its first
//! message must follow without reading the stream, which is what it does anyway.
//!
//! Several feed roles (one per `serve` process) can run against one cell: they read the same log and
//! publish the same event ids, so the duplicate window and the expected previous id make their
//! messages land once and in order.
//!
//! # What is not republished
//!
//! Only events are. A foreign message (not appended by a writer), a quarantine record, and a
//! quarantined message (an undecodable event an operator chose to skip) have no feed message: the
//! feed's `sequence` jumps over them. Like every reader, the feed holds at an undecodable event
//! that is not quarantined (it logs the error and retries every 2 s) until the binary is upgraded
//! or an operator runs `orchestrator quarantine <seq> --reason ...`; then it goes on past it.
//!
//! # Rebuilding
//!
//! The log stays the source of truth; the feed stream is derived. Delete it (`nats stream rm
//! ORCH_<CELL>_FEED`) and the role (restarted, or at its next failed publish) creates it again and
//! republishes the log from sequence 1. The checkpoint file names the stream it belongs to by
//! creation time, so it is ignored for the new one. A feed stream built from another log (the log
//! stream was deleted and created again) is refused until it is deleted.

pub mod checkpoint;
pub mod message;
pub mod publisher;
pub mod stream;

use std::path::PathBuf;
use std::time::Duration;

use orchestrator_events::CellId;

use crate::log::LogError;

pub use message::{cloud_event, feed_message, CloudEvent, FeedMessage, CLOUDEVENTS_JSON};
pub use publisher::run;
pub use stream::{ensure_feed_stream, FeedEnd};

/// How long the feed stream keeps a message by default: 7 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How the feed is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// The cell whose log is republished.
    pub cell: CellId,
    /// Copies of the feed stream in a cluster (as the log's).
    pub replicas: usize,
    /// How long the feed stream keeps a message (zero: no age limit).
    pub max_age: Duration,
    /// The most bytes the feed stream keeps, the oldest dropped first (`None`: no limit).
    pub max_bytes: Option<u64>,
    /// Where the checkpoint file lives (`<data-dir>/feed`); `None`: none.
    pub checkpoint_dir: Option<PathBuf>,
}

impl FeedConfig {
    /// The defaults for a cell: one replica, 7 days, no byte limit, no checkpoint file.
    pub fn new(cell: CellId) -> Self {
        Self {
            cell,
            replicas: 1,
            max_age: DEFAULT_MAX_AGE,
            max_bytes: None,
            checkpoint_dir: None,
        }
    }
}

/// Why the feed role stopped. Every one is retried by `serve` with a backoff; the ones that need
/// an operator say what to do.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Reading the log or setting up the feed stream failed (NATS unavailable, a conflicting feed
    /// stream). Retried; a conflict needs an operator (delete the feed stream).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A publish to the feed stream failed or was refused (no ack in time, a lost connection, a
    /// message that did not follow its predecessor). Retried from the feed stream's end.
    #[error("publishing to the feed stream: {0}")]
    Publish(String),
    /// The feed stream was built from another log. Delete it; the role rebuilds it.
    #[error(
        "the feed stream {stream} was built from another log ({found}; this log: {wanted}): \
         delete it (nats stream rm {stream}) and the feed rebuilds it"
    )]
    OtherLog {
        /// The feed stream.
        stream: String,
        /// Its description.
        found: String,
        /// What it should say.
        wanted: String,
    },
    /// The feed stream's last messages are not feed messages (someone published onto the feed
    /// subjects). Find and stop that publisher, or delete the feed stream to rebuild it.
    #[error("no feed message among the feed stream's last messages (up to {last})")]
    NoFeedMessage {
        /// The feed stream's last sequence.
        last: u64,
    },
    /// Retention removed every feed message and this node has no checkpoint of that stream, so
    /// where to resume is unknown. Delete the feed stream to rebuild it from the log.
    #[error(
        "the feed stream's messages all expired and no checkpoint of it is here: delete the feed \
         stream to rebuild it"
    )]
    PositionLost,
    /// The checkpoint file could not be written. Check the data directory.
    #[error("feed checkpoint {path}: {source}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}
