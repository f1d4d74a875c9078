//! The state-machine fuzz target (`fuzz/fuzz_targets/serf_cluster.rs`) and its corpus replay:
//! three honest Serf nodes and one [`Adversary`] on the simulated network. The fuzzer's bytes
//! become a seed and a list of [`Step`]s: well-formed but hostile messages from the adversary
//! (memberlist alive, suspect, dead and push/pull; Serf intents, user events, queries, query
//! responses and name-conflict votes; acks carrying any Vivaldi coordinate), interleaved with
//! time passing.
//!
//! Checked after every simulated step (the simulator's [`Invariants`](crate::Invariants)): no
//! panic; each node's incarnation and its member, event and query clocks only rise and never
//! reach the top (`u32::MAX`, `u64::MAX`); its coordinate stays finite. Checked after every
//! fuzz step: every honest node is still running (no forged vote made it quit), and once the
//! queues have had [`PRUNE_SETTLE`] without hostile input to be pruned, every Serf broadcast
//! queue is within `max_queue_depth`. At the end the adversary falls silent; within [`QUIET`]
//! plus [`HEAL`] of ordinary gossip every honest node must see every honest node alive
//! (memberlist and Serf) at its own address, and the honest nodes' clocks must be within the event window of each
//! other, and then a user event from each honest node must reach every honest node.
//!
//! Deterministic: the same bytes give the same run (no clock, no OS randomness).

use std::net::SocketAddr;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use vassal_memberlist::wire::{NodeStateKind, PushNodeState, PushPull, StreamMessage};
use vassal_memberlist::Config as MlConfig;
use vassal_serf::{Config, Event, MemberStatus, EVENT_BUFFER_SIZE};

use super::forge::{self, SerfState};
use super::{outside_addr, Adversary};
use crate::Sim;

/// Honest nodes in the fuzzed cluster.
pub const HONEST: usize = 3;
/// Each Serf broadcast queue's cap in the fuzzed cluster: small, so that a flood passes it.
pub const MAX_QUEUE_DEPTH: usize = 32;
/// Steps past this many are ignored (each exec stays in milliseconds).
pub const MAX_STEPS: usize = 64;
/// Simulated time the hostile phase may take in all; later waits are skipped.
pub const HOSTILE_TIME: Duration = Duration::from_secs(120);
/// The longest single wait.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Serf prunes its queues every second; after this long without hostile input (time for the
/// last flood to be re-gossiped and for two pruning rounds) every queue must be within its cap.
pub const PRUNE_SETTLE: Duration = Duration::from_millis(2500);
/// Ordinary gossip after the adversary falls silent before anything is checked.
pub const QUIET: Duration = Duration::from_secs(30);
/// After [`QUIET`], how long the honest nodes may take to see each other alive again and to
/// bring their Lamport clocks within the event window of each other (anti-entropy: a few
/// push/pull intervals). Until then a node that missed a jump sends events the others drop as
/// old; that passes, so only a jump that never heals counts.
pub const HEAL: Duration = Duration::from_secs(150);
/// Time given to the final events to reach everyone: in a cluster this small a broadcast is
/// sent only four times, some of them to the silent adversary, so an event can miss a node
/// and arrive with the next push/pull (every 30 s).
pub const FINAL_EVENTS: Duration = Duration::from_secs(60);
/// The adversary's node name.
pub const ADVERSARY: &str = "mallory";

/// What the fuzzer's bytes mean.
#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    /// Seeds the simulator (latencies, every node's random choices).
    pub seed: u8,
    pub steps: Vec<Step>,
}

/// Where a forged message goes: one honest node (index modulo [`HONEST`]) or all of them.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Target {
    Node(u8),
    All,
}

/// A node name in a forged message.
#[derive(Debug, Clone, Arbitrary)]
pub enum Name {
    /// `n0`…: an honest node (index modulo [`HONEST`]), often the very node receiving it.
    Honest(u8),
    /// The adversary's own name.
    Adversary,
    /// `ghost0`…`ghost7`: names no node has.
    Ghost(u8),
    /// Anything, cut to 64 bytes.
    Raw(String),
}

