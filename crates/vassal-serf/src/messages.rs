//! Serf's messages (spec §4.1–§4.2), carried inside memberlist user messages as
//! `<serf type byte> <msgpack body>`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use vassal_memberlist::wire::msgpack::{Reader, Writer};
use vassal_memberlist::wire::{ip_bytes, ip_from_bytes, DecodeError};

/// Serf message type bytes.
#[allow(dead_code)] // conflict and key messages arrive with the key-rotation work
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// [`Leave`] intent.
    Leave = 0,
    /// [`Join`] intent.
    Join = 1,
    /// [`PushPullState`].
    PushPull = 2,
    /// [`UserEvent`].
    UserEvent = 3,
    /// [`QueryMsg`].
    Query = 4,
    /// [`QueryResponseMsg`].
    QueryResponse = 5,
    /// The body of a `_serf_conflict` answer.
    ConflictResponse = 6,
    /// The body of a `_serf_*-key` query.
    KeyRequest = 7,
    /// The body of a key query's answer, [`KeyResponse`].
    KeyResponse = 8,
    /// [`Relay`].
    Relay = 9,
}

/// A join intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The member clock time of the intent.
    pub ltime: u64,
    /// The node that joined.
    pub node: String,
}

/// A leave intent; `prune` erases the member at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    /// The member clock time of the intent.
    pub ltime: u64,
    /// The node that leaves.
    pub node: String,
    /// Erase the member too (`force-leave -prune`).
    pub prune: bool,
}

/// One user event in the push/pull event buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEventEntry {
    /// The event's name.
    pub name: String,
    /// The event's payload.
    pub payload: Vec<u8>,
}

/// The events seen at one Lamport time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvents {
    /// The event clock time.
    pub ltime: u64,
    /// The distinct events seen at that time.
    pub events: Vec<UserEventEntry>,
}

/// Serf's push/pull state (spec §4.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushPullState {
    /// The sender's member clock.
    pub ltime: u64,
    /// Each member's status time (the time of the last intent about it).
    pub status_ltimes: BTreeMap<String, u64>,
    /// The members that have left.
    pub left_members: Vec<String>,
    /// The sender's event clock.
    pub event_ltime: u64,
    /// The sender's user event buffer, replayed by the receiver.
    pub events: Vec<Option<UserEvents>>,
    /// The sender's query clock.
    pub query_ltime: u64,
}

/// A user event as gossiped (type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    /// The event clock time it was sent at.
    pub ltime: u64,
    /// The event's name.
    pub name: String,
    /// The event's payload.
    pub payload: Vec<u8>,
    /// May be coalesced with later events of the same name.
    pub cc: bool,
}

/// Query flag: the sender wants an ack from every node that processes it.
pub const QUERY_FLAG_ACK: u32 = 1;
/// Query flag: receivers must not re-gossip it.
pub const QUERY_FLAG_NO_BROADCAST: u32 = 2;

/// A query as gossiped (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMsg {
    /// The query clock time it was sent at.
    pub ltime: u64,
    /// The sender's random ID for it.
    pub id: u32,
    /// Where responses go.
    pub addr: IpAddr,
    /// Where responses go (port).
    pub port: u16,
    /// The sending node's name.
    pub source_node: String,
    /// Each filter is its own byte string: `00` + node names, `01` + `{Expr, Tag}`.
    pub filters: Vec<Vec<u8>>,
    /// [`QUERY_FLAG_ACK`], [`QUERY_FLAG_NO_BROADCAST`].
    pub flags: u32,
    /// Through how many other nodes each answer is also sent.
    pub relay_factor: u8,
    /// Nanoseconds.
    pub timeout: u64,
    /// The query's name.
    pub name: String,
    /// The query's payload.
    pub payload: Vec<u8>,
}

/// An ack (flag 1) or a response to a query (type 5), sent straight to the query's source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryResponseMsg {
    /// The query's time.
    pub ltime: u64,
    /// The query's ID.
    pub id: u32,
    /// The answering node.
    pub from: String,
    /// [`QUERY_FLAG_ACK`] for an ack, 0 for an answer.
    pub flags: u32,
    /// The answer (empty for an ack).
    pub payload: Vec<u8>,
}

/// A response to forward (type 9): the relay sends `inner` (`05 …`) to `dest` unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Where to send `inner`.
    pub dest: SocketAddr,
    /// The destination's name (informational; Go leaves it empty).
    pub dest_name: String,
    /// An encoded query response.
    pub inner: Vec<u8>,
}

