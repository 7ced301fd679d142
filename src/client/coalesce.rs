//! Coalescing concurrent commands into batch requests: while the most requests allowed are in
//! flight, the commands that arrive wait, and the next free request carries all of them at once
//! (as a client of TigerBeetle packs concurrent requests). A lone command leaves at once, on its
//! own subject, so latency at low load is unchanged; under load one NATS round trip carries many
//! commands.
//!
//! Each caller still gets its own reply. When a batch gets no answer (timeout, no writer, NATS
//! down) every command in it gets that error: each may or may not be applied, and retrying it
//! with the same command id is safe, as for a single command.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use orchestrator_events::{Actor, CommandId};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::{ClientError, CommandClient};
use crate::domain::Command;
use crate::writer::protocol::batch::{encode_batch, BatchReply, BATCH};
use crate::writer::protocol::{self, Reply, MAX_BATCH_REQUESTS, MAX_BATCH_REQUEST_BYTES};

/// Room left in a batch request for its framing.
const FRAMING: usize = 16 * 1024;

struct Pending {
    name: &'static str,
    body: Vec<u8>,
    answer: oneshot::Sender<Result<Reply, ClientError>>,
}

/// A cheap, clonable handle that sends commands through one coalescing task.
#[derive(Debug, Clone)]
pub struct CoalescingClient {
    queue: mpsc::UnboundedSender<Pending>,
    client: CommandClient,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("name", &self.name).finish()
    }
}

impl CoalescingClient {
    /// Sends through `client` with at most `in_flight` requests at once (at least 1); the task
    /// ends when every handle is dropped.
    pub fn new(client: CommandClient, in_flight: usize) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client.clone(), rx, in_flight.max(1)));
        Self { queue, client }
    }

    /// Sends a command and waits for its answer, alone or in a batch with others.
    pub async fn send(
        &self,
        command_id: &CommandId,
        actor: &Actor,
        command: &Command,
    ) -> Result<Reply, ClientError> {
        let (answer, rx) = oneshot::channel();
        let pending = Pending {
            name: command.name(),
            body: protocol::encode_request(command_id, actor, command, false),
            answer,
        };
        if self.queue.send(pending).is_err() {
            // The task is gone (the runtime is shutting down): send it alone.
            return self.client.send(command_id, actor, command).await;
        }
        rx.await.unwrap_or_else(|_| {
            Err(ClientError::Unavailable(
                "the command sender stopped".into(),
            ))
        })
    }
}

async fn run(client: CommandClient, mut rx: mpsc::UnboundedReceiver<Pending>, in_flight: usize) {
    let permits = Arc::new(Semaphore::new(in_flight));
    // Set when the writer does not know batch requests (an older release): send one by one.
    let singles_only = Arc::new(AtomicBool::new(false));
    let mut carry: Option<Pending> = None;
    loop {
        // A closed semaphore is impossible: it is never closed.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut bytes = batch[0].body.len();
        if !singles_only.load(Ordering::Relaxed) {
            while batch.len() < MAX_BATCH_REQUESTS {
                match rx.try_recv() {
                    Ok(p) if bytes + p.body.len() + FRAMING > MAX_BATCH_REQUEST_BYTES => {
                        carry = Some(p);
                        break;
                    }
                    Ok(p) => {
                        bytes += p.body.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
        }
        tokio::spawn(deliver(client.clone(), batch, singles_only.clone(), permit));
    }
}

/// Sends one command alone, or several as a batch request, and answers each caller.
async fn deliver(
    client: CommandClient,
    mut batch: Vec<Pending>,
    singles_only: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
) {
    if batch.len() == 1 {
        let p = batch.pop().expect("one command");
        let reply = client.send_raw(p.name, p.body, None).await;
        let _ = p.answer.send(reply);
        return;
    }
    let items: Vec<(&str, Vec<u8>)> = batch
        .iter_mut()
        .map(|p| (p.name, std::mem::take(&mut p.body)))
        .collect();
    let body = encode_batch(&items, false);
    let answer = client.send_raw_bytes(BATCH, body, None).await;
    let replies = match answer {
        Err(e) => Err(e),
        Ok(bytes) => match BatchReply::decode(&bytes, false) {
            Ok(BatchReply::Replies(replies)) if replies.len() == items.len() => Ok(replies),
            Ok(BatchReply::Replies(replies)) => Err(ClientError::BadReply(format!(
                "{} replies to a batch of {}",
                replies.len(),
                items.len()
            ))),
            Ok(BatchReply::Rejected { code, message }) => {
                Ok(vec![Reply::error(&code, message); items.len()])
            }
            Err(e) => match Reply::decode(&bytes, false) {
                // A writer that predates batch requests: from now on, one by one.
                Ok(Reply::Rejected { code, .. }) if code == "unknown_command" => {
                    tracing::warn!(
                        "the writer does not take batch requests: sending commands one by one"
                    );
                    singles_only.store(true, Ordering::Relaxed);
                    for (p, (name, body)) in batch.into_iter().zip(items) {
                        let reply = client.send_raw(name, body, None).await;
                        let _ = p.answer.send(reply);
                    }
                    return;
                }
                _ => Err(ClientError::BadReply(e)),
            },
        },
    };
    match replies {
        Ok(replies) => {
            for (p, reply) in batch.into_iter().zip(replies) {
                let _ = p.answer.send(Ok(reply));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.answer.send(Err(e.clone()));
            }
        }
    }
}
