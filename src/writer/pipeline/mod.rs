//! Deciding and appending with many appends in flight, replying in command order.
//!
//! - `append`: deciding a command and sending its append; acks; recovering after a failed one.
//! - `answers`: replies, first results of retries, `verify`, draining on the way out.
//! - `snapshot`: snapshots of the confirmed state, saved in the background.
//!
//! A writer that cannot make progress steps down: after [`MAX_FRUITLESS_RECOVERIES`] recoveries in
//! a row with no append acknowledged in between, when its state cannot be recovered from the log
//! (a message it cannot decode), or after [`MAX_RECOVERY_ATTEMPTS`] failed attempts to read it,
//! [`lead`] returns [`Term::SteppedDown`] and the caller gives up the lease, so a standby (perhaps
//! a newer release that can read the log) takes over.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use async_nats::Message;
use futures::StreamExt;
use orchestrator_events::Envelope;
use tokio_util::sync::CancellationToken;

use super::protocol::{self, Reply, Request};

mod answers;
mod append;
mod automatic;
mod group;
mod requests;
mod snapshot;

use requests::{OpenBatches, To};

use super::recovery::{self, snapshot_path, Folded, LastEvent};
use super::{WriterConfig, WriterError};
use crate::domain::timers::Heartbeats;
use crate::domain::State;
use crate::log::{
    batches_allowed, Appended, Appender, LogError, PendingAppend, Prepared, Reader, ServerVersion,
};
use snapshot::{log_snapshot, Saving};

type AckFuture = Pin<Box<dyn Future<Output = Result<Appended, LogError>> + Send>>;

enum Outcome {
    /// Decided and folded into the state at `seq`, waiting to be sent with the next group commit.
    Staged {
        seq: u64,
        env: Box<Envelope>,
        prepared: Box<Prepared>,
    },
    /// Appended at `seq` if the ack says so.
    Append {
        seq: u64,
        env: Box<Envelope>,
        ack: AckFuture,
    },
    /// Already applied: answer with the event at `seq`.
    Duplicate { seq: u64 },
    /// Answered without appending.
    Ready(Reply),
}

struct Entry {
    /// Where its answer goes.
    to: To,
    /// The request, while it may have to be decided again after a recovery.
    request: Option<Request>,
    outcome: Outcome,
}

struct Pipeline<'a> {
    client: &'a async_nats::Client,
    config: &'a WriterConfig,
    appender: Appender,
    reader: Reader,
    state: State,
    /// The last event of the state, once acknowledged (for snapshots).
    last_event: Option<LastEvent>,
    /// The last sequence the server acknowledged: the state is confirmed when it is here.
    confirmed_seq: u64,
    /// Recoveries since the last append that succeeded.
    fruitless: u32,
    inflight: VecDeque<Entry>,
    /// Batch requests whose answers are being collected.
    open_batches: OpenBatches,
    /// Appends sent and not yet acknowledged (entries of `inflight`).
    sent: usize,
    /// The connection's count of connects when the oldest append in flight was sent: when it
    /// grows, the connection came back, and acks sent before the loss may never come.
    sent_on_connect: u64,
    /// Whether appends are grouped into atomic batches ([`group`]) or pipelined one by one.
    batches: bool,
    recent: VecDeque<(u64, Envelope)>,
    snapshot: Option<PathBuf>,
    since_snapshot: u64,
    /// When the last snapshot was started (or the term began).
    last_snapshot: tokio::time::Instant,
    /// The snapshot being saved in the background, if one is.
    saving: Option<Saving>,
    /// The VMs' heartbeats, as this writer heard them.
    heartbeats: Heartbeats,
    /// The sequence at which the queue was last found with nothing to place: it is looked at again
    /// once the state moves.
    queue_idle_at: Option<u64>,
    /// The state a standby folded while it waited, until the first recovery starts from it.
    warm: Option<Folded>,
}

const RECENT: usize = 1024;

/// How long after sending an append the writer waits for its ack, by default, before it recovers
/// from the log ([`WriterConfig::ack_timeout`]).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a writer with appends in flight checks whether its connection came back.
const RECONNECT_CHECK: Duration = Duration::from_millis(50);

/// Recoveries in a row, with no append acknowledged in between, after which the writer steps down.
pub const MAX_FRUITLESS_RECOVERIES: u32 = 5;

