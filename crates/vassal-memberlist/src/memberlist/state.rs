//! The alive/suspect/dead rules with refutation (spec §3.3): Go memberlist's `aliveNode`,
//! `suspectNode`, `deadNode` and `refute` (`state.go`).
//!
//! Every claim about a node carries the incarnation its subject had when the claim was made.
//! Only the subject raises its own incarnation, and it does so to deny a claim (refutation), so
//! "newer incarnation wins" is how the cluster agrees without a leader: a suspicion or verdict
//! at incarnation `i` is overruled by an `alive` at `i + 1`, and anything older than what we
//! know is news the subject has already answered. On equal incarnations the worse state wins
//! (suspect over alive, dead over suspect), which is what lets an accusation stick at all.
//!
//! On top of Go's rules sit the hardening checks of issue 11 (see [`crate::limits`]): a peer's
//! word is a claim, so names must be sane, incarnations credible, the table bounded and a left
//! node's address not up for grabs at once. Each refusal is counted in [`Stats::drops`].
//!
//! [`Stats::drops`]: super::Stats::drops

use std::time::Instant;

use tracing::{debug, info, warn};

use super::{Memberlist, NodeState};
use crate::delegate::{Delegate, Node};
use crate::limits::{self, MAX_INCARNATION_JUMP};
use crate::suspicion::{suspicion_timeout, Suspicion};
use crate::wire::{self, Alive, Dead, Message, NodeStateKind, Suspect};

/// Where an `alive` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Our own announcement (`new`, `update_meta`): applied and gossiped, never refuted.
    Own,
    /// A peer's gossip, packet or push/pull.
    Peer(Relay),
}

/// Whether news learnt from a peer is gossiped on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Relay {
    /// As Go does for every `alive` that is news.
    Yes,
    /// Not for the push/pull of a join that starts from an empty table. Everything the seed
    /// lists is known to its cluster and gossiped there already; Go re-gossips all of it, so
    /// each newcomer adds a whole table to the broadcast queues and a burst of N joins queues
    /// N²/2 `alive` messages (each sent `retransmit_limit` times by every node). The newcomer
    /// still takes every entry in and reports the joins; only the re-gossip is left out.
    No,
}

