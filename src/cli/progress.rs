//! Progress of a long read on stderr: one line a second (events read, the sequence reached), shown
//! when stderr is a terminal or when asked for with `--progress`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::analytics::ReadProgress;

/// How often a line is printed.
pub const EVERY: Duration = Duration::from_secs(1);

/// Decides when a progress line is due. The caller passes the time, so the rule is tested without
/// waiting.
#[derive(Debug, Clone)]
pub struct Progress {
    what: &'static str,
    enabled: bool,
    next: Instant,
}

impl Progress {
    /// Progress of `what` (`usage`, `whatif`), shown when `asked` or when stderr is a terminal.
    pub fn new(what: &'static str, asked: bool, now: Instant) -> Self {
        Self {
            what,
            enabled: asked || std::io::stderr().is_terminal(),
            next: now + EVERY,
        }
    }

    /// The line to print at `now`, if one is due.
    pub fn line(&mut self, now: Instant, at: ReadProgress) -> Option<String> {
        if !self.enabled || now < self.next {
            return None;
        }
        self.next = now + EVERY;
        Some(format!(
            "{}: {} events read, at seq {} of {}",
            self.what, at.events, at.seq, at.last_seq
        ))
    }

    /// Prints the line due now, if any.
    pub fn tick(&mut self, at: ReadProgress) {
        if let Some(line) = self.line(Instant::now(), at) {
            eprintln!("{line}");
        }
    }

    /// Prints the last line, when progress is shown.
    pub fn done(&self, events: u64, last_seq: u64) {
        if self.enabled {
            eprintln!(
                "{}: done, {events} events read up to seq {last_seq}",
                self.what
            );
        }
    }

    /// Whether lines are shown.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_a_second_only_when_shown() {
        let t0 = Instant::now();
        let at = ReadProgress {
            events: 10,
            seq: 12,
            last_seq: 100,
        };
        let mut p = Progress::new("usage", true, t0);
        assert_eq!(p.line(t0, at), None, "nothing before the first second");
        assert_eq!(
            p.line(t0 + EVERY, at).as_deref(),
            Some("usage: 10 events read, at seq 12 of 100")
        );
        assert_eq!(p.line(t0 + EVERY + Duration::from_millis(999), at), None);
        assert!(p.line(t0 + 2 * EVERY, at).is_some());
        let mut quiet = Progress {
            enabled: false,
            ..Progress::new("usage", false, t0)
        };
        assert_eq!(quiet.line(t0 + 10 * EVERY, at), None);
    }
}
