//! The Serf state machine: memberlist plus member status, intents, clocks and tags.
//!
//! [`Serf`] owns a [`Memberlist`] and a [`Core`]; the core is the memberlist [`Delegate`](vassal_memberlist::Delegate), lent
//! to each memberlist call, so the two never hold references to each other.
//!
//! The files follow Go Serf's, so a reader of one finds the other:
//!
//! | here                | Go Serf                          | what                                   |
//! |---------------------|----------------------------------|----------------------------------------|
//! | `mod.rs`            | `serf.go`, `config.go`           | [`Config`], [`Serf`], the public API   |
//! | `members.rs`        | `serf.go` (`handleNode*`, reap)  | member states, intents, reap, reconnect|
//! | `leave.rs`          | `serf.go` (`Leave`, `RemoveFailedNode`) | graceful leave, force-leave     |
//! | `event.rs`          | `event.go`, `serf.go` (`UserEvent`) | user events: dedup buffer         |
//! | `query.rs`          | `query.go`, `serf.go` (`Query`)  | queries sent and received, relays      |
//! | `internal_query.rs` | `internal_query.go`, `keymanager.go` | `_serf_ping`, `_serf_conflict`, keys |
//! | `delegate.rs`       | `delegate.go`, `event_delegate.go`, `ping_delegate.go` | `impl Delegate for Core` |
//!
//! [`Core`] holds one sub-state per file (as quinn-proto's `connection/` does): each file owns
//! its state and the rules that change it, as `impl Core` blocks next to the state.

mod delegate;
mod event;
mod internal_query;
mod leave;
mod members;
mod query;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tracing::{debug, error, warn};
use vassal_memberlist::limits::later;
use vassal_memberlist::wire::{DecodeError, StreamMessage};
use vassal_memberlist::{self as ml, Drops, JoinId, Memberlist, StreamId, Transmit};

use crate::clock::LamportClock;
use crate::coordinate::Coordinate;
use crate::member::{Member, MemberEvent};
use crate::snapshot::{self, SnapshotConfig, SnapshotWrite, Snapshotter};
use crate::tags;

pub use event::{UserEventError, EVENT_BUFFER_SIZE, USER_EVENT_SIZE_HARD_LIMIT};
pub use internal_query::{INTERNAL_QUERY_PREFIX, PING_QUERY};
pub use leave::ForceLeaveError;
pub use query::{Query, QueryError, QueryParams, RespondError};

use delegate::Coords;
use event::UserEventState;
use internal_query::InternalQueries;
use leave::{LeavePhase, LeaveState};
use members::{Members, Rejoins};
use query::Queries;

/// How often the broadcast queues' depths are sampled (`serf.queue.*`): Go's default
/// `QueueCheckInterval`.
pub const QUEUE_SAMPLE_INTERVAL: Duration = Duration::from_secs(30);

/// Serf settings (spec §4.14) around the memberlist ones (Go's `serf.Config`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The memberlist layer's settings; its `name` is the Serf node name.
    pub memberlist: ml::Config,
    /// Our tags, carried in memberlist's node metadata (spec §4.3).
    pub tags: BTreeMap<String, String>,
    /// Serf protocol version we speak (agent default 5).
    pub protocol_version: u8,
    /// How long a leave waits for each of its broadcasts to go out.
    pub broadcast_timeout: Duration,
    /// How long a leaving node lingers so peers hear of it before it stops answering.
    pub leave_propagate_delay: Duration,
    /// Intents about unknown nodes are kept this long.
    pub recent_intent_timeout: Duration,
    /// Cap on each broadcast queue (intents, events, queries): past it the most-sent messages
    /// are dropped, as Go's `MaxQueueDepth` prunes them.
    pub max_queue_depth: usize,
    /// When another node claims our name, ask the cluster and stop if it sides with the other.
    pub enable_name_conflict_resolution: bool,
    /// Neither compute nor send Vivaldi coordinates.
    pub disable_coordinates: bool,
    /// How often failed and left members are checked for reaping.
    pub reap_interval: Duration,
    /// How often to try reconnecting to a failed member.
    pub reconnect_interval: Duration,
    /// Failed members are forgotten (reaped) after this long.
    pub reconnect_timeout: Duration,
    /// Left members are forgotten (reaped) after this long.
    pub tombstone_timeout: Duration,
    /// Largest user event (name + payload, and encoded), at most [`USER_EVENT_SIZE_HARD_LIMIT`].
    pub user_event_size_limit: usize,
    /// Default query timeout = gossip interval × this × ceil(log10(n + 1)).
    pub query_timeout_mult: u32,
    /// Largest encoded query.
    pub query_size_limit: usize,
    /// Largest encoded query response.
    pub query_response_size_limit: usize,
    /// A failed member back alive within this long counts as a flap ([`SerfStats::member_flaps`]).
    pub flap_timeout: Duration,
    /// Restore clocks and previously alive members from a snapshot file and keep recording to
    /// it (spec §5.3); `None`: no snapshot.
    pub snapshot: Option<SnapshotConfig>,
}

