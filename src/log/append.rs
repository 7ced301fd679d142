//! Appends with an expected last sequence: the writer's only way into the log.
//!
//! Every append carries `Nats-Expected-Last-Sequence` (the last sequence the writer applied), so the
//! server stores it only if nothing else was appended meanwhile, and `Nats-Msg-Id` = the event's
//! id, a UUID the deciding writer generated. Readers rely on the first (see
//! [`crate::log::entry`]): a stored message whose expected sequence does not name the one before it
//! was not appended by a writer.
//!
//! [`Appender::append`] publishes and waits for the ack. [`Appender::send`] only publishes and
//! returns a [`PendingAppend`] to await later, so the writer can keep many appends in flight with
//! consecutive expected sequences. The server checks them in order: **if one fails its
//! expected-sequence check, every later one in the pipeline fails too** (each expected the failed
//! one to be stored). The writer must then catch up from the log and re-decide all of them.
//! Keep fewer unacknowledged appends than the JetStream context's `max_ack_inflight` (5,000 by
//! default): each holds a permit until its ack is awaited or dropped, and `send` waits for one.
//!
//! **Fencing identifies the decision, not the command.** A pipelined append also names the event
//! before it in `Nats-Expected-Last-Msg-Id`. That id is the event id, which only the writer that
//! decided the earlier event knows; a command id would not do, since callers choose those: during
//! a lease overlap a new writer may store another caller's command under the same command id, and
//! a stale writer's second append would then pass both checks on a prefix it was not decided on.
//!
//! Command ids are deduplicated by the writer's idempotency table, restored from the log, not by
//! the server: the server's duplicate window only ever sees one message per event id.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use async_nats::header::{self, HeaderMap, HeaderValue};
use async_nats::jetstream::{
    self,
    context::{PublishAckFuture, PublishErrorKind},
    ErrorCode,
};
use async_nats::Subject;
use bytes::Bytes;
use orchestrator_events::subject::{
    event_subject, stream_name, EVENT_TYPE_HEADER, SCHEMA_VERSION_HEADER,
};
use orchestrator_events::{codec, CellId, Envelope, CURRENT_VERSION, MAX_EVENT_BYTES};

use crate::log::batch::batch_error;
use crate::log::error::{actual_last_sequence, api_code};
use crate::log::LogError;

/// A stored append, as the server acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The event's stream sequence. For a duplicate, the sequence of the first copy.
    pub seq: u64,
    /// The server dropped this append as a duplicate of an earlier one with the same event id
    /// (within the duplicate window): nothing new was stored, the event is at `seq`.
    pub duplicate: bool,
}

/// A cheap, clonable handle that appends a cell's events to its stream.
///
/// A pipeline ([`Appender::send`] several times, then await the acks) must be driven from one
/// task: appends sent concurrently from several tasks reach the server in no defined order.
#[derive(Debug, Clone)]
pub struct Appender {
    pub(super) js: jetstream::Context,
    pub(super) cell: CellId,
    pub(super) stream: Arc<str>,
}

impl Appender {
    /// An appender for `cell`'s stream (which [`crate::log::ensure_stream`] set up).
    pub fn new(js: jetstream::Context, cell: CellId) -> Self {
        let stream = stream_name(&cell).into();
        Self { js, cell, stream }
    }

    /// The cell this appender writes to.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// Appends `env`, expecting the stream's last sequence to be `expected_last_seq` (0 for an
    /// empty stream), and waits for the server's ack.
    ///
    /// Fails with [`LogError::WrongLastSequence`] when the stream has moved on (nothing stored).
    pub async fn append(
        &self,
        env: &Envelope,
        expected_last_seq: u64,
    ) -> Result<Appended, LogError> {
        self.send(env, expected_last_seq).await?.await
    }

    /// Publishes `env` like [`Appender::append`] but returns as soon as it is sent, with a handle
    /// to await its ack. Publishes go out in call order; see the module docs for how a rejected
    /// one affects the rest of a pipeline.
    pub async fn send(
        &self,
        env: &Envelope,
        expected_last_seq: u64,
    ) -> Result<PendingAppend, LogError> {
        self.send_after(env, expected_last_seq, None).await
    }

    /// Like [`Appender::send`], and when `previous_event_id` is given, also sends
    /// `Nats-Expected-Last-Msg-Id` with it: the server stores the event only if the stream's last
    /// message is that event. A pipelined append names the append before it, so it can never be
    /// stored after someone else's event even when the sequence happens to match (another writer
    /// appended exactly as many events as failed before it). Only for a previous append still in
    /// flight: the server's memory of the last message id is only certain within the duplicate
    /// window.
    ///
    /// Nothing is sent when the envelope cannot be published as it is
    /// ([`LogError::InvalidEnvelope`]: an id that is not a header value, an encoding over
    /// [`MAX_EVENT_BYTES`]); retrying cannot fix that.
    pub async fn send_after(
        &self,
        env: &Envelope,
        expected_last_seq: u64,
        previous_event_id: Option<&str>,
    ) -> Result<PendingAppend, LogError> {
        let previous = previous_event_id
            .map(|id| header_value("event id", id))
            .transpose()?;
        let prepared = self.prepare(env)?;
        self.send_prepared(prepared, expected_last_seq, previous)
            .await
    }