/// An incarnation: absolute, or relative to what the receiver knows of the subject.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Incarnation {
    Exact(u32),
    /// The receiver's view of the subject plus this (saturating).
    Known(i8),
    Max,
    /// `u32::MAX` minus this.
    NearMax(u8),
}

/// A Lamport time: absolute, or relative to the receiver's matching clock.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum LTime {
    Exact(u64),
    /// The receiver's clock plus this (saturating).
    Clock(i16),
    Max,
    /// `u64::MAX` minus this.
    NearMax(u8),
    Half,
}

/// A coordinate component, in seconds.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Float {
    Zero,
    Millis(i16),
    Huge,
    NegHuge,
    Nan,
    Inf,
    NegInf,
    MaxFinite,
    Raw(f64),
}

/// A query timeout.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Timeout {
    Zero,
    Secs(u16),
    Max,
    Nanos(u64),
}

/// An address in a forged message.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum AddrSel {
    /// The adversary's.
    Own,
    /// An honest node's (index modulo [`HONEST`]).
    Honest(u8),
    /// Somewhere no node is.
    Outside(u8, u16),
}

/// A payload of `16 × n` bytes.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct Size(pub u8);

/// A query's filter.
#[derive(Debug, Clone, Arbitrary)]
pub enum FilterSel {
    None,
    Nodes(Vec<Name>),
    Tag { tag: String, expr: String },
    Raw(Vec<u8>),
}

/// One entry of a forged memberlist push/pull.
#[derive(Debug, Clone, Arbitrary)]
pub struct PushEntry {
    pub name: Name,
    pub at: AddrSel,
    pub incarnation: Incarnation,
    /// Alive, suspect, dead, left (modulo 4).
    pub state: u8,
}

/// The Serf part of a forged push/pull.
#[derive(Debug, Clone, Arbitrary)]
pub struct StateSel {
    pub ltime: LTime,
    pub event_ltime: LTime,
    pub query_ltime: LTime,
    pub status_ltimes: Vec<(Name, LTime)>,
    pub left_members: Vec<Name>,
    pub events: Vec<(LTime, Name, Size)>,
}

/// What a flood sends, many at once with fresh Lamport times and names.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum FloodKind {
    UserEvents,
    Queries,
    JoinIntents,
    LeaveIntents,
}

/// One thing the adversary does.
#[derive(Debug, Clone, Arbitrary)]
pub enum Step {
    /// Time passes (at most [`MAX_WAIT`]); the adversary answers probes meanwhile.
    Wait {
        millis: u16,
    },
    Alive {
        to: Target,
        node: Name,
        incarnation: Incarnation,
        at: AddrSel,
        tag: Option<(String, String)>,
    },
    Suspect {
        to: Target,
        node: Name,
        incarnation: Incarnation,
        from: Name,
    },
    Dead {
        to: Target,
        node: Name,
        incarnation: Incarnation,
        from: Name,
    },
    UserEvent {
        to: Target,
        ltime: LTime,
        name: Name,
        payload: Size,
        cc: bool,
    },
    Query {
        to: Target,
        ltime: LTime,
        id: u32,
        name: Name,
        timeout: Timeout,
        filter: FilterSel,
        ack: bool,
        no_broadcast: bool,
        relay_factor: u8,
        payload: Size,
        reply_to: AddrSel,
    },
    /// A response to a query the adversary saw gossiped (`seen` picks it), or, with none seen
    /// or `blind`, to node `seen` modulo [`HONEST`] at `ltime` with `id`.
    QueryResponse {
        seen: u8,
        blind: bool,
        ltime: LTime,
        id: u32,
        from: Name,
        ack: bool,
        payload: Size,
    },
    /// Answers the last `_serf_conflict` query it saw with `voters` forged votes that the name
    /// belongs at `claim`, each from another name (ghosts, or honest names).
    ForgeVotes {
        voters: u8,
        honest_names: bool,
        claim: AddrSel,
    },
    JoinIntent {
        to: Target,
        node: Name,
        ltime: LTime,
    },
    LeaveIntent {
        to: Target,
        node: Name,
        ltime: LTime,
        prune: bool,
    },
    /// The coordinate the adversary puts in its acks from now on.
    Coordinate {
        vec: [Float; 8],
        error: Float,
        adjustment: Float,
        height: Float,
    },
    AnswerPings(bool),
    /// A push/pull to `to`; its Serf state is also what the adversary answers push/pulls with.
    PushPull {
        to: Target,
        join: bool,
        nodes: Vec<PushEntry>,
        state: Option<StateSel>,
    },
    Flood {
        to: Target,
        count: u8,
        kind: FloodKind,
    },
}

