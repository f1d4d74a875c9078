//! Member states and intents (spec §4.5), reaping and reconnecting (spec §4.12): Go Serf's
//! `handleNodeJoin`, `handleNodeLeave`, `handleNodeUpdate`, `handleNodeJoinIntent`,
//! `handleNodeLeaveIntent`, `handlePrune`, `eraseNode`, `handleReap`, `reconnect` and
//! `handleRejoin`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{debug, info, warn};
use vassal_memberlist::broadcast::TransmitLimitedQueue;
use vassal_memberlist::limits::{later, MAX_NODES};
use vassal_memberlist::{self as ml, JoinId, Memberlist, Node};

use super::leave::LeavePhase;
use super::{Config, Core, Event, Serf};
use crate::member::{Member, MemberEventKind, MemberStatus};
use crate::messages::{self, Join, Leave, SerfMessage};
use crate::tags;

/// Longest a member stays `leaving` on a leave intent while memberlist still sees it alive. An
/// honest graceful leave reaches memberlist within the broadcast timeout (5 s) plus the
/// propagation delay; a forged intent that never reached its subject (so was never refuted)
/// would otherwise leave it `leaving` here for good, drained by every balancer (issue 11).
pub const LEAVING_TIMEOUT: Duration = Duration::from_secs(60);

/// Go's `memberState`: a member and the Lamport time of the last intent about it.
#[derive(Debug, Clone)]
pub(super) struct MemberState {
    pub(super) member: Member,
    pub(super) status_ltime: u64,
    /// When it failed or left: the reap timers count from here.
    pub(super) leave_time: Option<Instant>,
    /// When a leave intent made this member `leaving`; see [`LEAVING_TIMEOUT`].
    pub(super) leaving_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IntentKind {
    Join,
    Leave,
}

/// Go's `nodeIntent`: an intent about a node memberlist has not told us of yet (`recentIntents`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Intent {
    pub(super) kind: IntentKind,
    pub(super) ltime: u64,
    pub(super) at: Instant,
}

/// The member table and everything that changes it.
#[derive(Debug)]
pub(super) struct Members {
    /// A persistent map, like memberlist's table: clones share structure until they diverge.
    /// Read with `get` first; `get_mut` copies the path to the entry even if nothing changes.
    /// Entries are behind an `Arc` (changed through [`Members::state_mut`]) so the tree's
    /// nodes stay small: with the states inline, one insert held several 12 KiB nodes on the
    /// stack, about 80 KiB of it that stayed resident in every agent.
    pub(super) states: imbl::OrdMap<String, Arc<MemberState>>,
    /// Intents about nodes we do not know yet, applied when memberlist announces them.
    pub(super) intents: BTreeMap<String, Intent>,
    /// Join and leave intents to gossip (Go's `broadcasts`).
    pub(super) intent_queue: TransmitLimitedQueue,
    recent_intent_timeout: Duration,
    /// Members leaving with a prune: erased at this time (Serf waits for the leave to settle).
    pub(super) prunes: BTreeMap<String, Instant>,
    /// How long a pruned leaving member is kept: broadcast timeout + propagate delay.
    prune_delay: Duration,
    flap_timeout: Duration,
    pub(super) next_reap: Instant,
    pub(super) next_reconnect: Instant,
}

impl Members {
    pub(super) fn new(config: &Config, now: Instant) -> Self {
        Members {
            states: imbl::OrdMap::new(),
            intents: BTreeMap::new(),
            intent_queue: TransmitLimitedQueue::new(),
            recent_intent_timeout: config.recent_intent_timeout,
            prunes: BTreeMap::new(),
            prune_delay: config
                .broadcast_timeout
                .saturating_add(config.leave_propagate_delay),
            flap_timeout: config.flap_timeout,
            next_reap: later(now, config.reap_interval),
            next_reconnect: later(now, config.reconnect_interval),
        }
    }

    /// `name`'s state, to change (copied first if a clone of the table shares it).
    pub(super) fn state_mut(&mut self, name: &str) -> Option<&mut MemberState> {
        self.states.get_mut(name).map(Arc::make_mut)
    }

    /// The timers this state waits for.
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        (self.prunes.values().copied()).chain([self.next_reap, self.next_reconnect])
    }
}

