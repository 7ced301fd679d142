//! What the active writer does on its own: heartbeats heard, then on every tick the lost VMs, the
//! timeouts due and the placements the queue can make, each sent through the same path as a
//! caller's command, with the `system` actor and a deterministic command id, and no one to answer.

use async_nats::Message;
use orchestrator_events::VmId;

use super::{Pipeline, To};
use crate::clock::now_ms;
use crate::domain::timers::{self, Due};
use crate::writer::protocol::Request;

/// The most VMs declared lost in one tick.
const LOST_PER_TICK: usize = 64;
/// The most automatic commands decided in one tick (the rest wait for the next), so a burst of
/// them never holds the pipeline long.
const DUE_PER_TICK: usize = 256;

impl Pipeline<'_> {
    /// A heartbeat on `orch.<cell>.heartbeat.<vm_id>`; the payload is not read.
    pub(super) fn on_heartbeat(&mut self, msg: &Message) {
        let Some(token) = msg.subject.as_str().rsplit('.').next() else {
            return;
        };
        if let Ok(vm) = VmId::parse(token) {
            self.heartbeats.beat(vm, now_ms());
        }
    }

    /// Decides what is due now.
    pub(super) async fn on_tick(&mut self) {
        let now = now_ms().max(self.state.last_at);
        let timers = self.config.timers;
        let mut due = self
            .heartbeats
            .lost(&self.state, &timers, now, LOST_PER_TICK);
        due.extend(timers::due_timeouts(
            &self.state,
            &timers,
            now,
            DUE_PER_TICK,
        ));
        let spent = due.len().min(DUE_PER_TICK);
        for d in due.into_iter().take(DUE_PER_TICK) {
            if !self.has_room() {
                return;
            }
            tracing::info!(command = d.command.name(), command_id = %d.command_id, "automatic command");
            self.system(d).await;
        }
        // The queue: placed one at a time, each against the state the last one left.
        if self.queue_idle_at == Some(self.state.last_seq) {
            return;
        }
        for _ in spent..DUE_PER_TICK {
            if !self.has_room() {
                return;
            }
            let Some(d) = timers::next_placement(&self.state) else {
                self.queue_idle_at = Some(self.state.last_seq);
                return;
            };
            let before = self.state.last_seq;
            self.system(d).await;
            if self.state.last_seq == before {
                // Refused after all: look again once the state moves.
                self.queue_idle_at = Some(before);
                return;
            }
        }
    }

    fn has_room(&self) -> bool {
        self.inflight.len() < self.config.max_in_flight
    }

    async fn system(&mut self, d: Due) {
        let req = Request {
            command_id: d.command_id,
            actor: timers::system(),
            command: d.command,
        };
        self.accept(To::caller(None, false), req).await;
    }
}
