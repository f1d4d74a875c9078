//! Queries (spec §4.7): the ones we send (Go's `Query` and `QueryResponse`, collecting acks
//! and answers until the deadline) and the ones we receive (Go's `handleQuery`: dedup,
//! filters, ack, one answer, relays). Serf's own `_serf_` queries are in `internal_query.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{debug, warn};
use vassal_memberlist::broadcast::TransmitLimitedQueue;
use vassal_memberlist::limits::later;
use vassal_memberlist::{self as ml};

use super::internal_query::INTERNAL_QUERY_PREFIX;
use super::{before_buffer, ring_slot, Core, Event, Outcome, Serf, EVENT_BUFFER_SIZE};
use crate::clock::LamportClock;
use crate::member::MemberStatus;
use crate::messages::{self, Filter, QueryMsg, QueryResponseMsg, SerfMessage};

/// Longest a query from a peer may ask us to keep it answerable. Go keeps whatever it is told
/// (`u64::MAX` ns is five centuries); an honest query lasts seconds, a slow handler minutes.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most queries from peers we keep answerable at once; past it the oldest are forgotten (their
/// answers refused as past the deadline).
pub const MAX_PENDING_QUERIES: usize = 1024;

/// A query received from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The query's Lamport time; with `id`, what [`Serf::respond`] needs.
    pub ltime: u64,
    /// The sender's random ID for the query.
    pub id: u32,
    /// The query's name.
    pub name: String,
    /// The query's payload.
    pub payload: Vec<u8>,
    /// The node that sent the query.
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
    /// Our protocol version is below 4, which has no queries.
    #[error("Feature not supported")]
    FeatureNotSupported,
    /// The encoded query exceeds [`Config::query_size_limit`](super::Config).
    #[error("query exceeds limit of {0} bytes")]
    TooLarge(usize),
}

/// Why an answer was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    /// Also after a first answer: only one is allowed.
    #[error("response is past the deadline")]
    PastDeadline,
    /// The encoded answer exceeds [`Config::query_response_size_limit`](super::Config).
    #[error("response exceeds limit of {0} bytes")]
    TooLarge(usize),
    /// The answer wrapped for relaying exceeds the response size limit.
    #[error("relayed response exceeds limit of {0} bytes")]
    RelayTooLarge(usize),
}

/// A query we sent, collecting acks and answers until its deadline (Go's `QueryResponse`).
#[derive(Debug, Clone)]
pub(super) struct OwnQuery {
    pub(super) id: u32,
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

/// The two kinds of query response (the `Flags` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QueryResponseFlags {
    Answer = 0,
    Ack = 1,
}

/// The query side of [`Core`].
#[derive(Debug)]
pub(super) struct Queries {
    /// Go's `queryClock`.
    pub(super) clock: LamportClock,
    /// Queries to gossip (Go's `queryBroadcasts`).
    pub(super) queue: TransmitLimitedQueue,
    /// `LTime mod 512` → the query IDs seen at that time (Go's `queryBuffer`).
    buffer: Vec<Option<(u64, Vec<u32>)>>,
    /// Our queries still running, by Lamport time (Go's `queryResponse`).
    pub(super) own: BTreeMap<u64, OwnQuery>,
    /// Queries from others we may still answer, by Lamport time and ID.
    inbound: BTreeMap<(u64, u32), InboundQuery>,
    /// Queries older than this are ignored (Go's `queryMinTime`: a snapshot's query clock).
    pub(super) min_time: u64,
}

impl Queries {
    pub(super) fn new() -> Self {
        Queries {
            clock: LamportClock::new(),
            queue: TransmitLimitedQueue::new(),
            buffer: vec![None; EVENT_BUFFER_SIZE],
            own: BTreeMap::new(),
            inbound: BTreeMap::new(),
            min_time: 0,
        }
    }

