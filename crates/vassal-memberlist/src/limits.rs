//! Bounds on what a peer can make us hold or believe, and the count of what they refused.
//!
//! Everything from the network is data to validate (issue 11): a value past one of these bounds is
//! dropped and counted in [`Drops`] under a reason, and the first drop of each reason is logged
//! (later ones only counted), so a flood costs the sender, not our log or our memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How far above the incarnation we know for a node an `alive`, `suspect` or `dead` about it may
/// claim before we call it incredible and drop it.
///
/// Honest incarnations rise by one per refutation, so a better-informed peer is ahead of us only
/// by the refutations we missed: a handful, a few hundred after a long partition. A forger who
/// claims 2^32−1 would leave the accused no room to refute (Go memberlist 0.2.2 wraps to 0 and
/// every peer then ignores the refutation). With this margin a forger needs millions of
/// accusation-and-refutation rounds to walk a node to the top, and arithmetic saturates anyway.
pub const MAX_INCARNATION_JUMP: u32 = 1024;

/// Most bytes one UDP datagram may decompress to. Honest packets are at most a UDP buffer
/// (1,400 bytes in the LAN profile, 64 KiB in any case) before compression; a few kilobytes of
/// LZW can claim tens of megabytes.
pub const MAX_PACKET_DECOMPRESSED: usize = 64 * 1024;

/// Longest node name we accept, in bytes (a DNS name is at most 253).
pub const MAX_NODE_NAME_LEN: usize = 512;

/// How long a node must have been left before an `alive` may put it at another address.
///
/// memberlist lets a node that left come back anywhere (a new process, maybe on a new address),
/// so a forged leave (a `dead` from the node itself) followed by a forged `alive` at the
/// forger's address once moved a healthy node there on every peer; the node then lost the
/// name-conflict vote and shut down. Peers keep gossiping to a node that just left (as to one
/// that just died), so a live node hears the forged leave and refutes it within a few gossip
/// rounds, far less than this; a node that really restarted on a new address is
/// seen there this much later (by its next refutation or push/pull). Go has no such wait.
pub const LEFT_NODE_RECLAIM_TIME: Duration = Duration::from_secs(15);

/// Most nodes we hold, alive or not. Go has no bound, so a single forged push/pull could make
/// it keep a million names; Serf clusters run to about ten thousand.
pub const MAX_NODES: usize = 1 << 16;

/// Longest delay anything is scheduled for: a year. `Instant + Duration` panics when the sum does
/// not fit, so every deadline goes through [`later`], which caps the delay here; a delay this long
/// means "not in this process's lifetime" whatever its exact value.
pub const MAX_DELAY: Duration = Duration::from_secs(31_536_000);

/// `now + delay`, with `delay` capped at [`MAX_DELAY`]: a duration read from a packet or a config
/// file cannot overflow the clock (and so abort the agent).
pub fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay.min(MAX_DELAY)).unwrap_or(now)
}

/// Why a node name is not one we will hold: empty, too long, or with control characters (a
/// newline in a name could write lines of its own into the snapshot file).
pub fn invalid_node_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty node name")
    } else if name.len() > MAX_NODE_NAME_LEN {
        Some("node name too long")
    } else if name.chars().any(char::is_control) {
        Some("node name has control characters")
    } else {
        None
    }
}

/// Hostile or impossible input that was dropped, counted by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops {
    counts: BTreeMap<&'static str, u64>,
}

impl Drops {
    /// Counts one drop; true if it is the first for `reason` (the caller logs it then).
    pub fn record(&mut self, reason: &'static str) -> bool {
        // Every drop is also a metric (Go has none): one counter, the reason as a label.
        metrics::counter!("vassal.drops", "reason" => reason).increment(1);
        let n = self.counts.entry(reason).or_insert(0);
        *n = n.saturating_add(1);
        *n == 1
    }

    /// Drops counted for `reason`.
    pub fn get(&self, reason: &str) -> u64 {
        self.counts.get(reason).copied().unwrap_or(0)
    }

    /// Every reason with its count, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().map(|(r, n)| (*r, *n))
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.counts.values().fold(0, |a, n| a.saturating_add(*n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_newlines_or_nothing_are_refused() {
        assert_eq!(invalid_node_name("web-1"), None);
        assert_eq!(invalid_node_name("nœud ünicode"), None);
        assert!(invalid_node_name("").is_some());
        assert!(invalid_node_name("evil\nalive: x 127.0.0.1:22").is_some());
        assert!(invalid_node_name(&"x".repeat(MAX_NODE_NAME_LEN + 1)).is_some());
    }

    #[test]
    fn drops_report_the_first_of_each_reason() {
        let mut d = Drops::default();
        assert!(d.record("a"));
        assert!(!d.record("a"));
        assert!(d.record("b"));
        assert_eq!((d.get("a"), d.get("b"), d.total()), (2, 1, 3));
    }
}