/// A decoded Serf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerfMessage {
    /// Type 0.
    Leave(Leave),
    /// Type 1.
    Join(Join),
    /// Type 2 (in push/pull exchanges, not gossip).
    PushPull(PushPullState),
    /// Type 3.
    UserEvent(UserEvent),
    /// Type 4.
    Query(QueryMsg),
    /// Type 5.
    QueryResponse(QueryResponseMsg),
    /// Type 9.
    Relay(Relay),
    /// A type this version does not handle yet; kept raw.
    Other {
        /// The type byte.
        kind: u8,
        /// The msgpack body.
        body: Vec<u8>,
    },
}

/// Encodes a message with its type byte, keys in Go's order.
pub fn encode(msg: &SerfMessage) -> Vec<u8> {
    let kind = match msg {
        SerfMessage::Leave(_) => MessageType::Leave as u8,
        SerfMessage::Join(_) => MessageType::Join as u8,
        SerfMessage::PushPull(_) => MessageType::PushPull as u8,
        SerfMessage::UserEvent(_) => MessageType::UserEvent as u8,
        SerfMessage::Query(_) => MessageType::Query as u8,
        SerfMessage::QueryResponse(_) => MessageType::QueryResponse as u8,
        SerfMessage::Relay(_) => MessageType::Relay as u8,
        SerfMessage::Other { kind, .. } => *kind,
    };
    let mut w = Writer::with_buf(vec![kind]);
    match msg {
        SerfMessage::Leave(l) => {
            w.map_header(3);
            w.str("LTime");
            w.uint(l.ltime);
            w.str("Node");
            w.str(&l.node);
            w.str("Prune");
            w.bool(l.prune);
        }
        SerfMessage::Join(j) => {
            w.map_header(2);
            w.str("LTime");
            w.uint(j.ltime);
            w.str("Node");
            w.str(&j.node);
        }
        SerfMessage::PushPull(p) => {
            w.map_header(6);
            w.str("EventLTime");
            w.uint(p.event_ltime);
            w.str("Events");
            w.array_header(p.events.len());
            for slot in &p.events {
                match slot {
                    None => w.nil(),
                    Some(e) => {
                        w.map_header(2);
                        w.str("Events");
                        w.array_header(e.events.len());
                        for ev in &e.events {
                            w.map_header(2);
                            w.str("Name");
                            w.str(&ev.name);
                            w.str("Payload");
                            w.raw(&ev.payload);
                        }
                        w.str("LTime");
                        w.uint(e.ltime);
                    }
                }
            }
            w.str("LTime");
            w.uint(p.ltime);
            w.str("LeftMembers");
            w.array_header(p.left_members.len());
            for m in &p.left_members {
                w.str(m);
            }
            w.str("QueryLTime");
            w.uint(p.query_ltime);
            w.str("StatusLTimes");
            w.map_header(p.status_ltimes.len());
            for (name, t) in &p.status_ltimes {
                w.str(name);
                w.uint(*t);
            }
        }
        SerfMessage::UserEvent(e) => {
            w.map_header(4);
            w.str("CC");
            w.bool(e.cc);
            w.str("LTime");
            w.uint(e.ltime);
            w.str("Name");
            w.str(&e.name);
            w.str("Payload");
            w.raw(&e.payload);
        }
        SerfMessage::Query(q) => {
            w.map_header(11);
            w.str("Addr");
            w.raw(&ip_bytes(&q.addr));
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
            w.uint(q.port as u64);
            w.str("RelayFactor");
            w.uint(q.relay_factor as u64);
            w.str("SourceNode");
            w.str(&q.source_node);
            w.str("Timeout");
            w.uint(q.timeout);
        }
        SerfMessage::QueryResponse(r) => write_query_response(&mut w, r),
        SerfMessage::Relay(r) => {
            w.map_header(2);
            w.str("DestAddr");
            w.map_header(3);
            w.str("IP");
            w.raw(&ip_bytes(&r.dest.ip()));
            w.str("Port");
            w.uint(r.dest.port() as u64);
            w.str("Zone");
            w.str("");
            w.str("DestName");
            w.str(&r.dest_name);
            let mut buf = w.into_vec();
            buf.extend_from_slice(&r.inner);
            return buf;
        }
        SerfMessage::Other { body, .. } => return [&[kind][..], body].concat(),
    }
    w.into_vec()
}