    /// Checks that `env` can be published as it is and builds its message, without sending it:
    /// [`LogError::InvalidEnvelope`] for an event id that is not a header value or an encoding over
    /// [`MAX_EVENT_BYTES`] (retrying cannot fix either).
    pub fn prepare(&self, env: &Envelope) -> Result<Prepared, LogError> {
        let event_id = header_value("event id", &env.event_id)?;
        let mut headers = HeaderMap::new();
        headers.insert(EVENT_TYPE_HEADER, env.event.event_type().as_str());
        headers.insert(SCHEMA_VERSION_HEADER, HeaderValue::from(CURRENT_VERSION));
        let payload = codec::encode(env);
        // Readers refuse anything larger, so storing it would stop every replay at it.
        if payload.len() > MAX_EVENT_BYTES {
            return Err(LogError::InvalidEnvelope(format!(
                "encoded event of {} bytes exceeds the {MAX_EVENT_BYTES}-byte limit",
                payload.len()
            )));
        }
        Ok(Prepared {
            subject: event_subject(&self.cell, &env.event).into(),
            headers,
            event_id,
            payload: Bytes::from(payload),
        })
    }

    /// Sends one prepared event on its own, with `Nats-Msg-Id` and the expected-sequence checks
    /// of [`Appender::send_after`].
    pub async fn send_prepared(
        &self,
        prepared: Prepared,
        expected_last_seq: u64,
        previous_event_id: Option<HeaderValue>,
    ) -> Result<PendingAppend, LogError> {
        let Prepared {
            subject,
            mut headers,
            event_id,
            payload,
        } = prepared;
        headers.insert(
            header::NATS_EXPECTED_LAST_SEQUENCE,
            HeaderValue::from(expected_last_seq),
        );
        headers.insert(header::NATS_MESSAGE_ID, event_id);
        if let Some(previous) = previous_event_id {
            headers.insert(header::NATS_EXPECTED_LAST_MESSAGE_ID, previous);
        }
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|err| publish_error(err, expected_last_seq, &self.stream))?;
        Ok(PendingAppend {
            ack,
            expected: expected_last_seq,
            stream: self.stream.clone(),
            batch: false,
        })
    }
}

/// An event's message, checked and encoded, not yet sent ([`Appender::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(super) subject: Subject,
    /// Its headers, without the checks and ids that depend on how it is sent.
    pub(super) headers: HeaderMap,
    pub(super) event_id: HeaderValue,
    pub(super) payload: Bytes,
}

fn header_value(what: &str, id: &str) -> Result<HeaderValue, LogError> {
    id.parse::<HeaderValue>().map_err(|_| {
        LogError::InvalidEnvelope(format!("{what} {id:?} is not a valid header value"))
    })
}

/// An append that was sent; await it (or call [`PendingAppend::ack`]) for the server's answer.
///
/// Dropping it does not cancel the append: the server stores it (or not) all the same.
#[derive(Debug)]
#[must_use = "an append's outcome is only known by awaiting its ack"]
pub struct PendingAppend {
    pub(super) ack: PublishAckFuture,
    pub(super) expected: u64,
    pub(super) stream: Arc<str>,
    /// The commit of an atomic batch: its errors are mapped as a batch's.
    pub(super) batch: bool,
}

impl PendingAppend {
    /// The expected last sequence this append was sent with.
    pub fn expected_last_seq(&self) -> u64 {
        self.expected
    }

    /// Waits for the server's ack.
    pub async fn ack(self) -> Result<Appended, LogError> {
        let ack = self.ack.await.map_err(|err| {
            if self.batch {
                batch_error(err, self.expected, &self.stream)
            } else {
                publish_error(err, self.expected, &self.stream)
            }
        })?;
        if ack.stream != *self.stream {
            return Err(LogError::Jetstream(format!(
                "append stored in stream {} instead of {}",
                ack.stream, self.stream
            )));
        }
        Ok(Appended {
            seq: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

impl IntoFuture for PendingAppend {
    type Output = Result<Appended, LogError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.ack())
    }
}

pub(super) fn publish_error(
    err: jetstream::context::PublishError,
    expected: u64,
    stream: &str,
) -> LogError {
    match err.kind() {
        PublishErrorKind::WrongLastSequence => LogError::WrongLastSequence {
            expected,
            actual: actual_last_sequence(&err),
        },
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            LogError::Unavailable(err.to_string())
        }
        PublishErrorKind::MaxAckPending => LogError::Unavailable(err.to_string()),
        PublishErrorKind::StreamNotFound => LogError::StreamNotFound(stream.to_owned()),
        PublishErrorKind::MaxPayloadExceeded => LogError::InvalidEnvelope(err.to_string()),
        PublishErrorKind::Other
            if api_code(&err) == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) =>
        {
            LogError::InvalidEnvelope(err.to_string())
        }
        // The stream's last event is not the one this append was decided after: the same conflict.
        PublishErrorKind::WrongLastMessageId => LogError::WrongLastSequence {
            expected,
            actual: None,
        },
        PublishErrorKind::Other => LogError::Jetstream(err.to_string()),
    }
}
