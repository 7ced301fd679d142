//! The wall clock, read at the edges only (the domain takes time from the command's metadata).

use orchestrator_events::Timestamp;

/// Now, in milliseconds since the Unix epoch (0 before the epoch, saturating far in the future).
pub fn now_ms() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::try_from(since.as_millis()).unwrap_or(Timestamp::MAX)
}
