//! Streaming the log into an analysis: every event from the first sequence up to the window's end,
//! in order, with progress reported as it goes.
//!
//! The read starts at sequence 1. A session started long before the window may still be open in
//! it (sessions have no maximum length unless `--max-session-length` is set), and nothing short of
//! reading the log tells which are; folding an event before the window only updates one session's
//! status, so the early part of the read is cheap.

use futures::StreamExt;
use orchestrator_events::Timestamp;

use super::window::WindowError;
use crate::log::{Reader, StoredEvent};

/// How far a read has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadProgress {
    /// Events read so far.
    pub events: u64,
    /// The sequence of the last message read.
    pub seq: u64,
    /// The last sequence the read goes to.
    pub last_seq: u64,
}

/// Feeds `apply` every event of the log from sequence 1 up to `last_seq`, stopping before the first
/// event that happened at or after `until` (the writer never lets event time go backwards, so none
/// after it is earlier). Calls `progress` after each message. Returns how far it came.
pub async fn scan(
    reader: &Reader,
    last_seq: u64,
    until: Option<Timestamp>,
    mut apply: impl FnMut(&StoredEvent),
    mut progress: impl FnMut(ReadProgress),
) -> Result<ReadProgress, WindowError> {
    let mut at = ReadProgress {
        last_seq,
        ..ReadProgress::default()
    };
    let mut entries = reader.entries_range(1, last_seq).await?.events();
    while let Some(event) = entries.next().await {
        let event = event?;
        if until.is_some_and(|t| event.envelope.occurred_at >= t) {
            break;
        }
        apply(&event);
        at.events += 1;
        at.seq = event.seq;
        progress(at);
    }
    Ok(at)
}
