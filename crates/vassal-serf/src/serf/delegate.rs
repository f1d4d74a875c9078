//! [`Core`] as memberlist's [`Delegate`]: Go Serf's `delegate.go` (messages, broadcasts,
//! push/pull state), `event_delegate.go` (join/leave/update, handled in `members.rs`),
//! `ping_delegate.go` (Vivaldi coordinates in acks) and `conflict_delegate.go`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use vassal_memberlist::{Delegate, Node};

use super::Core;
use crate::coordinate::{self, Coordinate};
use crate::member::MemberStatus;
use crate::messages::{self, Join, Leave, PushPullState, SerfMessage, UserEvent};
use crate::tags;

/// Our Vivaldi coordinate and the last one each peer sent us (Go's `coordClient` and
/// `coordCache`).
#[derive(Debug)]
pub(super) struct Coords {
    /// `None` when coordinates are disabled.
    client: Option<coordinate::Client>,
    cache: BTreeMap<String, Coordinate>,
}

impl Coords {
    pub(super) fn new(enabled: bool) -> Self {
        Coords {
            client: enabled.then(coordinate::Client::default),
            cache: BTreeMap::new(),
        }
    }

    /// The last coordinate `node` sent us, or ours if `node` is `me`.
    pub(super) fn get(&self, me: &str, node: &str) -> Option<&Coordinate> {
        if node == me {
            return self.client.as_ref().map(coordinate::Client::coordinate);
        }
        self.cache.get(node)
    }

    /// How often our coordinate was reset after becoming invalid.
    pub(super) fn resets(&self) -> u64 {
        self.client.as_ref().map_or(0, |c| c.resets)
    }

    /// Forgets what we know of `node`'s coordinate (it was erased).
    pub(super) fn forget(&mut self, node: &str) {
        self.cache.remove(node);
        if let Some(c) = self.client.as_mut() {
            c.forget(node);
        }
    }
}

