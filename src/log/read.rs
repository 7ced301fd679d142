//! Reading the log: one message by sequence, the last sequence, and ordered replays.
//!
//! Replays use an ordered push consumer (ephemeral, flow-controlled), wrapped in an [`EntryStream`]
//! that keeps its own position: every message comes exactly once and in stream order, whatever the
//! connection does. After a reconnect async-nats may recreate an idle ordered consumer from the
//! start of the stream (it has no delivered sequence to resume from); the stream notices the
//! repeat and reopens its consumer at its own next sequence. A gap in a whole-log read is an error,
//! never skipped.
//!
//! Each message is classified ([`super::entry`]): a writer's event, or a message every reader skips
//! (foreign, quarantined, a quarantine record). Readers that keep a position (the writer's
//! recovery, projections, replays) read [`Entry`]s; the others ([`EventStream`]: tail, history,
//! the SSE feed) see events only. A writer's message that cannot be decoded ends the read with
//! [`LogError::Decode`]: a reader never skips an event it cannot read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::header::HeaderMap;
use async_nats::jetstream::{
    self,
    consumer::{
        push::{Ordered, OrderedConfig},
        DeliverPolicy, ReplayPolicy,
    },
    message::StreamMessage,
    stream::{ConsumerErrorKind, DirectGetErrorKind, RawMessageErrorKind, Stream as JsStream},
    ErrorCode,
};
use orchestrator_events::subject::{all_events, session_events, stream_name};
use orchestrator_events::{CellId, SessionId, Timestamp};

use super::entry::StoredEvent;
use super::entry::{classify, Entry, RawMessage};
use super::follow::{EntryStream, EventStream};
use super::quarantine::{subject_prefix, QuarantineSet};
use crate::log::error::{api_code, unavailable_or_other};
use crate::log::LogError;

/// How long each attempt to read one message waits, and whom it asks. Every replica of the stream
/// answers direct gets (a queue group, in which a server prefers its own subscriber), so on a
/// cluster a frozen, partitioned or lagging node may answer none of the requests routed to it until
/// the others notice it is gone (minutes, by the route's PINGs). A short wait and a new request
/// reach another replica, and every other attempt asks the stream's leader instead
/// (`STREAM.MSG.GET`, which needs no `allow_direct`): whichever side is sound answers, instead of a
/// writer's answer or a recovery stalling for the whole request timeout.
const FETCH_ATTEMPTS: [(Ask, Duration); 6] = [
    (Ask::Replica, Duration::from_secs(1)),
    (Ask::Leader, Duration::from_secs(1)),
    (Ask::Replica, Duration::from_secs(1)),
    (Ask::Leader, Duration::from_secs(2)),
    (Ask::Replica, Duration::from_secs(2)),
    (Ask::Leader, Duration::from_secs(5)),
];

/// How one attempt to read a message ended, when it brought no message.
enum Attempt {
    /// The log answered: `Ok` when there is no message at that sequence, else the error.
    Answered(Result<(), LogError>),
    /// Nobody answered in a way that says anything about the log; another attempt may.
    Unanswered(String),
}
use Attempt::{Answered, Unanswered};

/// Whom one attempt of [`Reader::entry`] asks for a message.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// Any replica (direct get).
    Replica,
    /// The stream's leader (`STREAM.MSG.GET`).
    Leader,
}

impl Ask {
    fn other(self) -> Self {
        match self {
            Ask::Replica => Ask::Leader,
            Ask::Leader => Ask::Replica,
        }
    }
}

/// How long reads of one message ask the stream's leader first after a replica left one
/// unanswered. Without it, every read would wait out a stuck replica's second first: the writer
/// answers a retried command by such a read, and with a replica frozen, each answer came a second
/// late, after its client had given up and sent the command again, so the cell answered nothing
/// while the node stayed frozen (the answers' queue never drained).
const LEADER_FIRST_FOR: Duration = Duration::from_secs(30);

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