impl Config {
    /// Serf defaults over a memberlist config; the protocol is the agent's default (5).
    pub fn new(memberlist: ml::Config) -> Self {
        Config {
            memberlist,
            tags: BTreeMap::new(),
            protocol_version: crate::PROTOCOL_DEFAULT,
            broadcast_timeout: Duration::from_secs(5),
            leave_propagate_delay: Duration::from_secs(1),
            recent_intent_timeout: Duration::from_secs(300),
            max_queue_depth: 4096,
            enable_name_conflict_resolution: true,
            disable_coordinates: false,
            reap_interval: Duration::from_secs(15),
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            user_event_size_limit: 512,
            query_timeout_mult: 16,
            query_size_limit: 1024,
            query_response_size_limit: 1024,
            flap_timeout: Duration::from_secs(60),
            snapshot: None,
        }
    }
}

/// Counters about the cluster as this node has seen it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SerfStats {
    /// Members that failed and came back alive within the flap timeout (Serf's
    /// `serf.member.flap` metric).
    pub member_flaps: u64,
    /// Serf messages refused as hostile or impossible, and queue entries pruned, by reason.
    pub drops: Drops,
}

/// What happened in the cluster, as Go Serf's `EventCh` carries it: member changes, user
/// events and queries to answer. What this node was asked to do reports back as an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member joined, left, failed, was updated or reaped.
    Member(MemberEvent),
    /// A user event, seen for the first time.
    User(crate::UserEvent),
    /// A query to answer with [`Serf::respond`] before its deadline (never `_serf_` ones).
    Query(Query),
}

impl Event {
    /// Serf's name for the event's type, as handlers get it in `SERF_EVENT` and streams in
    /// `Event`: `member-join` … `member-reap`, `user`, `query`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Member(m) => m.kind.as_str(),
            Event::User(_) => "user",
            Event::Query(_) => "query",
        }
    }

    /// The event as the log names it: `member-join`, `user:"deploy"`, `query:"load"`. Names
    /// come from the network; `{:?}` quoting keeps a newline in one from starting a fake log
    /// line.
    pub fn label(&self) -> String {
        match self {
            Event::Member(m) => m.kind.as_str().to_owned(),
            Event::User(u) => format!("user:{:?}", u.name),
            Event::Query(q) => format!("query:{:?}", q.name),
        }
    }
}

/// Progress and completion of commands given to this node ([`Serf::query`], [`Serf::join`],
/// [`Serf::leave`], [`Serf::force_leave`], [`Serf::key_query`]), and the two notices meant for
/// the node itself (its keyring changed; it must stop). Polled with [`Serf::poll_outcome`]; the
/// shell routes each to whoever gave the command, as Go returns a `QueryResponse` from
/// `Serf.Query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A node acknowledged one of our queries (identified by its Lamport time).
    QueryAck {
        /// The Lamport time [`Serf::query`] returned.
        ltime: u64,
        /// The acknowledging node.
        from: String,
    },
    /// A node answered one of our queries.
    QueryResponse {
        /// The Lamport time [`Serf::query`] returned.
        ltime: u64,
        /// The answering node.
        from: String,
        /// Its answer.
        payload: Vec<u8>,
    },
    /// One of our queries timed out; nothing more will arrive for it.
    QueryDone {
        /// The Lamport time [`Serf::query`] returned.
        ltime: u64,
    },
    /// A [`Serf::join`] finished.
    JoinFinished {
        /// What [`Serf::join`] returned.
        id: JoinId,
        /// How many nodes we exchanged state with.
        joined: usize,
        /// Why the other addresses failed.
        errors: Vec<String>,
    },
    /// A graceful [`Serf::leave`] is complete: the process may exit.
    LeaveComplete,
    /// A [`Serf::force_leave`] that had to be broadcast is done (or gave up waiting).
    ForceLeaveFinished {
        /// What [`Serf::force_leave`] returned.
        token: u64,
        /// Whether the broadcast went out in time.
        result: Result<(), ForceLeaveError>,
    },
    /// A key query changed our keyring; these are now the keys, primary first (the agent
    /// rewrites its keyring file).
    KeyringChanged(Vec<Vec<u8>>),
    /// We lost a name-conflict vote (spec §4.10): the agent should stop.
    Shutdown(String),
}

