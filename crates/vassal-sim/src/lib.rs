//! A deterministic simulator: hundreds to thousands of real [`Serf`] state machines in one
//! process, over a virtual network with seeded latency, loss, partitions, pauses and crashes.
//!
//! Nothing here reads the clock or the OS RNG: virtual time is `epoch + elapsed`, every random
//! choice comes from the seed, so the same seed gives the same trace, byte for byte. Invariants
//! are checked as the simulation runs; a violation panics with the seed that replays it.

pub mod hostile;
mod invariants;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vassal_memberlist::{self as ml, NodeStateKind, StreamId, Transmit};
use vassal_serf::snapshot::{self, SnapshotConfig, SnapshotWrite};
use vassal_serf::{Config, Event, MemberEventKind, Outcome, Serf};

pub use invariants::{Invariants, Violation};

/// The virtual network.
#[derive(Debug, Clone)]
pub struct Network {
    /// One-way latency is uniform in `[min, max]`.
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Probability that a UDP packet is lost (TCP streams are reliable but slow).
    pub loss: f64,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_min: Duration::from_micros(200),
            latency_max: Duration::from_millis(2),
            loss: 0.0,
        }
    }
}

/// What the simulator saw happen, in order; its hash is the run's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceEntry {
    pub at: Duration,
    pub node: usize,
    pub what: String,
}

#[derive(Debug)]
struct SimNode {
    name: String,
    addr: SocketAddr,
    serf: Serf,
    up: bool,
    paused_until: Option<Duration>,
    /// `(when, event)` for every Serf event this node produced, if recording is on.
    events: Vec<(Duration, Event)>,
    /// `(when, outcome)` for every command outcome and notice, if recording is on.
    outcomes: Vec<(Duration, Outcome)>,
    /// The node's snapshot file (spec §5.3), kept across restarts, if it has one.
    snapshot: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    Wake {
        node: usize,
    },
    Packet {
        from: SocketAddr,
        to: usize,
        bytes: Vec<u8>,
    },
    StreamRequest {
        origin: usize,
        id: u64,
        to: usize,
        bytes: Vec<u8>,
    },
    StreamReply {
        origin: usize,
        id: u64,
        reply: Result<Vec<u8>, String>,
    },
}

/// A simulated cluster.
pub struct Sim {
    seed: u64,
    epoch: Instant,
    now: Duration,
    rng: ChaCha8Rng,
    pub network: Network,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(Duration, u64, Delivery)>>,
    /// The wake-up each node has scheduled (stale heap entries are skipped).
    wake_at: Vec<Option<Duration>>,
    /// When each node last handled its timers.
    woke_at: Vec<Option<Duration>>,
    seq: u64,
    /// Partition group per node; traffic flows only within a group.
    groups: Vec<u32>,
    trace_hash: std::collections::hash_map::DefaultHasher,
    trace: Option<Vec<TraceEntry>>,
    record_events: bool,
    /// Answer every query with `resp-from-<name>`, as a query handler would.
    auto_respond: bool,
    invariants: Option<Invariants>,
    steps: u64,
    /// The node the last step was for: the only one whose state it can have changed.
    last_node: Option<usize>,
    /// Addresses of nodes the simulator does not run (a test's hostile node): what the cluster
    /// sends them is captured for the test to read and answer, never dropped.
    outsiders: BTreeSet<SocketAddr>,
    captured: Vec<Captured>,
}

/// Something a simulated node sent to an outsider address ([`Sim::add_outsider`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Captured {
    /// A UDP packet, as sent (all layers on).
    Packet {
        from: usize,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A TCP exchange opened by node `from`: the request bytes. The outsider must answer with
    /// [`Sim::reply_to_stream`] (an error too), or the exchange never ends.
    Stream {
        from: usize,
        id: u64,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
}

/// How far a node's clock moves when it asks to be woken again at the instant it just woke.
const SPIN_STEP: Duration = Duration::from_micros(1);

/// What came back for one query, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResults {
    pub acks: Vec<String>,
    pub responses: Vec<(String, Vec<u8>)>,
    pub done: bool,
}

/// The virtual address of node `i` (never used for real traffic).
pub fn node_addr(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    let ip = Ipv4Addr::new(127, 1, (i >> 8) as u8, (i & 0xff) as u8);
    SocketAddr::new(IpAddr::V4(ip), 7946 + (i >> 16) as u16)
}