impl Memberlist {
    /// memberlist's `aliveNode`: an `alive` about any node, ourselves included (spec §3.3).
    ///
    /// `source` tells our own announcements, which we apply and gossip rather than refute,
    /// from what peers tell us. The rules, in order: a name we can hold and an incarnation
    /// we can believe; valid versions; a table entry (new names are added, a different address
    /// for a known name is a conflict); then only news is applied, re-gossiped and reported.
    pub(super) fn alive_node(
        &mut self,
        a: Alive,
        source: Source,
        now: Instant,
        d: &mut impl Delegate,
    ) {
        let bootstrap = source == Source::Own;
        let is_local = a.node == self.config.name;
        // Once we have left we stay left: an `alive` about us still in flight (our own echo, or
        // a peer's push/pull listing us alive) must not make us rejoin behind the leave we just
        // gossiped. Go checks `hasLeft()` first thing for the same reason.
        if self.left && is_local {
            return;
        }
        // Issue 11: names end up in logs, handlers' input and the snapshot file, one per line;
        // an empty, huge or control-character name is refused before it reaches the table.
        // Go has no such check.
        if let Some(reason) = limits::invalid_node_name(&a.node) {
            return self.refuse(reason, &a.node, a.incarnation);
        }
        // Issue 11: an incarnation far above the one we know is not an honest peer being better
        // informed but a forger trying to outbid the node for good (at 2^32−1 it could never
        // refute again). See `credible`.
        if !self.credible(&a.node, a.incarnation) {
            return self.refuse("incredible incarnation", &a.node, a.incarnation);
        }
        // A node must speak some protocol range: Go drops an `alive` whose minimum or maximum
        // is zero or whose range is empty, since version negotiation (`verifyProtocol`) would
        // be meaningless with it in the table.
        let (pmin, pmax) = (a.vsn[0], a.vsn[1]);
        if pmin == 0 || pmax == 0 || pmin > pmax {
            debug!(node = %a.node, ?a.vsn, "ignoring alive with invalid protocol versions");
            return;
        }
        // Set when a known name is accepted at a new address (a left node that came back
        // elsewhere): that is news even at the same incarnation.
        let mut updates_node = false;
        let idx = match self.index.get(&a.node) {
            None => {
                // Issue 11: Go holds every name it hears of, so one forged push/pull could
                // make it keep millions; we stop at `MAX_NODES`.
                if self.nodes.len() >= limits::MAX_NODES {
                    return self.refuse("node table full", &a.node, a.incarnation);
                }
                // A new name enters as dead at incarnation 0, as in Go: the rules below then
                // see a dead node coming alive, which applies the `alive` whatever its
                // incarnation and reports a join, the same path as a node back from the dead.
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
                // At a random place in the probe order, so a newcomer is probed as soon on
                // average as anyone (appending would put every new node last).
                self.insert_node(state)
            }
            Some(&i) => {
                let Some(existing) = self.nodes.get(i) else {
                    return;
                };
                // Another address for a name we know. Names are identities, so two live
                // processes claiming one name is a conflict, not an update: believing the newer
                // claim would let anyone redirect a node's traffic by announcing its name.
                // Only a node that left may come back elsewhere (a new process, maybe on a new
                // host); for any other, the delegate hears of the conflict (Serf holds a vote
                // when the name is ours) and the `alive` is dropped. Go also lets a dead node
                // move after `DeadNodeReclaimTime`, which Serf leaves at zero (never).
                if existing.node.addr != a.addr || existing.node.port != a.port {
                    if existing.node.state == NodeStateKind::Left {
                        // Issue 11: not at once, unlike Go. A forged leave followed by a forged
                        // alive elsewhere would move a live node to the forger's address, and
                        // the node would then lose its own name-conflict vote. A live node
                        // refutes the leave well within `LEFT_NODE_RECLAIM_TIME` (dead and left
                        // nodes still hear gossip); a restarted one waits a little.
                        let left_for = now.saturating_duration_since(existing.state_change);
                        if left_for < limits::LEFT_NODE_RECLAIM_TIME {
                            return self.refuse(
                                "address change of a node that just left",
                                &a.node,
                                a.incarnation,
                            );
                        }
                        info!(
                            "memberlist: Updating address for left or failed node {} from {}:{} \
                             to {}:{}",
                            a.node, existing.node.addr, existing.node.port, a.addr, a.port
                        );
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
        // Only news counts. About another node, an `alive` at or below the incarnation we know
        // is old: the node already said so, or something worse was said at that incarnation
        // (suspect, dead) and an equal `alive` must not undo it; only the node itself can, by
        // refuting with a higher number. The exception is a left node's accepted new address.
        if a.incarnation <= state.incarnation && !is_local && !updates_node {
            return;
        }
        // About ourselves, an older incarnation is stale gossip of our own past. An equal one
        // is looked at below: it is usually our own echo, but may carry other meta or versions.
        if a.incarnation < state.incarnation && is_local {
            return;
        }
        // The node is alive at a newer incarnation (or we are about to refute): any suspicion
        // of it is answered, and its timer must not declare it dead later.
        self.suspicions.remove(&a.node);
        let old_state = state.node.state;
        let old_meta = state.node.meta.clone();
        if !bootstrap && is_local {
            // Someone else speaks for us. If it matches us exactly it is our own announcement
            // coming back. If not, a previous run of this node (killed, restarted with other
            // tags or versions) left the cluster believing something at this or a higher
            // incarnation than we hold; only we may say what we are, so we refute with a
            // higher one. Go's `aliveNode` explains the restart case in the same words.
            if a.incarnation == state.incarnation
                && a.meta == state.node.meta
                && a.vsn == state.node.vsn
            {
                return;
            }
            warn!(
                "memberlist: Refuting an alive message for '{}' ({}:{}) meta:({:?} VS {:?}), \
                 vsn:({:?} VS {:?})",
                a.node, a.addr, a.port, a.meta, state.node.meta, a.vsn, state.node.vsn
            );
            self.refute(a.incarnation, now);
        } else {
            // News: pass it on (replacing any queued message about the node, so the cluster
            // converges on the newest), then take it as ours.
            if source != Source::Peer(Relay::No) || is_local {
                self.broadcast(&a.node.clone(), Message::Alive(a.clone()), None);
            }
            let Some(state) = self.nodes.get_mut(idx) else {
                return;
            };
            state.node.vsn = a.vsn;
            state.incarnation = a.incarnation;
            state.node.meta = a.meta;
            state.node.addr = a.addr;
            state.node.port = a.port;
            // `state_change` dates the last change of state, not of incarnation: it times
            // dead-node removal and the left-node reclaim wait.
            if state.node.state != NodeStateKind::Alive {
                state.node.state = NodeStateKind::Alive;
                state.state_change = now;
            }
            if is_local {
                self.incarnation = self.incarnation.max(a.incarnation);
            }
        }
        // Go counts every `alive` applied or refuted here.
        metrics::counter!("memberlist.msg.alive").increment(1);
        // A node new to us, or back from dead or left, has joined; a live one (alive or suspect)
        // with new meta has been updated. Suspect back to alive is no event: for the layer
        // above the node never went away.
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
    ///
    /// A suspicion is not a verdict: the node gets the suspicion timeout (§3.5) to hear of it
    /// and refute, and only then do we declare it dead. Our own failed probes come here too,
    /// with `from` = us.
    pub(super) fn suspect_node(&mut self, s: Suspect, now: Instant) {
        // We never suspect a node we do not know: there is no entry to mark, and adding one
        // on an accuser's word would let anyone fill the table with names.
        let Some((idx, known)) = self.lookup(&s.node) else {
            return;
        };
        let was_alive = known.node.state == NodeStateKind::Alive;
        // Old news: the node has since announced a higher incarnation, so it answered this
        // accusation already (or outlived it).
        if s.incarnation < known.incarnation {
            return;
        }
        // Issue 11: an accusation far above the accused's known incarnation would force it to
        // refute at that height, and at 2^32−1 it could not refute at all. See `credible`.
        if !self.credible(&s.node, s.incarnation) {
            return self.refuse("incredible incarnation", &s.node, s.incarnation);
        }
        // A suspicion already running: a new accuser is an independent confirmation
        // (Lifeguard §IV-B), which shortens the timeout, and is re-gossiped once per accuser
        // so the other nodes' timers shorten too. Go re-gossips here even when the node is
        // suspect already, so confirmations flow when several nodes probe the same suspect.
        if let Some(timer) = self.suspicions.get_mut(&s.node) {
            if timer.confirm(&s.from) {
                debug!(node = %s.node, from = %s.from, confirmations = timer.confirmations(), "suspicion confirmed");
                self.broadcast(&s.node.clone(), Message::Suspect(s), None);
            }
            return;
        }
        // Only a live node can become suspect: a dead or left one is past suspicion (only its
        // own `alive` brings it back). A suspect one has its timer, handled just above.
        if !was_alive {
            return;
        }
        // About us: we are evidently running, so the accusation is wrong (a lost ack, a slow
        // peer, or a forger). Deny it with an `alive` at a higher incarnation, which overrules
        // the suspicion everywhere it spread; never mark ourselves suspect.
        if s.node == self.config.name {
            warn!(
                "memberlist: Refuting a suspect message (from: {})",
                s.from.escape_debug()
            );
            self.refute(s.incarnation, now);
            return;
        }
        // Spread the suspicion, so the accused hears of it (through any node) and can refute,
        // and so other nodes start their timers and confirm it.
        self.broadcast(&s.node.clone(), Message::Suspect(s.clone()), None);
        metrics::counter!("memberlist.msg.suspect").increment(1);
        let Some(state) = self.nodes.get_mut(idx) else {
            return;
        };
        state.incarnation = s.incarnation;
        state.node.state = NodeStateKind::Suspect;
        state.state_change = now;

        // Lifeguard's timer (§3.5): start at the maximum timeout and shrink towards the minimum
        // as independent confirmations arrive. Go aims for the nominal timeout two probe
        // intervals short of the multiplier (k = mult − 2 confirmations) and expects none when
        // fewer than k nodes besides us and the accused could give them; with k = 0 the timer
        // starts at the minimum, since waiting for confirmations that cannot come only delays
        // the verdict.
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

    /// A suspicion timer ran out (the `fn` Go's `suspectNode` hands its timer): the node did
    /// not refute in time, so we declare it dead on our own authority.
    pub(super) fn suspicion_expired(&mut self, name: &str, now: Instant, d: &mut impl Delegate) {
        let Some(s) = self.suspicions.remove(name) else {
            return;
        };
        let Some(state) = self.state_of(name) else {
            return;
        };
        // Only a node still suspect dies of it. Every rule that moves it on (a newer alive, a
        // dead or leave) removes its timer too, so this is a guard, as Go's check that the
        // state change is still the one the timer was started for.
        if state.node.state != NodeStateKind::Suspect {
            return;
        }
        info!(
            "memberlist: Marking {name} as failed, suspect timeout reached ({} peer confirmations)",
            s.confirmations()
        );
        if s.short_of_confirmations() {
            metrics::counter!("memberlist.degraded.timeout").increment(1);
        }
        // At the suspected incarnation and from us: a node that refutes later (at a higher
        // one) overrules this verdict, and `from` ≠ node makes it a failure, not a leave.
        let dead = Dead {
            incarnation: state.incarnation,
            node: name.to_owned(),
            from: self.config.name.clone(),
        };
        self.dead_node(dead, None, now, d);
    }

    /// memberlist's `deadNode` (spec §3.3): a failure verdict, or a leave when a node declares
    /// itself dead (`from == node`). `notify` tags the broadcast so `leave` can tell when our
    /// own leave has gone out.
    pub(super) fn dead_node(
        &mut self,
        dead: Dead,
        notify: Option<u64>,
        now: Instant,
        d: &mut impl Delegate,
    ) {
        // Nothing to bury: a node we do not know (or no longer know, §3.9) stays unknown.
        let Some((idx, known)) = self.lookup(&dead.node) else {
            return;
        };
        let was_gone = known.dead_or_left();
        // Old news: the node has since announced a higher incarnation, refuting this verdict
        // or coming back after it.
        if dead.incarnation < known.incarnation {
            return;
        }
        // Issue 11: as for suspicions, a verdict far above the known incarnation is a forgery
        // meant to leave the node no room to refute. See `credible`.
        if !self.credible(&dead.node, dead.incarnation) {
            return self.refuse("incredible incarnation", &dead.node, dead.incarnation);
        }
        // Whatever follows, a running suspicion is over: the verdict is in, or it is about a
        // node already gone, or we refute it below.
        self.suspicions.remove(&dead.node);
        // Dead or left already: keep the first verdict and its time (removal counts from it),
        // and do not gossip it again.
        if was_gone {
            return;
        }
        // About us, while we mean to stay: we are running, so refute. Once we have left, a
        // `dead` about us is our own leave (queued by `leave`, or its echo), applied below.
        if dead.node == self.config.name && !self.left {
            warn!(
                "memberlist: Refuting a dead message (from: {})",
                dead.from.escape_debug()
            );
            self.refute(dead.incarnation, now);
            return;
        }
        // A node that declares itself dead is leaving gracefully; anyone else's `dead` is a
        // failure verdict. Serf tells the two apart (member left vs failed) by this state.
        let left = dead.node == dead.from;
        let incarnation = dead.incarnation;
        self.broadcast(&dead.node.clone(), Message::Dead(dead), notify);
        metrics::counter!("memberlist.msg.dead").increment(1);
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
    ///
    /// Issue 11, not in Go: honest incarnations rise by one per refutation, so a peer is ahead
    /// of us only by the refutations we missed. Claims beyond that are dropped rather than
    /// believed, so no single message can push a node's incarnation to where it cannot refute.
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

    /// memberlist's `refute`: announces ourselves alive with an incarnation above the
    /// accusation (spec §3.3 Refute), which overrules a suspect or dead about us everywhere it
    /// has spread, since every node takes the higher incarnation.
    ///
    /// Saturates: at `u32::MAX` we can only repeat ourselves (Go wraps to 0, which every peer
    /// then ignores; the credibility margin keeps a forger from walking us there in fewer than
    /// millions of rounds).
    pub(super) fn refute(&mut self, accused: u32, now: Instant) {
        // Our next number, unless the accusation is at or above it (a previous run of ours
        // reached higher, or a peer raced us): then one past the accusation, as Go's
        // `skipIncarnation` does.
        let mut inc = self.next_incarnation();
        if accused >= inc {
            self.incarnation = accused.saturating_add(1);
            inc = self.incarnation;
        }
        self.stats.refutes = self.stats.refutes.saturating_add(1);
        // Lifeguard §IV-A: being accused suggests we are the slow one (missed or late acks), so
        // our health score rises and our probe deadlines stretch, making us slower to accuse
        // others while we may be the problem.
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
        // Our own news, so besides the gossip it goes straight to some members (see
        // `Config::direct_fanout`): a refutation that arrives after a holder's suspicion timer
        // has run out is a false `failed` verdict, and the node accused is often the busiest
        // one, slow to gossip. At most once a probe interval: accusations are input.
        let direct = (self.refuted_directly_at)
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.probe_interval)
            .then(|| wire::encode_message(&Message::Alive(a.clone())));
        self.broadcast(&self.config.name.clone(), Message::Alive(a), None);
        if let Some(direct) = direct {
            self.refuted_directly_at = Some(now);
            self.send_to_some(&direct);
        }
    }

    /// Raises our own incarnation by one (Go's `nextIncarnation`), saturating.
    pub(super) fn next_incarnation(&mut self) -> u32 {
        self.incarnation = self.incarnation.saturating_add(1);
        self.incarnation
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // `Instant::now()` is each test's epoch
mod tests {
    use std::time::{Duration, Instant};

    use crate::limits::LEFT_NODE_RECLAIM_TIME;
    use crate::test_support::{
        addr, advance, alive, deliver, node, node_with, packet, sent, suspect, Recorder,
    };
    use crate::wire::{Alive, Dead, Message};
    use crate::{NoDelegate, NodeStateKind};

    fn dead(node: &str, from: &str, incarnation: u32) -> Message {
        Message::Dead(Dead {
            incarnation,
            node: node.into(),
            from: from.into(),
        })
    }

    /// Go's `suspectNode` and `deadNode` hand an accusation about us to `refute` (spec §3.3
    /// Refute): at our own incarnation it is answered one higher, the peer that suspected us
    /// takes the refutation from our gossip, and we never mark ourselves suspect or dead.
    #[test]
    fn accusations_at_our_incarnation_are_refuted_and_the_refutation_clears_peers() {
        let mut now = Instant::now();
        let mut a = node("a", 1, now);
        let mut b = node("b", 2, now);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
        b.handle_packet(addr(1), &packet(&[alive("a", 1, 1)]), now, &mut NoDelegate);
        // c suspects a at a's own incarnation, and tells both.
        let accusation = packet(&[suspect("a", "c", 1)]);
        b.handle_packet(addr(3), &accusation, now, &mut NoDelegate);
        assert_eq!(b.node("a").unwrap().state, NodeStateKind::Suspect);
        a.handle_packet(addr(3), &accusation, now, &mut NoDelegate);
        assert_eq!(a.incarnation_of("a"), Some(2), "one past the accusation");
        assert_eq!(a.node("a").unwrap().state, NodeStateKind::Alive);
        assert_eq!(a.stats().refutes, 1);

        // The refutation rides a's next gossip round to b, which takes the higher incarnation.
        advance(&mut a, &mut now, Duration::from_millis(250));
        deliver(&mut a, &mut b, now);
        assert_eq!(b.node("a").unwrap().state, NodeStateKind::Alive);
        assert_eq!(b.incarnation_of("a"), Some(2));

        // A failure verdict at the new incarnation is refuted the same way.
        a.handle_packet(addr(3), &packet(&[dead("a", "c", 2)]), now, &mut NoDelegate);
        assert!(a.incarnation_of("a").unwrap() > 2);
        assert_eq!(a.node("a").unwrap().state, NodeStateKind::Alive);
        assert_eq!(a.stats().refutes, 2);
    }

    /// `aliveNode` about ourselves, Go's restart case: an `alive` at our incarnation that
    /// matches us is our own echo, ignored; one with other meta is what a previous run of this
    /// node left behind, and we refute it.
    #[test]
    fn an_alive_about_us_with_other_meta_is_refuted_and_our_echo_ignored() {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        let me = a.local_node().clone();
        let echo = Alive {
            incarnation: 1,
            node: me.name.clone(),
            addr: me.addr,
            port: me.port,
            meta: me.meta.clone(),
            vsn: me.vsn,
        };
        a.handle_packet(
            addr(2),
            &packet(&[Message::Alive(echo.clone())]),
            now,
            &mut NoDelegate,
        );
        assert_eq!((a.incarnation_of("a"), a.stats().refutes), (Some(1), 0));
        let old_run = Alive {
            meta: b"role=old".to_vec(),
            ..echo
        };
        a.handle_packet(
            addr(2),
            &packet(&[Message::Alive(old_run)]),
            now,
            &mut NoDelegate,
        );
        assert_eq!((a.incarnation_of("a"), a.stats().refutes), (Some(2), 1));
        assert_eq!(a.local_node().meta, me.meta, "we keep our own meta");
    }

    /// `suspectNode` and `deadNode` (spec §3.3): a claim below the incarnation we know is old
    /// news, since the node has announced a newer one since, and changes nothing.
    #[test]
    fn suspect_and_dead_below_the_known_incarnation_are_ignored() {
        let now = Instant::now();
        let mut rec = Recorder::default();
        let mut a = node_with("a", 1, now, &mut rec);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 5)]), now, &mut rec);
        a.handle_packet(
            addr(3),
            &packet(&[suspect("b", "c", 4), dead("b", "c", 4)]),
            now,
            &mut rec,
        );
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Alive);
        assert_eq!(a.incarnation_of("b"), Some(5));
        assert!(rec.leaves.is_empty(), "no leave for stale news: {rec:?}");
        // At the known incarnation the same claims count: the worse state wins a tie.
        a.handle_packet(addr(3), &packet(&[dead("b", "c", 5)]), now, &mut rec);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Dead);
        assert_eq!(rec.leaves, [("b".to_owned(), NodeStateKind::Dead)]);
    }

    /// Go's suspicion timer in `suspectNode`, ending in `deadNode` (spec §3.3, §3.5): with too
    /// few nodes to confirm it (k = 0) the timer runs the minimum timeout, 4 s for three nodes
    /// on LAN; an unrefuted suspect is then declared dead by us, reported and gossiped.
    #[test]
    fn unrefuted_suspicion_becomes_dead_after_the_timeout() {
        let start = Instant::now();
        let mut rec = Recorder::default();
        let mut a = node_with("a", 1, start, &mut rec);
        let peers = packet(&[alive("b", 2, 1), alive("c", 3, 1)]);
        a.handle_packet(addr(2), &peers, start, &mut rec);
        a.handle_packet(addr(3), &packet(&[suspect("b", "c", 1)]), start, &mut rec);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Suspect);

        a.handle_timeout(start + Duration::from_millis(3_999), &mut rec);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Suspect);
        assert!(rec.leaves.is_empty());
        a.handle_timeout(start + Duration::from_secs(4), &mut rec);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Dead);
        assert_eq!(rec.leaves, [("b".to_owned(), NodeStateKind::Dead)]);