/// Everything Serf keeps besides memberlist; memberlist's delegate. Each file of this module
/// owns one sub-state; what is shared by all of them (our name and tags, the member clock,
/// the snapshot, the output queues) stays here.
#[derive(Debug)]
struct Core {
    name: String,
    config_tags: BTreeMap<String, String>,
    retransmit_mult: u32,
    /// The member (intent) clock; the event and query clocks live with their state.
    clock: LamportClock,
    /// Member states, intents and their broadcast queue (members.rs).
    members: Members,
    /// User events: clock, dedup buffer, broadcast queue (event.rs).
    user_events: UserEventState,
    /// Queries sent and received (query.rs).
    queries: Queries,
    /// Name conflict vote and key queries waiting for the keyring (internal_query.rs).
    internal: InternalQueries,
    /// Graceful leave and force-leaves (leave.rs).
    leave: LeaveState,
    /// Vivaldi coordinates (delegate.rs, Go's `ping_delegate.go`).
    coords: Coords,
    /// Records members, clocks and a leave for the snapshot file, when there is one.
    snapshot: Option<Snapshotter>,
    next_snapshot_clock: Option<Instant>,
    /// When to next sample the broadcast queues' depths (`serf.queue.*`); `None` until the
    /// first input. Not a timer: sampled by the first input at or after it.
    next_queue_sample: Option<Instant>,
    stats: SerfStats,
    /// What [`Serf::poll_event`] hands out.
    events: VecDeque<Event>,
    /// What [`Serf::poll_outcome`] hands out.
    outcomes: VecDeque<Outcome>,
    /// Direct packets (acks, answers, relays) for memberlist to send.
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    rng: ChaCha8Rng,
}

/// A Serf node: the pure state machine the agent drives.
#[derive(Debug)]
pub struct Serf {
    ml: Memberlist,
    core: Core,
    config: Config,
    /// Joins we start ourselves (reconnects, snapshot rejoin), which report nothing upward.
    rejoins: Rejoins,
}

impl Serf {
    /// A node that knows only itself (Go's `serf.Create`), or, with a snapshot, one that
    /// resumes its clocks and starts rejoining the members the snapshot recorded alive.
    pub fn new(config: Config, now: Instant) -> Result<Self, ml::ConfigError> {
        let mut ml_config = config.memberlist.clone();
        ml_config.delegate_protocol = [
            crate::PROTOCOL_MIN,
            crate::PROTOCOL_MAX,
            config.protocol_version,
        ];
        let mut core = Core {
            name: ml_config.name.clone(),
            config_tags: config.tags.clone(),
            retransmit_mult: ml_config.retransmit_mult,
            clock: LamportClock::new(),
            members: Members::new(&config, now),
            user_events: UserEventState::new(),
            queries: Queries::new(),
            internal: InternalQueries::new(config.enable_name_conflict_resolution),
            leave: LeaveState::new(),
            coords: Coords::new(!config.disable_coordinates),
            snapshot: config.snapshot.as_ref().map(Snapshotter::new),
            next_queue_sample: None,
            next_snapshot_clock: config
                .snapshot
                .as_ref()
                .map(|_| later(now, snapshot::CLOCK_UPDATE_INTERVAL)),
            stats: SerfStats::default(),
            events: VecDeque::new(),
            outcomes: VecDeque::new(),
            outbox: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(ml_config.seed ^ 0x5e4f_5e4f),
        };
        core.clock.increment();
        core.user_events.clock.increment();
        core.queries.clock.increment();
        let mut previous = Vec::new();
        if let Some(snap) = &config.snapshot {
            // Serf's Create: resume the clocks, and never deliver again the user events and
            // queries this node had already seen.
            let r = &snap.recovered;
            core.clock.witness(r.clock);
            core.user_events.clock.witness(r.event_clock);
            core.queries.clock.witness(r.query_clock);
            core.user_events.min_time = r.event_clock.saturating_add(1);
            core.queries.min_time = r.query_clock.saturating_add(1);
            let (nodes, warnings) = r.previous_nodes(&core.name);
            for w in warnings {
                warn!("{w}");
            }
            previous = nodes;
        }
        let ml = Memberlist::new(ml_config, now, &mut core)?;
        let mut serf = Serf {
            ml,
            core,
            config,
            rejoins: Rejoins::default(),
        };
        serf.start_rejoin(previous, now);
        Ok(serf)
    }