    /// The timers this state waits for.
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        let own = self.own.values().map(|q| q.deadline);
        own.chain(self.inbound.values().map(|q| q.deadline))
    }

    /// Forgets a query we received: it will not be answered.
    pub(super) fn forget_inbound(&mut self, ltime: u64, id: u32) {
        self.inbound.remove(&(ltime, id));
    }

    /// Records a query as seen; false if it was already (Go's `queryBuffer` check).
    fn first_sighting(&mut self, ltime: u64, id: u32) -> bool {
        let Some(slot) = self.buffer.get_mut(ring_slot(ltime)) else {
            return false;
        };
        match slot {
            Some((seen, ids)) if *seen == ltime => {
                if ids.contains(&id) {
                    return false;
                }
                ids.push(id);
            }
            _ => *slot = Some((ltime, vec![id])),
        }
        true
    }
}

impl Serf {
    /// The default query timeout for the current cluster size (spec §4.7; Go's
    /// `DefaultQueryTimeout`): a query must outlast gossip reaching every node, which grows
    /// with log(n).
    pub fn default_query_timeout(&self) -> Duration {
        let suspect = (self.ml.members())
            .filter(|m| m.state == ml::NodeStateKind::Suspect)
            .count();
        let n = self.ml.num_alive().saturating_add(suspect);
        let scale = ((n as f64) + 1.0).log10().ceil().max(1.0) as u32;
        (self.config.memberlist.gossip_interval)
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
        let timeout = (params.timeout)
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
            ltime: self.core.queries.clock.time(),
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
        let own = OwnQuery {
            id: q.id,
            deadline: later(now, timeout),
            acks: BTreeSet::new(),
            responses: BTreeSet::new(),
        };
        self.core.queries.own.insert(q.ltime, own);
        self.core.handle_query(&q, now);
        // Besides the gossip, straight to some members (memberlist's `direct_fanout`): gossip
        // never repairs a query that missed a node.
        self.ml.send_user_to_some(&raw);
        self.core.queries.queue.queue(None, raw, None);
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
        let limit = self.config.query_response_size_limit;
        let r = (self.core).respond(ltime, id, payload, QueryResponseFlags::Answer, now, limit);
        self.after_input(now);
        r
    }
}

