//! Probing (spec §3.4): one direct ping per probe interval, indirect pings through peers (with
//! nacks) and a TCP ping when the direct one goes unanswered, and our side of others' indirect
//! probes. Go memberlist's `probe`, `probeNode` and the ping handlers (`state.go`, `net.go`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use tracing::{debug, info, trace, warn};

use super::{advance, Event, Memberlist, PendingStream};
use crate::delegate::{Delegate, Node};
use crate::limits::later;
use crate::wire::{
    self, Ack, IndirectPing, Message, Nack, NodeStateKind, Ping, StreamMessage, Suspect,
};

/// Probe rounds a late one makes us count as starved (hysteresis: a starved agent is late only
/// now and then, when the scheduler gets round to it).
const STARVED_ROUNDS: u8 = 3;

/// What probing owns: where the round is, our probe in flight and our relays for others'.
#[derive(Debug, Clone)]
pub(super) struct ProbeState {
    /// Position of the next node to consider in the table's probe order.
    index: usize,
    /// The last sequence number we used, for our pings and relayed ones alike.
    seq_no: u32,
    /// Our probe in flight: at most one at a time, as in Go.
    current: Option<Probe>,
    /// Indirect probes we relay for others, by the sequence number of our ping to the target.
    relays: BTreeMap<u32, Relay>,
    /// When the next probe round starts.
    next_at: Instant,
    /// Probe rounds left that we count as starved of CPU: set to [`STARVED_ROUNDS`] by a
    /// round that starts more than a tenth of a gossip interval late (the one timer that
    /// always runs; on an idle machine it is under a millisecond late), counted down by rounds
    /// on time. See `Memberlist::starved`.
    pub(super) starved_rounds: u8,
}

impl ProbeState {
    pub(super) fn new(next_at: Instant) -> Self {
        ProbeState {
            index: 0,
            seq_no: 0,
            current: None,
            relays: BTreeMap::new(),
            next_at,
            starved_rounds: 0,
        }
    }

    /// Continues the probe round at `index` in the table (a node that adopted a table).
    #[cfg(feature = "sim")]
    pub(super) fn start_at(&mut self, index: usize) {
        self.index = index;
    }

    /// The earliest of probing's timers: the next round, our probe's and our relays' deadlines.
    pub(super) fn next_deadline(&self) -> Instant {
        let mut t = self.next_at;
        let mut take = |x: Instant| t = t.min(x);
        if let Some(p) = &self.current {
            p.indirect_at.map(&mut take);
            take(p.deadline);
        }
        for r in self.relays.values() {
            take(r.expires);
            r.nack_at.map(&mut take);
        }
        t
    }
}

/// Our probe in progress.
#[derive(Debug, Clone)]
struct Probe {
    seq: u32,
    target: String,
    sent: Instant,
    /// When to give up on a direct ack and ask others (`None` once done).
    indirect_at: Option<Instant>,
    deadline: Instant,
    expected_nacks: u32,
    nacks: u32,
    tcp_ok: bool,
}

/// An intermediary's duty for someone else's indirect probe.
#[derive(Debug, Clone)]
struct Relay {
    requester: SocketAddr,
    requester_seq: u32,
    expires: Instant,
    nack_at: Option<Instant>,
}

impl Memberlist {
    pub(super) fn handle_ping(&mut self, from: SocketAddr, p: Ping, d: &mut impl Delegate) {
        if !p.node.is_empty() && p.node != self.config.name {
            debug!(%from, node = %p.node, "ping for unexpected node");
            return;
        }
        let payload = d.ack_payload();
        let ack = Ack {
            seq_no: p.seq_no,
            payload: (!payload.is_empty()).then_some(payload),
        };
        let to = reply_addr(&p.source_addr, p.source_port, from);
        self.send_msg(to, wire::encode_message(&Message::Ack(ack)), false, d);
    }

    pub(super) fn handle_indirect_ping(
        &mut self,
        from: SocketAddr,
        ind: IndirectPing,
        now: Instant,
        d: &mut impl Delegate,
    ) {
        let port = if ind.port == 0 {
            self.config.bind_port
        } else {
            ind.port
        };
        let seq = self.next_seq();
        let requester = reply_addr(&ind.source_addr, ind.source_port, from);
        self.probes.relays.insert(
            seq,
            Relay {
                requester,
                requester_seq: ind.seq_no,
                expires: later(now, self.config.probe_timeout),
                nack_at: ind.nack.then(|| later(now, self.config.probe_timeout)),
            },
        );
        let ping = self.ping_to(seq, &ind.node);
        let crc = self.node(&ind.node).is_some_and(|n| n.pmax() >= 5);
        self.send_msg(
            SocketAddr::new(ind.target, port),
            wire::encode_message(&Message::Ping(ping)),
            crc,
            d,
        );
    }

