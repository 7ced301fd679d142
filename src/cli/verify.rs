//! `orchestrator verify`: asks the live projector and writer of a cell to compare themselves with a
//! replay of the log, prints the report, and fails on any divergence or when nothing answered.

use clap::Args;

use super::{CliError, NatsArgs, EXIT_UNAVAILABLE};

/// `verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Runs the check.
pub async fn run(args: VerifyArgs) -> Result<(), CliError> {
    // The reader checks that the cell's log exists: a wrong --cell is not a divergence.
    let (client, _) = args.nats.reader("verify").await?;
    let report = crate::admin::verify(&client, &args.nats.cell, args.nats.timeout)
        .await
        .map_err(|e| match e {
            crate::admin::AdminError::Log(log) => args.nats.log_error(log),
            // Variants added later fail plainly.
            #[allow(unreachable_patterns)]
            other => CliError::Failed(other.to_string()),
        })?;
    // Best effort: the report is in hand.
    let _ = client.drain().await;
    outln!("{report}");
    if report.is_clean() {
        return Ok(());
    }
    let diverged = report
        .projections
        .as_ref()
        .is_some_and(|p| p.differences > 0 || p.error.is_some())
        || report.writer.as_ref().is_some_and(|(_, r)| r.is_err());
    Err(CliError::Reported(if diverged {
        1
    } else {
        EXIT_UNAVAILABLE
    }))
}
