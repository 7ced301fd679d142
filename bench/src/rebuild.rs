//! Reading a long log: the projection rebuild and the writer's cold start, over N events that the
//! raw pipelined publisher writes first (VMs, then sessions that start, get assigned, pause, resume
//! and end), compared with a raw ordered-consumer replay of the same stream.

use std::path::Path;
use std::time::Instant;

use async_nats::jetstream;
use orchestrator_events::CellId;
use serde::Serialize;

use super::raw::{self, Rate, RawMessage};
use super::workload::{now_ms, EventMix};
use super::{BenchError, Plan};
use orchestrator::domain::DomainConfig;
use orchestrator::log::stream::ensure_stream_config;
use orchestrator::log::{LogConfig, Reader, ServerVersion};
use orchestrator::nats_server::Durability;
use orchestrator::projections::{projector, Projections};
use orchestrator::writer::recovery::{recover, save_snapshot, snapshot_path};

/// The cell whose stream is filled.
pub const FILL_CELL: &str = "fill";

/// Messages built and published per chunk while the stream is filled.
const FILL_CHUNK: u64 = 50_000;

/// Messages per atomic batch: the server's default ceiling.
pub const ATOMIC_BATCH: usize = 1_000;

/// The projection rebuild against a raw replay of the same stream.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildFigures {
    /// Events in the stream.
    pub events: u64,
    /// The mean payload (postcard envelope) size, in bytes.
    pub mean_payload_bytes: f64,
    /// How the stream was filled.
    pub fill_method: String,
    /// Filling the stream (message building included).
    pub fill: Rate,
    /// A raw ordered-consumer replay of the whole stream, decoding every envelope.
    pub replay: Rate,
    /// `projector::rebuild` of the whole stream into a fresh sled store, final flush included.
    pub rebuild: Rate,
}

/// The writer's cold start over the same stream.
#[derive(Debug, Clone, Serialize)]
pub struct ColdStartFigures {
    /// Events in the stream.
    pub events: u64,
    /// `recover` with no snapshot: a replay of the whole log into the state, in seconds.
    pub without_snapshot_seconds: f64,
    /// `recover` from a snapshot taken at the last event, in seconds.
    pub with_snapshot_seconds: f64,
    /// Writing that snapshot (`save_snapshot`, fsync included), in seconds.
    pub snapshot_save_seconds: f64,
    /// Its size on disk, in bytes.
    pub snapshot_bytes: u64,
}

/// Fills a stream `fill` with `plan.events` events, then measures the replay, the rebuild and the
/// cold starts over it. `dir` holds the sled store and the snapshot.
///
/// The stream is filled by the raw pipelined publisher, except with `sync_interval: always` on a
/// server with atomic batches (2.12+): there single messages are fsynced one by one (a million
/// would take minutes), so it is filled with atomic batches of [`ATOMIC_BATCH`], each fsynced once,
/// into a stream of the same configuration plus `allow_atomic`. What is read back is the same.
pub async fn measure(
    client: &async_nats::Client,
    plan: &Plan,
    durability: Durability,
    version: ServerVersion,
    dir: &Path,
) -> Result<(RebuildFigures, ColdStartFigures), BenchError> {
    let js = jetstream::new(client.clone());
    let cell = CellId::parse(FILL_CELL).map_err(|e| BenchError::Setup(e.to_string()))?;
    let batches = durability == Durability::SyncAlways && version.at_least(2, 12);
    let mut config = LogConfig::new(cell.clone()).stream_config();
    config.allow_atomic_publish = batches;
    ensure_stream_config(&js, config).await?;
    let mut mix = EventMix::new(0x5eed_0002, plan.vms, now_ms() - 3_600_000);

    let fill_method = if batches {
        format!("atomic batches of {ATOMIC_BATCH}, one at a time")
    } else {
        format!("pipelined single publishes, {} in flight", plan.in_flight)
    };
    tracing::info!(events = plan.events, method = %fill_method, "fill");
    let mut last = 0u64;
    let mut payload_bytes = 0u64;
    let started = Instant::now();
    while last < plan.events {
        let n = FILL_CHUNK.min(plan.events - last);
        let rate = if batches {
            let msgs: Vec<_> = (0..n)
                .map(|_| RawMessage::for_batch(&cell, &mix.next_envelope()))
                .collect();
            payload_bytes += msgs.iter().map(|m| m.payload_len() as u64).sum::<u64>();
            raw::publish_batches(client, msgs, last, ATOMIC_BATCH, None).await?
        } else {
            let msgs = raw::messages(&cell, &mut mix, last, n)?;
            payload_bytes += msgs.iter().map(|m| m.payload_len() as u64).sum::<u64>();
            raw::publish_pipelined(&js, msgs, last, plan.in_flight, None).await?
        };
        last += rate.count;
    }
    let fill = Rate::new(last, started.elapsed());

    let reader = Reader::new(js, cell.clone()).await?;
    tracing::info!(events = last, "replay: raw ordered consumer");
    let replay = raw::replay(&reader, last).await?;

    tracing::info!(events = last, "rebuild: projector::rebuild into sled");
    let (store, _) = Projections::open(&dir.join("projections"))?;
    let started = Instant::now();
    let rebuilt = projector::rebuild(&reader, &store, |_, _| {}).await?;
    let rebuild = Rate::new(rebuilt, started.elapsed());
    drop(store);
    if rebuilt != last {
        return Err(BenchError::Setup(format!(
            "rebuild applied {rebuilt} of {last} events"
        )));
    }

    tracing::info!(events = last, "cold start: recover without a snapshot");
    let domain = DomainConfig::default();
    let (state, last_event_id, without) = recover(&reader, &domain, None).await?;
    let last_event_id =
        last_event_id.ok_or_else(|| BenchError::Setup("recovery found no event".into()))?;
    let path = snapshot_path(dir, &cell);
    let (save_seconds, snapshot_bytes) = {
        let snap = path.clone();
        let cell = cell.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            save_snapshot(&snap, &cell, &last_event_id, &state)?;
            let seconds = started.elapsed().as_secs_f64();
            drop(state);
            Ok::<_, std::io::Error>((seconds, std::fs::metadata(&snap)?.len()))
        })
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?
        .map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?
    };

    tracing::info!(events = last, "cold start: recover from the snapshot");
    let (state, _, with) = recover(&reader, &domain, Some(&path)).await?;
    if with.snapshot_seq != Some(last) || state.last_seq != last {
        return Err(BenchError::Setup(format!(
            "recovery from the snapshot started at {:?}, reached {}",
            with.snapshot_seq, state.last_seq
        )));
    }
    Ok((
        RebuildFigures {
            events: last,
            fill_method,
            mean_payload_bytes: payload_bytes as f64 / last.max(1) as f64,
            fill,
            replay,
            rebuild,
        },
        ColdStartFigures {
            events: last,
            without_snapshot_seconds: without.elapsed.as_secs_f64(),
            with_snapshot_seconds: with.elapsed.as_secs_f64(),
            snapshot_save_seconds: save_seconds,
            snapshot_bytes,
        },
    ))
}
