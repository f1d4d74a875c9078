//! Serf's RPC messages (spec §6): the request and response headers, each command's body, and
//! the stream records, with Go's field names. Encoding writes keys in Go's (sorted) order;
//! decoding is as lenient as Go's: unknown keys are skipped, nil or missing fields are zero,
//! and strings and byte fields may come as str or bin.

use std::collections::BTreeMap;
use std::net::IpAddr;

use vassal_serf::MemberStatus;

use crate::msgpack::Value;

/// The only IPC version there is.
pub const IPC_VERSION: i32 = 1;

/// Command names.
pub mod command {
    pub const HANDSHAKE: &str = "handshake";
    pub const AUTH: &str = "auth";
    pub const EVENT: &str = "event";
    pub const FORCE_LEAVE: &str = "force-leave";
    pub const JOIN: &str = "join";
    pub const MEMBERS: &str = "members";
    pub const MEMBERS_FILTERED: &str = "members-filtered";
    pub const STREAM: &str = "stream";
    pub const STOP: &str = "stop";
    pub const MONITOR: &str = "monitor";
    pub const LEAVE: &str = "leave";
    pub const INSTALL_KEY: &str = "install-key";
    pub const USE_KEY: &str = "use-key";
    pub const REMOVE_KEY: &str = "remove-key";
    pub const LIST_KEYS: &str = "list-keys";
    pub const TAGS: &str = "tags";
    pub const QUERY: &str = "query";
    pub const RESPOND: &str = "respond";
    pub const STATS: &str = "stats";
    pub const GET_COORDINATE: &str = "get-coordinate";
}

/// Serf's error strings, byte for byte (spec §6.5).
pub mod errors {
    pub const UNSUPPORTED_COMMAND: &str = "Unsupported command";
    pub const UNSUPPORTED_IPC_VERSION: &str = "Unsupported IPC version";
    pub const DUPLICATE_HANDSHAKE: &str = "Handshake already performed";
    pub const HANDSHAKE_REQUIRED: &str = "Handshake required";
    pub const MONITOR_EXISTS: &str = "Monitor already exists";
    pub const INVALID_FILTER: &str = "Invalid event filter";
    pub const STREAM_EXISTS: &str = "Stream with given sequence exists";
    pub const INVALID_QUERY_ID: &str = "No pending queries matching ID";
    pub const AUTH_REQUIRED: &str = "Authentication required";
    pub const INVALID_AUTH_TOKEN: &str = "Invalid authentication token";
}

/// Query stream record types.
pub mod query_record {
    pub const ACK: &str = "ack";
    pub const RESPONSE: &str = "response";
    pub const DONE: &str = "done";
}

/// A message that does not have the shape its command needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}: field {field} is {found}, expected {expected}")]
pub struct ShapeError {
    pub message: &'static str,
    pub field: &'static str,
    pub expected: &'static str,
    pub found: &'static str,
}

/// Reads the fields of one decoded map leniently, like go-msgpack decoding into a struct.
pub struct Fields<'a> {
    message: &'static str,
    map: Option<&'a Value>,
}

impl<'a> Fields<'a> {
    /// A map, or nil (all fields zero). Anything else is an error.
    pub fn of(message: &'static str, v: &'a Value) -> Result<Self, ShapeError> {
        match v {
            Value::Map(_) => Ok(Fields {
                message,
                map: Some(v),
            }),
            Value::Nil => Ok(Fields { message, map: None }),
            other => Err(ShapeError {
                message,
                field: "(body)",
                expected: "map",
                found: other.kind(),
            }),
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map
            .and_then(|m| m.get(field))
            .filter(|v| **v != Value::Nil)
    }

    fn bad(&self, field: &'static str, expected: &'static str, v: &Value) -> ShapeError {
        ShapeError {
            message: self.message,
            field,
            expected,
            found: v.kind(),
        }
    }

    pub fn string(&self, field: &'static str) -> Result<String, ShapeError> {
        match self.get(field) {
            None => Ok(String::new()),
            Some(Value::Str(b) | Value::Bin(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
            Some(v) => Err(self.bad(field, "string", v)),
        }
    }

    /// A Go `[]byte`: `None` when nil or missing.
    pub fn bytes(&self, field: &'static str) -> Result<Option<Vec<u8>>, ShapeError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Str(b) | Value::Bin(b)) => Ok(Some(b.clone())),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::Uint(n) if *n <= 255 => Ok(*n as u8),
                    v => Err(self.bad(field, "bytes", v)),
                })
                .collect::<Result<Vec<u8>, _>>()
                .map(Some),
            Some(v) => Err(self.bad(field, "bytes", v)),
        }
    }

