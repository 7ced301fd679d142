//! What a stored message is to a reader: an event, or a message every reader skips (and says so).
//!
//! Only the writer's appends are events. Each one carries `Nats-Expected-Last-Sequence` equal to
//! the sequence before it, and the server refused it otherwise, so a stored message whose header
//! does not name the sequence before its own was not appended by a writer: a stray publish onto
//! the event subjects (`nats pub orch.default.evt.session.x hello`), or a copy of an old event
//! (the server would have refused it with the header intact). Atomic batches are the one
//! exception: see [`appended_by_writer`]. The check guards against accidents, not against a
//! publisher who forges headers: that is what NATS permissions are for. Such a message is **foreign**: every
//! reader skips it, logs it, and counts it, and `verify` lists it; it never stops a reader.
//!
//! A message that does carry the writer's header but cannot be decoded (a corrupt payload, a
//! schema version from a newer release) is a real event that this reader cannot read. Skipping it
//! silently would make the reader diverge, so the read stops there with [`LogError::Decode`] until
//! an operator either upgrades the reader or **quarantines** the sequence
//! ([`crate::log::quarantine`]); from then on every reader skips it as quarantined.

use async_nats::header::{HeaderMap, NATS_EXPECTED_LAST_SEQUENCE};
use orchestrator_events::{codec, Envelope, Timestamp};

use super::batch::{BATCH_ID_HEADER, BATCH_SEQUENCE_HEADER};
use super::quarantine::{QuarantineRecord, QuarantineSet};
use super::LogError;

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its stream sequence.
    pub seq: u64,
    /// When the server stored it, in milliseconds since the Unix epoch.
    pub stored_at: Timestamp,
    /// The decoded envelope.
    pub envelope: Envelope,
}

/// One stored message, as a reader that tracks sequences sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An event the writer appended.
    Event(StoredEvent),
    /// A message that is not an event: the reader's position moves past it, nothing else changes.
    Skipped(Skipped),
}

impl Entry {
    /// The message's stream sequence.
    pub fn seq(&self) -> u64 {
        match self {
            Entry::Event(e) => e.seq,
            Entry::Skipped(s) => s.seq,
        }
    }
}

/// A message every reader skips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its stream sequence.
    pub seq: u64,
    /// When the server stored it.
    pub stored_at: Timestamp,
    /// The subject it was published on.
    pub subject: String,
    /// Why it is skipped.
    pub why: SkipReason,
}

/// Why a message is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not appended by a writer (its `Nats-Expected-Last-Sequence` does not name the sequence
    /// before it).
    Foreign,
    /// An undecodable event an operator quarantined, by the record at `record_seq`.
    Quarantined {
        /// The sequence of the quarantine record.
        record_seq: u64,
        /// The operator's reason.
        reason: String,
    },
    /// A quarantine record: a control message, not an event.
    QuarantineRecord(QuarantineRecord),
}

impl SkipReason {
    /// A one-line description, for logs and `verify`.
    pub fn describe(&self) -> String {
        match self {
            SkipReason::Foreign => "foreign: not appended by a writer".to_owned(),
            SkipReason::Quarantined { record_seq, reason } => {
                format!("quarantined by the record at {record_seq}: {reason}")
            }
            SkipReason::QuarantineRecord(r) => format!(
                "quarantine record of sequence {} by {}: {}",
                r.target_seq, r.actor, r.reason
            ),
        }
    }
}

/// Whether a message at `seq` with these headers was appended by a writer: the server checked its
/// `Nats-Expected-Last-Sequence`, which must name the sequence before it. In an atomic batch (NATS
/// 2.12+) only the first message carries that check, and the server stores the batch whole or not
/// at all: a later message of a batch (`Nats-Batch-Id` with a `Nats-Batch-Sequence` above 1) counts
/// as the writer's too.
pub fn appended_by_writer(seq: u64, headers: Option<&HeaderMap>) -> bool {
    let Some(headers) = headers else {
        return false;
    };
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.as_str().parse::<u64>().ok())
    };
    let checked = number(NATS_EXPECTED_LAST_SEQUENCE.as_ref())
        .is_some_and(|expected| expected.checked_add(1) == Some(seq));
    let later_in_batch = headers.get(BATCH_ID_HEADER).is_some()
        && number(BATCH_SEQUENCE_HEADER).is_some_and(|n| n > 1);
    checked || later_in_batch
}

/// A raw stored message, whichever way it was read.
pub struct RawMessage<'a> {
    /// Its stream sequence.
    pub seq: u64,
    /// When the server stored it.
    pub stored_at: Timestamp,
    /// Its subject.
    pub subject: &'a str,
    /// Its headers.
    pub headers: Option<&'a HeaderMap>,
    /// Its payload.
    pub payload: &'a [u8],
}

/// Classifies a stored message. Fails with [`LogError::Decode`] only for a writer's message that
/// cannot be decoded and is not quarantined.
pub fn classify(
    msg: RawMessage<'_>,
    quarantine_prefix: &str,
    quarantined: &QuarantineSet,
) -> Result<Entry, LogError> {
    let skipped = |why| {
        Ok(Entry::Skipped(Skipped {
            seq: msg.seq,
            stored_at: msg.stored_at,
            subject: msg.subject.to_owned(),
            why,
        }))
    };
    if !appended_by_writer(msg.seq, msg.headers) {
        return skipped(SkipReason::Foreign);
    }
    if msg.subject.starts_with(quarantine_prefix) {
        return match QuarantineRecord::decode(msg.payload) {
            Some(record) => skipped(SkipReason::QuarantineRecord(record)),
            None => skipped(SkipReason::Foreign),
        };
    }
    match codec::decode(msg.payload) {
        Ok(envelope) => Ok(Entry::Event(StoredEvent {
            seq: msg.seq,
            stored_at: msg.stored_at,
            envelope,
        })),
        Err(error) => match quarantined.get(msg.seq) {
            Some((record_seq, reason)) => skipped(SkipReason::Quarantined {
                record_seq,
                reason: reason.to_owned(),
            }),
            None => Err(LogError::Decode {
                seq: msg.seq,
                error,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    #[test]
    fn the_writer_mark_is_the_expected_sequence_before_the_message() {
        let h = headers(&[("Nats-Expected-Last-Sequence", "41")]);
        assert!(appended_by_writer(42, Some(&h)));
        assert!(!appended_by_writer(43, Some(&h)), "a copy stored later");
        assert!(!appended_by_writer(42, None), "a plain publish");
        let garbage = headers(&[("Nats-Expected-Last-Sequence", "x")]);
        assert!(!appended_by_writer(42, Some(&garbage)));
        assert!(!appended_by_writer(
            0,
            Some(&headers(&[(
                "Nats-Expected-Last-Sequence",
                "18446744073709551615"
            )]))
        ));
    }

    #[test]
    fn later_messages_of_an_atomic_batch_are_the_writers() {
        let later = headers(&[("Nats-Batch-Id", "b1"), ("Nats-Batch-Sequence", "7")]);
        assert!(appended_by_writer(50, Some(&later)));
        let first_without_check = headers(&[("Nats-Batch-Id", "b1"), ("Nats-Batch-Sequence", "1")]);
        assert!(!appended_by_writer(50, Some(&first_without_check)));
        let no_id = headers(&[("Nats-Batch-Sequence", "7")]);
        assert!(!appended_by_writer(50, Some(&no_id)));
    }
}
