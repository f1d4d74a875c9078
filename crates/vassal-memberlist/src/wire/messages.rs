//! The memberlist messages as typed data: one struct per Go struct, field for field (spec §2.4).
//!
//! Field names follow Go's; the codec (`encode`/`decode`) writes them as msgpack maps keyed by the
//! Go names in byte order, the way go-msgpack does.

use std::net::IpAddr;

/// The type byte that starts every memberlist message (spec §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// [`Ping`].
    Ping = 0,
    /// [`IndirectPing`].
    IndirectPing = 1,
    /// [`Ack`].
    Ack = 2,
    /// [`Suspect`].
    Suspect = 3,
    /// [`Alive`].
    Alive = 4,
    /// [`Dead`].
    Dead = 5,
    /// [`PushPull`] (streams only).
    PushPull = 6,
    /// Several messages in one packet (spec §2.5).
    Compound = 7,
    /// A delegate (Serf) message.
    User = 8,
    /// An LZW-compressed message (spec §2.7).
    Compress = 9,
    /// An encrypted stream (spec §2.9).
    Encrypt = 10,
    /// [`Nack`].
    Nack = 11,
    /// A CRC-checked packet (spec §2.6).
    HasCrc = 12,
    /// [`ErrResp`].
    Err = 13,
    /// A label header (spec §2.8).
    HasLabel = 244,
}

impl MessageType {
    /// The message type for a wire byte, if it is one memberlist knows.
    pub fn from_u8(b: u8) -> Option<Self> {
        use MessageType::*;
        Some(match b {
            0 => Ping,
            1 => IndirectPing,
            2 => Ack,
            3 => Suspect,
            4 => Alive,
            5 => Dead,
            6 => PushPull,
            7 => Compound,
            8 => User,
            9 => Compress,
            10 => Encrypt,
            11 => Nack,
            12 => HasCrc,
            13 => Err,
            244 => HasLabel,
            _ => return None,
        })
    }
}

/// `ping` (type 0). `Node` names the intended target; the `Source*` fields (memberlist ≥ 0.2.0)
/// say where to send the ack.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ping {
    /// Sequence number the ack must echo.
    pub seq_no: u32,
    /// The node we mean to ping; empty from old senders.
    pub node: String,
    /// `SourceAddr`, omitted when `None`.
    pub source_addr: Option<IpAddr>,
    /// `SourcePort`, omitted when 0.
    pub source_port: u16,
    /// `SourceNode`, omitted when empty.
    pub source_node: String,
}

/// `indirectPingReq` (type 1): ask a peer to probe `node` at `target:port` for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndirectPing {
    /// The requester's sequence number, echoed in the relayed ack or nack.
    pub seq_no: u32,
    /// The address of the node to probe.
    pub target: IpAddr,
    /// Its port (0: the receiver's bind port).
    pub port: u16,
    /// Its name.
    pub node: String,
    /// Ask the intermediary for a nack if the target does not answer.
    pub nack: bool,
    /// Where to send the answer (`SourceAddr`), omitted when `None`.
    pub source_addr: Option<IpAddr>,
    /// `SourcePort`, omitted when 0.
    pub source_port: u16,
    /// `SourceNode`, the requester's name; omitted when empty.
    pub source_node: String,
}

/// `ackResp` (type 2). Serf puts a Vivaldi coordinate in `payload`; `None` encodes as nil.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// The sequence number of the ping answered.
    pub seq_no: u32,
    /// The ping delegate's payload, if any.
    pub payload: Option<Vec<u8>>,
}

/// `nackResp` (type 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack {
    /// The requester's sequence number from the indirect ping.
    pub seq_no: u32,
}

/// `suspect` (type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    /// The accused's incarnation the accusation is about.
    pub incarnation: u32,
    /// The accused.
    pub node: String,
    /// The accuser.
    pub from: String,
}

/// `dead` (type 5). `from == node` means the node left gracefully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    /// The node's incarnation the verdict is about.
    pub incarnation: u32,
    /// The node declared dead (or leaving).
    pub node: String,
    /// Who declared it.
    pub from: String,
}

/// The six protocol-version bytes every node advertises: `[pmin, pmax, pcur, dmin, dmax, dcur]`
/// (spec §2.12). Always exactly six on the wire.
pub type Vsn = [u8; 6];

/// `alive` (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    /// The node's incarnation: only the node raises it.
    pub incarnation: u32,
    /// The node's name.
    pub node: String,
    /// Its address.
    pub addr: IpAddr,
    /// 0 means "the receiver's own bind port".
    pub port: u16,
    /// Its metadata (Serf: encoded tags).
    pub meta: Vec<u8>,
    /// Its protocol versions.
    pub vsn: Vsn,
}

/// `errResp` (type 13), sent on a stream when the responder could not read the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrResp {
    /// What went wrong, in the responder's words.
    pub error: String,
}

/// A node's state as carried in a push/pull (`State` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeStateKind {
    /// Answering probes, as far as we know.
    Alive = 0,
    /// Accused of failure, with time to refute.
    Suspect = 1,
    /// Failed: suspected and not refuted in time.
    Dead = 2,
    /// Graceful leave (memberlist ≥ 0.2.1).
    Left = 3,
}

impl NodeStateKind {
    /// The state for its wire number, if it is one.
    pub fn from_i64(v: i64) -> Option<Self> {
        Some(match v {
            0 => Self::Alive,
            1 => Self::Suspect,
            2 => Self::Dead,
            3 => Self::Left,
            _ => return None,
        })
    }
}

/// `pushNodeState`: one entry of a push/pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushNodeState {
    /// The node's name.
    pub name: String,
    /// Its address.
    pub addr: IpAddr,
    /// Its port (0: the receiver's bind port).
    pub port: u16,
    /// Its metadata.
    pub meta: Vec<u8>,
    /// Its incarnation as the sender knows it.
    pub incarnation: u32,
    /// Its state as the sender sees it.
    pub state: NodeStateKind,
    /// Empty when the sender omitted it (old peers); otherwise six bytes.
    pub vsn: Vec<u8>,
}

/// A whole push/pull exchange message (type 6): header, node states, and the delegate's raw state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushPull {
    /// Sent as part of a join (the delegate may treat the state differently).
    pub join: bool,
    /// Every node in the sender's table, in any state.
    pub nodes: Vec<PushNodeState>,
    /// The delegate's state (Serf: its clocks, members' status times, left members and recent
    /// user events).
    pub user_state: Vec<u8>,
}

/// A message that travels in a UDP packet (after label, decryption, CRC, compression and compound
/// layers are removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A probe.
    Ping(Ping),
    /// A request to probe a node for the sender.
    IndirectPing(IndirectPing),
    /// A probe's answer.
    Ack(Ack),
    /// An intermediary could not reach the target of an indirect ping.
    Nack(Nack),
    /// An accusation.
    Suspect(Suspect),
    /// A node is alive (or announces itself).
    Alive(Alive),
    /// A failure verdict, or a leave.
    Dead(Dead),
    /// A delegate (Serf) message: the raw bytes after the `08` type byte.
    User(Vec<u8>),
    /// An error reply.
    Err(ErrResp),
}

/// A message that travels on a TCP stream (after label, decryption and compression are removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    /// A full-state exchange (both directions).
    PushPull(PushPull),
    /// A TCP ping, the probe fallback.
    Ping(Ping),
    /// The answer to a TCP ping.
    Ack(Ack),
    /// A reliable user message (`08 {UserMsgLen} <bytes>`).
    User(Vec<u8>),
    /// The responder could not read our request.
    Err(ErrResp),
}
