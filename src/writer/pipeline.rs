//! Deciding and appending with many appends in flight, replying in command order.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use async_nats::{Message, Subject};
use futures::StreamExt;
use orchestrator_events::Envelope;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::protocol::{self, Reply, Request};

mod answers;
mod snapshot;

use super::recovery::{self, snapshot_path};
use super::{WriterConfig, WriterError};
use crate::clock::now_ms;
use crate::domain::{evolve, handle, CommandMeta, Decision, State};
use crate::log::{Appended, Appender, LogError, Reader};
use snapshot::{log_snapshot, Saving};

type AckFuture = Pin<Box<dyn Future<Output = Result<Appended, LogError>> + Send>>;

enum Outcome {
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
    reply_to: Option<Subject>,
    json: bool,
    request: Option<Request>,
    outcome: Outcome,
}

struct Pipeline<'a> {
    client: &'a async_nats::Client,
    config: &'a WriterConfig,
    appender: Appender,
    reader: Reader,
    state: State,
    last_event_id: Option<String>,
    inflight: VecDeque<Entry>,
    recent: VecDeque<(u64, Envelope)>,
    snapshot: Option<PathBuf>,
    since_snapshot: u64,
    /// The snapshot being saved in the background, if one is.
    saving: Option<Saving>,
}

const RECENT: usize = 1024;

