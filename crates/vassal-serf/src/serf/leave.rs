//! Leaving the cluster (spec §4.5): our own graceful leave, Go Serf's `Leave`, and removing
//! another node, Go's `RemoveFailedNode` (`force-leave`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tracing::warn;
use vassal_memberlist::limits::later;

use super::{Outcome, Serf};
use crate::messages::{self, Leave, SerfMessage};

/// Why a force-leave did not finish cleanly. The local change (left, or erased with prune) was
/// made; only its broadcast may not have gone out in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForceLeaveError {
    /// The leave intent was still queued when the broadcast timeout passed.
    #[error("timed out broadcasting node removal")]
    BroadcastTimeout,
}

/// Where a graceful leave is (Go's `SerfAlive` → `SerfLeaving` → `SerfLeft`, with the waits
/// Go's `Leave` does inline made explicit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeavePhase {
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

/// Token of our leave intent in the intent queue.
pub(super) const LEAVE_NOTIFY: u64 = 1;

/// Our leave and the force-leaves we wait on.
#[derive(Debug)]
pub(super) struct LeaveState {
    pub(super) phase: LeavePhase,
    /// Notification tokens of intent broadcasts that have gone out (or were dropped).
    pub(super) notified: BTreeSet<u64>,
    /// Force-leave broadcasts we wait for: token → give-up time.
    force_leaves: BTreeMap<u64, Instant>,
    next_notify: u64,
}

impl LeaveState {
    pub(super) fn new() -> Self {
        LeaveState {
            phase: LeavePhase::Running,
            notified: BTreeSet::new(),
            force_leaves: BTreeMap::new(),
            next_notify: LEAVE_NOTIFY.saturating_add(1),
        }
    }

    /// The timers this state waits for.
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        let phase = match self.phase {
            LeavePhase::Intent { until }
            | LeavePhase::Memberlist { until }
            | LeavePhase::Propagate { until } => Some(until),
            LeavePhase::Running | LeavePhase::Left => None,
        };
        phase.into_iter().chain(self.force_leaves.values().copied())
    }
}

impl Serf {
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
            let leave = &mut self.core.leave;
            let token = leave.next_notify;
            // One per force-leave: a u64 does not wrap in practice.
            leave.next_notify = leave.next_notify.wrapping_add(1);
            (leave.force_leaves).insert(token, later(now, self.config.broadcast_timeout));
            let raw = messages::encode(&SerfMessage::Leave(msg));
            self.core.members.intent_queue.queue(None, raw, Some(token));
            Some(token)
        } else {
            None
        };
        self.after_input(now);
        token
    }

    /// Starts a graceful leave (spec §4.5): leave intent, then memberlist's leave, then a short
    /// linger. [`Outcome::LeaveComplete`] says when it is done.
    pub fn leave(&mut self, now: Instant) {
        if self.core.leave.phase != LeavePhase::Running {
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
        self.core.leave.phase = LeavePhase::Intent {
            until: later(now, self.config.broadcast_timeout),
        };
        self.core.handle_leave_intent(&msg, now);
        // Go's `Leave` skips the broadcast when nobody else is alive: it would wait for nothing.
        if self.core.any_other_alive() {
            let bytes = messages::encode(&SerfMessage::Leave(msg));
            // Besides the gossip, straight to some members (memberlist's `direct_fanout`).
            self.ml.send_user_to_some(&bytes);
            (self.core.members.intent_queue).queue(None, bytes, Some(LEAVE_NOTIFY));
        }
        self.advance_leave(now);
    }

    /// Reports force-leaves whose broadcast went out, or that waited too long.
    pub(super) fn finish_force_leaves(&mut self, now: Instant) {
        let leave = &mut self.core.leave;
        let done: Vec<(u64, Result<(), ForceLeaveError>)> = (leave.force_leaves.iter())
            .filter_map(|(&token, &deadline)| {
                if leave.notified.contains(&token) {
                    Some((token, Ok(())))
                } else if now >= deadline {
                    Some((token, Err(ForceLeaveError::BroadcastTimeout)))
                } else {
                    None
                }
            })
            .collect();
        for (token, result) in done {
            leave.force_leaves.remove(&token);
            leave.notified.remove(&token);
            (self.core.outcomes).push_back(Outcome::ForceLeaveFinished { token, result });
        }
        // Tokens nobody waits for any more (a late broadcast after a timeout).
        let waiting = &leave.force_leaves;
        (leave.notified).retain(|t| *t == LEAVE_NOTIFY || waiting.contains_key(t));
    }

    /// Moves a graceful leave through its phases, as Go's `Leave` does step by step: each
    /// phase ends when its broadcast has gone out or its timeout passed, so a leave finishes
    /// even when nobody hears it.
    pub(super) fn advance_leave(&mut self, now: Instant) {
        loop {
            let sent = self.core.leave.notified.remove(&LEAVE_NOTIFY);
            let next = match self.core.leave.phase {
                LeavePhase::Intent { until }
                    if now >= until
                        || sent
                        || !self.core.members.intent_queue.is_pending(LEAVE_NOTIFY) =>
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
            self.core.leave.phase = next;
        }
    }
}