/// Decodes a message that starts with its type byte.
pub fn decode(buf: &[u8]) -> Result<SerfMessage, DecodeError> {
    let (&kind, body) = buf.split_first().ok_or(DecodeError::Truncated)?;
    let mut r = Reader::new(body);
    Ok(match kind {
        k if k == MessageType::Leave as u8 => {
            let mut l = Leave {
                ltime: 0,
                node: String::new(),
                prune: false,
            };
            r.read_struct(|key, r| {
                match key {
                    b"LTime" => l.ltime = r.uint_as()?,
                    b"Node" => l.node = r.string()?,
                    b"Prune" => l.prune = r.bool()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            SerfMessage::Leave(l)
        }
        k if k == MessageType::Join as u8 => {
            let mut j = Join {
                ltime: 0,
                node: String::new(),
            };
            r.read_struct(|key, r| {
                match key {
                    b"LTime" => j.ltime = r.uint_as()?,
                    b"Node" => j.node = r.string()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            SerfMessage::Join(j)
        }
        k if k == MessageType::PushPull as u8 => SerfMessage::PushPull(decode_push_pull(&mut r)?),
        k if k == MessageType::UserEvent as u8 => {
            let mut e = UserEvent {
                ltime: 0,
                name: String::new(),
                payload: Vec::new(),
                cc: false,
            };
            r.read_struct(|key, r| {
                match key {
                    b"CC" => e.cc = r.bool()?,
                    b"LTime" => e.ltime = r.uint_as()?,
                    b"Name" => e.name = r.string()?,
                    b"Payload" => e.payload = r.bytes()?.to_vec(),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            SerfMessage::UserEvent(e)
        }
        k if k == MessageType::Query as u8 => SerfMessage::Query(decode_query(&mut r)?),
        k if k == MessageType::QueryResponse as u8 => {
            let mut q = QueryResponseMsg::default();
            r.read_struct(|key, r| {
                match key {
                    b"Flags" => q.flags = r.uint_as()?,
                    b"From" => q.from = r.string()?,
                    b"ID" => q.id = r.uint_as()?,
                    b"LTime" => q.ltime = r.uint_as()?,
                    b"Payload" => q.payload = r.bytes()?.to_vec(),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            SerfMessage::QueryResponse(q)
        }
        k if k == MessageType::Relay as u8 => {
            let (mut ip, mut port, mut dest_name) = (None, 0u16, String::new());
            r.read_struct(|key, r| {
                match key {
                    b"DestAddr" => r.read_struct(|key, r| {
                        match key {
                            b"IP" => ip = ip_from_bytes(r.bytes()?),
                            b"Port" => port = r.uint_as()?,
                            _ => return Ok(false),
                        }
                        Ok(true)
                    })?,
                    b"DestName" => dest_name = r.string()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            let ip = ip.ok_or_else(|| {
                DecodeError::Malformed("relay without a destination address".into())
            })?;
            SerfMessage::Relay(Relay {
                dest: SocketAddr::new(ip, port),
                dest_name,
                inner: r.rest().to_vec(),
            })
        }
        kind => SerfMessage::Other {
            kind,
            body: body.to_vec(),
        },
    })
}

fn write_query_response(w: &mut Writer, q: &QueryResponseMsg) {
    w.map_header(5);
    w.str("Flags");
    w.uint(q.flags as u64);
    w.str("From");
    w.str(&q.from);
    w.str("ID");
    w.uint(q.id as u64);
    w.str("LTime");
    w.uint(q.ltime);
    w.str("Payload");
    w.opt_raw((!q.payload.is_empty()).then_some(&q.payload[..]));
}

fn decode_query(r: &mut Reader<'_>) -> Result<QueryMsg, DecodeError> {
    let mut q = QueryMsg {
        ltime: 0,
        id: 0,
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 0,
        source_node: String::new(),
        filters: Vec::new(),
        flags: 0,
        relay_factor: 0,
        timeout: 0,
        name: String::new(),
        payload: Vec::new(),
    };
    let mut addr = None;
    r.read_struct(|key, r| {
        match key {
            b"Addr" => addr = ip_from_bytes(r.bytes()?),
            b"Filters" => {
                if !take_nil(r)? {
                    for _ in 0..r.array_len()? {
                        q.filters.push(r.bytes()?.to_vec());
                    }
                }
            }
            b"Flags" => q.flags = r.uint_as()?,
            b"ID" => q.id = r.uint_as()?,
            b"LTime" => q.ltime = r.uint_as()?,
            b"Name" => q.name = r.string()?,
            b"Payload" => q.payload = r.bytes()?.to_vec(),
            b"Port" => q.port = r.uint_as()?,
            b"RelayFactor" => q.relay_factor = r.uint_as()?,
            b"SourceNode" => q.source_node = r.string()?,
            b"Timeout" => q.timeout = r.uint_as::<i64>()?.max(0) as u64,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    q.addr = addr.ok_or_else(|| DecodeError::Malformed("query without a source address".into()))?;
    Ok(q)
}

/// A key-query payload (`07 {Key}`): the raw key, empty for list-keys.
pub fn decode_key_request(payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let Some((&7, body)) = payload.split_first() else {
        return Err(DecodeError::Malformed(
            "key request does not start with type 7".into(),
        ));
    };
    let mut key = Vec::new();
    Reader::new(body).read_struct(|k, r| {
        if k != b"Key" {
            return Ok(false);
        }
        key = r.bytes()?.to_vec();
        Ok(true)
    })?;
    Ok(key)
}

/// A key-query payload (`07 {Key}`), as Serf's key manager sends it.
pub fn encode_key_request(key: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![MessageType::KeyRequest as u8]);
    w.map_header(1);
    w.str("Key");
    w.raw(key);
    w.into_vec()
}

/// Reads a key-query answer; `Err` if it is not a `08` message or does not decode.
pub fn decode_key_response(payload: &[u8]) -> Result<KeyResponse, DecodeError> {
    let Some((&8, body)) = payload.split_first() else {
        return Err(DecodeError::Malformed(
            "key response does not start with type 8".into(),
        ));
    };
    let mut k = KeyResponse::default();
    Reader::new(body).read_struct(|key, r| {
        match key {
            b"Result" => k.result = r.bool()?,
            b"Message" => k.message = r.string()?,
            b"PrimaryKey" => k.primary_key = r.string()?,
            b"Keys" => {
                if !take_nil(r)? {
                    for _ in 0..r.array_len()? {
                        k.keys.push(r.string()?);
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(k)
}

/// A key-query answer (`08 {Keys, Message, PrimaryKey, Result}`); keys are base64.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyResponse {
    /// Whether the operation succeeded.
    pub result: bool,
    /// Why it failed, or a warning (a truncated list).
    pub message: String,
    /// The installed keys (listings).
    pub keys: Vec<String>,
    /// The primary key (listings).
    pub primary_key: String,
}

/// Encodes a key-query answer, type byte first.
pub fn encode_key_response(k: &KeyResponse) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![MessageType::KeyResponse as u8]);
    w.map_header(4);
    w.str("Keys");
    if k.keys.is_empty() {
        w.nil();
    } else {
        w.array_header(k.keys.len());
        for key in &k.keys {
            w.str(key);
        }
    }
    w.str("Message");
    w.str(&k.message);
    w.str("PrimaryKey");
    w.str(&k.primary_key);
    w.str("Result");
    w.bool(k.result);
    w.into_vec()
}

/// A `_serf_conflict` answer: `06` + the responder's record of the member (Go's `Member`), or
/// nil if it knows none.
pub fn encode_conflict_response(m: Option<&crate::member::Member>) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![MessageType::ConflictResponse as u8]);
    let Some(m) = m else {
        w.nil();
        return w.into_vec();
    };
    let [pmin, pmax, pcur, dmin, dmax, dcur] = m.vsn;
    w.map_header(11);
    w.str("Addr");
    w.raw(&ip_bytes(&m.addr));
    for (k, v) in [
        ("DelegateCur", dcur),
        ("DelegateMax", dmax),
        ("DelegateMin", dmin),
    ] {
        w.str(k);
        w.uint(v as u64);
    }
    w.str("Name");
    w.str(&m.name);
    w.str("Port");
    w.uint(m.port as u64);
    for (k, v) in [
        ("ProtocolCur", pcur),
        ("ProtocolMax", pmax),
        ("ProtocolMin", pmin),
    ] {
        w.str(k);
        w.uint(v as u64);
    }
    w.str("Status");
    w.uint(m.status as u64);
    w.str("Tags");
    w.map_header(m.tags.len());
    for (k, v) in &m.tags {
        w.str(k);
        w.str(v);
    }
    w.into_vec()
}

/// The address a `_serf_conflict` answer gives for the member; `None` if it knows none or the
/// answer is unreadable.
pub fn decode_conflict_response(buf: &[u8]) -> Option<SocketAddr> {
    let (&6, body) = buf.split_first()? else {
        return None;
    };
    let (mut ip, mut port) = (None, 0u16);
    Reader::new(body)
        .read_struct(|k, r| {
            match k {
                b"Addr" => ip = ip_from_bytes(r.bytes()?),
                b"Port" => port = r.uint_as()?,
                _ => return Ok(false),
            }
            Ok(true)
        })
        .ok()?;
    Some(SocketAddr::new(ip?, port))
}

/// A node filter: `00` + msgpack array of names.
pub fn node_filter(names: &[String]) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![0]);
    w.array_header(names.len());
    for n in names {
        w.str(n);
    }
    w.into_vec()
}

/// A tag filter: `01` + `{Expr, Tag}`.
pub fn tag_filter(tag: &str, expr: &str) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![1]);
    w.map_header(2);
    w.str("Expr");
    w.str(expr);
    w.str("Tag");
    w.str(tag);
    w.into_vec()
}

/// A decoded query filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Only these nodes.
    Nodes(Vec<String>),
    /// Only nodes whose tag `tag` matches the regular expression `expr`.
    Tag {
        /// The tag's name.
        tag: String,
        /// An unanchored regular expression.
        expr: String,
    },
}

/// Decodes one filter; `None` for an unknown type or bad encoding (the query is then not
/// processed, as in Go).
pub fn decode_filter(f: &[u8]) -> Option<Filter> {
    let (&kind, body) = f.split_first()?;
    let mut r = Reader::new(body);
    match kind {
        0 => {
            let n = r.array_len().ok()?;
            let mut names = Vec::new();
            for _ in 0..n {
                names.push(r.string().ok()?);
            }
            Some(Filter::Nodes(names))
        }
        1 => {
            let (mut tag, mut expr) = (String::new(), String::new());
            r.read_struct(|key, r| {
                match key {
                    b"Expr" => expr = r.string()?,
                    b"Tag" => tag = r.string()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })
            .ok()?;
            Some(Filter::Tag { tag, expr })
        }
        _ => None,
    }
}

/// Consumes a nil if one is next (Go's nil slices and maps).
fn take_nil(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    if r.rest().first() == Some(&0xc0) {
        r.skip()?;
        return Ok(true);
    }
    Ok(false)
}

fn decode_push_pull(r: &mut Reader<'_>) -> Result<PushPullState, DecodeError> {
    let mut p = PushPullState::default();
    r.read_struct(|key, r| {
        match key {
            b"LTime" => p.ltime = r.uint_as()?,
            b"EventLTime" => p.event_ltime = r.uint_as()?,
            b"QueryLTime" => p.query_ltime = r.uint_as()?,
            b"LeftMembers" => {
                if !take_nil(r)? {
                    for _ in 0..r.array_len()? {
                        p.left_members.push(r.string()?);
                    }
                }
            }
            b"StatusLTimes" => {
                if !take_nil(r)? {
                    for _ in 0..r.map_len()? {
                        let name = r.string()?;
                        p.status_ltimes.insert(name, r.uint_as()?);
                    }
                }
            }
            b"Events" => {
                if !take_nil(r)? {
                    for _ in 0..r.array_len()? {
                        p.events.push(decode_user_events(r)?);
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}

fn decode_user_events(r: &mut Reader<'_>) -> Result<Option<UserEvents>, DecodeError> {
    if take_nil(r)? {
        return Ok(None);
    }
    let mut e = UserEvents {
        ltime: 0,
        events: Vec::new(),
    };
    r.read_struct(|key, r| {
        match key {
            b"LTime" => e.ltime = r.uint_as()?,
            b"Events" => {
                if !take_nil(r)? {
                    for _ in 0..r.array_len()? {
                        let mut entry = UserEventEntry {
                            name: String::new(),
                            payload: Vec::new(),
                        };
                        r.read_struct(|key, r| {
                            match key {
                                b"Name" => entry.name = r.string()?,
                                b"Payload" => entry.payload = r.bytes()?.to_vec(),
                                _ => return Ok(false),
                            }
                            Ok(true)
                        })?;
                        e.events.push(entry);
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Some(e))
}

#[cfg(test)]
mod tests;
