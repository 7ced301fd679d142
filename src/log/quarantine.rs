//! Quarantine: an operator's record, in the log, that one undecodable message is to be skipped.
//!
//! A writer's message that no reader can decode stops every reader at it (see [`super::entry`]).
//! When upgrading the readers cannot help (the payload is corrupt), an operator runs
//! `orchestrator quarantine <seq> --reason ...`, which appends a **quarantine record** to the same
//! stream, on `orch.<cell>.evt.quarantine.<seq>`, with the expected-sequence check like any append.
//! Every reader loads the records when it opens a read and skips the quarantined messages, saying
//! so; `verify` lists them. The record is never an event: projections and the writer's state only
//! move their position past it.
//!
//! Only a writer's undecodable message can be quarantined: a decodable event cannot be taken out of
//! history this way, and a foreign message is skipped already. A record that names a message which
//! decodes is ignored by readers.
//!
//! The record is appended by the CLI directly rather than through the writer, because the writer
//! itself cannot recover past the message it cannot read. It is the one other append to the log,
//! fenced by `Nats-Expected-Last-Sequence` all the same.

use std::collections::BTreeMap;

use async_nats::header::{self, HeaderMap, HeaderValue};
use async_nats::jetstream;
use bytes::Bytes;
use futures::TryStreamExt;
use orchestrator_events::{Actor, CellId, Timestamp};
use serde::{Deserialize, Serialize};

use super::entry::{appended_by_writer, Entry};
use super::error::{api_code, unavailable_or_other};
use super::{LogError, Reader};

/// The format version written before a record's postcard body.
const RECORD_VERSION: u16 = 1;

/// Header marking a control message of the log (value: `quarantine`).
pub const CONTROL_HEADER: &str = "Orch-Control";

/// An operator's decision to skip one undecodable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The sequence of the message every reader skips.
    pub target_seq: u64,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who decided.
    pub actor: Actor,
    /// When, in milliseconds since the Unix epoch.
    pub at: Timestamp,
}

impl QuarantineRecord {
    /// The bytes stored in the log: the version as a postcard varint, then the record.
    pub fn encode(&self) -> Vec<u8> {
        // A u16 and a plain struct of strings and integers always encode.
        let mut out = postcard::to_stdvec(&RECORD_VERSION).expect("a u16 always encodes");
        out.extend(postcard::to_stdvec(self).expect("a record always encodes"));
        out
    }

    /// Decodes a record; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (version, rest) = postcard::take_from_bytes::<u16>(bytes).ok()?;
        if version != RECORD_VERSION {
            return None;
        }
        match postcard::take_from_bytes::<Self>(rest) {
            Ok((record, [])) => Some(record),
            _ => None,
        }
    }
}

/// The subject prefix of a cell's quarantine records, `orch.<cell>.evt.quarantine.`.
pub fn subject_prefix(cell: &CellId) -> String {
    format!("orch.{cell}.evt.quarantine.")
}

/// The quarantined sequences of a log, each with the record's sequence and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineSet {
    by_target: BTreeMap<u64, (u64, String)>,
}

impl QuarantineSet {
    /// The record quarantining `seq`, if there is one: its sequence and reason.
    pub fn get(&self, seq: u64) -> Option<(u64, &str)> {
        self.by_target
            .get(&seq)
            .map(|(record, reason)| (*record, reason.as_str()))
    }

    /// Every quarantined sequence with its record's sequence and reason, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &str)> {
        self.by_target
            .iter()
            .map(|(t, (r, reason))| (*t, *r, reason.as_str()))
    }

    /// How many sequences are quarantined.
    pub fn len(&self) -> usize {
        self.by_target.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }

    /// Reads the records of `reader`'s stream: one stream-info request listing the record subjects,
    /// then the record on each. Records not appended by a writer are ignored.
    pub async fn load(reader: &Reader) -> Result<Self, LogError> {
        let prefix = subject_prefix(reader.cell());
        let info = reader
            .stream()
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|e| unavailable_or_other(true, e))?;
        let subjects: Vec<(String, usize)> = info
            .try_collect()
            .await
            .map_err(|e| LogError::Jetstream(format!("listing quarantine records: {e}")))?;
        let mut set = QuarantineSet::default();
        for (subject, _) in subjects {
            let msg = match reader.stream().direct_get_last_for_subject(&subject).await {
                Ok(msg) => msg,
                Err(e) => {
                    return Err(LogError::Jetstream(format!(
                        "reading quarantine record {subject}: {e}"
                    )))
                }
            };
            if !appended_by_writer(msg.sequence, Some(&msg.headers)) {
                tracing::warn!(
                    subject,
                    seq = msg.sequence,
                    "foreign quarantine record ignored"
                );
                continue;
            }
            match QuarantineRecord::decode(&msg.payload) {
                Some(r) if subject == format!("{prefix}{}", r.target_seq) => {
                    set.by_target.insert(r.target_seq, (msg.sequence, r.reason));
                }
                _ => tracing::warn!(subject, seq = msg.sequence, "malformed quarantine record"),
            }
        }
        Ok(set)
    }
}

/// Why a quarantine was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The log holds no message at that sequence.
    #[error("the log holds no message at sequence {0}")]
    NoSuchMessage(u64),
    /// The message decodes: quarantine is only for messages no reader can decode.
    #[error("message {0} is a readable event; only undecodable messages can be quarantined")]
    Readable(u64),
    /// The message is skipped by every reader already.
    #[error("message {seq} is skipped by every reader already ({why})")]
    AlreadySkipped {
        /// Its sequence.
        seq: u64,
        /// Why it is skipped.
        why: String,
    },
    /// The log could not be read or written.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Appends a quarantine record for the message at `target`, after checking that it is a writer's
/// message that cannot be decoded. Returns the record's sequence.
pub async fn quarantine(
    js: &jetstream::Context,
    reader: &Reader,
    target: u64,
    reason: &str,
    actor: Actor,
    at: Timestamp,
) -> Result<u64, QuarantineError> {
    match reader.entry(target).await {
        Ok(None) => return Err(QuarantineError::NoSuchMessage(target)),
        Ok(Some(Entry::Event(_))) => return Err(QuarantineError::Readable(target)),
        Ok(Some(Entry::Skipped(s))) => {
            return Err(QuarantineError::AlreadySkipped {
                seq: target,
                why: s.why.describe(),
            })
        }
        Err(LogError::Decode { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let record = QuarantineRecord {
        target_seq: target,
        reason: reason.to_owned(),
        actor,
        at,
    };
    let subject = format!("{}{target}", subject_prefix(reader.cell()));
    let payload = Bytes::from(record.encode());
    // Another append may land between reading the last sequence and appending: read it again.
    for _ in 0..10 {
        let last = reader.last_seq().await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_EXPECTED_LAST_SEQUENCE, HeaderValue::from(last));
        headers.insert(CONTROL_HEADER, "quarantine");
        let sent = js
            .publish_with_headers(subject.clone(), headers, payload.clone())
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
        match sent.await {
            Ok(ack) => {
                reader.forget_quarantined();
                return Ok(ack.sequence);
            }
            Err(e) if api_code(&e) == Some(jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE) => {
                continue
            }
            Err(e) => return Err(LogError::Jetstream(e.to_string()).into()),
        }
    }
    Err(LogError::Unavailable("the log kept moving; try again".into()).into())
}