impl Core {
    /// Serf's `handleQuery`: true if the query is new and should be re-gossiped (even when our
    /// filters say we do not process it: the nodes behind us may match).
    pub(super) fn handle_query(&mut self, q: &QueryMsg, now: Instant) -> bool {
        let queries = &mut self.queries;
        if !queries.clock.credible(q.ltime) {
            let ours = queries.clock.time();
            return self.incredible_ltime("query", q.ltime, ours);
        }
        queries.clock.witness(q.ltime);
        if q.ltime < queries.min_time {
            return false;
        }
        let cur = queries.clock.time();
        if before_buffer(q.ltime, cur) {
            warn!(
                "serf: received old query {} from time {} (current: {cur})",
                q.name, q.ltime
            );
            return false;
        }
        if !queries.first_sighting(q.ltime, q.id) {
            return false;
        }
        // Go counts every new query, before its filters, `_serf_` ones included.
        metrics::counter!("serf.queries").increment(1);
        metrics::counter!("serf.queries", "name" => q.name.clone()).increment(1);
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
        let inbound = &mut self.queries.inbound;
        if inbound.len() >= MAX_PENDING_QUERIES {
            if let Some((&oldest, _)) = inbound.iter().min_by_key(|(_, q)| q.deadline) {
                inbound.remove(&oldest);
            }
            if self.stats.drops.record("pending queries over limit") {
                warn!("over {MAX_PENDING_QUERIES} queries pending an answer; forgetting the oldest (logged once)");
            }
        }
        let pending = InboundQuery {
            reply_to,
            relay_factor: q.relay_factor,
            deadline,
        };
        self.queries.inbound.insert((q.ltime, q.id), pending);
        if q.flags & messages::QUERY_FLAG_ACK != 0 {
            // Acks always fit: they carry no payload.
            let _ = self.respond(q.ltime, q.id, &[], QueryResponseFlags::Ack, now, usize::MAX);
        }
        if q.name.starts_with(INTERNAL_QUERY_PREFIX) {
            self.handle_internal_query(q, now);
        } else {
            self.events.push_back(Event::Query(super::Query {
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

    /// Whether every filter matches us (Go's `shouldProcessQuery`); an unreadable filter or bad
    /// regex means no.
    fn should_process(&self, filters: &[Vec<u8>]) -> bool {
        filters.iter().all(|f| match messages::decode_filter(f) {
            Some(Filter::Nodes(names)) => names.contains(&self.name),
            Some(Filter::Tag { tag, expr }) => {
                let value = self.config_tags.get(&tag).map_or("", String::as_str);
                regex::Regex::new(&expr).is_ok_and(|re| re.is_match(value))
            }
            None => {
                warn!("serf: query has an unrecognized filter");
                false
            }
        })
    }

    /// Go's `Query.respond`: sends an ack or an answer straight to the query's source, and
    /// through relays.
    pub(super) fn respond(
        &mut self,
        ltime: u64,
        id: u32,
        payload: &[u8],
        kind: QueryResponseFlags,
        now: Instant,
        limit: usize,
    ) -> Result<(), RespondError> {
        let Some(q) = self.queries.inbound.get(&(ltime, id)).cloned() else {
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
            self.queries.inbound.remove(&(ltime, id));
        }
        self.relay(q.relay_factor, q.reply_to, raw, limit)
    }

    /// Go's `relayResponse`: also sends `raw` (`05 …`) through `factor` random alive peers
    /// that understand relays, so an answer survives one lossy path to the asker.
    fn relay(
        &mut self,
        factor: u8,
        dest: SocketAddr,
        raw: Vec<u8>,
        limit: usize,
    ) -> Result<(), RespondError> {
        let states = &self.members.states;
        if factor == 0 || states.len() < usize::from(factor).saturating_add(1) {
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
        let mut peers: Vec<SocketAddr> = (states.values())
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
    pub(super) fn handle_query_response(&mut self, r: &QueryResponseMsg) {
        if self.conflict_response(r) {
            return;
        }
        let Some(q) = self.queries.own.get_mut(&r.ltime) else {
            debug!(ltime = r.ltime, from = %r.from, "reply for a query that is not running");
            return;
        };
        if q.id != r.id {
            warn!(
                "serf: query reply ID mismatch (Local: {}, Response: {})",
                q.id, r.id
            );
            return;
        }
        if r.flags & messages::QUERY_FLAG_ACK != 0 {
            if q.acks.insert(r.from.clone()) {
                metrics::counter!("serf.query_acks").increment(1);
                self.outcomes.push_back(Outcome::QueryAck {
                    ltime: r.ltime,
                    from: r.from.clone(),
                });
            } else {
                metrics::counter!("serf.query_duplicate_acks").increment(1);
            }
        } else if q.responses.insert(r.from.clone()) {
            metrics::counter!("serf.query_responses").increment(1);
            self.outcomes.push_back(Outcome::QueryResponse {
                ltime: r.ltime,
                from: r.from.clone(),
                payload: r.payload.clone(),
            });
        } else {
            metrics::counter!("serf.query_duplicate_responses").increment(1);
        }
    }

    /// Ends our queries past their deadline (Go's `QueryResponse.Close` after the timer) and
    /// forgets received ones nobody may answer any more.
    pub(super) fn expire_queries(&mut self, now: Instant) {
        let done: Vec<u64> = (self.queries.own.iter())
            .filter(|(_, q)| now >= q.deadline)
            .map(|(l, _)| *l)
            .collect();
        for ltime in done {
            self.queries.own.remove(&ltime);
            if !self.finish_conflict_vote(ltime) {
                self.outcomes.push_back(Outcome::QueryDone { ltime });
            }
        }
        self.queries.inbound.retain(|_, q| now <= q.deadline);
    }
}
