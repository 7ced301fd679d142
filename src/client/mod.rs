//! A client of the command protocol: what the CLI, the HTTP bridge and the benchmark use to send
//! commands to the cell's writer over NATS.
//!
//! - [`CommandClient`]: one command per request, or many in one batch request.
//! - [`coalesce`]: [`CoalescingClient`], which packs concurrent commands into batch requests (the
//!   HTTP bridge's way).

pub mod coalesce;

pub use coalesce::CoalescingClient;

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::HeaderMap;
use orchestrator_events::subject::command_subject;
use orchestrator_events::{Actor, CellId, CommandId};

use crate::domain::Command;
use crate::writer::protocol::{self, Reply};

/// Why a command got no answer. In every case the command may or may not have been applied, and
/// retrying with the same command id is safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No writer is subscribed: none holds the lease right now (a standby takes over within a few
    /// seconds), or none runs.
    #[error("no active writer for cell {0}")]
    NoWriter(CellId),
    /// The writer did not answer in time.
    #[error("the writer did not answer within {0:?}")]
    Timeout(Duration),
    /// NATS is unreachable.
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    /// The answer could not be decoded.
    #[error("undecodable reply: {0}")]
    BadReply(String),
}

/// A cheap, clonable handle that sends commands to one cell.
#[derive(Debug, Clone)]
pub struct CommandClient {
    client: async_nats::Client,
    cell: CellId,
    timeout: Duration,
}

impl CommandClient {
    /// A client of `cell`'s writer, waiting at most `timeout` for each answer.
    pub fn new(client: async_nats::Client, cell: CellId, timeout: Duration) -> Self {
        Self {
            client,
            cell,
            timeout,
        }
    }

    /// The cell.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// The NATS client.
    pub fn nats(&self) -> &async_nats::Client {
        &self.client
    }

    /// Sends a command (postcard) and waits for the writer's answer.
    pub async fn send(
        &self,
        command_id: &CommandId,
        actor: &Actor,
        command: &Command,
    ) -> Result<Reply, ClientError> {
        let body = protocol::encode_request(command_id, actor, command, false);
        self.send_raw(command.name(), body, None).await
    }

    /// Sends many commands in one batch request (at most [`protocol::MAX_BATCH_REQUESTS`]) and
    /// returns each one's reply, in order. Each command is decided as if sent alone.
    pub async fn send_batch(
        &self,
        commands: &[(CommandId, Actor, Command)],
    ) -> Result<Vec<Reply>, ClientError> {
        let items: Vec<(&str, Vec<u8>)> = commands
            .iter()
            .map(|(id, actor, command)| {
                (
                    command.name(),
                    protocol::encode_request(id, actor, command, false),
                )
            })
            .collect();
        let body = protocol::batch::encode_batch(&items, false);
        let bytes = self.send_raw_bytes(protocol::BATCH, body, None).await?;
        match protocol::BatchReply::decode(&bytes, false).map_err(ClientError::BadReply)? {
            protocol::BatchReply::Replies(replies) => Ok(replies),
            protocol::BatchReply::Rejected { code, message } => {
                Ok(vec![Reply::error(&code, message); commands.len()])
            }
        }
    }

    /// Sends an already-encoded body to `orch.<cell>.cmd.<name>`, JSON when `headers` say so.
    pub async fn send_raw(
        &self,
        name: &str,
        body: Vec<u8>,
        headers: Option<HeaderMap>,
    ) -> Result<Reply, ClientError> {
        let json = matches!(protocol::wants_json(headers.as_ref()), Ok(true));
        let payload = self.send_raw_bytes(name, body, headers).await?;
        Reply::decode(&payload, json).map_err(ClientError::BadReply)
    }

    /// Sends a body to `orch.<cell>.cmd.<name>` and returns the answer's bytes.
    pub async fn send_raw_bytes(
        &self,
        name: &str,
        body: Vec<u8>,
        headers: Option<HeaderMap>,
    ) -> Result<bytes::Bytes, ClientError> {
        let mut request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(self.timeout));
        if let Some(h) = headers {
            request = request.headers(h);
        }
        let msg = self
            .client
            .send_request(command_subject(&self.cell, name), request)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => ClientError::NoWriter(self.cell.clone()),
                RequestErrorKind::TimedOut => ClientError::Timeout(self.timeout),
                _ => ClientError::Unavailable(e.to_string()),
            })?;
        Ok(msg.payload)
    }
}