/// Failed attempts in a row to recover the state from the log (20 to 40 s with the backoff and
/// [`RECOVERY_REQUEST_TIMEOUT`]) after which the writer steps down.
pub const MAX_RECOVERY_ATTEMPTS: u32 = 10;

/// How long each JetStream API request of a recovery (the stream's info, creating the consumer that
/// reads the log) waits for its answer. These answer in milliseconds when the stream has a leader;
/// while a cluster elects one (after its leader died or froze) nobody answers, and a short wait
/// with a new attempt after it makes the writer serve again about as soon as there is a leader,
/// instead of up to the default 5 s per request later.
pub const RECOVERY_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How a term as the active writer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Told to stop.
    Shutdown,
    /// The lease was lost (another writer holds it now).
    LeaseLost,
    /// The writer cannot make progress: it gives up its lease. Why, for the operator.
    SteppedDown(String),
}

/// What a recovery came to.
enum Resync {
    /// The state is the log's again.
    Done,
    /// Told to stop (shutdown or lease lost) first.
    Stopped,
    /// The log cannot be recovered from, or recovering does not help: step down.
    Stuck(String),
}

/// Serves as the cell's active writer until `lost` or `shutdown` fires, or it cannot make
/// progress. `warm`: the state this writer folded as a standby, which its recovery starts from
/// (`None`: from the snapshot and the log).
pub async fn lead(
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    config: &WriterConfig,
    warm: Option<Folded>,
    lost: CancellationToken,
    shutdown: CancellationToken,
) -> Result<Term, WriterError> {
    let cell = &config.log.cell;
    let reader = Reader::new(with_timeout(js, RECOVERY_REQUEST_TIMEOUT), cell.clone()).await?;
    let snapshot = config.data_dir.as_ref().map(|d| snapshot_path(d, cell));
    let mut p = Pipeline {
        client,
        config,
        appender: Appender::new(with_timeout(js, config.ack_timeout), cell.clone()),
        reader,
        state: State::new(config.domain.clone()),
        last_event: None,
        confirmed_seq: 0,
        fruitless: 0,
        inflight: VecDeque::new(),
        open_batches: OpenBatches::default(),
        sent: 0,
        sent_on_connect: 0,
        batches: false,
        recent: VecDeque::with_capacity(RECENT),
        snapshot,
        since_snapshot: 0,
        last_snapshot: tokio::time::Instant::now(),
        saving: None,
        heartbeats: Heartbeats::new(crate::clock::now_ms()),
        queue_idle_at: None,
        warm,
    };
    let stopped = |shutdown: &CancellationToken| {
        if shutdown.is_cancelled() {
            Term::Shutdown
        } else {
            Term::LeaseLost
        }
    };
    p.batches = config.group_commit
        && group_commit_possible(client, &with_timeout(js, RECOVERY_REQUEST_TIMEOUT), cell).await?;
    tracing::info!(
        cell = %cell,
        appends = if p.batches { "grouped into atomic batches" } else { "pipelined one by one" },
        "writer append path"
    );
    match p.resync(&lost, &shutdown).await {
        Resync::Done => {}
        Resync::Stopped => return Ok(stopped(&shutdown)),
        Resync::Stuck(why) => return Ok(Term::SteppedDown(why)),
    }
    let mut sub = client
        .queue_subscribe(format!("orch.{cell}.cmd.>"), format!("orch-writer-{cell}"))
        .await
        .map_err(|e| WriterError::Subscribe(e.to_string()))?;
    let mut admin = client
        .subscribe(crate::admin::writer_subject(cell))
        .await
        .map_err(|e| WriterError::Subscribe(e.to_string()))?;
    let mut beats = client
        .subscribe(format!("orch.{cell}.heartbeat.*"))
        .await
        .map_err(|e| WriterError::Subscribe(e.to_string()))?;
    // Every VM gets a full deadline of grace from the moment this writer serves.
    p.heartbeats = Heartbeats::new(crate::clock::now_ms());
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconnect_check = tokio::time::interval(RECONNECT_CHECK);
    reconnect_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(cell = %cell, seq = p.state.last_seq, "writer serving commands");
    let term = loop {
        p.flush_ready().await;
        if p.batches {
            p.send_staged().await;
        }
        p.reap_snapshot();
        let snapshot_due = p.since_snapshot >= config.snapshot_every
            || (p.since_snapshot > 0 && p.last_snapshot.elapsed() >= config.snapshot_interval);
        if p.inflight.is_empty() && snapshot_due && p.saving.is_none() {
            p.start_snapshot();
        }
        // A snapshot is of confirmed state only, so it waits for a moment with nothing in flight;
        // under a load that never leaves one, intake pauses once it is a whole interval overdue.
        let room = p.inflight.len() < config.max_in_flight
            && p.since_snapshot < config.snapshot_every.saturating_mul(2);
        let head_pending = matches!(
            p.inflight.front(),
            Some(Entry {
                outcome: Outcome::Append { .. },
                ..
            })
        );
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Term::Shutdown,
            _ = lost.cancelled() => break Term::LeaseLost,
            ack = head_ack(&mut p.inflight), if head_pending => {
                if let Err(e) = p.on_ack(ack).await {
                    tracing::warn!(error = %e, "append failed: recovering from the log and deciding again");
                    match p.recover_and_redecide(&lost, &shutdown, true).await {
                        Resync::Done => {}
                        Resync::Stopped => break stopped(&shutdown),
                        Resync::Stuck(why) => break Term::SteppedDown(why),
                    }
                }
            }
            _ = reconnect_check.tick(), if p.sent > 0 => {
                if connects(client) != p.sent_on_connect {
                    // The server is back: acks lost with the old connection would only come at
                    // their timeout. Recover from the log now instead of waiting for them.
                    tracing::warn!(in_flight = p.sent, "NATS connection came back with appends in flight: recovering from the log");
                    match p.recover_and_redecide(&lost, &shutdown, false).await {
                        Resync::Done => {}
                        Resync::Stopped => break stopped(&shutdown),
                        Resync::Stuck(why) => break Term::SteppedDown(why),
                    }
                }
            }
            Some(msg) = admin.next(), if p.inflight.is_empty() => p.on_admin(msg).await,
            Some(msg) = beats.next() => p.on_heartbeat(&msg),
            _ = tick.tick(), if room => p.on_tick().await,
            msg = sub.next(), if room => match msg {
                Some(msg) => p.on_message(msg).await,
                None => return Err(WriterError::Subscribe("command subscription closed".into())),
            },
        }
    };
    // Stop taking commands; answer those in flight.
    let _ = sub.unsubscribe().await;
    let _ = admin.unsubscribe().await;
    let _ = beats.unsubscribe().await;
    p.drain().await;
    if let Some(saving) = p.saving.take() {
        log_snapshot(saving.await);
    }
    if term == Term::Shutdown {
        p.start_snapshot();
        if let Some(saving) = p.saving.take() {
            log_snapshot(saving.await);
        }
    }
    Ok(term)
}

