//! Push/pull (spec §3.7) and join (§3.8): full-state exchanges over TCP, and merging a peer's
//! state into ours. Go memberlist's `pushPull`, `pushPullNode` and `mergeState`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{advance, Event, JoinId, Memberlist, PendingStream, Relay, Source};
use crate::delegate::Delegate;
use crate::limits::later;
use crate::wire::{Alive, Dead, NodeStateKind, PushNodeState, PushPull, StreamMessage, Suspect};

/// What push/pull owns: the joins in progress and the periodic exchange's timer.
#[derive(Debug, Clone)]
pub(super) struct PushPullState {
    joins: BTreeMap<JoinId, JoinProgress>,
    /// When the next periodic push/pull is due; `None` when they are disabled.
    next_at: Option<Instant>,
    /// After a fresh join: when it finished, and which catch-up exchange is next.
    catch_up: Option<(Instant, u32)>,
    /// Our last answer to a push/pull opened by a peer: when we made it, its `join` flag, and
    /// the bytes (see [`REPLY_REUSE`]).
    last_reply: Option<(Instant, bool, Vec<u8>)>,
}

/// How long an answer to one peer's push/pull may be sent again to the next.
///
/// A seed that a burst of agents joins answers hundreds of push/pulls in a row, each a whole
/// table (a thousand entries: the encoding and LZW of about 100 KB), on one thread that the
/// burst leaves a small share of two cores; joiners whose answer took longer than the TCP
/// timeout exited. Within this window the seed sends the answer it made last: what it lacks,
/// the last fraction of a second's news, reaches the peer by gossip and by its catch-ups.
/// Periodic exchanges are tens of seconds apart, so outside a storm nothing is reused.
pub(super) const REPLY_REUSE: Duration = Duration::from_millis(500);

/// When catch-up exchange `k` (from 0) after a join that finished at `joined` is due.
fn catch_up_at(joined: Instant, k: u32) -> Instant {
    later(joined, CATCH_UP_FIRST.saturating_mul(1u32 << k.min(16)))
}

/// Push/pulls with random members after a join from an empty table: the first this long after
/// the join, each later one twice as long after the join as the one before.
///
/// A newcomer learns the seed's table in the join, but not who arrives after it: those it hears
/// of through gossip alone, one hop per round of every queue. In a burst of joins the queues
/// are long and a hop takes seconds; Go makes up for it by re-gossiping every table a join
/// brings (a storm that grows as N²). We take a seed's table in quietly ([`Relay::No`]) and
/// catch up instead with whole tables, straight from other members, at 1, 2, 4, 8 and 16 s.
const CATCH_UP_FIRST: Duration = Duration::from_secs(1);
/// How many catch-up exchanges follow a fresh join.
const CATCH_UPS: u32 = 5;

impl PushPullState {
    pub(super) fn new(next_at: Option<Instant>) -> Self {
        PushPullState {
            joins: BTreeMap::new(),
            next_at,
            catch_up: None,
            last_reply: None,
        }
    }

    /// Forgets the reused answer (keys changed, or its window is over: it would only hold
    /// memory).
    pub(super) fn forget_reply(&mut self, now: Option<Instant>) {
        let expired =
            |at: &Instant| now.is_none_or(|n| n.saturating_duration_since(*at) >= REPLY_REUSE);
        if self
            .last_reply
            .as_ref()
            .is_some_and(|(at, _, _)| expired(at))
        {
            self.last_reply = None;
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        match (self.next_at, self.catch_up) {
            (Some(a), Some((j, k))) => Some(a.min(catch_up_at(j, k))),
            (a, b) => a.or(b.map(|(j, k)| catch_up_at(j, k))),
        }
    }
}

/// One [`Memberlist::join`]: exchanges still open, and how the finished ones went.
#[derive(Debug, Clone, Default)]
struct JoinProgress {
    pending: usize,
    joined: usize,
    errors: Vec<String>,
    /// We knew no other live node when the join began: what the seeds tell us is what their
    /// cluster already gossips, so we take it in without gossiping it again (see
    /// [`Relay::No`]).
    fresh: bool,
}

impl Memberlist {
    /// Joins the cluster through a push/pull with each address (spec §3.8). The result arrives
    /// as [`Event::JoinFinished`].
    pub fn join(&mut self, addrs: &[SocketAddr], now: Instant, d: &mut impl Delegate) -> JoinId {
        let id = JoinId(self.next_id());
        let fresh = !self.nodes.iter().any(|n| {
            n.node.name != self.config.name
                && matches!(n.node.state, NodeStateKind::Alive | NodeStateKind::Suspect)
        });
        self.push_pull.joins.insert(
            id,
            JoinProgress {
                pending: addrs.len(),
                fresh,
                ..Default::default()
            },
        );
        for &addr in addrs {
            self.push_pull_with(addr, Some(id), Relay::Yes, now, d);
        }
        self.finish_join_if_done(id, now);
        id
    }

