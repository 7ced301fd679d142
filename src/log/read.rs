//! Reading the log: one event by sequence, the last sequence, and ordered replays.
//!
//! Replays use an ordered push consumer (ephemeral, flow-controlled, recreated from the last
//! delivered sequence if a message goes missing), so events arrive exactly once and in stream
//! order. An [`EventStream`] ends after a [`LogError::Decode`]: a reader must never skip an event
//! it cannot read, or its state would silently diverge from the log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use async_nats::header::HeaderMap;
use async_nats::jetstream::{
    self,
    consumer::{
        push::{Ordered, OrderedConfig, OrderedErrorKind},
        DeliverPolicy, ReplayPolicy,
    },
    stream::{ConsumerErrorKind, DirectGetErrorKind, Stream as JsStream},
};
use futures::Stream;
use orchestrator_events::subject::{all_events, session_events, stream_name};
use orchestrator_events::{codec, CellId, Envelope, SessionId, Timestamp};

use crate::log::error::{api_code, unavailable_or_other};
use crate::log::LogError;

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

/// One message fetched by sequence: the event and what travelled with it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The event.
    pub event: StoredEvent,
    /// The subject it was published on.
    pub subject: String,
    /// Its headers (`Orch-Event-Type`, `Orch-Schema-Version`, `Nats-Msg-Id`...).
    pub headers: HeaderMap,
}

/// A cheap, clonable handle that reads a cell's stream.
#[derive(Debug, Clone)]
pub struct Reader {
    js: jetstream::Context,
    cell: CellId,
    name: Arc<str>,
    stream: JsStream<()>,
}

impl Reader {
    /// A reader of `cell`'s stream. Sends nothing to the server.
    pub async fn new(js: jetstream::Context, cell: CellId) -> Result<Self, LogError> {
        let name = stream_name(&cell);
        let stream = js
            .get_stream_no_info(&name)
            .await
            .map_err(|e| LogError::Jetstream(e.to_string()))?;
        Ok(Self {
            js,
            cell,
            name: name.into(),
            stream,
        })
    }

    /// The cell this reader reads.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// The event stored at `seq`, or `None` when there is none (0, past the end).
    pub async fn get(&self, seq: u64) -> Result<Option<StoredMessage>, LogError> {
        if seq == 0 {
            return Ok(None);
        }
        let msg = match self.stream.direct_get(seq).await {
            Ok(msg) => msg,
            Err(err) => {
                return match err.kind() {
                    DirectGetErrorKind::NotFound => Ok(None),
                    DirectGetErrorKind::TimedOut => Err(LogError::Unavailable(err.to_string())),
                    DirectGetErrorKind::ErrorResponse(status, _) if status.as_u16() == 503 => {
                        Err(LogError::StreamNotFound(self.stream_name().to_owned()))
                    }
                    _ => Err(LogError::Jetstream(err.to_string())),
                }
            }
        };
        let envelope = codec::decode(&msg.payload).map_err(|error| LogError::Decode {
            seq: msg.sequence,
            error,
        })?;
        Ok(Some(StoredMessage {
            event: StoredEvent {
                seq: msg.sequence,
                stored_at: millis(msg.time),
                envelope,
            },
            subject: msg.subject.to_string(),
            headers: msg.headers,
        }))
    }

    /// The stream's last sequence (0 when it is empty).
    pub async fn last_seq(&self) -> Result<u64, LogError> {
        match self.stream.get_info().await {
            Ok(info) => Ok(info.state.last_sequence),
            Err(err) => Err(match api_code(&err) {
                Some(jetstream::ErrorCode::STREAM_NOT_FOUND) => {
                    LogError::StreamNotFound(self.stream_name().to_owned())
                }
                _ => unavailable_or_other(
                    matches!(
                        err.kind(),
                        jetstream::context::RequestErrorKind::TimedOut
                            | jetstream::context::RequestErrorKind::NoResponders
                    ),
                    err,
                ),
            }),
        }
    }

    /// Every event from `start_seq` on (1 or 0: from the beginning), then new ones as they are
    /// appended. Never ends by itself, except after an error.
    pub async fn read_from(&self, start_seq: u64) -> Result<EventStream, LogError> {
        self.open(all_events(&self.cell), from_seq(start_seq), None)
            .await
    }

    /// Every event stored at or after `start` (milliseconds since the Unix epoch), then new ones
    /// as they are appended (`tail --from <time>`).
    pub async fn read_from_time(&self, start: Timestamp) -> Result<EventStream, LogError> {
        let start_time = async_nats::datetime::from_nanos(i128::from(start) * 1_000_000)
            .map_err(|e| LogError::Jetstream(format!("start time {start}: {e}")))?;
        self.open(
            all_events(&self.cell),
            DeliverPolicy::ByStartTime { start_time },
            None,
        )
        .await
    }

