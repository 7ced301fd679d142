//! Group commit: decided appends wait while one append (or batch) is in flight, then leave together
//! as one atomic batch, stored with one fsync (NATS 2.12+, a stream with `allow_atomic`).
//!
//! One unit is in flight at a time, and it expects the last sequence the server acknowledged to
//! this writer, so fencing needs no `Nats-Expected-Last-Msg-Id` (which batches refuse): a stale
//! writer's batch expects a sequence that another writer has since moved past, and stores nothing.
//! A writer with nothing in flight sends a command's append at once, on its own, so that a lone
//! client waits for one append, not for a batch to fill.

use futures::FutureExt;
use orchestrator_events::Envelope;

use super::append::refused;
use super::{with_deadline, AckFuture, Entry, Outcome, Pipeline};
use crate::domain::evolve;
use crate::log::{Appended, LogError, Prepared, MAX_BATCH};

impl Pipeline<'_> {
    /// Folds a decided event into the state and stages its append, or answers the command at once
    /// when its event can never be stored.
    pub(super) fn stage(&mut self, env: Envelope, span: &tracing::Span) -> Outcome {
        let prepared = match self.appender.prepare(&env) {
            Ok(prepared) => prepared,
            Err(e) => {
                let _g = span.enter();
                tracing::warn!(reason = %e, "command refused: its event cannot be stored");
                return Outcome::Ready(refused(&e.to_string()));
            }
        };
        let seq = self.state.last_seq + 1;
        span.record("seq", seq);
        evolve(&mut self.state, seq, &env);
        Outcome::Staged {
            seq,
            env: Box::new(env),
            prepared: Box::new(prepared),
        }
    }

    /// With nothing in flight, sends the staged appends: one on its own, or up to [`MAX_BATCH`] as
    /// one atomic batch expecting the last acknowledged sequence.
    pub(super) async fn send_staged(&mut self) {
        if self.sent > 0 {
            return;
        }
        let mut batch: Vec<(usize, u64, Prepared)> = Vec::new();
        for (i, entry) in self.inflight.iter_mut().enumerate() {
            if batch.len() == MAX_BATCH {
                break;
            }
            if let Outcome::Staged { seq, .. } = entry.outcome {
                // Taken out here and replaced below, with the ack, before anything looks at it.
                let staged =
                    std::mem::replace(&mut entry.outcome, Outcome::Ready(super::unavailable()));
                let Outcome::Staged { prepared, env, .. } = staged else {
                    unreachable!("matched above")
                };
                entry.outcome = Outcome::Append {
                    seq,
                    env,
                    ack: Box::pin(std::future::pending()),
                };
                batch.push((i, seq, *prepared));
            }
        }
        let Some(&(_, first, _)) = batch.first() else {
            return;
        };
        let last = first + batch.len() as u64 - 1;
        // Nothing is in flight, so the state before the first staged event is the acknowledged one.
        debug_assert_eq!(first - 1, self.confirmed_seq);
        let places: Vec<(usize, u64)> = batch.iter().map(|(i, seq, _)| (*i, *seq)).collect();
        let mut messages: Vec<Prepared> = batch.into_iter().map(|(_, _, p)| p).collect();
        let sent = if messages.len() == 1 {
            let single = messages.pop().expect("one message");
            self.appender.send_prepared(single, first - 1, None).await
        } else {
            self.appender.send_batch(messages, first - 1).await
        };
        let acks = match sent {
            Ok(pending) => {
                let append = self.config.metrics.observe_batch(places.len());
                append
                    .track(with_deadline(pending, self.config.ack_timeout))
                    .shared()
            }
            Err(e) => async move { Err(e) }.boxed().shared(),
        };
        for (i, seq) in places {
            let acks = acks.clone();
            let ack: AckFuture = Box::pin(async move {
                match acks.await {
                    // Each event of the batch is at its place below the batch's last sequence:
                    // a batch stored elsewhere gives every event a sequence other than its own.
                    Ok(a) => Ok(Appended {
                        seq: a.seq.saturating_sub(last - seq),
                        duplicate: a.duplicate,
                    }),
                    // The batch was refused as a whole: no single command of it is to blame.
                    Err(LogError::InvalidEnvelope(reason)) => Err(LogError::Jetstream(reason)),
                    Err(e) => Err(e),
                }
            });
            if let Some(Entry {
                outcome: Outcome::Append { ack: slot, .. },
                ..
            }) = self.inflight.get_mut(i)
            {
                *slot = ack;
                self.note_sent(1);
            }
        }
    }
}