/// How long after sending an append the writer waits for its ack before it recovers from the log.
const ACK_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves as the cell's active writer until `lost` or `shutdown` fires.
pub async fn lead(
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    config: &WriterConfig,
    lost: CancellationToken,
    shutdown: CancellationToken,
) -> Result<(), WriterError> {
    let cell = &config.log.cell;
    let reader = Reader::new(js.clone(), cell.clone()).await?;
    let snapshot = config.data_dir.as_ref().map(|d| snapshot_path(d, cell));
    let mut p = Pipeline {
        client,
        config,
        appender: Appender::new(js.clone(), cell.clone()),
        reader,
        state: State::new(config.domain.clone()),
        last_event_id: None,
        inflight: VecDeque::new(),
        recent: VecDeque::with_capacity(RECENT),
        snapshot,
        since_snapshot: 0,
        saving: None,
    };
    if !p.resync(&lost, &shutdown).await? {
        return Ok(());
    }
    let mut sub = client
        .queue_subscribe(format!("orch.{cell}.cmd.>"), format!("orch-writer-{cell}"))
        .await
        .map_err(|e| WriterError::Subscribe(e.to_string()))?;
    let mut admin = client
        .subscribe(crate::admin::writer_subject(cell))
        .await
        .map_err(|e| WriterError::Subscribe(e.to_string()))?;
    tracing::info!(cell = %cell, seq = p.state.last_seq, "writer serving commands");
    let stopping = loop {
        p.flush_ready().await;
        p.reap_snapshot();
        if p.inflight.is_empty() && p.since_snapshot >= config.snapshot_every && p.saving.is_none()
        {
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
            _ = shutdown.cancelled() => break true,
            _ = lost.cancelled() => break false,
            ack = head_ack(&mut p.inflight), if head_pending => {
                if let Err(e) = p.on_ack(ack).await {
                    tracing::warn!(error = %e, "append failed: recovering from the log and deciding again");
                    if !p.recover_and_redecide(&lost, &shutdown).await? {
                        break shutdown.is_cancelled();
                    }
                }
            }
            Some(msg) = admin.next(), if p.inflight.is_empty() => p.on_admin(msg).await,
            msg = sub.next(), if room => match msg {
                Some(msg) => p.on_message(msg).await,
                None => return Err(WriterError::Subscribe("command subscription closed".into())),
            },
        }
    };
    // Stop taking commands; answer those in flight.
    let _ = sub.unsubscribe().await;
    let _ = admin.unsubscribe().await;
    p.drain().await;
    if let Some(saving) = p.saving.take() {
        log_snapshot(saving.await);
    }
    if stopping {
        p.start_snapshot();
        if let Some(saving) = p.saving.take() {
            log_snapshot(saving.await);
        }
    }
    Ok(())
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
    /// Recovers the state from the snapshot and the log, retrying while NATS is away. `false` when
    /// told to stop first.
    async fn resync(
        &mut self,
        lost: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<bool, WriterError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match recovery::recover(&self.reader, &self.config.domain, self.snapshot.as_deref())
                .await
            {
                Ok((state, last_event_id, rec)) => {
                    tracing::info!(
                        seq = state.last_seq,
                        snapshot_seq = rec.snapshot_seq,
                        replayed = rec.replayed,
                        elapsed_ms = rec.elapsed.as_millis() as u64,
                        "writer state recovered"
                    );
                    self.state = state;
                    self.last_event_id = last_event_id;
                    self.recent.clear();
                    return Ok(true);
                }
                Err(e @ LogError::Decode { .. }) => return Err(e.into()),
                Err(e) => tracing::warn!(error = %e, "recovering the writer state, retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = lost.cancelled() => return Ok(false),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn on_message(&mut self, msg: Message) {
        let name = msg
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_owned();
        let json = match protocol::wants_json(msg.headers.as_ref()) {
            Ok(json) => json,
            Err(reply) => return self.reply_now(msg.reply, false, reply).await,
        };
        match protocol::parse_request(&name, &msg.payload, json) {
            Ok(req) => self.accept(msg.reply, json, req).await,
            Err(reply) => {
                tracing::debug!(command = %name, "malformed command refused");
                self.reply_now(msg.reply, json, reply).await
            }
        }
    }

    /// Decides a request against the state including the appends in flight, and queues its answer.
    async fn accept(&mut self, reply_to: Option<Subject>, json: bool, req: Request) {
        let span = tracing::debug_span!(
            "command",
            command = req.command.name(),
            command_id = %req.command_id,
            session_id = tracing::field::Empty,
            seq = tracing::field::Empty,
        );
        if let Some(id) = req.command.session_id() {
            span.record("session_id", tracing::field::display(id));
        }
        let meta = CommandMeta {
            command_id: req.command_id.clone(),
            actor: req.actor.clone(),
            at: now_ms().max(self.state.last_at),
        };
        let outcome = match handle(&self.state, &meta, &req.command) {
            Ok(Decision::Append(event)) => {
                let env = Envelope::new(
                    uuid::Uuid::new_v4().to_string(),
                    meta.command_id.to_string(),
                    req.command.digest(),
                    meta.at,
                    meta.actor,
                    event,
                );
                let expected = self.state.last_seq;
                let seq = expected + 1;
                span.record("seq", seq);
                // The newest append still in flight, if any: this one is decided after it.
                let previous = self.inflight.iter().rev().find_map(|e| match &e.outcome {
                    Outcome::Append { env, .. } => Some(env.command_id.clone()),
                    _ => None,
                });
                let ack: AckFuture = match self
                    .appender
                    .send_after(&env, expected, previous.as_deref())
                    .instrument(span.clone())
                    .await
                {
                    Ok(pending) => {
                        // The deadline counts from the send, not from the first poll: after a lost
                        // connection every ack in flight expires at about the same time.
                        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
                        Box::pin(async move {
                            match tokio::time::timeout_at(deadline, pending.ack()).await {
                                Ok(ack) => ack,
                                Err(_) => Err(LogError::Unavailable(format!(
                                    "no ack within {ACK_TIMEOUT:?} of sending"
                                ))),
                            }
                        })
                    }
                    Err(e) => Box::pin(async move { Err(e) }),
                };
                evolve(&mut self.state, seq, &env);
                Outcome::Append {
                    seq,
                    env: Box::new(env),
                    ack,
                }
            }
            Ok(Decision::AlreadyApplied { seq }) => Outcome::Duplicate { seq },
            Err(rejection) => {
                let _g = span.enter();
                tracing::debug!(code = rejection.code(), "command rejected");
                Outcome::Ready(Reply::rejected(rejection))
            }
        };
        self.inflight.push_back(Entry {
            reply_to,
            json,
            request: Some(req),
            outcome,
        });
    }

    /// Handles the head's ack. An error means the pipeline must be recovered.
    async fn on_ack(&mut self, ack: Result<Appended, LogError>) -> Result<(), LogError> {
        let appended = match ack {
            Ok(appended) => appended,
            Err(e) => {
                // The head's ack has completed and must not be polled again: keep only its
                // request, which the recovery decides again.
                if let Some(head) = self.inflight.front_mut() {
                    head.outcome = Outcome::Ready(unavailable());
                }
                return Err(e);
            }
        };
        let Some(Entry {
            reply_to,
            json,
            request,
            outcome: Outcome::Append { seq, env, .. },
        }) = self.inflight.pop_front()
        else {
            return Ok(());
        };
        if appended.duplicate || appended.seq != seq {
            // The log holds this command id elsewhere: our state is not the log's. Keep the
            // request for the recovery to decide again (it finds the command id in the log).
            self.inflight.push_front(Entry {
                reply_to,
                json,
                request,
                outcome: Outcome::Ready(unavailable()),
            });
            return Err(LogError::Jetstream(format!(
                "append expected at {seq} stored at {} (duplicate: {})",
                appended.seq, appended.duplicate
            )));
        }
        tracing::debug!(seq, command_id = %env.command_id, event = %env.event.event_type(), "appended");
        self.last_event_id = Some(env.event_id.clone());
        self.since_snapshot += 1;
        let reply = Reply::Accepted {
            seq,
            duplicate: false,
            event: env.clone(),
        };
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, *env));
        self.reply_now(reply_to, json, reply).await;
        Ok(())
    }

    /// After a failed append: waits out the pipeline, recovers from the log, decides the commands
    /// in flight again. `false` when told to stop first.
    async fn recover_and_redecide(
        &mut self,
        lost: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<bool, WriterError> {
        let entries: Vec<Entry> = self.inflight.drain(..).collect();
        let mut requests = Vec::with_capacity(entries.len());
        let mut acks = Vec::new();
        for e in entries {
            if let Outcome::Append { ack, .. } = e.outcome {
                acks.push(ack);
            }
            if let Some(req) = e.request {
                requests.push((e.reply_to, e.json, req));
            }
        }
        // Later appends expected the failed one: they fail too, or are stored and then found in
        // the log by their command id. Either way, wait for the server's word, on all of them at
        // once: an ack's timeout only starts when it is first polled, so waiting for them one by
        // one would take one timeout per lost ack.
        let _ =
            tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(acks)).await;
        if !self.resync(lost, shutdown).await? {
            for (reply_to, json, _) in requests {
                self.reply_now(reply_to, json, unavailable()).await;
            }
            return Ok(false);
        }
        for (reply_to, json, req) in requests {
            self.accept(reply_to, json, req).await;
        }
        Ok(true)
    }
}

fn unavailable() -> Reply {
    Reply::error(
        "unavailable",
        "the writer could not confirm the append: it may or may not be applied; retrying with the same command id is safe",
    )
}
