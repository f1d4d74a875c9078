//! Lamport clocks (spec §4.4): Serf keeps three, for membership intents, user events and queries.
//!
//! A peer's time is data, not truth: one forged event at 2^64−2 once moved every clock to the top,
//! where the next increment wrapped to 0 and every later event was dropped as old. So a time more
//! than [`MAX_LTIME_JUMP`] ahead of ours is refused by the caller ([`LamportClock::credible`]), and
//! the arithmetic saturates.

/// How far ahead of our clock a peer's Lamport time may be. Honest clocks move by one per
/// intent, event or query, so even a node that slept through a busy day is a few million
/// behind; to push a clock to the top a forger needs four billion accepted messages.
pub const MAX_LTIME_JUMP: u64 = 1 << 32;

/// A Lamport clock: `witness` moves it past any time seen from a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LamportClock(u64);

impl LamportClock {
    /// A clock at time 0.
    pub fn new() -> Self {
        Self(0)
    }

    /// The current time.
    pub fn time(&self) -> u64 {
        self.0
    }

    /// Advances by one and returns the new time (saturating at `u64::MAX`).
    pub fn increment(&mut self) -> u64 {
        self.0 = self.0.saturating_add(1);
        self.0
    }

    /// Seen `t` from elsewhere: move to `t + 1` unless we are already past it.
    pub fn witness(&mut self, t: u64) {
        if t >= self.0 {
            self.0 = t.saturating_add(1);
        }
    }

    /// Whether a peer could honestly be at `t`: at most [`MAX_LTIME_JUMP`] ahead of us.
    pub fn credible(&self, t: u64) -> bool {
        t <= self.0.saturating_add(MAX_LTIME_JUMP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witness_moves_past_a_newer_time_and_ignores_older() {
        let mut c = LamportClock::new();
        c.witness(41);
        assert_eq!(c.time(), 42);
        c.witness(10);
        assert_eq!(c.time(), 42);
        assert_eq!(c.increment(), 43);
    }

    #[test]
    fn clocks_saturate_and_refuse_far_future_times() {
        let mut c = LamportClock::new();
        assert!(c.credible(MAX_LTIME_JUMP));
        assert!(!c.credible(u64::MAX - 1));
        c.witness(u64::MAX - 1);
        assert_eq!(c.increment(), u64::MAX);
        assert_eq!(c.increment(), u64::MAX, "never wraps to 0");
        c.witness(u64::MAX);
        assert_eq!(c.time(), u64::MAX);
    }
}
