//! Answering commands: the entries at the head of the pipeline, first results of retries, `verify`,
//! and what is in flight when the writer stops.

use std::time::Duration;

use async_nats::{HeaderMap, Message, Subject};

use super::{head_ack, unavailable, Outcome, Pipeline};
use crate::writer::protocol::{self, Reply};

impl Pipeline<'_> {
    /// Answers the entries at the head that need no ack.
    pub(super) async fn flush_ready(&mut self) {
        while let Some(front) = self.inflight.front() {
            match front.outcome {
                Outcome::Append { .. } | Outcome::Staged { .. } => return,
                Outcome::Ready(_) | Outcome::Duplicate { .. } => {}
            }
            let Some(entry) = self.inflight.pop_front() else {
                return;
            };
            let reply = match entry.outcome {
                Outcome::Ready(reply) => reply,
                Outcome::Duplicate { seq } => self.first_result(seq).await,
                Outcome::Append { .. } | Outcome::Staged { .. } => unreachable!("checked above"),
            };
            self.reply_now(entry.reply_to, entry.json, reply).await;
        }
    }

    /// The first result of a command applied at `seq`.
    pub(super) async fn first_result(&mut self, seq: u64) -> Reply {
        if let Some((_, env)) = self.recent.iter().find(|(s, _)| *s == seq) {
            return Reply::Accepted {
                seq,
                duplicate: true,
                event: Box::new(env.clone()),
            };
        }
        match self.reader.get(seq).await {
            Ok(Some(m)) => Reply::Accepted {
                seq,
                duplicate: true,
                event: Box::new(m.event.envelope),
            },
            Ok(None) => Reply::error("unavailable", format!("event {seq} not found in the log")),
            Err(e) => {
                tracing::warn!(seq, error = %e, "reading a first result");
                unavailable()
            }
        }
    }

    /// Answers what is in flight before stopping: acks that come are answered, the others are told
    /// to retry.
    pub(super) async fn drain(&mut self) {
        while !self.inflight.is_empty() {
            self.flush_ready().await;
            if self.batches {
                self.send_staged().await;
            }
            if self.inflight.is_empty() {
                break;
            }
            let ack =
                tokio::time::timeout(Duration::from_secs(5), head_ack(&mut self.inflight)).await;
            match ack {
                Ok(Ok(a)) => {
                    if self.on_ack(Ok(a)).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        for e in std::mem::take(&mut self.inflight) {
            self.reply_now(e.reply_to, e.json, unavailable()).await;
        }
    }
    /// Answers `verify`: the confirmed state (nothing is in flight when this is called).
    pub(super) async fn on_admin(&mut self, msg: Message) {
        let Some(reply) = msg.reply else { return };
        let report = crate::admin::WriterStateReport::of(&self.config.holder_id, &self.state);
        // A report is plain data: JSON encoding cannot fail.
        let body = serde_json::to_vec(&report).expect("a report always encodes");
        if let Err(e) = self.client.publish(reply, body.into()).await {
            tracing::warn!(error = %e, "answering writer_state");
        }
    }

    pub(super) async fn reply_now(&mut self, reply_to: Option<Subject>, json: bool, reply: Reply) {
        self.config.metrics.answered(&reply);
        let Some(to) = reply_to else {
            return;
        };
        let mut headers = HeaderMap::new();
        if json {
            headers.insert("Content-Type", protocol::JSON);
        }
        if let Err(e) = self
            .client
            .publish_with_headers(to, headers, reply.encode(json).into())
            .await
        {
            tracing::warn!(error = %e, "sending a reply");
        }
    }
}
