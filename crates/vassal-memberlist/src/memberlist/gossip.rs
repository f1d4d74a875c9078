//! Gossip (spec §3.6): every gossip interval, queued broadcasts go to a few random nodes, and
//! every packet we send carries as many of them as fit. Go memberlist's `gossip` and
//! `getBroadcasts`.

use std::net::SocketAddr;
use std::time::Instant;

use super::advance;
use super::Memberlist;
use crate::broadcast::TransmitLimitedQueue;
use crate::delegate::Delegate;
use crate::wire::{self, Message, NodeStateKind};

/// Bytes of compound framing per part, and for the compound header.
pub(super) const COMPOUND_OVERHEAD: usize = 2;
pub(super) const COMPOUND_HEADER_OVERHEAD: usize = 2;
/// The `08` type byte in front of each delegate broadcast.
pub(super) const USER_MSG_OVERHEAD: usize = 1;

/// What gossip owns: memberlist's own broadcast queue and the gossip timer.
#[derive(Debug, Clone)]
pub(super) struct GossipState {
    queue: TransmitLimitedQueue,
    /// When the next gossip round is due; `None` when gossip is disabled.
    next_at: Option<Instant>,
}

impl GossipState {
    pub(super) fn new(next_at: Option<Instant>) -> Self {
        GossipState {
            queue: TransmitLimitedQueue::new(),
            next_at,
        }
    }

    /// The next round, if there is anything of ours to gossip. Go's ticker fires every
    /// interval regardless and finds nothing to send most of the time; a wake-up for nothing
    /// is five of an idle node's eight or so a second, so we sleep through those rounds. A
    /// broadcast queued later is gossiped at once (the missed tick is in the past) and then on
    /// the same cadence. The delegate's queues are the layer above's to check
    /// ([`Memberlist::next_gossip`]).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.next_at.filter(|_| !self.queue.is_empty())
    }

    /// The next round, queued broadcasts or not.
    pub(super) fn next_round(&self) -> Option<Instant> {
        self.next_at
    }

    /// Messages waiting to be gossiped.
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether the broadcast queued with `notify` is still waiting for its transmits.
    pub(super) fn is_pending(&self, notify: u64) -> bool {
        self.queue.is_pending(notify)
    }
}

impl Memberlist {
    /// Runs a gossip round if one is due.
    pub(super) fn gossip_if_due(&mut self, now: Instant, d: &mut impl Delegate) {
        if let Some(at) = self.gossip.next_at.filter(|at| now >= *at) {
            self.gossip.next_at = Some(advance(at, self.config.gossip_interval, now));
            // Go times each gossip round's work; the core's work takes no time on its clock,
            // so this timer is how late the round ran after its tick (its count is the rounds).
            crate::telemetry::measure_since("memberlist.gossip", at, now);
            self.gossip(now, d);
        }
    }

    pub(super) fn gossip(&mut self, now: Instant, d: &mut impl Delegate) {
        let dead_time = self.config.gossip_to_the_dead_time;
        // Dead nodes, and (unlike Go) left ones, still hear gossip for a while: a node that a
        // forged leave or verdict took out hears of it within a round and refutes it, inside
        // LEFT_NODE_RECLAIM_TIME.
        let fanout = self.gossip_fanout();
        let targets = self.k_random_nodes(fanout, |n| match n.node.state {
            NodeStateKind::Alive | NodeStateKind::Suspect => false,
            NodeStateKind::Dead | NodeStateKind::Left => {
                now.saturating_duration_since(n.state_change) > dead_time
            }
        });
        let avail = self
            .config
            .udp_buffer_size
            .saturating_sub(COMPOUND_HEADER_OVERHEAD)
            .saturating_sub(self.packet_overhead());
        for target in targets {
            let msgs = self.get_broadcasts(COMPOUND_OVERHEAD, avail, d);
            if msgs.is_empty() {
                return;
            }
            self.send_packet(target.socket_addr(), &msgs, target.pmax() >= 5);
        }
    }

    /// How many nodes a gossip round goes to: `gossip_nodes`, or one while we are starved of
    /// CPU (see `Memberlist::starved`).
    ///
    /// Go gossips to `gossip_nodes` whatever happens. When many agents share too few cores (a
    /// thousand on two, in a join storm) every one of them is late, and every gossip packet
    /// costs its receiver more CPU than the one that sent it: at full fanout the cluster asks
    /// for more than the machine has, timers slip further, probes time out and suspicions add
    /// their own broadcasts. With one target per round while late, news still spreads (an
    /// epidemic with fanout one is still exponential, and piggybacking on probes goes on)
    /// while the load falls back below what the machine can do.
    fn gossip_fanout(&mut self) -> usize {
        if self.starved() && self.config.gossip_nodes > 1 {
            self.stats.starved_gossip_rounds = self.stats.starved_gossip_rounds.saturating_add(1);
            1
        } else {
            self.config.gossip_nodes
        }
    }

    pub(super) fn broadcast(&mut self, node: &str, msg: Message, notify: Option<u64>) {
        self.gossip
            .queue
            .queue(Some(node.to_owned()), wire::encode_message(&msg), notify);
    }

    fn get_broadcasts(
        &mut self,
        overhead: usize,
        limit: usize,
        d: &mut impl Delegate,
    ) -> Vec<Vec<u8>> {
        let n = self.nodes.len();
        let mut msgs =
            self.gossip
                .queue
                .get_broadcasts(overhead, limit, self.config.retransmit_mult, n);
        let used = msgs
            .iter()
            .map(|m| m.len().saturating_add(overhead))
            .fold(0, usize::saturating_add);
        let avail = limit.saturating_sub(used);
        let user_overhead = overhead.saturating_add(USER_MSG_OVERHEAD);
        if avail > user_overhead {
            for m in d.broadcasts(user_overhead, avail) {
                let mut buf = Vec::with_capacity(m.len().saturating_add(1));
                buf.push(wire::MessageType::User as u8);
                buf.extend_from_slice(&m);
                msgs.push(buf);
            }
        }
        msgs
    }

    /// Sends one message with as much queued gossip piggybacked as fits.
    pub(super) fn send_msg(
        &mut self,
        to: SocketAddr,
        msg: Vec<u8>,
        crc: bool,
        d: &mut impl Delegate,
    ) {
        let avail = self
            .config
            .udp_buffer_size
            .saturating_sub(msg.len())
            .saturating_sub(COMPOUND_HEADER_OVERHEAD)
            .saturating_sub(self.packet_overhead());
        let mut msgs = vec![msg];
        msgs.extend(self.get_broadcasts(COMPOUND_OVERHEAD, avail, d));
        self.send_packet(to, &msgs, crc);
    }
}