    // ----- accessors -----

    /// Our node name.
    pub fn local_name(&self) -> &str {
        &self.core.name
    }

    /// Every member, including failed and left ones until they are reaped.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.core.members.states.values().map(|m| &m.member)
    }

    /// The member called `name`, if we know it (also failed and left ones until reaped).
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.core.members.states.get(name).map(|m| &m.member)
    }

    /// Our own member entry.
    // The local member is added when memberlist announces us in `new` and never reaped or removed
    // (reaping skips ourselves).
    #[allow(clippy::expect_used)]
    pub fn local_member(&self) -> &Member {
        self.member(&self.core.name)
            .expect("the local member is always known")
    }

    /// Our current tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.core.config_tags
    }

    /// The memberlist layer underneath.
    pub fn memberlist(&self) -> &Memberlist {
        &self.ml
    }

    /// The member (intent) Lamport clock.
    pub fn member_clock(&self) -> u64 {
        self.core.clock.time()
    }

    /// The user event Lamport clock.
    pub fn event_clock(&self) -> u64 {
        self.core.user_events.clock.time()
    }

    /// The query Lamport clock.
    pub fn query_clock(&self) -> u64 {
        self.core.queries.clock.time()
    }

    /// Join and leave intents waiting to be gossiped.
    pub fn intent_queue_len(&self) -> usize {
        self.core.members.intent_queue.len()
    }

    /// The last coordinate `node` sent us (our own for our name); `None` if unknown.
    pub fn coordinate(&self, node: &str) -> Option<&Coordinate> {
        self.core.coords.get(&self.core.name, node)
    }

    /// How often our coordinate was reset after becoming invalid.
    pub fn coordinate_resets(&self) -> u64 {
        self.core.coords.resets()
    }

    /// User events waiting to be gossiped.
    pub fn event_queue_len(&self) -> usize {
        self.core.user_events.queue.len()
    }

    /// Counters about what this node has seen.
    pub fn stats(&self) -> SerfStats {
        self.core.stats.clone()
    }

    /// Queries waiting to be gossiped.
    pub fn query_queue_len(&self) -> usize {
        self.core.queries.queue.len()
    }

    /// Members memberlist considers alive or suspect (memberlist's `NumMembers`): the nodes a
    /// key operation waits to hear from.
    pub fn num_live_members(&self) -> usize {
        self.ml
            .members()
            .filter(|m| {
                matches!(
                    m.state,
                    ml::NodeStateKind::Alive | ml::NodeStateKind::Suspect
                )
            })
            .count()
    }

    /// Whether gossip is encrypted (a keyring with at least one key).
    pub fn encrypted(&self) -> bool {
        self.ml.keyring().is_some_and(|k| !k.keys().is_empty())
    }

    /// The configuration we started with. Its `memberlist` part is the start-up copy: the live
    /// one (the keyring after key rotation, say) is [`Memberlist::config`] via
    /// [`memberlist`](Self::memberlist).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether a graceful leave has completed.
    pub fn has_left(&self) -> bool {
        self.core.leave.phase == LeavePhase::Left
    }

    // ----- commands -----

    /// Joins through the given addresses; the result comes as [`Outcome::JoinFinished`], after
    /// which a join intent is broadcast if any exchange succeeded. With `ignore_old`, user events
    /// the cluster saw before the join are not replayed (Serf's default; `-replay` turns it off).
    pub fn join(&mut self, addrs: &[SocketAddr], ignore_old: bool, now: Instant) -> JoinId {
        let id = self.ml.join(addrs, now, &mut self.core);
        if ignore_old {
            self.core.user_events.ignoring_joins.insert(id);
        }
        id
    }

    /// Replaces our tags and announces them (`member-update` everywhere).
    pub fn set_tags(
        &mut self,
        tags: BTreeMap<String, String>,
        now: Instant,
    ) -> Result<(), tags::TagsError> {
        tags::encode(&tags)?;
        self.core.config_tags = tags;
        self.ml.update_meta(now, &mut self.core);
        Ok(())
    }

    // ----- inputs -----

    /// A UDP datagram from `from`.
    pub fn handle_packet(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.ml.handle_packet(from, bytes, now, &mut self.core);
        self.after_input(now);
    }

    /// Frames one stream message from the front of `buf`: `None` while more bytes are needed,
    /// else the message and how many bytes it took.
    pub fn decode_stream(&self, buf: &[u8]) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
        self.ml.decode_stream(buf)
    }

    /// A stream message a peer opened a connection to send us; the reply (if any) goes back on
    /// the same connection.
    pub fn handle_stream(
        &mut self,
        from: SocketAddr,
        msg: Result<StreamMessage, DecodeError>,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let reply = self.ml.handle_stream(from, msg, now, &mut self.core);
        self.after_input(now);
        reply
    }

    /// The reply to a [`Transmit::Stream`] we sent (or why there is none).
    pub fn handle_stream_reply(
        &mut self,
        id: StreamId,
        reply: Result<StreamMessage, String>,
        now: Instant,
    ) {
        self.ml.handle_stream_reply(id, reply, now, &mut self.core);
        self.after_input(now);
    }

    /// Time has come to `now`: runs memberlist's timers and Serf's (intent and query expiry,
    /// reap, reconnect, snapshot clock). Call it at [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ml.handle_timeout(now, &mut self.core);
        self.core.expire_intents(now);
        self.core.expire_queries(now);
        if now >= self.core.members.next_reap {
            self.core.members.next_reap = later(now, self.config.reap_interval);
            self.reap(now);
        }
        if now >= self.core.members.next_reconnect {
            self.core.members.next_reconnect = later(now, self.config.reconnect_interval);
            self.reconnect(now);
        }
        if self.core.next_snapshot_clock.is_some_and(|t| now >= t) {
            self.core.next_snapshot_clock = Some(later(now, snapshot::CLOCK_UPDATE_INTERVAL));
            self.snapshot_clock();
        }
        self.after_input(now);
    }

    /// Records the member clock in the snapshot if it grew (the shell calls this once more
    /// before it stops, as Serf's snapshotter does at shutdown).
    pub fn snapshot_clock(&mut self) {
        let clock = self.core.clock.time();
        if let Some(snap) = self.core.snapshot.as_mut() {
            snap.update_clock(clock);
        }
    }

    /// The next change to make to the snapshot file, in order (none without a snapshot).
    pub fn poll_snapshot_write(&mut self) -> Option<SnapshotWrite> {
        self.core.snapshot.as_mut()?.poll_write()
    }

    // ----- outputs -----

    /// The next packet or stream to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ml.poll_transmit()
    }

    /// The next thing to tell the layer above.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// The next progress or completion of a command, or notice for this node (see [`Outcome`]).
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.core.outcomes.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let core = &self.core;
        let serf = (core.queries.deadlines())
            .chain(core.leave.deadlines())
            .chain(core.members.deadlines())
            .chain(core.next_snapshot_clock)
            .min();
        // Memberlist wakes for gossip only when its own queue holds something; ours go out
        // through the same rounds.
        let ours_queued = !(core.members.intent_queue.is_empty()
            && core.user_events.queue.is_empty()
            && core.queries.queue.is_empty());
        let gossip = self.ml.next_gossip().filter(|_| ours_queued);
        [self.ml.poll_timeout(), serf, gossip]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- internals -----

    /// Carries memberlist's events up, sends Serf's direct packets and moves a leave in
    /// progress along: the work Go does in its background goroutines, done after each input.
    fn after_input(&mut self, now: Instant) {
        self.core.sample_queue_depths(now);
        self.core.check_queue_depth(self.config.max_queue_depth);
        if std::mem::take(&mut self.core.internal.conflict_seen)
            && self.core.internal.conflict_vote.is_none()
        {
            self.resolve_name_conflict(now);
        }
        for q in std::mem::take(&mut self.core.internal.key_queries) {
            self.answer_key_query(q, now);
        }
        for (to, msg) in std::mem::take(&mut self.core.outbox) {
            self.ml.send_user_packet(to, &msg);
        }
        while let Some(e) = self.ml.poll_event() {
            match e {
                ml::Event::JoinFinished { id, joined, errors } => {
                    self.core.user_events.ignoring_joins.remove(&id);
                    if self.own_join_finished(id, joined, &errors, now) {
                        continue;
                    }
                    if joined > 0 {
                        self.broadcast_join(now);
                    }
                    self.core
                        .outcomes
                        .push_back(Outcome::JoinFinished { id, joined, errors });
                }
                ml::Event::InboundError {
                    from,
                    transport,
                    error,
                } => {
                    let kind = match transport {
                        ml::Transport::Packet => "packet",
                        ml::Transport::Stream => "stream",
                    };
                    warn!("memberlist: failed to read {kind} from {from}: {error}");
                }
                ml::Event::PushPullFailed { peer, error } => {
                    error!("memberlist: Push/Pull with {peer} failed: {error}");
                }
                ml::Event::Suspected {
                    node,
                    confirmations,
                } => {
                    debug!(%node, confirmations, "suspicion started");
                }
            }
        }
        let finished = self.core.members.intent_queue.take_finished();
        self.core.leave.notified.extend(finished);
        self.finish_force_leaves(now);
        self.core.finish_prunes(now);
        self.advance_leave(now);
    }
}

