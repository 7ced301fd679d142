//! Errors of the log layer, and how a caller handles each one.
//!
//! Two enums: [`LogError`] for the stream (setup, appends, reads) and [`LeaseError`] for the writer
//! lease. A concurrency conflict is always its own variant ([`LogError::WrongLastSequence`],
//! [`LeaseError::Lost`]), never a string to match on. The helpers at the bottom map async-nats' many
//! error kinds onto these on purpose, so that "NATS is unreachable" always becomes `Unavailable`.

use std::fmt::Display;

use async_nats::jetstream::{Error as ApiError, ErrorCode};
use orchestrator_events::DecodeError;

/// What went wrong with the log (the cell's JetStream stream).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// NATS could not be reached or did not answer in time. Retry later with backoff. An append that
    /// failed this way may or may not have been stored: retry it with the same command id (the
    /// stream's duplicate window dedups it) or catch up from the log before deciding again.
    #[error("NATS unavailable: {0}")]
    Unavailable(String),

    /// The expected-sequence check failed: the stream's last sequence was not the one the writer
    /// expected (another writer appended, or an earlier append of a pipeline failed). Nothing was
    /// stored. The writer must catch up from the log and re-decide the command.
    #[error("wrong last sequence: expected {expected}, the stream is at {actual:?}")]
    WrongLastSequence {
        /// The sequence the append expected to be the stream's last.
        expected: u64,
        /// The stream's actual last sequence, when the server said it.
        actual: Option<u64>,
    },

    /// The stream (or the lease bucket's stream) exists with a setting this build does not accept.
    /// Refuse to start: an operator must fix or migrate the stream; nothing is changed
    /// automatically.
    #[error("stream {stream} exists with {setting} = {existing}, but this build wants {wanted}")]
    StreamConflict {
        /// The stream's name.
        stream: String,
        /// The first conflicting setting, as named in the stream's JSON config (`storage`, ...).
        setting: String,
        /// Its value on the server.
        existing: String,
        /// The value this build wants.
        wanted: String,
    },

    /// The stream does not exist (or JetStream is not enabled on the server). Run the stream setup
    /// ([`crate::log::ensure_stream`]) first, or check the cell's name.
    #[error("stream {0} not found")]
    StreamNotFound(String),

    /// A stored message could not be decoded. A reader must stop here and report it: skipping
    /// would make every projection diverge from the log. Usually a newer release wrote it: upgrade.
    #[error("message {seq} cannot be decoded: {error}")]
    Decode {
        /// The message's stream sequence.
        seq: u64,
        /// Why it could not be decoded.
        #[source]
        error: DecodeError,
    },

    /// A whole-log read skipped a sequence, or its consumer kept restarting behind its position.
    /// Nothing was applied past `expected`: read again from your own position.
    #[error("log read out of order: expected sequence {expected}, read {got}")]
    Gap {
        /// The sequence that had to come next.
        expected: u64,
        /// The one that came.
        got: u64,
    },

    /// The message at `seq` is not an event (foreign, quarantined, or a quarantine record): every
    /// reader skips it. Nothing to retry.
    #[error("message {seq} is not an event: {why}")]
    NotAnEvent {
        /// Its stream sequence.
        seq: u64,
        /// Why it is skipped.
        why: String,
    },

    /// The envelope cannot be published as it is (its command id is not a valid header value, or
    /// the message exceeds a size limit). A bug or a bad command: reject it, do not retry.
    #[error("envelope cannot be published: {0}")]
    InvalidEnvelope(String),

    /// The server lacks something this operation needs (too old a version). Refuse to start, or
    /// fall back to a path that does not need it.
    #[error("unsupported by this NATS server: {0}")]
    Unsupported(String),

    /// Any other error the server or the client reported. Log it and fail the operation; retrying
    /// blindly is unlikely to help.
    #[error("JetStream error: {0}")]
    Jetstream(String),
}

/// What went wrong with the writer lease (one active writer per cell).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease is no longer ours: another holder took it, or it expired before a renewal got
    /// through. Stop deciding at once; acquire the lease again and catch up from the log before
    /// writing (the expected-sequence check fences any append still in flight).
    #[error("writer lease lost (now held by {holder:?})")]
    Lost {
        /// Who holds it now, when known.
        holder: Option<String>,
    },

    /// NATS could not be reached or did not answer in time. Retry; a holder keeps the lease only
    /// until its local deadline, after which the renewal task reports [`LeaseError::Lost`].
    #[error("NATS unavailable: {0}")]
    Unavailable(String),

    /// The lease entry holds something that is not a lease. Refuse: an operator must inspect the
    /// bucket (`writer.<cell>` keys hold JSON written by this module only).
    #[error("lease entry {key} is corrupt: {reason}")]
    Corrupt {
        /// The KV key.
        key: String,
        /// What was wrong with it.
        reason: String,
    },

    /// Acquiring was cancelled by the caller (shutdown) before the lease was obtained.
    #[error("acquiring the writer lease was cancelled")]
    Cancelled,

    /// Setting up the lease bucket failed (see [`LogError`] for how to handle each case).
    #[error(transparent)]
    Log(#[from] LogError),

    /// Any other KV error. Log it and fail the operation.
    #[error("KV error: {0}")]
    Jetstream(String),
}

/// The JetStream API error inside an async-nats error, if there is one.
pub(crate) fn api_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ApiError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(api) = e.downcast_ref::<ApiError>() {
            return Some(api);
        }
        cur = e.source();
    }
    None
}

/// The JetStream error code inside an async-nats error, if there is one.
pub(crate) fn api_code(err: &(dyn std::error::Error + 'static)) -> Option<ErrorCode> {
    api_error(err).map(ApiError::error_code)
}

/// Parses the stream's actual last sequence out of a "wrong last sequence: N" API error.
pub(crate) fn actual_last_sequence(err: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let text = api_error(err)?.to_string();
    let rest = text.split("wrong last sequence:").nth(1)?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `Unavailable` when `timed_out`, else `Jetstream`, carrying the error's text.
pub(crate) fn unavailable_or_other(timed_out: bool, err: impl Display) -> LogError {
    if timed_out {
        LogError::Unavailable(err.to_string())
    } else {
        LogError::Jetstream(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actual_sequence() {
        let api: ApiError = serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": 10071, "description": "wrong last sequence: 42"
        }))
        .unwrap();
        assert_eq!(actual_last_sequence(&api), Some(42));
        assert_eq!(api_code(&api), Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE));
        let other: ApiError = serde_json::from_value(serde_json::json!({
            "code": 503, "err_code": 10008, "description": "jetstream not ready"
        }))
        .unwrap();
        assert_eq!(actual_last_sequence(&other), None);
    }
}