/// Whether this writer can group its appends: the server has atomic batches and the stream allows
/// them (see [`crate::log::batch`]).
async fn group_commit_possible(
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    cell: &orchestrator_events::CellId,
) -> Result<bool, WriterError> {
    let features = ServerVersion::of(client)?.features();
    if !features.atomic_batch {
        return Ok(false);
    }
    let name = orchestrator_events::subject::stream_name(cell);
    // While a cluster elects the stream's leader nobody answers: ask again for a while, as the
    // recovery that follows would, rather than leave group commit off for the whole term.
    let mut attempt = 1;
    loop {
        match js.get_stream(&name).await {
            Ok(stream) => return Ok(batches_allowed(features, &stream.cached_info().config)),
            Err(e) if attempt < SETTINGS_ATTEMPTS => {
                tracing::debug!(stream = %name, error = %e, attempt, "reading the stream's settings, retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(stream = %name, error = %e, attempt, "reading the stream's settings: appending one at a time");
                return Ok(false);
            }
        }
    }
}

/// Attempts to read the stream's settings when a term starts (each waits up to
/// [`RECOVERY_REQUEST_TIMEOUT`]).
const SETTINGS_ATTEMPTS: u32 = 10;

/// An append's ack, or [`LogError::Unavailable`] once `timeout` has passed since it was sent.
fn with_deadline(pending: PendingAppend, timeout: Duration) -> AckFuture {
    // The deadline counts from the send, not from the first poll: after a lost connection every
    // ack in flight expires at about the same time.
    let deadline = tokio::time::Instant::now() + timeout;
    Box::pin(async move {
        match tokio::time::timeout_at(deadline, pending.ack()).await {
            Ok(ack) => ack,
            Err(_) => Err(LogError::Unavailable(format!(
                "no ack within {timeout:?} of sending"
            ))),
        }
    })
}

/// A JetStream context whose requests time out after `timeout` rather than the context's default
/// (5 s): the appends' acks after the writer's ack timeout, the recovery's reads after
/// [`RECOVERY_REQUEST_TIMEOUT`].
fn with_timeout(
    js: &async_nats::jetstream::Context,
    timeout: Duration,
) -> async_nats::jetstream::Context {
    let mut js = js.clone();
    js.set_timeout(timeout);
    js
}

/// Connections this client has made so far (the first one included): it grows when the
/// connection comes back after a loss.
fn connects(client: &async_nats::Client) -> u64 {
    client
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Resolves with the head's ack; pending forever when the head is not an append.
fn head_ack(
    inflight: &mut VecDeque<Entry>,
) -> impl Future<Output = Result<Appended, LogError>> + '_ {
    futures::future::poll_fn(move |cx| match inflight.front_mut() {
        Some(Entry {
            outcome: Outcome::Append { ack, .. },
            ..
        }) => ack.as_mut().poll(cx),
        _ => std::task::Poll::Pending,
    })
}

impl Pipeline<'_> {
    /// Recovers the state from the standby's state (the first time) or the snapshot, and the log,
    /// retrying with a backoff; stuck after [`MAX_RECOVERY_ATTEMPTS`] failed attempts in a row (a
    /// missing stream, say).
    async fn resync(&mut self, lost: &CancellationToken, shutdown: &CancellationToken) -> Resync {
        let mut backoff = Duration::from_millis(100);
        for attempt in 1.. {
            match recovery::recover_from(
                &self.reader,
                &self.config.domain,
                self.snapshot.as_deref(),
                &mut self.warm,
            )
            .await
            {
                Ok((state, last_event, rec)) => {
                    tracing::info!(
                        seq = state.last_seq,
                        warm_seq = rec.warm_seq,
                        snapshot_seq = rec.snapshot_seq,
                        replayed = rec.replayed,
                        elapsed_ms = rec.elapsed.as_millis() as u64,
                        "writer state recovered"
                    );
                    self.confirmed_seq = state.last_seq;
                    self.state = state;
                    self.last_event = last_event;
                    self.recent.clear();
                    return Resync::Done;
                }
                Err(e @ LogError::Decode { .. }) => {
                    return Resync::Stuck(format!(
                        "{e}: upgrade this writer, or quarantine the message \
                         (`orchestrator quarantine <seq> --reason ...`)"
                    ))
                }
                Err(e) if attempt >= MAX_RECOVERY_ATTEMPTS => {
                    return Resync::Stuck(format!(
                        "{attempt} attempts to recover failed; last: {e}"
                    ))
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "recovering the writer state, retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Resync::Stopped,
                _ = lost.cancelled() => return Resync::Stopped,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        unreachable!("the attempts never run out")
    }

    async fn on_message(&mut self, msg: Message) {
        let name = msg
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_owned();
        let json = match protocol::request_encoding(msg.headers.as_ref(), &msg.payload) {
            Ok(json) => json,
            Err((reply, json)) if name == protocol::BATCH => {
                return self.refuse_batch(msg.reply, json, reply).await
            }
            Err((reply, json)) => return self.answer(To::caller(msg.reply, json), reply).await,
        };
        if name == protocol::BATCH {
            return self.on_batch(msg.reply, json, &msg.payload).await;
        }
        let to = To::caller(msg.reply, json);
        match protocol::parse_request(&name, &msg.payload, json) {
            Ok(req) => self.accept(to, req).await,
            Err(reply) => {
                tracing::debug!(command = %name, "malformed command refused");
                self.answer(to, reply).await
            }
        }
    }
}

fn unavailable() -> Reply {
    Reply::error(
        "unavailable",
        "the writer could not confirm the append: it may or may not be applied; retrying with the same command id is safe",
    )
}
