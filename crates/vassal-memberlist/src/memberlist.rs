//! The SWIM state machine: the node table, alive/suspect/dead rules with refutation (spec §3.3),
//! probing with indirect checks, nacks and the TCP fallback (§3.4), Lifeguard suspicion (§3.5),
//! gossip (§3.6), push/pull (§3.7), join and leave (§3.8) and dead-node removal (§3.9).
//!
//! Inputs are `handle_*`, outputs are `poll_*`, and time is always an argument.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, trace, warn};

use crate::broadcast::TransmitLimitedQueue;
use crate::config::{Config, ConfigError};
use crate::delegate::{Delegate, Node};
use crate::limits::{self, later, Drops, MAX_INCARNATION_JUMP};
use crate::suspicion::{suspicion_timeout, Awareness, Suspicion};
use crate::wire::{
    self, Ack, Alive, Dead, DecodeError, IndirectPing, Message, Nack, NodeStateKind, Ping,
    PushNodeState, PushPull, ReadOptions, StreamMessage, Suspect, WriteOptions,
};

/// Bytes of compound framing per part, and for the compound header.
const COMPOUND_OVERHEAD: usize = 2;
const COMPOUND_HEADER_OVERHEAD: usize = 2;
/// The `08` type byte in front of each delegate broadcast.
const USER_MSG_OVERHEAD: usize = 1;
/// AES-GCM envelope (version 1): version byte, nonce, tag.
const ENCRYPT_OVERHEAD: usize = 29;
/// Maximum metadata size.
pub const META_MAX_SIZE: usize = 512;
/// Token of our own leave broadcast in the queue.
const LEAVE_NOTIFY: u64 = u64::MAX;

/// Identifies an outgoing TCP exchange between [`Transmit::Stream`] and
/// [`Memberlist::handle_stream_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// Identifies one call of [`Memberlist::join`] in [`Event::JoinFinished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JoinId(pub u64);

/// Something for the IO shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// One UDP datagram, sent from the gossip socket.
    Packet { to: SocketAddr, bytes: Vec<u8> },
    /// Open a TCP connection to `to`, write `bytes`, read one stream message back (framed with
    /// [`Memberlist::decode_stream`]) and hand it to [`Memberlist::handle_stream_reply`]; give up
    /// at `deadline`.
    Stream {
        id: StreamId,
        to: SocketAddr,
        bytes: Vec<u8>,
        deadline: Instant,
    },
}

/// Where unreadable input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Packet,
    Stream,
}

/// Things that happened that are not membership changes (those go to the [`Delegate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A [`Memberlist::join`] finished: `joined` exchanges succeeded.
    JoinFinished {
        id: JoinId,
        joined: usize,
        errors: Vec<String>,
    },
    /// Input we could not read, or a peer's error reply. Worth a warning in the log.
    InboundError {
        from: SocketAddr,
        transport: Transport,
        error: String,
    },
    /// A push/pull with a peer failed after the exchange (e.g. incompatible protocol versions).
    PushPullFailed { peer: SocketAddr, error: String },
    /// A probe failed and the node is now suspect.
    Suspected { node: String, confirmations: u32 },
}

/// Counters for `info`/metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub malformed_packets: u64,
    pub malformed_streams: u64,
    pub probes: u64,
    pub failed_probes: u64,
    pub refutes: u64,
    /// Well-formed messages refused as hostile or impossible, by reason (see [`crate::limits`]).
    pub drops: Drops,
}

#[derive(Debug, Clone)]
struct NodeState {
    node: Node,
    incarnation: u32,
    state_change: Instant,
}

