//! Deciding a command and sending its append, handling acks, and recovering after a failed append.

use std::time::Duration;

use orchestrator_events::Envelope;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    unavailable, with_deadline, AckFuture, Entry, Outcome, Pipeline, Resync, To,
    MAX_FRUITLESS_RECOVERIES, RECENT,
};
use crate::clock::now_ms;
use crate::domain::{evolve, handle, CommandMeta, Decision};
use crate::log::{Appended, LogError};
use crate::writer::protocol::{Reply, Request};
use crate::writer::recovery::LastEvent;

impl Pipeline<'_> {
    /// Decides a request against the state including the appends in flight, and queues its answer.
    pub(super) async fn accept(&mut self, to: To, req: Request) {
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
                if self.batches {
                    self.stage(env, &span)
                } else {
                    self.send(env, &span).await
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
            to,
            request: Some(req),
            outcome,
        });
    }

    /// Sends the append of a decided event and folds it into the state, or answers the command at
    /// once when its event can never be stored.
    async fn send(&mut self, env: Envelope, span: &tracing::Span) -> Outcome {
        let expected = self.state.last_seq;
        let seq = expected + 1;
        span.record("seq", seq);
        // The newest append still in flight, if any: this one is decided after it.
        let previous = self.inflight.iter().rev().find_map(|e| match &e.outcome {
            Outcome::Append { env, .. } => Some(env.event_id.clone()),
            _ => None,
        });
        let sent = self
            .appender
            .send_after(&env, expected, previous.as_deref())
            .instrument(span.clone())
            .await;
        let ack: AckFuture = match sent {
            // Nothing was sent, and retrying cannot change that: refuse this command alone.
            Err(LogError::InvalidEnvelope(reason)) => {
                let _g = span.enter();
                tracing::warn!(%reason, "command refused: its event cannot be stored");
                return Outcome::Ready(refused(&reason));
            }
            Ok(pending) => self
                .config
                .metrics
                .observe_batch(1)
                .track(with_deadline(pending, self.config.ack_timeout)),
            Err(e) => Box::pin(async move { Err(e) }),
        };
        self.note_sent(1);
        evolve(&mut self.state, seq, &env);
        Outcome::Append {
            seq,
            env: Box::new(env),
            ack,
        }
    }

    /// Handles the head's ack. An error means the pipeline must be recovered.
    pub(super) async fn on_ack(&mut self, ack: Result<Appended, LogError>) -> Result<(), LogError> {
        let appended = match ack {
            Ok(appended) => appended,
            Err(e) => {
                // The head's ack has completed and must not be polled again. A refusal that
                // retrying cannot fix answers this command alone; otherwise keep its request,
                // which the recovery decides again.
                if let LogError::Unsupported(reason) = &e {
                    if self.batches {
                        tracing::warn!(%reason, "atomic batches refused: appending one at a time");
                        self.batches = false;
                    }
                }
                if let Some(head) = self.inflight.front_mut() {
                    head.outcome = Outcome::Ready(unavailable());
                    if let LogError::InvalidEnvelope(reason) = &e {
                        head.outcome = Outcome::Ready(refused(reason));
                        head.request = None;
                        // A command answered for good is progress, not a fruitless recovery.
                        self.fruitless = 0;
                    }
                }
                return Err(e);
            }
        };
        let Some(Entry {
            to,
            request,
            outcome: Outcome::Append { seq, env, .. },
        }) = self.inflight.pop_front()
        else {
            return Ok(());
        };
        // A duplicate at the expected sequence is this very event (its id is unique): applied.
        if appended.seq != seq {
            // The log holds this event elsewhere: our state is not the log's. Keep the request
            // for the recovery to decide again.
            self.inflight.push_front(Entry {
                to,
                request,
                outcome: Outcome::Ready(unavailable()),
            });
            return Err(LogError::Jetstream(format!(
                "append expected at {seq} stored at {} (duplicate: {})",
                appended.seq, appended.duplicate
            )));
        }
        self.sent = self.sent.saturating_sub(1);
        tracing::debug!(seq, command_id = %env.command_id, event = %env.event.event_type(), "appended");
        self.last_event = Some(LastEvent {
            seq,
            event_id: env.event_id.clone(),
        });
        self.confirmed_seq = seq;
        self.fruitless = 0;
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
        self.answer(to, reply).await;
        Ok(())
    }

    /// After a failed append: waits out the pipeline, recovers from the log, decides the commands
    /// in flight again. Steps down instead when recoveries keep failing to make progress.
    ///
    /// `wait_for_acks`: wait (up to 10 s) for the server's word on the appends still in flight
    /// before reading the log, which saves recoveries when they are stored after all; not after a
    /// reconnect, where acks sent before the loss never come. Either way the expected-sequence
    /// checks keep whatever the server stores late from being applied twice.
    pub(super) async fn recover_and_redecide(
        &mut self,
        lost: &CancellationToken,
        shutdown: &CancellationToken,
        wait_for_acks: bool,
    ) -> Resync {
        let entries: Vec<Entry> = self.inflight.drain(..).collect();
        self.sent = 0;
        let mut requests = Vec::with_capacity(entries.len());
        let mut acks = Vec::new();
        for e in entries {
            match (e.request, e.outcome) {
                (Some(req), outcome) => {
                    if let Outcome::Append { ack, .. } = outcome {
                        acks.push(ack);
                    }
                    requests.push((e.to, req));
                }
                // Answered for good (refused): answer it now, it is the oldest.
                (None, Outcome::Ready(reply)) => self.answer(e.to, reply).await,
                (None, _) => {}
            }
        }
        // Later appends expected the failed one: they fail too, or are stored and then found in
        // the log by their command id. Either way, wait for the server's word, on all of them at
        // once: an ack's timeout only starts when it is first polled, so waiting for them one by
        // one would take one timeout per lost ack.
        if wait_for_acks {
            let _ = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(acks))
                .await;
        }
        self.fruitless += 1;
        self.config.metrics.recovered();
        let outcome = if self.fruitless > MAX_FRUITLESS_RECOVERIES {
            Resync::Stuck(format!(
                "{} recoveries in a row without an append stored",
                self.fruitless - 1
            ))
        } else {
            self.resync(lost, shutdown).await
        };
        if !matches!(outcome, Resync::Done) {
            for (to, _) in requests {
                self.answer(to, unavailable()).await;
            }
            return outcome;
        }
        for (to, req) in requests {
            self.accept(to, req).await;
        }
        Resync::Done
    }
}

impl Pipeline<'_> {
    /// Counts `n` appends just sent; the first one in flight notes the connection they left on.
    pub(super) fn note_sent(&mut self, n: usize) {
        if self.sent == 0 {
            self.sent_on_connect = super::connects(self.client);
        }
        self.sent += n;
    }
}

/// The answer to a command whose event the log can never store as it is.
pub(super) fn refused(reason: &str) -> Reply {
    Reply::error(
        "payload_too_large",
        format!("the command's event cannot be stored ({reason}); it was not applied, and retrying it cannot succeed"),
    )
}
