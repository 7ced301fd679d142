//! Sessions per status and pool utilisation over a window, sampled every `step`: the log folded into
//! the domain state event by event, read at each bucket's boundary. The dashboard's charts draw it.

use std::collections::BTreeMap;

use futures::StreamExt;
use orchestrator_events::{rfc3339, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::as_of::{fold, sessions_by_status, slots};
use super::window::{Window, WindowError};
use crate::domain::State;
use crate::log::{Entry, Reader};

/// The most points one timeline holds; a longer window needs a longer step.
pub const MAX_POINTS: u64 = 2_000;

/// The cell at one boundary of the timeline: the state after every event before `at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelinePoint {
    /// The boundary, in milliseconds since the Unix epoch.
    pub at_ms: Timestamp,
    /// The same instant, RFC 3339.
    pub at: String,
    /// Sessions per status (every status present).
    pub sessions_by_status: BTreeMap<String, u64>,
    /// Sessions waiting in the placement queue.
    pub queued: u64,
    /// Slots on VMs neither retired nor lost.
    pub capacity: u64,
    /// Slots in use on them.
    pub used: u64,
    /// `used / capacity` (0 when there is no capacity).
    pub utilisation: f64,
}

/// The timeline of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timeline {
    /// The window's start, ms since the epoch.
    pub from_ms: Timestamp,
    /// The window's end, ms since the epoch.
    pub to_ms: Timestamp,
    /// The step between points, in milliseconds.
    pub step_ms: i64,
    /// The points, from `from_ms` to `to_ms` (the last one at `to_ms` itself).
    pub points: Vec<TimelinePoint>,
}

/// The boundaries of `window` every `step_ms`, the window's end included; `None` when they would be
/// more than [`MAX_POINTS`] or the step is not positive.
pub fn boundaries(window: Window, step_ms: i64) -> Option<Vec<Timestamp>> {
    if step_ms <= 0 {
        return None;
    }
    let n = (window.to - window.from) / step_ms + 2;
    if n as u64 > MAX_POINTS {
        return None;
    }
    let mut out: Vec<Timestamp> = (0..n)
        .map(|i| window.from + i * step_ms)
        .take_while(|t| *t < window.to)
        .collect();
    out.push(window.to);
    Some(out)
}

fn point(state: &State, at_ms: Timestamp) -> TimelinePoint {
    let (capacity, used) = slots(state);
    let (queued, _) = crate::domain::timers::queue_stats(state);
    TimelinePoint {
        at_ms,
        at: rfc3339(at_ms),
        sessions_by_status: sessions_by_status(state),
        queued: queued as u64,
        capacity,
        used,
        utilisation: if capacity == 0 {
            0.0
        } else {
            used as f64 / capacity as f64
        },
    }
}

/// Reads the log up to `last_seq` and samples the state at each boundary of `window` every
/// `step_ms` (see [`boundaries`]).
pub async fn timeline(
    reader: &Reader,
    window: Window,
    last_seq: u64,
    step_ms: i64,
) -> Result<Timeline, WindowError> {
    let marks = boundaries(window, step_ms).ok_or_else(|| {
        WindowError::Invalid(format!(
            "step must be positive and give at most {MAX_POINTS} points over the window"
        ))
    })?;
    let mut points = Vec::with_capacity(marks.len());
    let mut next = marks.iter().copied().peekable();
    let mut state = State::default();
    if last_seq > 0 {
        let mut entries = reader.entries_range(1, last_seq).await?;
        while let Some(entry) = entries.next().await {
            let entry = entry?;
            if let Entry::Event(ev) = &entry {
                while let Some(t) = next.next_if(|t| ev.envelope.occurred_at >= *t) {
                    points.push(point(&state, t));
                }
                if next.peek().is_none() {
                    break;
                }
            }
            fold(&mut state, &entry);
        }
    }
    points.extend(next.map(|t| point(&state, t)));
    Ok(Timeline {
        from_ms: window.from,
        to_ms: window.to,
        step_ms,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_cover_the_window_and_end_at_its_end() {
        let w = Window::new(0, 25).unwrap();
        assert_eq!(boundaries(w, 10), Some(vec![0, 10, 20, 25]));
        assert_eq!(boundaries(w, 25), Some(vec![0, 25]));
        assert_eq!(boundaries(w, 0), None);
        assert_eq!(boundaries(Window::new(0, 0).unwrap(), 5), Some(vec![0]));
        assert_eq!(boundaries(Window::new(0, 1_000_000).unwrap(), 1), None);
    }
}