    /// Runs the periodic push/pull if due; the interval grows with the cluster
    /// ([`push_pull_scale`]).
    pub(super) fn push_pull_if_due(&mut self, now: Instant, d: &mut impl Delegate) {
        if let Some(at) = self.push_pull.next_at.filter(|at| now >= *at) {
            let interval = push_pull_scale(self.config.push_pull_interval, self.nodes.len());
            self.push_pull.next_at = Some(advance(at, interval, now));
            self.periodic_push_pull(Relay::Yes, now, d);
        }
        if let Some((joined, k)) = self.push_pull.catch_up {
            if now >= catch_up_at(joined, k) {
                let next = k.saturating_add(1);
                self.push_pull.catch_up = (next < CATCH_UPS).then_some((joined, next));
                // A whole-table exchange is the dearest thing we do; starved, we let it go.
                if !self.starved() {
                    self.periodic_push_pull(Relay::No, now, d);
                }
            }
        }
    }

    /// The reply to one of our push/pulls: merge it, and count it for its join if it was one.
    pub(super) fn push_pull_finished(
        &mut self,
        peer: SocketAddr,
        join: Option<JoinId>,
        relay: Relay,
        reply: Result<StreamMessage, String>,
        now: Instant,
        d: &mut impl Delegate,
    ) {
        let fresh = join
            .and_then(|j| self.push_pull.joins.get(&j))
            .is_some_and(|p| p.fresh);
        let relay = if fresh { Relay::No } else { relay };
        let result = match reply {
            Ok(StreamMessage::PushPull(remote)) => self.merge_remote(&remote, relay, now, d),
            Ok(StreamMessage::Err(e)) => Err(format!("remote error: {}", e.error)),
            Ok(other) => Err(format!("unexpected reply to push/pull: {other:?}")),
            Err(e) => Err(e),
        };
        match join {
            Some(join) => {
                if let Some(p) = self.push_pull.joins.get_mut(&join) {
                    p.pending = p.pending.saturating_sub(1);
                    match result {
                        Ok(()) => p.joined = p.joined.saturating_add(1),
                        Err(e) => p.errors.push(format!("Failed to join {}: {e}", peer.ip())),
                    }
                }
                self.finish_join_if_done(join, now);
            }
            None => {
                if let Err(error) = result {
                    self.events.push_back(Event::PushPullFailed { peer, error });
                }
            }
        }
    }

    /// After a join: our `alive` straight to up to `direct_fanout` of the members the
    /// exchange taught us, besides the gossip of it. Go leaves this to gossip alone; in a small
    /// cluster that misses a node now and then, which then learns of us only at its next
    /// push/pull (see [`Config::direct_fanout`](crate::Config::direct_fanout)). A member that
    /// already knows us at this incarnation ignores it.
    fn announce_self(&mut self) {
        let Some(me) = self.state_of(&self.config.name) else {
            return;
        };
        let alive = Alive {
            incarnation: me.incarnation,
            node: me.node.name.clone(),
            addr: me.node.addr,
            port: me.node.port,
            meta: me.node.meta.clone(),
            vsn: me.node.vsn,
        };
        self.send_to_some(&crate::wire::encode_message(&crate::wire::Message::Alive(
            alive,
        )));
    }

    fn periodic_push_pull(&mut self, relay: Relay, now: Instant, d: &mut impl Delegate) {
        let peers = self.k_random_nodes(1, |n| n.node.state != NodeStateKind::Alive);
        let Some(peer) = peers.into_iter().next() else {
            return;
        };
        self.push_pull_with(peer.socket_addr(), None, relay, now, d);
    }

