//! Message bodies: each struct in [`messages`](super::messages) to and from `<type byte><msgpack>`
//! exactly as memberlist 0.2.x writes it (spec §2.4).
//!
//! Keys are written in Go's byte order, `omitempty` fields are left out when zero, and empty byte
//! slices (`Meta`, `Vsn` of a push/pull entry) are written as nil, as Go writes its nil slices.
//! Decoding follows Go's leniency: missing keys are defaults, unknown keys are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::messages::*;
use super::msgpack::{Reader, Writer};
use super::DecodeError;

fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(what.into())
}

/// Go `net.IP` bytes: 4 for IPv4, 16 for IPv6.
pub fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// 4 bytes → V4, 16 → V6 (a v4-mapped address stays V6 so it re-encodes as 16 bytes).
pub fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else if let Ok(a) = <[u8; 16]>::try_from(b) {
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    } else {
        None
    }
}

fn required_ip(b: &[u8], field: &str) -> Result<IpAddr, DecodeError> {
    ip_from_bytes(b).ok_or_else(|| malformed(format!("{field} is {} bytes, not 4 or 16", b.len())))
}

fn vsn_from(v: &[u8]) -> Vsn {
    // Old peers omit Vsn (all zero then, which the state machine treats as "unknown"); a short or
    // long one is cut or zero-padded to the six bytes the contract holds.
    let mut out = [0u8; 6];
    for (o, b) in out.iter_mut().zip(v) {
        *o = *b;
    }
    out
}

fn raw_or_nil(w: &mut Writer, b: &[u8]) {
    if b.is_empty() {
        w.nil();
    } else {
        w.raw(b);
    }
}

// ---- bodies -------------------------------------------------------------------------------

pub(crate) fn write_ping(w: &mut Writer, p: &Ping) {
    #[allow(clippy::arithmetic_side_effects)] // a count of at most five fields
    let n = 2
        + p.source_addr.is_some() as usize
        + !p.source_node.is_empty() as usize
        + (p.source_port != 0) as usize;
    w.map_header(n);
    w.str("Node");
    w.str(&p.node);
    w.str("SeqNo");
    w.uint(p.seq_no as u64);
    write_source(w, &p.source_addr, &p.source_node, p.source_port);
}

/// The omit-empty `SourceAddr`, `SourceNode`, `SourcePort` fields of pings (memberlist ≥ 0.2.0),
/// in Go's key order.
fn write_source(w: &mut Writer, addr: &Option<IpAddr>, node: &str, port: u16) {
    if let Some(a) = addr {
        w.str("SourceAddr");
        w.raw(&ip_bytes(a));
    }
    if !node.is_empty() {
        w.str("SourceNode");
        w.str(node);
    }
    if port != 0 {
        w.str("SourcePort");
        w.uint(port as u64);
    }
}

