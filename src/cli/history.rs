//! `orchestrator history <session>`: a session's timeline from the log, with the time it spent in
//! each state, exact to the event times.

use std::collections::BTreeMap;

use clap::Args;
use futures::StreamExt;
use orchestrator_events::{Event, SessionId, Timestamp};
use serde::Serialize;

use super::{format, CliError, NatsArgs};
use crate::domain::timeline as domain_timeline;
use crate::domain::SessionStatus;
use crate::log::StoredEvent;

/// `history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The session.
    pub session: SessionId,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One event of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Stream sequence.
    pub seq: u64,
    /// When the writer decided it, RFC 3339.
    pub at: String,
    /// The same, in milliseconds since the epoch.
    pub at_ms: Timestamp,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Who issued the command, `kind:id`.
    pub actor: String,
    /// The command's id.
    pub command_id: String,
    /// The event's id.
    pub event_id: String,
    /// The status after it.
    pub status: SessionStatus,
    /// What it says, for humans.
    pub details: String,
    /// The event itself.
    pub event: Event,
}

/// The session's state now: still open, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ongoing {
    /// The current status (not ended).
    pub status: SessionStatus,
    /// Since when, RFC 3339.
    pub since: String,
    /// The same, in milliseconds since the epoch.
    pub since_ms: Timestamp,
}

/// A session's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// The session.
    pub session_id: SessionId,
    /// Its status after the last event.
    pub status: SessionStatus,
    /// Its events, in order.
    pub events: Vec<Entry>,
    /// Milliseconds spent in each state between events (the open interval of a live session is not
    /// counted: see `ongoing`).
    pub time_in_state_ms: BTreeMap<&'static str, i64>,
    /// From the first event to the end, or to the last event while it lives.
    pub lifetime_ms: i64,
    /// Set while the session has not ended.
    pub ongoing: Option<Ongoing>,
}

/// Builds the timeline of a session's events (in log order, at least one).
pub fn timeline(session_id: SessionId, events: &[StoredEvent]) -> Timeline {
    let t = domain_timeline::Timeline::of(
        events
            .iter()
            .map(|e| (e.envelope.occurred_at, &e.envelope.event)),
    );
    let entries = events
        .iter()
        .zip(&t.steps)
        .map(|(ev, step)| {
            let env = &ev.envelope;
            Entry {
                seq: ev.seq,
                at: format::time(env.occurred_at),
                at_ms: env.occurred_at,
                event_type: env.event.event_type().to_string(),
                actor: env.actor.to_string(),
                command_id: env.command_id.clone(),
                event_id: env.event_id.clone(),
                status: step.status,
                details: format::details(&env.event),
                event: env.event.clone(),
            }
        })
        .collect();
    let time_in_state_ms = [
        (SessionStatus::Starting, t.closed.starting),
        (SessionStatus::Active, t.closed.active),
        (SessionStatus::Paused, t.closed.paused),
    ]
    .into_iter()
    .map(|(s, ms)| (s.as_str(), ms))
    .collect();
    let ongoing = match (t.status, t.since) {
        (SessionStatus::Ended, _) | (_, None) => None,
        (status, Some(since_ms)) => Some(Ongoing {
            status,
            since: format::time(since_ms),
            since_ms,
        }),
    };
    Timeline {
        session_id,
        status: t.status,
        events: entries,
        time_in_state_ms,
        lifetime_ms: t.lifetime_ms(),
        ongoing,
    }
}

/// Prints the timeline.
pub async fn run(args: HistoryArgs) -> Result<(), CliError> {
    let (client, reader) = args.nats.reader("history").await?;
    let mut stream = reader.session_history(&args.session).await?;
    let mut events = Vec::new();
    while let Some(ev) = stream.next().await {
        events.push(ev?);
    }
    // Best effort: everything was read.
    let _ = client.drain().await;
    if events.is_empty() {
        return Err(CliError::Invalid(format!(
            "session {} has no events in cell {}",
            args.session, args.nats.cell
        )));
    }
    let t = timeline(args.session, &events);
    if args.json {
        // Plain data: JSON encoding cannot fail.
        outln!(
            "{}",
            serde_json::to_string(&t).expect("a timeline always encodes")
        );
        return Ok(());
    }
    print_human(&t);
    Ok(())
}

