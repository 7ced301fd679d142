//! The raw NATS limits, measured on a scratch stream of the log's own configuration: sequential
//! publish-and-ack latency, the pipelined publish rate with consecutive expected sequences, and the
//! ordered-consumer replay rate.
//!
//! The messages are exactly what the writer appends (same subjects, headers and postcard
//! envelopes), but built before the clock starts, so these figures are what NATS alone allows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::header::{self, HeaderMap, HeaderValue};
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use futures::StreamExt;
use orchestrator_events::subject::{event_subject, EVENT_TYPE_HEADER, SCHEMA_VERSION_HEADER};
use orchestrator_events::{codec, CellId, Envelope, CURRENT_VERSION};
use serde::Serialize;

use super::stats::{per_second, Latency, Samples};
use super::workload::{now_ms, EventMix};
use super::{BenchError, Plan};
use orchestrator::log::{ensure_stream, LogConfig, Reader};

/// The raw limits of one durability mode.
#[derive(Debug, Clone, Serialize)]
pub struct RawFigures {
    /// One publish at a time, each awaited: the latency of a JetStream append.
    pub sequential: Latency,
    /// Publishes with up to `in_flight` unacknowledged, each expecting the one before it.
    pub pipelined: Rate,
    /// How many publishes were in flight at most.
    pub in_flight: usize,
    /// Atomic batches of `batch_size` messages, one batch at a time, each expecting the one before
    /// it (servers with atomic batches only, 2.12+): the ceiling of the writer's group commit.
    pub batches: Option<Rate>,
    /// The messages per atomic batch: the most clients of the run, as many commands as the writer
    /// can have waiting at once.
    pub batch_size: usize,
    /// An ordered-consumer replay of the scratch stream, decoding every envelope (not measured
    /// again when the limits are re-measured after the orchestrator phases).
    pub replay: Option<Rate>,
}

/// Things done over a time.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rate {
    /// How many.
    pub count: u64,
    /// Over how long, in seconds.
    pub seconds: f64,
    /// Per second.
    pub per_second: f64,
}

impl Rate {
    /// `count` over `elapsed`.
    pub fn new(count: u64, elapsed: Duration) -> Self {
        Self {
            count,
            seconds: elapsed.as_secs_f64(),
            per_second: per_second(count, elapsed),
        }
    }
}

/// A publish ready to go: what [`orchestrator::log::Appender::send`] would send.
pub struct RawMessage {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

impl RawMessage {
    /// The message the writer sends to append `env` expecting the stream's last sequence to be
    /// `expected`.
    pub fn new(cell: &CellId, env: &Envelope, expected: u64) -> Result<Self, BenchError> {
        let command_id = env
            .command_id
            .parse::<HeaderValue>()
            .map_err(|_| BenchError::Setup(format!("command id {:?}", env.command_id)))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::NATS_EXPECTED_LAST_SEQUENCE,
            HeaderValue::from(expected),
        );
        headers.insert(header::NATS_MESSAGE_ID, command_id);
        headers.insert(EVENT_TYPE_HEADER, env.event.event_type().as_str());
        headers.insert(SCHEMA_VERSION_HEADER, HeaderValue::from(CURRENT_VERSION));
        Ok(Self {
            subject: event_subject(cell, &env.event),
            headers,
            payload: Bytes::from(codec::encode(env)),
        })
    }

    /// The message of an atomic batch for `env`: the same subject, payload and type headers, but no
    /// `Nats-Msg-Id` (batches refuse it) and no expected sequence (only a batch's first message
    /// carries one, added when it is sent).
    pub fn for_batch(cell: &CellId, env: &Envelope) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(EVENT_TYPE_HEADER, env.event.event_type().as_str());
        headers.insert(SCHEMA_VERSION_HEADER, HeaderValue::from(CURRENT_VERSION));
        Self {
            subject: event_subject(cell, &env.event),
            headers,
            payload: Bytes::from(codec::encode(env)),
        }
    }

    /// The payload's size in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    async fn publish(self, js: &jetstream::Context) -> Result<PublishAckFuture, BenchError> {
        js.publish_with_headers(self.subject, self.headers, self.payload)
            .await
            .map_err(|e| BenchError::Nats(format!("publish: {e}")))
    }
}