impl Core {
    /// Drops a message whose Lamport time is too far ahead of ours to be honest (see
    /// [`crate::clock::MAX_LTIME_JUMP`]). Returns false: nothing to re-gossip.
    fn incredible_ltime(&mut self, what: &'static str, ltime: u64, ours: u64) -> bool {
        if self.stats.drops.record("incredible lamport time") {
            tracing::warn!(
                ltime,
                ours,
                "serf: dropped a {what} from the far future (logged once; later ones are only counted)"
            );
        } else {
            debug!(ltime, ours, "serf: dropped a {what} from the far future");
        }
        false
    }

    /// Go's `checkQueueDepth` samples each broadcast queue's depth every
    /// [`QUEUE_SAMPLE_INTERVAL`] as `serf.queue.Intent`, `.Event` and `.Query`. No timer of its
    /// own (that would change when the core wakes): the first input after the interval samples.
    fn sample_queue_depths(&mut self, now: Instant) {
        if self.next_queue_sample.is_some_and(|t| now < t) {
            return;
        }
        self.next_queue_sample = Some(later(now, QUEUE_SAMPLE_INTERVAL));
        let depth = |n: usize| n as f64;
        metrics::histogram!("serf.queue.Intent").record(depth(self.members.intent_queue.len()));
        metrics::histogram!("serf.queue.Event").record(depth(self.user_events.queue.len()));
        metrics::histogram!("serf.queue.Query").record(depth(self.queries.queue.len()));
    }

