//! `orchestrator agent --vm ID`: sends a VM's heartbeats, for demos, tests and as the reference of
//! the VM side.
//!
//! A heartbeat is a core NATS publish (not stored in the stream) on
//! `orch.<cell>.heartbeat.<vm_id>`; the payload is not read (this agent sends the time in
//! milliseconds, as text). The VM must have been registered with a heartbeat interval
//! (`vm register --heartbeat 5s`); the agent should send at that interval. The active writer
//! declares the VM lost when it misses `--heartbeat-misses` intervals (3 by default).

use std::time::Duration;

use clap::Args;
use orchestrator_events::VmId;
use tokio_util::sync::CancellationToken;

use super::{CliError, NatsArgs};

/// `agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The VM it speaks for.
    #[arg(long)]
    pub vm: VmId,
    /// How often to send (the interval the VM was registered with).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Stop after this many heartbeats (default: until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// The subject of a VM's heartbeats.
pub fn heartbeat_subject(cell: &orchestrator_events::CellId, vm: &VmId) -> String {
    format!("orch.{cell}.heartbeat.{vm}")
}

/// Sends heartbeats until `shutdown` or `--count`.
pub async fn run(args: AgentArgs, shutdown: CancellationToken) -> Result<(), CliError> {
    if args.interval.is_zero() {
        return Err(CliError::Invalid("--interval must be more than 0".into()));
    }
    let client = args.nats.connect("agent").await?;
    let subject = heartbeat_subject(&args.nats.cell, &args.vm);
    let mut tick = tokio::time::interval(args.interval);
    let mut sent = 0u64;
    eprintln!("sending heartbeats on {subject} every {:?}", args.interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = crate::clock::now_ms().to_string();
        if let Err(e) = client.publish(subject.clone(), now.into()).await {
            // Core NATS: a lost heartbeat is only a miss; the next one may get through.
            tracing::warn!(error = %e, "heartbeat not sent");
        }
        sent += 1;
        if args.count.is_some_and(|c| sent >= c) {
            break;
        }
    }
    let _ = client.flush().await;
    Ok(())
}
