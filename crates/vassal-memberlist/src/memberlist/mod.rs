//! The SWIM state machine: the node table, alive/suspect/dead rules with refutation (spec §3.3),
//! probing with indirect checks, nacks and the TCP fallback (§3.4), Lifeguard suspicion (§3.5),
//! gossip (§3.6), push/pull (§3.7), join and leave (§3.8) and dead-node removal (§3.9).
//!
//! Inputs are `handle_*`, outputs are `poll_*`, and time is always an argument.
//!
//! The files follow Go memberlist's map: this one holds [`Memberlist`], its public API, the
//! timers and the node table; `state.rs` the alive/suspect/dead rules (`aliveNode`,
//! `suspectNode`, `deadNode`, `refute`); `probe.rs` probing (`probe`, `probeNode`); `gossip.rs`
//! the gossip rounds and piggybacking (`gossip`, `getBroadcasts`); `push_pull.rs` push/pull and
//! join (`pushPull`, `pushPullNode`, `mergeState`). Probing, gossip and push/pull each own a
//! sub-state (`ProbeState`, `GossipState`, `PushPullState`); the node table, our incarnation
//! and the suspicions stay here, because every file reads them and the rules change them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, trace};

use crate::config::{Config, ConfigError};
use crate::delegate::{Delegate, Node};
use crate::limits::{later, Drops};
use crate::suspicion::{Awareness, Suspicion};
use crate::wire::{
    self, Ack, Alive, Dead, DecodeError, Message, NodeStateKind, ReadOptions, StreamMessage,
    WriteOptions,
};

mod gossip;
mod probe;
mod push_pull;
mod state;

pub use push_pull::push_pull_scale;

use gossip::GossipState;
use probe::ProbeState;
use push_pull::PushPullState;
use state::{Relay, Source};

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
    Packet {
        /// Destination.
        to: SocketAddr,
        /// The whole datagram.
        bytes: Vec<u8>,
    },
    /// Open a TCP connection to `to`, write `bytes`, read one stream message back (framed with
    /// [`Memberlist::decode_stream`]) and hand it to [`Memberlist::handle_stream_reply`]; give up
    /// at `deadline`.
    Stream {
        /// Names the exchange in [`Memberlist::handle_stream_reply`].
        id: StreamId,
        /// Whom to connect to.
        to: SocketAddr,
        /// The request to write.
        bytes: Vec<u8>,
        /// When to give up and report the exchange failed.
        deadline: Instant,
    },
}

/// Where unreadable input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram.
    Packet,
    /// A TCP stream.
    Stream,
}

/// Things that happened that are not membership changes (those go to the [`Delegate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A [`Memberlist::join`] finished: `joined` exchanges succeeded.
    JoinFinished {
        /// What [`Memberlist::join`] returned.
        id: JoinId,
        /// Exchanges that succeeded.
        joined: usize,
        /// One line per address that failed, in Go's words.
        errors: Vec<String>,
    },
    /// Input we could not read, or a peer's error reply. Worth a warning in the log.
    InboundError {
        /// The sender.
        from: SocketAddr,
        /// How it arrived.
        transport: Transport,
        /// What was wrong with it.
        error: String,
    },
    /// A push/pull with a peer failed after the exchange (e.g. incompatible protocol versions).
    PushPullFailed {
        /// The other side of the exchange.
        peer: SocketAddr,
        /// Why it failed.
        error: String,
    },
    /// A probe failed and the node is now suspect.
    Suspected {
        /// The node we failed to reach.
        node: String,
        /// Others' confirmations of the suspicion so far.
        confirmations: u32,
    },
}

/// Counters for `info`/metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets (or parts of compound packets) we could not read.
    pub malformed_packets: u64,
    /// Stream messages we could not read.
    pub malformed_streams: u64,
    /// Probes we started.
    pub probes: u64,
    /// Probes that ended without any ack (direct, relayed or over TCP).
    pub failed_probes: u64,
    /// Times we refuted a suspect, dead or alive about us.
    pub refutes: u64,
    /// Push/pull exchanges we opened (joins, periodic, catch-up).
    pub push_pulls: u64,
    /// Push/pulls opened by peers that we answered with our previous answer (see
    /// `REPLY_REUSE` in `push_pull.rs`).
    pub push_pull_replies_reused: u64,
    /// Gossip rounds sent to one node only because we were starved of CPU.
    pub starved_gossip_rounds: u64,
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