    /// Opens a push/pull exchange with `addr`; `join` marks it as part of a [`Memberlist::join`].
    fn push_pull_with(
        &mut self,
        addr: SocketAddr,
        join: Option<JoinId>,
        relay: Relay,
        now: Instant,
        d: &mut impl Delegate,
    ) {
        self.stats.push_pulls = self.stats.push_pulls.saturating_add(1);
        let msg = self.local_push_pull(join.is_some(), d);
        let deadline = later(now, self.config.tcp_timeout);
        self.open_stream(
            addr,
            &msg,
            PendingStream::PushPull {
                peer: addr,
                join,
                relay,
                started: now,
                deadline,
            },
        );
    }

    /// Our answer to a push/pull a peer opened, encoded: the one made last if it is younger
    /// than [`REPLY_REUSE`] (and for the same `join` flag), else a fresh one.
    pub(super) fn push_pull_reply(
        &mut self,
        join: bool,
        now: Instant,
        d: &mut impl Delegate,
    ) -> Vec<u8> {
        self.push_pull.forget_reply(Some(now));
        if let Some((_, j, bytes)) = &self.push_pull.last_reply {
            if *j == join {
                self.stats.push_pull_replies_reused =
                    self.stats.push_pull_replies_reused.saturating_add(1);
                return bytes.clone();
            }
        }
        let reply = self.local_push_pull(join, d);
        let bytes = self.encode_stream(&reply);
        self.push_pull.last_reply = Some((now, join, bytes.clone()));
        bytes
    }

    pub(super) fn local_push_pull(&mut self, join: bool, d: &mut impl Delegate) -> StreamMessage {
        let nodes = self
            .nodes
            .iter()
            .map(|n| PushNodeState {
                name: n.node.name.clone(),
                addr: n.node.addr,
                port: n.node.port,
                meta: n.node.meta.clone(),
                incarnation: n.incarnation,
                state: n.node.state,
                vsn: n.node.vsn.to_vec(),
            })
            .collect();
        StreamMessage::PushPull(PushPull {
            join,
            nodes,
            user_state: d.local_state(join),
        })
    }

    /// Merges a peer's push/pull: version check, node states, then the delegate's state.
    /// `relay` says whether news about others is gossiped on.
    pub(super) fn merge_remote(
        &mut self,
        remote: &PushPull,
        relay: Relay,
        now: Instant,
        d: &mut impl Delegate,
    ) -> Result<(), String> {
        // A peer whose cluster we cannot speak with is not merged at all (Go's
        // `verifyProtocol`, before `mergeState`).
        self.verify_protocol(&remote.nodes)?;
        // Go's `mergeState`: each entry goes through the same rules as gossip, so a push/pull
        // can teach us nothing a stream of messages could not, and stale entries lose to what
        // we know just as stale gossip does.
        for r in &remote.nodes {
            let vsn: Option<[u8; 6]> = r.vsn.as_slice().try_into().ok();
            match r.state {
                NodeStateKind::Alive => {
                    // An alive entry without the six version bytes cannot enter the table
                    // (versions gate CRC, nacks and TCP pings); skip it.
                    let Some(vsn) = vsn else {
                        continue;
                    };
                    // Port 0 stands for the port we bind, as in an `alive` (protocol 1 had no port;
                    // Go fills it in before `mergeState`).
                    let port = if r.port == 0 {
                        self.config.bind_port
                    } else {
                        r.port
                    };
                    let a = Alive {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        addr: r.addr,
                        port,
                        meta: r.meta.clone(),
                        vsn,
                    };
                    self.alive_node(a, Source::Peer(relay), now, d);
                }
                // A left node said so itself: merge it as its own `dead`, which keeps it left
                // rather than failed.
                NodeStateKind::Left => {
                    let dead = Dead {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: r.name.clone(),
                    };
                    self.dead_node(dead, None, now, d);
                }
                // A peer's "dead" becomes our suspicion, never an instant verdict: the peer may
                // be the one cut off, and a suspicion gives the node the timeout to refute.
                // The accuser is us (`from`), so it starts our own timer.
                NodeStateKind::Dead | NodeStateKind::Suspect => {
                    let s = Suspect {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: self.config.name.clone(),
                    };
                    self.suspect_node(s, now);
                }
            }
        }
        if !remote.user_state.is_empty() {
            d.merge_remote_state(&remote.user_state, remote.join, now);
        }
        Ok(())
    }