pub(crate) fn read_ping(r: &mut Reader<'_>) -> Result<Ping, DecodeError> {
    let mut p = Ping::default();
    r.read_struct(|k, r| {
        match k {
            b"Node" => p.node = r.string()?,
            b"SeqNo" => p.seq_no = r.uint_as()?,
            b"SourceAddr" => p.source_addr = ip_from_bytes(r.bytes()?),
            b"SourceNode" => p.source_node = r.string()?,
            b"SourcePort" => p.source_port = r.uint_as()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}

fn write_indirect_ping(w: &mut Writer, p: &IndirectPing) {
    #[allow(clippy::arithmetic_side_effects)] // a count of at most eight fields
    let n = 5
        + p.source_addr.is_some() as usize
        + !p.source_node.is_empty() as usize
        + (p.source_port != 0) as usize;
    w.map_header(n);
    w.str("Nack");
    w.bool(p.nack);
    w.str("Node");
    w.str(&p.node);
    w.str("Port");
    w.uint(p.port as u64);
    w.str("SeqNo");
    w.uint(p.seq_no as u64);
    write_source(w, &p.source_addr, &p.source_node, p.source_port);
    w.str("Target");
    w.raw(&ip_bytes(&p.target));
}

fn read_indirect_ping(r: &mut Reader<'_>) -> Result<IndirectPing, DecodeError> {
    let (mut seq_no, mut target, mut port, mut node, mut nack) = (0, None, 0, String::new(), false);
    let (mut source_addr, mut source_port, mut source_node) = (None, 0, String::new());
    r.read_struct(|k, r| {
        match k {
            b"Nack" => nack = r.bool()?,
            b"Node" => node = r.string()?,
            b"Port" => port = r.uint_as()?,
            b"SeqNo" => seq_no = r.uint_as()?,
            b"SourceAddr" => source_addr = ip_from_bytes(r.bytes()?),
            b"SourceNode" => source_node = r.string()?,
            b"SourcePort" => source_port = r.uint_as()?,
            b"Target" => target = Some(required_ip(r.bytes()?, "Target")?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(IndirectPing {
        seq_no,
        target: target.ok_or_else(|| malformed("indirect ping without Target"))?,
        port,
        node,
        nack,
        source_addr,
        source_port,
        source_node,
    })
}

pub(crate) fn write_ack(w: &mut Writer, a: &Ack) {
    w.map_header(2);
    w.str("Payload");
    w.opt_raw(a.payload.as_deref());
    w.str("SeqNo");
    w.uint(a.seq_no as u64);
}

pub(crate) fn read_ack(r: &mut Reader<'_>) -> Result<Ack, DecodeError> {
    let mut a = Ack::default();
    r.read_struct(|k, r| {
        match k {
            b"Payload" => a.payload = r.opt_bytes()?.map(<[u8]>::to_vec),
            b"SeqNo" => a.seq_no = r.uint_as()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(a)
}

fn write_nack(w: &mut Writer, n: &Nack) {
    w.map_header(1);
    w.str("SeqNo");
    w.uint(n.seq_no as u64);
}

fn read_nack(r: &mut Reader<'_>) -> Result<Nack, DecodeError> {
    let mut seq_no = 0;
    r.read_struct(|k, r| {
        if k == b"SeqNo" {
            seq_no = r.uint_as()?;
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok(Nack { seq_no })
}

/// suspect and dead share a shape: `{From, Incarnation, Node}`.
fn write_accusation(w: &mut Writer, from: &str, incarnation: u32, node: &str) {
    w.map_header(3);
    w.str("From");
    w.str(from);
    w.str("Incarnation");
    w.uint(incarnation as u64);
    w.str("Node");
    w.str(node);
}

fn read_accusation(r: &mut Reader<'_>) -> Result<(String, u32, String), DecodeError> {
    let (mut from, mut inc, mut node) = (String::new(), 0, String::new());
    r.read_struct(|k, r| {
        match k {
            b"From" => from = r.string()?,
            b"Incarnation" => inc = r.uint_as()?,
            b"Node" => node = r.string()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((from, inc, node))
}

fn write_alive(w: &mut Writer, a: &Alive) {
    w.map_header(6);
    w.str("Addr");
    w.raw(&ip_bytes(&a.addr));
    w.str("Incarnation");
    w.uint(a.incarnation as u64);
    w.str("Meta");
    raw_or_nil(w, &a.meta);
    w.str("Node");
    w.str(&a.node);
    w.str("Port");
    w.uint(a.port as u64);
    w.str("Vsn");
    w.raw(&a.vsn);
}

fn read_alive(r: &mut Reader<'_>) -> Result<Alive, DecodeError> {
    let (mut inc, mut node, mut addr, mut port) = (0, String::new(), None, 0);
    let (mut meta, mut vsn) = (Vec::new(), Vec::new());
    r.read_struct(|k, r| {
        match k {
            b"Addr" => addr = Some(required_ip(r.bytes()?, "Addr")?),
            b"Incarnation" => inc = r.uint_as()?,
            b"Meta" => meta = r.bytes()?.to_vec(),
            b"Node" => node = r.string()?,
            b"Port" => port = r.uint_as()?,
            b"Vsn" => vsn = r.byte_vec_lenient()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Alive {
        incarnation: inc,
        node,
        addr: addr.ok_or_else(|| malformed("alive without Addr"))?,
        port,
        meta,
        vsn: vsn_from(&vsn),
    })
}

pub(crate) fn write_err(w: &mut Writer, e: &ErrResp) {
    w.map_header(1);
    w.str("Error");
    w.str(&e.error);
}

pub(crate) fn read_err(r: &mut Reader<'_>) -> Result<ErrResp, DecodeError> {
    let mut error = String::new();
    r.read_struct(|k, r| {
        if k == b"Error" {
            error = r.string()?;
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok(ErrResp { error })
}

/// `pushPullHeader {Join, Nodes, UserStateLen}`.
pub(crate) fn write_push_pull_header(w: &mut Writer, join: bool, nodes: usize, user_len: usize) {
    w.map_header(3);
    w.str("Join");
    w.bool(join);
    w.str("Nodes");
    w.uint(nodes as u64);
    w.str("UserStateLen");
    w.uint(user_len as u64);
}

/// Returns `(join, nodes, user_state_len)`; negative counts are malformed.
pub(crate) fn read_push_pull_header(r: &mut Reader<'_>) -> Result<(bool, u64, u64), DecodeError> {
    let (mut join, mut nodes, mut user) = (false, 0u64, 0u64);
    r.read_struct(|k, r| {
        match k {
            b"Join" => join = r.bool()?,
            b"Nodes" => nodes = r.uint_as()?,
            b"UserStateLen" => user = r.uint_as()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((join, nodes, user))
}

pub(crate) fn write_push_node_state(w: &mut Writer, n: &PushNodeState) {
    w.map_header(7);
    w.str("Addr");
    w.raw(&ip_bytes(&n.addr));
    w.str("Incarnation");
    w.uint(n.incarnation as u64);
    w.str("Meta");
    raw_or_nil(w, &n.meta);
    w.str("Name");
    w.str(&n.name);
    w.str("Port");
    w.uint(n.port as u64);
    w.str("State");
    w.uint(n.state as u64);
    w.str("Vsn");
    raw_or_nil(w, &n.vsn);
}

pub(crate) fn read_push_node_state(r: &mut Reader<'_>) -> Result<PushNodeState, DecodeError> {
    let (mut name, mut addr, mut port, mut meta) = (String::new(), None, 0, Vec::new());
    let (mut inc, mut state, mut vsn) = (0, 0i64, Vec::new());
    r.read_struct(|k, r| {
        match k {
            b"Addr" => addr = Some(required_ip(r.bytes()?, "Addr")?),
            b"Incarnation" => inc = r.uint_as()?,
            b"Meta" => meta = r.bytes()?.to_vec(),
            b"Name" => name = r.string()?,
            b"Port" => port = r.uint_as()?,
            b"State" => state = r.uint_as()?,
            b"Vsn" => vsn = r.byte_vec_lenient()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(PushNodeState {
        name,
        addr: addr.ok_or_else(|| malformed("push/pull node without Addr"))?,
        port,
        meta,
        incarnation: inc,
        state: NodeStateKind::from_i64(state)
            .ok_or_else(|| malformed(format!("unknown node state {state}")))?,
        vsn,
    })
}

/// `compress {Algo, Buf}`.
pub(crate) fn write_compress(w: &mut Writer, buf: &[u8]) {
    w.map_header(2);
    w.str("Algo");
    w.uint(0);
    w.str("Buf");
    w.raw(buf);
}

/// Returns the LZW bytes of a `compress` body; any algorithm but 0 (LZW) is refused, as in Go.
pub(crate) fn read_compress<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let (mut algo, mut buf): (u64, &'a [u8]) = (0, &[]);
    r.read_struct(|k, r| {
        match k {
            b"Algo" => algo = r.uint_as()?,
            b"Buf" => buf = r.bytes()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if algo != 0 {
        return Err(malformed(format!("unknown compression algorithm {algo}")));
    }
    Ok(buf)
}

pub(crate) fn write_user_msg_header(w: &mut Writer, len: usize) {
    w.map_header(1);
    w.str("UserMsgLen");
    w.uint(len as u64);
}

pub(crate) fn read_user_msg_header(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let mut len = 0u64;
    r.read_struct(|k, r| {
        if k == b"UserMsgLen" {
            len = r.uint_as()?;
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok(len)
}

// ---- whole messages -----------------------------------------------------------------------

/// Encode a packet message: its type byte then its body (`08` + raw bytes for [`Message::User`]).
pub fn encode_message(msg: &Message) -> Vec<u8> {
    let (ty, body): (MessageType, &dyn Fn(&mut Writer)) = match msg {
        Message::Ping(p) => (MessageType::Ping, &|w| write_ping(w, p)),
        Message::IndirectPing(p) => (MessageType::IndirectPing, &|w| write_indirect_ping(w, p)),
        Message::Ack(a) => (MessageType::Ack, &|w| write_ack(w, a)),
        Message::Nack(n) => (MessageType::Nack, &|w| write_nack(w, n)),
        Message::Suspect(s) => (MessageType::Suspect, &|w| {
            write_accusation(w, &s.from, s.incarnation, &s.node)
        }),
        Message::Alive(a) => (MessageType::Alive, &|w| write_alive(w, a)),
        Message::Dead(d) => (MessageType::Dead, &|w| {
            write_accusation(w, &d.from, d.incarnation, &d.node)
        }),
        Message::User(b) => (MessageType::User, &|w| w.bytes(b)),
        Message::Err(e) => (MessageType::Err, &|w| write_err(w, e)),
    };
    let mut w = Writer::with_buf(vec![ty as u8]);
    body(&mut w);
    w.into_vec()
}

/// Decode one plain message (not compound, compressed, CRC'd or encrypted). Trailing bytes after
/// the body are ignored, as Go's decoder ignores them.
pub fn decode_message(buf: &[u8]) -> Result<Message, DecodeError> {
    let (&ty, body) = buf.split_first().ok_or(DecodeError::Truncated)?;
    let mut r = Reader::new(body);
    let ty =
        MessageType::from_u8(ty).ok_or_else(|| malformed(format!("unknown message type {ty}")))?;
    let msg = match ty {
        MessageType::Ping => Message::Ping(read_ping(&mut r)?),
        MessageType::IndirectPing => Message::IndirectPing(read_indirect_ping(&mut r)?),
        MessageType::Ack => Message::Ack(read_ack(&mut r)?),
        MessageType::Nack => Message::Nack(read_nack(&mut r)?),
        MessageType::Suspect => {
            let (from, incarnation, node) = read_accusation(&mut r)?;
            Message::Suspect(Suspect {
                incarnation,
                node,
                from,
            })
        }
        MessageType::Dead => {
            let (from, incarnation, node) = read_accusation(&mut r)?;
            Message::Dead(Dead {
                incarnation,
                node,
                from,
            })
        }
        MessageType::Alive => Message::Alive(read_alive(&mut r)?),
        MessageType::User => Message::User(body.to_vec()),
        MessageType::Err => Message::Err(read_err(&mut r)?),
        other => {
            return Err(malformed(format!(
                "{other:?} is not a single packet message"
            )))
        }
    };
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn ping_matches_spec_appendix_a1() {
        // spec A.1: UDP ping from agent `a` to node `tcpn`
        let bytes = hex("00 85 a4 4e6f6465 a4 7463706e a5 5365714e6f cd 0158
            aa 536f7572636541646472 a4 7f000001 aa 536f757263654e6f6465 a1 61
            aa 536f75726365506f7274 cd 1f0a");
        let ping = Ping {
            seq_no: 344,
            node: "tcpn".into(),
            source_addr: Some("127.0.0.1".parse().unwrap()),
            source_port: 7946,
            source_node: "a".into(),
        };
        assert_eq!(decode_message(&bytes).unwrap(), Message::Ping(ping.clone()));
        assert_eq!(encode_message(&Message::Ping(ping)), bytes);
    }

    #[test]
    fn nack_matches_spec_appendix_a2() {
        let bytes = hex("0b 81 a5 5365714e6f cd 1092");
        assert_eq!(
            decode_message(&bytes).unwrap(),
            Message::Nack(Nack { seq_no: 4242 })
        );
        assert_eq!(encode_message(&Message::Nack(Nack { seq_no: 4242 })), bytes);
    }

    #[test]
    fn ping_omits_empty_source_fields() {
        // memberlist `ping`: SourceAddr/SourcePort/SourceNode are `omitempty`.
        let enc = encode_message(&Message::Ping(Ping {
            seq_no: 1,
            node: "n".into(),
            ..Ping::default()
        }));
        assert_eq!(enc, hex("00 82 a4 4e6f6465 a1 6e a5 5365714e6f 01"));
    }

    #[test]
    fn v4_mapped_addresses_keep_sixteen_bytes() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[127, 0, 0, 1]);
        let ip = ip_from_bytes(&addr).unwrap();
        assert!(ip.is_ipv6());
        assert_eq!(ip_bytes(&ip), addr);
    }

    #[test]
    fn vsn_is_accepted_as_an_int_array() {
        // spec §1.2: Go decodes Vsn from an int array too.
        let mut w = Writer::with_buf(vec![4]);
        w.map_header(3);
        w.str("Addr");
        w.raw(&[10, 0, 0, 1]);
        w.str("Node");
        w.str("x");
        w.str("Vsn");
        w.array_header(6);
        for b in [1u64, 5, 2, 2, 5, 5] {
            w.uint(b);
        }
        let Message::Alive(a) = decode_message(w.as_slice()).unwrap() else {
            panic!()
        };
        assert_eq!(a.vsn, [1, 5, 2, 2, 5, 5]);
    }

    #[test]
    fn unknown_keys_are_skipped_and_missing_keys_default() {
        let bytes = hex("02 82 a3 466f6f 81 a1 61 92 01 02 a5 5365714e6f 07");
        assert_eq!(
            decode_message(&bytes).unwrap(),
            Message::Ack(Ack {
                seq_no: 7,
                payload: None
            })
        );
    }
}
