//! A point in the log, as the command line and the bridge name one: a stream sequence or a time.
//! `state --at`, `tail --from`, `usage --from/--to` and `GET /v1/usage` all parse it here.

use std::time::UNIX_EPOCH;

use orchestrator_events::Timestamp;

/// A point in the log: a stream sequence or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A stream sequence.
    Seq(u64),
    /// Milliseconds since the Unix epoch.
    Time(Timestamp),
}

/// Parses a sequence (digits) or an RFC 3339 time (`2026-01-02T10:00:00Z`, or without the `T` and
/// the zone, read as UTC).
pub fn parse_point(s: &str) -> Result<Point, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Point::Seq)
            .map_err(|e| format!("sequence {s:?}: {e}"));
    }
    parse_time(s).map(Point::Time)
}

/// Parses an RFC 3339 time into milliseconds since the Unix epoch.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is neither a sequence nor an RFC 3339 time: {e}"))?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_millis();
    Timestamp::try_from(ms).map_err(|_| format!("{s:?} is too far in the future"))
}

/// An event time as RFC 3339 with milliseconds, UTC (`2026-01-02T03:04:05.678Z`).
pub fn format_time(ms: Timestamp) -> String {
    orchestrator_events::rfc3339(ms)
}
