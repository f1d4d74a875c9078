//! The transmit-limited broadcast queue (spec §3.6): each message is piggybacked or gossiped
//! `retransmit_mult × ceil(log10(n + 1))` times, fewest-sent first, largest first within a tier.
//!
//! Used by memberlist for alive/suspect/dead and by Serf for intents, events and queries.

use std::cmp::Reverse;
use std::collections::BTreeMap;
// Only looked up, never iterated: its order reaches nothing.
#[allow(clippy::disallowed_types)]
use std::collections::HashMap;

/// A message's place in the queue: fewest transmissions, then longest, then newest first.
type Key = (u32, Reverse<usize>, Reverse<u64>);

#[derive(Debug, Clone)]
struct Item {
    msg: Vec<u8>,
    /// Queuing a message with the same name replaces this one (memberlist's node broadcasts).
    name: Option<String>,
    /// Reported by [`TransmitLimitedQueue::take_finished`] when the message leaves the queue.
    notify: Option<u64>,
}

/// Broadcasts waiting to be sent a limited number of times.
#[derive(Debug, Clone, Default)]
pub struct TransmitLimitedQueue {
    items: BTreeMap<Key, Item>,
    /// Where each named message sits in `items` (hashed: looked up for every message queued
    /// and every one sent).
    #[allow(clippy::disallowed_types)]
    by_name: HashMap<String, Key>,
    next_id: u64,
    finished: Vec<u64>,
}

/// `retransmit_mult × ceil(log10(n + 1))`: how often a message is sent before it is dropped.
pub fn retransmit_limit(retransmit_mult: u32, num_nodes: usize) -> u32 {
    let scale = ((num_nodes as f64) + 1.0).log10().ceil() as u32;
    retransmit_mult.saturating_mul(scale)
}

impl TransmitLimitedQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages waiting, whatever their transmit counts.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `msg`. A named message replaces a queued one of the same name, which counts as
    /// finished. `notify` is reported by [`take_finished`](Self::take_finished) once the message
    /// has been sent its last time, or replaced, or pruned.
    pub fn queue(&mut self, name: Option<String>, msg: Vec<u8>, notify: Option<u64>) {
        if let Some(name) = &name {
            if let Some(key) = self.by_name.remove(name) {
                if let Some(old) = self.items.remove(&key) {
                    self.finished.extend(old.notify);
                }
            }
        }
        // One per queued message: a u64 does not wrap in practice, and a wrap would only reorder.
        self.next_id = self.next_id.wrapping_add(1);
        let key = (0, Reverse(msg.len()), Reverse(self.next_id));
        if let Some(name) = &name {
            self.by_name.insert(name.clone(), key);
        }
        self.items.insert(key, Item { msg, name, notify });
    }

    /// Takes messages that fit in `limit` bytes, each costing `overhead` more than its length,
    /// and counts one transmission for each (spec §3.6).
    pub fn get_broadcasts(
        &mut self,
        overhead: usize,
        limit: usize,
        retransmit_mult: u32,
        num_nodes: usize,
    ) -> Vec<Vec<u8>> {
        let Some(max_tier) = self.items.keys().next_back().map(|k| k.0) else {
            return Vec::new();
        };
        let transmit_limit = retransmit_limit(retransmit_mult, num_nodes);
        let mut tier = self.items.keys().next().map_or(0, |k| k.0);
        let mut used = 0usize;
        let mut out = Vec::new();
        let mut reinsert = Vec::new();
        while tier <= max_tier {
            let Some(free) = limit
                .checked_sub(used.saturating_add(overhead))
                .filter(|f| *f > 0)
            else {
                break;
            };
            let from = (tier, Reverse(free), Reverse(u64::MAX));
            let to = (
                tier.saturating_add(1),
                Reverse(usize::MAX),
                Reverse(u64::MAX),
            );
            let Some((key, item)) = self
                .items
                .range(from..to)
                .next()
                .map(|(k, _)| *k)
                .and_then(|k| Some((k, self.items.remove(&k)?)))
            else {
                let Some(next) = tier.checked_add(1) else {
                    break;
                };
                tier = next;
                continue;
            };
            used = used.saturating_add(overhead).saturating_add(item.msg.len());
            out.push(item.msg.clone());
            let sent = key.0.saturating_add(1);
            if sent >= transmit_limit {
                if let Some(name) = &item.name {
                    self.by_name.remove(name);
                }
                self.finished.extend(item.notify);
            } else {
                reinsert.push(((sent, key.1, key.2), item));
            }
        }
        for (key, item) in reinsert {
            // The name still maps to the key it was taken under: point it at the new one.
            if let Some(at) = item.name.as_ref().and_then(|n| self.by_name.get_mut(n)) {
                *at = key;
            }
            self.items.insert(key, item);
        }
        out
    }

    /// Drops the most-transmitted messages until at most `max` remain (Serf's queue pruning).
    pub fn prune(&mut self, max: usize) {
        while self.items.len() > max {
            let Some((_, item)) = self.items.pop_last() else {
                break;
            };
            if let Some(name) = &item.name {
                self.by_name.remove(name);
            }
            self.finished.extend(item.notify);
        }
    }

    /// Notification tokens of messages that left the queue since the last call.
    pub fn take_finished(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.finished)
    }

    /// Whether a message queued with `notify` is still waiting to be sent.
    pub fn is_pending(&self, notify: u64) -> bool {
        self.items.values().any(|i| i.notify == Some(notify))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmit_limit_matches_go() {
        // spec §3.6: LAN, 3 nodes → 4; 10 → 8; 100 → 12.
        assert_eq!(retransmit_limit(4, 3), 4);
        assert_eq!(retransmit_limit(4, 10), 8);
        assert_eq!(retransmit_limit(4, 100), 12);
    }

    #[test]
    fn fewest_transmits_then_largest_first() {
        let mut q = TransmitLimitedQueue::new();
        q.queue(None, vec![1; 10], None);
        q.queue(None, vec![2; 30], None);
        let first = q.get_broadcasts(2, 34, 4, 3);
        assert_eq!(first, vec![vec![2; 30]], "the larger fits first");
        let next = q.get_broadcasts(2, 100, 4, 3);
        assert_eq!(
            next,
            vec![vec![1; 10], vec![2; 30]],
            "untransmitted before transmitted"
        );
    }

    #[test]
    fn message_is_dropped_after_its_limit_and_reports_finished() {
        let mut q = TransmitLimitedQueue::new();
        q.queue(None, b"x".to_vec(), Some(7));
        for _ in 0..4 {
            assert_eq!(q.get_broadcasts(2, 100, 4, 3).len(), 1);
        }
        assert!(q.is_empty());
        assert_eq!(q.take_finished(), vec![7]);
        assert!(q.get_broadcasts(2, 100, 4, 3).is_empty());
    }

    #[test]
    fn named_message_replaces_older_one() {
        let mut q = TransmitLimitedQueue::new();
        q.queue(Some("n1".into()), b"old".to_vec(), Some(1));
        q.queue(Some("n1".into()), b"new".to_vec(), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_finished(), vec![1]);
        assert_eq!(q.get_broadcasts(2, 100, 4, 3), vec![b"new".to_vec()]);
    }
}