    /// Go's `checkQueueDepth`: a broadcast queue over `max` loses its most-sent messages. Run
    /// after every input, so a queue is never over its bound for longer than one input.
    fn check_queue_depth(&mut self, max: usize) {
        for (name, queue) in [
            ("Intent", &mut self.members.intent_queue),
            ("Event", &mut self.user_events.queue),
            ("Query", &mut self.queries.queue),
        ] {
            let len = queue.len();
            if len > max {
                queue.prune(max);
                let reason = match name {
                    "Intent" => "intent queue over max_queue_depth",
                    "Event" => "event queue over max_queue_depth",
                    _ => "query queue over max_queue_depth",
                };
                if self.stats.drops.record(reason) {
                    tracing::warn!("serf: {name} queue depth ({len}) exceeds limit ({max}), dropping messages (logged once)");
                }
            }
        }
    }
}

/// The slot of Lamport time `ltime` in the event and query ring buffers
/// ([`EVENT_BUFFER_SIZE`] entries each).
// EVENT_BUFFER_SIZE is a non-zero constant, and the remainder below it fits in a usize.
#[allow(clippy::arithmetic_side_effects)]
fn ring_slot(ltime: u64) -> usize {
    (ltime % EVENT_BUFFER_SIZE as u64) as usize
}

/// Whether `ltime` is older than a dedup buffer of [`EVENT_BUFFER_SIZE`] slots reaches back
/// from the clock's `current` time: we can no longer tell whether we saw it (Serf drops such
/// user events and queries as old).
fn before_buffer(ltime: u64, current: u64) -> bool {
    let window = EVENT_BUFFER_SIZE as u64;
    current > window && ltime < current.saturating_sub(window)
}
