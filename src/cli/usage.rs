//! `orchestrator usage --from T --to T --by user|game|vm`: the time each user's, game's or VM's
//! sessions spent in each status within a window, read from the log (see
//! [`crate::analytics::usage`] for the definitions), as a table, CSV or JSON.

use std::time::Instant;

use clap::{Args, ValueEnum};

use super::format::{self, Point};
use super::progress::Progress;
use super::{CliError, NatsArgs};
use crate::analytics::{self, GroupBy, UsageReport, UsageRow, WindowError};

/// How `usage` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageFormat {
    /// Aligned columns, durations as h:mm:ss.mmm.
    Table,
    /// A header row, then one row per key, in milliseconds and in seconds.
    Csv,
    /// One JSON document.
    Json,
}

/// `usage`.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// The window's start (inclusive): a stream sequence (the time of its event) or a time:
    /// an RFC 3339 time with `Z` or an offset (`2026-11-29T00:24:05+01:00`), `now`, or a duration
    /// before now (`-15m`, `-2h`, `-1d`).
    #[arg(long, value_name = "SEQ|TIME", allow_hyphen_values = true, value_parser = format::parse_point)]
    pub from: Point,
    /// The window's end (exclusive): a stream sequence (the time of its event) or a time, as for
    /// `--from` (`now` for the current time).
    #[arg(long, value_name = "SEQ|TIME", allow_hyphen_values = true, value_parser = format::parse_point)]
    pub to: Point,
    /// One row per user, game or VM (a session counts for its VM only while assigned to it).
    #[arg(long, value_name = "user|game|vm", value_parser = parse_by)]
    pub by: GroupBy,
    /// How to print.
    #[arg(long, value_enum, default_value_t = UsageFormat::Table)]
    pub format: UsageFormat,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

fn parse_by(s: &str) -> Result<GroupBy, String> {
    s.parse()
}

impl From<WindowError> for CliError {
    fn from(e: WindowError) -> Self {
        match e {
            WindowError::Invalid(m) => CliError::Invalid(m),
            WindowError::Log(e) => e.into(),
        }
    }
}

/// Reads the log and prints the usage.
pub async fn run(args: UsageArgs) -> Result<(), CliError> {
    let (client, reader) = args.nats.reader("usage").await?;
    let mut progress = Progress::new("usage", args.progress, Instant::now());
    let report =
        analytics::usage(&reader, args.from, args.to, args.by, |at| progress.tick(at)).await?;
    // Best effort: everything was read.
    let _ = client.drain().await;
    progress.done(report.events_read, report.last_seq);
    let text = match args.format {
        UsageFormat::Table => table(&report),
        UsageFormat::Csv => csv(&report),
        // Plain data: JSON encoding cannot fail.
        UsageFormat::Json => serde_json::to_string(&report).expect("a report always encodes"),
    };
    outln!("{}", text.trim_end());
    Ok(())
}

/// Milliseconds as `h:mm:ss.mmm`.
pub fn hms(ms: i64) -> String {
    let ms = ms.max(0);
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    format!(
        "{h}:{:02}:{:02}.{:03}",
        rest / 60_000,
        rest % 60_000 / 1000,
        rest % 1000
    )
}

/// Milliseconds as seconds with three decimals, exactly.
pub fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

/// The report as an aligned table, with the unattributed and total rows last.
pub fn table(r: &UsageReport) -> String {
    let mut rows: Vec<(String, &UsageRow)> =
        r.rows.iter().map(|row| (row.key.clone(), row)).collect();
    if let Some(u) = &r.unattributed {
        rows.push(("(no VM)".to_owned(), u));
    }
    rows.push(("total".to_owned(), &r.total));
    let key_width = rows
        .iter()
        .map(|(k, _)| k.len())
        .chain([r.by.as_str().len()])
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "usage by {} from {} to {} ({} events read, up to seq {})\n",
        r.by.as_str(),
        r.from,
        r.to,
        r.events_read,
        r.last_seq
    );
    out += &format!(
        "{:<key_width$}  {:>8}  {:>14}  {:>14}  {:>14}\n",
        r.by.as_str().to_uppercase(),
        "SESSIONS",
        "STARTING",
        "ACTIVE",
        "PAUSED"
    );
    for (key, row) in rows {
        let t = &row.time_ms;
        out += &format!(
            "{key:<key_width$}  {:>8}  {:>14}  {:>14}  {:>14}\n",
            row.sessions,
            hms(t.starting),
            hms(t.active),
            hms(t.paused)
        );
    }
    out
}

/// The report as CSV: a header row, then one row per key (by VM, the time on no VM in a row with an
/// empty key); no total row, so that summing a column gives the total.
pub fn csv(r: &UsageReport) -> String {
    let mut out = format!(
        "{},sessions,starting_ms,active_ms,paused_ms,starting_s,active_s,paused_s\n",
        r.by.as_str()
    );
    for row in r.rows.iter().chain(&r.unattributed) {
        let t = &row.time_ms;
        out += &format!(
            "{},{},{},{},{},{},{},{}\n",
            row.key,
            row.sessions,
            t.starting,
            t.active,
            t.paused,
            seconds(t.starting),
            seconds(t.active),
            seconds(t.paused)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::timeline::TimeInStatus;

    fn report() -> UsageReport {
        let row = |key: &str, sessions, starting, active, paused| UsageRow {
            key: key.to_owned(),
            sessions,
            time_ms: TimeInStatus {
                starting,
                active,
                paused,
            },
        };
        UsageReport {
            by: GroupBy::Vm,
            from: "1970-01-01T00:00:10.000Z".into(),
            from_ms: 10_000,
            to: "1970-01-01T00:00:20.000Z".into(),
            to_ms: 20_000,
            rows: vec![row("vm-a", 2, 0, 9_711, 1_500)],
            unattributed: Some(row("", 1, 3_040, 0, 0)),
            total: row("total", 2, 3_040, 9_711, 1_500),
            events_read: 12,
            last_seq: 14,
        }
    }

    #[test]
    fn durations_are_exact() {
        assert_eq!(hms(3_723_456), "1:02:03.456");
        assert_eq!(hms(0), "0:00:00.000");
        assert_eq!(seconds(9_711), "9.711");
        assert_eq!(seconds(5), "0.005");
    }

    #[test]
    fn csv_has_a_header_and_no_total() {
        assert_eq!(
            csv(&report()),
            "vm,sessions,starting_ms,active_ms,paused_ms,starting_s,active_s,paused_s\n\
             vm-a,2,0,9711,1500,0.000,9.711,1.500\n\
             ,1,3040,0,0,3.040,0.000,0.000\n"
        );
    }

    #[test]
    fn table_is_aligned() {
        let t = table(&report());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "usage by vm from 1970-01-01T00:00:10.000Z to 1970-01-01T00:00:20.000Z (12 events read, up to seq 14)"
        );
        assert_eq!(
            lines[1],
            "VM       SESSIONS        STARTING          ACTIVE          PAUSED"
        );
        assert_eq!(
            lines[2],
            "vm-a            2     0:00:00.000     0:00:09.711     0:00:01.500"
        );
        assert!(lines[3].starts_with("(no VM) "));
        assert!(lines[4].starts_with("total   "));
        assert!(lines.iter().skip(1).all(|l| l.len() == lines[1].len()));
    }
}