fn print_human(t: &Timeline) {
    outln!("session {}: {}", t.session_id, t.status.as_str());
    outln!(
        "{:<6} {:<24} {:<16} {:<20} {:<36} DETAILS",
        "SEQ",
        "TIME",
        "EVENT",
        "ACTOR",
        "COMMAND"
    );
    for e in &t.events {
        outln!(
            "{:<6} {:<24} {:<16} {:<20} {:<36} {}",
            e.seq,
            e.at,
            e.event_type,
            e.actor,
            e.command_id,
            e.details
        );
    }
    outln!("time in each state (exact, from event times):");
    for status in ["starting", "active", "paused"] {
        let ms = t.time_in_state_ms.get(status).copied().unwrap_or(0);
        outln!("  {status:<9} {}", format::duration(ms));
    }
    match &t.ongoing {
        Some(o) => {
            outln!(
                "  {:<9} {} so far, from the first event to the last",
                "lifetime",
                format::duration(t.lifetime_ms)
            );
            let now = format::duration(format::now_ms() - o.since_ms);
            outln!(
                "  still {} since {} ({now} ago, not counted above)",
                o.status.as_str(),
                o.since
            );
        }
        None => outln!("  {:<9} {}", "lifetime", format::duration(t.lifetime_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_events::{Actor, EndReason, Envelope, GameId, UserId};

    fn ev(seq: u64, at: Timestamp, event: Event) -> StoredEvent {
        StoredEvent {
            seq,
            stored_at: at,
            envelope: Envelope::new(
                format!("e{seq}"),
                format!("c{seq}"),
                1,
                at,
                Actor::operator("t"),
                event,
            ),
        }
    }

    #[test]
    fn time_in_each_state_is_exact() {
        let s: SessionId = "s1".parse().unwrap();
        let sid = || s.clone();
        let placement = orchestrator_events::Placement {
            queued: None,
            policy: orchestrator_events::PlacementPolicy::Explicit,
            candidates: 1,
            eligible: 1,
            load_before: 0,
            capacity: 1,
            reason: orchestrator_events::PlacementReason::Requested,
        };
        let events = vec![
            ev(
                1,
                1_000,
                Event::SessionStarted {
                    session_id: sid(),
                    user_id: UserId::parse("u").unwrap(),
                    game_id: GameId::parse("g").unwrap(),
                    requirements: Default::default(),
                },
            ),
            ev(
                3,
                1_250,
                Event::SessionAssigned {
                    session_id: sid(),
                    vm_id: "vm".parse().unwrap(),
                    placement,
                },
            ),
            ev(4, 2_250, Event::SessionPaused { session_id: sid() }),
            ev(5, 2_300, Event::SessionResumed { session_id: sid() }),
            ev(
                6,
                3_300,
                Event::SessionEnded {
                    session_id: sid(),
                    reason: EndReason::User,
                    vm_id: None,
                },
            ),
        ];
        let t = timeline(s.clone(), &events);
        assert_eq!(t.time_in_state_ms["starting"], 250);
        assert_eq!(t.time_in_state_ms["active"], 2_000);
        assert_eq!(t.time_in_state_ms["paused"], 50);
        assert_eq!(t.lifetime_ms, 2_300);
        assert_eq!(t.ongoing, None);
        let live = timeline(s, &events[..3]);
        assert_eq!(live.time_in_state_ms["active"], 1_000);
        assert_eq!(
            live.time_in_state_ms["paused"], 0,
            "the open interval is not counted"
        );
        let ongoing = live.ongoing.expect("a paused session is ongoing");
        assert_eq!(
            (ongoing.status, ongoing.since_ms),
            (SessionStatus::Paused, 2_250)
        );
    }
}
