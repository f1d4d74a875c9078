//! Well-formed messages with hostile contents, built with the real encoders: memberlist's
//! public codec and `vassal_serf::messages`. Every hostile value the scenarios and the fuzz
//! target need (any Lamport time, name, payload, filter bytes, flags, timeout or version) fits
//! the encoders' types, so no message here is written by hand; only `read_query` reads by hand,
//! leniently, so a forger answers whatever query it overhears.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use vassal_memberlist::wire::msgpack::Reader;
use vassal_memberlist::wire::{
    self, ip_from_bytes, Alive, Dead, Message, StreamMessage, Suspect, Vsn, WriteOptions,
};
use vassal_serf::messages::{
    self as serf_msg, encode, QueryMsg, QueryResponseMsg, SerfMessage, UserEventEntry, UserEvents,
};
use vassal_serf::{Member, MemberStatus};

use super::SeenQuery;

/// The Serf type byte of a query (spec §4.1).
const QUERY: u8 = serf_msg::MessageType::Query as u8;

/// Query flags.
pub use vassal_serf::messages::{QUERY_FLAG_ACK, QUERY_FLAG_NO_BROADCAST};

const PLAIN: WriteOptions<'static> = WriteOptions {
    label: &[],
    keyring: None,
    compress: false,
    crc: false,
};

/// One datagram holding `msgs` (a compound when there are several), no label, no encryption.
pub fn packet(msgs: &[Vec<u8>]) -> Vec<u8> {
    wire::encode_packet(msgs, &PLAIN, [0; 12])
}

/// One stream message, uncompressed and unencrypted.
pub fn stream(msg: &StreamMessage) -> Vec<u8> {
    wire::encode_stream(msg, &PLAIN, [0; 12])
}

/// Serf's node metadata for no tags.
pub fn empty_tags() -> Vec<u8> {
    vassal_serf::tags::encode(&BTreeMap::new()).expect("no tags always fit")
}

pub fn alive(node: &str, incarnation: u32, at: SocketAddr, meta: Vec<u8>, vsn: Vsn) -> Vec<u8> {
    wire::encode_message(&Message::Alive(Alive {
        incarnation,
        node: node.to_owned(),
        addr: at.ip(),
        port: at.port(),
        meta,
        vsn,
    }))
}

pub fn suspect(node: &str, incarnation: u32, from: &str) -> Vec<u8> {
    wire::encode_message(&Message::Suspect(Suspect {
        incarnation,
        node: node.to_owned(),
        from: from.to_owned(),
    }))
}

/// A `dead`; with `from == node` it is a graceful leave.
pub fn dead(node: &str, incarnation: u32, from: &str) -> Vec<u8> {
    wire::encode_message(&Message::Dead(Dead {
        incarnation,
        node: node.to_owned(),
        from: from.to_owned(),
    }))
}

/// A Vivaldi coordinate as Serf's ping delegate puts it in an ack: `01` + msgpack
/// `{Adjustment, Error, Height, Vec}`. Any values, NaN and infinities included.
pub fn coordinate_payload(vec: &[f64], error: f64, adjustment: f64, height: f64) -> Vec<u8> {
    vassal_serf::coordinate::Coordinate {
        vec: vec.to_vec(),
        error,
        adjustment,
        height,
    }
    .to_ack_payload()
}

/// A join intent (Serf type 1).
pub fn join_intent(ltime: u64, node: &str) -> Vec<u8> {
    encode(&SerfMessage::Join(serf_msg::Join {
        ltime,
        node: node.to_owned(),
    }))
}

/// A leave intent (Serf type 0); `prune` asks to erase the member (`force-leave -prune`).
pub fn leave_intent(ltime: u64, node: &str, prune: bool) -> Vec<u8> {
    encode(&SerfMessage::Leave(serf_msg::Leave {
        ltime,
        node: node.to_owned(),
        prune,
    }))
}

/// A user event (Serf type 3).
pub fn user_event(ltime: u64, name: &str, payload: &[u8], cc: bool) -> Vec<u8> {
    encode(&SerfMessage::UserEvent(serf_msg::UserEvent {
        ltime,
        name: name.to_owned(),
        payload: payload.to_vec(),
        cc,
    }))
}