/// Which log a reader reads: a stream deleted and created again under the same name is another log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogIdentity {
    /// The cell.
    pub cell: CellId,
    /// The stream's name.
    pub stream: String,
    /// When the stream was created, in nanoseconds since the Unix epoch.
    pub created: i128,
    /// Its last sequence when asked.
    pub last_seq: u64,
}

/// A cheap, clonable handle that reads a cell's stream.
#[derive(Debug, Clone)]
pub struct Reader {
    js: jetstream::Context,
    cell: CellId,
    name: Arc<str>,
    pub(super) quarantine_prefix: Arc<str>,
    /// The quarantine records, read once and shared by the clones; forgotten when a read meets an
    /// undecodable message (a record may have come since).
    quarantine: Arc<Mutex<Option<Arc<QuarantineSet>>>>,
    /// Until when a read of one message asks the stream's leader first, shared by the clones: set
    /// when a replica left a direct get unanswered (see [`LEADER_FIRST_FOR`]).
    leader_first_until: Arc<Mutex<Option<Instant>>>,
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
            quarantine_prefix: subject_prefix(&cell).into(),
            quarantine: Default::default(),
            leader_first_until: Default::default(),
            cell,
            name: name.into(),
            stream,
        })
    }

    /// The cell this reader reads.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    pub(crate) fn stream(&self) -> &JsStream<()> {
        &self.stream
    }

    /// The message stored at `seq` as a reader sees it, or `None` when there is none (0, past the
    /// end). [`LogError::Decode`] for a writer's message that cannot be decoded.
    pub async fn entry(&self, seq: u64) -> Result<Option<Entry>, LogError> {
        Ok(self.fetch(seq).await?.map(|(entry, _, _)| entry))
    }

    /// The event stored at `seq`, or `None` when there is none (0, past the end). A message that
    /// is not an event is [`LogError::NotAnEvent`].
    pub async fn get(&self, seq: u64) -> Result<Option<StoredMessage>, LogError> {
        match self.fetch(seq).await? {
            None => Ok(None),
            Some((Entry::Event(event), subject, headers)) => Ok(Some(StoredMessage {
                event,
                subject,
                headers,
            })),
            Some((Entry::Skipped(s), _, _)) => Err(LogError::NotAnEvent {
                seq,
                why: s.why.describe(),
            }),
        }
    }

    async fn fetch(&self, seq: u64) -> Result<Option<(Entry, String, HeaderMap)>, LogError> {
        if seq == 0 {
            return Ok(None);
        }
        let mut unanswered = Vec::new();
        let mut msg = None;
        let leader_first = self
            .leader_first_until
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| Instant::now() < until);
        for (ask, within) in FETCH_ATTEMPTS {
            let ask = if leader_first { ask.other() } else { ask };
            let got = match ask {
                Ask::Replica => tokio::time::timeout(within, self.direct_get(seq)).await,
                Ask::Leader => tokio::time::timeout(within, self.leader_get(seq)).await,
            };
            match got {
                Ok(Ok(found)) => {
                    msg = Some(found);
                    break;
                }
                // The log's answer (not found, no stream...), from whichever side gave it.
                Ok(Err(Answered(answer))) => return answer.map(|()| None),
                Ok(Err(Unanswered(why))) => unanswered.push(format!("{ask:?}: {why}")),
                Err(_) => unanswered.push(format!("{ask:?}: no answer within {within:?}")),
            }
            if matches!(ask, Ask::Replica) {
                if let Ok(mut until) = self.leader_first_until.lock() {
                    *until = Some(Instant::now() + LEADER_FIRST_FOR);
                }
            }
            tracing::debug!(seq, ?ask, ?within, "reading one message: asking again");
        }
        let Some(msg) = msg else {
            return Err(LogError::Unavailable(format!(
                "no replica and no leader answered a read of {seq}: {}",
                unanswered.join("; ")
            )));
        };
        let raw = || RawMessage {
            seq: msg.sequence,
            stored_at: millis(msg.time),
            subject: msg.subject.as_str(),
            headers: Some(&msg.headers),
            payload: &msg.payload,
        };
        let entry = match classify(raw(), &self.quarantine_prefix, &*self.quarantined().await?) {
            // A quarantine record may have come since the set was read: read it again, once.
            Err(LogError::Decode { .. }) => {
                self.forget_quarantined();
                classify(raw(), &self.quarantine_prefix, &*self.quarantined().await?)?
            }
            other => other?,
        };
        Ok(Some((entry, msg.subject.to_string(), msg.headers)))
    }

    /// One direct get of `seq` (any replica answers).
    async fn direct_get(&self, seq: u64) -> Result<StreamMessage, Attempt> {
        self.stream
            .direct_get(seq)
            .await
            .map_err(|err| match err.kind() {
                DirectGetErrorKind::NotFound => Answered(Ok(())),
                DirectGetErrorKind::ErrorResponse(status, _) if status.as_u16() == 503 => {
                    Answered(Err(LogError::StreamNotFound(self.stream_name().to_owned())))
                }
                DirectGetErrorKind::TimedOut | DirectGetErrorKind::Request => {
                    Unanswered(err.to_string())
                }
                _ => Answered(Err(LogError::Jetstream(err.to_string()))),
            })
    }

    /// One `STREAM.MSG.GET` of `seq`, answered by the stream's leader.
    async fn leader_get(&self, seq: u64) -> Result<StreamMessage, Attempt> {
        self.stream
            .get_raw_message(seq)
            .await
            .map_err(|err| match err.kind() {
                RawMessageErrorKind::NoMessageFound => Answered(Ok(())),
                RawMessageErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Answered(Err(LogError::StreamNotFound(self.stream_name().to_owned())))
                }
                // No leader (an election), no responders, a timeout: another attempt may succeed.
                RawMessageErrorKind::JetStream(_) | RawMessageErrorKind::Other => {
                    Unanswered(err.to_string())
                }
                RawMessageErrorKind::InvalidSubject => {
                    Answered(Err(LogError::Jetstream(err.to_string())))
                }
            })
    }

    /// The quarantined messages, as last read.
    pub(super) async fn quarantined(&self) -> Result<Arc<QuarantineSet>, LogError> {
        // A poisoned lock only means a reader panicked while holding it; the value is still whole.
        let cached = self.quarantine.lock().ok().and_then(|c| c.clone());
        if let Some(set) = cached {
            return Ok(set);
        }
        let set = Arc::new(QuarantineSet::load(self).await?);
        if let Ok(mut cache) = self.quarantine.lock() {
            *cache = Some(set.clone());
        }
        Ok(set)
    }

    /// Makes the next read load the quarantine records again.
    pub(crate) fn forget_quarantined(&self) {
        if let Ok(mut cache) = self.quarantine.lock() {
            *cache = None;
        }
    }

    /// The stream's last sequence (0 when it is empty).
    pub async fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self.identity().await?.last_seq)
    }

    /// Which log this is (cell, stream, when the stream was created) and its last sequence.
    pub async fn identity(&self) -> Result<LogIdentity, LogError> {
        match self.stream.get_info().await {
            Ok(info) => Ok(LogIdentity {
                cell: self.cell.clone(),
                stream: self.name.to_string(),
                created: info.created.unix_timestamp_nanos(),
                last_seq: info.state.last_sequence,
            }),
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

    /// Every message from `start_seq` on (1 or 0: from the beginning), then new ones as they are
    /// appended. Never ends by itself, except after an error.
    pub async fn entries_from(&self, start_seq: u64) -> Result<EntryStream, LogError> {
        self.open(Scope::WholeLog, from_seq(start_seq), None).await
    }

    /// The messages `from..=to_inclusive`, in order, then the end. Ends earlier if the log ends
    /// earlier (it waits for nothing). For replays: `state --at`, `verify`, rebuilds, recovery.
    pub async fn entries_range(
        &self,
        from: u64,
        to_inclusive: u64,
    ) -> Result<EntryStream, LogError> {
        if from.max(1) > to_inclusive {
            return Ok(EntryStream::empty());
        }
        self.open(Scope::WholeLog, from_seq(from), Some(to_inclusive))
            .await
    }

    /// The messages from `from` to the stream's last sequence when called, and that sequence.
    pub async fn entries_to_end(&self, from: u64) -> Result<(u64, EntryStream), LogError> {
        let last = self.last_seq().await?;
        Ok((last, self.entries_range(from, last).await?))
    }

    /// Every event from `start_seq` on, then new ones as they are appended (see
    /// [`Reader::entries_from`]).
    pub async fn read_from(&self, start_seq: u64) -> Result<EventStream, LogError> {
        Ok(self.entries_from(start_seq).await?.events())
    }

    /// Every event stored at or after `start` (milliseconds since the Unix epoch), then new ones
    /// as they are appended (`tail --from <time>`).
    pub async fn read_from_time(&self, start: Timestamp) -> Result<EventStream, LogError> {
        let start_time = async_nats::datetime::from_nanos(i128::from(start) * 1_000_000)
            .map_err(|e| LogError::Jetstream(format!("start time {start}: {e}")))?;
        let policy = DeliverPolicy::ByStartTime { start_time };
        Ok(self.open(Scope::WholeLog, policy, None).await?.events())
    }

    /// The events `from..=to_inclusive` (see [`Reader::entries_range`]).
    pub async fn read_range(&self, from: u64, to_inclusive: u64) -> Result<EventStream, LogError> {
        Ok(self.entries_range(from, to_inclusive).await?.events())
    }

    /// The events from `from` to the stream's last sequence when called, and that sequence.
    pub async fn read_to_end(&self, from: u64) -> Result<(u64, EventStream), LogError> {
        let (last, entries) = self.entries_to_end(from).await?;
        Ok((last, entries.events()))
    }

    /// One session's events, in order, up to the stream's last sequence when called (`history`).
    pub async fn session_history(&self, session: &SessionId) -> Result<EventStream, LogError> {
        let last = self.last_seq().await?;
        if last == 0 {
            return Ok(EventStream::empty());
        }
        let scope = Scope::Subject(session_events(&self.cell, session));
        Ok(self
            .open(scope, DeliverPolicy::All, Some(last))
            .await?
            .events())
    }

    fn stream_name(&self) -> &str {
        &self.name
    }

    async fn open(
        &self,
        scope: Scope,
        deliver_policy: DeliverPolicy,
        to: Option<u64>,
    ) -> Result<EntryStream, LogError> {
        let quarantine = self.quarantined().await?;
        let next = match deliver_policy {
            DeliverPolicy::All => Some(1),
            DeliverPolicy::ByStartSequence { start_sequence } => Some(start_sequence),
            _ => None,
        };
        let (consumer, pending) = self.consumer(&scope, deliver_policy).await?;
        if to.is_some() && pending == 0 {
            return Ok(EntryStream::empty());
        }
        Ok(EntryStream::new(
            self.clone(),
            scope,
            quarantine,
            consumer,
            next,
            to,
        ))
    }

    pub(super) async fn consumer(
        &self,
        scope: &Scope,
        deliver_policy: DeliverPolicy,
    ) -> Result<(Ordered, u64), LogError> {
        let filter_subject = match scope {
            Scope::WholeLog => all_events(&self.cell),
            Scope::Subject(s) => s.clone(),
        };
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
        let pending = consumer.cached_info().num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| LogError::Jetstream(e.to_string()))?;
        Ok((messages, pending))
    }
}

/// What a read covers: the whole log (consecutive sequences) or one subject (increasing ones).
#[derive(Debug, Clone)]
pub(super) enum Scope {
    WholeLog,
    Subject(String),
}

pub(super) fn from_seq(start_seq: u64) -> DeliverPolicy {
    if start_seq <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: start_seq,
        }
    }
}

pub(super) fn millis(t: async_nats::datetime::DateTime) -> Timestamp {
    // i64 milliseconds reach past the year 292 million; the server's clock does not.
    (t.unix_timestamp_nanos() / 1_000_000) as Timestamp
}
