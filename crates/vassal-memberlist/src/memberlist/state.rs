//! The alive/suspect/dead rules with refutation (spec §3.3): Go memberlist's `aliveNode`,
//! `suspectNode`, `deadNode` and `refute` (`state.go`).

use std::time::Instant;

use tracing::{debug, warn};

use super::{Memberlist, NodeState};
use crate::delegate::{Delegate, Node};
use crate::limits::{self, MAX_INCARNATION_JUMP};
use crate::suspicion::{suspicion_timeout, Suspicion};
use crate::wire::{Alive, Dead, Message, NodeStateKind, Suspect};

impl Memberlist {
    /// memberlist's `aliveNode`: an `alive` about any node, ourselves included (spec §3.3).
    pub(super) fn alive_node(
        &mut self,
        a: Alive,
        bootstrap: bool,
        now: Instant,
        d: &mut impl Delegate,
    ) {
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
    pub(super) fn suspect_node(&mut self, s: Suspect, now: Instant) {
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

    pub(super) fn suspicion_expired(&mut self, name: &str, now: Instant, d: &mut impl Delegate) {
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
    pub(super) fn dead_node(
        &mut self,
        dead: Dead,
        notify: Option<u64>,
        now: Instant,
        d: &mut impl Delegate,
    ) {
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
    pub(super) fn credible(&self, node: &str, incarnation: u32) -> bool {
        self.state_of(node)
            .is_none_or(|s| incarnation <= s.incarnation.saturating_add(MAX_INCARNATION_JUMP))
    }

    /// Drops a hostile or impossible message about `node`, counting it; the first of each reason
    /// is logged.
    pub(super) fn refuse(&mut self, reason: &'static str, node: &str, incarnation: u32) {
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
    pub(super) fn refute(&mut self, accused: u32) {
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

    pub(super) fn next_incarnation(&mut self) -> u32 {
        self.incarnation = self.incarnation.saturating_add(1);
        self.incarnation
    }
}