    pub(super) fn handle_ack(&mut self, ack: Ack, now: Instant, d: &mut impl Delegate) {
        if let Some(relay) = self.probes.relays.remove(&ack.seq_no) {
            let fwd = Ack {
                seq_no: relay.requester_seq,
                payload: None,
            };
            self.send_msg(
                relay.requester,
                wire::encode_message(&Message::Ack(fwd)),
                false,
                d,
            );
            return;
        }
        let Some(probe) = self.probes.current.as_ref().filter(|p| p.seq == ack.seq_no) else {
            trace!(seq = ack.seq_no, "ack for no probe in progress");
            return;
        };
        let direct = probe.indirect_at.is_some();
        let rtt = now.saturating_duration_since(probe.sent);
        let target = probe.target.clone();
        self.probes.current = None;
        // Go's `probeNode` timer: from the ping to the ack, direct or relayed.
        metrics::histogram!("memberlist.probeNode").record(crate::telemetry::millis(rtt));
        self.awareness.apply_delta(-1);
        if direct {
            if let Some(node) = self.node(&target).cloned() {
                d.notify_ping_complete(&node, rtt, ack.payload.as_deref().unwrap_or_default());
            }
        }
    }

    pub(super) fn handle_nack(&mut self, nack: Nack) {
        if let Some(probe) = self
            .probes
            .current
            .as_mut()
            .filter(|p| p.seq == nack.seq_no)
        {
            probe.nacks = probe.nacks.saturating_add(1);
        }
    }

    /// Starts a probe round if one is due and none is in flight (Go's probe ticker).
    pub(super) fn probe_if_due(&mut self, now: Instant, d: &mut impl Delegate) {
        if now >= self.probes.next_at {
            let late = now.saturating_duration_since(self.probes.next_at);
            let limit = (self.config.gossip_interval)
                .checked_div(10)
                .unwrap_or_default();
            self.probes.starved_rounds = if late > limit {
                // Beyond Go, in Lifeguard's spirit (§IV-A): a round that starts late says that
                // we are the slow one, so we wait longer before we blame a target whose ack
                // we may simply not have read yet.
                self.awareness.apply_delta(1);
                STARVED_ROUNDS
            } else {
                self.probes.starved_rounds.saturating_sub(1)
            };
            self.probes.next_at = advance(self.probes.next_at, self.config.probe_interval, now);
            if self.probes.current.is_none() {
                self.probe_tick(now, d);
            }
        }
    }

    /// The reply to our TCP ping: an ack for the probe still in flight means the target is
    /// reachable, just not over UDP.
    pub(super) fn tcp_ping_finished(&mut self, seq: u32, reply: Result<StreamMessage, String>) {
        if let Ok(StreamMessage::Ack(ack)) = reply {
            if let Some(probe) = self
                .probes
                .current
                .as_mut()
                .filter(|p| p.seq == seq && ack.seq_no == seq)
            {
                probe.tcp_ok = true;
            }
        }
    }

    /// Go's `probe`: the next node in the (shuffled) table that is neither us nor dead or left.
    /// Walking the table in order bounds how long any node goes unprobed (SWIM's round-robin
    /// variant); at the end of the table, `reset_nodes` forgets long-dead nodes and reshuffles.
    fn probe_tick(&mut self, now: Instant, d: &mut impl Delegate) {
        let mut checked = 0usize;
        loop {
            if checked >= self.nodes.len() {
                return;
            }
            if self.probes.index >= self.nodes.len() {
                self.reset_nodes(now);
                self.probes.index = 0;
                checked = checked.saturating_add(1);
                continue;
            }
            let Some(node) = self.nodes.get(self.probes.index) else {
                return;
            };
            let skip = node.node.name == self.config.name || node.dead_or_left();
            // Below `nodes.len()`, checked above.
            self.probes.index = self.probes.index.saturating_add(1);
            if skip {
                checked = checked.saturating_add(1);
                continue;
            }
            let target = node.node.clone();
            let incarnation = node.incarnation;
            self.probe_node(target, incarnation, now, d);
            return;
        }
    }