/// `n` messages of `mix` for a stream whose last sequence is `last`.
pub fn messages(
    cell: &CellId,
    mix: &mut EventMix,
    last: u64,
    n: u64,
) -> Result<Vec<RawMessage>, BenchError> {
    (0..n)
        .map(|i| RawMessage::new(cell, &mix.next_envelope(), last + i))
        .collect()
}

async fn acked(ack: PublishAckFuture, expected: u64) -> Result<u64, BenchError> {
    let ack = ack
        .await
        .map_err(|e| BenchError::Nats(format!("publish ack: {e}")))?;
    if ack.duplicate || ack.sequence != expected {
        return Err(BenchError::Setup(format!(
            "publish stored at {} (duplicate: {}), expected {expected}",
            ack.sequence, ack.duplicate
        )));
    }
    Ok(ack.sequence)
}

/// Publishes `msgs` (built for a stream at `last`) with up to `window` in flight, until they are
/// all acknowledged or `deadline` passes; returns how many were stored and how long it took, from
/// the first publish to the last ack.
pub async fn publish_pipelined(
    js: &jetstream::Context,
    msgs: Vec<RawMessage>,
    last: u64,
    window: usize,
    deadline: Option<Instant>,
) -> Result<Rate, BenchError> {
    let started = Instant::now();
    let mut inflight: VecDeque<PublishAckFuture> = VecDeque::with_capacity(window);
    let mut stored = last;
    for msg in msgs {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if inflight.len() >= window {
            if let Some(ack) = inflight.pop_front() {
                stored = acked(ack, stored + 1).await?;
            }
        }
        inflight.push_back(msg.publish(js).await?);
    }
    while let Some(ack) = inflight.pop_front() {
        stored = acked(ack, stored + 1).await?;
    }
    Ok(Rate::new(stored - last, started.elapsed()))
}

/// Publishes `msgs` (built with [`RawMessage::for_batch`] for a stream at `last`) as atomic batches
/// of up to `batch` messages (NATS 2.12+, a stream with `allow_atomic`), one batch at a time: the
/// first message expects the stream's last sequence and is acknowledged, the middle ones are plain
/// publishes, the last commits and is answered with the batch's ack. Returns how many were stored.
pub async fn publish_batches(
    client: &async_nats::Client,
    msgs: Vec<RawMessage>,
    last: u64,
    batch: usize,
    deadline: Option<Instant>,
) -> Result<Rate, BenchError> {
    #[derive(serde::Deserialize)]
    struct BatchAck {
        seq: Option<u64>,
        error: Option<serde_json::Value>,
    }
    let started = Instant::now();
    let mut stored = last;
    let mut msgs = msgs.into_iter().peekable();
    let timeout = Some(Duration::from_secs(30));
    while msgs.peek().is_some() && deadline.is_none_or(|d| Instant::now() < d) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let chunk: Vec<RawMessage> = msgs.by_ref().take(batch.max(1)).collect();
        let n = chunk.len();
        for (i, mut msg) in chunk.into_iter().enumerate() {
            msg.headers.insert("Nats-Batch-Id", id.as_str());
            msg.headers
                .insert("Nats-Batch-Sequence", (i + 1).to_string());
            if i == 0 {
                msg.headers.insert(
                    header::NATS_EXPECTED_LAST_SEQUENCE,
                    HeaderValue::from(stored),
                );
            }
            if i + 1 == n {
                msg.headers.insert("Nats-Batch-Commit", "1");
            }
            let reply = i == 0 || i + 1 == n;
            if !reply {
                client
                    .publish_with_headers(msg.subject, msg.headers, msg.payload)
                    .await
                    .map_err(|e| BenchError::Nats(format!("batch publish: {e}")))?;
                continue;
            }
            let request = async_nats::Request::new()
                .payload(msg.payload)
                .headers(msg.headers)
                .timeout(timeout);
            let answer = client
                .send_request(msg.subject, request)
                .await
                .map_err(|e| BenchError::Nats(format!("batch request: {e}")))?;
            if answer.payload.is_empty() {
                continue;
            }
            let ack: BatchAck = serde_json::from_slice(&answer.payload)
                .map_err(|e| BenchError::Nats(format!("batch ack: {e}")))?;
            if let Some(error) = ack.error {
                return Err(BenchError::Nats(format!("batch refused: {error}")));
            }
            if i + 1 == n {
                let seq = ack.seq.unwrap_or(0);
                if seq != stored + n as u64 {
                    return Err(BenchError::Setup(format!(
                        "batch committed at {seq}, expected {}",
                        stored + n as u64
                    )));
                }
                stored = seq;
            }
        }
    }
    Ok(Rate::new(stored - last, started.elapsed()))
}