    pub fn uint(&self, field: &'static str) -> Result<u64, ShapeError> {
        match self.get(field) {
            None => Ok(0),
            Some(Value::Uint(n)) => Ok(*n),
            Some(Value::Int(n)) => Ok(*n as u64),
            Some(v) => Err(self.bad(field, "integer", v)),
        }
    }

    /// An unsigned integer for a narrower Go field (`uint8`, `uint16`): a value that does not fit
    /// is refused, as go-msgpack refuses it, rather than truncated (`RelayFactor: 257` must not
    /// become 1).
    pub fn narrow_uint<T: TryFrom<u64>>(&self, field: &'static str) -> Result<T, ShapeError> {
        let n = self.uint(field)?;
        T::try_from(n).map_err(|_| ShapeError {
            message: self.message,
            field,
            expected: "an integer that fits the field",
            found: "an integer out of range",
        })
    }

    pub fn int(&self, field: &'static str) -> Result<i64, ShapeError> {
        match self.get(field) {
            None => Ok(0),
            Some(Value::Uint(n)) => Ok(*n as i64),
            Some(Value::Int(n)) => Ok(*n),
            Some(v) => Err(self.bad(field, "integer", v)),
        }
    }

    pub fn float(&self, field: &'static str) -> Result<f64, ShapeError> {
        match self.get(field) {
            None => Ok(0.0),
            Some(Value::F64(f)) => Ok(*f),
            Some(Value::F32(f)) => Ok(f64::from(*f)),
            Some(Value::Uint(n)) => Ok(*n as f64),
            Some(Value::Int(n)) => Ok(*n as f64),
            Some(v) => Err(self.bad(field, "float", v)),
        }
    }

    pub fn boolean(&self, field: &'static str) -> Result<bool, ShapeError> {
        match self.get(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.bad(field, "bool", v)),
        }
    }

    pub fn strings(&self, field: &'static str) -> Result<Vec<String>, ShapeError> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::Str(b) | Value::Bin(b) => Ok(String::from_utf8_lossy(b).into_owned()),
                    Value::Nil => Ok(String::new()),
                    v => Err(self.bad(field, "array of strings", v)),
                })
                .collect(),
            Some(v) => Err(self.bad(field, "array of strings", v)),
        }
    }

    pub fn string_map(&self, field: &'static str) -> Result<BTreeMap<String, String>, ShapeError> {
        match self.get(field) {
            None => Ok(BTreeMap::new()),
            Some(v) => string_map(v).ok_or_else(|| self.bad(field, "map of strings", v)),
        }
    }

    pub fn value(&self, field: &'static str) -> Option<&'a Value> {
        self.get(field)
    }
}

fn lossy(v: &Value) -> Option<String> {
    match v {
        Value::Str(b) | Value::Bin(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Nil => Some(String::new()),
        _ => None,
    }
}

/// A `map[string]string`; `None` if the value is not one.
pub fn string_map(v: &Value) -> Option<BTreeMap<String, String>> {
    match v {
        Value::Nil => Some(BTreeMap::new()),
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| Some((lossy(k)?, lossy(v)?)))
            .collect(),
        _ => None,
    }
}

/// Builds a map with keys in the order given (callers list them sorted, as Go does).
pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::str(k), v))
            .collect(),
    )
}

pub fn str_value(s: &str) -> Value {
    Value::str(s)
}

