//! Latency samples and their percentiles, and rates.

use std::time::Duration;

use serde::Serialize;

/// Latencies recorded one by one, summarised by [`Samples::summary`].
#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    /// An empty set with room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            nanos: Vec::with_capacity(n),
        }
    }

    /// Records one latency.
    pub fn push(&mut self, d: Duration) {
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// The percentiles (nearest rank) of what was recorded.
    pub fn summary(mut self) -> Latency {
        if self.nanos.is_empty() {
            return Latency::default();
        }
        self.nanos.sort_unstable();
        let n = self.nanos.len();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            self.nanos[rank - 1] as f64 / 1_000.0
        };
        let sum: u128 = self.nanos.iter().map(|&x| u128::from(x)).sum();
        Latency {
            count: n as u64,
            mean_us: sum as f64 / n as f64 / 1_000.0,
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: self.nanos[n - 1] as f64 / 1_000.0,
        }
    }
}

/// A latency distribution, in microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// How many samples.
    pub count: u64,
    /// Their mean.
    pub mean_us: f64,
    /// The median.
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
    /// The 99.9th percentile.
    pub p999_us: f64,
    /// The largest.
    pub max_us: f64,
}

impl Latency {
    /// `p50/p99/p999 ms`, for the table.
    pub fn show(&self) -> String {
        if self.count == 0 {
            return "-".into();
        }
        format!(
            "{}/{}/{} ms",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us)
        )
    }
}

/// Microseconds as milliseconds with 2 significant digits at least.
fn ms(us: f64) -> String {
    let ms = us / 1_000.0;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

/// `count` things over `elapsed`, per second (0 for an empty interval).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// A rate with thousands separators, e.g. `141,230`.
pub fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for us in 1..=1000u64 {
            s.push(Duration::from_micros(us));
        }
        let l = s.summary();
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_us, 500.0);
        assert_eq!(l.p99_us, 990.0);
        assert_eq!(l.p999_us, 999.0);
        assert_eq!(l.max_us, 1000.0);
    }

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(141_230.0), "141,230");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