impl Core {
    /// Go's `delegate.NotifyMsg`: dispatches a gossiped Serf message; intents, events and
    /// queries that were news are queued to gossip on (that is how they spread).
    fn handle_message(&mut self, msg: SerfMessage, raw: &[u8], now: Instant) {
        match &msg {
            SerfMessage::Join(j) => {
                if self.handle_join_intent(j, now) {
                    self.members.intent_queue.queue(None, raw.to_vec(), None);
                }
            }
            SerfMessage::Leave(l) => {
                if self.handle_leave_intent(l, now) {
                    self.members.intent_queue.queue(None, raw.to_vec(), None);
                }
            }
            SerfMessage::UserEvent(e) => {
                if self.handle_user_event(e) {
                    self.user_events.queue.queue(None, raw.to_vec(), None);
                }
            }
            SerfMessage::Query(q) => {
                if self.handle_query(q, now) {
                    self.queries.queue.queue(None, raw.to_vec(), None);
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
}

impl Delegate for Core {
    fn node_meta(&mut self, _limit: usize) -> Vec<u8> {
        tags::encode(&self.config_tags)
            // Empty tags always fit; the empty fallback is never reached.
            .unwrap_or_else(|_| tags::encode(&BTreeMap::new()).unwrap_or_default())
    }

    fn notify_message(&mut self, msg: &[u8], now: Instant) {
        if !msg.is_empty() {
            // Go samples the size of every Serf message memberlist hands up.
            metrics::histogram!("serf.msgs.received").record(msg.len() as f64);
        }
        match messages::decode(msg) {
            Ok(m) => self.handle_message(m, msg, now),
            Err(e) => {
                metrics::counter!("vassal.drops", "reason" => "malformed serf message")
                    .increment(1);
                debug!(error = %e, "dropping malformed serf message")
            }
        }
    }

    /// Intents first, then queries, then user events, as Go's `GetBroadcasts` pulls them.
    fn broadcasts(&mut self, overhead: usize, limit: usize) -> Vec<Vec<u8>> {
        let n = self.members.states.len();
        let mult = self.retransmit_mult;
        let mut msgs = (self.members.intent_queue).get_broadcasts(overhead, limit, mult, n);
        for queue in [&mut self.queries.queue, &mut self.user_events.queue] {
            let used = (msgs.iter())
                .map(|m| m.len().saturating_add(overhead))
                .fold(0, usize::saturating_add);
            let rest = limit.saturating_sub(used);
            msgs.extend(queue.get_broadcasts(overhead, rest, mult, n));
        }
        // Go samples the size of every Serf message it hands memberlist to gossip.
        for m in &msgs {
            metrics::histogram!("serf.msgs.sent").record(m.len() as f64);
        }
        msgs
    }

    /// Go's `LocalState`: our clocks, every member's intent time, the left members, and the
    /// event buffer, so a joining node learns recent events (spec §4.11).
    fn local_state(&mut self, _join: bool) -> Vec<u8> {
        let states = &self.members.states;
        let state = PushPullState {
            ltime: self.clock.time(),
            status_ltimes: (states.iter())
                .map(|(n, m)| (n.clone(), m.status_ltime))
                .collect(),
            left_members: (states.values())
                .filter(|m| m.member.status == MemberStatus::Left)
                .map(|m| m.member.name.clone())
                .collect(),
            event_ltime: self.user_events.clock.time(),
            events: self.user_events.buffer.clone(),
            query_ltime: self.queries.clock.time(),
        };
        messages::encode(&SerfMessage::PushPull(state))
    }

    /// Go's `MergeRemoteState`: the peer's state is replayed as intents and events, so the
    /// usual rules (Lamport order, dedup) decide what is news.
    fn merge_remote_state(&mut self, buf: &[u8], join: bool, now: Instant) {
        let state = match messages::decode(buf) {
            Ok(SerfMessage::PushPull(s)) => s,
            Ok(_) => return debug!("remote state has bad type prefix"),
            Err(e) => return debug!(error = %e, "failed to decode remote state"),
        };
        let clocks = [
            (self.clock, state.ltime),
            (self.user_events.clock, state.event_ltime),
            (self.queries.clock, state.query_ltime),
        ];
        if let Some((clock, t)) = clocks.into_iter().find(|(c, t)| !c.credible(*t)) {
            let ours = clock.time();
            self.incredible_ltime("push/pull state", t, ours);
            return;
        }
        // Go witnesses LTime - 1: the peer's clock is the next time it will use.
        self.clock.witness(state.ltime.saturating_sub(1));
        (self.user_events.clock).witness(state.event_ltime.saturating_sub(1));
        (self.queries.clock).witness(state.query_ltime.saturating_sub(1));
        for name in &state.left_members {
            let ltime = (state.status_ltimes.get(name).copied())
                .unwrap_or(0)
                .saturating_add(1);
            let node = name.clone();
            self.handle_leave_intent(
                &Leave {
                    ltime,
                    node,
                    prune: false,
                },
                now,
            );
        }
        for (name, &ltime) in &state.status_ltimes {
            if !state.left_members.contains(name) {
                let node = name.clone();
                self.handle_join_intent(&Join { ltime, node }, now);
            }
        }
        // A join that ignores old events starts listening at the cluster's event time.
        if join && !self.user_events.ignoring_joins.is_empty() {
            let min = &mut self.user_events.min_time;
            *min = (*min).max(state.event_ltime);
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
        self.handle_node_join(n, now);
    }

    fn notify_leave(&mut self, n: &Node, now: Instant) {
        self.handle_node_leave(n, now);
    }

    fn notify_update(&mut self, n: &Node, _now: Instant) {
        self.handle_node_update(n);
    }

    fn ack_payload(&mut self) -> Vec<u8> {
        (self.coords.client.as_ref()).map_or_else(Vec::new, |c| c.coordinate().to_ack_payload())
    }

    /// A timely direct ack (Go's `pingDelegate.NotifyPingComplete`): fold its RTT into our
    /// coordinate and remember the peer's.
    fn notify_ping_complete(&mut self, node: &Node, rtt: Duration, payload: &[u8]) {
        let Some(client) = self.coords.client.as_mut() else {
            return;
        };
        if payload.is_empty() {
            return;
        }
        let other = match Coordinate::from_ack_payload(payload) {
            Ok(c) => c,
            Err(e) => return debug!(node = %node.name, error = %e, "failed to decode coordinate"),
        };
        let before = client.coordinate().clone();
        if let Err(e) = client.update(&node.name, &other, rtt, &mut self.rng) {
            metrics::counter!("serf.coordinate.rejected").increment(1);
            return debug!(node = %node.name, error = %e, "rejected coordinate");
        }
        // Go: how far this sample moved our coordinate, in milliseconds.
        let moved = before.distance_to(client.coordinate());
        metrics::histogram!("serf.coordinate.adjustment-ms")
            .record(vassal_memberlist::telemetry::millis(moved));
        self.coords.cache.insert(node.name.clone(), other);
    }

    /// Go's `conflictDelegate.NotifyConflict`: another address claims a known name. About our
    /// own name we may run a vote (`internal_query.rs`); any conflict is worth a warning.
    fn notify_conflict(&mut self, existing: &Node, other: &Node, _now: Instant) {
        if existing.name == self.name {
            self.name_conflict_seen(other.socket_addr());
        } else {
            warn!(
                "serf: Name conflict for '{}' both {} and {} are claiming",
                existing.name,
                existing.socket_addr(),
                other.socket_addr()
            );
        }
    }
}
