//! The Serf state machine: memberlist plus member status, intents, clocks and tags.
//!
//! [`Serf`] owns a [`Memberlist`] and a [`Core`]; the core is the memberlist [`Delegate`], lent
//! to each memberlist call, so the two never hold references to each other.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vassal_memberlist::broadcast::TransmitLimitedQueue;
use vassal_memberlist::limits::{later, MAX_NODES};
use vassal_memberlist::wire::{DecodeError, StreamMessage};
use vassal_memberlist::{
    self as ml, Delegate, Drops, JoinId, Memberlist, Node, StreamId, Transmit,
};

use crate::clock::LamportClock;
use crate::coordinate::{self, Coordinate};
use crate::member::{Member, MemberEvent, MemberEventKind, MemberStatus};
use crate::messages::{
    self, Filter, Join, Leave, PushPullState, QueryMsg, QueryResponseMsg, SerfMessage, UserEvent,
    UserEventEntry, UserEvents,
};
use crate::snapshot::{self, SnapshotConfig, SnapshotWrite, Snapshotter};
use crate::tags;

/// Serf settings (spec §4.14) around the memberlist ones.
#[derive(Debug, Clone)]
pub struct Config {
    pub memberlist: ml::Config,
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

/// No user event may exceed this, whatever the configuration (Serf's `UserEventSizeLimit`).
pub const USER_EVENT_SIZE_HARD_LIMIT: usize = 9 * 1024;
/// Slots in the user event buffer: deduplication window and push/pull replay (spec §4.6).
pub const EVENT_BUFFER_SIZE: usize = 512;
/// Longest a query from a peer may ask us to keep it answerable. Go keeps whatever it is told
/// (`u64::MAX` ns is five centuries); an honest query lasts seconds, a slow handler minutes.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most queries from peers we keep answerable at once; past it the oldest are forgotten (their
/// answers refused as past the deadline).
pub const MAX_PENDING_QUERIES: usize = 1024;
/// Longest a member stays `leaving` on a leave intent while memberlist still sees it alive. An
/// honest graceful leave reaches memberlist within the broadcast timeout (5 s) plus the
/// propagation delay; a forged intent that never reached its subject (so was never refuted)
/// would otherwise leave it `leaving` here for good, drained by every balancer (issue 11).
pub const LEAVING_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Members joined, left, failed, were updated or reaped.
    Member(MemberEvent),
    /// A user event, seen for the first time.
    User(UserEvent),
    /// A query to answer with [`Serf::respond`] before its deadline (never `_serf_` ones).
    Query(Query),
}

/// Progress and completion of commands given to this node ([`Serf::query`], [`Serf::join`],
/// [`Serf::leave`], [`Serf::force_leave`]), and the two notices meant for the node itself (its
/// keyring changed; it must stop). Polled with [`Serf::poll_outcome`]; the shell routes each to
/// whoever gave the command, as Go returns a `QueryResponse` from `Serf.Query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A node acknowledged one of our queries (identified by its Lamport time).
    QueryAck { ltime: u64, from: String },
    /// A node answered one of our queries.
    QueryResponse {
        ltime: u64,
        from: String,
        payload: Vec<u8>,
    },
    /// One of our queries timed out; nothing more will arrive for it.
    QueryDone { ltime: u64 },
    /// A [`Serf::join`] finished.
    JoinFinished {
        id: JoinId,
        joined: usize,
        errors: Vec<String>,
    },
    /// A graceful [`Serf::leave`] is complete: the process may exit.
    LeaveComplete,
    /// A [`Serf::force_leave`] that had to be broadcast is done (or gave up waiting).
    ForceLeaveFinished {
        token: u64,
        result: Result<(), ForceLeaveError>,
    },
    /// A key query changed our keyring; these are now the keys, primary first (the agent
    /// rewrites its keyring file).
    KeyringChanged(Vec<Vec<u8>>),
    /// We lost a name-conflict vote (spec §4.10): the agent should stop.
    Shutdown(String),
}

#[derive(Debug, Clone)]
struct MemberState {
    member: Member,
    status_ltime: u64,
    leave_time: Option<Instant>,
    /// When a leave intent made this member `leaving`; see [`LEAVING_TIMEOUT`].
    leaving_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntentKind {
    Join,
    Leave,
}

#[derive(Debug, Clone, Copy)]
struct Intent {
    kind: IntentKind,
    ltime: u64,
    at: Instant,
}

/// Where a graceful leave is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeavePhase {
    Running,
    /// Our leave intent is being gossiped.
    Intent {
        until: Instant,
    },
    /// memberlist's `dead` about ourselves is being gossiped.
    Memberlist {
        until: Instant,
    },
    /// Lingering so peers learn of the leave before we stop answering.
    Propagate {
        until: Instant,
    },
    Left,
}

/// Why a user event was not sent. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserEventError {
    #[error("user event exceeds configured limit of {0} bytes before encoding")]
    TooLarge(usize),
    #[error("user event exceeds sane limit of {USER_EVENT_SIZE_HARD_LIMIT} bytes before encoding")]
    OverHardLimit,
    #[error("encoded user event exceeds configured limit of {0} bytes after encoding")]
    EncodedTooLarge(usize),
    #[error("encoded user event exceeds sane limit of {USER_EVENT_SIZE_HARD_LIMIT} bytes after encoding")]
    EncodedOverHardLimit,
}

/// A query received from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub ltime: u64,
    pub id: u32,
    pub name: String,
    pub payload: Vec<u8>,
    pub source_node: String,
    /// Answers after this are refused.
    pub deadline: Instant,
}

/// How to send a query (Serf's `QueryParam`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    /// Only these nodes answer (empty: any).
    pub filter_nodes: Vec<String>,
    /// Only nodes whose tag matches the regular expression (unanchored) answer.
    pub filter_tags: BTreeMap<String, String>,
    /// Ask every processing node for an ack.
    pub request_ack: bool,
    /// Also send each answer through this many other nodes.
    pub relay_factor: u8,
    /// `None`: the default for the cluster's size.
    pub timeout: Option<Duration>,
}

/// Why a query was not sent. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("Feature not supported")]
    FeatureNotSupported,
    #[error("query exceeds limit of {0} bytes")]
    TooLarge(usize),
}

/// Why an answer was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    /// Also after a first answer: only one is allowed.
    #[error("response is past the deadline")]
    PastDeadline,
    #[error("response exceeds limit of {0} bytes")]
    TooLarge(usize),
    #[error("relayed response exceeds limit of {0} bytes")]
    RelayTooLarge(usize),
}

/// Why a force-leave did not finish cleanly. The local change (left, or erased with prune) was
/// made; only its broadcast may not have gone out in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForceLeaveError {
    #[error("timed out broadcasting node removal")]
    BroadcastTimeout,
}

/// A query we sent, collecting acks and answers until its deadline.
#[derive(Debug, Clone)]
struct OwnQuery {
    id: u32,
    deadline: Instant,
    acks: BTreeSet<String>,
    responses: BTreeSet<String>,
}

/// A query we received and may answer once.
#[derive(Debug, Clone)]
struct InboundQuery {
    reply_to: SocketAddr,
    relay_factor: u8,
    deadline: Instant,
}

/// Prefix of Serf's own queries, handled here and never shown to the layer above.
pub const INTERNAL_QUERY_PREFIX: &str = "_serf_";

/// Serf's reachability query: answered with an ack alone (`serf reachability`).
pub const PING_QUERY: &str = "_serf_ping";

/// Serf's name-conflict query.
const CONFLICT_QUERY: &str = "_serf_conflict";

/// Votes gathered by our `_serf_conflict` query.
#[derive(Debug, Clone)]
struct ConflictVote {
    ltime: u64,
    /// The query's ID: an answer must name it, so a forger who did not see the query can't vote.
    id: u32,
    me: SocketAddr,
    responses: usize,
    matching: usize,
    voters: BTreeSet<String>,
}

/// The keyring operations other nodes can ask of us by query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyOp {
    Install,
    Use,
    Remove,
    List,
}

impl KeyOp {
    fn from_query(name: &str) -> Option<Self> {
        Some(match name {
            "_serf_install-key" => KeyOp::Install,
            "_serf_use-key" => KeyOp::Use,
            "_serf_remove-key" => KeyOp::Remove,
            "_serf_list-keys" => KeyOp::List,
            _ => return None,
        })
    }
}

/// The two kinds of query response (the `Flags` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryResponseFlags {
    Answer = 0,
    Ack = 1,
}

/// Token of our leave intent in the intent queue.
const LEAVE_NOTIFY: u64 = 1;