/// Runs the harness on raw fuzzer bytes (read as [`parse`] reads them); panics on a violated
/// property.
pub fn run_bytes(data: &[u8]) {
    if let Some(input) = parse(data) {
        run(&input);
    }
}

/// What fuzzer bytes mean, as the fuzz target reads them (`fuzz_target!(|input: Input| …)`
/// reads them with `arbitrary_take_rest`); `None` if they mean nothing. Steps past
/// [`MAX_STEPS`] are ignored by [`run`].
pub fn parse(data: &[u8]) -> Option<Input> {
    Input::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// What a finished run saw (for tests and figures).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub steps: usize,
    pub forged: u64,
    pub simulated: Duration,
}

/// Runs one input: set-up, the steps, the quiet phase and the final checks. Panics with a
/// description of the first violated property.
pub fn run(input: &Input) -> Outcome {
    let mut h = Harness::new(input.seed as u64);
    let mut steps = 0;
    for step in input.steps.iter().take(MAX_STEPS) {
        h.step(step);
        h.check();
        steps += 1;
    }
    h.finish();
    Outcome {
        steps,
        forged: h.adv.forged,
        simulated: h.sim.now(),
    }
}

struct Harness {
    sim: Sim,
    adv: Adversary,
    /// When the hostile phase began.
    start: Duration,
    /// When the adversary last sent something.
    last_hostile: Duration,
}

impl Harness {
    fn new(seed: u64) -> Self {
        let names: Vec<String> = (0..HONEST).map(|i| format!("n{i}")).collect();
        let mut sim = Sim::with_serf_configs(seed, &names, |_| {
            let mut c = Config::new(MlConfig::lan("n"));
            c.max_queue_depth = MAX_QUEUE_DEPTH;
            c
        });
        sim.check_invariants();
        sim.record_events();
        let mut adv = Adversary::new(&mut sim, ADVERSARY, outside_addr(66, 7946));
        for i in 1..HONEST {
            sim.join(i, 0);
        }
        adv.run_for(&mut sim, Duration::from_secs(2));
        adv.join(&mut sim, 0);
        adv.run_for(&mut sim, Duration::from_secs(3));
        for i in 0..HONEST {
            let alive = sim.serf(i).memberlist().num_alive();
            assert_eq!(
                alive,
                HONEST + 1,
                "set-up: n{i} sees {alive} alive, not all {} (seed {seed})",
                HONEST + 1
            );
        }
        let start = sim.now();
        Harness {
            sim,
            adv,
            start,
            last_hostile: start,
        }
    }

    fn targets(&self, t: Target) -> Vec<usize> {
        match t {
            Target::Node(i) => vec![i as usize % HONEST],
            Target::All => (0..HONEST).collect(),
        }
    }

    fn name(&self, n: &Name) -> String {
        match n {
            Name::Honest(i) => format!("n{}", *i as usize % HONEST),
            Name::Adversary => self.adv.name.clone(),
            Name::Ghost(i) => format!("ghost{}", i % 8),
            Name::Raw(s) => cut(s, 64),
        }
    }

    fn addr(&self, a: AddrSel) -> SocketAddr {
        match a {
            AddrSel::Own => self.adv.addr,
            AddrSel::Honest(i) => self.sim.addr(i as usize % HONEST),
            AddrSel::Outside(o, port) => outside_addr(o, port),
        }
    }

    fn incarnation(&self, to: usize, subject: &str, i: Incarnation) -> u32 {
        let known = || {
            self.sim
                .serf(to)
                .memberlist()
                .incarnation_of(subject)
                .unwrap_or(0)
        };
        match i {
            Incarnation::Exact(v) => v,
            Incarnation::Known(d) => known().saturating_add_signed(d as i32),
            Incarnation::Max => u32::MAX,
            Incarnation::NearMax(d) => u32::MAX - d as u32,
        }
    }