/// Joins [`Serf`] starts on its own, whose results are not reported upward.
#[derive(Debug, Default)]
pub(super) struct Rejoins {
    /// Joins started by [`Serf::reconnect`].
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
    /// Simulation support: takes `template`'s membership view (memberlist's node table and
    /// Serf's member list) as ours, as if we had merged a push/pull with it and its gossip had
    /// died down; no events are raised and nothing is queued. Both tables stay shared with the
    /// template until one side changes an entry. See [`Memberlist::adopt_table`] for what is
    /// refused; here our own member entry must also match the template's.
    #[cfg(feature = "sim")]
    pub fn adopt_view(&mut self, template: &Serf) -> Result<(), String> {
        let name = &self.core.name;
        let states = &self.core.members.states;
        if states.len() != 1 {
            return Err(format!(
                "{name} already knows {} members; only a fresh node can adopt a view",
                states.len()
            ));
        }
        let mine =
            (states.get(name)).ok_or_else(|| format!("{name} is not among its own members"))?;
        let theirs = (template.core.members.states.get(name))
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
        self.core.members.states = template.core.members.states.clone();
        let (core, theirs) = (&mut self.core, &template.core);
        for (ours, theirs) in [
            (&mut core.clock, &theirs.clock),
            (&mut core.user_events.clock, &theirs.user_events.clock),
            (&mut core.queries.clock, &theirs.queries.clock),
        ] {
            ours.witness(theirs.time().saturating_sub(1));
        }
        Ok(())
    }

    /// Whether two nodes' views are still one shared structure (simulation memory checks).
    #[cfg(feature = "sim")]
    pub fn shares_view_with(&self, other: &Serf) -> bool {
        self.ml.shares_table_with(&other.ml)
            && (self.core.members.states).ptr_eq(&other.core.members.states)
    }

    /// Go's `handleReap`: forgets failed members after the reconnect timeout and left ones
    /// after the tombstone timeout, raising `member-reap` (spec §4.12). Go keeps a left member
    /// this long so a late gossip about it is recognised as old rather than re-adding it.
    pub(super) fn reap(&mut self, now: Instant) {
        self.core.expire_leaving(now, &self.ml);
        let (reconnect, tombstone) = (self.config.reconnect_timeout, self.config.tombstone_timeout);
        let expired: Vec<String> = (self.core.members.states.values())
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
            self.core.erase(&name, "EventMemberReap");
        }
    }

    /// Go's `reconnect`: with probability failed/alive, tries a memberlist join to one random
    /// failed member, so partitions heal (spec §4.12). No join intent is broadcast for it.
    pub(super) fn reconnect(&mut self, now: Instant) {
        let states = &self.core.members.states;
        let failed: Vec<&Member> = (states.values())
            .map(|m| &m.member)
            .filter(|m| m.status == MemberStatus::Failed)
            .collect();
        if failed.is_empty() {
            return;
        }
        let left = (states.values())
            .filter(|m| m.member.status == MemberStatus::Left)
            .count();
        // failed and left are disjoint subsets of members.
        let alive = (states.len())
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
        info!("serf: attempting reconnect to {} {addr}", m.name);
        let id = self.ml.join(&[addr], now, &mut self.core);
        self.rejoins.reconnects.insert(id);
    }

    /// Serf's `Create` with a snapshot: rejoins the members it recorded alive, in random order
    /// so restarting nodes do not all pick the same peer.
    pub(super) fn start_rejoin(&mut self, mut previous: Vec<(String, SocketAddr)>, now: Instant) {
        if previous.is_empty() {
            return;
        }
        for i in (1..previous.len()).rev() {
            let j = self.core.rng.gen_range(0..=i);
            previous.swap(i, j);
        }
        self.rejoin_next(previous, now);
    }

    /// Serf's `handleRejoin`: a memberlist join (no join intent, old events not ignored beyond
    /// the snapshot's clocks) to the first of `nodes`; the rest are tried if it fails.
    fn rejoin_next(&mut self, mut nodes: Vec<(String, SocketAddr)>, now: Instant) {
        if nodes.is_empty() {
            warn!("serf: Failed to re-join any previously known node");
            return;
        }
        let node = nodes.remove(0);
        info!(
            "serf: Attempting re-join to previously known node: {}: {}",
            node.0, node.1
        );
        let id = self.ml.join(&[node.1], now, &mut self.core);
        self.rejoins.rejoin = Some(Rejoin {
            id,
            node,
            rest: nodes,
        });
    }

    /// Handles the end of a join we started ourselves (reconnect, snapshot rejoin); false if
    /// the join was the user's.
    pub(super) fn own_join_finished(
        &mut self,
        id: JoinId,
        joined: usize,
        errors: &[String],
        now: Instant,
    ) -> bool {
        if self.rejoins.reconnects.remove(&id) {
            debug!(joined, ?errors, "reconnect attempt finished");
            return true;
        }
        let Some(r) = self.rejoins.rejoin.take_if(|r| r.id == id) else {
            return false;
        };
        let (name, addr) = &r.node;
        if joined > 0 {
            info!("serf: Re-joined to previously known node: {name}: {addr}");
        } else {
            debug!(?errors, "re-join to {name}: {addr} failed");
            self.rejoin_next(r.rest, now);
        }
        true
    }

    /// Go's `broadcastJoin`: after a successful [`Serf::join`], tells the cluster with a fresh
    /// join intent, which also refutes any older leave intent about us still circulating.
    pub(super) fn broadcast_join(&mut self, now: Instant) {
        let msg = Join {
            ltime: self.core.clock.time(),
            node: self.core.name.clone(),
        };
        self.core.clock.witness(msg.ltime);
        self.core.handle_join_intent(&msg, now);
        let raw = messages::encode(&SerfMessage::Join(msg));
        self.core.members.intent_queue.queue(None, raw, None);
    }
}