/// Everything Serf keeps besides memberlist; memberlist's delegate.
#[derive(Debug)]
struct Core {
    name: String,
    config_tags: BTreeMap<String, String>,
    recent_intent_timeout: Duration,
    retransmit_mult: u32,
    clock: LamportClock,
    event_clock: LamportClock,
    query_clock: LamportClock,
    /// A persistent map, like memberlist's table: clones share structure until they diverge.
    /// Read with `get` first; `get_mut` copies the path to the entry even if nothing changes.
    members: imbl::OrdMap<String, MemberState>,
    intents: BTreeMap<String, Intent>,
    intent_queue: TransmitLimitedQueue,
    resolve_conflicts: bool,
    /// Our Vivaldi coordinate, or `None` when coordinates are disabled.
    coord: Option<coordinate::Client>,
    /// The last coordinate each node sent us (and ours), for RTT estimates.
    coord_cache: BTreeMap<String, Coordinate>,
    event_queue: TransmitLimitedQueue,
    query_queue: TransmitLimitedQueue,
    /// `LTime mod 512` → the query IDs seen at that time.
    query_buffer: Vec<Option<(u64, Vec<u32>)>>,
    own_queries: BTreeMap<u64, OwnQuery>,
    inbound_queries: BTreeMap<(u64, u32), InboundQuery>,
    /// Direct packets (acks, answers, relays) for memberlist to send.
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    /// Key queries waiting for [`Serf`] to apply them to memberlist's keyring.
    key_queries: Vec<(u64, u32, String, Vec<u8>)>,
    /// Another address claims our name: [`Serf`] asks the cluster who is right.
    conflict_seen: bool,
    conflict_vote: Option<ConflictVote>,
    /// `LTime mod 512` → the events seen at that time (spec §4.6).
    event_buffer: Vec<Option<UserEvents>>,
    /// User events older than this are ignored (raised by joins that ignore old events, and by
    /// a snapshot's event clock).
    event_min_time: u64,
    /// Queries older than this are ignored (a snapshot's query clock).
    query_min_time: u64,
    /// Records members, clocks and a leave for the snapshot file, when there is one.
    snapshot: Option<Snapshotter>,
    next_snapshot_clock: Option<Instant>,
    flap_timeout: Duration,
    stats: SerfStats,
    /// Joins in flight that asked to ignore old events.
    ignoring_joins: BTreeSet<JoinId>,
    events: VecDeque<Event>,
    outcomes: VecDeque<Outcome>,
    /// Notification tokens of intent broadcasts that have gone out (or were dropped).
    notified: BTreeSet<u64>,
    /// Force-leave broadcasts we wait for: token → give-up time.
    force_leaves: BTreeMap<u64, Instant>,
    next_notify: u64,
    /// Members leaving with a prune: erased at this time (Serf waits for the leave to settle).
    prunes: BTreeMap<String, Instant>,
    /// How long a pruned leaving member is kept: broadcast timeout + propagate delay.
    prune_delay: Duration,
    phase: LeavePhase,
    rng: ChaCha8Rng,
    next_reap: Instant,
    next_reconnect: Instant,
}

/// A Serf node: the pure state machine the agent drives.
#[derive(Debug)]
pub struct Serf {
    ml: Memberlist,
    core: Core,
    config: Config,
    /// Joins started by [`Serf::reconnect`], which report nothing upward.
    reconnects: BTreeSet<JoinId>,
    /// Rejoining the members a snapshot recorded alive, one at a time until one works.
    rejoin: Option<Rejoin>,
}

/// The snapshot rejoin in progress: the join under way and the nodes left to try.
#[derive(Debug, Clone)]
struct Rejoin {
    id: JoinId,
    node: (String, SocketAddr),
    rest: Vec<(String, SocketAddr)>,
}