/// Replays `1..=last` of `reader`'s stream with an ordered consumer, decoding each envelope.
pub async fn replay(reader: &Reader, last: u64) -> Result<Rate, BenchError> {
    let started = Instant::now();
    let mut events = reader.read_range(1, last).await?;
    let mut count = 0u64;
    while let Some(event) = events.next().await {
        let event = event?;
        count += 1;
        if event.seq != count {
            return Err(BenchError::Setup(format!(
                "replay read {} where {count} was expected",
                event.seq
            )));
        }
    }
    if count != last {
        return Err(BenchError::Setup(format!(
            "replay ended at {count} of {last}"
        )));
    }
    Ok(Rate::new(count, started.elapsed()))
}

/// Measures the raw limits on a new scratch stream of the log's configuration, for the cell named
/// `scratch`; the replay too when `with_replay`.
pub async fn measure(
    client: &async_nats::Client,
    plan: &Plan,
    scratch: &str,
    with_replay: bool,
) -> Result<RawFigures, BenchError> {
    let js = jetstream::new(client.clone());
    let cell = CellId::parse(scratch).map_err(|e| BenchError::Setup(e.to_string()))?;
    ensure_stream(&js, &LogConfig::new(cell.clone())).await?;
    let mut mix = EventMix::new(0x5eed_0001, plan.vms, now_ms());

    tracing::info!(
        seconds = plan.duration.as_secs_f64(),
        "raw: sequential publish and ack"
    );
    let mut samples = Samples::with_capacity(1 << 16);
    let mut last = 0u64;
    let deadline = Instant::now() + plan.duration;
    while Instant::now() < deadline && (samples.len() as u64) < plan.max_commands {
        let msg = RawMessage::new(&cell, &mix.next_envelope(), last)?;
        let started = Instant::now();
        let ack = msg.publish(&js).await?;
        last = acked(ack, last + 1).await?;
        samples.push(started.elapsed());
    }
    let sequential = samples.summary();

    tracing::info!(
        cap = plan.raw_pipelined,
        in_flight = plan.in_flight,
        "raw: pipelined publishes"
    );
    let msgs = messages(&cell, &mut mix, last, plan.raw_pipelined)?;
    let deadline = Instant::now() + plan.duration;
    let pipelined = publish_pipelined(&js, msgs, last, plan.in_flight, Some(deadline)).await?;
    last += pipelined.count;

    let batch_size = plan.clients.iter().copied().max().unwrap_or(1).max(2);
    let batches = if orchestrator::log::ServerVersion::of(client)?
        .features()
        .atomic_batch
    {
        tracing::info!(batch_size, "raw: atomic batches, one at a time");
        let msgs: Vec<_> = (0..plan.raw_pipelined)
            .map(|_| RawMessage::for_batch(&cell, &mix.next_envelope()))
            .collect();
        let deadline = Instant::now() + plan.duration;
        let rate = publish_batches(client, msgs, last, batch_size, Some(deadline)).await?;
        last += rate.count;
        Some(rate)
    } else {
        None
    };

    let replay = if with_replay {
        tracing::info!(events = last, "raw: ordered-consumer replay");
        let reader = Reader::new(js, cell).await?;
        Some(replay(&reader, last).await?)
    } else {
        None
    };
    Ok(RawFigures {
        sequential,
        pipelined,
        in_flight: plan.in_flight,
        batches,
        batch_size,
        replay,
    })
}
