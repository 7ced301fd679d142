//! A session's timeline: the status after each of its events and the time spent in each status,
//! exact to the events' times. Shared by `orchestrator history` and `GET /v1/sessions/{id}/history`,
//! and the base of per-session time accounting.

use orchestrator_events::{Event, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SessionStatus;

/// Milliseconds a session spent in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TimeInStatus {
    /// `starting`
    pub starting: i64,
    /// `active`
    pub active: i64,
    /// `paused`
    pub paused: i64,
}

impl TimeInStatus {
    /// Adds `ms` to `status` (nothing for `ended`).
    pub fn add(&mut self, status: SessionStatus, ms: i64) {
        match status {
            SessionStatus::Starting => self.starting += ms,
            SessionStatus::Active => self.active += ms,
            SessionStatus::Paused => self.paused += ms,
            SessionStatus::Ended => {}
        }
    }

    /// The three statuses added up.
    pub fn sum(&self) -> i64 {
        self.starting + self.active + self.paused
    }
}

/// The status a session is in after `event` (a VM event changes nothing).
pub fn status_after(event: &Event, before: SessionStatus) -> SessionStatus {
    match event {
        Event::SessionStarted { .. } => SessionStatus::Starting,
        Event::SessionAssigned { .. } | Event::SessionResumed { .. } => SessionStatus::Active,
        Event::SessionPaused { .. } => SessionStatus::Paused,
        Event::SessionEnded { .. } => SessionStatus::Ended,
        _ => before,
    }
}

/// One event's place in the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The status after the event.
    pub status: SessionStatus,
    /// Milliseconds since the event before it (0 for the first), spent in the status before it.
    pub ms_in_previous_status: i64,
}

/// A session's events folded into time per status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// One step per event, in order.
    pub steps: Vec<Step>,
    /// The status after the last event.
    pub status: SessionStatus,
    /// Time in each status between the first and the last event.
    pub closed: TimeInStatus,
    /// When the last event happened (the start of the current status).
    pub since: Option<Timestamp>,
    /// When the first event happened.
    pub first: Option<Timestamp>,
}

impl Timeline {
    /// Folds a session's events, in log order, given as (time, event).
    pub fn of<'a>(events: impl IntoIterator<Item = (Timestamp, &'a Event)>) -> Self {
        let mut t = Timeline {
            steps: Vec::new(),
            status: SessionStatus::Starting,
            closed: TimeInStatus::default(),
            since: None,
            first: None,
        };
        for (at, event) in events {
            let spent = t.since.map_or(0, |p| (at - p).max(0));
            if t.since.is_some() {
                t.closed.add(t.status, spent);
            }
            t.status = status_after(event, t.status);
            t.since = Some(at);
            t.first.get_or_insert(at);
            t.steps.push(Step {
                status: t.status,
                ms_in_previous_status: spent,
            });
        }
        t
    }

    /// Time in each status, counting a status still open (the session has not ended) up to `as_of`.
    pub fn time_in_status(&self, as_of: Timestamp) -> TimeInStatus {
        let mut time = self.closed.clone();
        if let Some(since) = self.since {
            time.add(self.status, (as_of - since).max(0));
        }
        time
    }

    /// From the first event to the last.
    pub fn lifetime_ms(&self) -> i64 {
        match (self.first, self.since) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_events::{EndReason, SessionId};

    #[test]
    fn counts_each_status_exactly() {
        let s: SessionId = "s1".parse().unwrap();
        let events = [
            (
                1_000,
                Event::SessionStarted {
                    session_id: s.clone(),
                    user_id: "u".parse().unwrap(),
                    game_id: "g".parse().unwrap(),
                    requirements: Default::default(),
                },
            ),
            (
                1_250,
                Event::SessionPaused {
                    session_id: s.clone(),
                },
            ),
            (
                2_000,
                Event::SessionResumed {
                    session_id: s.clone(),
                },
            ),
            (
                2_100,
                Event::SessionEnded {
                    session_id: s.clone(),
                    reason: EndReason::User,
                    vm_id: None,
                },
            ),
        ];
        let t = Timeline::of(events.iter().map(|(at, e)| (*at, e)));
        assert_eq!(t.status, SessionStatus::Ended);
        let want = TimeInStatus {
            starting: 250,
            paused: 750,
            active: 100,
        };
        assert_eq!(t.closed, want);
        // Ended: nothing more accrues, whatever the time of the question.
        assert_eq!(t.time_in_status(99_999), want);
        assert_eq!(t.lifetime_ms(), 1_100);
        assert_eq!(t.steps[2].ms_in_previous_status, 750);
        let open = Timeline::of(events[..2].iter().map(|(at, e)| (*at, e)));
        assert_eq!(open.time_in_status(1_300).paused, 50);
    }
}
