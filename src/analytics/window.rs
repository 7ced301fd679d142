//! A window of event time, `[from, to)`, and how points of the log (a sequence or a time) become
//! its bounds.

use orchestrator_events::Timestamp;

use crate::log::{Entry, LogError, Point, Reader};

/// A window of event time: from `from` (inclusive) to `to` (exclusive), in milliseconds since the
/// Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The start, inclusive.
    pub from: Timestamp,
    /// The end, exclusive.
    pub to: Timestamp,
}

impl Window {
    /// The window `[from, to)`; `None` when `to` is before `from`.
    pub fn new(from: Timestamp, to: Timestamp) -> Option<Self> {
        (from <= to).then_some(Self { from, to })
    }

    /// Milliseconds of `[start, end)` inside the window (0 when they do not meet).
    pub fn overlap(&self, start: Timestamp, end: Timestamp) -> i64 {
        (end.min(self.to) - start.max(self.from)).max(0)
    }
}

/// Why a window cannot be made from two points.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// A sequence past the log's end, or one that holds no event: name another.
    #[error("{0}")]
    Invalid(String),
    /// The log could not be read; see [`LogError`].
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Where a read of the window ends: the last sequence that may matter and the window itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The window of event time.
    pub window: Window,
    /// The last sequence to read: the log's last when asked, or the sequence `to` named.
    pub last_seq: u64,
}

/// Turns `from` and `to` into a window of event time: a time is taken as it is, a sequence as the
/// `occurred_at` of the event stored there (so `--to 42` ends the window when event 42 happened).
pub async fn resolve(reader: &Reader, from: Point, to: Point) -> Result<Resolved, WindowError> {
    let last = reader.last_seq().await?;
    let from_ms = time_of(reader, from, last).await?;
    let to_ms = time_of(reader, to, last).await?;
    let last_seq = match to {
        Point::Seq(seq) => seq,
        Point::Time(_) => last,
    };
    let window = Window::new(from_ms, to_ms).ok_or_else(|| {
        WindowError::Invalid(format!(
            "the window ends ({to_ms} ms) before it starts ({from_ms} ms)"
        ))
    })?;
    Ok(Resolved { window, last_seq })
}

async fn time_of(reader: &Reader, point: Point, last: u64) -> Result<Timestamp, WindowError> {
    let seq = match point {
        Point::Time(t) => return Ok(t),
        Point::Seq(seq) if seq == 0 || seq > last => {
            return Err(WindowError::Invalid(format!(
                "sequence {seq} is not in the log (1 to {last})"
            )))
        }
        Point::Seq(seq) => seq,
    };
    match reader.entry(seq).await? {
        Some(Entry::Event(ev)) => Ok(ev.envelope.occurred_at),
        Some(Entry::Skipped(s)) => Err(WindowError::Invalid(format!(
            "sequence {seq} holds no event ({}): name another",
            s.why.describe()
        ))),
        None => Err(WindowError::Invalid(format!(
            "sequence {seq} is not in the log"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_clip_intervals() {
        let w = Window::new(10, 20).unwrap();
        assert_eq!(w.overlap(0, 5), 0);
        assert_eq!(w.overlap(5, 15), 5);
        assert_eq!(w.overlap(12, 18), 6);
        assert_eq!(w.overlap(15, 30), 5);
        assert_eq!(w.overlap(0, 30), 10);
        assert_eq!(w.overlap(20, 30), 0, "the end is exclusive");
        assert_eq!(w.overlap(18, 12), 0, "time never runs backwards");
        assert_eq!(Window::new(20, 10), None);
        assert_eq!(Window::new(10, 10).unwrap().overlap(0, 100), 0);
    }
}