impl NodeState {
    fn dead_or_left(&self) -> bool {
        matches!(self.node.state, NodeStateKind::Dead | NodeStateKind::Left)
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

#[derive(Debug, Clone)]
enum PendingStream {
    PushPull {
        peer: SocketAddr,
        join: Option<JoinId>,
        deadline: Instant,
    },
    Ping {
        seq: u32,
        deadline: Instant,
    },
}

impl PendingStream {
    fn deadline(&self) -> Instant {
        match self {
            PendingStream::PushPull { deadline, .. } | PendingStream::Ping { deadline, .. } => {
                *deadline
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct JoinProgress {
    pending: usize,
    joined: usize,
    errors: Vec<String>,
}

/// One node's view of the cluster: the pure SWIM + Lifeguard state machine.
#[derive(Debug)]
pub struct Memberlist {
    config: Config,
    rng: ChaCha8Rng,
    /// The node table in probe order; `index` maps names to positions. Both are persistent
    /// collections: a clone shares structure until one side changes, which lets a simulator
    /// give thousands of nodes one converged table (see `adopt_table`).
    nodes: imbl::Vector<NodeState>,
    index: imbl::OrdMap<String, usize>,
    probe_index: usize,
    incarnation: u32,
    seq_no: u32,
    awareness: Awareness,
    broadcasts: TransmitLimitedQueue,
    suspicions: BTreeMap<String, Suspicion>,
    probe: Option<Probe>,
    relays: BTreeMap<u32, Relay>,
    streams: BTreeMap<StreamId, PendingStream>,
    joins: BTreeMap<JoinId, JoinProgress>,
    next_id: u64,
    next_probe: Instant,
    next_gossip: Option<Instant>,
    next_push_pull: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    left: bool,
    stats: Stats,
}

impl Memberlist {
    /// Creates the state machine and announces ourselves as alive (incarnation 1).
    pub fn new(config: Config, now: Instant, d: &mut impl Delegate) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let stagger = |rng: &mut ChaCha8Rng, d: Duration| -> Duration {
            if d.is_zero() {
                Duration::ZERO
            } else {
                // Not `as u64`: a 2^64 ns interval would truncate to an empty range and panic.
                let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.gen_range(0..nanos))
            }
        };
        let next_probe = later(now, stagger(&mut rng, config.probe_interval));
        let next_gossip = (!config.gossip_interval.is_zero())
            .then(|| later(now, stagger(&mut rng, config.gossip_interval)));
        let next_push_pull = (!config.push_pull_interval.is_zero())
            .then(|| later(now, stagger(&mut rng, config.push_pull_interval)));
        let mut ml = Memberlist {
            awareness: Awareness::new(config.awareness_max_multiplier),
            config,
            rng,
            nodes: imbl::Vector::new(),
            index: imbl::OrdMap::new(),
            probe_index: 0,
            incarnation: 0,
            seq_no: 0,
            broadcasts: TransmitLimitedQueue::new(),
            suspicions: BTreeMap::new(),
            probe: None,
            relays: BTreeMap::new(),
            streams: BTreeMap::new(),
            joins: BTreeMap::new(),
            next_id: 0,
            next_probe,
            next_gossip,
            next_push_pull,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            left: false,
            stats: Stats::default(),
        };
        let meta = d.node_meta(META_MAX_SIZE);
        let alive = ml.local_alive(meta);
        ml.alive_node(alive, true, now, d);
        Ok(ml)
    }

    // ----- accessors -----

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn local_name(&self) -> &str {
        &self.config.name
    }

    /// Every node we know, in any state, until it is removed (spec §3.9).
    pub fn members(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().map(|n| &n.node)
    }

    /// A node's entry in the table, by name.
    fn state_of(&self, name: &str) -> Option<&NodeState> {
        self.lookup(name).map(|(_, s)| s)
    }

    /// A node's position in the table and its entry.
    fn lookup(&self, name: &str) -> Option<(usize, &NodeState)> {
        let &i = self.index.get(name)?;
        Some((i, self.nodes.get(i)?))
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.state_of(name).map(|s| &s.node)
    }

    /// A node's incarnation number, if we know it.
    pub fn incarnation_of(&self, name: &str) -> Option<u32> {
        self.state_of(name).map(|s| s.incarnation)
    }

    // `new` puts us in the table and nothing removes us: `reset_nodes` keeps live nodes, and we
    // are never dead or left to ourselves before `leave` (after which we are not reaped either).
    #[allow(clippy::expect_used)]
    pub fn local_node(&self) -> &Node {
        self.node(&self.config.name)
            .expect("the local node is always in the table")
    }

    /// Nodes in the table (memberlist's `estNumNodes`), ourselves and dead ones included.
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Alive nodes, ourselves included.
    pub fn num_alive(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.node.state == NodeStateKind::Alive)
            .count()
    }

    /// Lifeguard health score: 0 is healthy.
    pub fn health_score(&self) -> i32 {
        self.awareness.score()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn has_left(&self) -> bool {
        self.left
    }

    pub fn keyring(&self) -> Option<&wire::Keyring> {
        self.config.keyring.as_ref()
    }

    /// The keyring, for key rotation by the layer above.
    pub fn keyring_mut(&mut self) -> Option<&mut wire::Keyring> {
        self.config.keyring.as_mut()
    }

    /// Messages waiting in memberlist's own broadcast queue.
    pub fn queued_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    // ----- commands -----

    /// Joins the cluster through a push/pull with each address (spec §3.8). The result arrives
    /// as [`Event::JoinFinished`].
    pub fn join(&mut self, addrs: &[SocketAddr], now: Instant, d: &mut impl Delegate) -> JoinId {
        let id = JoinId(self.next_id());
        self.joins.insert(
            id,
            JoinProgress {
                pending: addrs.len(),
                ..Default::default()
            },
        );
        for &addr in addrs {
            self.push_pull_with(addr, Some(id), now, d);
        }
        self.finish_join_if_done(id);
        id
    }

    /// Leaves gracefully: broadcasts a `dead` about ourselves with `From` = our name. Poll
    /// [`leave_pending`](Self::leave_pending) until it has been sent (or give up after a timeout).
    pub fn leave(&mut self, now: Instant, d: &mut impl Delegate) {
        if self.left {
            return;
        }
        self.left = true;
        let Some(me) = self.state_of(&self.config.name) else {
            return;
        };
        let dead = Dead {
            incarnation: me.incarnation,
            node: me.node.name.clone(),
            from: me.node.name.clone(),
        };
        self.dead_node(dead, Some(LEAVE_NOTIFY), now, d);
    }

    /// Whether our leave message is still waiting to be gossiped to a live peer.
    pub fn leave_pending(&self) -> bool {
        self.any_other_alive() && self.broadcasts.is_pending(LEAVE_NOTIFY)
    }

    /// Re-reads our metadata from the delegate and announces it with a new incarnation.
    pub fn update_meta(&mut self, now: Instant, d: &mut impl Delegate) {
        let meta = d.node_meta(META_MAX_SIZE);
        let alive = self.local_alive(meta);
        self.alive_node(alive, true, now, d);
    }

    /// Sends a delegate message (`08` + `msg`) straight to an address, alone: no piggybacked
    /// gossip and no CRC, like Go's `SendTo` (Serf's query acks, responses and relays).
    pub fn send_user_packet(&mut self, to: SocketAddr, msg: &[u8]) {
        let mut buf = Vec::with_capacity(msg.len().saturating_add(1));
        buf.push(wire::MessageType::User as u8);
        buf.extend_from_slice(msg);
        self.send_packet(to, &[buf], false);
    }

    /// Simulation support: takes `template`'s node table as ours, as if we had just merged a
    /// push/pull with it and the resulting gossip had died down. No broadcast is queued and no
    /// delegate callback runs. The table stays shared with the template (and every other node
    /// that adopted it) until one side changes an entry, which is what lets one process hold
    /// thousands of nodes that each know every other.
    ///
    /// We probe in the template's order, starting at a random place in it (a real node inserts
    /// each newcomer at a random place of its own). Refused unless we know only ourselves, the
    /// template's entry for us is exactly ours, and every node in the template is alive.
    #[cfg(feature = "sim")]
    pub fn adopt_table(&mut self, template: &Memberlist) -> Result<(), String> {
        if self.nodes.len() != 1 {
            return Err(format!(
                "{} already knows {} nodes; only a fresh node can adopt a table",
                self.config.name,
                self.nodes.len()
            ));
        }
        let mine = self
            .nodes
            .front()
            .ok_or_else(|| format!("{} has an empty table", self.config.name))?;
        let theirs = template
            .state_of(&self.config.name)
            .ok_or_else(|| format!("the template does not know {}", self.config.name))?;
        if theirs.node != mine.node || theirs.incarnation != mine.incarnation {
            return Err(format!(
                "the template's entry for {} differs from the node's own: {:?} (incarnation {}) vs {:?} (incarnation {})",
                self.config.name, theirs.node, theirs.incarnation, mine.node, mine.incarnation
            ));
        }
        if let Some(n) = template
            .nodes
            .iter()
            .find(|n| n.node.state != NodeStateKind::Alive)
        {
            return Err(format!(
                "the template holds {} in state {:?}; only all-alive tables can be adopted",
                n.node.name, n.node.state
            ));
        }
        self.nodes = template.nodes.clone();
        self.index = template.index.clone();
        self.probe_index = self.rng.gen_range(0..self.nodes.len());
        Ok(())
    }

    /// Whether two nodes' tables are still one shared structure (simulation memory checks).
    #[cfg(feature = "sim")]
    pub fn shares_table_with(&self, other: &Memberlist) -> bool {
        self.nodes.ptr_eq(&other.nodes) && self.index.ptr_eq(&other.index)
    }

    // ----- inputs -----

    /// A UDP datagram arrived. Garbage is counted and reported, never an error.
    pub fn handle_packet(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
        d: &mut impl Delegate,
    ) {
        let decoded = wire::decode_packet(bytes, &self.read_options());
        match decoded {
            Ok(packet) => {
                self.stats.malformed_packets = self
                    .stats
                    .malformed_packets
                    .saturating_add(packet.malformed as u64);
                for msg in packet.messages {
                    self.handle_message(from, msg, now, d);
                }
            }
            Err(e) => {
                self.stats.malformed_packets = self.stats.malformed_packets.saturating_add(1);
                debug!(%from, error = %e, "dropping malformed packet");
                self.events.push_back(Event::InboundError {
                    from,
                    transport: Transport::Packet,
                    error: e.to_string(),
                });
            }
        }
    }

    /// Frames a stream message from the bytes read so far: `Ok(None)` means "read more".
    pub fn decode_stream(&self, buf: &[u8]) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
        wire::decode_stream(buf, &self.read_options())
    }

    /// A peer opened a TCP stream and sent one message (or something unreadable). Returns the
    /// bytes to write back before closing, if any.
    pub fn handle_stream(
        &mut self,
        from: SocketAddr,
        msg: Result<StreamMessage, DecodeError>,
        now: Instant,
        d: &mut impl Delegate,
    ) -> Option<Vec<u8>> {
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.malformed_streams = self.stats.malformed_streams.saturating_add(1);
                self.events.push_back(Event::InboundError {
                    from,
                    transport: Transport::Stream,
                    error: e.to_string(),
                });
                let reply = StreamMessage::Err(wire::ErrResp {
                    error: e.to_string(),
                });
                return Some(self.encode_stream(&reply));
            }
        };
        match msg {
            StreamMessage::PushPull(remote) => {
                let reply = self.local_push_pull(remote.join, d);
                let bytes = self.encode_stream(&reply);
                if let Err(error) = self.merge_remote(&remote, now, d) {
                    self.events
                        .push_back(Event::PushPullFailed { peer: from, error });
                }
                Some(bytes)
            }
            StreamMessage::Ping(ping) => {
                if !ping.node.is_empty() && ping.node != self.config.name {
                    debug!(%from, node = %ping.node, "stream ping for another node");
                    return None;
                }
                let ack = StreamMessage::Ack(Ack {
                    seq_no: ping.seq_no,
                    payload: None,
                });
                Some(self.encode_stream(&ack))
            }
            StreamMessage::User(msg) => {
                d.notify_message(&msg, now);
                None
            }
            StreamMessage::Ack(_) | StreamMessage::Err(_) => None,
        }
    }

    /// The reply to one of our [`Transmit::Stream`]s, or why there is none.
    pub fn handle_stream_reply(
        &mut self,
        id: StreamId,
        reply: Result<StreamMessage, String>,
        now: Instant,
        d: &mut impl Delegate,
    ) {
        let Some(pending) = self.streams.remove(&id) else {
            return;
        };
        match pending {
            PendingStream::PushPull { peer, join, .. } => {
                let result = match reply {
                    Ok(StreamMessage::PushPull(remote)) => self.merge_remote(&remote, now, d),
                    Ok(StreamMessage::Err(e)) => Err(format!("remote error: {}", e.error)),
                    Ok(other) => Err(format!("unexpected reply to push/pull: {other:?}")),
                    Err(e) => Err(e),
                };
                match join {
                    Some(join) => {
                        if let Some(p) = self.joins.get_mut(&join) {
                            p.pending = p.pending.saturating_sub(1);
                            match result {
                                Ok(()) => p.joined = p.joined.saturating_add(1),
                                Err(e) => {
                                    p.errors.push(format!("Failed to join {}: {e}", peer.ip()))
                                }
                            }
                        }
                        self.finish_join_if_done(join);
                    }
                    None => {
                        if let Err(error) = result {
                            self.events.push_back(Event::PushPullFailed { peer, error });
                        }
                    }
                }
            }
            PendingStream::Ping { seq, .. } => {
                if let Ok(StreamMessage::Ack(ack)) = reply {
                    if let Some(probe) = self
                        .probe
                        .as_mut()
                        .filter(|p| p.seq == seq && ack.seq_no == seq)
                    {
                        probe.tcp_ok = true;
                    }
                }
            }
        }
    }

    /// Runs whatever is due at `now`: probes, gossip, push/pull, suspicion and ack timeouts.
    pub fn handle_timeout(&mut self, now: Instant, d: &mut impl Delegate) {
        // Streams past their deadline fail (the shell should have reported them already).
        let expired: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.deadline() <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.handle_stream_reply(id, Err("i/o timeout".into()), now, d);
        }

        self.relay_timeouts(now, d);
        self.probe_timeouts(now, d);

        let due: Vec<String> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.suspicion_expired(&name, now, d);
        }

