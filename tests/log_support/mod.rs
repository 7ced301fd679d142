//! Shared by the log layer's tests (`tests/log_*.rs`): a real `nats-server` with the log's stream,
//! events to append, bounded reads.
#![allow(dead_code, unused_imports)]

pub use std::time::{Duration, Instant};

pub use crate::common::TestServer;
pub use async_nats::jetstream::{self, stream};
pub use bytes::Bytes;
pub use futures::StreamExt;
pub use orchestrator::log::quarantine::{quarantine, QuarantineError};
pub use orchestrator::log::{
    ensure_stream, Appended, Appender, Entry, LogConfig, LogError, Reader, ServerVersion,
    SkipReason, StoredEvent,
};
pub use orchestrator_events::{Actor, CellId, Envelope, Event, SessionId, VmId};

pub async fn setup() -> (TestServer, jetstream::Context) {
    let server = TestServer::start_default().await;
    let js = server.jetstream().await;
    (server, js)
}

pub fn cell() -> CellId {
    CellId::default_cell()
}

pub fn paused(i: u64, session: &str) -> Envelope {
    Envelope::new(
        format!("evt-{i}"),
        format!("cmd-{i}"),
        i,
        1_700_000_000_000 + i as i64,
        Actor::user("u1"),
        Event::SessionPaused {
            session_id: SessionId::parse(session).unwrap(),
        },
    )
}

pub fn drained(i: u64) -> Envelope {
    Envelope::new(
        format!("evt-{i}"),
        format!("cmd-{i}"),
        i,
        1_700_000_000_000 + i as i64,
        Actor::operator("ops"),
        Event::VmDrained {
            vm_id: VmId::parse(format!("vm-{}", i % 7)).unwrap(),
        },
    )
}

pub async fn collect(stream: orchestrator::log::EventStream) -> Vec<Result<StoredEvent, LogError>> {
    tokio::time::timeout(Duration::from_secs(30), stream.collect::<Vec<_>>())
        .await
        .expect("a bounded read ends")
}

pub async fn ready(js: &jetstream::Context) -> (Appender, Reader) {
    ensure_stream(js, &LogConfig::default()).await.unwrap();
    let reader = Reader::new(js.clone(), cell()).await.unwrap();
    (Appender::new(js.clone(), cell()), reader)
}