    /// memberlist's `verifyProtocol` (spec §2.12).
    fn verify_protocol(&self, remote: &[PushNodeState]) -> Result<(), String> {
        let (mut max_pmin, mut min_pmax, mut max_dmin, mut min_dmax) = (0u8, u8::MAX, 0u8, u8::MAX);
        for r in remote.iter().filter(|r| r.state == NodeStateKind::Alive) {
            if let &[pmin, pmax, _, dmin, dmax, _, ..] = r.vsn.as_slice() {
                max_pmin = max_pmin.max(pmin);
                min_pmax = min_pmax.min(pmax);
                max_dmin = max_dmin.max(dmin);
                min_dmax = min_dmax.min(dmax);
            }
        }
        for n in self
            .nodes
            .iter()
            .filter(|n| n.node.state == NodeStateKind::Alive)
        {
            max_pmin = max_pmin.max(n.node.vsn[0]);
            min_pmax = min_pmax.min(n.node.vsn[1]);
            max_dmin = max_dmin.max(n.node.vsn[3]);
            min_dmax = min_dmax.min(n.node.vsn[4]);
        }
        let check = |name: &str, pcur: u8, dcur: u8| -> Result<(), String> {
            if pcur < max_pmin || pcur > min_pmax {
                return Err(format!(
                    "Node '{name}' protocol version ({pcur}) is incompatible: [{max_pmin}, {min_pmax}]"
                ));
            }
            if dcur < max_dmin || dcur > min_dmax {
                return Err(format!(
                    "Node '{name}' delegate protocol version ({dcur}) is incompatible: [{max_dmin}, {min_dmax}]"
                ));
            }
            Ok(())
        };
        for r in remote {
            let (pcur, dcur) = match *r.vsn.as_slice() {
                [_, _, pcur, _, _, dcur, ..] => (pcur, dcur),
                _ => (0, 0),
            };
            check(&r.name, pcur, dcur)?;
        }
        for n in &self.nodes {
            check(&n.node.name, n.node.vsn[2], n.node.vsn[5])?;
        }
        Ok(())
    }

