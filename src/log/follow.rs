//! [`EntryStream`] and [`EventStream`]: ordered reads of the log that keep their own position.
//!
//! An ordered push consumer delivers the messages; the stream checks each sequence against the one it
//! expects. A message delivered before (async-nats recreated the consumer from an earlier sequence,
//! as it does from the start of the stream after a reconnect when nothing was delivered yet) makes
//! it reopen its consumer at its own next sequence; a gap in a whole-log read is an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use async_nats::jetstream::consumer::push::{Ordered, OrderedErrorKind};
use futures::Stream;

use super::entry::{classify, Entry, RawMessage, StoredEvent};
use super::quarantine::QuarantineSet;
use super::read::{from_seq, millis, Reader, Scope};
use super::LogError;

/// How many times in a row a stream reopens its consumer without getting the sequence it wants
/// before it gives up with an error.
const MAX_REPEATS: u32 = 3;

type Reopening = Pin<Box<dyn Future<Output = Result<(Ordered, u64), LogError>> + Send>>;

/// Messages in stream order, each exactly once, from an ordered consumer it reopens by itself.
///
/// Bounded streams ([`Reader::entries_range`]) end at their last sequence; every stream ends after
/// an error it cannot recover from (a [`LogError::Decode`], a gap, a reopen that fails). A missed
/// heartbeat is not an error here: async-nats recreates the consumer, and a redelivery from an
/// earlier sequence makes this stream reopen at its own position.
pub struct EntryStream {
    reader: Option<Reader>,
    scope: Scope,
    quarantine: Arc<QuarantineSet>,
    inner: Option<Ordered>,
    reopening: Option<Reopening>,
    /// The sequence that must come next (unknown before the first message of a read by time).
    next: Option<u64>,
    to: Option<u64>,
    repeats: u32,
}

impl EntryStream {
    /// A stream over `consumer`, which starts at `next` (unknown for a read by time).
    pub(super) fn new(
        reader: Reader,
        scope: Scope,
        quarantine: Arc<QuarantineSet>,
        consumer: Ordered,
        next: Option<u64>,
        to: Option<u64>,
    ) -> Self {
        Self {
            reader: Some(reader),
            scope,
            quarantine,
            inner: Some(consumer),
            reopening: None,
            next,
            to,
            repeats: 0,
        }
    }

    /// A stream with nothing in it.
    pub fn empty() -> Self {
        Self {
            reader: None,
            scope: Scope::WholeLog,
            quarantine: Default::default(),
            inner: None,
            reopening: None,
            next: None,
            to: None,
            repeats: 0,
        }
    }

    /// The events only: skipped messages are left out (and logged at debug level).
    pub fn events(self) -> EventStream {
        EventStream { inner: self }
    }

    /// The quarantined sequences this read honours.
    pub fn quarantined(&self) -> &QuarantineSet {
        &self.quarantine
    }

    fn finish(&mut self) {
        self.inner = None;
        self.reopening = None;
    }

    fn fail(&mut self, e: LogError) -> Poll<Option<Result<Entry, LogError>>> {
        self.finish();
        Poll::Ready(Some(Err(e)))
    }

    /// Drops the consumer and opens a new one at the stream's own next sequence.
    fn reopen(&mut self, next: u64) {
        self.inner = None;
        self.repeats += 1;
        let (Some(reader), scope) = (self.reader.clone(), self.scope.clone()) else {
            return;
        };
        tracing::info!(
            next,
            "log read: the consumer restarted elsewhere; reopening at our position"
        );
        self.reopening = Some(Box::pin(async move {
            reader.consumer(&scope, from_seq(next)).await
        }));
    }
}

impl std::fmt::Debug for EntryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryStream")
            .field("open", &(self.inner.is_some() || self.reopening.is_some()))
            .field("next", &self.next)
            .field("to", &self.to)
            .finish()
    }
}

impl Stream for EntryStream {
    type Item = Result<Entry, LogError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(reopening) = this.reopening.as_mut() {
                match reopening.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok((consumer, _))) => {
                        this.reopening = None;
                        this.inner = Some(consumer);
                    }
                    Poll::Ready(Err(e)) => return this.fail(e),
                }
            }
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
                    return this.fail(LogError::Jetstream(err.to_string()));
                }
                Poll::Ready(Some(Ok(msg))) => msg,
            };
            let (seq, stored_at, pending) = match msg.info() {
                Ok(info) => (info.stream_sequence, millis(info.published), info.pending),
                Err(err) => {
                    return this.fail(LogError::Jetstream(format!(
                        "message without JetStream metadata: {err}"
                    )))
                }
            };
            if let Some(next) = this.next {
                if seq < next {
                    // Delivered before: the consumer was recreated from an earlier sequence.
                    if this.repeats >= MAX_REPEATS {
                        return this.fail(LogError::Gap {
                            expected: next,
                            got: seq,
                        });
                    }
                    this.reopen(next);
                    continue;
                }
                if seq > next && matches!(this.scope, Scope::WholeLog) {
                    return this.fail(LogError::Gap {
                        expected: next,
                        got: seq,
                    });
                }
            }
            this.repeats = 0;
            this.next = Some(seq + 1);
            if let Some(to) = this.to {
                if seq > to {
                    this.finish();
                    return Poll::Ready(None);
                }
                if seq == to || pending == 0 {
                    this.finish();
                }
            }
            let entry = classify(
                RawMessage {
                    seq,
                    stored_at,
                    subject: msg.subject.as_str(),
                    headers: msg.headers.as_ref(),
                    payload: &msg.payload,
                },
                this.reader
                    .as_ref()
                    .map_or("", |r| r.quarantine_prefix.as_ref()),
                &this.quarantine,
            );
            if entry.is_err() {
                // The next read loads the quarantine records again: one may come for this message.
                if let Some(reader) = &this.reader {
                    reader.forget_quarantined();
                }
                this.finish();
            }
            return Poll::Ready(Some(entry));
        }
    }
}

/// Events in stream order: an [`EntryStream`] without the messages every reader skips.
pub struct EventStream {
    inner: EntryStream,
}

impl EventStream {
    /// A stream with nothing in it.
    pub fn empty() -> Self {
        EntryStream::empty().events()
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Stream for EventStream {
    type Item = Result<StoredEvent, LogError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(Entry::Skipped(s)))) => {
                    tracing::debug!(seq = s.seq, subject = %s.subject, why = %s.why.describe(), "message skipped");
                    continue;
                }
                Poll::Ready(Some(Ok(Entry::Event(e)))) => Poll::Ready(Some(Ok(e))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
