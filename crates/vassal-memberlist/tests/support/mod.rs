//! Helpers for the rule tests, shared by `tests/rules.rs` and the unit tests beside the code
//! (`src/memberlist/*.rs` include this file as `crate::test_support`; `lib.rs` names the crate
//! `vassal_memberlist` to itself in test builds so the paths below resolve in both).
//!
//! Nodes are `127.0.0.i:7946` named by the caller; packets are plain (no label, key or CRC).

#![allow(dead_code)] // each user takes what it needs

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vassal_memberlist::wire::{
    self, Alive, Message, PushNodeState, ReadOptions, Suspect, Vsn, WriteOptions,
};
use vassal_memberlist::{Config, Delegate, Memberlist, NoDelegate, Node, NodeStateKind, Transmit};

/// Protocol 1..5 at 2, no delegate versions: what a Vassal node announces.
pub const VSN: Vsn = [1, 5, 2, 0, 0, 0];

pub fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 7946))
}

/// A LAN-profile node at `addr(i)`, seeded with `i`.
pub fn node(name: &str, i: u8, now: Instant) -> Memberlist {
    node_with(name, i, now, &mut NoDelegate)
}

/// [`node`] with a delegate of the test's choosing (it sees our own join at start).
pub fn node_with(name: &str, i: u8, now: Instant, d: &mut impl Delegate) -> Memberlist {
    let mut c = Config::lan(name);
    c.advertise = addr(i);
    c.seed = i as u64;
    Memberlist::new(c, now, d).expect("valid config")
}

pub fn packet(msgs: &[Message]) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = msgs.iter().map(wire::encode_message).collect();
    let opts = WriteOptions {
        label: &[],
        keyring: None,
        compress: false,
        crc: false,
    };
    wire::encode_packet(&encoded, &opts, [0; 12])
}

pub fn plain() -> ReadOptions<'static> {
    ReadOptions {
        label: &[],
        keyring: None,
        verify_incoming: true,
    }
}

/// Every message `ml` has queued to send, decoded, with its destination. Streams are dropped.
pub fn sent(ml: &mut Memberlist) -> Vec<(SocketAddr, Message)> {
    let mut out = Vec::new();
    while let Some(t) = ml.poll_transmit() {
        if let Transmit::Packet { to, bytes } = t {
            let p = wire::decode_packet(&bytes, &plain()).expect("we send what we can read");
            out.extend(p.messages.into_iter().map(|m| (to, m)));
        }
    }
    out
}

pub fn alive(name: &str, i: u8, incarnation: u32) -> Message {
    Message::Alive(Alive {
        incarnation,
        node: name.into(),
        addr: addr(i).ip(),
        port: 7946,
        meta: vec![],
        vsn: VSN,
    })
}

pub fn suspect(node: &str, from: &str, incarnation: u32) -> Message {
    Message::Suspect(Suspect {
        incarnation,
        node: node.into(),
        from: from.into(),
    })
}

/// A push/pull entry for `name` at `addr(i)`.
pub fn entry(name: &str, i: u8, incarnation: u32, state: NodeStateKind) -> PushNodeState {
    PushNodeState {
        name: name.into(),
        addr: addr(i).ip(),
        port: 7946,
        meta: vec![],
        incarnation,
        state,
        vsn: VSN.to_vec(),
    }
}

/// Drains everything due in the next `d`, one millisecond at a time.
pub fn advance(ml: &mut Memberlist, now: &mut Instant, d: Duration) {
    advance_with(ml, now, d, &mut NoDelegate)
}

/// [`advance`] with a delegate.
pub fn advance_with(ml: &mut Memberlist, now: &mut Instant, d: Duration, del: &mut impl Delegate) {
    let end = *now + d;
    while *now < end {
        *now += Duration::from_millis(1);
        ml.handle_timeout(*now, del);
    }
}

/// Hands everything `from` has queued for `to` (by `to`'s advertised address) to `to`: packets
/// to `handle_packet`, and stream exchanges run whole (request to `handle_stream`, its reply
/// back to `from`'s `handle_stream_reply`), as a lossless network would. Transmits for anyone
/// else are returned, undelivered.
pub fn deliver(from: &mut Memberlist, to: &mut Memberlist, now: Instant) -> Vec<Transmit> {
    let src = from.config().advertise;
    let dst = to.config().advertise;
    let mut others = Vec::new();
    while let Some(t) = from.poll_transmit() {
        match t {
            Transmit::Packet { to: a, bytes } if a == dst => {
                to.handle_packet(src, &bytes, now, &mut NoDelegate);
            }
            Transmit::Stream {
                id, to: a, bytes, ..
            } if a == dst => {
                let (msg, _) = to
                    .decode_stream(&bytes)
                    .expect("we send what we can read")
                    .expect("a whole message");
                let reply = to.handle_stream(src, Ok(msg), now, &mut NoDelegate);
                let reply = match reply {
                    Some(bytes) => Ok(from
                        .decode_stream(&bytes)
                        .expect("we send what we can read")
                        .expect("a whole message")
                        .0),
                    None => Err("closed without a reply".to_owned()),
                };
                from.handle_stream_reply(id, reply, now, &mut NoDelegate);
            }
            other => others.push(other),
        }
    }
    others
}

/// A delegate that writes down the membership changes it is told about.
#[derive(Debug, Default)]
pub struct Recorder {
    pub joins: Vec<String>,
    pub leaves: Vec<(String, NodeStateKind)>,
    pub updates: Vec<String>,
    pub conflicts: Vec<(Node, Node)>,
}

impl Delegate for Recorder {
    fn notify_join(&mut self, node: &Node, _now: Instant) {
        self.joins.push(node.name.clone());
    }
    fn notify_leave(&mut self, node: &Node, _now: Instant) {
        self.leaves.push((node.name.clone(), node.state));
    }
    fn notify_update(&mut self, node: &Node, _now: Instant) {
        self.updates.push(node.name.clone());
    }
    fn notify_conflict(&mut self, existing: &Node, other: &Node, _now: Instant) {
        self.conflicts.push((existing.clone(), other.clone()));
    }
}