/// A Go `[]byte`: nil stays nil.
pub fn bytes_value(b: Option<&[u8]>) -> Value {
    b.map_or(Value::Nil, |b| Value::Bin(b.to_vec()))
}

pub fn string_map_value(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (Value::str(k), Value::str(v)))
            .collect(),
    )
}

pub fn strings_value(list: &[String]) -> Value {
    Value::Array(list.iter().map(|s| Value::str(s)).collect())
}

/// `{Command, Seq}`: sent before every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub command: String,
    pub seq: u64,
}

impl RequestHeader {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("Command", str_value(&self.command)),
            ("Seq", Value::Uint(self.seq)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("request header", v)?;
        Ok(RequestHeader {
            command: f.string("Command")?,
            seq: f.uint("Seq")?,
        })
    }
}

/// `{Error, Seq}`: sent before every response and every stream record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    pub seq: u64,
    pub error: String,
}

impl ResponseHeader {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("Error", str_value(&self.error)),
            ("Seq", Value::Uint(self.seq)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("response header", v)?;
        Ok(ResponseHeader {
            seq: f.uint("Seq")?,
            error: f.string("Error")?,
        })
    }

    /// Whether a decoded object looks like a response header (a map with `Seq` and `Error` and
    /// nothing else), which no response body does.
    pub fn looks_like(v: &Value) -> bool {
        match v {
            Value::Map(items) => {
                items.len() == 2 && v.get("Seq").is_some() && v.get("Error").is_some()
            }
            _ => false,
        }
    }
}

/// `handshake`'s body (Serf's `handshakeRequest`). Go's field is an `int32`; any integer is
/// read, so a version out of that range is answered "Unsupported IPC version" like any other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeRequest {
    pub version: i64,
}

impl HandshakeRequest {
    pub fn to_value(&self) -> Value {
        map(vec![("Version", Value::Int(self.version))])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("handshake request", v)?;
        Ok(HandshakeRequest {
            version: f.int("Version")?,
        })
    }
}

/// `auth`'s body (Serf's `authRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthRequest {
    pub auth_key: String,
}

impl AuthRequest {
    pub fn to_value(&self) -> Value {
        map(vec![("AuthKey", str_value(&self.auth_key))])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("auth request", v)?;
        Ok(AuthRequest {
            auth_key: f.string("AuthKey")?,
        })
    }
}

/// `event`'s body (Serf's `eventRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRequest {
    pub name: String,
    /// Nil stays nil on the wire; the agent sends it as an empty payload.
    pub payload: Option<Vec<u8>>,
    pub coalesce: bool,
}

impl EventRequest {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("Coalesce", Value::Bool(self.coalesce)),
            ("Name", str_value(&self.name)),
            ("Payload", bytes_value(self.payload.as_deref())),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("event request", v)?;
        Ok(EventRequest {
            name: f.string("Name")?,
            payload: f.bytes("Payload")?,
            coalesce: f.boolean("Coalesce")?,
        })
    }
}

/// `force-leave`'s body (Serf's `forceLeaveRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForceLeaveRequest {
    pub node: String,
    pub prune: bool,
}

impl ForceLeaveRequest {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("Node", str_value(&self.node)),
            ("Prune", Value::Bool(self.prune)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("force-leave request", v)?;
        Ok(ForceLeaveRequest {
            node: f.string("Node")?,
            prune: f.boolean("Prune")?,
        })
    }
}

/// `join`'s body (Serf's `joinRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinRequest {
    pub existing: Vec<String>,
    pub replay: bool,
}

impl JoinRequest {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("Existing", strings_value(&self.existing)),
            ("Replay", Value::Bool(self.replay)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("join request", v)?;
        Ok(JoinRequest {
            existing: f.strings("Existing")?,
            replay: f.boolean("Replay")?,
        })
    }
}

/// `join`'s answer (Serf's `joinResponse`): how many nodes were contacted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinResponse {
    pub num: i64,
}