impl Serf {
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
            recent_intent_timeout: config.recent_intent_timeout,
            retransmit_mult: ml_config.retransmit_mult,
            clock: LamportClock::new(),
            event_clock: LamportClock::new(),
            query_clock: LamportClock::new(),
            members: imbl::OrdMap::new(),
            intents: BTreeMap::new(),
            intent_queue: TransmitLimitedQueue::new(),
            resolve_conflicts: config.enable_name_conflict_resolution,
            coord: (!config.disable_coordinates).then(coordinate::Client::default),
            coord_cache: BTreeMap::new(),
            event_queue: TransmitLimitedQueue::new(),
            query_queue: TransmitLimitedQueue::new(),
            query_buffer: vec![None; EVENT_BUFFER_SIZE],
            own_queries: BTreeMap::new(),
            inbound_queries: BTreeMap::new(),
            outbox: Vec::new(),
            key_queries: Vec::new(),
            conflict_seen: false,
            conflict_vote: None,
            event_buffer: vec![None; EVENT_BUFFER_SIZE],
            event_min_time: 0,
            query_min_time: 0,
            snapshot: config.snapshot.as_ref().map(Snapshotter::new),
            next_snapshot_clock: config
                .snapshot
                .as_ref()
                .map(|_| later(now, snapshot::CLOCK_UPDATE_INTERVAL)),
            flap_timeout: config.flap_timeout,
            stats: SerfStats::default(),
            ignoring_joins: BTreeSet::new(),
            events: VecDeque::new(),
            outcomes: VecDeque::new(),
            notified: BTreeSet::new(),
            force_leaves: BTreeMap::new(),
            next_notify: LEAVE_NOTIFY + 1,
            prunes: BTreeMap::new(),
            prune_delay: config
                .broadcast_timeout
                .saturating_add(config.leave_propagate_delay),
            phase: LeavePhase::Running,
            rng: ChaCha8Rng::seed_from_u64(ml_config.seed ^ 0x5e4f_5e4f),
            next_reap: later(now, config.reap_interval),
            next_reconnect: later(now, config.reconnect_interval),
        };
        core.clock.increment();
        core.event_clock.increment();
        core.query_clock.increment();
        let mut previous = Vec::new();
        if let Some(snap) = &config.snapshot {
            // Serf's Create: resume the clocks, and never deliver again the user events and
            // queries this node had already seen.
            let r = &snap.recovered;
            core.clock.witness(r.clock);
            core.event_clock.witness(r.event_clock);
            core.query_clock.witness(r.query_clock);
            core.event_min_time = r.event_clock.saturating_add(1);
            core.query_min_time = r.query_clock.saturating_add(1);
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
            reconnects: BTreeSet::new(),
            rejoin: None,
        };
        if !previous.is_empty() {
            // Random order, so restarting nodes do not all pick the same peer.
            for i in (1..previous.len()).rev() {
                let j = serf.core.rng.gen_range(0..=i);
                previous.swap(i, j);
            }
            serf.rejoin_next(previous, now);
        }
        Ok(serf)
    }

    // ----- accessors -----

    pub fn local_name(&self) -> &str {
        &self.core.name
    }

    /// Every member, including failed and left ones until they are reaped.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.core.members.values().map(|m| &m.member)
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.core.members.get(name).map(|m| &m.member)
    }

    // The local member is added when memberlist announces us in `new` and never reaped or removed
    // (reaping skips ourselves).
    #[allow(clippy::expect_used)]
    pub fn local_member(&self) -> &Member {
        self.member(&self.core.name)
            .expect("the local member is always known")
    }

    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.core.config_tags
    }

    pub fn memberlist(&self) -> &Memberlist {
        &self.ml
    }

    pub fn member_clock(&self) -> u64 {
        self.core.clock.time()
    }

    pub fn event_clock(&self) -> u64 {
        self.core.event_clock.time()
    }

    pub fn query_clock(&self) -> u64 {
        self.core.query_clock.time()
    }

    pub fn intent_queue_len(&self) -> usize {
        self.core.intent_queue.len()
    }

    /// The last coordinate `node` sent us (our own for our name); `None` if unknown.
    pub fn coordinate(&self, node: &str) -> Option<&Coordinate> {
        if node == self.core.name {
            return self.core.coord.as_ref().map(coordinate::Client::coordinate);
        }
        self.core.coord_cache.get(node)
    }

    /// How often our coordinate was reset after becoming invalid.
    pub fn coordinate_resets(&self) -> u64 {
        self.core.coord.as_ref().map_or(0, |c| c.resets)
    }

    pub fn event_queue_len(&self) -> usize {
        self.core.event_queue.len()
    }

    pub fn stats(&self) -> SerfStats {
        self.core.stats.clone()
    }

    pub fn query_queue_len(&self) -> usize {
        self.core.query_queue.len()
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
        self.core.phase == LeavePhase::Left
    }

    /// Simulation support: takes `template`'s membership view (memberlist's node table and
    /// Serf's member list) as ours, as if we had merged a push/pull with it and its gossip had
    /// died down; no events are raised and nothing is queued. Both tables stay shared with the
    /// template until one side changes an entry. See [`Memberlist::adopt_table`] for what is
    /// refused; here our own member entry must also match the template's.
    #[cfg(feature = "sim")]
    pub fn adopt_view(&mut self, template: &Serf) -> Result<(), String> {
        let name = &self.core.name;
        if self.core.members.len() != 1 {
            return Err(format!(
                "{name} already knows {} members; only a fresh node can adopt a view",
                self.core.members.len()
            ));
        }
        let mine = (self.core.members.get(name))
            .ok_or_else(|| format!("{name} is not among its own members"))?;
        let theirs = (template.core.members.get(name))
            .ok_or_else(|| format!("the template does not know {name}"))?;
        if theirs.member != mine.member || theirs.status_ltime != mine.status_ltime {
            return Err(format!(
                "the template's member entry for {name} differs from the node's own: {:?} vs {:?}",
                theirs.member, mine.member
            ));
        }
        if let Some(m) = template.members().find(|m| m.status != MemberStatus::Alive) {
            return Err(format!(
                "the template holds {} as {}; only all-alive views can be adopted",
                m.name, m.status
            ));
        }
        self.ml.adopt_table(&template.ml)?;
        self.core.members = template.core.members.clone();
        let core = &mut self.core;
        for (ours, theirs) in [
            (&mut core.clock, &template.core.clock),
            (&mut core.event_clock, &template.core.event_clock),
            (&mut core.query_clock, &template.core.query_clock),
        ] {
            ours.witness(theirs.time().saturating_sub(1));
        }
        Ok(())
    }

    /// Whether two nodes' views are still one shared structure (simulation memory checks).
    #[cfg(feature = "sim")]
    pub fn shares_view_with(&self, other: &Serf) -> bool {
        self.ml.shares_table_with(&other.ml) && self.core.members.ptr_eq(&other.core.members)
    }

    // ----- commands -----

    /// Joins through the given addresses; the result comes as [`Outcome::JoinFinished`], after
    /// which a join intent is broadcast if any exchange succeeded. With `ignore_old`, user events
    /// the cluster saw before the join are not replayed (Serf's default; `-replay` turns it off).
    pub fn join(&mut self, addrs: &[SocketAddr], ignore_old: bool, now: Instant) -> JoinId {
        let id = self.ml.join(addrs, now, &mut self.core);
        if ignore_old {
            self.core.ignoring_joins.insert(id);
        }
        id
    }

    /// The default query timeout for the current cluster size (spec §4.7).
    pub fn default_query_timeout(&self) -> Duration {
        let suspect = self
            .ml
            .members()
            .filter(|m| m.state == ml::NodeStateKind::Suspect)
            .count();
        let n = self.ml.num_alive().saturating_add(suspect);
        let scale = ((n as f64) + 1.0).log10().ceil().max(1.0) as u32;
        self.config
            .memberlist
            .gossip_interval
            .saturating_mul(self.config.query_timeout_mult)
            .saturating_mul(scale)
    }

    /// Sends a query (spec §4.7); we process it ourselves too. Acks, answers and the end come as
    /// [`Outcome::QueryAck`], [`Outcome::QueryResponse`] and [`Outcome::QueryDone`] carrying the
    /// returned Lamport time.
    pub fn query(
        &mut self,
        name: &str,
        payload: &[u8],
        params: &QueryParams,
        now: Instant,
    ) -> Result<u64, QueryError> {
        if self.config.protocol_version < 4 {
            return Err(QueryError::FeatureNotSupported);
        }
        let timeout = params
            .timeout
            .filter(|t| !t.is_zero())
            .unwrap_or_else(|| self.default_query_timeout())
            .min(MAX_QUERY_TIMEOUT);
        let mut filters = Vec::new();
        if !params.filter_nodes.is_empty() {
            filters.push(messages::node_filter(&params.filter_nodes));
        }
        for (tag, expr) in &params.filter_tags {
            filters.push(messages::tag_filter(tag, expr));
        }
        let local = self.ml.local_node();
        let q = QueryMsg {
            ltime: self.core.query_clock.time(),
            id: self.core.rng.gen_range(0..=i32::MAX as u32),
            addr: local.addr,
            port: local.port,
            source_node: self.core.name.clone(),
            filters,
            flags: if params.request_ack {
                messages::QUERY_FLAG_ACK
            } else {
                0
            },
            relay_factor: params.relay_factor,
            timeout: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            name: name.to_owned(),
            payload: payload.to_vec(),
        };
        let raw = messages::encode(&SerfMessage::Query(q.clone()));
        if raw.len() > self.config.query_size_limit {
            return Err(QueryError::TooLarge(self.config.query_size_limit));
        }
        self.core.own_queries.insert(
            q.ltime,
            OwnQuery {
                id: q.id,
                deadline: later(now, timeout),
                acks: BTreeSet::new(),
                responses: BTreeSet::new(),
            },
        );
        self.core.handle_query(&q, now);
        self.core.query_queue.queue(None, raw, None);
        self.after_input(now);
        Ok(q.ltime)
    }

    /// Answers a query from [`Event::Query`], once, before its deadline.
    pub fn respond(
        &mut self,
        ltime: u64,
        id: u32,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), RespondError> {
        let r = self.core.respond(
            ltime,
            id,
            payload,
            QueryResponseFlags::Answer,
            now,
            self.config.query_response_size_limit,
        );
        self.after_input(now);
        r
    }

    /// Sends a user event to the cluster (spec §4.6); it is also delivered locally.
    pub fn user_event(
        &mut self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
        _now: Instant,
    ) -> Result<(), UserEventError> {
        let limit = self.config.user_event_size_limit;
        let size = name.len().saturating_add(payload.len());
        if size > limit {
            return Err(UserEventError::TooLarge(limit));
        }
        if size > USER_EVENT_SIZE_HARD_LIMIT {
            return Err(UserEventError::OverHardLimit);
        }
        let msg = UserEvent {
            ltime: self.core.event_clock.time(),
            name: name.to_owned(),
            payload: payload.to_vec(),
            cc: coalesce,
        };
        let raw = messages::encode(&SerfMessage::UserEvent(msg.clone()));
        if raw.len() > limit {
            return Err(UserEventError::EncodedTooLarge(limit));
        }
        if raw.len() > USER_EVENT_SIZE_HARD_LIMIT {
            return Err(UserEventError::EncodedOverHardLimit);
        }
        self.core.event_clock.increment();
        self.core.handle_user_event(&msg);
        self.core.event_queue.queue(None, raw, None);
        Ok(())
    }

    /// Serf's `RemoveFailedNode` (with `prune`, `RemoveFailedNodePrune`): marks `node` left
    /// with a fresh leave intent and broadcasts it. The name is not checked: an unknown node
    /// just gets a recent intent. With `prune` the member is also erased (`member-reap`): at
    /// once if it has failed or left, after the leave settles if it is still leaving.
    ///
    /// `None` when nobody else is alive to tell (done); otherwise a token that
    /// [`Outcome::ForceLeaveFinished`] carries once the broadcast has gone out or the broadcast
    /// timeout passed.
    pub fn force_leave(&mut self, node: &str, prune: bool, now: Instant) -> Option<u64> {
        let msg = Leave {
            ltime: self.core.clock.time(),
            node: node.to_owned(),
            prune,
        };
        self.core.clock.increment();
        self.core.handle_leave_intent(&msg, now);
        let token = if self.core.any_other_alive() {
            let token = self.core.next_notify;
            // One per force-leave: a u64 does not wrap in practice.
            self.core.next_notify = self.core.next_notify.wrapping_add(1);
            self.core.intent_queue.queue(
                None,
                messages::encode(&SerfMessage::Leave(msg)),
                Some(token),
            );
            self.core
                .force_leaves
                .insert(token, later(now, self.config.broadcast_timeout));
            Some(token)
        } else {
            None
        };
        self.after_input(now);
        token
    }

    /// Starts a key operation from this node (Serf's key manager, spec §4.9): sends the
    /// internal query with the default parameters. Returns its Lamport time, whose
    /// [`Outcome::QueryResponse`]s are the answers to count with a
    /// [`KeyReport`](crate::keys::KeyReport) of the returned size, until all have answered or
    /// [`Outcome::QueryDone`].
    pub fn key_query(
        &mut self,
        command: crate::keys::KeyCommand,
        key: &[u8],
        relay_factor: u8,
        now: Instant,
    ) -> Result<(u64, usize), QueryError> {
        let params = QueryParams {
            relay_factor,
            ..QueryParams::default()
        };
        let num_nodes = self.num_live_members();
        let ltime = self.query(command.query_name(), &command.payload(key), &params, now)?;
        Ok((ltime, num_nodes))
    }

    /// Starts a graceful leave (spec §4.5): leave intent, then memberlist's leave, then a short
    /// linger. [`Outcome::LeaveComplete`] says when it is done.
    pub fn leave(&mut self, now: Instant) {
        if self.core.phase != LeavePhase::Running {
            return;
        }
        if let Some(snap) = self.core.snapshot.as_mut() {
            snap.leave();
        }
        let msg = Leave {
            ltime: self.core.clock.time(),
            node: self.core.name.clone(),
            prune: false,
        };
        self.core.clock.increment();
        // Not alive any more, so handling our own intent does not refute it.
        self.core.phase = LeavePhase::Intent {
            until: later(now, self.config.broadcast_timeout),
        };
        self.core.handle_leave_intent(&msg, now);
        if self.core.any_other_alive() {
            let bytes = messages::encode(&SerfMessage::Leave(msg));
            self.core
                .intent_queue
                .queue(None, bytes, Some(LEAVE_NOTIFY));
        }
        self.advance_leave(now);
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

    pub fn handle_packet(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        self.ml.handle_packet(from, bytes, now, &mut self.core);
        self.after_input(now);
    }

    pub fn decode_stream(&self, buf: &[u8]) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
        self.ml.decode_stream(buf)
    }

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

    pub fn handle_stream_reply(
        &mut self,
        id: StreamId,
        reply: Result<StreamMessage, String>,
        now: Instant,
    ) {
        self.ml.handle_stream_reply(id, reply, now, &mut self.core);
        self.after_input(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.ml.handle_timeout(now, &mut self.core);
        self.core.expire_intents(now);
        self.core.expire_queries(now);
        if now >= self.core.next_reap {
            self.core.next_reap = later(now, self.config.reap_interval);
            self.reap(now);
        }
        if now >= self.core.next_reconnect {
            self.core.next_reconnect = later(now, self.config.reconnect_interval);
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

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ml.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// The next progress or completion of a command, or notice for this node (see [`Outcome`]).
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.core.outcomes.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let leave = match self.core.phase {
            LeavePhase::Intent { until }
            | LeavePhase::Memberlist { until }
            | LeavePhase::Propagate { until } => Some(until),
            LeavePhase::Running | LeavePhase::Left => None,
        };
        let queries = self.core.own_queries.values().map(|q| q.deadline);
        let inbound = self.core.inbound_queries.values().map(|q| q.deadline);
        let force_leaves = self.core.force_leaves.values().copied();
        let prunes = self.core.prunes.values().copied();
        let serf = queries
            .chain(inbound)
            .chain(force_leaves)
            .chain(prunes)
            .chain([self.core.next_reap, self.core.next_reconnect])
            .chain(self.core.next_snapshot_clock)
            .min();
        [self.ml.poll_timeout(), leave, serf]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- internals -----

    /// Carries memberlist's events up, sends Serf's direct packets and moves a leave in
    /// progress along.
    fn after_input(&mut self, now: Instant) {
        self.core.check_queue_depth(self.config.max_queue_depth);
        if std::mem::take(&mut self.core.conflict_seen) && self.core.conflict_vote.is_none() {
            self.resolve_name_conflict(now);
        }
        for (ltime, id, name, payload) in std::mem::take(&mut self.core.key_queries) {
            self.answer_key_query(ltime, id, &name, &payload, now);
        }
        for (to, msg) in std::mem::take(&mut self.core.outbox) {
            self.ml.send_user_packet(to, &msg);
        }
        while let Some(e) = self.ml.poll_event() {
            match e {
                ml::Event::JoinFinished { id, joined, errors } => {
                    self.core.ignoring_joins.remove(&id);
                    if self.reconnects.remove(&id) {
                        debug!(joined, ?errors, "reconnect attempt finished");
                        continue;
                    }
                    if let Some(r) = self.rejoin.take_if(|r| r.id == id) {
                        let (name, addr) = &r.node;
                        if joined > 0 {
                            info!(
                                target: "vassal_serf::snapshot",
                                "Re-joined to previously known node: {name}: {addr}"
                            );
                        } else {
                            debug!(?errors, "re-join to {name}: {addr} failed");
                            self.rejoin_next(r.rest, now);
                        }
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
                    warn!("{}", format!("failed to read {kind} from {from}: {error}"));
                }
                ml::Event::PushPullFailed { peer, error } => {
                    warn!("{}", format!("push/pull with {peer} failed: {error}"));
                }
                ml::Event::Suspected {
                    node,
                    confirmations,
                } => {
                    debug!(%node, confirmations, "suspect has failed, no acks received");
                }
            }
        }
        self.core
            .notified
            .extend(self.core.intent_queue.take_finished());
        self.finish_force_leaves(now);
        self.core.finish_prunes(now);
        self.advance_leave(now);
    }

    /// Reports force-leaves whose broadcast went out, or that waited too long.
    fn finish_force_leaves(&mut self, now: Instant) {
        let done: Vec<(u64, Result<(), ForceLeaveError>)> = self
            .core
            .force_leaves
            .iter()
            .filter_map(|(&token, &deadline)| {
                if self.core.notified.contains(&token) {
                    Some((token, Ok(())))
                } else if now >= deadline {
                    Some((token, Err(ForceLeaveError::BroadcastTimeout)))
                } else {
                    None
                }
            })
            .collect();
        for (token, result) in done {
            self.core.force_leaves.remove(&token);
            self.core.notified.remove(&token);
            self.core
                .outcomes
                .push_back(Outcome::ForceLeaveFinished { token, result });
        }
        // Tokens nobody waits for any more (a late broadcast after a timeout).
        let waiting = &self.core.force_leaves;
        self.core
            .notified
            .retain(|t| *t == LEAVE_NOTIFY || waiting.contains_key(t));
    }

    /// Forgets failed members after the reconnect timeout and left ones after the tombstone
    /// timeout, raising `member-reap` (spec §4.12).
    fn reap(&mut self, now: Instant) {
        self.core.expire_leaving(now, &self.ml);
        let (reconnect, tombstone) = (self.config.reconnect_timeout, self.config.tombstone_timeout);
        let expired: Vec<String> = self
            .core
            .members
            .values()
            .filter(|m| {
                let age = m.leave_time.map(|t| now.saturating_duration_since(t));
                match m.member.status {
                    MemberStatus::Failed => age.is_some_and(|a| a > reconnect),
                    MemberStatus::Left => age.is_some_and(|a| a > tombstone),
                    _ => false,
                }
            })
            .map(|m| m.member.name.clone())
            .collect();
        for name in expired {
            let Some(m) = self.core.members.remove(&name).map(|m| m.member) else {
                continue;
            };
            self.core.coord_cache.remove(&name);
            if let Some(c) = self.core.coord.as_mut() {
                c.forget(&name);
            }
            info!(node = %m.name, "EventMemberReap");
            self.core.emit(MemberEventKind::Reap, m);
        }
    }

    /// With probability failed/alive, tries a memberlist join to one random failed member, so
    /// partitions heal (spec §4.12). No join intent is broadcast for it.
    fn reconnect(&mut self, now: Instant) {
        let failed: Vec<&Member> = self
            .core
            .members
            .values()
            .map(|m| &m.member)
            .filter(|m| m.status == MemberStatus::Failed)
            .collect();
        if failed.is_empty() {
            return;
        }
        let left = self
            .core
            .members
            .values()
            .filter(|m| m.member.status == MemberStatus::Left)
            .count();
        // failed and left are disjoint subsets of members.
        let alive = self
            .core
            .members
            .len()
            .saturating_sub(failed.len())
            .saturating_sub(left)
            .max(1);
        let prob = failed.len() as f64 / alive as f64;
        if self.core.rng.gen::<f64>() > prob {
            return;
        }
        let Some(m) = failed.get(self.core.rng.gen_range(0..failed.len())) else {
            return;
        };
        let addr = SocketAddr::new(m.addr, m.port);
        info!(node = %m.name, %addr, "attempting reconnect");
        self.reconnects
            .insert(self.ml.join(&[addr], now, &mut self.core));
    }

    /// Serf's `handleRejoin`: a memberlist join (no join intent, old events not ignored beyond
    /// the snapshot's clocks) to the first of `nodes`; the rest are tried if it fails.
    fn rejoin_next(&mut self, mut nodes: Vec<(String, SocketAddr)>, now: Instant) {
        if nodes.is_empty() {
            warn!("Failed to re-join any previously known node");
            return;
        }
        let node = nodes.remove(0);
        info!(
            target: "vassal_serf::snapshot",
            "Attempting re-join to previously known node: {}: {}",
            node.0,
            node.1
        );
        let id = self.ml.join(&[node.1], now, &mut self.core);
        self.rejoin = Some(Rejoin {
            id,
            node,
            rest: nodes,
        });
    }

    /// Asks the cluster where it believes our name lives (spec §4.10); the count happens as
    /// answers arrive and the verdict when the query ends.
    fn resolve_name_conflict(&mut self, now: Instant) {
        let name = self.core.name.clone();
        let me = self.ml.local_node().socket_addr();
        match self.query(
            CONFLICT_QUERY,
            name.as_bytes(),
            &QueryParams::default(),
            now,
        ) {
            Ok(ltime) => {
                let id = self.core.own_queries.get(&ltime).map_or(0, |q| q.id);
                self.core.conflict_vote = Some(ConflictVote {
                    ltime,
                    id,
                    me,
                    responses: 0,
                    matching: 0,
                    voters: BTreeSet::new(),
                })
            }
            Err(e) => warn!(error = %e, "failed to start name conflict resolution"),
        }
    }

    /// Applies a `_serf_*-key` query to our keyring and answers it as Go does (spec §4.8).
    fn answer_key_query(&mut self, ltime: u64, id: u32, name: &str, payload: &[u8], now: Instant) {
        use base64::Engine as _;
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        let Some(op) = KeyOp::from_query(name) else {
            return; // queued only for key queries
        };
        let mut resp = messages::KeyResponse::default();
        match (self.ml.keyring_mut(), messages::decode_key_request(payload)) {
            (_, Err(e)) => warn!(error = %e, "failed to decode key request"),
            (None, Ok(_)) => {
                resp.message = match op {
                    KeyOp::List => "Keyring is empty (encryption not enabled)",
                    _ => "No keyring to modify (encryption not enabled)",
                }
                .into();
            }
            (Some(ring), Ok(key)) => {
                let changed = match op {
                    KeyOp::Install => ring.add_key(&key),
                    KeyOp::Use => ring.use_key(&key),
                    KeyOp::Remove => ring.remove_key(&key),
                    KeyOp::List => {
                        resp.keys = ring.keys().iter().map(|k| b64(k)).collect();
                        resp.primary_key = b64(ring.primary());
                        Ok(())
                    }
                };
                match changed {
                    Ok(()) => {
                        resp.result = true;
                        if op != KeyOp::List {
                            info!(op = name, "keyring changed by query");
                            let keys = ring.keys().to_vec();
                            self.core.outcomes.push_back(Outcome::KeyringChanged(keys));
                        }
                    }
                    Err(e) => resp.message = e.to_string(),
                }
            }
        }
        // A long key list is cut until the answer fits.
        let limit = self.config.query_response_size_limit;
        let total = resp.keys.len();
        loop {
            let body = messages::encode_key_response(&resp);
            match self
                .core
                .respond(ltime, id, &body, QueryResponseFlags::Answer, now, limit)
            {
                Err(RespondError::TooLarge(_)) if !resp.keys.is_empty() => {
                    resp.keys.pop();
                    resp.message = format!(
                        "truncated key list response, showing first {} of {total} keys",
                        resp.keys.len()
                    );
                }
                Err(e) => {
                    warn!(error = %e, "failed to respond to key query");
                    break;
                }
                Ok(()) => break,
            }
        }
    }

    fn broadcast_join(&mut self, now: Instant) {
        let msg = Join {
            ltime: self.core.clock.time(),
            node: self.core.name.clone(),
        };
        self.core.clock.witness(msg.ltime);
        self.core.handle_join_intent(&msg, now);
        self.core
            .intent_queue
            .queue(None, messages::encode(&SerfMessage::Join(msg)), None);
    }

    fn advance_leave(&mut self, now: Instant) {
        loop {
            let sent = self.core.notified.remove(&LEAVE_NOTIFY);
            let next = match self.core.phase {
                LeavePhase::Intent { until }
                    if now >= until || sent || !self.core.intent_queue.is_pending(LEAVE_NOTIFY) =>
                {
                    if now >= until {
                        warn!("timeout while waiting for graceful leave");
                    }
                    self.ml.leave(now, &mut self.core);
                    LeavePhase::Memberlist {
                        until: later(now, self.config.broadcast_timeout),
                    }
                }
                LeavePhase::Memberlist { until } if now >= until || !self.ml.leave_pending() => {
                    LeavePhase::Propagate {
                        until: later(now, self.config.leave_propagate_delay),
                    }
                }
                LeavePhase::Propagate { until } if now >= until => {
                    self.core.outcomes.push_back(Outcome::LeaveComplete);
                    LeavePhase::Left
                }
                _ => return,
            };
            self.core.phase = next;
        }
    }
}

impl Core {
    fn any_other_alive(&self) -> bool {
        self.members
            .values()
            .any(|m| m.member.name != self.name && m.member.status == MemberStatus::Alive)
    }

    fn emit(&mut self, kind: MemberEventKind, member: Member) {
        if let Some(snap) = self.snapshot.as_mut() {
            snap.member_event(kind, std::slice::from_ref(&member), self.clock.time());
        }
        self.events.push_back(Event::Member(MemberEvent {
            kind,
            members: vec![member],
        }));
    }

    /// Records an intent about a node we do not know yet; true if it was news.
    fn upsert_intent(&mut self, node: &str, kind: IntentKind, ltime: u64, now: Instant) -> bool {
        match self.intents.get(node) {
            Some(i) if ltime <= i.ltime => false,
            None if self.intents.len() >= MAX_NODES => {
                if self
                    .stats
                    .drops
                    .record("intents for unknown nodes over limit")
                {
                    warn!("over {MAX_NODES} intents about unknown nodes; dropping new ones (logged once)");
                }
                false
            }
            _ => {
                self.intents.insert(
                    node.to_owned(),
                    Intent {
                        kind,
                        ltime,
                        at: now,
                    },
                );
                true
            }
        }
    }

    /// Members `leaving` for over [`LEAVING_TIMEOUT`] that memberlist still sees alive are alive
    /// again: the leave never happened (or was forged and never refuted).
    fn expire_leaving(&mut self, now: Instant, ml: &Memberlist) {
        let stale: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.member.status == MemberStatus::Leaving
                    && m.leaving_since
                        .is_some_and(|t| now.saturating_duration_since(t) > LEAVING_TIMEOUT)
                    && ml
                        .node(&m.member.name)
                        .is_some_and(|n| n.state == ml::NodeStateKind::Alive)
            })
            .map(|m| m.member.name.clone())
            .collect();
        for name in stale {
            if let Some(m) = self.members.get_mut(&name) {
                warn!(node = %name, "member has been leaving for over {LEAVING_TIMEOUT:?} but is still alive; listing it alive again");
                m.member.status = MemberStatus::Alive;
                m.leaving_since = None;
            }
        }
    }

    /// Drops a message whose Lamport time is too far ahead of ours to be honest (see
    /// [`crate::clock::MAX_LTIME_JUMP`]). Returns false: nothing to re-gossip.
    fn incredible_ltime(&mut self, what: &'static str, ltime: u64, ours: u64) -> bool {
        if self.stats.drops.record("incredible lamport time") {
            warn!(
                ltime,
                ours,
                "serf: dropped a {what} from the far future (logged once; later ones are only counted)"
            );
        } else {
            debug!(ltime, ours, "serf: dropped a {what} from the far future");
        }
        false
    }

    /// Go's `checkQueueDepth`: a broadcast queue over `max` loses its most-sent messages. Run
    /// after every input, so a queue is never over its bound for longer than one input.
    fn check_queue_depth(&mut self, max: usize) {
        for (name, queue) in [
            ("Intent", &mut self.intent_queue),
            ("Event", &mut self.event_queue),
            ("Query", &mut self.query_queue),
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
                    warn!("serf: {name} queue depth ({len}) exceeds limit ({max}), dropping messages (logged once)");
                }
            }
        }
    }

    fn expire_intents(&mut self, now: Instant) {
        let timeout = self.recent_intent_timeout;
        self.intents
            .retain(|_, i| now.saturating_duration_since(i.at) < timeout);
    }

    /// Serf's `handleNodeJoinIntent`; true if the intent should be re-gossiped.
    fn handle_join_intent(&mut self, msg: &Join, now: Instant) -> bool {
        if !self.clock.credible(msg.ltime) {
            return self.incredible_ltime("join intent", msg.ltime, self.clock.time());
        }
        self.clock.witness(msg.ltime);
        let Some(member) = self.members.get(&msg.node) else {
            return self.upsert_intent(&msg.node, IntentKind::Join, msg.ltime, now);
        };
        if msg.ltime <= member.status_ltime {
            return false;
        }
        let Some(member) = self.members.get_mut(&msg.node) else {
            return false; // found just above
        };
        member.status_ltime = msg.ltime;
        if member.member.status == MemberStatus::Leaving {
            member.member.status = MemberStatus::Alive;
        }
        true
    }

    /// Serf's `handleNodeLeaveIntent`; true if the intent should be re-gossiped.
    fn handle_leave_intent(&mut self, msg: &Leave, now: Instant) -> bool {
        if !self.clock.credible(msg.ltime) {
            return self.incredible_ltime("leave intent", msg.ltime, self.clock.time());
        }
        self.clock.witness(msg.ltime);
        let Some(member) = self.members.get(&msg.node) else {
            return self.upsert_intent(&msg.node, IntentKind::Leave, msg.ltime, now);
        };
        if msg.ltime <= member.status_ltime {
            return false;
        }
        if msg.node == self.name && self.phase == LeavePhase::Running {
            debug!("refuting an older leave intent");
            let join = Join {
                ltime: self.clock.time(),
                node: self.name.clone(),
            };
            self.clock.witness(join.ltime);
            self.handle_join_intent(&join, now);
            self.intent_queue
                .queue(None, messages::encode(&SerfMessage::Join(join)), None);
            return false;
        }
        let Some(member) = self.members.get_mut(&msg.node) else {
            return false; // found just above
        };
        // Always witnessed, so a second leave for the same member is not re-gossiped forever.
        member.status_ltime = msg.ltime;
        match member.member.status {
            MemberStatus::Alive => {
                member.member.status = MemberStatus::Leaving;
                member.leaving_since = Some(now);
                if msg.prune {
                    self.prune(&msg.node, now);
                }
                true
            }
            MemberStatus::Failed => {
                member.member.status = MemberStatus::Left;
                let m = member.member.clone();
                info!(node = %m.name, addr = %m.addr, "EventMemberLeave (forced)");
                self.emit(MemberEventKind::Leave, m);
                if msg.prune {
                    self.prune(&msg.node, now);
                }
                true
            }
            MemberStatus::Leaving | MemberStatus::Left => {
                if msg.prune {
                    self.prune(&msg.node, now);
                }
                true
            }
            MemberStatus::None => false,
        }
    }

    /// Serf's `handlePrune`: a leaving member is erased once its leave has had time to settle;
    /// a failed or left one at once.
    fn prune(&mut self, node: &str, now: Instant) {
        let Some(m) = self.members.get(node) else {
            return;
        };
        if m.member.status == MemberStatus::Leaving {
            self.prunes
                .insert(node.to_owned(), later(now, self.prune_delay));
        } else {
            self.erase(node);
        }
    }

    /// Erases members whose pruning delay has passed.
    fn finish_prunes(&mut self, now: Instant) {
        let due: Vec<String> = self
            .prunes
            .iter()
            .filter(|(_, at)| now >= **at)
            .map(|(n, _)| n.clone())
            .collect();
        for node in due {
            self.prunes.remove(&node);
            // A member that refuted the leave (a join intent put it back to alive) stays: a
            // forged leave intent with prune must not erase a live node (issue 11).
            let refuted = self
                .members
                .get(&node)
                .is_some_and(|m| m.member.status == MemberStatus::Alive);
            if refuted {
                debug!(%node, "not pruning a member that is alive again");
                continue;
            }
            self.erase(&node);
        }
    }

    /// Serf's `eraseNode`: forgets the member and its coordinates, and says so (`member-reap`).
    fn erase(&mut self, node: &str) {
        let Some(state) = self.members.remove(node) else {
            return;
        };
        let m = state.member;
        info!(node = %m.name, addr = %m.addr, "EventMemberReap (forced)");
        self.coord_cache.remove(node);
        if let Some(c) = self.coord.as_mut() {
            c.forget(node);
        }
        self.emit(MemberEventKind::Reap, m);
    }

    fn handle_message(&mut self, msg: SerfMessage, raw: &[u8], now: Instant) {
        match &msg {
            SerfMessage::Join(j) => {
                if self.handle_join_intent(j, now) {
                    self.intent_queue.queue(None, raw.to_vec(), None);
                }
            }
            SerfMessage::Leave(l) => {
                if self.handle_leave_intent(l, now) {
                    self.intent_queue.queue(None, raw.to_vec(), None);
                }
            }
            SerfMessage::UserEvent(e) => {
                if self.handle_user_event(e) {
                    self.event_queue.queue(None, raw.to_vec(), None);
                }
            }
            SerfMessage::Query(q) => {
                if self.handle_query(q, now) {
                    self.query_queue.queue(None, raw.to_vec(), None);
                }
            }
            SerfMessage::QueryResponse(r) => self.handle_query_response(r),
            SerfMessage::Relay(r) => {
                debug!(dest = %r.dest, name = %r.dest_name, "relaying a query response");
                self.outbox.push((r.dest, r.inner.clone()));
            }
            other => debug!(?other, "serf message not handled yet"),
        }
    }

    /// Serf's `handleQuery`: true if the query is new and should be re-gossiped (even when our
    /// filters say we do not process it).
    fn handle_query(&mut self, q: &QueryMsg, now: Instant) -> bool {
        if !self.query_clock.credible(q.ltime) {
            return self.incredible_ltime("query", q.ltime, self.query_clock.time());
        }
        self.query_clock.witness(q.ltime);
        if q.ltime < self.query_min_time {
            return false;
        }
        let window = EVENT_BUFFER_SIZE as u64;
        let cur = self.query_clock.time();
        if cur > window && q.ltime < cur.saturating_sub(window) {
            warn!(name = %q.name, ltime = q.ltime, current = cur, "received old query");
            return false;
        }
        let Some(slot) = self.query_buffer.get_mut(ring_slot(q.ltime)) else {
            return false;
        };
        match slot {
            Some((ltime, ids)) if *ltime == q.ltime => {
                if ids.contains(&q.id) {
                    return false;
                }
                ids.push(q.id);
            }
            _ => *slot = Some((q.ltime, vec![q.id])),
        }
        let rebroadcast = q.flags & messages::QUERY_FLAG_NO_BROADCAST == 0;
        if !self.should_process(&q.filters) {
            return rebroadcast;
        }
        if let Some(snap) = self.snapshot.as_mut() {
            snap.query(q.ltime);
        }
        let reply_to = SocketAddr::new(q.addr, q.port);
        let timeout = Duration::from_nanos(q.timeout);
        if timeout > MAX_QUERY_TIMEOUT && self.stats.drops.record("query timeout capped") {
            warn!(
                name = %q.name.escape_debug(),
                ?timeout,
                "query asks to stay answerable for over {MAX_QUERY_TIMEOUT:?}; capped (logged once)"
            );
        }
        let deadline = later(now, timeout.min(MAX_QUERY_TIMEOUT));
        if self.inbound_queries.len() >= MAX_PENDING_QUERIES {
            if let Some((&oldest, _)) = self.inbound_queries.iter().min_by_key(|(_, q)| q.deadline)
            {
                self.inbound_queries.remove(&oldest);
            }
            if self.stats.drops.record("pending queries over limit") {
                warn!("over {MAX_PENDING_QUERIES} queries pending an answer; forgetting the oldest (logged once)");
            }
        }
        self.inbound_queries.insert(
            (q.ltime, q.id),
            InboundQuery {
                reply_to,
                relay_factor: q.relay_factor,
                deadline,
            },
        );
        if q.flags & messages::QUERY_FLAG_ACK != 0 {
            // Acks always fit: they carry no payload.
            let _ = self.respond(q.ltime, q.id, &[], QueryResponseFlags::Ack, now, usize::MAX);
        }
        if q.name.starts_with(INTERNAL_QUERY_PREFIX) {
            // `_serf_ping` needs only the ack; key queries need the keyring, which memberlist
            // holds, so `Serf` answers them after this input. `_serf_conflict` is not answered
            // yet: its sender counts us as not responding.
            debug!(name = %q.name, "internal query");
            if KeyOp::from_query(&q.name).is_some() {
                self.key_queries
                    .push((q.ltime, q.id, q.name.clone(), q.payload.clone()));
            } else if q.name == CONFLICT_QUERY {
                // Tell the asker where we believe the named node is (never about ourselves).
                let node = String::from_utf8_lossy(&q.payload).into_owned();
                if node != self.name {
                    let known = self.members.get(&node).map(|m| m.member.clone());
                    let body = messages::encode_conflict_response(known.as_ref());
                    let limit = usize::MAX;
                    if let Err(e) =
                        self.respond(q.ltime, q.id, &body, QueryResponseFlags::Answer, now, limit)
                    {
                        warn!(error = %e, "failed to answer a conflict query");
                    }
                }
                self.inbound_queries.remove(&(q.ltime, q.id));
            } else {
                self.inbound_queries.remove(&(q.ltime, q.id));
            }
        } else {
            self.events.push_back(Event::Query(Query {
                ltime: q.ltime,
                id: q.id,
                name: q.name.clone(),
                payload: q.payload.clone(),
                source_node: q.source_node.clone(),
                deadline,
            }));
        }
        rebroadcast
    }

    /// Whether every filter matches us; an unreadable filter or bad regex means no.
    fn should_process(&self, filters: &[Vec<u8>]) -> bool {
        filters.iter().all(|f| match messages::decode_filter(f) {
            Some(Filter::Nodes(names)) => names.contains(&self.name),
            Some(Filter::Tag { tag, expr }) => {
                let value = self.config_tags.get(&tag).map_or("", String::as_str);
                regex::Regex::new(&expr).is_ok_and(|re| re.is_match(value))
            }
            None => {
                warn!("query has an unrecognized filter");
                false
            }
        })
    }

    /// Sends an ack or an answer straight to the query's source, and through relays.
    fn respond(
        &mut self,
        ltime: u64,
        id: u32,
        payload: &[u8],
        kind: QueryResponseFlags,
        now: Instant,
        limit: usize,
    ) -> Result<(), RespondError> {
        let Some(q) = self.inbound_queries.get(&(ltime, id)).cloned() else {
            return Err(RespondError::PastDeadline);
        };
        if now > q.deadline {
            return Err(RespondError::PastDeadline);
        }
        let resp = QueryResponseMsg {
            ltime,
            id,
            from: self.name.clone(),
            flags: kind as u32,
            payload: payload.to_vec(),
        };
        let raw = messages::encode(&SerfMessage::QueryResponse(resp));
        if raw.len() > limit {
            return Err(RespondError::TooLarge(limit));
        }
        self.outbox.push((q.reply_to, raw.clone()));
        if kind == QueryResponseFlags::Answer {
            // One answer only: a second one finds the query gone.
            self.inbound_queries.remove(&(ltime, id));
        }
        self.relay(q.relay_factor, q.reply_to, raw, limit)
    }

    /// Also sends `raw` (`05 …`) through `factor` random alive peers that understand relays.
    fn relay(
        &mut self,
        factor: u8,
        dest: SocketAddr,
        raw: Vec<u8>,
        limit: usize,
    ) -> Result<(), RespondError> {
        if factor == 0 || self.members.len() < usize::from(factor).saturating_add(1) {
            return Ok(());
        }
        let msg = messages::encode(&SerfMessage::Relay(messages::Relay {
            dest,
            dest_name: String::new(),
            inner: raw,
        }));
        if msg.len() > limit {
            return Err(RespondError::RelayTooLarge(limit));
        }
        let mut peers: Vec<SocketAddr> = self
            .members
            .values()
            .map(|m| &m.member)
            .filter(|m| m.status == MemberStatus::Alive && m.vsn[1] >= 5 && m.name != self.name)
            .map(|m| SocketAddr::new(m.addr, m.port))
            .collect();
        for _ in 0..factor {
            if peers.is_empty() {
                break;
            }
            let peer = peers.swap_remove(self.rng.gen_range(0..peers.len()));
            self.outbox.push((peer, msg.clone()));
        }
        Ok(())
    }

    /// Serf's `handleQueryResponse`: acks and answers for our own queries, once per node.
    fn handle_query_response(&mut self, r: &QueryResponseMsg) {
        if let Some(vote) = self.conflict_vote.as_mut().filter(|v| v.ltime == r.ltime) {
            // Go checks the ID too; we also count only members we know (not ourselves), once
            // each, so one forger cannot answer under a thousand names.
            let voter = r.from != self.name
                && self.members.get(&r.from).is_some_and(|m| {
                    matches!(m.member.status, MemberStatus::Alive | MemberStatus::Leaving)
                });
            if r.id != vote.id || !voter {
                if self.stats.drops.record("conflict answer from a non-voter") {
                    warn!(from = %r.from.escape_debug(), "ignoring a name conflict answer with a wrong query ID or from a node that is not a live member (logged once)");
                }
                return;
            }
            if r.flags & messages::QUERY_FLAG_ACK == 0 && vote.voters.insert(r.from.clone()) {
                if let Some(addr) = messages::decode_conflict_response(&r.payload) {
                    // At most one each per known member (`voters` dedupes).
                    vote.responses = vote.responses.saturating_add(1);
                    vote.matching = vote.matching.saturating_add(usize::from(addr == vote.me));
                }
            }
            return;
        }
        let Some(q) = self.own_queries.get_mut(&r.ltime) else {
            debug!(ltime = r.ltime, from = %r.from, "reply for a query that is not running");
            return;
        };
        if q.id != r.id {
            warn!(ltime = r.ltime, "query reply ID mismatch");
            return;
        }
        if r.flags & messages::QUERY_FLAG_ACK != 0 {
            if q.acks.insert(r.from.clone()) {
                self.outcomes.push_back(Outcome::QueryAck {
                    ltime: r.ltime,
                    from: r.from.clone(),
                });
            }
        } else if q.responses.insert(r.from.clone()) {
            self.outcomes.push_back(Outcome::QueryResponse {
                ltime: r.ltime,
                from: r.from.clone(),
                payload: r.payload.clone(),
            });
        }
    }

    fn expire_queries(&mut self, now: Instant) {
        let done: Vec<u64> = self
            .own_queries
            .iter()
            .filter(|(_, q)| now >= q.deadline)
            .map(|(l, _)| *l)
            .collect();
        for ltime in done {
            self.own_queries.remove(&ltime);
            if self
                .conflict_vote
                .as_ref()
                .is_some_and(|v| v.ltime == ltime)
            {
                let Some(vote) = self.conflict_vote.take() else {
                    continue;
                };
                let majority = (vote.responses / 2).saturating_add(1);
                if vote.responses == 0 {
                    // Go Serf 0.9.4 counts "0 of 0" as a lost vote and exits, so one forged alive
                    // could stop a lone agent. Nobody vouched for the other claimant either.
                    warn!("no member answered the name conflict query; keeping our name");
                } else if vote.matching >= majority {
                    info!(
                        matching = vote.matching,
                        responses = vote.responses,
                        "majority in name conflict resolution"
                    );
                } else {
                    warn!(
                        matching = vote.matching,
                        responses = vote.responses,
                        "minority in name conflict resolution, quitting"
                    );
                    self.outcomes.push_back(Outcome::Shutdown(format!(
                        "node name '{}' is claimed by another node and a majority of the cluster knows that one \
                         ({} of {} answers name our address); pick a unique -node name",
                        self.name, vote.matching, vote.responses
                    )));
                }
                continue;
            }
            self.outcomes.push_back(Outcome::QueryDone { ltime });
        }
        self.inbound_queries.retain(|_, q| now <= q.deadline);
    }

    /// Serf's `handleUserEvent`: true if the event is new (and so worth re-gossiping).
    fn handle_user_event(&mut self, e: &UserEvent) -> bool {
        if !self.event_clock.credible(e.ltime) {
            return self.incredible_ltime("user event", e.ltime, self.event_clock.time());
        }
        self.event_clock.witness(e.ltime);
        if e.ltime < self.event_min_time {
            return false;
        }
        let window = EVENT_BUFFER_SIZE as u64;
        let cur = self.event_clock.time();
        if cur > window && e.ltime < cur.saturating_sub(window) {
            warn!(name = %e.name, ltime = e.ltime, current = cur, "received old event");
            return false;
        }
        let Some(slot) = self.event_buffer.get_mut(ring_slot(e.ltime)) else {
            return false;
        };
        let entry = UserEventEntry {
            name: e.name.clone(),
            payload: e.payload.clone(),
        };
        match slot {
            Some(seen) if seen.ltime == e.ltime => {
                if seen.events.contains(&entry) {
                    return false;
                }
                seen.events.push(entry);
            }
            _ => {
                *slot = Some(UserEvents {
                    ltime: e.ltime,
                    events: vec![entry],
                })
            }
        }
        if let Some(snap) = self.snapshot.as_mut() {
            snap.user_event(e.ltime);
        }
        self.events.push_back(Event::User(e.clone()));
        true
    }

    fn member_from_node(&self, n: &Node) -> Member {
        Member {
            name: n.name.clone(),
            addr: n.addr,
            port: n.port,
            tags: tags::decode(&n.meta),
            status: MemberStatus::Alive,
            vsn: n.vsn,
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

impl Delegate for Core {
    fn node_meta(&mut self, _limit: usize) -> Vec<u8> {
        tags::encode(&self.config_tags)
            // Empty tags always fit; the empty fallback is never reached.
            .unwrap_or_else(|_| tags::encode(&BTreeMap::new()).unwrap_or_default())
    }

    fn notify_message(&mut self, msg: &[u8], now: Instant) {
        match messages::decode(msg) {
            Ok(m) => self.handle_message(m, msg, now),
            Err(e) => debug!(error = %e, "dropping malformed serf message"),
        }
    }

    /// Intents first, then queries, then user events, as Go pulls them.
    fn broadcasts(&mut self, overhead: usize, limit: usize) -> Vec<Vec<u8>> {
        let n = self.members.len();
        let mult = self.retransmit_mult;
        let mut msgs = self.intent_queue.get_broadcasts(overhead, limit, mult, n);
        for queue in [&mut self.query_queue, &mut self.event_queue] {
            let used = msgs
                .iter()
                .map(|m| m.len().saturating_add(overhead))
                .fold(0, usize::saturating_add);
            let rest = limit.saturating_sub(used);
            msgs.extend(queue.get_broadcasts(overhead, rest, mult, n));
        }
        msgs
    }

    fn local_state(&mut self, _join: bool) -> Vec<u8> {
        let state = PushPullState {
            ltime: self.clock.time(),
            status_ltimes: self
                .members
                .iter()
                .map(|(n, m)| (n.clone(), m.status_ltime))
                .collect(),
            left_members: self
                .members
                .values()
                .filter(|m| m.member.status == MemberStatus::Left)
                .map(|m| m.member.name.clone())
                .collect(),
            event_ltime: self.event_clock.time(),
            events: self.event_buffer.clone(),
            query_ltime: self.query_clock.time(),
        };
        messages::encode(&SerfMessage::PushPull(state))
    }

    fn merge_remote_state(&mut self, buf: &[u8], join: bool, now: Instant) {
        let state = match messages::decode(buf) {
            Ok(SerfMessage::PushPull(s)) => s,
            Ok(_) => return debug!("remote state has bad type prefix"),
            Err(e) => return debug!(error = %e, "failed to decode remote state"),
        };
        let clocks = [
            (self.clock, state.ltime),
            (self.event_clock, state.event_ltime),
            (self.query_clock, state.query_ltime),
        ];
        if let Some((clock, t)) = clocks.into_iter().find(|(c, t)| !c.credible(*t)) {
            let ours = clock.time();
            self.incredible_ltime("push/pull state", t, ours);
            return;
        }
        self.clock.witness(state.ltime.saturating_sub(1));
        self.event_clock
            .witness(state.event_ltime.saturating_sub(1));
        self.query_clock
            .witness(state.query_ltime.saturating_sub(1));
        for name in &state.left_members {
            let ltime = state
                .status_ltimes
                .get(name)
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            self.handle_leave_intent(
                &Leave {
                    ltime,
                    node: name.clone(),
                    prune: false,
                },
                now,
            );
        }
        for (name, &ltime) in &state.status_ltimes {
            if !state.left_members.contains(name) {
                self.handle_join_intent(
                    &Join {
                        ltime,
                        node: name.clone(),
                    },
                    now,
                );
            }
        }
        // A join that ignores old events starts listening at the cluster's event time.
        if join && !self.ignoring_joins.is_empty() {
            self.event_min_time = self.event_min_time.max(state.event_ltime);
        }
        for slot in state.events.iter().flatten() {
            for e in &slot.events {
                let msg = UserEvent {
                    ltime: slot.ltime,
                    name: e.name.clone(),
                    payload: e.payload.clone(),
                    cc: false,
                };
                self.handle_user_event(&msg);
            }
        }
    }

    fn notify_join(&mut self, n: &Node, now: Instant) {
        let fresh = self.member_from_node(n);
        let intent = self.intents.get(&n.name).copied();
        let member = match self.members.get_mut(&n.name) {
            None => {
                let mut state = MemberState {
                    member: fresh,
                    status_ltime: 0,
                    leave_time: None,
                    leaving_since: None,
                };
                if let Some(i) = intent {
                    state.status_ltime = i.ltime;
                    if i.kind == IntentKind::Leave {
                        state.member.status = MemberStatus::Leaving;
                        state.leaving_since = Some(now);
                    }
                }
                self.members.insert(n.name.clone(), state);
                let Some(member) = self.members.get(&n.name) else {
                    return; // inserted just above
                };
                member
            }
            Some(state) => {
                let down = state.leave_time.map(|t| now.saturating_duration_since(t));
                if state.member.status == MemberStatus::Failed
                    && down.is_some_and(|d| d < self.flap_timeout)
                {
                    self.stats.member_flaps = self.stats.member_flaps.saturating_add(1);
                    info!(
                        target: "vassal_serf::stats",
                        node = %n.name,
                        flaps = self.stats.member_flaps,
                        "member flapped: failed and back alive within {:?}",
                        self.flap_timeout
                    );
                }
                state.member = Member {
                    status: MemberStatus::Alive,
                    ..fresh
                };
                state.leave_time = None;
                &*state
            }
        };
        let m = member.member.clone();
        info!(node = %m.name, addr = %m.addr, "EventMemberJoin");
        self.emit(MemberEventKind::Join, m);
    }

    fn notify_leave(&mut self, n: &Node, now: Instant) {
        let Some(state) = self.members.get_mut(&n.name) else {
            return;
        };
        let kind = match state.member.status {
            MemberStatus::Leaving => {
                state.member.status = MemberStatus::Left;
                MemberEventKind::Leave
            }
            MemberStatus::Alive => {
                state.member.status = MemberStatus::Failed;
                MemberEventKind::Failed
            }
            other => {
                warn!(node = %n.name, status = %other, "bad state when leave");
                return;
            }
        };
        state.leave_time = Some(now);
        let m = state.member.clone();
        info!(node = %m.name, addr = %m.addr, event = %kind, "member left or failed");
        self.emit(kind, m);
    }

    fn notify_update(&mut self, n: &Node, _now: Instant) {
        let fresh = self.member_from_node(n);
        let Some(state) = self.members.get_mut(&n.name) else {
            return;
        };
        state.member.addr = fresh.addr;
        state.member.port = fresh.port;
        state.member.tags = fresh.tags;
        state.member.vsn = fresh.vsn;
        let m = state.member.clone();
        info!(node = %m.name, "EventMemberUpdate");
        self.emit(MemberEventKind::Update, m);
    }

    fn ack_payload(&mut self) -> Vec<u8> {
        self.coord
            .as_ref()
            .map_or_else(Vec::new, |c| c.coordinate().to_ack_payload())
    }

    /// A timely direct ack: fold its RTT into our coordinate and remember the peer's.
    fn notify_ping_complete(&mut self, node: &Node, rtt: Duration, payload: &[u8]) {
        let Some(client) = self.coord.as_mut() else {
            return;
        };
        if payload.is_empty() {
            return;
        }
        let other = match Coordinate::from_ack_payload(payload) {
            Ok(c) => c,
            Err(e) => return debug!(node = %node.name, error = %e, "failed to decode coordinate"),
        };
        if let Err(e) = client.update(&node.name, &other, rtt, &mut self.rng) {
            return debug!(node = %node.name, error = %e, "rejected coordinate");
        }
        self.coord_cache.insert(node.name.clone(), other);
    }

    fn notify_conflict(&mut self, existing: &Node, other: &Node, _now: Instant) {
        if existing.name == self.name && self.resolve_conflicts {
            warn!(other = %other.socket_addr(), "node name conflicts with another node; names must be unique");
            self.conflict_seen = true;
        }
        warn!(
            "{}",
            format!(
                "name conflict for '{}': known at {}, claimed by {}",
                existing.name,
                existing.socket_addr(),
                other.socket_addr()
            )
        );
    }
}
