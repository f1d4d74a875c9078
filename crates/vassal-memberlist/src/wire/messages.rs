//! The memberlist messages as typed data: one struct per Go struct, field for field (spec §2.4).
//!
//! Field names follow Go's; the codec (`encode`/`decode`) writes them as msgpack maps keyed by the
//! Go names in byte order, the way go-msgpack does.

use std::net::IpAddr;

/// The type byte that starts every memberlist message (spec §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Ping = 0,
    IndirectPing = 1,
    Ack = 2,
    Suspect = 3,
    Alive = 4,
    Dead = 5,
    PushPull = 6,
    Compound = 7,
    User = 8,
    Compress = 9,
    Encrypt = 10,
    Nack = 11,
    HasCrc = 12,
    Err = 13,
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
    pub seq_no: u32,
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
    pub seq_no: u32,
    pub target: IpAddr,
    pub port: u16,
    pub node: String,
    /// Ask the intermediary for a nack if the target does not answer.
    pub nack: bool,
    pub source_addr: Option<IpAddr>,
    pub source_port: u16,
    pub source_node: String,
}

/// `ackResp` (type 2). Serf puts a Vivaldi coordinate in `payload`; `None` encodes as nil.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    pub seq_no: u32,
    pub payload: Option<Vec<u8>>,
}

/// `nackResp` (type 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack {
    pub seq_no: u32,
}

/// `suspect` (type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub incarnation: u32,
    pub node: String,
    pub from: String,
}

/// `dead` (type 5). `from == node` means the node left gracefully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub incarnation: u32,
    pub node: String,
    pub from: String,
}

/// The six protocol-version bytes every node advertises: `[pmin, pmax, pcur, dmin, dmax, dcur]`
/// (spec §2.12). Always exactly six on the wire.
pub type Vsn = [u8; 6];

/// `alive` (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    pub incarnation: u32,
    pub node: String,
    pub addr: IpAddr,
    /// 0 means "the receiver's own bind port".
    pub port: u16,
    pub meta: Vec<u8>,
    pub vsn: Vsn,
}

/// `errResp` (type 13), sent on a stream when the responder could not read the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrResp {
    pub error: String,
}

/// A node's state as carried in a push/pull (`State` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeStateKind {
    Alive = 0,
    Suspect = 1,
    Dead = 2,
    /// Graceful leave (memberlist ≥ 0.2.1).
    Left = 3,
}

impl NodeStateKind {
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
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub meta: Vec<u8>,
    pub incarnation: u32,
    pub state: NodeStateKind,
    /// Empty when the sender omitted it (old peers); otherwise six bytes.
    pub vsn: Vec<u8>,
}

/// A whole push/pull exchange message (type 6): header, node states, and the delegate's raw state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushPull {
    pub join: bool,
    pub nodes: Vec<PushNodeState>,
    pub user_state: Vec<u8>,
}

/// A message that travels in a UDP packet (after label, decryption, CRC, compression and compound
/// layers are removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping(Ping),
    IndirectPing(IndirectPing),
    Ack(Ack),
    Nack(Nack),
    Suspect(Suspect),
    Alive(Alive),
    Dead(Dead),
    /// A delegate (Serf) message: the raw bytes after the `08` type byte.
    User(Vec<u8>),
    Err(ErrResp),
}

/// A message that travels on a TCP stream (after label, decryption and compression are removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    PushPull(PushPull),
    Ping(Ping),
    Ack(Ack),
    /// A reliable user message (`08 {UserMsgLen} <bytes>`).
    User(Vec<u8>),
    Err(ErrResp),
}
