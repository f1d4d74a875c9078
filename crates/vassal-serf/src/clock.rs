//! Lamport clocks (spec §4.4): Serf keeps three, for membership intents, user events and queries.

/// A Lamport clock: `witness` moves it past any time seen from a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LamportClock(u64);

impl LamportClock {
    pub fn new() -> Self {
        Self(0)
    }

    pub fn time(&self) -> u64 {
        self.0
    }

    /// Advances by one and returns the new time.
    pub fn increment(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    /// Seen `t` from elsewhere: move to `t + 1` unless we are already past it.
    pub fn witness(&mut self, t: u64) {
        if t >= self.0 {
            self.0 = t + 1;
        }
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
}
