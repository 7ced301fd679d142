//! `orchestrator whatif --policy spread|packed [--vms FILE] --from T --to T`: the recorded demand
//! replayed against another placement policy or pool, in memory, and compared side by side with
//! what was recorded (see [`crate::analytics::whatif`]).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use orchestrator_events::PlacementPolicy;

use super::format::{self, Point};
use super::progress::Progress;
use super::usage::hms;
use super::{CliError, NatsArgs};
use crate::analytics::whatif::{self, Pool, RunStats, WhatIfError, WhatIfReport};

/// How `whatif` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WhatIfFormat {
    /// Recorded and what-if side by side.
    Table,
    /// One JSON document.
    Json,
}

/// `whatif`.
#[derive(Debug, Clone, Args)]
pub struct WhatIfArgs {
    /// The policy of every placement by policy (a VM named by the caller stays named). Default:
    /// each as recorded, which reproduces the recorded placements on the recorded pool.
    #[arg(long, value_name = "packed|spread", value_parser = parse_policy)]
    pub policy: Option<PlacementPolicy>,
    /// Another pool: a JSON or TOML file listing VMs (`vm_id`, `capacity`, `labels`); the
    /// recorded VM registrations, drains, retirements and losses are then left out.
    #[arg(long, value_name = "FILE")]
    pub vms: Option<PathBuf>,
    /// The window's start (inclusive): a stream sequence (the time of its event) or a time:
    /// an RFC 3339 time with `Z` or an offset (`2026-11-29T00:24:05+01:00`), `now`, or a duration
    /// before now (`-15m`, `-2h`, `-1d`).
    #[arg(long, value_name = "SEQ|TIME", allow_hyphen_values = true, value_parser = format::parse_point)]
    pub from: Point,
    /// The window's end (exclusive): a stream sequence (the time of its event) or a time, as for
    /// `--from` (`now` for the current time).
    #[arg(long, value_name = "SEQ|TIME", allow_hyphen_values = true, value_parser = format::parse_point)]
    pub to: Point,
    /// How to print.
    #[arg(long, value_enum, default_value_t = WhatIfFormat::Table)]
    pub format: WhatIfFormat,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

fn parse_policy(s: &str) -> Result<PlacementPolicy, String> {
    match s {
        "packed" => Ok(PlacementPolicy::Packed),
        "spread" => Ok(PlacementPolicy::Spread),
        other => Err(format!("{other:?}: expected packed or spread")),
    }
}

/// Replays and prints the comparison.
pub async fn run(args: WhatIfArgs) -> Result<(), CliError> {
    let pool = match &args.vms {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?;
            Some(
                Pool::parse(&text)
                    .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?,
            )
        }
    };
    let (client, reader) = args.nats.reader("whatif").await?;
    let mut progress = Progress::new("whatif", args.progress, Instant::now());
    let outcome = whatif::whatif(&reader, args.from, args.to, args.policy, pool, |at| {
        progress.tick(at)
    })
    .await
    .map_err(|e| match e {
        WhatIfError::Window(e) => CliError::from(e),
        WhatIfError::Pool(m) => CliError::Invalid(m),
    })?;
    // Best effort: everything was read.
    let _ = client.drain().await;
    let report = outcome.report;
    progress.done(report.events_read, report.last_seq);
    let text = match args.format {
        WhatIfFormat::Table => table(&report),
        // Plain data: JSON encoding cannot fail.
        WhatIfFormat::Json => serde_json::to_string(&report).expect("a report always encodes"),
    };
    outln!("{}", text.trim_end());
    Ok(())
}

/// The comparison as a table: one line per figure, recorded and what-if side by side.
pub fn table(r: &WhatIfReport) -> String {
    let (a, b) = (&r.recorded, &r.whatif);
    let mut lines: Vec<(String, String, String)> = vec![
        row("peak VMs used", a, b, |s| s.peak_vms_used.to_string()),
        row("mean VMs used", a, b, |s| format!("{:.2}", s.mean_vms_used)),
        row("mean load", a, b, |s| {
            format!("{:.1}%", s.mean_load * 100.0)
        }),
        row("placements", a, b, |s| s.placements.to_string()),
        row("queue waits", a, b, |s| s.queue.count.to_string()),
        row("  mean wait", a, b, |s| hms(s.queue.mean_ms.round() as i64)),
        row("  max wait", a, b, |s| hms(s.queue.max_ms)),
        row("  placed from the queue", a, b, |s| {
            s.queue.placed.to_string()
        }),
        row("  timed out", a, b, |s| s.queue.timed_out.to_string()),
        (
            "rejections".to_owned(),
            "-".to_owned(),
            b.rejections.values().sum::<u64>().to_string(),
        ),
    ];
    for (code, n) in &b.rejections {
        lines.push((format!("  {code}"), "-".to_owned(), n.to_string()));
    }
    let width = lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
    let mut out = format!(
        "what-if from {} to {}: policy {}, pool {} ({} events read, up to seq {})\n",
        r.from, r.to, r.policy, r.pool, r.events_read, r.last_seq
    );
    out += &format!("{:<width$}  {:>12}  {:>12}\n", "", "RECORDED", "WHAT-IF");
    for (name, x, y) in lines {
        out += &format!("{name:<width$}  {x:>12}  {y:>12}\n");
    }
    out += &format!(
        "placed on another VM (or in one run only): {} of {} sessions placed\n",
        r.placements_differing, r.placements_compared
    );
    out += "rejections: the log records accepted commands only, so the recorded run shows none\n";
    out
}

fn row(
    name: &str,
    a: &RunStats,
    b: &RunStats,
    f: impl Fn(&RunStats) -> String,
) -> (String, String, String) {
    (name.to_owned(), f(a), f(b))
}
