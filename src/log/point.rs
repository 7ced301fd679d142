//! A point in the log, as the command line and the bridge name one: a stream sequence or a time.
//! `state --at`, `tail --from`, `usage --from/--to`, `whatif`, `GET /v1/state`, `GET /v1/usage` and
//! `GET /v1/stats/timeline` all parse it here.
//!
//! A time is RFC 3339 with a zone (`2026-11-29T00:24:05Z`, `2026-11-29T00:24:05+01:00`,
//! `2026-11-29 00:24:05.250-05:30`), `now`, or a humantime duration before now (`-15m`, `-2h`,
//! `-1d`, `-1h30m`). A time without a zone is refused: reading it as UTC would silently shift a
//! local time by the offset.

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

/// The formats a point may take, for error messages and help texts.
pub const POINT_FORMATS: &str = "a sequence (42), an RFC 3339 time with a zone \
     (2026-11-29T00:24:05Z, 2026-11-29T00:24:05+01:00), `now`, or a duration before now \
     (-15m, -2h, -1d)";

/// Parses a point, reading the clock for `now` and relative times (see [`parse_point_at`]).
pub fn parse_point(s: &str) -> Result<Point, String> {
    parse_point_at(s, crate::clock::now_ms())
}

/// Parses a time, reading the clock for `now` and relative times (see [`parse_time_at`]).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    parse_time_at(s, crate::clock::now_ms())
}

/// Parses a sequence (digits) or a time ([`parse_time_at`]); `now_ms` anchors `now` and `-15m`.
pub fn parse_point_at(s: &str, now_ms: Timestamp) -> Result<Point, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Point::Seq)
            .map_err(|e| format!("sequence {s:?}: {e}"));
    }
    parse_time_at(s, now_ms).map(Point::Time)
}

/// Parses a time into milliseconds since the Unix epoch: RFC 3339 with `Z` or an offset (`T` or a
/// space between date and time, optional fractional seconds), `now`, or `-<duration>` before
/// `now_ms` (humantime: `-30s`, `-15m`, `-2h`, `-1d`).
pub fn parse_time_at(s: &str, now_ms: Timestamp) -> Result<Timestamp, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = humantime::parse_duration(ago.trim()).map_err(|e| {
            format!("{s:?}: a relative time is a duration before now (-30s, -15m, -2h, -1d): {e}")
        })?;
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return match now_ms.checked_sub(ms) {
            Some(t) if t >= 0 => Ok(t),
            _ => Err(format!("{s:?} is before 1970")),
        };
    }
    let (local, offset_min) = split_zone(s).ok_or_else(|| no_zone(s))?;
    let t = humantime::parse_rfc3339_weak(local)
        .map_err(|e| format!("{s:?} is not {POINT_FORMATS}: {e}"))?;
    let local_ms = i128::try_from(
        t.duration_since(UNIX_EPOCH)
            .map_err(|_| format!("{s:?} is before 1970"))?
            .as_millis(),
    )
    .map_err(|_| format!("{s:?} is too far in the future"))?;
    let utc = local_ms - i128::from(offset_min) * 60_000;
    if utc < 0 {
        return Err(format!("{s:?} is before 1970"));
    }
    Timestamp::try_from(utc).map_err(|_| format!("{s:?} is too far in the future"))
}

/// The error for a time without `Z` or an offset, or anything else that is no point at all.
fn no_zone(s: &str) -> String {
    let looks_like_time = s.len() >= 19 && s.as_bytes().get(4) == Some(&b'-');
    if looks_like_time {
        format!(
            "{s:?} has no time zone: add Z or an offset, e.g. {s}Z or {s}+01:00 (or use a \
             relative time such as -15m)"
        )
    } else {
        format!("{s:?} is not {POINT_FORMATS}")
    }
}

/// Splits `…Z` or `…±HH:MM` into the local time and the offset in minutes east of UTC.
fn split_zone(s: &str) -> Option<(&str, i32)> {
    if let Some(local) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return Some((local, 0));
    }
    let cut = s.len().checked_sub(6)?;
    let (local, zone) = (s.get(..cut)?, s.get(cut..)?);
    let b = zone.as_bytes();
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = [b[1], b[2], b[4], b[5]];
    if b[3] != b':' || !digits.iter().all(u8::is_ascii_digit) || !local.contains([' ', 'T', 't']) {
        return None;
    }
    let hours = i32::from(b[1] - b'0') * 10 + i32::from(b[2] - b'0');
    let minutes = i32::from(b[4] - b'0') * 10 + i32::from(b[5] - b'0');
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((local, sign * (hours * 60 + minutes)))
}