/// A query (Serf type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub ltime: u64,
    pub id: u32,
    /// Where responses are to go.
    pub reply_to: SocketAddr,
    pub source_node: String,
    /// Each already encoded: [`node_filter`], [`tag_filter`], or anything.
    pub filters: Vec<Vec<u8>>,
    pub flags: u32,
    pub relay_factor: u8,
    /// Nanoseconds.
    pub timeout: u64,
    pub name: String,
    pub payload: Vec<u8>,
}

/// Encodes `q`.
pub fn query(q: &Query) -> Vec<u8> {
    encode(&SerfMessage::Query(QueryMsg {
        ltime: q.ltime,
        id: q.id,
        addr: q.reply_to.ip(),
        port: q.reply_to.port(),
        source_node: q.source_node.clone(),
        filters: q.filters.clone(),
        flags: q.flags,
        relay_factor: q.relay_factor,
        timeout: q.timeout,
        name: q.name.clone(),
        payload: q.payload.clone(),
    }))
}

/// A query filter naming nodes: `00` + msgpack array of names.
pub fn node_filter(names: &[String]) -> Vec<u8> {
    serf_msg::node_filter(names)
}

/// A query filter on a tag: `01` + `{Expr, Tag}` (`expr` is a regular expression).
pub fn tag_filter(tag: &str, expr: &str) -> Vec<u8> {
    serf_msg::tag_filter(tag, expr)
}

/// An ack (flag [`QUERY_FLAG_ACK`]) or a response to a query (Serf type 5).
pub fn query_response(ltime: u64, id: u32, from: &str, flags: u32, payload: &[u8]) -> Vec<u8> {
    encode(&SerfMessage::QueryResponse(QueryResponseMsg {
        ltime,
        id,
        from: from.to_owned(),
        flags,
        payload: payload.to_vec(),
    }))
}

/// The answer to a `_serf_conflict` query: "I know `name` at `addr`" (Serf type 6, a member
/// alive with no tags).
pub fn conflict_response(name: &str, addr: SocketAddr, vsn: Vsn) -> Vec<u8> {
    serf_msg::encode_conflict_response(Some(&Member {
        name: name.to_owned(),
        addr: addr.ip(),
        port: addr.port(),
        tags: BTreeMap::new(),
        status: MemberStatus::Alive,
        vsn,
    }))
}

/// One slot of Serf's user event buffer: its Lamport time and each event's name and payload.
pub type EventSlot = (u64, Vec<(String, Vec<u8>)>);

/// Serf's push/pull state (memberlist's `user_state`, Serf type 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SerfState {
    pub ltime: u64,
    pub status_ltimes: BTreeMap<String, u64>,
    pub left_members: Vec<String>,
    pub event_ltime: u64,
    pub events: Vec<EventSlot>,
    pub query_ltime: u64,
}

/// Encodes `s`; every event slot is filled (no nil slots).
pub fn serf_push_pull(s: &SerfState) -> Vec<u8> {
    let events = s
        .events
        .iter()
        .map(|(ltime, events)| {
            Some(UserEvents {
                ltime: *ltime,
                events: events
                    .iter()
                    .map(|(name, payload)| UserEventEntry {
                        name: name.clone(),
                        payload: payload.clone(),
                    })
                    .collect(),
            })
        })
        .collect();
    encode(&SerfMessage::PushPull(serf_msg::PushPullState {
        ltime: s.ltime,
        status_ltimes: s.status_ltimes.clone(),
        left_members: s.left_members.clone(),
        event_ltime: s.event_ltime,
        events,
        query_ltime: s.query_ltime,
    }))
}

/// Reads a gossiped query (Serf type 4) far enough to answer it; `None` for anything else.
pub fn read_query(body: &[u8]) -> Option<SeenQuery> {
    let (&QUERY, rest) = body.split_first()? else {
        return None;
    };
    let mut q = SeenQuery {
        ltime: 0,
        id: 0,
        name: String::new(),
        payload: Vec::new(),
        reply_to: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
    };
    let (mut ip, mut port) = (None, 0u16);
    Reader::new(rest)
        .read_struct(|key, r| {
            match key {
                b"Addr" => ip = ip_from_bytes(r.bytes()?),
                b"ID" => q.id = r.uint_as()?,
                b"LTime" => q.ltime = r.uint_as()?,
                b"Name" => q.name = r.string()?,
                b"Payload" => q.payload = r.bytes()?.to_vec(),
                b"Port" => port = r.uint_as()?,
                _ => return Ok(false),
            }
            Ok(true)
        })
        .ok()?;
    q.reply_to = SocketAddr::new(ip?, port);
    Some(q)
}