#[derive(Debug, Clone)]
enum PendingStream {
    PushPull {
        peer: SocketAddr,
        join: Option<JoinId>,
        /// Whether news in the reply is gossiped on (see [`Relay`]).
        relay: Relay,
        /// When we opened it, for Go's `memberlist.pushPullNode` timer.
        started: Instant,
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

/// One node's view of the cluster: the pure SWIM + Lifeguard state machine.
#[derive(Debug)]
pub struct Memberlist {
    config: Config,
    rng: ChaCha8Rng,
    /// The node table in probe order; `index` maps names to positions (hashed: every message
    /// names a node, and a lookup by name is on every path). Both are persistent
    /// collections: a clone shares structure until one side changes, which lets a simulator
    /// give thousands of nodes one converged table (see `adopt_table`).
    nodes: imbl::Vector<NodeState>,
    index: imbl::HashMap<String, usize>,
    /// Our own incarnation: raised by `update_meta` and by every refutation (`state.rs`).
    incarnation: u32,
    /// When a refutation of ours last went straight to members as well as into the gossip
    /// (`state.rs`): at most once a probe interval, so forged accusations cannot make us
    /// send `direct_fanout` packets each.
    refuted_directly_at: Option<Instant>,
    /// Running suspicions by node name; the alive/suspect/dead rules in `state.rs` start,
    /// confirm and end them.
    suspicions: BTreeMap<String, Suspicion>,
    /// Lifeguard's local health: raised by failed probes and refutations, lowered by acks.
    awareness: Awareness,
    /// Probe rounds and relays for others' indirect probes (`probe.rs`).
    probes: ProbeState,
    /// Memberlist's broadcast queue and the gossip timer (`gossip.rs`).
    gossip: GossipState,
    /// Joins in progress and the push/pull timer (`push_pull.rs`).
    push_pull: PushPullState,
    /// Our TCP exchanges awaiting their reply (push/pulls and TCP pings).
    streams: BTreeMap<StreamId, PendingStream>,
    next_id: u64,
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
            index: imbl::HashMap::new(),
            incarnation: 0,
            refuted_directly_at: None,
            suspicions: BTreeMap::new(),
            probes: ProbeState::new(next_probe),
            gossip: GossipState::new(next_gossip),
            push_pull: PushPullState::new(next_push_pull),
            streams: BTreeMap::new(),
            next_id: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            left: false,
            stats: Stats::default(),
        };
        let meta = d.node_meta(META_MAX_SIZE);
        let alive = ml.local_alive(meta);
        ml.alive_node(alive, Source::Own, now, d);
        Ok(ml)
    }

    // ----- accessors -----

    /// The configuration we run with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Our node name.
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