/// An event time as RFC 3339 with milliseconds, UTC (`2026-01-02T03:04:05.678Z`).
pub fn format_time(ms: Timestamp) -> String {
    orchestrator_events::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-29T00:24:05Z.
    const T: Timestamp = 1_795_911_845_000;
    /// A fixed "now": 2026-11-29T10:00:00Z.
    const NOW: Timestamp = 1_795_946_400_000;

    fn at(s: &str) -> Result<Timestamp, String> {
        parse_time_at(s, NOW)
    }

    #[test]
    fn fixed_times_are_what_they_say() {
        assert_eq!(format_time(T), "2026-11-29T00:24:05.000Z");
        assert_eq!(format_time(NOW), "2026-11-29T10:00:00.000Z");
    }

    #[test]
    fn utc_in_every_spelling() {
        assert_eq!(at("2026-11-29T00:24:05Z"), Ok(T));
        assert_eq!(at("2026-11-29T00:24:05z"), Ok(T));
        assert_eq!(at("2026-11-29 00:24:05Z"), Ok(T));
        assert_eq!(at("2026-11-29T00:24:05+00:00"), Ok(T));
        assert_eq!(at("2026-11-29T00:24:05-00:00"), Ok(T));
        assert_eq!(at("2026-11-29T00:24:05.678Z"), Ok(T + 678));
        assert_eq!(at("2026-11-29T00:24:05.5Z"), Ok(T + 500));
        assert_eq!(at(" 2026-11-29T00:24:05Z "), Ok(T));
    }

    #[test]
    fn offsets_east_and_west() {
        assert_eq!(at("2026-11-29T01:24:05+01:00"), Ok(T));
        assert_eq!(at("2026-11-29T00:24:05+01:00"), Ok(T - 3_600_000));
        assert_eq!(at("2026-11-28T18:54:05-05:30"), Ok(T));
        assert_eq!(at("2026-11-29 05:54:05.250+05:30"), Ok(T + 250));
        // Across midnight and the date line.
        assert_eq!(at("2026-11-29T14:24:05+14:00"), Ok(T));
        assert_eq!(at("2026-11-28T12:24:05-12:00"), Ok(T));
    }

    #[test]
    fn a_time_without_a_zone_is_refused() {
        for s in [
            "2026-11-29T00:24:05",
            "2026-11-29 00:24:05",
            "2026-11-29T00:24:05.5",
        ] {
            let e = at(s).unwrap_err();
            assert!(e.contains("add Z or an offset"), "{s}: {e}");
            assert!(e.contains(&format!("{s}Z")), "{s}: {e}");
        }
    }

    #[test]
    fn relative_times_count_back_from_now() {
        assert_eq!(at("now"), Ok(NOW));
        assert_eq!(at("NOW"), Ok(NOW));
        assert_eq!(at("-30s"), Ok(NOW - 30_000));
        assert_eq!(at("-15m"), Ok(NOW - 15 * 60_000));
        assert_eq!(at("-2h"), Ok(NOW - 2 * 3_600_000));
        assert_eq!(at("-1d"), Ok(NOW - 86_400_000));
        assert_eq!(at("-1h30m"), Ok(NOW - 90 * 60_000));
        assert!(at("-15x").unwrap_err().contains("duration before now"));
        assert!(parse_time_at("-2h", 1000)
            .unwrap_err()
            .contains("before 1970"));
    }

    #[test]
    fn nonsense_is_refused_with_the_formats() {
        for s in [
            "",
            "yesterday",
            "2026-11-29",
            "2026-11-29T00:24:05+1:00",
            "+15m",
        ] {
            let e = at(s).unwrap_err();
            assert!(e.contains("RFC 3339") || e.contains("add Z"), "{s}: {e}");
        }
        assert!(at("2026-11-29T00:24:05+24:00").is_err());
        assert!(at("1969-12-31T23:59:59Z").is_err());
        assert!(at("1970-01-01T00:30:00+01:00")
            .unwrap_err()
            .contains("before 1970"));
    }

    #[test]
    fn points_are_sequences_or_times() {
        assert_eq!(parse_point_at("42", NOW), Ok(Point::Seq(42)));
        assert_eq!(parse_point_at("now", NOW), Ok(Point::Time(NOW)));
        assert_eq!(
            parse_point_at("-1d", NOW),
            Ok(Point::Time(NOW - 86_400_000))
        );
        assert_eq!(
            parse_point_at("2026-11-29T01:24:05+01:00", NOW),
            Ok(Point::Time(T))
        );
        assert!(parse_point_at("99999999999999999999999", NOW).is_err());
    }
}
