//! The seam to the layer above (Serf): Go's `Delegate`, `EventDelegate`, `PingDelegate` and
//! `ConflictDelegate` in one trait, passed to each call rather than stored.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::wire::{NodeStateKind, Vsn};

/// A member as the layer above sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// The address it gossips from.
    pub addr: IpAddr,
    /// Its gossip port (UDP and TCP).
    pub port: u16,
    /// Its metadata (Serf: encoded tags).
    pub meta: Vec<u8>,
    /// The protocol versions it advertises.
    pub vsn: Vsn,
    /// What we believe of it.
    pub state: NodeStateKind,
}

impl Node {
    /// Where to reach it: `addr:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// memberlist protocol max, which gates CRC (≥5), nacks (≥4) and TCP pings (≥3).
    pub fn pmax(&self) -> u8 {
        self.vsn[1]
    }
}

/// Callbacks from membership into the layer above. Every method has a no-op default, so a bare
/// memberlist (the simulator, tests) implements only what it watches.
pub trait Delegate {
    /// Our metadata (Serf: encoded tags), at most `limit` bytes.
    fn node_meta(&mut self, _limit: usize) -> Vec<u8> {
        Vec::new()
    }
    /// A user message (`08 …`) arrived, by packet or stream; `msg` excludes the `08` byte.
    fn notify_message(&mut self, _msg: &[u8], _now: Instant) {}
    /// Messages to piggyback, each costing `overhead` bytes plus its length, within `limit`.
    fn broadcasts(&mut self, _overhead: usize, _limit: usize) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// Our state for a push/pull.
    fn local_state(&mut self, _join: bool) -> Vec<u8> {
        Vec::new()
    }
    /// A peer's state from a push/pull.
    fn merge_remote_state(&mut self, _state: &[u8], _join: bool, _now: Instant) {}
    /// A node became alive (new, or back from dead/left). Fires for ourselves at start.
    fn notify_join(&mut self, _node: &Node, _now: Instant) {}
    /// A node died or left; `node.state` says which.
    fn notify_leave(&mut self, _node: &Node, _now: Instant) {}
    /// An alive node's metadata changed.
    fn notify_update(&mut self, _node: &Node, _now: Instant) {}
    /// Another address claims a name we know.
    fn notify_conflict(&mut self, _existing: &Node, _other: &Node, _now: Instant) {}
    /// Payload for the acks we send (Serf: our Vivaldi coordinate).
    fn ack_payload(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// A direct probe of `node` was acked after `rtt` with `payload`.
    fn notify_ping_complete(&mut self, _node: &Node, _rtt: Duration, _payload: &[u8]) {}
}

/// A delegate that does nothing: plain SWIM membership.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDelegate;

impl Delegate for NoDelegate {}
