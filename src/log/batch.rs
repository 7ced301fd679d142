//! Atomic batches of appends (NATS 2.12+): group commit.
//!
//! A batch is stored whole or not at all, with one fsync for all of its messages (on a server with
//! `sync_interval: always`, the per-message fsync is what bounds a writer). The messages carry
//! `Nats-Batch-Id` and `Nats-Batch-Sequence` (from 1); the last one also `Nats-Batch-Commit: 1`
//! and is the only one sent as a request: its ack names the batch's last sequence. The first one
//! carries `Nats-Expected-Last-Sequence`, checked for the batch as a whole.
//!
//! **No `Nats-Msg-Id`**: the server refuses it (and `Nats-Expected-Last-Msg-Id`) inside a batch.
//! So a batch must expect a sequence the writer *knows* is its own, the last one it had
//! acknowledged: with one batch in flight at a time, a stale writer's batch then stores nothing,
//! whatever another writer appended. Command ids are deduplicated by the writer's idempotency
//! table (restored from the log), as for single appends.
//!
//! On a server before 2.12 the headers are ignored and every message would be stored on its own
//! with only the first checked: [`Appender::send_batch`] must only be used where
//! [`batches_allowed`] says so.

use async_nats::header::{self, HeaderValue};
use async_nats::jetstream::stream::Config;

use super::append::{publish_error, Appender, PendingAppend, Prepared};
use super::error::api_code;
use super::{Features, LogError};

/// The most messages a server accepts in one atomic batch.
pub const MAX_BATCH: usize = 1_000;

/// The header naming an atomic batch.
pub const BATCH_ID_HEADER: &str = "Nats-Batch-Id";
/// The header giving a message's place in its atomic batch, from 1.
pub const BATCH_SEQUENCE_HEADER: &str = "Nats-Batch-Sequence";
/// The header on a batch's last message that commits it.
pub const BATCH_COMMIT_HEADER: &str = "Nats-Batch-Commit";

/// The server's code for a batch sent to a stream without `allow_atomic`.
const ATOMIC_PUBLISH_DISABLED: u64 = 10174;

/// Whether atomic batches can be sent to a stream of this configuration on a server with these
/// features: the server supports them (2.12+) and the stream allows them (`allow_atomic`).
pub fn batches_allowed(features: Features, stream: &Config) -> bool {
    features.atomic_batch && stream.allow_atomic_publish
}

impl Appender {
    /// Sends `batch` (2 to [`MAX_BATCH`] prepared events, in order) as one atomic batch expecting
    /// the stream's last sequence to be `expected_last_seq`, which must be a sequence this writer
    /// saw acknowledged (see the module docs). The returned ack names the batch's last sequence.
    ///
    /// Fails with [`LogError::Unsupported`] when the stream does not allow atomic batches, and
    /// like a single append otherwise ([`LogError::WrongLastSequence`]: nothing stored).
    pub async fn send_batch(
        &self,
        batch: Vec<Prepared>,
        expected_last_seq: u64,
    ) -> Result<PendingAppend, LogError> {
        let len = batch.len();
        if !(2..=MAX_BATCH).contains(&len) {
            return Err(LogError::InvalidEnvelope(format!(
                "an atomic batch holds 2 to {MAX_BATCH} events, not {len}"
            )));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let client = self.js.client();
        for (i, prepared) in batch.into_iter().enumerate() {
            let Prepared {
                subject,
                mut headers,
                payload,
                ..
            } = prepared;
            headers.insert(BATCH_ID_HEADER, id.as_str());
            headers.insert(BATCH_SEQUENCE_HEADER, HeaderValue::from(i + 1));
            if i == 0 {
                headers.insert(
                    header::NATS_EXPECTED_LAST_SEQUENCE,
                    HeaderValue::from(expected_last_seq),
                );
            }
            if i + 1 < len {
                client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| LogError::Unavailable(format!("sending a batch: {e}")))?;
                continue;
            }
            headers.insert(BATCH_COMMIT_HEADER, "1");
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|err| batch_error(err, expected_last_seq, &self.stream))?;
            client
                .flush()
                .await
                .map_err(|e| LogError::Unavailable(format!("sending a batch: {e}")))?;
            return Ok(PendingAppend {
                ack,
                expected: expected_last_seq,
                stream: self.stream.clone(),
                batch: true,
            });
        }
        unreachable!("a batch of 2 or more events ends with its commit")
    }
}

/// Maps a batch's publish error: a stream that does not allow batches is its own case.
pub(super) fn batch_error(
    err: async_nats::jetstream::context::PublishError,
    expected: u64,
    stream: &str,
) -> LogError {
    if api_code(&err).is_some_and(|c| c.0 == ATOMIC_PUBLISH_DISABLED) {
        return LogError::Unsupported(format!("atomic batches on stream {stream}: {err}"));
    }
    publish_error(err, expected, stream)
}