    fn send(&mut self, to: usize, msgs: &[Vec<u8>]) {
        self.adv.send(&mut self.sim, to, msgs);
        self.last_hostile = self.sim.now();
    }

    fn send_serf(&mut self, to: usize, msg: Vec<u8>) {
        self.adv.send_serf(&mut self.sim, to, msg);
        self.last_hostile = self.sim.now();
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Wait { millis } => {
                let spent = self.sim.now() - self.start;
                let d = Duration::from_millis(*millis as u64)
                    .min(MAX_WAIT)
                    .min(HOSTILE_TIME.saturating_sub(spent));
                self.wait(d);
            }
            Step::Alive {
                to,
                node,
                incarnation,
                at,
                tag,
            } => {
                let node = self.name(node);
                let at = self.addr(*at);
                let meta = match tag {
                    None => forge::empty_tags(),
                    Some((k, v)) => {
                        let tags = [(k.clone(), v.clone())].into_iter().collect();
                        vassal_serf::tags::encode(&tags).unwrap_or_else(|_| forge::empty_tags())
                    }
                };
                for t in self.targets(*to) {
                    let inc = self.incarnation(t, &node, *incarnation);
                    let msg = forge::alive(&node, inc, at, meta.clone(), self.adv.vsn);
                    self.send(t, &[msg]);
                }
            }
            Step::Suspect {
                to,
                node,
                incarnation,
                from,
            } => {
                let (node, from) = (self.name(node), self.name(from));
                for t in self.targets(*to) {
                    let inc = self.incarnation(t, &node, *incarnation);
                    self.send(t, &[forge::suspect(&node, inc, &from)]);
                }
            }
            Step::Dead {
                to,
                node,
                incarnation,
                from,
            } => {
                let (node, from) = (self.name(node), self.name(from));
                for t in self.targets(*to) {
                    let inc = self.incarnation(t, &node, *incarnation);
                    self.send(t, &[forge::dead(&node, inc, &from)]);
                }
            }
            Step::UserEvent {
                to,
                ltime,
                name,
                payload,
                cc,
            } => {
                let name = self.name(name);
                for t in self.targets(*to) {
                    let lt = resolve(*ltime, self.sim.serf(t).event_clock());
                    let msg = forge::user_event(lt, &name, &payload_of(*payload), *cc);
                    self.send_serf(t, msg);
                }
            }
            Step::Query {
                to,
                ltime,
                id,
                name,
                timeout,
                filter,
                ack,
                no_broadcast,
                relay_factor,
                payload,
                reply_to,
            } => {
                let filters = match filter {
                    FilterSel::None => Vec::new(),
                    FilterSel::Nodes(names) => {
                        let names: Vec<String> =
                            names.iter().take(8).map(|n| self.name(n)).collect();
                        vec![forge::node_filter(&names)]
                    }
                    FilterSel::Tag { tag, expr } => {
                        vec![forge::tag_filter(&cut(tag, 64), &cut(expr, 64))]
                    }
                    FilterSel::Raw(b) => vec![b.iter().copied().take(64).collect()],
                };
                let mut q = forge::Query {
                    ltime: 0,
                    id: *id,
                    reply_to: self.addr(*reply_to),
                    source_node: self.adv.name.clone(),
                    filters,
                    flags: (if *ack { forge::QUERY_FLAG_ACK } else { 0 })
                        | (if *no_broadcast {
                            forge::QUERY_FLAG_NO_BROADCAST
                        } else {
                            0
                        }),
                    relay_factor: *relay_factor,
                    timeout: match timeout {
                        Timeout::Zero => 0,
                        Timeout::Secs(s) => *s as u64 * 1_000_000_000,
                        Timeout::Max => u64::MAX,
                        Timeout::Nanos(n) => *n,
                    },
                    name: self.name(name),
                    payload: payload_of(*payload),
                };
                for t in self.targets(*to) {
                    q.ltime = resolve(*ltime, self.sim.serf(t).query_clock());
                    self.send_serf(t, forge::query(&q));
                }
            }
            Step::QueryResponse {
                seen,
                blind,
                ltime,
                id,
                from,
                ack,
                payload,
            } => {
                let from = self.name(from);
                let flags = if *ack { forge::QUERY_FLAG_ACK } else { 0 };
                let queries = self.adv.seen_queries();
                let (to, lt, id) = match queries.get(*seen as usize % queries.len().max(1)) {
                    Some(q) if !blind => match self.sim.node_at(q.reply_to) {
                        Some(to) => (to, q.ltime, q.id),
                        None => return,
                    },
                    _ => {
                        let to = *seen as usize % HONEST;
                        (to, resolve(*ltime, self.sim.serf(to).query_clock()), *id)
                    }
                };
                let msg = forge::query_response(lt, id, &from, flags, &payload_of(*payload));
                self.send_serf(to, msg);
            }
            Step::ForgeVotes {
                voters,
                honest_names,
                claim,
            } => {
                let Some(q) = self
                    .adv
                    .seen_queries()
                    .iter()
                    .rev()
                    .find(|q| q.name == "_serf_conflict")
                    .cloned()
                else {
                    return;
                };
                let Some(to) = self.sim.node_at(q.reply_to) else {
                    return;
                };
                let claim = self.addr(*claim);
                let name = String::from_utf8_lossy(&q.payload).into_owned();
                let body = forge::conflict_response(&name, claim, self.adv.vsn);
                let msgs: Vec<Vec<u8>> = (0..(*voters as usize % 16) + 1)
                    .map(|k| {
                        let from = if *honest_names {
                            format!("n{}", k % HONEST)
                        } else {
                            format!("voter{k}")
                        };
                        let r = forge::query_response(q.ltime, q.id, &from, 0, &body);
                        user(r)
                    })
                    .collect();
                self.send(to, &msgs);
            }
            Step::JoinIntent { to, node, ltime } => {
                let node = self.name(node);
                for t in self.targets(*to) {
                    let lt = resolve(*ltime, self.sim.serf(t).member_clock());
                    self.send_serf(t, forge::join_intent(lt, &node));
                }
            }
            Step::LeaveIntent {
                to,
                node,
                ltime,
                prune,
            } => {
                let node = self.name(node);
                for t in self.targets(*to) {
                    let lt = resolve(*ltime, self.sim.serf(t).member_clock());
                    self.send_serf(t, forge::leave_intent(lt, &node, *prune));
                }
            }
            Step::Coordinate {
                vec,
                error,
                adjustment,
                height,
            } => {
                let vec: Vec<f64> = vec.iter().map(|f| float(*f)).collect();
                self.adv.ack_payload = Some(forge::coordinate_payload(
                    &vec,
                    float(*error),
                    float(*adjustment),
                    float(*height),
                ));
            }
            Step::AnswerPings(on) => self.adv.answer_pings = *on,
            Step::PushPull {
                to,
                join,
                nodes,
                state,
            } => {
                for t in self.targets(*to) {
                    let mut entries = vec![self.adv.own_entry()];
                    for e in nodes.iter().take(8) {
                        let name = self.name(&e.name);
                        let at = self.addr(e.at);
                        entries.push(PushNodeState {
                            incarnation: self.incarnation(t, &name, e.incarnation),
                            name,
                            addr: at.ip(),
                            port: at.port(),
                            meta: forge::empty_tags(),
                            state: [
                                NodeStateKind::Alive,
                                NodeStateKind::Suspect,
                                NodeStateKind::Dead,
                                NodeStateKind::Left,
                            ][e.state as usize % 4],
                            vsn: self.adv.vsn.to_vec(),
                        });
                    }
                    if let Some(s) = state {
                        self.adv.push_pull_state = forge::serf_push_pull(&self.serf_state(t, s));
                    }
                    let pp = StreamMessage::PushPull(PushPull {
                        join: *join,
                        nodes: entries,
                        user_state: self.adv.push_pull_state.clone(),
                    });
                    self.adv.open_stream(&mut self.sim, t, &pp);
                    self.last_hostile = self.sim.now();
                }
            }
            Step::Flood { to, count, kind } => {
                for t in self.targets(*to) {
                    let serf = self.sim.serf(t);
                    let (member, event, query) =
                        (serf.member_clock(), serf.event_clock(), serf.query_clock());
                    let msgs: Vec<Vec<u8>> = (0..*count as u64)
                        .map(|k| {
                            let name = format!("flood{k}");
                            user(match kind {
                                FloodKind::UserEvents => {
                                    forge::user_event(event + 1 + k, &name, b"", false)
                                }
                                FloodKind::Queries => forge::query(&forge::Query {
                                    ltime: query + 1 + k,
                                    id: k as u32,
                                    reply_to: self.adv.addr,
                                    source_node: self.adv.name.clone(),
                                    filters: Vec::new(),
                                    flags: 0,
                                    relay_factor: 0,
                                    timeout: 5_000_000_000,
                                    name,
                                    payload: Vec::new(),
                                }),
                                FloodKind::JoinIntents => forge::join_intent(member + 1 + k, &name),
                                FloodKind::LeaveIntents => {
                                    forge::leave_intent(member + 1 + k, &name, false)
                                }
                            })
                        })
                        .collect();
                    for chunk in msgs.chunks(32) {
                        self.send(t, chunk);
                    }
                }
            }
        }
    }

    fn serf_state(&self, to: usize, s: &StateSel) -> SerfState {
        let serf = self.sim.serf(to);
        SerfState {
            ltime: resolve(s.ltime, serf.member_clock()),
            status_ltimes: s
                .status_ltimes
                .iter()
                .take(8)
                .map(|(n, t)| (self.name(n), resolve(*t, serf.member_clock())))
                .collect(),
            left_members: s
                .left_members
                .iter()
                .take(4)
                .map(|n| self.name(n))
                .collect(),
            event_ltime: resolve(s.event_ltime, serf.event_clock()),
            events: s
                .events
                .iter()
                .take(8)
                .map(|(t, n, p)| {
                    let lt = resolve(*t, serf.event_clock());
                    (lt, vec![(self.name(n), payload_of(*p))])
                })
                .collect(),
            query_ltime: resolve(s.query_ltime, serf.query_clock()),
        }
    }

    /// Lets `d` pass in slices, checking the queue bounds between them.
    fn wait(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            let slice = (end - self.sim.now()).min(Duration::from_millis(500));
            self.adv.run_for(&mut self.sim, slice);
            self.check();
        }
    }

    /// Every honest node runs; queues are within their cap once they have had time to be pruned.
    fn check(&self) {
        for i in 0..HONEST {
            if !self.sim.is_up(i) {
                let why = self.sim.outcomes(i).iter().find_map(|(_, o)| match o {
                    vassal_serf::Outcome::Shutdown(why) => Some(why.as_str()),
                    _ => None,
                });
                panic!(
                    "honest n{i} stopped at {:?}: {}",
                    self.sim.now(),
                    why.unwrap_or("(no reason given)")
                );
            }
        }
        if self.sim.now() < self.last_hostile + PRUNE_SETTLE {
            return;
        }
        for i in 0..HONEST {
            let serf = self.sim.serf(i);
            let cap = serf.config().max_queue_depth;
            for (queue, len) in [
                ("intent", serf.intent_queue_len()),
                ("event", serf.event_queue_len()),
                ("query", serf.query_queue_len()),
            ] {
                assert!(
                    len <= cap,
                    "n{i}'s {queue} queue holds {len} > max_queue_depth {cap}, {:?} after the last hostile message",
                    self.sim.now() - self.last_hostile
                );
            }
        }
    }

    /// The adversary falls silent; ordinary gossip must heal everything it did.
    fn finish(&mut self) {
        self.adv.silence();
        self.wait(QUIET);
        let quiet_from = self.sim.now();
        if !self.wait_until(HEAL, |h| h.unhealed().is_none()) {
            panic!(
                "not healed {:?} after the attack stopped: {}",
                self.sim.now() - quiet_from + QUIET,
                self.unhealed().unwrap_or_default()
            );
        }
        let sent_at = self.sim.now();
        for i in 0..HONEST {
            self.sim.user_event(i, &format!("final-{i}"), b"");
        }
        let delivered = |h: &Self, i: usize, j: usize| {
            let event = format!("final-{j}");
            h.sim
                .events(i)
                .iter()
                .any(|(at, e)| *at >= sent_at && matches!(e, Event::User(u) if u.name == event))
        };
        let all = |h: &Self| (0..HONEST).all(|i| (0..HONEST).all(|j| delivered(h, i, j)));
        if !self.wait_until(FINAL_EVENTS, all) {
            let (i, j) = (0..HONEST)
                .flat_map(|i| (0..HONEST).map(move |j| (i, j)))
                .find(|&(i, j)| !delivered(self, i, j))
                .expect("some event is missing");
            panic!(
                "final-{j} from n{j}, sent once the cluster had healed, did not reach n{i} within {FINAL_EVENTS:?} (event clocks: n{i} {}, n{j} {})",
                self.sim.serf(i).event_clock(),
                self.sim.serf(j).event_clock()
            );
        }
    }

    /// Runs until `done` holds (checked every second) or `limit` passes; whether it held.
    fn wait_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let end = self.sim.now() + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.sim.now() >= end {
                return false;
            }
            self.wait(Duration::from_secs(1));
        }
    }

    /// What is still broken after the attack: an honest node not alive in another's view
    /// (memberlist or Serf) or listed at another address, or honest clocks too far apart.
    fn unhealed(&self) -> Option<String> {
        for i in 0..HONEST {
            for j in 0..HONEST {
                let name = self.sim.name(j);
                let view = self.sim.view(i, j);
                let status = self.sim.serf(i).member(name).map(|m| m.status);
                if view != Some(NodeStateKind::Alive) || status != Some(MemberStatus::Alive) {
                    return Some(format!(
                        "n{i} sees honest {name} as {view:?} (memberlist), {status:?} (Serf)"
                    ));
                }
                let at = self
                    .sim
                    .serf(i)
                    .memberlist()
                    .node(name)
                    .map(|n| n.socket_addr());
                if at != Some(self.sim.addr(j)) {
                    return Some(format!(
                        "n{i} has honest {name} at {at:?}, not at its address {}",
                        self.sim.addr(j)
                    ));
                }
            }
        }
        // Clocks need not be equal (a left member's status time creeps up with every push/pull),
        // only close enough that nobody's next event falls out of everybody's window.
        let clocks: Vec<[u64; 3]> = (0..HONEST)
            .map(|i| {
                let s = self.sim.serf(i);
                [s.member_clock(), s.event_clock(), s.query_clock()]
            })
            .collect();
        for (k, clock) in ["member", "event", "query"].into_iter().enumerate() {
            let values = clocks.iter().map(|c| c[k]);
            let (lo, hi) = (values.clone().min().unwrap_or(0), values.max().unwrap_or(0));
            if hi - lo > EVENT_BUFFER_SIZE as u64 {
                return Some(format!(
                    "honest {clock} clocks still {} apart (more than the {EVENT_BUFFER_SIZE}-event window): {:?}",
                    hi - lo,
                    clocks.iter().map(|c| c[k]).collect::<Vec<_>>()
                ));
            }
        }
        None
    }
}

/// A memberlist user message around a Serf message.
fn user(serf_msg: Vec<u8>) -> Vec<u8> {
    vassal_memberlist::wire::encode_message(&vassal_memberlist::wire::Message::User(serf_msg))
}

fn resolve(t: LTime, clock: u64) -> u64 {
    match t {
        LTime::Exact(v) => v,
        LTime::Clock(d) => clock.saturating_add_signed(d as i64),
        LTime::Max => u64::MAX,
        LTime::NearMax(d) => u64::MAX - d as u64,
        LTime::Half => u64::MAX / 2,
    }
}

fn float(f: Float) -> f64 {
    match f {
        Float::Zero => 0.0,
        Float::Millis(ms) => ms as f64 / 1000.0,
        Float::Huge => 1e300,
        Float::NegHuge => -1e300,
        Float::Nan => f64::NAN,
        Float::Inf => f64::INFINITY,
        Float::NegInf => f64::NEG_INFINITY,
        Float::MaxFinite => f64::MAX,
        Float::Raw(v) => v,
    }
}

fn payload_of(s: Size) -> Vec<u8> {
    (0..s.0 as usize * 16).map(|i| i as u8).collect()
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