        let mut now = start + Duration::from_secs(4);
        advance(&mut a, &mut now, Duration::from_millis(250));
        let verdict = sent(&mut a).into_iter().any(|(_, m)| {
            matches!(m, Message::Dead(d) if d.node == "b" && d.from == "a" && d.incarnation == 1)
        });
        assert!(verdict, "the verdict dead{{b, 1, from a}} was not gossiped");
    }

    /// Lifeguard §IV-B, Go's `suspicion.Confirm` via `suspectNode` (spec §3.5): in a ten-node
    /// table the timer starts at the maximum (24 s on LAN) and two independent accusers beyond
    /// the first bring it down to the minimum (4 s); a repeated accuser counts once.
    #[test]
    fn independent_confirmations_shorten_the_suspicion() {
        let start = Instant::now();
        let others: Vec<Message> = (2..=10).map(|i| alive(&format!("n{i}"), i, 1)).collect();
        let table = packet(&others);
        let mut lone = node("a", 1, start);
        let mut confirmed = node("a", 1, start);
        for ml in [&mut lone, &mut confirmed] {
            ml.handle_packet(addr(2), &table, start, &mut NoDelegate);
            assert_eq!(ml.num_nodes(), 10);
            ml.handle_packet(
                addr(3),
                &packet(&[suspect("n2", "n3", 1)]),
                start,
                &mut NoDelegate,
            );
        }
        let confirmations = packet(&[
            suspect("n2", "n4", 1),
            suspect("n2", "n4", 1),
            suspect("n2", "n5", 1),
        ]);
        confirmed.handle_packet(addr(4), &confirmations, start, &mut NoDelegate);

        let at_min = start + Duration::from_secs(4);
        lone.handle_timeout(at_min, &mut NoDelegate);
        confirmed.handle_timeout(at_min, &mut NoDelegate);
        assert_eq!(lone.node("n2").unwrap().state, NodeStateKind::Suspect);
        assert_eq!(confirmed.node("n2").unwrap().state, NodeStateKind::Dead);

        lone.handle_timeout(start + Duration::from_secs(24), &mut NoDelegate);
        assert_eq!(lone.node("n2").unwrap().state, NodeStateKind::Dead);
    }

    /// `aliveNode` (spec §3.3 rule 3): a second address for a live node's name is a conflict,
    /// reported to the delegate (Serf's name-conflict vote) and otherwise ignored, however high
    /// its incarnation.
    #[test]
    fn another_address_for_a_live_name_is_a_conflict_not_an_update() {
        let now = Instant::now();
        let mut rec = Recorder::default();
        let mut a = node_with("a", 1, now, &mut rec);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut rec);
        a.handle_packet(addr(9), &packet(&[alive("b", 9, 5)]), now, &mut rec);
        let b = a.node("b").unwrap();
        assert_eq!((b.socket_addr(), b.state), (addr(2), NodeStateKind::Alive));
        assert_eq!(a.incarnation_of("b"), Some(1));
        assert_eq!(rec.conflicts.len(), 1);
        assert_eq!(rec.conflicts[0].1.socket_addr(), addr(9));
    }

    /// `aliveNode` lets a left node come back at another address (a new process elsewhere);
    /// issue 11 adds `LEFT_NODE_RECLAIM_TIME` first, so a forged leave plus a forged alive
    /// cannot move a live node to the forger at once.
    #[test]
    fn a_left_node_may_move_only_after_the_reclaim_time() {
        let left_at = Instant::now();
        let mut rec = Recorder::default();
        let mut a = node_with("a", 1, left_at, &mut rec);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), left_at, &mut rec);
        a.handle_packet(addr(2), &packet(&[dead("b", "b", 1)]), left_at, &mut rec);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Left);

        let soon = left_at + LEFT_NODE_RECLAIM_TIME - Duration::from_millis(1);
        a.handle_packet(addr(9), &packet(&[alive("b", 9, 2)]), soon, &mut rec);
        assert_eq!(a.node("b").unwrap().state, NodeStateKind::Left);
        assert_eq!(
            a.stats()
                .drops
                .get("address change of a node that just left"),
            1
        );

        let later = left_at + LEFT_NODE_RECLAIM_TIME;
        a.handle_packet(addr(9), &packet(&[alive("b", 9, 2)]), later, &mut rec);
        let b = a.node("b").unwrap();
        assert_eq!((b.socket_addr(), b.state), (addr(9), NodeStateKind::Alive));
        assert_eq!(rec.joins.iter().filter(|n| *n == "b").count(), 2);
        assert!(rec.conflicts.is_empty());
    }
}