    fn finish_join_if_done(&mut self, id: JoinId, now: Instant) {
        if self
            .push_pull
            .joins
            .get(&id)
            .is_some_and(|p| p.pending == 0)
        {
            if let Some(p) = self.push_pull.joins.remove(&id) {
                if p.joined > 0 {
                    self.announce_self();
                    // Only where push/pull runs at all (a zero interval turns it off).
                    if p.fresh && self.push_pull.next_at.is_some() {
                        self.push_pull.catch_up = Some((now, 0));
                    }
                }
                self.events.push_back(Event::JoinFinished {
                    id,
                    joined: p.joined,
                    errors: p.errors,
                });
            }
        }
    }
}
/// Push/pull slows down above 32 nodes: `ceil(log2 n − log2 32) + 1` times the interval.
pub fn push_pull_scale(interval: Duration, n: usize) -> Duration {
    const THRESHOLD: usize = 32;
    if n <= THRESHOLD {
        return interval;
    }
    let mult = ((n as f64).log2() - (THRESHOLD as f64).log2()).ceil() + 1.0;
    interval.saturating_mul(mult as u32)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // `Instant::now()` is each test's epoch
mod tests {
    use std::time::{Duration, Instant};

    use std::net::SocketAddr;

    use crate::test_support::{addr, alive, deliver, entry, node, packet, plain};
    use crate::wire::{self, PushPull, StreamMessage};
    use crate::{Event, NoDelegate, NodeStateKind, Transmit};

    fn push_pull(nodes: Vec<wire::PushNodeState>) -> StreamMessage {
        StreamMessage::PushPull(PushPull {
            join: false,
            nodes,
            user_state: vec![],
        })
    }

    /// A seed answering a burst of push/pulls sends the answer it made last while that is
    /// younger than `REPLY_REUSE`; a change of keys, or the window's end, makes a fresh one.
    #[test]
    fn push_pull_answers_are_reused_for_half_a_second() {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        let names = |a: &crate::Memberlist, reply: &[u8]| match a.decode_stream(reply) {
            Ok(Some((StreamMessage::PushPull(p), _))) => {
                p.nodes.into_iter().map(|n| n.name).collect::<Vec<_>>()
            }
            other => panic!("not a push/pull answer: {other:?}"),
        };
        let from = |name: &str, i: u8| push_pull(vec![entry(name, i, 1, NodeStateKind::Alive)]);
        let first = a
            .handle_stream(addr(2), Ok(from("b", 2)), now, &mut NoDelegate)
            .unwrap();
        assert_eq!(names(&a, &first), ["a"]);
        let at = now + Duration::from_millis(400);
        let second = a
            .handle_stream(addr(3), Ok(from("c", 3)), at, &mut NoDelegate)
            .unwrap();
        assert_eq!(second, first, "the same bytes again, without b");
        assert_eq!(a.stats().push_pull_replies_reused, 1);
        assert!(
            a.node("b").is_some() && a.node("c").is_some(),
            "both merged"
        );
        let at = now + Duration::from_millis(500);
        let third = a
            .handle_stream(addr(4), Ok(from("d", 4)), at, &mut NoDelegate)
            .unwrap();
        let mut listed = names(&a, &third);
        listed.sort();
        assert_eq!(listed, ["a", "b", "c"], "a fresh answer after the window");
        // Touching the keyring drops the kept answer at once.
        let at = now + Duration::from_millis(600);
        a.keyring_mut();
        a.handle_stream(addr(5), Ok(from("e", 5)), at, &mut NoDelegate);
        assert_eq!(a.stats().push_pull_replies_reused, 1);
    }

    /// `Join` → Go's `pushPullNode` and, on the other side, `mergeState` (spec §3.7, §3.8): one
    /// exchange teaches each side the other's whole table, and the join reports one success.
    #[test]
    fn a_join_exchanges_whole_tables_both_ways() {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        a.handle_packet(addr(3), &packet(&[alive("c", 3, 4)]), now, &mut NoDelegate);
        let mut b = node("b", 2, now);
        let id = b.join(&[addr(1)], now, &mut NoDelegate);
        let undelivered = deliver(&mut b, &mut a, now);
        assert_eq!(b.incarnation_of("c"), Some(4), "b learned of c through a");
        // Then b tells c of itself straight away (`direct_fanout`), besides the gossip (its
        // copy to `a`, which already knows, was delivered above).
        let told: Vec<(SocketAddr, wire::Message)> = (undelivered.into_iter())
            .filter_map(|t| match t {
                Transmit::Packet { to, bytes } => Some((to, bytes)),
                Transmit::Stream { .. } => None,
            })
            .flat_map(|(to, bytes)| {
                let p = wire::decode_packet(&bytes, &plain()).unwrap();
                p.messages.into_iter().map(move |m| (to, m))
            })
            .collect();
        assert!(
            matches!(&told[..], [(to, wire::Message::Alive(al))] if *to == addr(3) && al.node == "b"),
            "{told:?}"
        );
        assert_eq!(b.node("a").unwrap().state, NodeStateKind::Alive);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Alive);
        assert_eq!(
            b.poll_event(),
            Some(Event::JoinFinished {
                id,
                joined: 1,
                errors: vec![]
            })
        );
    }

    /// A node that knew nobody takes the seed's table in without gossiping it on: the seed's
    /// cluster already gossips every entry, and re-gossiping whole tables is what makes a burst
    /// of joins a storm. A node that knew others when it joined (two clusters merging) passes
    /// the other side's members on, as Go does, so its own side hears of them.
    #[test]
    fn a_fresh_joiner_does_not_regossip_the_seeds_table() {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        a.handle_packet(addr(3), &packet(&[alive("c", 3, 4)]), now, &mut NoDelegate);
        let mut b = node("b", 2, now);
        let before = b.queued_broadcasts();
        b.join(&[addr(1)], now, &mut NoDelegate);
        deliver(&mut b, &mut a, now);
        assert_eq!(b.incarnation_of("c"), Some(4), "b learned of c through a");
        assert_eq!(b.node("a").unwrap().state, NodeStateKind::Alive);
        assert_eq!(
            b.queued_broadcasts(),
            before,
            "b queued nothing about a or c"
        );
        assert!(a.queued_broadcasts() > 0, "a gossips b's arrival");

        // A second later (a's answer to b is not reused: see `REPLY_REUSE`).
        let later = now + Duration::from_secs(1);
        let mut d = node("d", 4, later);
        d.handle_packet(
            addr(5),
            &packet(&[alive("e", 5, 1)]),
            later,
            &mut NoDelegate,
        );
        let before = d.queued_broadcasts();
        d.join(&[addr(1)], later, &mut NoDelegate);
        deliver(&mut d, &mut a, later);
        assert_eq!(d.node("b").unwrap().state, NodeStateKind::Alive);
        assert_eq!(
            d.queued_broadcasts(),
            before + 3,
            "d, which knew e, passes on a, b and c"
        );
    }

    /// Delivers every packet and stream among `nodes` (by advertised address) until all is
    /// quiet: a network that loses nothing.
    fn route(nodes: &mut [crate::Memberlist], now: Instant) {
        for _ in 0..10 {
            let mut moved = false;
            for i in 0..nodes.len() {
                while let Some(t) = nodes[i].poll_transmit() {
                    moved = true;
                    let src = nodes[i].config().advertise;
                    let to = match &t {
                        Transmit::Packet { to, .. } | Transmit::Stream { to, .. } => *to,
                    };
                    let Some(j) = nodes.iter().position(|n| n.config().advertise == to) else {
                        continue;
                    };
                    match t {
                        Transmit::Packet { bytes, .. } => {
                            nodes[j].handle_packet(src, &bytes, now, &mut NoDelegate)
                        }
                        Transmit::Stream { id, bytes, .. } => {
                            let (msg, _) = nodes[j].decode_stream(&bytes).unwrap().unwrap();
                            let reply = nodes[j].handle_stream(src, Ok(msg), now, &mut NoDelegate);
                            let reply = reply
                                .ok_or_else(|| "closed".to_owned())
                                .map(|r| nodes[i].decode_stream(&r).unwrap().unwrap().0);
                            nodes[i].handle_stream_reply(id, reply, now, &mut NoDelegate);
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// What a fresh joiner missed, arrivals after its own, it catches up on through whole-table
    /// exchanges with random members 1, 2, 4, 8 and 16 s after its join, and then no more than
    /// the periodic push/pull. What it learns there it does not gossip on either.
    #[test]
    fn a_fresh_joiner_catches_up_with_later_arrivals() {
        let t0 = Instant::now();
        let a = node("a", 1, t0);
        let mut b = node("b", 2, t0);
        let c = node("c", 3, t0);
        b.join(&[addr(1)], t0, &mut NoDelegate);
        let mut nodes = [a, b, c];
        route(&mut nodes, t0);
        let mut queued = 0;
        let mut exchanges = Vec::new();
        // Every node keeps time (a step of 10 ms), so none of them is starved.
        for ms in (10..=20_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            if ms == 500 {
                // c's own word to b after its join is lost: b can learn of c only by
                // catching up.
                let [a, _, c] = &mut nodes;
                c.join(&[addr(1)], now, &mut NoDelegate);
                deliver(c, a, now);
                assert!(nodes[1].node("c").is_none(), "b joined before c");
                queued = nodes[1].queued_broadcasts();
            }
            let before = nodes[1].stats().push_pulls;
            for n in &mut nodes {
                n.handle_timeout(now, &mut NoDelegate);
            }
            if nodes[1].stats().push_pulls > before {
                exchanges.push(ms / 1000);
            }
            route(&mut nodes, now);
        }
        let [_, b, _] = nodes;
        assert_eq!(b.node("c").map(|n| n.state), Some(NodeStateKind::Alive));
        assert!(
            b.queued_broadcasts() <= queued,
            "c's arrival is not gossiped again by b"
        );
        assert_eq!(exchanges, vec![1, 2, 4, 8, 16]);
    }

    /// A catch-up that falls due while the joiner is starved of CPU (its probe round started
    /// late) is let go, as are those in the few rounds it stays starved; the later ones run.
    #[test]
    fn a_starved_joiner_lets_its_catch_ups_go() {
        let t0 = Instant::now();
        let a = node("a", 1, t0);
        let mut b = node("b", 2, t0);
        let c = node("c", 3, t0);
        b.join(&[addr(1)], t0, &mut NoDelegate);
        let mut nodes = [a, b, c];
        route(&mut nodes, t0);
        let mut exchanges = Vec::new();
        for ms in (10..=20_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            let before = nodes[1].stats().push_pulls;
            for (i, n) in nodes.iter_mut().enumerate() {
                // b gets no turn from 0.9 s to 2.5 s: its next probe round, due before 1.9 s,
                // starts over half a second late, when both the 1 s and the 2 s catch-up are
                // due.
                if i != 1 || !(900..2500).contains(&ms) {
                    n.handle_timeout(now, &mut NoDelegate);
                }
            }
            if nodes[1].stats().push_pulls > before {
                exchanges.push(ms / 1000);
            }
            route(&mut nodes, now);
        }
        // Starved for three probe rounds from 2.5 s, b may let the 4 s one go too.
        assert!(
            exchanges.iter().all(|&s| s >= 4) && exchanges.ends_with(&[8, 16]),
            "the 1 and 2 s catch-ups fell while starved: exchanges at {exchanges:?} s"
        );
    }

    /// Go's `mergeState` (spec §3.3, §3.7): a peer's "dead" is merged as our own suspicion,
    /// never as a verdict (the peer may be the one cut off); "left" stays left; a new alive
    /// entry joins the table.
    #[test]
    fn a_merged_dead_entry_is_only_suspected() {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        let peers = packet(&[alive("b", 2, 1), alive("c", 3, 1)]);
        a.handle_packet(addr(2), &peers, now, &mut NoDelegate);
        let remote = push_pull(vec![
            entry("z", 9, 1, NodeStateKind::Alive),
            entry("b", 2, 1, NodeStateKind::Dead),
            entry("c", 3, 1, NodeStateKind::Left),
            entry("d", 4, 1, NodeStateKind::Alive),
        ]);
        let reply = a.handle_stream(addr(9), Ok(remote), now, &mut NoDelegate);
        assert!(reply.is_some(), "a push/pull is answered with ours");
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Suspect);
        assert_eq!(a.node("c").unwrap().state, NodeStateKind::Left);
        assert_eq!(a.node("d").unwrap().state, NodeStateKind::Alive);
        // The suspicion is ours, so it runs our timer; five nodes could confirm it, so it
        // starts at the maximum (6 × 4 s on LAN) and, unconfirmed, ends there.
        a.handle_timeout(now + Duration::from_millis(23_999), &mut NoDelegate);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Suspect);
        a.handle_timeout(now + Duration::from_secs(24), &mut NoDelegate);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Dead);
    }

    /// Go's `verifyProtocol` before `mergeState` (spec §2.12): a peer whose nodes cannot all
    /// speak with ours fails the exchange and nothing of it is merged.
    #[test]
    fn a_push_pull_with_incompatible_versions_merges_nothing() {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        let mut z = entry("z", 9, 1, NodeStateKind::Alive);
        z.vsn = vec![3, 5, 3, 0, 0, 0]; // speaks protocol 3 at least; we speak 2
        let reply = a.handle_stream(addr(9), Ok(push_pull(vec![z])), now, &mut NoDelegate);
        assert!(reply.is_some());
        assert!(a.node("z").is_none());
        assert!(matches!(
            a.poll_event(),
            Some(Event::PushPullFailed { peer, .. }) if peer == addr(9)
        ));
    }

    /// `Join` (spec §3.8): an address that never answers fails the join after the TCP timeout,
    /// with Go's error text.
    #[test]
    fn a_join_to_a_silent_address_fails_at_the_tcp_timeout() {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        let id = a.join(&[addr(9)], now, &mut NoDelegate);
        while a.poll_transmit().is_some() {}
        let timeout = a.config().tcp_timeout;
        a.handle_timeout(now + timeout - Duration::from_millis(1), &mut NoDelegate);
        assert_eq!(a.poll_event(), None);
        a.handle_timeout(now + timeout, &mut NoDelegate);
        assert_eq!(
            a.poll_event(),
            Some(Event::JoinFinished {
                id,
                joined: 0,
                errors: vec!["Failed to join 127.0.0.9: i/o timeout".into()],
            })
        );
    }
}