impl JoinResponse {
    pub fn to_value(&self) -> Value {
        map(vec![("Num", Value::Int(self.num))])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("join response", v)?;
        Ok(JoinResponse { num: f.int("Num")? })
    }
}

/// `tags`'s body (Serf's `tagsRequest`): tags to set, then names to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagsRequest {
    pub tags: BTreeMap<String, String>,
    pub delete_tags: Vec<String>,
}

impl TagsRequest {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("DeleteTags", strings_value(&self.delete_tags)),
            ("Tags", string_map_value(&self.tags)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("tags request", v)?;
        Ok(TagsRequest {
            tags: f.string_map("Tags")?,
            delete_tags: f.strings("DeleteTags")?,
        })
    }
}

/// `respond`'s body (Serf's `respondRequest`): the answer to a query a stream delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RespondRequest {
    pub id: u64,
    pub payload: Vec<u8>,
}

impl RespondRequest {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("ID", Value::Uint(self.id)),
            ("Payload", Value::Bin(self.payload.clone())),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("respond request", v)?;
        Ok(RespondRequest {
            id: f.uint("ID")?,
            payload: f.bytes("Payload")?.unwrap_or_default(),
        })
    }
}

/// `monitor`'s body (Serf's `monitorRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorRequest {
    pub log_level: String,
}

impl MonitorRequest {
    pub fn to_value(&self) -> Value {
        map(vec![("LogLevel", str_value(&self.log_level))])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("monitor request", v)?;
        Ok(MonitorRequest {
            log_level: f.string("LogLevel")?,
        })
    }
}

/// `stream`'s body (Serf's `streamRequest`): the event filter, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRequest {
    pub kind: String,
}

impl StreamRequest {
    pub fn to_value(&self) -> Value {
        map(vec![("Type", str_value(&self.kind))])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("stream request", v)?;
        Ok(StreamRequest {
            kind: f.string("Type")?,
        })
    }
}

/// `stop`'s body (Serf's `stopRequest`): the `Seq` of the stream or monitor to end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopRequest {
    pub stop: u64,
}

impl StopRequest {
    pub fn to_value(&self) -> Value {
        map(vec![("Stop", Value::Uint(self.stop))])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("stop request", v)?;
        Ok(StopRequest {
            stop: f.uint("Stop")?,
        })
    }
}

/// The body of `install-key`, `use-key` and `remove-key` (Serf's `keyRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRequest {
    pub key: String,
}

impl KeyRequest {
    pub fn to_value(&self) -> Value {
        map(vec![("Key", str_value(&self.key))])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("key request", v)?;
        Ok(KeyRequest {
            key: f.string("Key")?,
        })
    }
}

/// `get-coordinate`'s body (Serf's `coordinateRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinateRequest {
    pub node: String,
}

impl CoordinateRequest {
    pub fn to_value(&self) -> Value {
        map(vec![("Node", str_value(&self.node))])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("get-coordinate request", v)?;
        Ok(CoordinateRequest {
            node: f.string("Node")?,
        })
    }
}

/// `get-coordinate`'s answer (Serf's `coordinateResponse`): `ok` is false, and the coordinate
/// zero, for a node the agent has none for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoordinateResponse {
    pub coord: Coordinate,
    pub ok: bool,
}

impl CoordinateResponse {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("Coord", self.coord.to_value()),
            ("Ok", Value::Bool(self.ok)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("coordinate response", v)?;
        let ok = f.boolean("Ok")?;
        // Without `Ok` the coordinate means nothing, and is not read.
        let coord = match (ok, f.value("Coord")) {
            (true, Some(c)) => Coordinate::from_value(c)?,
            _ => Coordinate::default(),
        };
        Ok(CoordinateResponse { coord, ok })
    }
}

/// A member's status as the RPC carries it: one of Serf's words ("none", "alive", "leaving",
/// "left", "failed"), or whatever else a peer sent, kept as sent rather than refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Known(MemberStatus),
    Unknown(String),
}

