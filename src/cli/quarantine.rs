//! `orchestrator quarantine`: records in the log that one undecodable message is skipped by every
//! reader, or lists the quarantined messages (see [`crate::log::quarantine`]).
//!
//! Use it when a reader stops at `cannot decode the event at sequence N` and upgrading cannot help
//! (the payload is corrupt). Foreign messages (a stray publish onto the event subjects) need
//! nothing: every reader skips them already, and `verify` lists them.

use clap::Args;
use orchestrator_events::Actor;

use super::{format, CliError, NatsArgs};
use crate::clock::now_ms;
use crate::log::quarantine::{quarantine, QuarantineError, QuarantineSet};

/// `quarantine`.
#[derive(Debug, Clone, Args)]
pub struct QuarantineArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The sequence of the undecodable message. Without it, lists the quarantined messages.
    #[arg(required_unless_present = "list")]
    pub seq: Option<u64>,
    /// Why, recorded in the log (required with a sequence).
    #[arg(long, required_unless_present = "list")]
    pub reason: Option<String>,
    /// Who decides, as kind:id. Default: operator:$USER.
    #[arg(long, value_parser = format::parse_actor)]
    pub actor: Option<Actor>,
    /// List the quarantined messages instead.
    #[arg(long, conflicts_with_all = ["seq", "reason"])]
    pub list: bool,
}

/// Runs it.
pub async fn run(args: QuarantineArgs) -> Result<(), CliError> {
    let (client, reader) = args.nats.reader("quarantine").await?;
    let outcome = match (args.seq, args.reason) {
        (Some(seq), Some(reason)) if !args.list => {
            let actor = args.actor.unwrap_or_else(super::default_operator);
            let js = async_nats::jetstream::new(client.clone());
            match quarantine(&js, &reader, seq, &reason, actor, now_ms()).await {
                Ok(record) => {
                    outln!(
                        "message {seq} quarantined by the record at sequence {record}: every reader skips it from now on"
                    );
                    Ok(())
                }
                Err(QuarantineError::Log(e)) => Err(CliError::from(e)),
                Err(e) => Err(CliError::Invalid(e.to_string())),
            }
        }
        _ => {
            let set = QuarantineSet::load(&reader).await?;
            if set.is_empty() {
                outln!("no message is quarantined");
            }
            for (target, record, reason) in set.iter() {
                outln!("{target}\tquarantined by the record at {record}: {reason}");
            }
            Ok(())
        }
    };
    // Best effort: the outcome is in hand.
    let _ = client.drain().await;
    outcome
}