    /// A node we know, by name, in any state.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.state_of(name).map(|s| &s.node)
    }

    /// A node's incarnation number, if we know it.
    pub fn incarnation_of(&self, name: &str) -> Option<u32> {
        self.state_of(name).map(|s| s.incarnation)
    }

    // `new` puts us in the table and nothing removes us: `reset_nodes` keeps live nodes, and we
    // are never dead or left to ourselves before `leave` (after which we are not reaped either).
    /// Our own entry in the table.
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

    /// Counters of what we have done and refused.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether [`leave`](Self::leave) was called: we no longer take alives about ourselves.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// The encryption keys, if encryption is on.
    pub fn keyring(&self) -> Option<&wire::Keyring> {
        self.config.keyring.as_ref()
    }

    /// The keyring, for key rotation by the layer above.
    pub fn keyring_mut(&mut self) -> Option<&mut wire::Keyring> {
        // An answer kept for reuse may be sealed with a key about to go.
        self.push_pull.forget_reply(None);
        self.config.keyring.as_mut()
    }

    /// When the next gossip round is due, whether or not anything is queued: the layer above
    /// asks for it while its own queues (which gossip drains through
    /// [`Delegate::broadcasts`]) hold something, since [`poll_timeout`](Self::poll_timeout)
    /// only counts memberlist's own.
    pub fn next_gossip(&self) -> Option<Instant> {
        self.gossip.next_round()
    }

    /// Messages waiting in memberlist's own broadcast queue.
    pub fn queued_broadcasts(&self) -> usize {
        self.gossip.queued()
    }

    // ----- commands -----

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
        let direct = wire::encode_message(&Message::Dead(dead.clone()));
        self.dead_node(dead, Some(LEAVE_NOTIFY), now, d);
        // Besides the gossip: see `Config::direct_fanout`.
        self.send_to_some(&direct);
    }

    /// Whether our leave message is still waiting to be gossiped to a live peer.
    pub fn leave_pending(&self) -> bool {
        self.any_other_alive() && self.gossip.is_pending(LEAVE_NOTIFY)
    }

    /// Re-reads our metadata from the delegate and announces it with a new incarnation.
    pub fn update_meta(&mut self, now: Instant, d: &mut impl Delegate) {
        let meta = d.node_meta(META_MAX_SIZE);
        let alive = self.local_alive(meta);
        self.alive_node(alive, Source::Own, now, d);
    }

    /// Sends a delegate message (`08` + `msg`) straight to up to
    /// [`direct_fanout`](Config::direct_fanout) random alive members, besides any gossip the
    /// caller queues: Serf's own news (user events, queries, its leave intent) then reaches
    /// every member of a small cluster even when gossip misses one.
    pub fn send_user_to_some(&mut self, msg: &[u8]) {
        let mut buf = Vec::with_capacity(msg.len().saturating_add(1));
        buf.push(wire::MessageType::User as u8);
        buf.extend_from_slice(msg);
        self.send_to_some(&buf);
    }

    /// Sends one encoded message to up to `direct_fanout` random alive members (not us), alone
    /// and without a CRC, as Go's `SendTo` sends. A true sample, not `k_random_nodes`' bounded
    /// tries (which miss each member about one time in twenty when asked for all of them): in
    /// a cluster no larger than the fanout, every member hears.
    fn send_to_some(&mut self, msg: &[u8]) {
        let alive: Vec<SocketAddr> = (self.nodes.iter())
            .filter(|n| n.node.state == NodeStateKind::Alive && n.node.name != self.config.name)
            .map(|n| n.node.socket_addr())
            .collect();
        let targets: Vec<SocketAddr> = (alive
            .choose_multiple(&mut self.rng, self.config.direct_fanout))
        .copied()
        .collect();
        for to in targets {
            self.send_packet(to, &[msg.to_vec()], false);
        }
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
        let start = self.rng.gen_range(0..self.nodes.len());
        self.probes.start_at(start);
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
                if packet.malformed > 0 {
                    metrics::counter!("vassal.drops", "reason" => "malformed message")
                        .increment(packet.malformed as u64);
                }
                for msg in packet.messages {
                    self.handle_message(from, msg, now, d);
                }
            }
            Err(e) => {
                self.stats.malformed_packets = self.stats.malformed_packets.saturating_add(1);
                metrics::counter!("vassal.drops", "reason" => "malformed packet").increment(1);
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
                let bytes = self.push_pull_reply(remote.join, now, d);
                if let Err(error) = self.merge_remote(&remote, Relay::Yes, now, d) {
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
            PendingStream::PushPull {
                peer,
                join,
                relay,
                started,
                ..
            } => {
                // Go's `pushPullNode` timer: the whole exchange, merge included.
                crate::telemetry::measure_since("memberlist.pushPullNode", started, now);
                self.push_pull_finished(peer, join, relay, reply, now, d)
            }
            PendingStream::Ping { seq, .. } => self.tcp_ping_finished(seq, reply),
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

        self.probe_if_due(now, d);
        self.gossip_if_due(now, d);
        self.push_pull_if_due(now, d);
        self.push_pull.forget_reply(Some(now));
    }

    // ----- outputs -----

    /// The next packet to send or stream to open, oldest first; drain after every input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next [`Event`], oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.probes.next_deadline();
        let mut take = |x: Instant| t = t.min(x);
        self.gossip.next_deadline().map(&mut take);
        self.push_pull.next_deadline().map(&mut take);
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
                // Port 0 stands for the port we bind: protocol 1 carried no port, and Go
                // (`handleAlive`) fills it in the same way.
                if a.port == 0 {
                    a.port = self.config.bind_port;
                }
                self.alive_node(a, Source::Peer(Relay::Yes), now, d)
            }
            Message::Dead(dead) => self.dead_node(dead, None, now, d),
            Message::User(buf) => d.notify_message(&buf, now),
            Message::Err(e) => debug!(%from, error = %e.error, "error message from peer"),
        }
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
            // LZW is the costliest step of sending (a quarter of a starved agent's CPU in a
            // join storm of a thousand): while starved we send plain, which every Serf reads.
            compress: self.config.enable_compression && !self.starved(),
            crc,
        }
    }

    /// Whether we are starved of CPU: one of our last few probe rounds started late (see
    /// `ProbeState::starved_rounds`). We then gossip to one node a round, send uncompressed
    /// and skip catch-up exchanges, so that agents sharing too few cores shed load together.
    fn starved(&self) -> bool {
        self.probes.starved_rounds > 0
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

/// The next tick of a periodic timer; missed ticks are skipped, as with Go's tickers.
fn advance(at: Instant, interval: Duration, now: Instant) -> Instant {
    let next = later(at, interval);
    if next <= now {
        later(now, interval)
    } else {
        next
    }
}
