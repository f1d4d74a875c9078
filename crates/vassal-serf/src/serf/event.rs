//! User events (spec §4.6): Go Serf's `UserEvent` and `handleUserEvent`, with the ring buffer
//! of recent events that deduplicates gossip and is replayed in push/pull.

use std::collections::BTreeSet;
use std::time::Instant;

use tracing::warn;
use vassal_memberlist::broadcast::TransmitLimitedQueue;
use vassal_memberlist::JoinId;

use super::{before_buffer, ring_slot, Core, Event, Serf};
use crate::clock::LamportClock;
use crate::messages::{self, SerfMessage, UserEvent, UserEventEntry, UserEvents};

/// No user event may exceed this, whatever the configuration (Serf's `UserEventSizeLimit`).
pub const USER_EVENT_SIZE_HARD_LIMIT: usize = 9 * 1024;
/// Slots in the user event buffer: deduplication window and push/pull replay (spec §4.6).
pub const EVENT_BUFFER_SIZE: usize = 512;

/// Why a user event was not sent. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserEventError {
    /// Name and payload exceed [`Config::user_event_size_limit`](super::Config).
    #[error("user event exceeds configured limit of {0} bytes before encoding")]
    TooLarge(usize),
    /// Name and payload exceed [`USER_EVENT_SIZE_HARD_LIMIT`].
    #[error("user event exceeds sane limit of {USER_EVENT_SIZE_HARD_LIMIT} bytes before encoding")]
    OverHardLimit,
    /// The encoded event exceeds [`Config::user_event_size_limit`](super::Config).
    #[error("encoded user event exceeds configured limit of {0} bytes after encoding")]
    EncodedTooLarge(usize),
    /// The encoded event exceeds [`USER_EVENT_SIZE_HARD_LIMIT`].
    #[error("encoded user event exceeds sane limit of {USER_EVENT_SIZE_HARD_LIMIT} bytes after encoding")]
    EncodedOverHardLimit,
}

/// The user event side of [`Core`].
#[derive(Debug)]
pub(super) struct UserEventState {
    /// Go's `eventClock`.
    pub(super) clock: LamportClock,
    /// Events to gossip (Go's `eventBroadcasts`).
    pub(super) queue: TransmitLimitedQueue,
    /// `LTime mod 512` → the events seen at that time (Go's `eventBuffer`).
    pub(super) buffer: Vec<Option<UserEvents>>,
    /// User events older than this are ignored (Go's `eventMinTime`: raised by joins that
    /// ignore old events, and by a snapshot's event clock).
    pub(super) min_time: u64,
    /// Joins in flight that asked to ignore old events.
    pub(super) ignoring_joins: BTreeSet<JoinId>,
}

impl UserEventState {
    pub(super) fn new() -> Self {
        UserEventState {
            clock: LamportClock::new(),
            queue: TransmitLimitedQueue::new(),
            buffer: vec![None; EVENT_BUFFER_SIZE],
            min_time: 0,
            ignoring_joins: BTreeSet::new(),
        }
    }
}

impl Serf {
    /// Sends a user event to the cluster (spec §4.6; Go's `UserEvent`); it is also delivered
    /// locally.
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
            ltime: self.core.user_events.clock.time(),
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
        // Go increments after sending: the next event gets a later time than this one.
        self.core.user_events.clock.increment();
        self.core.handle_user_event(&msg);
        // Besides the gossip, straight to some members (memberlist's `direct_fanout`).
        self.ml.send_user_to_some(&raw);
        self.core.user_events.queue.queue(None, raw, None);
        Ok(())
    }
}

impl Core {
    /// Serf's `handleUserEvent`: true if the event is new (and so worth re-gossiping). An event
    /// is known by its Lamport time, name and payload: the same one arriving again by another
    /// path is dropped, so each is delivered once.
    pub(super) fn handle_user_event(&mut self, e: &UserEvent) -> bool {
        let state = &mut self.user_events;
        if !state.clock.credible(e.ltime) {
            let ours = state.clock.time();
            return self.incredible_ltime("user event", e.ltime, ours);
        }
        state.clock.witness(e.ltime);
        if e.ltime < state.min_time {
            return false;
        }
        let cur = state.clock.time();
        if before_buffer(e.ltime, cur) {
            warn!(
                "serf: received old event {} from time {} (current: {cur})",
                e.name, e.ltime
            );
            return false;
        }
        let Some(slot) = state.buffer.get_mut(ring_slot(e.ltime)) else {
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
        metrics::counter!("serf.events").increment(1);
        metrics::counter!("serf.events", "name" => e.name.clone()).increment(1);
        self.events.push_back(Event::User(e.clone()));
        true
    }
}
