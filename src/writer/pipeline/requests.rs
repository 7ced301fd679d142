//! Where answers go: to the caller of a single command, or into the reply of a batch request,
//! which leaves once each of its commands is answered.

use std::collections::HashMap;

use async_nats::{HeaderMap, Subject};

use super::Pipeline;
use crate::writer::protocol::batch::{parse_batch, BatchReply};
use crate::writer::protocol::{self, Reply};

/// The destination of a command's answer.
pub(super) enum To {
    /// The caller of one command (no one when it sent no reply subject, or for the writer's own
    /// commands).
    Caller {
        reply_to: Option<Subject>,
        json: bool,
    },
    /// A place in a batch request's reply.
    Batch { id: u64, index: usize },
}

impl To {
    pub(super) fn caller(reply_to: Option<Subject>, json: bool) -> Self {
        To::Caller { reply_to, json }
    }
}

/// The batch requests whose commands are not all answered yet.
#[derive(Default)]
pub(super) struct OpenBatches {
    next: u64,
    open: HashMap<u64, Open>,
}

struct Open {
    reply_to: Option<Subject>,
    json: bool,
    replies: Vec<Option<Reply>>,
    left: usize,
}

impl OpenBatches {
    fn open(&mut self, reply_to: Option<Subject>, json: bool, len: usize) -> u64 {
        let id = self.next;
        self.next += 1;
        self.open.insert(
            id,
            Open {
                reply_to,
                json,
                replies: vec![None; len],
                left: len,
            },
        );
        id
    }

    /// Records one answer; the whole batch once it is the last one missing.
    fn fill(&mut self, id: u64, index: usize, reply: Reply) -> Option<Open> {
        let open = self.open.get_mut(&id)?;
        let slot = open.replies.get_mut(index)?;
        if slot.is_none() {
            *slot = Some(reply);
            open.left -= 1;
        }
        if open.left > 0 {
            return None;
        }
        self.open.remove(&id)
    }
}

impl Pipeline<'_> {
    /// A batch request: each command is accepted in order, as if sent alone.
    pub(super) async fn on_batch(&mut self, reply_to: Option<Subject>, json: bool, payload: &[u8]) {
        let items = match parse_batch(payload, json) {
            Ok(items) => items,
            Err(reply) => {
                tracing::debug!("malformed batch refused");
                return self.send_reply(reply_to, json, reply.encode(json)).await;
            }
        };
        if items.is_empty() {
            let empty = BatchReply::Replies(Vec::new()).encode(json);
            return self.send_reply(reply_to, json, empty).await;
        }
        let id = self.open_batches.open(reply_to, json, items.len());
        for (index, (name, body)) in items.into_iter().enumerate() {
            let to = To::Batch { id, index };
            match protocol::parse_request(&name, &body, json) {
                Ok(req) => self.accept(to, req).await,
                // Its place in the reply is fixed: answering it now keeps the order.
                Err(reply) => self.answer(to, reply).await,
            }
        }
    }

    /// Refuses a whole batch request before reading it (its content type).
    pub(super) async fn refuse_batch(
        &mut self,
        reply_to: Option<Subject>,
        json: bool,
        reply: Reply,
    ) {
        let Reply::Rejected { code, message, .. } = reply else {
            return;
        };
        let body = BatchReply::rejected(&code, message).encode(json);
        self.send_reply(reply_to, json, body).await
    }

    /// Answers one command where its answer goes.
    pub(super) async fn answer(&mut self, to: To, reply: Reply) {
        self.config.metrics.answered(&reply);
        match to {
            To::Caller { reply_to, json } => {
                if reply_to.is_some() {
                    self.send_reply(reply_to, json, reply.encode(json)).await
                }
            }
            To::Batch { id, index } => {
                if let Some(done) = self.open_batches.fill(id, index, reply) {
                    let replies = done.replies.into_iter().flatten().collect();
                    let body = BatchReply::Replies(replies).encode(done.json);
                    self.send_reply(done.reply_to, done.json, body).await
                }
            }
        }
    }

    /// Publishes an encoded reply.
    async fn send_reply(&mut self, reply_to: Option<Subject>, json: bool, body: Vec<u8>) {
        let Some(to) = reply_to else {
            return;
        };
        let mut headers = HeaderMap::new();
        if json {
            headers.insert("Content-Type", protocol::JSON);
        }
        if let Err(e) = self
            .client
            .publish_with_headers(to, headers, body.into())
            .await
        {
            tracing::warn!(error = %e, "sending a reply");
        }
    }
}
