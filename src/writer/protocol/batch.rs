//! Batch command requests: many commands in one NATS request on `orch.<cell>.cmd.batch`, and one
//! reply listing each command's reply, in order.
//!
//! - JSON (`Content-Type: application/json`):
//!   `{"requests": [{"name": "start", "request": {"command_id": …, "actor": …, "command": {…}}}, …]}`,
//!   answered `{"replies": [<reply>, …]}`, each reply as a single command's.
//! - postcard: a list of `(name, body)` pairs, each body the postcard request that the command's
//!   own subject takes, answered with the postcard [`BatchReply`].
//!
//! Each command is decided on its own, in order, exactly as if it had been sent alone right after
//! the one before it: a command's rejection does not affect the others (a batch is not a
//! transaction), and each command id keeps its idempotency. A batch that cannot be read as a whole
//! (too large, too many commands, not a batch) is answered with one rejection:
//! `{"rejected": {"code": …, "message": …}}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{decode_as, encode_as, Reply, MAX_REQUEST_BYTES};

/// The name on the batch subject: `orch.<cell>.cmd.batch`.
pub const BATCH: &str = "batch";

/// The most commands in one batch request.
pub const MAX_BATCH_REQUESTS: usize = 1_000;

/// The largest batch request body, in bytes: under NATS's default `max_payload` of 1 MiB, with
/// room for headers. Each command's own body stays within [`MAX_REQUEST_BYTES`].
pub const MAX_BATCH_REQUEST_BYTES: usize = 1024 * 1024 - 8 * 1024;

/// One command of a JSON batch.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// The command's name, as on its own subject (`start`, `assign`, …).
    pub name: String,
    /// The request the command's own subject takes.
    pub request: serde_json::Value,
}

/// A JSON batch request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The commands, decided in this order.
    pub requests: Vec<BatchItem>,
}

/// The answer to a batch request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchReply {
    /// Each command's reply, in the order of the request.
    Replies(Vec<Reply>),
    /// The batch could not be read as a whole; no command of it was decided.
    Rejected {
        /// `payload_too_large`, `malformed_request` or `unsupported_content_type`.
        code: String,
        /// A human-readable explanation.
        message: String,
    },
}

impl BatchReply {
    pub(crate) fn rejected(code: &str, message: impl Into<String>) -> Self {
        BatchReply::Rejected {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// Encodes the reply as JSON or postcard.
    pub fn encode(&self, json: bool) -> Vec<u8> {
        encode_as(self, json)
    }

    /// Decodes a reply.
    pub fn decode(bytes: &[u8], json: bool) -> Result<Self, String> {
        decode_as(bytes, json)
    }
}

/// Splits a batch request into its commands: each one's name and body, in the batch's encoding,
/// for [`super::parse_request`].
// The error is the reply to send, built once per refused batch: its size costs nothing.
#[allow(clippy::result_large_err)]
pub fn parse_batch(payload: &[u8], json: bool) -> Result<Vec<(String, Vec<u8>)>, BatchReply> {
    if payload.len() > MAX_BATCH_REQUEST_BYTES {
        return Err(BatchReply::rejected(
            "payload_too_large",
            format!(
                "{} bytes, the limit for a batch is {MAX_BATCH_REQUEST_BYTES}",
                payload.len()
            ),
        ));
    }
    let malformed = |e: String| {
        BatchReply::rejected(
            "malformed_request",
            format!(
                "not a batch request ({} body): {e}",
                if json { "JSON" } else { "postcard" }
            ),
        )
    };
    let items: Vec<(String, Vec<u8>)> = if json {
        let batch: BatchRequest =
            serde_json::from_slice(payload).map_err(|e| malformed(e.to_string()))?;
        batch
            .requests
            .into_iter()
            .map(|i| {
                // A value that was just parsed always encodes.
                let body = serde_json::to_vec(&i.request).expect("a JSON value encodes");
                (i.name, body)
            })
            .collect()
    } else {
        let (items, rest) =
            postcard::take_from_bytes(payload).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed(format!("{} trailing bytes", rest.len())));
        }
        items
    };
    if items.len() > MAX_BATCH_REQUESTS {
        return Err(BatchReply::rejected(
            "payload_too_large",
            format!(
                "{} commands, the limit for a batch is {MAX_BATCH_REQUESTS}",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// Encodes a batch request from each command's name and body (as [`super::encode_request`] gives
/// it, in the same encoding).
pub fn encode_batch(items: &[(&str, Vec<u8>)], json: bool) -> Vec<u8> {
    if json {
        let batch = BatchRequest {
            requests: items
                .iter()
                .map(|(name, body)| BatchItem {
                    name: (*name).to_owned(),
                    request: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
                })
                .collect(),
        };
        encode_as(&batch, true)
    } else {
        encode_as(items, false)
    }
}

// Each command's body keeps the single request's limit.
const _: () = assert!(MAX_REQUEST_BYTES < MAX_BATCH_REQUEST_BYTES);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::command::SessionRef;
    use crate::domain::Command;
    use crate::writer::protocol::{encode_request, parse_request};
    use orchestrator_events::Actor;

    fn pause(id: &str, json: bool) -> (&'static str, Vec<u8>) {
        let cmd = Command::PauseSession(SessionRef {
            session_id: "s1".parse().unwrap(),
        });
        (
            "pause",
            encode_request(&id.parse().unwrap(), &Actor::user("u1"), &cmd, json),
        )
    }

    #[test]
    fn round_trips_both_encodings() {
        for json in [false, true] {
            let bytes = encode_batch(&[pause("c1", json), pause("c2", json)], json);
            let items = parse_batch(&bytes, json).unwrap();
            assert_eq!(items.len(), 2);
            for ((name, body), id) in items.iter().zip(["c1", "c2"]) {
                let req = parse_request(name, body, json).unwrap();
                assert_eq!(req.command_id.as_str(), id);
            }
        }
    }

    #[test]
    fn bad_batches_get_codes() {
        let code = |r: BatchReply| match r {
            BatchReply::Rejected { code, .. } => code,
            BatchReply::Replies(_) => panic!("answered"),
        };
        assert_eq!(
            code(parse_batch(b"[1,2]", true).unwrap_err()),
            "malformed_request"
        );
        assert_eq!(
            code(parse_batch(br#"{"requests":[],"x":1}"#, true).unwrap_err()),
            "malformed_request"
        );
        assert_eq!(
            code(parse_batch(b"\xff\xff\xff", false).unwrap_err()),
            "malformed_request"
        );
        let big = vec![b' '; MAX_BATCH_REQUEST_BYTES + 1];
        assert_eq!(
            code(parse_batch(&big, true).unwrap_err()),
            "payload_too_large"
        );
        let many: Vec<(&str, Vec<u8>)> = (0..=MAX_BATCH_REQUESTS)
            .map(|_| ("pause", vec![]))
            .collect();
        assert_eq!(
            code(parse_batch(&encode_batch(&many, false), false).unwrap_err()),
            "payload_too_large"
        );
    }
}