impl Core {
    pub(super) fn any_other_alive(&self) -> bool {
        (self.members.states.values())
            .any(|m| m.member.name != self.name && m.member.status == MemberStatus::Alive)
    }

    /// Records a member event in the snapshot and hands it up.
    pub(super) fn emit(&mut self, kind: MemberEventKind, member: Member) {
        if let Some(snap) = self.snapshot.as_mut() {
            snap.member_event(kind, std::slice::from_ref(&member), self.clock.time());
        }
        self.events.push_back(Event::Member(crate::MemberEvent {
            kind,
            members: vec![member],
        }));
    }

    /// Go's `handleNodeJoin` (memberlist's `NotifyJoin`): a node is alive. A new member takes
    /// the status of a buffered intent about it (Go's `recentIntent`), because gossip may bring
    /// the intent before memberlist brings the node; a failed member back within the flap
    /// timeout counts as a flap.
    pub(super) fn handle_node_join(&mut self, n: &Node, now: Instant) {
        let fresh = member_from_node(n);
        let intent = self.members.intents.get(&n.name).copied();
        let flap_timeout = self.members.flap_timeout;
        let states = &mut self.members.states;
        let member = match states.get_mut(&n.name).map(Arc::make_mut) {
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
                let m = state.member.clone();
                states.insert(n.name.clone(), Arc::new(state));
                m
            }
            Some(state) => {
                let down = state.leave_time.map(|t| now.saturating_duration_since(t));
                if state.member.status == MemberStatus::Failed
                    && down.is_some_and(|d| d < flap_timeout)
                {
                    self.stats.member_flaps = self.stats.member_flaps.saturating_add(1);
                    metrics::counter!("serf.member.flap").increment(1);
                    info!(
                        "serf: member {} flapped: failed and back alive within {flap_timeout:?} \
                         ({} flaps)",
                        n.name, self.stats.member_flaps
                    );
                }
                state.member = Member {
                    status: MemberStatus::Alive,
                    ..fresh
                };
                state.leave_time = None;
                state.member.clone()
            }
        };
        metrics::counter!("serf.member.join").increment(1);
        info!("serf: EventMemberJoin: {} {}", member.name, member.addr);
        self.emit(MemberEventKind::Join, member);
    }

    /// Go's `handleNodeLeave` (memberlist's `NotifyLeave`): memberlist declared the node dead.
    /// A member that announced its leave (`leaving`) has left; an alive one has failed, unless
    /// memberlist's own verdict is that the node left: it declared itself dead.
    ///
    /// Not in Go, which waits for the Serf leave intent to call a member left: a node whose
    /// intent had not reached us when its memberlist leave did (both are gossip; a busy machine
    /// delays either) was reported failed, and left only when the intent came later, or at
    /// the next push/pull if gossip had moved on (71 s in one of ten leaves at N = 100,
    /// bench/RESULTS.md). A `dead` that names its own sender is the node's own word, as good as
    /// its intent.
    pub(super) fn handle_node_leave(&mut self, n: &Node, now: Instant) {
        let Some(state) = self.members.state_mut(&n.name) else {
            return;
        };
        let kind = match state.member.status {
            MemberStatus::Leaving => {
                state.member.status = MemberStatus::Left;
                MemberEventKind::Leave
            }
            MemberStatus::Alive if n.state == ml::NodeStateKind::Left => {
                state.member.status = MemberStatus::Left;
                MemberEventKind::Leave
            }
            MemberStatus::Alive => {
                state.member.status = MemberStatus::Failed;
                MemberEventKind::Failed
            }
            other => {
                warn!("serf: Bad state when leave: {other} ({})", n.name);
                return;
            }
        };
        state.leave_time = Some(now);
        let m = state.member.clone();
        // Go names the counter after the new status: `serf.member.left` or `.failed`.
        let what = match kind {
            MemberEventKind::Leave => {
                metrics::counter!("serf.member.left").increment(1);
                "EventMemberLeave"
            }
            _ => {
                metrics::counter!("serf.member.failed").increment(1);
                "EventMemberFailed"
            }
        };
        info!("serf: {what}: {} {}", m.name, m.addr);
        self.emit(kind, m);
    }

    /// Go's `handleNodeUpdate` (memberlist's `NotifyUpdate`): new address, tags or versions.
    pub(super) fn handle_node_update(&mut self, n: &Node) {
        let fresh = member_from_node(n);
        let Some(state) = self.members.state_mut(&n.name) else {
            return;
        };
        state.member.addr = fresh.addr;
        state.member.port = fresh.port;
        state.member.tags = fresh.tags;
        state.member.vsn = fresh.vsn;
        let m = state.member.clone();
        metrics::counter!("serf.member.update").increment(1);
        info!("serf: EventMemberUpdate: {}", m.name);
        self.emit(MemberEventKind::Update, m);
    }

    /// Go's `upsertIntent`: records an intent about a node we do not know yet; true if it was
    /// news. Only the newest intent per node is kept (an older one loses).
    fn upsert_intent(&mut self, node: &str, kind: IntentKind, ltime: u64, now: Instant) -> bool {
        match self.members.intents.get(node) {
            Some(i) if ltime <= i.ltime => false,
            None if self.members.intents.len() >= MAX_NODES => {
                if (self.stats.drops).record("intents for unknown nodes over limit") {
                    warn!("over {MAX_NODES} intents about unknown nodes; dropping new ones (logged once)");
                }
                false
            }
            _ => {
                let intent = Intent {
                    kind,
                    ltime,
                    at: now,
                };
                self.members.intents.insert(node.to_owned(), intent);
                true
            }
        }
    }

    /// Members `leaving` for over [`LEAVING_TIMEOUT`] that memberlist still sees alive are alive
    /// again: the leave never happened (or was forged and never refuted).
    fn expire_leaving(&mut self, now: Instant, ml: &Memberlist) {
        let stale: Vec<String> = (self.members.states.values())
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
            if let Some(m) = self.members.state_mut(&name) {
                warn!(node = %name, "member has been leaving for over {LEAVING_TIMEOUT:?} but is still alive; listing it alive again");
                m.member.status = MemberStatus::Alive;
                m.leaving_since = None;
            }
        }
    }

    /// Go's `handleReap` of `recentIntents`: intents about nodes that never showed up expire.
    pub(super) fn expire_intents(&mut self, now: Instant) {
        let timeout = self.members.recent_intent_timeout;
        (self.members.intents).retain(|_, i| now.saturating_duration_since(i.at) < timeout);
    }

    /// Serf's `handleNodeJoinIntent`; true if the intent should be re-gossiped.
    pub(super) fn handle_join_intent(&mut self, msg: &Join, now: Instant) -> bool {
        if !self.clock.credible(msg.ltime) {
            return self.incredible_ltime("join intent", msg.ltime, self.clock.time());
        }
        self.clock.witness(msg.ltime);
        let Some(member) = self.members.states.get(&msg.node) else {
            return self.upsert_intent(&msg.node, IntentKind::Join, msg.ltime, now);
        };
        // An intent no newer than what we know is old news (Lamport order, not arrival order).
        if msg.ltime <= member.status_ltime {
            return false;
        }
        let Some(member) = self.members.state_mut(&msg.node) else {
            return false; // found just above
        };
        member.status_ltime = msg.ltime;
        if member.member.status == MemberStatus::Leaving {
            member.member.status = MemberStatus::Alive;
        }
        true
    }

    /// Serf's `handleNodeLeaveIntent`; true if the intent should be re-gossiped.
    pub(super) fn handle_leave_intent(&mut self, msg: &Leave, now: Instant) -> bool {
        if !self.clock.credible(msg.ltime) {
            return self.incredible_ltime("leave intent", msg.ltime, self.clock.time());
        }
        self.clock.witness(msg.ltime);
        let Some(member) = self.members.states.get(&msg.node) else {
            return self.upsert_intent(&msg.node, IntentKind::Leave, msg.ltime, now);
        };
        if msg.ltime <= member.status_ltime {
            return false;
        }
        // A leave intent about us while we are not leaving is stale (an earlier life of this
        // node) or forged: refute it with a newer join intent, as Go does.
        if msg.node == self.name && self.leave.phase == LeavePhase::Running {
            debug!("refuting an older leave intent");
            let join = Join {
                ltime: self.clock.time(),
                node: self.name.clone(),
            };
            self.clock.witness(join.ltime);
            self.handle_join_intent(&join, now);
            let raw = messages::encode(&SerfMessage::Join(join));
            self.members.intent_queue.queue(None, raw, None);
            return false;
        }
        let Some(member) = self.members.state_mut(&msg.node) else {
            return false; // found just above
        };
        // Always witnessed, so a second leave for the same member is not re-gossiped forever.
        member.status_ltime = msg.ltime;
        match member.member.status {
            MemberStatus::Alive => {
                // memberlist will tell us when it is gone (`handle_node_leave` makes it left).
                member.member.status = MemberStatus::Leaving;
                member.leaving_since = Some(now);
                if msg.prune {
                    self.prune(&msg.node, now);
                }
                true
            }
            MemberStatus::Failed => {
                // A force-leave: a failed member is declared left at once.
                member.member.status = MemberStatus::Left;
                let m = member.member.clone();
                info!("serf: EventMemberLeave (forced): {} {}", m.name, m.addr);
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
        let Some(m) = self.members.states.get(node) else {
            return;
        };
        if m.member.status == MemberStatus::Leaving {
            let at = later(now, self.members.prune_delay);
            self.members.prunes.insert(node.to_owned(), at);
        } else {
            self.erase(node, "EventMemberReap (forced)");
        }
    }

    /// Erases members whose pruning delay has passed.
    pub(super) fn finish_prunes(&mut self, now: Instant) {
        let due: Vec<String> = (self.members.prunes.iter())
            .filter(|(_, at)| now >= **at)
            .map(|(n, _)| n.clone())
            .collect();
        for node in due {
            self.members.prunes.remove(&node);
            // A member that refuted the leave (a join intent put it back to alive) stays: a
            // forged leave intent with prune must not erase a live node (issue 11).
            let refuted = (self.members.states.get(&node))
                .is_some_and(|m| m.member.status == MemberStatus::Alive);
            if refuted {
                debug!(%node, "not pruning a member that is alive again");
                continue;
            }
            self.erase(&node, "EventMemberReap (forced)");
        }
    }

    /// Serf's `eraseNode`: forgets the member and its coordinates, and says so (`member-reap`).
    /// The one erase path, for reaping (`Serf::reap`) and pruning alike; `log` says which, as
    /// Go's two log lines do.
    pub(super) fn erase(&mut self, node: &str, log: &'static str) {
        let Some(state) = self.members.states.remove(node) else {
            return;
        };
        let m = Arc::unwrap_or_clone(state).member;
        if log == "EventMemberReap" {
            info!("serf: EventMemberReap: {}", m.name);
        } else {
            info!("serf: {log}: {} {}", m.name, m.addr);
        }
        self.coords.forget(node);
        self.emit(MemberEventKind::Reap, m);
    }
}

/// A member as memberlist announces it: alive, with its tags decoded from the node metadata.
fn member_from_node(n: &Node) -> Member {
    Member {
        name: n.name.clone(),
        addr: n.addr,
        port: n.port,
        tags: tags::decode(&n.meta),
        status: MemberStatus::Alive,
        vsn: n.vsn,
    }
}
