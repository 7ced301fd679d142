//! `orchestrator state [--at <seq|time>]`: sessions and VM capacity as of a moment, replayed from
//! the log into a fresh domain state ([`crate::analytics::as_of`], which the bridge's
//! `GET /v1/state` also uses).

use clap::Args;

use super::format::{self, Point};
use super::{table, CliError, NatsArgs};
pub use crate::analytics::as_of::{replay, snapshot, SessionRow, Snapshot, VmRow};
use crate::analytics::WindowError;
use crate::domain::SessionStatus;

/// `state`.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// The moment: a stream sequence, or a time (the state after the last event at or before it):
    /// an RFC 3339 time with `Z` or an offset (`2026-11-29T00:24:05+01:00`), `now`, or a duration
    /// before now (`-15m`, `-2h`, `-1d`). Default: the end of the log.
    #[arg(long, value_name = "SEQ|TIME", allow_hyphen_values = true, value_parser = format::parse_point)]
    pub at: Option<Point>,
    /// List the sessions too.
    #[arg(long)]
    pub sessions: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Prints the state.
pub async fn run(args: StateArgs) -> Result<(), CliError> {
    let (client, reader) = args.nats.reader("state").await?;
    let (state, last) = replay(&reader, args.at).await.map_err(|e| match e {
        WindowError::Invalid(m) => CliError::Invalid(m),
        WindowError::Log(e) => e.into(),
    })?;
    // Best effort: everything was read.
    let _ = client.drain().await;
    let snap = snapshot(&state, last, args.sessions);
    if args.json {
        // Plain data: JSON encoding cannot fail.
        outln!(
            "{}",
            serde_json::to_string(&snap).expect("a snapshot always encodes")
        );
        return Ok(());
    }
    print_human(&snap, args.nats.cell.as_str());
    Ok(())
}

fn print_human(s: &Snapshot, cell: &str) {
    match &s.as_of_time {
        Some(t) => outln!(
            "cell {cell} as of seq {} ({t}); the log is at seq {}",
            s.as_of_seq,
            s.log_last_seq
        ),
        None => outln!(
            "cell {cell} before any event; the log is at seq {}",
            s.log_last_seq
        ),
    }
    outln!();
    table::vms(&s.vms);
    if s.vms.is_empty() {
        outln!("(no VMs)");
    }
    outln!(
        "capacity: {}/{} slots used on VMs not retired or lost",
        s.used,
        s.capacity
    );
    let counts: Vec<String> = SessionStatus::ALL
        .iter()
        .map(|st| {
            format!(
                "{} {}",
                st.as_str(),
                s.sessions_by_status.get(st.as_str()).unwrap_or(&0)
            )
        })
        .collect();
    outln!("sessions: {}", counts.join(", "));
    if s.queued > 0 {
        outln!(
            "queue: {} waiting, the oldest since {}",
            s.queued,
            s.oldest_queued_since.as_deref().unwrap_or("-")
        );
    }
    if let Some(sessions) = &s.sessions {
        outln!();
        table::sessions(sessions, true);
    }
}
