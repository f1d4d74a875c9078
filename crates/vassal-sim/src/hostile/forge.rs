//! Well-formed messages with hostile contents. memberlist's come from its public codec; Serf's
//! bodies are written here with memberlist's msgpack writer, keys in Go's order, because
//! `vassal_serf`'s message encoder is private (the bytes match `vassal_serf::messages::encode`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use vassal_memberlist::wire::msgpack::{Reader, Writer};
use vassal_memberlist::wire::{
    self, ip_bytes, ip_from_bytes, Alive, Dead, Message, StreamMessage, Suspect, Vsn, WriteOptions,
};

use super::SeenQuery;

/// Serf message type bytes (spec §4.1).
const LEAVE: u8 = 0;
const JOIN: u8 = 1;
const PUSH_PULL: u8 = 2;
const USER_EVENT: u8 = 3;
const QUERY: u8 = 4;
const QUERY_RESPONSE: u8 = 5;
const CONFLICT_RESPONSE: u8 = 6;

/// Query flags.
pub const QUERY_FLAG_ACK: u32 = 1;
pub const QUERY_FLAG_NO_BROADCAST: u32 = 2;

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
    let mut w = Writer::with_buf(vec![JOIN]);
    w.map_header(2);
    w.str("LTime");
    w.uint(ltime);
    w.str("Node");
    w.str(node);
    w.into_vec()
}

/// A leave intent (Serf type 0); `prune` asks to erase the member (`force-leave -prune`).
pub fn leave_intent(ltime: u64, node: &str, prune: bool) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![LEAVE]);
    w.map_header(3);
    w.str("LTime");
    w.uint(ltime);
    w.str("Node");
    w.str(node);
    w.str("Prune");
    w.bool(prune);
    w.into_vec()
}

/// A user event (Serf type 3).
pub fn user_event(ltime: u64, name: &str, payload: &[u8], cc: bool) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![USER_EVENT]);
    w.map_header(4);
    w.str("CC");
    w.bool(cc);
    w.str("LTime");
    w.uint(ltime);
    w.str("Name");
    w.str(name);
    w.str("Payload");
    w.raw(payload);
    w.into_vec()
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

pub fn query(q: &Query) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![QUERY]);
    w.map_header(11);
    w.str("Addr");
    w.raw(&ip_bytes(&q.reply_to.ip()));
    w.str("Filters");
    if q.filters.is_empty() {
        w.nil();
    } else {
        w.array_header(q.filters.len());
        for f in &q.filters {
            w.raw(f);
        }
    }
    w.str("Flags");
    w.uint(q.flags as u64);
    w.str("ID");
    w.uint(q.id as u64);
    w.str("LTime");
    w.uint(q.ltime);
    w.str("Name");
    w.str(&q.name);
    w.str("Payload");
    w.opt_raw((!q.payload.is_empty()).then_some(&q.payload[..]));
    w.str("Port");
    w.uint(q.reply_to.port() as u64);
    w.str("RelayFactor");
    w.uint(q.relay_factor as u64);
    w.str("SourceNode");
    w.str(&q.source_node);
    w.str("Timeout");
    w.uint(q.timeout);
    w.into_vec()
}

/// A query filter naming nodes: `00` + msgpack array of names.
pub fn node_filter(names: &[String]) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![0]);
    w.array_header(names.len());
    for n in names {
        w.str(n);
    }
    w.into_vec()
}

/// A query filter on a tag: `01` + `{Expr, Tag}` (`expr` is a regular expression).
pub fn tag_filter(tag: &str, expr: &str) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![1]);
    w.map_header(2);
    w.str("Expr");
    w.str(expr);
    w.str("Tag");
    w.str(tag);
    w.into_vec()
}

/// An ack (flag [`QUERY_FLAG_ACK`]) or a response to a query (Serf type 5).
pub fn query_response(ltime: u64, id: u32, from: &str, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![QUERY_RESPONSE]);
    w.map_header(5);
    w.str("Flags");
    w.uint(flags as u64);
    w.str("From");
    w.str(from);
    w.str("ID");
    w.uint(id as u64);
    w.str("LTime");
    w.uint(ltime);
    w.str("Payload");
    w.opt_raw((!payload.is_empty()).then_some(payload));
    w.into_vec()
}

/// The answer to a `_serf_conflict` query: "I know `name` at `addr`" (Serf type 6, a member).
pub fn conflict_response(name: &str, addr: SocketAddr, vsn: Vsn) -> Vec<u8> {
    let [pmin, pmax, pcur, dmin, dmax, dcur] = vsn;
    let mut w = Writer::with_buf(vec![CONFLICT_RESPONSE]);
    w.map_header(11);
    w.str("Addr");
    w.raw(&ip_bytes(&addr.ip()));
    for (k, v) in [
        ("DelegateCur", dcur),
        ("DelegateMax", dmax),
        ("DelegateMin", dmin),
    ] {
        w.str(k);
        w.uint(v as u64);
    }
    w.str("Name");
    w.str(name);
    w.str("Port");
    w.uint(addr.port() as u64);
    for (k, v) in [
        ("ProtocolCur", pcur),
        ("ProtocolMax", pmax),
        ("ProtocolMin", pmin),
    ] {
        w.str(k);
        w.uint(v as u64);
    }
    w.str("Status");
    w.uint(1);
    w.str("Tags");
    w.map_header(0);
    w.into_vec()
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

pub fn serf_push_pull(s: &SerfState) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![PUSH_PULL]);
    w.map_header(6);
    w.str("EventLTime");
    w.uint(s.event_ltime);
    w.str("Events");
    w.array_header(s.events.len());
    for (ltime, events) in &s.events {
        w.map_header(2);
        w.str("Events");
        w.array_header(events.len());
        for (name, payload) in events {
            w.map_header(2);
            w.str("Name");
            w.str(name);
            w.str("Payload");
            w.raw(payload);
        }
        w.str("LTime");
        w.uint(*ltime);
    }
    w.str("LTime");
    w.uint(s.ltime);
    w.str("LeftMembers");
    w.array_header(s.left_members.len());
    for m in &s.left_members {
        w.str(m);
    }
    w.str("QueryLTime");
    w.uint(s.query_ltime);
    w.str("StatusLTimes");
    w.map_header(s.status_ltimes.len());
    for (name, t) in &s.status_ltimes {
        w.str(name);
        w.uint(*t);
    }
    w.into_vec()
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