        if now >= self.next_probe {
            self.next_probe = advance(self.next_probe, self.config.probe_interval, now);
            if self.probe.is_none() {
                self.probe_tick(now, d);
            }
        }
        if let Some(at) = self.next_gossip.filter(|at| now >= *at) {
            self.next_gossip = Some(advance(at, self.config.gossip_interval, now));
            self.gossip(now, d);
        }
        if let Some(at) = self.next_push_pull.filter(|at| now >= *at) {
            let interval = push_pull_scale(self.config.push_pull_interval, self.nodes.len());
            self.next_push_pull = Some(advance(at, interval, now));
            self.periodic_push_pull(now, d);
        }
    }

    // ----- outputs -----

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_probe;
        let mut take = |x: Instant| t = t.min(x);
        self.next_gossip.map(&mut take);
        self.next_push_pull.map(&mut take);
        if let Some(p) = &self.probe {
            p.indirect_at.map(&mut take);
            take(p.deadline);
        }
        for r in self.relays.values() {
            take(r.expires);
            r.nack_at.map(&mut take);
        }
        for s in self.suspicions.values() {
            take(s.deadline);
        }
        for s in self.streams.values() {
            take(s.deadline());
        }
        Some(t)
    }

    // ----- message handling -----

    fn handle_message(
        &mut self,
        from: SocketAddr,
        msg: Message,
        now: Instant,
        d: &mut impl Delegate,
    ) {
        trace!(%from, ?msg, "message");
        match msg {
            Message::Ping(p) => self.handle_ping(from, p, d),
            Message::IndirectPing(ind) => self.handle_indirect_ping(from, ind, now, d),
            Message::Ack(ack) => self.handle_ack(ack, now, d),
            Message::Nack(nack) => self.handle_nack(nack),
            Message::Suspect(s) => self.suspect_node(s, now),
            Message::Alive(mut a) => {
                if a.port == 0 {
                    a.port = self.config.bind_port;
                }
                self.alive_node(a, false, now, d)
            }
            Message::Dead(dead) => self.dead_node(dead, None, now, d),
            Message::User(buf) => d.notify_message(&buf, now),
            Message::Err(e) => debug!(%from, error = %e.error, "error message from peer"),
        }
    }

    fn handle_ping(&mut self, from: SocketAddr, p: Ping, d: &mut impl Delegate) {
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

    fn handle_indirect_ping(
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
        self.relays.insert(
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

    fn handle_ack(&mut self, ack: Ack, now: Instant, d: &mut impl Delegate) {
        if let Some(relay) = self.relays.remove(&ack.seq_no) {
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
        let Some(probe) = self.probe.as_ref().filter(|p| p.seq == ack.seq_no) else {
            trace!(seq = ack.seq_no, "ack for no probe in progress");
            return;
        };
        let direct = probe.indirect_at.is_some();
        let rtt = now.saturating_duration_since(probe.sent);
        let target = probe.target.clone();
        self.probe = None;
        self.awareness.apply_delta(-1);
        if direct {
            if let Some(node) = self.node(&target).cloned() {
                d.notify_ping_complete(&node, rtt, ack.payload.as_deref().unwrap_or_default());
            }
        }
    }

    fn handle_nack(&mut self, nack: Nack) {
        if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == nack.seq_no) {
            probe.nacks = probe.nacks.saturating_add(1);
        }
    }

    // ----- the alive / suspect / dead rules (spec §3.3) -----

    /// memberlist's `aliveNode`: an `alive` about any node, ourselves included (spec §3.3).
    fn alive_node(&mut self, a: Alive, bootstrap: bool, now: Instant, d: &mut impl Delegate) {
        let is_local = a.node == self.config.name;
        // A node that has left stays left: it does not take its own alive back.
        if self.left && is_local {
            return;
        }
        // Names end up in logs, handlers' input and the snapshot file, one per line.
        if let Some(reason) = limits::invalid_node_name(&a.node) {
            return self.refuse(reason, &a.node, a.incarnation);
        }
        if !self.credible(&a.node, a.incarnation) {
            return self.refuse("incredible incarnation", &a.node, a.incarnation);
        }
        let (pmin, pmax) = (a.vsn[0], a.vsn[1]);
        if pmin == 0 || pmax == 0 || pmin > pmax {
            debug!(node = %a.node, ?a.vsn, "ignoring alive with invalid protocol versions");
            return;
        }
        let mut updates_node = false;
        let idx = match self.index.get(&a.node) {
            None => {
                if self.nodes.len() >= limits::MAX_NODES {
                    return self.refuse("node table full", &a.node, a.incarnation);
                }
                let state = NodeState {
                    node: Node {
                        name: a.node.clone(),
                        addr: a.addr,
                        port: a.port,
                        meta: a.meta.clone(),
                        vsn: a.vsn,
                        state: NodeStateKind::Dead,
                    },
                    incarnation: 0,
                    state_change: now,
                };
                self.insert_node(state)
            }
            Some(&i) => {
                let Some(existing) = self.nodes.get(i) else {
                    return;
                };
                // Another address for a name we know: a left node may come back elsewhere; for
                // any other the delegate decides (Serf votes if the name is ours).
                if existing.node.addr != a.addr || existing.node.port != a.port {
                    if existing.node.state == NodeStateKind::Left {
                        // Not at once: a forged leave followed by a forged alive elsewhere
                        // would move a live node to the forger's address, and the node would
                        // then lose its own name-conflict vote. A live node refutes the leave
                        // well within this time; a restarted one waits a little.
                        let left_for = now.saturating_duration_since(existing.state_change);
                        if left_for < limits::LEFT_NODE_RECLAIM_TIME {
                            return self.refuse(
                                "address change of a node that just left",
                                &a.node,
                                a.incarnation,
                            );
                        }
                        debug!(node = %a.node, "updating address of a left node");
                        updates_node = true;
                    } else {
                        let other = Node {
                            name: a.node.clone(),
                            addr: a.addr,
                            port: a.port,
                            meta: a.meta.clone(),
                            vsn: a.vsn,
                            state: NodeStateKind::Alive,
                        };
                        let existing = existing.node.clone();
                        d.notify_conflict(&existing, &other, now);
                        return;
                    }
                }
                i
            }
        };
        let Some(state) = self.nodes.get(idx) else {
            return;
        };
        // Only news counts: a higher incarnation, or a left node's new address. About ourselves,
        // an equal incarnation with other meta or versions is news too (we refute it below).
        if a.incarnation <= state.incarnation && !is_local && !updates_node {
            return;
        }
        if a.incarnation < state.incarnation && is_local {
            return;
        }
        self.suspicions.remove(&a.node);
        let old_state = state.node.state;
        let old_meta = state.node.meta.clone();
        if !bootstrap && is_local {
            if a.incarnation == state.incarnation
                && a.meta == state.node.meta
                && a.vsn == state.node.vsn
            {
                return;
            }
            debug!(
                incarnation = a.incarnation,
                "refuting an alive message about us"
            );
            self.refute(a.incarnation);
        } else {
            self.broadcast(&a.node.clone(), Message::Alive(a.clone()), None);
            let Some(state) = self.nodes.get_mut(idx) else {
                return;
            };
            state.node.vsn = a.vsn;
            state.incarnation = a.incarnation;
            state.node.meta = a.meta;
            state.node.addr = a.addr;
            state.node.port = a.port;
            if state.node.state != NodeStateKind::Alive {
                state.node.state = NodeStateKind::Alive;
                state.state_change = now;
            }
            if is_local {
                self.incarnation = self.incarnation.max(a.incarnation);
            }
        }
        // A node back from the dead has joined; a live one with new meta has been updated.
        let Some(node) = self.nodes.get(idx).map(|s| s.node.clone()) else {
            return;
        };
        if matches!(old_state, NodeStateKind::Dead | NodeStateKind::Left) {
            d.notify_join(&node, now);
        } else if old_meta != node.meta {
            d.notify_update(&node, now);
        }
    }

    /// memberlist's `suspectNode` (spec §3.3): start, or confirm, a suspicion.
    fn suspect_node(&mut self, s: Suspect, now: Instant) {
        // We never suspect a node we do not know.
        let Some((idx, known)) = self.lookup(&s.node) else {
            return;
        };
        let was_alive = known.node.state == NodeStateKind::Alive;
        // Old news: the node has refuted it already.
        if s.incarnation < known.incarnation {
            return;
        }
        if !self.credible(&s.node, s.incarnation) {
            return self.refuse("incredible incarnation", &s.node, s.incarnation);
        }
        // A suspicion already running: a new accuser is a confirmation (Lifeguard), which
        // shortens the timeout and is re-gossiped once per accuser.
        if let Some(timer) = self.suspicions.get_mut(&s.node) {
            if timer.confirm(&s.from) {
                debug!(node = %s.node, from = %s.from, confirmations = timer.confirmations(), "suspicion confirmed");
                self.broadcast(&s.node.clone(), Message::Suspect(s), None);
            }
            return;
        }
        // Only a live node can become suspect; dead and left ones stay as they are.
        if !was_alive {
            return;
        }
        // About us: deny it, with an incarnation above the accusation.
        if s.node == self.config.name {
            debug!(from = %s.from, "refuting a suspect message");
            self.refute(s.incarnation);
            return;
        }
        self.broadcast(&s.node.clone(), Message::Suspect(s.clone()), None);
        let Some(state) = self.nodes.get_mut(idx) else {
            return;
        };
        state.incarnation = s.incarnation;
        state.node.state = NodeStateKind::Suspect;
        state.state_change = now;

        // Aim for the nominal timeout two probe intervals short of the multiplier; expect no
        // confirmations if there are not enough other nodes to give them.
        let n = self.nodes.len();
        let mut k = self.config.suspicion_mult.saturating_sub(2);
        if n.saturating_sub(2) < k as usize {
            k = 0;
        }
        let min = suspicion_timeout(self.config.suspicion_mult, n, self.config.probe_interval);
        let max = min.saturating_mul(self.config.suspicion_max_timeout_mult);
        self.suspicions
            .insert(s.node.clone(), Suspicion::new(&s.from, k, min, max, now));
    }

    fn suspicion_expired(&mut self, name: &str, now: Instant, d: &mut impl Delegate) {
        let Some(s) = self.suspicions.remove(name) else {
            return;
        };
        let Some(state) = self.state_of(name) else {
            return;
        };
        if state.node.state != NodeStateKind::Suspect {
            return;
        }
        debug!(node = %name, confirmations = s.confirmations(), "suspect timeout reached; marking failed");
        let dead = Dead {
            incarnation: state.incarnation,
            node: name.to_owned(),
            from: self.config.name.clone(),
        };
        self.dead_node(dead, None, now, d);
    }

    /// memberlist's `deadNode` (spec §3.3): a failure verdict, or a leave when a node declares
    /// itself dead.
    fn dead_node(&mut self, dead: Dead, notify: Option<u64>, now: Instant, d: &mut impl Delegate) {
        let Some((idx, known)) = self.lookup(&dead.node) else {
            return;
        };
        let was_gone = known.dead_or_left();
        // Old news: the node has refuted it already.
        if dead.incarnation < known.incarnation {
            return;
        }
        if !self.credible(&dead.node, dead.incarnation) {
            return self.refuse("incredible incarnation", &dead.node, dead.incarnation);
        }
        self.suspicions.remove(&dead.node);
        if was_gone {
            return;
        }
        if dead.node == self.config.name && !self.left {
            debug!(from = %dead.from, "refuting a dead message");
            self.refute(dead.incarnation);
            return;
        }
        let left = dead.node == dead.from;
        let incarnation = dead.incarnation;
        self.broadcast(&dead.node.clone(), Message::Dead(dead), notify);
        let Some(state) = self.nodes.get_mut(idx) else {
            return;
        };
        state.incarnation = incarnation;
        state.node.state = if left {
            NodeStateKind::Left
        } else {
            NodeStateKind::Dead
        };
        state.state_change = now;
        let node = state.node.clone();
        d.notify_leave(&node, now);
    }

    /// Whether `incarnation` is one `node` could honestly have reached: at most
    /// [`MAX_INCARNATION_JUMP`] above what we know of it (anything goes for a node we don't know).
    fn credible(&self, node: &str, incarnation: u32) -> bool {
        self.state_of(node)
            .is_none_or(|s| incarnation <= s.incarnation.saturating_add(MAX_INCARNATION_JUMP))
    }

    /// Drops a hostile or impossible message about `node`, counting it; the first of each reason
    /// is logged.
    fn refuse(&mut self, reason: &'static str, node: &str, incarnation: u32) {
        if self.stats.drops.record(reason) {
            warn!(
                node = %node.escape_debug(),
                incarnation,
                "memberlist: dropped a message: {reason} (logged once; later ones are only counted)"
            );
        } else {
            debug!(node = %node.escape_debug(), incarnation, "memberlist: dropped a message: {reason}");
        }
    }

    /// Announces ourselves alive with an incarnation above the accusation (spec §3.3 Refute).
    /// Saturates: at `u32::MAX` we can only repeat ourselves (the credibility margin keeps a
    /// forger from walking us there in fewer than millions of rounds).
    fn refute(&mut self, accused: u32) {
        let mut inc = self.next_incarnation();
        if accused >= inc {
            self.incarnation = accused.saturating_add(1);
            inc = self.incarnation;
        }
        self.stats.refutes = self.stats.refutes.saturating_add(1);
        self.awareness.apply_delta(1);
        let Some(idx) = self.index.get(&self.config.name).copied() else {
            return;
        };
        let Some(me) = self.nodes.get_mut(idx) else {
            return;
        };
        me.incarnation = inc;
        let meta = me.node.meta.clone();
        let mut a = self.local_alive(meta);
        a.incarnation = inc;
        self.broadcast(&self.config.name.clone(), Message::Alive(a), None);
    }

    // ----- probing (spec §3.4) -----

    fn probe_tick(&mut self, now: Instant, d: &mut impl Delegate) {
        let mut checked = 0usize;
        loop {
            if checked >= self.nodes.len() {
                return;
            }
            if self.probe_index >= self.nodes.len() {
                self.reset_nodes(now);
                self.probe_index = 0;
                checked = checked.saturating_add(1);
                continue;
            }
            let Some(node) = self.nodes.get(self.probe_index) else {
                return;
            };
            let skip = node.node.name == self.config.name || node.dead_or_left();
            // Below `nodes.len()`, checked above.
            self.probe_index = self.probe_index.saturating_add(1);
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

    fn probe_node(&mut self, target: Node, incarnation: u32, now: Instant, d: &mut impl Delegate) {
        self.stats.probes = self.stats.probes.saturating_add(1);
        let seq = self.next_seq();
        let ping = self.ping_to(seq, &target.name);
        let deadline = later(now, self.awareness.scale(self.config.probe_interval));
        let crc = target.pmax() >= 5;
        let ping = wire::encode_message(&Message::Ping(ping));
        if target.state == NodeStateKind::Alive {
            self.send_msg(target.socket_addr(), ping, crc, d);
        } else {
            let suspect = Suspect {
                incarnation,
                node: target.name.clone(),
                from: self.config.name.clone(),
            };
            let msgs = vec![ping, wire::encode_message(&Message::Suspect(suspect))];
            self.send_packet(target.socket_addr(), &msgs, crc);
        }
        self.probe = Some(Probe {
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

    fn probe_timeouts(&mut self, now: Instant, d: &mut impl Delegate) {
        let Some(probe) = self.probe.as_mut() else {
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
        let Some(probe) = self.probe.as_ref() else {
            return;
        };
        if now < probe.deadline {
            return;
        }
        let Some(probe) = self.probe.take() else {
            return;
        };
        if probe.tcp_ok {
            debug!(node = %probe.target, "reached over TCP but UDP probes failed; network may be misconfigured");
            self.awareness.apply_delta(-1);
            return;
        }
        self.stats.failed_probes = self.stats.failed_probes.saturating_add(1);
        let delta = if probe.expected_nacks > 0 {
            probe.expected_nacks.saturating_sub(probe.nacks) as i32
        } else {
            1
        };
        self.awareness.apply_delta(delta);
        let Some(incarnation) = self.incarnation_of(&probe.target) else {
            return;
        };
        debug!(node = %probe.target, "suspect has failed, no acks received");
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
        if let Some(p) = self.probe.as_mut() {
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

    fn relay_timeouts(&mut self, now: Instant, d: &mut impl Delegate) {
        let due: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| r.nack_at.is_some_and(|at| now >= at) || r.expires <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            let Some(relay) = self.relays.remove(&seq) else {
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

    // ----- gossip (spec §3.6) and push/pull (§3.7) -----

    fn gossip(&mut self, now: Instant, d: &mut impl Delegate) {
        let dead_time = self.config.gossip_to_the_dead_time;
        // Dead nodes, and (unlike Go) left ones, still hear gossip for a while: a node that a
        // forged leave or verdict took out hears of it within a round and refutes it, inside
        // LEFT_NODE_RECLAIM_TIME.
        let targets = self.k_random_nodes(self.config.gossip_nodes, |n| match n.node.state {
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

    fn periodic_push_pull(&mut self, now: Instant, d: &mut impl Delegate) {
        let peers = self.k_random_nodes(1, |n| n.node.state != NodeStateKind::Alive);
        let Some(peer) = peers.into_iter().next() else {
            return;
        };
        self.push_pull_with(peer.socket_addr(), None, now, d);
    }

    /// Opens a push/pull exchange with `addr`; `join` marks it as part of a [`Memberlist::join`].
    fn push_pull_with(
        &mut self,
        addr: SocketAddr,
        join: Option<JoinId>,
        now: Instant,
        d: &mut impl Delegate,
    ) {
        let msg = self.local_push_pull(join.is_some(), d);
        let deadline = later(now, self.config.tcp_timeout);
        self.open_stream(
            addr,
            &msg,
            PendingStream::PushPull {
                peer: addr,
                join,
                deadline,
            },
        );
    }

    fn local_push_pull(&mut self, join: bool, d: &mut impl Delegate) -> StreamMessage {
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
    fn merge_remote(
        &mut self,
        remote: &PushPull,
        now: Instant,
        d: &mut impl Delegate,
    ) -> Result<(), String> {
        self.verify_protocol(&remote.nodes)?;
        for r in &remote.nodes {
            let vsn: Option<[u8; 6]> = r.vsn.as_slice().try_into().ok();
            match r.state {
                NodeStateKind::Alive => {
                    let Some(vsn) = vsn else {
                        continue;
                    };
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
                    self.alive_node(a, false, now, d);
                }
                NodeStateKind::Left => {
                    let dead = Dead {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: r.name.clone(),
                    };
                    self.dead_node(dead, None, now, d);
                }
                // A peer's "dead" becomes our suspicion, never an instant verdict.
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

    // ----- the node table -----

    /// Adds a node at a random place in the probe order, so failure detection stays fast on average.
    fn insert_node(&mut self, state: NodeState) -> usize {
        let n = self.nodes.len();
        let offset = if n == 0 { 0 } else { self.rng.gen_range(0..n) };
        let name = state.node.name.clone();
        self.nodes.push_back(state);
        // The new node takes `offset`; the one that was there moves to the end.
        self.nodes.swap(offset, n);
        if let Some(moved) = self.nodes.get(n) {
            self.index.insert(moved.node.name.clone(), n);
        }
        self.index.insert(name, offset);
        offset
    }

    /// At the end of a probe round: forget nodes dead or left for longer than the gossip-to-the-
    /// dead time, and shuffle the rest (spec §3.4, §3.9).
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

    /// Up to `k` distinct random nodes other than ourselves, skipping those `exclude` rejects.
    fn k_random_nodes(&mut self, k: usize, exclude: impl Fn(&NodeState) -> bool) -> Vec<Node> {
        let n = self.nodes.len();
        let mut out: Vec<Node> = Vec::with_capacity(k);
        let mut i = 0;
        while i < n.saturating_mul(3) && out.len() < k {
            i = i.saturating_add(1);
            let Some(state) = self.nodes.get(self.rng.gen_range(0..n)) else {
                continue;
            };
            if state.node.name == self.config.name || exclude(state) {
                continue;
            }
            if out.iter().any(|o| o.name == state.node.name) {
                continue;
            }
            out.push(state.node.clone());
        }
        out
    }

    fn any_other_alive(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.node.name != self.config.name && n.node.state == NodeStateKind::Alive)
    }

    // ----- sending -----

    fn broadcast(&mut self, node: &str, msg: Message, notify: Option<u64>) {
        self.broadcasts
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
            self.broadcasts
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
    fn send_msg(&mut self, to: SocketAddr, msg: Vec<u8>, crc: bool, d: &mut impl Delegate) {
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

    fn send_packet(&mut self, to: SocketAddr, msgs: &[Vec<u8>], crc: bool) {
        for chunk in msgs.chunks(255) {
            let nonce = self.nonce();
            let bytes = wire::encode_packet(chunk, &self.write_options(crc), nonce);
            self.transmits.push_back(Transmit::Packet { to, bytes });
        }
    }

    fn open_stream(&mut self, to: SocketAddr, msg: &StreamMessage, pending: PendingStream) {
        let id = StreamId(self.next_id());
        let deadline = pending.deadline();
        let bytes = self.encode_stream(msg);
        self.streams.insert(id, pending);
        self.transmits.push_back(Transmit::Stream {
            id,
            to,
            bytes,
            deadline,
        });
    }

    fn encode_stream(&mut self, msg: &StreamMessage) -> Vec<u8> {
        let nonce = self.nonce();
        wire::encode_stream(msg, &self.write_options(false), nonce)
    }

    /// How we write: our label, the primary key if we encrypt, compression, and `crc` (packets
    /// only).
    fn write_options(&self, crc: bool) -> WriteOptions<'_> {
        WriteOptions {
            label: &self.config.label,
            keyring: self
                .config
                .keyring
                .as_ref()
                .filter(|_| self.config.gossip_verify_outgoing),
            compress: self.config.enable_compression,
            crc,
        }
    }

    fn read_options(&self) -> ReadOptions<'_> {
        ReadOptions {
            label: &self.config.label,
            keyring: self.config.keyring.as_ref(),
            verify_incoming: self.config.gossip_verify_incoming,
        }
    }

    /// Label and encryption bytes that every packet carries.
    fn packet_overhead(&self) -> usize {
        let label = if self.config.label.is_empty() {
            0
        } else {
            self.config.label.len().saturating_add(2)
        };
        let crypto = if self.config.keyring.is_some() {
            ENCRYPT_OVERHEAD
        } else {
            0
        };
        label.saturating_add(crypto)
    }

    fn finish_join_if_done(&mut self, id: JoinId) {
        if self.joins.get(&id).is_some_and(|p| p.pending == 0) {
            if let Some(p) = self.joins.remove(&id) {
                self.events.push_back(Event::JoinFinished {
                    id,
                    joined: p.joined,
                    errors: p.errors,
                });
            }
        }
    }

    // ----- small helpers -----

    fn local_alive(&mut self, meta: Vec<u8>) -> Alive {
        Alive {
            incarnation: self.next_incarnation(),
            node: self.config.name.clone(),
            addr: self.config.advertise.ip(),
            port: self.config.advertise.port(),
            meta,
            vsn: self.config.vsn(),
        }
    }

    fn advertise(&self) -> (std::net::IpAddr, u16) {
        (self.config.advertise.ip(), self.config.advertise.port())
    }

    fn ping_to(&self, seq: u32, node: &str) -> Ping {
        let (addr, port) = self.advertise();
        Ping {
            seq_no: seq,
            node: node.to_owned(),
            source_addr: Some(addr),
            source_port: port,
            source_node: self.config.name.clone(),
        }
    }

    fn next_incarnation(&mut self) -> u32 {
        self.incarnation = self.incarnation.saturating_add(1);
        self.incarnation
    }

    fn next_seq(&mut self) -> u32 {
        self.seq_no = self.seq_no.wrapping_add(1);
        self.seq_no
    }

    fn next_id(&mut self) -> u64 {
        // One per stream or join: a u64 does not wrap in practice.
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn nonce(&mut self) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        if self.config.keyring.is_some() {
            self.rng.fill_bytes(&mut nonce);
        }
        nonce
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

/// The next tick of a periodic timer; missed ticks are skipped, as with Go's tickers.
fn advance(at: Instant, interval: Duration, now: Instant) -> Instant {
    let next = later(at, interval);
    if next <= now {
        later(now, interval)
    } else {
        next
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