impl Status {
    /// The status Serf calls `word`.
    pub fn from_word(word: &str) -> Self {
        let known = [
            MemberStatus::None,
            MemberStatus::Alive,
            MemberStatus::Leaving,
            MemberStatus::Left,
            MemberStatus::Failed,
        ];
        known
            .into_iter()
            .find(|s| s.as_str() == word)
            .map_or_else(|| Status::Unknown(word.to_owned()), Status::Known)
    }

    /// Serf's word for it (an unknown one as it came).
    pub fn as_str(&self) -> &str {
        match self {
            Status::Known(s) => s.as_str(),
            Status::Unknown(w) => w,
        }
    }

    pub fn is(&self, status: MemberStatus) -> bool {
        *self == Status::Known(status)
    }
}

impl From<MemberStatus> for Status {
    fn from(s: MemberStatus) -> Self {
        Status::Known(s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member as the RPC shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub tags: BTreeMap<String, String>,
    pub status: Status,
    pub protocol_min: u8,
    pub protocol_max: u8,
    pub protocol_cur: u8,
    pub delegate_min: u8,
    pub delegate_max: u8,
    pub delegate_cur: u8,
}

impl Member {
    pub fn from_serf(m: &vassal_serf::Member) -> Self {
        let [pmin, pmax, pcur, dmin, dmax, dcur] = m.vsn;
        Member {
            name: m.name.clone(),
            addr: m.addr,
            port: m.port,
            tags: m.tags.clone(),
            status: m.status.into(),
            protocol_min: pmin,
            protocol_max: pmax,
            protocol_cur: pcur,
            delegate_min: dmin,
            delegate_max: dmax,
            delegate_cur: dcur,
        }
    }

    pub fn to_value(&self) -> Value {
        let addr = match self.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        map(vec![
            ("Addr", Value::Bin(addr)),
            ("DelegateCur", Value::Uint(self.delegate_cur.into())),
            ("DelegateMax", Value::Uint(self.delegate_max.into())),
            ("DelegateMin", Value::Uint(self.delegate_min.into())),
            ("Name", str_value(&self.name)),
            ("Port", Value::Uint(self.port.into())),
            ("ProtocolCur", Value::Uint(self.protocol_cur.into())),
            ("ProtocolMax", Value::Uint(self.protocol_max.into())),
            ("ProtocolMin", Value::Uint(self.protocol_min.into())),
            ("Status", str_value(self.status.as_str())),
            ("Tags", string_map_value(&self.tags)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("member", v)?;
        let raw = f.bytes("Addr")?.unwrap_or_default();
        let addr = if let Ok(v4) = <[u8; 4]>::try_from(raw.as_slice()) {
            IpAddr::from(v4)
        } else if let Ok(v6) = <[u8; 16]>::try_from(raw.as_slice()) {
            let v6 = std::net::Ipv6Addr::from(v6);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        } else {
            return Err(ShapeError {
                message: "member",
                field: "Addr",
                expected: "4 or 16 bytes",
                found: "bytes of another length",
            });
        };
        let small = |field| f.narrow_uint::<u8>(field);
        Ok(Member {
            name: f.string("Name")?,
            addr,
            port: f.narrow_uint("Port")?,
            tags: f.string_map("Tags")?,
            status: Status::from_word(&f.string("Status")?),
            protocol_min: small("ProtocolMin")?,
            protocol_max: small("ProtocolMax")?,
            protocol_cur: small("ProtocolCur")?,
            delegate_min: small("DelegateMin")?,
            delegate_max: small("DelegateMax")?,
            delegate_cur: small("DelegateCur")?,
        })
    }
}

pub fn members_value(members: &[Member]) -> Value {
    map(vec![(
        "Members",
        Value::Array(members.iter().map(Member::to_value).collect()),
    )])
}

pub fn members_from_value(v: &Value) -> Result<Vec<Member>, ShapeError> {
    let f = Fields::of("members response", v)?;
    match f.value("Members") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(Member::from_value).collect(),
        Some(other) => Err(ShapeError {
            message: "members response",
            field: "Members",
            expected: "array",
            found: other.kind(),
        }),
    }
}

/// `members-filtered`: regular expressions, anchored by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersFilter {
    pub tags: BTreeMap<String, String>,
    pub status: String,
    pub name: String,
}

impl MembersFilter {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("Name", str_value(&self.name)),
            ("Status", str_value(self.status.as_str())),
            ("Tags", string_map_value(&self.tags)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("members-filtered request", v)?;
        Ok(MembersFilter {
            tags: f.string_map("Tags")?,
            status: f.string("Status")?,
            name: f.string("Name")?,
        })
    }
}

/// `query`'s body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRequest {
    pub filter_nodes: Vec<String>,
    pub filter_tags: BTreeMap<String, String>,
    pub request_ack: bool,
    pub relay_factor: u8,
    /// Nanoseconds; 0 means the cluster-size default.
    pub timeout: i64,
    pub name: String,
    pub payload: Option<Vec<u8>>,
}

impl QueryRequest {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("FilterNodes", strings_value(&self.filter_nodes)),
            ("FilterTags", string_map_value(&self.filter_tags)),
            ("Name", str_value(&self.name)),
            ("Payload", bytes_value(self.payload.as_deref())),
            ("RelayFactor", Value::Uint(self.relay_factor.into())),
            ("RequestAck", Value::Bool(self.request_ack)),
            ("Timeout", Value::Int(self.timeout)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("query request", v)?;
        Ok(QueryRequest {
            filter_nodes: f.strings("FilterNodes")?,
            filter_tags: f.string_map("FilterTags")?,
            request_ack: f.boolean("RequestAck")?,
            relay_factor: f.narrow_uint("RelayFactor")?,
            timeout: f.int("Timeout")?,
            name: f.string("Name")?,
            payload: f.bytes("Payload")?,
        })
    }
}

/// `{Type, From, Payload}`: one ack, answer or the end of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRecord {
    pub kind: String,
    pub from: String,
    pub payload: Option<Vec<u8>>,
}

impl QueryRecord {
    pub fn to_value(&self) -> Value {
        map(vec![
            ("From", str_value(&self.from)),
            ("Payload", bytes_value(self.payload.as_deref())),
            ("Type", str_value(&self.kind)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("query record", v)?;
        Ok(QueryRecord {
            kind: f.string("Type")?,
            from: f.string("From")?,
            payload: f.bytes("Payload")?,
        })
    }
}

/// The answer to the key commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyResponse {
    pub messages: BTreeMap<String, String>,
    /// Only `list-keys` fills this; the others send nil.
    pub keys: Option<BTreeMap<String, i64>>,
    pub num_nodes: i64,
    pub num_err: i64,
    pub num_resp: i64,
}

impl KeyResponse {
    pub fn to_value(&self) -> Value {
        let keys = match &self.keys {
            None => Value::Nil,
            Some(k) => Value::Map(
                k.iter()
                    .map(|(k, n)| (Value::str(k), Value::Int(*n)))
                    .collect(),
            ),
        };
        map(vec![
            ("Keys", keys),
            ("Messages", string_map_value(&self.messages)),
            ("NumErr", Value::Int(self.num_err)),
            ("NumNodes", Value::Int(self.num_nodes)),
            ("NumResp", Value::Int(self.num_resp)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("key response", v)?;
        let keys = match f.value("Keys") {
            None => None,
            Some(Value::Map(items)) => Some(
                items
                    .iter()
                    .map(|(k, n)| {
                        let n = match n {
                            Value::Uint(n) => *n as i64,
                            Value::Int(n) => *n,
                            _ => 0,
                        };
                        (lossy(k).unwrap_or_default(), n)
                    })
                    .collect(),
            ),
            Some(other) => {
                return Err(ShapeError {
                    message: "key response",
                    field: "Keys",
                    expected: "map",
                    found: other.kind(),
                })
            }
        };
        Ok(KeyResponse {
            messages: f.string_map("Messages")?,
            keys,
            num_nodes: f.int("NumNodes")?,
            num_err: f.int("NumErr")?,
            num_resp: f.int("NumResp")?,
        })
    }
}

/// A Vivaldi coordinate as `get-coordinate` sends it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coordinate {
    pub adjustment: f64,
    pub error: f64,
    pub height: f64,
    /// Nil for an unknown node.
    pub vec: Option<Vec<f64>>,
}

impl Coordinate {
    pub fn to_value(&self) -> Value {
        let vec = match &self.vec {
            None => Value::Nil,
            Some(v) => Value::Array(v.iter().map(|f| Value::F64(*f)).collect()),
        };
        map(vec![
            ("Adjustment", Value::F64(self.adjustment)),
            ("Error", Value::F64(self.error)),
            ("Height", Value::F64(self.height)),
            ("Vec", vec),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, ShapeError> {
        let f = Fields::of("coordinate", v)?;
        let vec = match f.value("Vec") {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|i| match i {
                        Value::F64(x) => *x,
                        Value::F32(x) => f64::from(*x),
                        Value::Uint(x) => *x as f64,
                        Value::Int(x) => *x as f64,
                        _ => f64::NAN,
                    })
                    .collect(),
            ),
            Some(other) => {
                return Err(ShapeError {
                    message: "coordinate",
                    field: "Vec",
                    expected: "array",
                    found: other.kind(),
                })
            }
        };
        Ok(Coordinate {
            adjustment: f.float("Adjustment")?,
            error: f.float("Error")?,
            height: f.float("Height")?,
            vec,
        })
    }

    pub fn to_serf(&self) -> vassal_serf::coordinate::Coordinate {
        vassal_serf::coordinate::Coordinate {
            vec: self.vec.clone().unwrap_or_default(),
            error: self.error,
            adjustment: self.adjustment,
            height: self.height,
        }
    }
}

/// Statistics: section → key → value, all strings.
pub type Stats = BTreeMap<String, BTreeMap<String, String>>;

pub fn stats_value(stats: &Stats) -> Value {
    Value::Map(
        stats
            .iter()
            .map(|(k, v)| (Value::str(k), string_map_value(v)))
            .collect(),
    )
}

pub fn stats_from_value(v: &Value) -> Result<Stats, ShapeError> {
    let bad = |found| ShapeError {
        message: "stats",
        field: "(body)",
        expected: "map of maps of strings",
        found,
    };
    match v {
        Value::Nil => Ok(Stats::new()),
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| {
                let k = lossy(k).ok_or_else(|| bad(k.kind()))?;
                let v = string_map(v).ok_or_else(|| bad(v.kind()))?;
                Ok((k, v))
            })
            .collect(),
        other => Err(bad(other.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_gos_sorted_keys() {
        let h = ResponseHeader {
            seq: 1,
            error: String::new(),
        };
        // Captured from Go's agent: 82 a5 Error a0 a3 Seq 01.
        assert_eq!(
            crate::msgpack::encode(&h.to_value()),
            b"\x82\xa5Error\xa0\xa3Seq\x01"
        );
        assert!(ResponseHeader::looks_like(&h.to_value()));
    }

    #[test]
    fn members_round_trip_with_a_4_byte_address() {
        let m = Member {
            name: "n1".into(),
            addr: "127.0.0.1".parse().unwrap(),
            port: 7946,
            tags: [("role".to_string(), "web".to_string())].into(),
            status: MemberStatus::Alive.into(),
            protocol_min: 1,
            protocol_max: 5,
            protocol_cur: 2,
            delegate_min: 2,
            delegate_max: 5,
            delegate_cur: 5,
        };
        let v = members_value(std::slice::from_ref(&m));
        let bytes = crate::msgpack::encode(&v);
        assert!(bytes.windows(6).any(|w| w == b"\xc4\x04\x7f\x00\x00\x01"));
        let (back, _) = crate::msgpack::decode(&bytes).unwrap().unwrap();
        assert_eq!(members_from_value(&back).unwrap(), vec![m]);
    }

    #[test]
    fn member_statuses_keep_serfs_words_and_unknown_ones_as_sent() {
        for word in ["none", "alive", "leaving", "left", "failed"] {
            let s = Status::from_word(word);
            assert!(matches!(s, Status::Known(_)), "{word}");
            assert_eq!(s.to_string(), word);
        }
        assert!(Status::from_word("alive").is(MemberStatus::Alive));
        let odd = Status::from_word("reaped?");
        assert_eq!(odd, Status::Unknown("reaped?".into()));
        assert_eq!(odd.as_str(), "reaped?");
        let m = map(vec![
            ("Addr", Value::Bin(vec![10, 0, 0, 1])),
            ("Status", Value::str("dazed")),
        ]);
        let back = Member::from_value(&m).unwrap();
        assert_eq!(back.status, Status::Unknown("dazed".into()));
        assert!(crate::msgpack::encode(&back.to_value())
            .windows(6)
            .any(|w| w == b"\xa5dazed"));
    }

    #[test]
    fn missing_and_nil_fields_are_zero_and_str_may_carry_bytes() {
        let v = map(vec![
            ("Name", Value::Bin(b"deploy".to_vec())),
            ("Payload", Value::str("v1")),
            ("FilterNodes", Value::Nil),
            ("Extra", Value::Uint(9)),
        ]);
        let q = QueryRequest::from_value(&v).unwrap();
        assert_eq!(q.name, "deploy");
        assert_eq!(q.payload.as_deref(), Some(&b"v1"[..]));
        assert!(q.filter_nodes.is_empty());
        assert_eq!(q.timeout, 0);
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let v = map(vec![("Seq", Value::str("one"))]);
        let e = RequestHeader::from_value(&v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request header: field Seq is string, expected integer"
        );
    }

    #[test]
    fn request_bodies_round_trip_with_gos_sorted_keys() {
        let e = EventRequest {
            name: "deploy".into(),
            payload: None,
            coalesce: true,
        };
        assert_eq!(
            crate::msgpack::encode(&e.to_value()),
            b"\x83\xa8Coalesce\xc3\xa4Name\xa6deploy\xa7Payload\xc0"
        );
        assert_eq!(EventRequest::from_value(&e.to_value()).unwrap(), e);
        let r = RespondRequest {
            id: 7,
            payload: b"ok".to_vec(),
        };
        assert_eq!(
            crate::msgpack::encode(&r.to_value()),
            b"\x82\xa2ID\x07\xa7Payload\xc4\x02ok"
        );
        assert_eq!(RespondRequest::from_value(&r.to_value()).unwrap(), r);
        let t = TagsRequest {
            tags: [("role".to_string(), "web".to_string())].into(),
            delete_tags: vec!["dc".into()],
        };
        assert_eq!(TagsRequest::from_value(&t.to_value()).unwrap(), t);
        let j = JoinRequest {
            existing: vec!["127.0.0.1:7946".into()],
            replay: false,
        };
        assert_eq!(JoinRequest::from_value(&j.to_value()).unwrap(), j);
        let h = HandshakeRequest {
            version: IPC_VERSION.into(),
        };
        assert_eq!(
            crate::msgpack::encode(&h.to_value()),
            b"\x81\xa7Version\x01"
        );
        let c = CoordinateResponse {
            coord: Coordinate::default(),
            ok: false,
        };
        assert_eq!(CoordinateResponse::from_value(&c.to_value()).unwrap(), c);
    }

    #[test]
    fn a_relay_factor_past_uint8_is_refused_not_truncated() {
        // Issue 11: `as u8` made 257 relays into 1; go-msgpack refuses the overflow.
        let ok = map(vec![
            ("Name", Value::str("q")),
            ("RelayFactor", Value::Uint(3)),
        ]);
        assert_eq!(QueryRequest::from_value(&ok).unwrap().relay_factor, 3);
        let big = map(vec![
            ("Name", Value::str("q")),
            ("RelayFactor", Value::Uint(257)),
        ]);
        let e = QueryRequest::from_value(&big).unwrap_err();
        assert_eq!(e.field, "RelayFactor");
    }
}
