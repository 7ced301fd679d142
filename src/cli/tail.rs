//! `orchestrator tail`: prints events as they are appended, one line each (or one JSON envelope with
//! its sequence per line), until Ctrl-C or `--count` events; `--type`, `--session` and `--vm` filter
//! as the SSE feed's `type` and `session_id` do ([`crate::log::filter`]).

use clap::Args;
use futures::StreamExt;
use std::collections::HashSet;

use orchestrator_events::{Envelope, EventType, SessionId, VmId};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::format::{self, Point};
use super::{CliError, NatsArgs};
use crate::log::filter::EventFilter;
use crate::log::StoredEvent;

fn parse_types(s: &str) -> Result<HashSet<EventType>, String> {
    crate::log::filter::parse_types(s)
}

impl TailArgs {
    /// The filter the flags describe.
    pub fn filter(&self) -> EventFilter {
        EventFilter {
            types: (!self.types.is_empty()).then(|| self.types.iter().flatten().copied().collect()),
            session_id: self.session.clone(),
            vm_id: self.vm.clone(),
        }
    }
}

/// Where `tail` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The first event.
    Start,
    /// The next event appended.
    Now,
    /// A sequence or a time.
    At(Point),
}

fn parse_from(s: &str) -> Result<From, String> {
    match s {
        "start" => Ok(From::Start),
        "now" => Ok(From::Now),
        other => format::parse_point(other).map(From::At),
    }
}

/// `tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Where to start: `start`, `now` (the next event appended), a sequence, or a time (events
    /// stored at or after it): an RFC 3339 time with `Z` or an offset
    /// (`2026-11-29T00:24:05+01:00`) or a duration before now (`-15m`, `-2h`, `-1d`).
    #[arg(long, default_value = "now", value_name = "start|now|SEQ|TIME", allow_hyphen_values = true, value_parser = parse_from)]
    pub from: From,
    /// Stop after this many events (counted after the filters).
    #[arg(long)]
    pub count: Option<u64>,
    /// Only events of these types, comma-separated or repeated (`SessionStarted,SessionEnded`).
    #[arg(long = "type", value_name = "TYPE[,TYPE]", value_parser = parse_types)]
    pub types: Vec<HashSet<EventType>>,
    /// Only events about this session.
    #[arg(long)]
    pub session: Option<SessionId>,
    /// Only events that name this VM: its own, and sessions assigned to it or ended on it.
    #[arg(long)]
    pub vm: Option<VmId>,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// One JSON object per line: the envelope (JSON form) with its `seq`, `type` and `stored_at`.
    #[arg(long)]
    pub json: bool,
}

/// One line of `tail --json`.
#[derive(Debug, Serialize)]
struct Line<'a> {
    seq: u64,
    stored_at: i64,
    stored_at_rfc3339: String,
    #[serde(rename = "type")]
    event_type: &'static str,
    #[serde(flatten)]
    envelope: &'a Envelope,
}

fn print(ev: &StoredEvent, json: bool) {
    let env = &ev.envelope;
    if json {
        let line = Line {
            seq: ev.seq,
            stored_at: ev.stored_at,
            stored_at_rfc3339: orchestrator_events::rfc3339(ev.stored_at),
            event_type: env.event.event_type().as_str(),
            envelope: env,
        };
        // Plain data: JSON encoding cannot fail.
        outln!(
            "{}",
            serde_json::to_string(&line).expect("an envelope always encodes")
        );
    } else {
        outln!(
            "{:<6} {:<24} {:<16} {:<20} {}",
            ev.seq,
            format::time(env.occurred_at),
            env.event.event_type().as_str(),
            env.actor.to_string(),
            format::details(&env.event)
        );
    }
}

/// Follows the log until `shutdown` or `--count`.
pub async fn run(args: TailArgs, shutdown: CancellationToken) -> Result<(), CliError> {
    let (client, reader) = args.nats.reader("tail").await?;
    let mut events = match args.from {
        From::Start => reader.read_from(1).await?,
        From::Now => reader.read_from(reader.last_seq().await? + 1).await?,
        From::At(Point::Seq(seq)) => reader.read_from(seq).await?,
        From::At(Point::Time(t)) => reader.read_from_time(t).await?,
    };
    let filter = args.filter();
    let mut printed = 0u64;
    let outcome = loop {
        if args.count.is_some_and(|n| printed >= n) {
            break Ok(());
        }
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = events.next() => next,
        };
        match next {
            Some(Ok(ev)) if !filter.matches(&ev.envelope.event) => {}
            Some(Ok(ev)) => {
                print(&ev, args.json);
                printed += 1;
            }
            Some(Err(e)) => break Err(e.into()),
            None => break Err(CliError::Unavailable("the log stream ended".into())),
        }
    };
    drop(events);
    // Best effort: nothing is left to send.
    let _ = client.drain().await;
    outcome
}