    /// Go's `resetNodes`, at the end of a probe round: forget nodes dead or left for longer
    /// than the gossip-to-the-dead time, and shuffle the rest (spec §3.4, §3.9).
    fn reset_nodes(&mut self, now: Instant) {
        let dead_time = self.config.gossip_to_the_dead_time;
        self.nodes.retain(|n| {
            !(n.dead_or_left() && now.saturating_duration_since(n.state_change) > dead_time)
        });
        for i in (1..self.nodes.len()).rev() {
            let j = self.rng.gen_range(0..=i);
            self.nodes.swap(i, j);
        }
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node.name.clone(), i))
            .collect();
    }

    /// Go's `probeNode`, first step: ping the target directly. A suspect target also gets the
    /// suspicion itself, so it learns of it from us at once and can refute. The deadline for any
    /// ack stretches with our ill health (Lifeguard §IV-A): a slow node waits longer before it
    /// blames others.
    fn probe_node(&mut self, target: Node, incarnation: u32, now: Instant, d: &mut impl Delegate) {
        self.stats.probes = self.stats.probes.saturating_add(1);
        let seq = self.next_seq();
        let ping = self.ping_to(seq, &target.name);
        let interval = self.awareness.scale(self.config.probe_interval);
        if interval > self.config.probe_interval {
            // Go: a probe whose interval our ill health stretched.
            metrics::counter!("memberlist.degraded.probe").increment(1);
        }
        let deadline = later(now, interval);
        // No CRC: Go's memberlist adds one only where it finds the node by address, which in
        // practice leaves its pings without; ours go the same way (5 bytes a second a node).
        let ping = wire::encode_message(&Message::Ping(ping));
        if target.state == NodeStateKind::Alive {
            self.send_msg(target.socket_addr(), ping, false, d);
        } else {
            let suspect = Suspect {
                incarnation,
                node: target.name.clone(),
                from: self.config.name.clone(),
            };
            let msgs = vec![ping, wire::encode_message(&Message::Suspect(suspect))];
            self.send_packet(target.socket_addr(), &msgs, false);
        }
        self.probes.current = Some(Probe {
            seq,
            target: target.name,
            sent: now,
            indirect_at: Some(later(now, self.config.probe_timeout)),
            deadline,
            expected_nacks: 0,
            nacks: 0,
            tcp_ok: false,
        });
    }

    /// Go's `probeNode`, the waits: no direct ack within the probe timeout sends the indirect
    /// pings (and the TCP ping); no ack of any kind by the deadline makes the target suspect.
    pub(super) fn probe_timeouts(&mut self, now: Instant, d: &mut impl Delegate) {
        let Some(probe) = self.probes.current.as_mut() else {
            return;
        };
        if probe.indirect_at.is_some_and(|at| now >= at) {
            probe.indirect_at = None;
            let seq = probe.seq;
            let target_name = probe.target.clone();
            let deadline = probe.deadline;
            debug!(node = %target_name, "failed ping (timeout reached)");
            if let Some(target) = self.node(&target_name).cloned() {
                self.indirect_probe(seq, &target, deadline, d);
            }
        }
        let Some(probe) = self.probes.current.as_ref() else {
            return;
        };
        if now < probe.deadline {
            return;
        }
        let Some(probe) = self.probes.current.take() else {
            return;
        };
        // Go's `probeNode` timer, for a probe that got no ack: it ran to its deadline.
        crate::telemetry::measure_since("memberlist.probeNode", probe.sent, now);
        // Reachable over TCP: the node is up and something drops our UDP. Not a failure of the
        // node, so no suspicion (Go logs the same hint about the network).
        if probe.tcp_ok {
            warn!(
                "memberlist: Was able to connect to {} over TCP but UDP probes failed, network \
                 may be misconfigured",
                probe.target
            );
            self.awareness.apply_delta(-1);
            return;
        }
        self.stats.failed_probes = self.stats.failed_probes.saturating_add(1);
        // Lifeguard §IV-A: each expected nack that never came suggests that we, not the
        // helpers, are the ones not hearing; with no helper able to nack, we take the blame once.
        let delta = if probe.expected_nacks > 0 {
            probe.expected_nacks.saturating_sub(probe.nacks) as i32
        } else {
            1
        };
        self.awareness.apply_delta(delta);
        let Some(incarnation) = self.incarnation_of(&probe.target) else {
            return;
        };
        info!(
            "memberlist: Suspect {} has failed, no acks received",
            probe.target
        );
        let s = Suspect {
            incarnation,
            node: probe.target.clone(),
            from: self.config.name.clone(),
        };
        self.suspect_node(s, now);
        if let Some(s) = self.suspicions.get(&probe.target) {
            self.events.push_back(Event::Suspected {
                node: probe.target,
                confirmations: s.confirmations(),
            });
        }
    }

    /// Go's `probeNode`, indirect step (SWIM §4.1): ask `indirect_checks` random live peers to
    /// ping the target for us, since our own path to it may be what failed, and try TCP in
    /// case only UDP is lost.
    fn indirect_probe(
        &mut self,
        seq: u32,
        target: &Node,
        deadline: Instant,
        d: &mut impl Delegate,
    ) {
        let peers = self.k_random_nodes(self.config.indirect_checks, |n| {
            n.node.name == target.name || n.node.state != NodeStateKind::Alive
        });
        let mut expected_nacks = 0u32;
        let mut nack = false;
        for peer in peers {
            // Go sets the flag once any peer understands nacks, and leaves it set.
            if peer.pmax() >= 4 {
                expected_nacks = expected_nacks.saturating_add(1);
                nack = true;
            }
            let (source_addr, source_port) = self.advertise();
            let ind = IndirectPing {
                seq_no: seq,
                target: target.addr,
                port: target.port,
                node: target.name.clone(),
                nack,
                source_addr: Some(source_addr),
                source_port,
                source_node: self.config.name.clone(),
            };
            let crc = peer.pmax() >= 5;
            self.send_msg(
                peer.socket_addr(),
                wire::encode_message(&Message::IndirectPing(ind)),
                crc,
                d,
            );
        }
        if let Some(p) = self.probes.current.as_mut() {
            p.expected_nacks = expected_nacks;
        }
        if !self.config.disable_tcp_pings && target.pmax() >= 3 {
            let ping = self.ping_to(seq, &target.name);
            self.open_stream(
                target.socket_addr(),
                &StreamMessage::Ping(ping),
                PendingStream::Ping { seq, deadline },
            );
        }
    }

    pub(super) fn relay_timeouts(&mut self, now: Instant, d: &mut impl Delegate) {
        let due: Vec<u32> = self
            .probes
            .relays
            .iter()
            .filter(|(_, r)| r.nack_at.is_some_and(|at| now >= at) || r.expires <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            let Some(relay) = self.probes.relays.remove(&seq) else {
                continue;
            };
            if relay.nack_at.is_some_and(|at| now >= at) {
                let nack = Nack {
                    seq_no: relay.requester_seq,
                };
                self.send_msg(
                    relay.requester,
                    wire::encode_message(&Message::Nack(nack)),
                    false,
                    d,
                );
            }
        }
    }

    /// A ping naming its target. The `Source*` fields are left out: every receiver (Go's
    /// memberlist too) then answers the address the packet came from, which is our bound
    /// socket (and, behind a NAT, the mapping the ack must take back). They are 40-odd bytes
    /// of a ~60-byte message that every node sends every second, so leaving them out is a
    /// third of the idle probe traffic.
    fn ping_to(&self, seq: u32, node: &str) -> Ping {
        Ping {
            seq_no: seq,
            node: node.to_owned(),
            source_addr: None,
            source_port: 0,
            source_node: String::new(),
        }
    }
    fn next_seq(&mut self) -> u32 {
        self.probes.seq_no = self.probes.seq_no.wrapping_add(1);
        self.probes.seq_no
    }
}
/// Where to answer: the `Source*` fields when both are set, else the packet's source.
fn reply_addr(
    source_addr: &Option<std::net::IpAddr>,
    source_port: u16,
    from: SocketAddr,
) -> SocketAddr {
    match source_addr {
        Some(ip) if source_port > 0 => SocketAddr::new(*ip, source_port),
        _ => from,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // `Instant::now()` is each test's epoch
mod tests {
    use std::time::{Duration, Instant};

    use crate::test_support::{addr, alive, deliver, node, packet};
    use crate::wire::{self, Message, ReadOptions};
    use crate::{Memberlist, NoDelegate, NodeStateKind, Transmit};

    fn messages(bytes: &[u8]) -> Vec<Message> {
        let opts = ReadOptions {
            label: &[],
            keyring: None,
            verify_incoming: true,
        };
        wire::decode_packet(bytes, &opts).unwrap().messages
    }

    /// Steps `a` a millisecond at a time until its probe of `target` has gone past the direct
    /// ping (Go's `probeNode` after `ProbeTimeout`), dropping every transmit to `target`.
    /// Returns what `a` then sends to anyone else.
    fn run_until_indirect(a: &mut Memberlist, now: &mut Instant, target: &str) -> Vec<Transmit> {
        let target_addr = a.node(target).unwrap().socket_addr();
        for _ in 0..10_000 {
            *now += Duration::from_millis(1);
            a.handle_timeout(*now, &mut NoDelegate);
            let mut out = Vec::new();
            let mut indirect = false;
            while let Some(t) = a.poll_transmit() {
                match &t {
                    Transmit::Packet { to, .. } | Transmit::Stream { to, .. }
                        if *to == target_addr => {}
                    Transmit::Packet { bytes, .. } => {
                        indirect |= messages(bytes)
                            .iter()
                            .any(|m| matches!(m, Message::IndirectPing(i) if i.node == target));
                        out.push(t);
                    }
                    Transmit::Stream { .. } => out.push(t),
                }
            }
            if indirect {
                return out;
            }
        }
        panic!("{target} was never probed indirectly");
    }

    /// Go's `probeNode` (spec §3.4, SWIM §4.1): a missed direct ack sends an indirect ping
    /// through another node, and that node's relayed ack counts as the target's: the target is
    /// not suspected although our own ping to it was lost.
    #[test]
    fn a_relayed_ack_saves_a_node_whose_direct_ping_was_lost() {
        let mut now = Instant::now();
        let mut a = node("a", 1, now);
        let mut b = node("b", 2, now);
        let mut c = node("c", 3, now);
        // a knows only b and c; b and c need not know a (replies go to the Source fields).
        let peers = packet(&[alive("b", 2, 1), alive("c", 3, 1)]);
        a.handle_packet(addr(2), &peers, now, &mut NoDelegate);
        for t in run_until_indirect(&mut a, &mut now, "b") {
            if let Transmit::Packet { to, bytes } = t {
                if to == addr(3) {
                    c.handle_packet(addr(1), &bytes, now, &mut NoDelegate);
                }
            }
        }
        // c pings b, b acks c, c relays the ack to a.
        deliver(&mut c, &mut b, now);
        deliver(&mut b, &mut c, now);
        deliver(&mut c, &mut a, now);
        a.handle_timeout(now + Duration::from_secs(2), &mut NoDelegate);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Alive);
        assert_eq!(a.stats().failed_probes, 0);
    }

    /// Go's `probeNode` TCP fallback (spec §3.4 step 4): with UDP to the target lost and no one
    /// to ask indirectly, a TCP ping that is answered keeps the target alive ("was able to
    /// connect over TCP but UDP probes failed").
    #[test]
    fn a_node_reachable_over_tcp_only_is_not_suspected() {
        let mut now = Instant::now();
        let mut a = node("a", 1, now);
        let mut b = node("b", 2, now);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
        // UDP to b is lost; keep only the TCP ping, which does get through.
        let mut tcp = false;
        for _ in 0..5_000 {
            now += Duration::from_millis(1);
            a.handle_timeout(now, &mut NoDelegate);
            while let Some(t) = a.poll_transmit() {
                if let Transmit::Stream { id, to, bytes, .. } = t {
                    assert_eq!(to, addr(2));
                    let (msg, _) = b.decode_stream(&bytes).unwrap().unwrap();
                    let reply = b.handle_stream(addr(1), Ok(msg), now, &mut NoDelegate);
                    let (reply, _) = a.decode_stream(&reply.unwrap()).unwrap().unwrap();
                    a.handle_stream_reply(id, Ok(reply), now, &mut NoDelegate);
                    tcp = true;
                }
            }
            if tcp {
                break;
            }
        }
        assert!(tcp, "no TCP ping after a missed ack");
        a.handle_timeout(now + Duration::from_secs(2), &mut NoDelegate);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Alive);
        assert_eq!(a.stats().failed_probes, 0);
    }

    /// Go's `probeNode` and Lifeguard §IV-A (spec §3.4 step 6): a probe that fails with no
    /// nacks expected is blamed on the target (suspect) and on us too: our health score rises,
    /// and with it the next probe's deadline.
    #[test]
    fn a_failed_probe_with_no_one_to_blame_costs_health() {
        let mut now = Instant::now();
        let mut a = node("a", 1, now);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
        for _ in 0..5_000 {
            now += Duration::from_millis(1);
            a.handle_timeout(now, &mut NoDelegate);
            while a.poll_transmit().is_some() {}
            if a.stats().failed_probes > 0 {
                break;
            }
        }
        assert_eq!(a.stats().failed_probes, 1);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Suspect);
        assert_eq!(a.health_score(), 1);
    }
}
