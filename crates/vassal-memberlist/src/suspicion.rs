//! Lifeguard suspicion: a suspect's timeout falls from max to min as independent peers confirm it
//! (spec §3.5; Lifeguard §IV-B), and local health awareness (Lifeguard §IV-A).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::limits::later;

/// The minimum suspicion timeout: `mult × max(1, log10(max(1, n))) × interval`, with the scale
/// truncated to thousandths as Go does.
pub fn suspicion_timeout(suspicion_mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    let millis_scale = (scale * 1000.0) as u64;
    // Saturating: a config of absurd multipliers gets the longest timeout, not an abort.
    interval
        .saturating_mul(suspicion_mult)
        .saturating_mul(u32::try_from(millis_scale).unwrap_or(u32::MAX))
        .checked_div(1000)
        .unwrap_or_default() // 1000 is not zero
}

/// A running suspicion of one node.
#[derive(Debug, Clone)]
pub struct Suspicion {
    /// Confirmations wanted before the timeout reaches its minimum.
    k: u32,
    n: u32,
    min: Duration,
    max: Duration,
    start: Instant,
    confirmations: BTreeSet<String>,
    /// When the node is declared dead unless refuted.
    pub deadline: Instant,
}

impl Suspicion {
    /// Starts suspecting on `from`'s word; with `k ≥ 1` the timer starts at `max`.
    pub fn new(from: &str, k: u32, min: Duration, max: Duration, now: Instant) -> Self {
        let timeout = if k >= 1 { max } else { min };
        Suspicion {
            k,
            n: 0,
            min,
            max,
            start: now,
            confirmations: BTreeSet::from([from.to_owned()]),
            deadline: later(now, timeout),
        }
    }

    /// Counts an independent confirmation; returns whether it was new (and so worth re-gossiping).
    pub fn confirm(&mut self, from: &str) -> bool {
        if self.n >= self.k || !self.confirmations.insert(from.to_owned()) {
            return false;
        }
        self.n = self.n.saturating_add(1); // below k, checked above
        self.deadline = later(self.start, self.timeout_after(self.n));
        true
    }

    /// Independent confirmations counted so far (the first accuser excluded).
    pub fn confirmations(&self) -> u32 {
        self.n
    }

    /// Whether the timer ran with fewer confirmations than it hoped for (so at more than its
    /// minimum timeout): Go counts such expiries as `memberlist.degraded.timeout`.
    pub fn short_of_confirmations(&self) -> bool {
        self.k > 0 && self.n < self.k
    }

    /// The whole timeout after `c` confirmations: `max − ln(c+1)/ln(k+1) × (max − min)`,
    /// floored to milliseconds and never below `min`.
    fn timeout_after(&self, c: u32) -> Duration {
        let frac = ((c as f64) + 1.0).ln() / ((self.k as f64) + 1.0).ln();
        let raw = self.max.as_secs_f64() - frac * (self.max.as_secs_f64() - self.min.as_secs_f64());
        let t = Duration::from_millis((1000.0 * raw).floor().max(0.0) as u64);
        t.max(self.min)
    }
}

/// Local health: a score in `[0, max − 1]` that stretches probe deadlines when we seem unwell.
#[derive(Debug, Clone)]
pub struct Awareness {
    max: i32,
    score: i32,
}

impl Awareness {
    /// A healthy score of 0, which can rise to `max_multiplier − 1`.
    pub fn new(max_multiplier: u32) -> Self {
        Awareness {
            max: i32::try_from(max_multiplier).unwrap_or(i32::MAX),
            score: 0,
        }
    }

    /// Raises (positive) or lowers (negative) the score, kept within its range.
    pub fn apply_delta(&mut self, delta: i32) {
        // `max` is at least 1 (validated), so the range is never empty.
        let top = self.max.saturating_sub(1).max(0);
        let before = self.score;
        self.score = self.score.saturating_add(delta).clamp(0, top);
        if self.score != before {
            // Go's awareness sets the gauge on every change of score.
            metrics::gauge!("memberlist.health.score").set(f64::from(self.score));
        }
    }

    /// The current score: 0 is healthy.
    pub fn score(&self) -> i32 {
        self.score
    }

    /// `timeout` stretched by our ill health: `timeout × (score + 1)`.
    pub fn scale(&self, timeout: Duration) -> Duration {
        // score is in [0, max − 1], so non-negative and at most max − 1 < i32::MAX.
        timeout.saturating_mul(self.score.unsigned_abs().saturating_add(1))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's epoch: only differences from it matter
mod tests {
    use super::*;

    #[test]
    fn min_timeout_scales_with_log_of_cluster_size() {
        let pi = Duration::from_secs(1);
        // spec §3.5: n=3 → 4 s; n=10 → 4 s; n=100 → 8 s (LAN, SuspicionMult 4).
        assert_eq!(suspicion_timeout(4, 3, pi), Duration::from_secs(4));
        assert_eq!(suspicion_timeout(4, 10, pi), Duration::from_secs(4));
        assert_eq!(suspicion_timeout(4, 100, pi), Duration::from_secs(8));
    }

    #[test]
    fn suspicion_timeout_shrinks_with_confirmations() {
        // Lifeguard §IV-B; spec §3.5 example: n=10, min 4 s, max 24 s, k=2.
        let now = Instant::now();
        let min = Duration::from_secs(4);
        let mut s = Suspicion::new("a", 2, min, min * 6, now);
        assert_eq!(s.deadline - now, Duration::from_secs(24));
        assert!(s.confirm("b"));
        assert_eq!(s.deadline - now, Duration::from_millis(11_381));
        assert!(!s.confirm("b"), "the same peer counts once");
        assert!(s.confirm("c"));
        assert_eq!(s.deadline - now, min);
        assert!(!s.confirm("d"), "no more than k confirmations count");
    }

    #[test]
    fn suspicion_without_expected_confirmations_uses_min() {
        let now = Instant::now();
        let s = Suspicion::new("a", 0, Duration::from_secs(4), Duration::from_secs(24), now);
        assert_eq!(s.deadline - now, Duration::from_secs(4));
    }

    #[test]
    fn awareness_is_clamped() {
        let mut a = Awareness::new(8);
        a.apply_delta(-1);
        assert_eq!(a.score(), 0);
        a.apply_delta(100);
        assert_eq!(a.score(), 7);
        assert_eq!(a.scale(Duration::from_secs(1)), Duration::from_secs(8));
    }
}