impl Sim {
    /// A cluster of `n` nodes named `n0`, `n1`, … built from `config(i)`, none joined yet.
    pub fn new(seed: u64, n: usize, config: impl Fn(usize) -> ml::Config) -> Self {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        Self::with_names(seed, &names, config)
    }

    /// A cluster with the given node names (duplicates allowed, for name-conflict scenarios).
    pub fn with_names(seed: u64, names: &[String], config: impl Fn(usize) -> ml::Config) -> Self {
        Self::with_serf_configs(seed, names, |i| Config::new(config(i)))
    }

    /// Like [`with_names`](Self::with_names), with each node's whole Serf config (queue depths,
    /// timeouts); its memberlist name, address, port and seed are set by the simulator.
    pub fn with_serf_configs(
        seed: u64,
        names: &[String],
        config: impl Fn(usize) -> Config,
    ) -> Self {
        let n = names.len();
        let epoch = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut nodes = Vec::with_capacity(n);
        let mut by_addr = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let addr = node_addr(i);
            let mut config = config(i);
            let c = &mut config.memberlist;
            c.name = name.clone();
            c.advertise = addr;
            c.bind_port = addr.port();
            c.seed = rng.gen();
            let serf = Serf::new(config, epoch).expect("simulated config is valid");
            by_addr.insert(addr, i);
            nodes.push(SimNode {
                name: name.clone(),
                addr,
                serf,
                up: true,
                paused_until: None,
                events: Vec::new(),
                outcomes: Vec::new(),
                snapshot: None,
            });
        }
        let mut sim = Sim {
            seed,
            epoch,
            now: Duration::ZERO,
            rng,
            network: Network::default(),
            nodes,
            by_addr,
            queue: BinaryHeap::new(),
            wake_at: vec![None; n],
            woke_at: vec![None; n],
            seq: 0,
            groups: vec![0; n],
            trace_hash: Default::default(),
            trace: None,
            record_events: false,
            auto_respond: false,
            invariants: None,
            steps: 0,
            last_node: None,
            outsiders: BTreeSet::new(),
            captured: Vec::new(),
        };
        for i in 0..n {
            sim.after(i);
        }
        sim
    }

    /// A cluster of `n` nodes that starts converged: every node already knows every other as
    /// alive, as after a completed push/pull with a node that knew everyone and once the gossip
    /// that followed had died down, without simulating the `n` joins. From then on every node
    /// runs the real protocol (timers, probes, gossip, push/pull).
    ///
    /// How: a twin of node 0 (same config and seed) merges one push/pull message holding every
    /// node's own entry (memberlist's real merge; Serf's part, the Lamport times of join intents,
    /// is empty because no node has sent one). Every node then adopts the twin's view
    /// ([`Serf::adopt_view`]), which shares one copy of the tables until a node changes an
    /// entry: 10,000 nodes fit in a few GB instead of ~100 GB. Differences from a cluster that
    /// really joined: no node raised `member-join` events, all nodes share one probe order
    /// (each starting at its own random place in it, where real nodes each shuffle their own),
    /// and everyone's join Lamport time is 0.
    pub fn new_converged(seed: u64, n: usize, config: impl Fn(usize) -> ml::Config) -> Self {
        let mut sim = Self::new(seed, n, config);
        let now = sim.instant();
        let mut twin = Serf::new(sim.nodes[0].serf.config().clone(), sim.epoch)
            .expect("node 0's config is valid");
        let nodes = sim
            .nodes
            .iter()
            .map(|n| {
                let ml = n.serf.memberlist();
                let me = ml.local_node();
                ml::wire::PushNodeState {
                    name: me.name.clone(),
                    addr: me.addr,
                    port: me.port,
                    meta: me.meta.clone(),
                    incarnation: ml.incarnation_of(&me.name).expect("a node knows itself"),
                    state: NodeStateKind::Alive,
                    vsn: me.vsn.to_vec(),
                }
            })
            .collect();
        let push_pull = ml::wire::StreamMessage::PushPull(ml::wire::PushPull {
            join: false,
            nodes,
            user_state: Vec::new(),
        });
        twin.handle_stream(node_addr(n), Ok(push_pull), now);
        for i in 0..n {
            if let Err(e) = sim.nodes[i].serf.adopt_view(&twin) {
                panic!("node {i} cannot start converged: {e}");
            }
            sim.after(i);
        }
        sim.log(0, format!("started converged ({n} nodes)"));
        sim
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn instant(&self) -> Instant {
        self.epoch + self.now
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn serf(&self, i: usize) -> &Serf {
        &self.nodes[i].serf
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].up
    }

    /// Steps processed so far (deliveries and wake-ups).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The node the last step (delivery or wake-up) was for, whose state it may have changed:
    /// lets a condition over all nodes be kept up to date in O(1) per step.
    pub fn last_node(&self) -> Option<usize> {
        self.last_node
    }

    /// Keep the full trace in memory (tests); the hash is always kept.
    pub fn record_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    pub fn trace(&self) -> &[TraceEntry] {
        self.trace.as_deref().unwrap_or_default()
    }

    /// A fingerprint of everything that happened so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash.finish()
    }

    /// Keep every node's Serf events with their times.
    pub fn record_events(&mut self) {
        self.record_events = true;
    }

    pub fn events(&self, i: usize) -> &[(Duration, Event)] {
        &self.nodes[i].events
    }

    /// Node `i`'s command outcomes and notices so far (see [`Sim::record_events`]).
    pub fn outcomes(&self, i: usize) -> &[(Duration, Outcome)] {
        &self.nodes[i].outcomes
    }

    /// Check the invariants after every step (costs O(n) per step).
    pub fn check_invariants(&mut self) {
        self.invariants = Some(Invariants::new(self.nodes.len()));
    }

    // ----- scenario commands -----

    /// Node `i` joins through node `j`, ignoring user events from before the join (Serf's
    /// default).
    pub fn join(&mut self, i: usize, j: usize) {
        self.join_with(i, j, false);
    }

    /// Node `i` joins through node `j`; with `replay`, old user events are delivered too.
    pub fn join_with(&mut self, i: usize, j: usize, replay: bool) {
        let now = self.instant();
        let addr = self.nodes[j].addr;
        self.nodes[i].serf.join(&[addr], !replay, now);
        self.after(i);
    }

    /// Node `i` sends a user event.
    pub fn user_event(&mut self, i: usize, name: &str, payload: &[u8]) {
        let now = self.instant();
        self.nodes[i]
            .serf
            .user_event(name, payload, false, now)
            .expect("event fits");
        self.after(i);
    }

    /// Every node answers every query it processes with `resp-from-<name>`.
    pub fn auto_respond(&mut self) {
        self.auto_respond = true;
    }

    /// Node `i` sends a query; returns its Lamport time, which names it in the events.
    pub fn query(&mut self, i: usize, name: &str, params: &vassal_serf::QueryParams) -> u64 {
        let now = self.instant();
        let ltime = self.nodes[i]
            .serf
            .query(name, b"", params, now)
            .expect("query fits");
        self.after(i);
        ltime
    }

    /// Who acked and who answered node `i`'s query `ltime`, and whether it finished.
    pub fn query_results(&self, i: usize, ltime: u64) -> QueryResults {
        let mut r = QueryResults::default();
        for (_, o) in &self.nodes[i].outcomes {
            match o {
                Outcome::QueryAck { ltime: l, from } if *l == ltime => r.acks.push(from.clone()),
                Outcome::QueryResponse {
                    ltime: l,
                    from,
                    payload,
                } if *l == ltime => r.responses.push((from.clone(), payload.clone())),
                Outcome::QueryDone { ltime: l } if *l == ltime => r.done = true,
                _ => {}
            }
        }
        r
    }

    /// How many times node `i` delivered user event `name` since recording began.
    pub fn user_events_named(&self, i: usize, name: &str) -> usize {
        self.nodes[i]
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::User(u) if u.name == name))
            .count()
    }

    /// Every node joins through node 0, staggered by `gap`.
    pub fn join_all(&mut self, gap: Duration) {
        for i in 1..self.nodes.len() {
            self.join(i, 0);
            let t = self.now + gap;
            self.run_until(t);
        }
    }

    /// Node `i` stops dead (kill -9): no more packets, timers or answers.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.log(i, "crash".into());
    }

    /// Gives node `i` a snapshot file, empty for now, that it records to and restores from on
    /// [`restart`](Self::restart). Call it before the node joins: it rebuilds the node.
    pub fn keep_snapshot(&mut self, i: usize) {
        self.nodes[i].snapshot = Some(Vec::new());
        self.restart(i);
    }

    /// Node `i` comes back as a new process (after [`crash`](Self::crash), or killed now):
    /// same name and address, a fresh seed, and its snapshot file replayed if it keeps one.
    /// It does not join anyone itself; a snapshot makes it rejoin the members recorded alive.
    pub fn restart(&mut self, i: usize) {
        let mut config = self.nodes[i].serf.config().clone();
        config.memberlist.seed = self.rng.gen();
        config.snapshot = None;
        if let Some(file) = &self.nodes[i].snapshot {
            let recovered = snapshot::replay(file, false);
            config.snapshot = Some(SnapshotConfig::new(recovered, file.len() as u64, false));
        }
        let now = self.instant();
        self.nodes[i].serf = Serf::new(config, now).expect("the node's config was valid");
        self.nodes[i].up = true;
        self.nodes[i].paused_until = None;
        self.wake_at[i] = None;
        if let Some(inv) = self.invariants.as_mut() {
            inv.forget_observer(i);
        }
        self.log(i, "restart".into());
        self.after(i);
    }

    /// What node `i`'s snapshot file holds now (`None` if it keeps none).
    pub fn snapshot_file(&self, i: usize) -> Option<&[u8]> {
        self.nodes[i].snapshot.as_deref()
    }

    /// Node `i` freezes for `d` (a GC or VM pause): input waits, timers wait.
    pub fn pause(&mut self, i: usize, d: Duration) {
        self.nodes[i].paused_until = Some(self.now + d);
        self.log(i, format!("pause {d:?}"));
    }

    /// Node `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) {
        let now = self.instant();
        self.nodes[i].serf.leave(now);
        self.after(i);
    }

    /// Node `i` force-leaves node `j` (`serf force-leave [-prune]`).
    pub fn force_leave(&mut self, i: usize, j: usize, prune: bool) {
        let now = self.instant();
        let name = self.nodes[j].serf.local_name().to_owned();
        self.nodes[i].serf.force_leave(&name, prune, now);
        self.after(i);
    }

    /// Node `i` changes its tags (a broadcast that every node must see as `member-update`).
    pub fn set_tags(&mut self, i: usize, tags: BTreeMap<String, String>) {
        let now = self.instant();
        self.nodes[i].serf.set_tags(tags, now).expect("tags fit");
        self.after(i);
    }

    /// Splits the cluster: traffic flows only between nodes of the same group.
    pub fn partition(&mut self, group_of: impl Fn(usize) -> u32) {
        self.groups = (0..self.nodes.len()).map(group_of).collect();
        self.log(0, "partition".into());
    }

    pub fn heal(&mut self) {
        self.groups.iter_mut().for_each(|g| *g = 0);
        self.log(0, "heal".into());
    }

    // ----- outsiders: nodes the simulator does not run -----

    /// Makes `addr` an outsider: packets and streams the cluster sends there are kept for
    /// [`take_captured`](Self::take_captured) instead of being dropped as unroutable.
    pub fn add_outsider(&mut self, addr: SocketAddr) {
        assert!(
            !self.by_addr.contains_key(&addr),
            "{addr} belongs to a simulated node"
        );
        self.outsiders.insert(addr);
    }

    /// What the cluster sent to outsiders since the last call, in order.
    pub fn take_captured(&mut self) -> Vec<Captured> {
        std::mem::take(&mut self.captured)
    }

    /// Whether anything sent to an outsider waits in [`take_captured`](Self::take_captured).
    pub fn has_captured(&self) -> bool {
        !self.captured.is_empty()
    }

    /// The simulated node at `addr`, if any.
    pub fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    /// The address of simulated node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// A UDP packet from `from` (any address, a simulated node's too: UDP source addresses are
    /// not authenticated) arrives at node `to` after the usual latency. Never lost.
    pub fn inject_packet(&mut self, from: SocketAddr, to: usize, bytes: Vec<u8>) {
        let at = self.now + self.latency();
        self.push(at, Delivery::Packet { from, to, bytes });
    }

    /// `from` opens a TCP exchange with node `to` and writes `bytes` (one stream message, as
    /// `encode_stream` writes it). Handled now; returns the node's reply, `None` if it closed the
    /// connection without one (or is down, or paused).
    pub fn inject_stream(&mut self, from: SocketAddr, to: usize, bytes: &[u8]) -> Option<Vec<u8>> {
        let paused = self.nodes[to].paused_until.is_some_and(|u| u > self.now);
        if !self.nodes[to].up || paused {
            return None;
        }
        self.steps += 1;
        self.last_node = Some(to);
        let now = self.instant();
        let serf = &mut self.nodes[to].serf;
        let msg = match serf.decode_stream(bytes) {
            Ok(Some((m, _))) => Ok(m),
            Ok(None) => Err(ml::wire::DecodeError::Truncated),
            Err(e) => Err(e),
        };
        let reply = serf.handle_stream(from, msg, now);
        self.after(to);
        self.check_after_step(to);
        reply
    }

    /// Answers a captured [`Captured::Stream`]: the reply (or the error, "connection refused"
    /// say) reaches node `origin` after the usual latency.
    pub fn reply_to_stream(&mut self, origin: usize, id: u64, reply: Result<Vec<u8>, String>) {
        let at = self.now + self.latency();
        self.push(at, Delivery::StreamReply { origin, id, reply });
    }

    /// Runs until virtual time `t`, or until a step sends something to an outsider: returns
    /// `true` then, with the time stopped at that step.
    pub fn run_until_captured(&mut self, t: Duration) -> bool {
        while !self.has_captured() {
            match self.queue.peek() {
                Some(Reverse((at, _, _))) if *at <= t => {}
                _ => break,
            }
            let Reverse((at, _, d)) = self.queue.pop().expect("peeked");
            self.now = self.now.max(at);
            self.deliver(d);
        }
        if self.has_captured() {
            return true;
        }
        self.now = self.now.max(t);
        false
    }

    // ----- running -----

    /// Runs until virtual time `t`.
    pub fn run_until(&mut self, t: Duration) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > t {
                break;
            }
            let Reverse((at, _, d)) = self.queue.pop().expect("peeked");
            self.now = self.now.max(at);
            self.deliver(d);
        }
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until `done` holds (checked after every step) or `limit` passes; returns the time it
    /// first held.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        self.run_until_cond_every(limit, Duration::ZERO, done)
    }

    /// Like [`run_until_cond`](Self::run_until_cond), but checks `done` at most once per `every`
    /// of virtual time: for conditions that cost O(n²), such as [`converged`](Self::converged).
    pub fn run_until_cond_every(
        &mut self,
        limit: Duration,
        every: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let end = self.now + limit;
        if done(self) {
            return Some(self.now);
        }
        let mut next_check = self.now + every;
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > end {
                break;
            }
            let Reverse((at, _, d)) = self.queue.pop().expect("peeked");
            self.now = self.now.max(at);
            self.deliver(d);
            if self.now >= next_check {
                next_check = self.now + every;
                if done(self) {
                    return Some(self.now);
                }
            }
        }
        self.now = self.now.max(end);
        done(self).then_some(self.now)
    }

    /// How node `i` sees node `j` in memberlist terms.
    pub fn view(&self, i: usize, j: usize) -> Option<NodeStateKind> {
        self.nodes[i]
            .serf
            .memberlist()
            .node(&self.nodes[j].name)
            .map(|n| n.state)
    }

    /// Whether every up node sees every other up node alive and every down node not alive.
    pub fn converged(&self) -> bool {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        up.iter().all(|&i| {
            (0..self.nodes.len()).all(|j| {
                let v = self.view(i, j);
                if self.nodes[j].up {
                    v == Some(NodeStateKind::Alive)
                } else {
                    v != Some(NodeStateKind::Alive)
                }
            })
        })
    }

    // ----- internals -----

    fn push(&mut self, at: Duration, d: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, d)));
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = (self.network.latency_min, self.network.latency_max);
        if hi <= lo {
            return lo;
        }
        Duration::from_nanos(
            self.rng
                .gen_range(lo.as_nanos() as u64..=hi.as_nanos() as u64),
        )
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.groups[a] == self.groups[b]
    }

    fn log(&mut self, node: usize, what: String) {
        let e = TraceEntry {
            at: self.now,
            node,
            what,
        };
        e.hash(&mut self.trace_hash);
        if let Some(t) = self.trace.as_mut() {
            t.push(e);
        }
    }

    /// While paused, anything for node `i` waits until the pause ends.
    fn deferred(&mut self, i: usize, d: &Delivery) -> bool {
        match self.nodes[i].paused_until {
            Some(until) if until > self.now => {
                self.push(until, d.clone());
                true
            }
            Some(_) => {
                self.nodes[i].paused_until = None;
                false
            }
            None => false,
        }
    }

    fn deliver(&mut self, d: Delivery) {
        self.steps += 1;
        let now = self.instant();
        let node = match &d {
            Delivery::Wake { node } => *node,
            Delivery::Packet { to, .. } | Delivery::StreamRequest { to, .. } => *to,
            Delivery::StreamReply { origin, .. } => *origin,
        };
        self.last_node = Some(node);
        match d {
            Delivery::Wake { node } => {
                if self.wake_at[node] != Some(self.now) || !self.nodes[node].up {
                    return;
                }
                if let Some(until) = self.nodes[node].paused_until.filter(|u| *u > self.now) {
                    self.wake_at[node] = Some(until);
                    self.push(until, d);
                    return;
                }
                self.wake_at[node] = None;
                self.woke_at[node] = Some(self.now);
                self.nodes[node].serf.handle_timeout(now);
                self.after(node);
            }
            Delivery::Packet {
                from,
                to,
                ref bytes,
            } => {
                if !self.nodes[to].up || self.deferred(to, &d) {
                    return;
                }
                self.nodes[to].serf.handle_packet(from, bytes, now);
                self.after(to);
            }
            Delivery::StreamRequest {
                origin,
                id,
                to,
                ref bytes,
            } => {
                if !self.nodes[to].up {
                    let at = self.now + self.latency();
                    let reply = Err("connection refused".to_string());
                    self.push(at, Delivery::StreamReply { origin, id, reply });
                    return;
                }
                if self.deferred(to, &d) {
                    return;
                }
                let from = self.nodes[origin].addr;
                let serf = &mut self.nodes[to].serf;
                let msg = match serf.decode_stream(bytes) {
                    Ok(Some((m, _))) => Ok(m),
                    Ok(None) => Err(ml::wire::DecodeError::Truncated),
                    Err(e) => Err(e),
                };
                let reply = serf.handle_stream(from, msg, now);
                self.after(to);
                let at = self.now + self.latency();
                let reply = reply.ok_or_else(|| "EOF".to_string());
                self.push(at, Delivery::StreamReply { origin, id, reply });
            }
            Delivery::StreamReply {
                origin,
                id,
                ref reply,
            } => {
                if !self.nodes[origin].up || self.deferred(origin, &d) {
                    return;
                }
                let serf = &mut self.nodes[origin].serf;
                let msg = match reply {
                    Ok(bytes) => match serf.decode_stream(bytes) {
                        Ok(Some((m, _))) => Ok(m),
                        Ok(None) => Err("truncated reply".to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.clone()),
                };
                serf.handle_stream_reply(StreamId(id), msg, now);
                self.after(origin);
            }
        }
        self.check_after_step(node);
    }

    fn check_after_step(&mut self, node: usize) {
        if let Some(inv) = self.invariants.as_mut() {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            if let Err(v) = inv.check(node, &self.nodes[node].serf, &names) {
                panic!(
                    "invariant violated at {:?} on {}: {v}\nreplay with SIM_SEED={}",
                    self.now, self.nodes[node].name, self.seed
                );
            }
        }
    }

    /// Drains node `i`'s output onto the network and schedules its next wake-up.
    fn after(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        while let Some(w) = node.serf.poll_snapshot_write() {
            let file = node.snapshot.get_or_insert_with(Vec::new);
            match w {
                SnapshotWrite::Append(lines) => file.extend_from_slice(lines.as_bytes()),
                SnapshotWrite::Sync => {}
                SnapshotWrite::Replace(contents) => *file = contents.into_bytes(),
            }
        }
        while let Some(t) = self.nodes[i].serf.poll_transmit() {
            match t {
                Transmit::Packet { to, bytes } => {
                    let Some(&j) = self.by_addr.get(&to) else {
                        if self.outsiders.contains(&to) {
                            self.captured.push(Captured::Packet { from: i, to, bytes });
                        }
                        continue;
                    };
                    if !self.reachable(i, j) || self.rng.gen_bool(self.network.loss.clamp(0.0, 1.0))
                    {
                        continue;
                    }
                    let from = self.nodes[i].addr;
                    let at = self.now + self.latency();
                    self.push(at, Delivery::Packet { from, to: j, bytes });
                }
                Transmit::Stream {
                    id,
                    to,
                    bytes,
                    deadline,
                } => {
                    if self.outsiders.contains(&to) {
                        self.captured.push(Captured::Stream {
                            from: i,
                            id: id.0,
                            to,
                            bytes,
                        });
                        continue;
                    }
                    let at = self.now + self.latency();
                    match self
                        .by_addr
                        .get(&to)
                        .copied()
                        .filter(|&j| self.reachable(i, j))
                    {
                        Some(j) => self.push(
                            at,
                            Delivery::StreamRequest {
                                origin: i,
                                id: id.0,
                                to: j,
                                bytes,
                            },
                        ),
                        None => {
                            // Unreachable: the connect times out at the deadline.
                            let at = deadline.saturating_duration_since(self.epoch);
                            let reply = Err("i/o timeout".to_string());
                            self.push(
                                at,
                                Delivery::StreamReply {
                                    origin: i,
                                    id: id.0,
                                    reply,
                                },
                            );
                        }
                    }
                }
            }
        }
        let mut answers = Vec::new();
        let mut stop = false;
        while let Some(e) = self.nodes[i].serf.poll_event() {
            if let (true, Event::Query(q)) = (self.auto_respond, &e) {
                answers.push((q.ltime, q.id));
            }
            let what = match &e {
                Event::Member(m) => {
                    let names: Vec<&str> = m.members.iter().map(|m| m.name.as_str()).collect();
                    format!("{} {}", m.kind, names.join(","))
                }
                other => format!("{other:?}"),
            };
            self.log(i, what);
            if self.record_events {
                self.nodes[i].events.push((self.now, e));
            }
        }
        while let Some(o) = self.nodes[i].serf.poll_outcome() {
            stop |= matches!(o, Outcome::Shutdown(_));
            self.log(i, format!("{o:?}"));
            if self.record_events {
                self.nodes[i].outcomes.push((self.now, o));
            }
        }
        if stop {
            // Serf asked to stop (lost a name-conflict vote): the agent exits.
            self.nodes[i].up = false;
            return;
        }
        if !answers.is_empty() {
            let now = self.instant();
            let payload = format!("resp-from-{}", self.nodes[i].name).into_bytes();
            for (ltime, id) in answers {
                let _ = self.nodes[i].serf.respond(ltime, id, &payload, now);
            }
            return self.after(i);
        }
        if let Some(t) = self.nodes[i].serf.poll_timeout() {
            let mut at = t.saturating_duration_since(self.epoch).max(self.now);
            if at == self.now && self.woke_at[i] == Some(self.now) {
                // It has just handled its timers at this instant and asks for it again (a
                // deadline kept while `now <= deadline`): a real driver's clock would have moved
                // on, where the simulation would spin at this instant forever.
                at = self.now + SPIN_STEP;
            }
            if self.wake_at[i].is_none_or(|w| at < w || w < self.now) {
                self.wake_at[i] = Some(at);
                self.push(at, Delivery::Wake { node: i });
            }
        }
    }

    /// When node `observer` first recorded `kind` about `subject` at or after `since`.
    pub fn first_event(
        &self,
        observer: usize,
        kind: MemberEventKind,
        subject: &str,
        since: Duration,
    ) -> Option<Duration> {
        self.nodes[observer]
            .events
            .iter()
            .find_map(|(at, e)| match e {
                Event::Member(m)
                    if *at >= since
                        && m.kind == kind
                        && m.members.iter().any(|m| m.name == subject) =>
                {
                    Some(*at)
                }
                _ => None,
            })
    }
}