    /// The events `from..=to_inclusive`, in order, then the end. Ends earlier if the log ends
    /// earlier (it waits for nothing). For replays: `state --at`, `verify`, rebuilds, recovery.
    pub async fn read_range(&self, from: u64, to_inclusive: u64) -> Result<EventStream, LogError> {
        if from.max(1) > to_inclusive {
            return Ok(EventStream::empty());
        }
        self.open(all_events(&self.cell), from_seq(from), Some(to_inclusive))
            .await
    }

    /// The events from `from` to the stream's last sequence when called, and that sequence.
    pub async fn read_to_end(&self, from: u64) -> Result<(u64, EventStream), LogError> {
        let last = self.last_seq().await?;
        Ok((last, self.read_range(from, last).await?))
    }

    /// One session's events, in order, up to the stream's last sequence when called (`history`).
    pub async fn session_history(&self, session: &SessionId) -> Result<EventStream, LogError> {
        let last = self.last_seq().await?;
        if last == 0 {
            return Ok(EventStream::empty());
        }
        self.open(
            session_events(&self.cell, session),
            DeliverPolicy::All,
            Some(last),
        )
        .await
    }

    fn stream_name(&self) -> &str {
        &self.name
    }

    async fn open(
        &self,
        filter_subject: String,
        deliver_policy: DeliverPolicy,
        to: Option<u64>,
    ) -> Result<EventStream, LogError> {
        let config = OrderedConfig {
            deliver_subject: self.js.client().new_inbox(),
            filter_subject,
            deliver_policy,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        };
        let consumer = self
            .js
            .create_consumer_on_stream(config, self.stream_name())
            .await
            .map_err(|err| match err.kind() {
                ConsumerErrorKind::JetStream(api)
                    if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    LogError::StreamNotFound(self.stream_name().to_owned())
                }
                kind => unavailable_or_other(
                    matches!(
                        kind,
                        ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request
                    ),
                    err,
                ),
            })?;
        if to.is_some() && consumer.cached_info().num_pending == 0 {
            return Ok(EventStream::empty());
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|e| LogError::Jetstream(e.to_string()))?;
        Ok(EventStream {
            inner: Some(messages),
            to,
        })
    }
}

fn from_seq(start_seq: u64) -> DeliverPolicy {
    if start_seq <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: start_seq,
        }
    }
}

fn millis(t: async_nats::datetime::DateTime) -> Timestamp {
    // i64 milliseconds reach past the year 292 million; the server's clock does not.
    (t.unix_timestamp_nanos() / 1_000_000) as Timestamp
}

/// Events in stream order, from an ordered consumer.
///
/// Bounded streams ([`Reader::read_range`], [`Reader::session_history`]) end at their last
/// sequence; every stream ends after an error it cannot recover from (a [`LogError::Decode`] among
/// them). A missed heartbeat is not an error here: the consumer is recreated from the last
/// delivered sequence and the stream goes on.
pub struct EventStream {
    inner: Option<Ordered>,
    to: Option<u64>,
}

impl EventStream {
    /// A stream with nothing in it.
    pub fn empty() -> Self {
        Self {
            inner: None,
            to: None,
        }
    }

    fn finish(&mut self) {
        self.inner = None;
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("open", &self.inner.is_some())
            .field("to", &self.to)
            .finish()
    }
}

impl Stream for EventStream {
    type Item = Result<StoredEvent, LogError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let msg = match Pin::new(inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(err))) => {
                    if err.kind() == OrderedErrorKind::MissingHeartbeat {
                        tracing::debug!(error = %err, "ordered consumer recreated");
                        continue;
                    }
                    this.finish();
                    return Poll::Ready(Some(Err(LogError::Jetstream(err.to_string()))));
                }
                Poll::Ready(Some(Ok(msg))) => msg,
            };
            let (seq, stored_at, pending) = match msg.info() {
                Ok(info) => (info.stream_sequence, millis(info.published), info.pending),
                Err(err) => {
                    this.finish();
                    return Poll::Ready(Some(Err(LogError::Jetstream(format!(
                        "message without JetStream metadata: {err}"
                    )))));
                }
            };
            if let Some(to) = this.to {
                if seq > to {
                    this.finish();
                    return Poll::Ready(None);
                }
                if seq == to || pending == 0 {
                    this.finish();
                }
            }
            return Poll::Ready(Some(match codec::decode(&msg.payload) {
                Ok(envelope) => Ok(StoredEvent {
                    seq,
                    stored_at,
                    envelope,
                }),
                Err(error) => {
                    this.finish();
                    Err(LogError::Decode { seq, error })
                }
            }));
        }
    }
}
