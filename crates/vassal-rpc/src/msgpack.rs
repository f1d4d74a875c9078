//! MessagePack as Serf's RPC speaks it: the *new* spec (strings as str, str8 allowed, `[]byte`
//! as bin), self-delimiting objects back to back on a TCP stream with no length prefix.
//!
//! [`decode`] parses one object from the front of a buffer and says `Ok(None)` while it is
//! still incomplete, so a connection can read until a whole request has arrived. It never
//! allocates more than the input could fill and refuses nesting deeper than [`MAX_DEPTH`], so
//! hostile input costs at most what was sent.

use std::fmt;

/// Deepest nesting of arrays and maps accepted (Serf's messages need 3).
pub const MAX_DEPTH: usize = 32;

/// A decoded msgpack object. Strings keep their raw bytes: Go strings need not be UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    /// Any integer that fits `i64` when negative; non-negative ones are [`Value::Uint`].
    Int(i64),
    Uint(u64),
    F32(f32),
    F64(f64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

/// Input that is not msgpack (or nests too deep).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed msgpack: {0}")]
pub struct DecodeError(pub String);

/// Decodes the object at the front of `buf`: `Ok(Some((value, bytes used)))`, or `Ok(None)`
/// if more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, DecodeError> {
    let mut r = Cursor { buf, pos: 0 };
    match r.value(0) {
        Ok(v) => Ok(Some((v, r.pos))),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Bad(e)) => Err(DecodeError(e)),
    }
}

/// Finds where the first msgpack object in a growing buffer ends, resuming where the last call
/// stopped: every byte is looked at once, however the object is cut into reads. A client that
/// trickles a request byte by byte so costs linear CPU, where re-running [`decode`] after every
/// read would cost quadratic. [`decode`] then runs once, on the whole object.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Offset of the first element not yet skipped.
    pos: usize,
    /// Items still to skip at each open level; empty before the first call and once complete.
    open: Vec<u64>,
}

impl Scanner {
    /// `Ok(Some(end))` once `buf[..end]` holds a whole object; `Ok(None)`: read more. `buf` must
    /// only grow between calls; after a whole object, [`Scanner::reset`] before the next.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if self.open.is_empty() {
            self.open.push(1);
        }
        while let Some(left) = self.open.last_mut() {
            if *left == 0 {
                self.open.pop();
                continue;
            }
            let Some((size, items)) = element(buf.get(self.pos..).unwrap_or_default())? else {
                return Ok(None);
            };
            *left -= 1;
            self.pos = self.pos.saturating_add(size);
            if items > 0 {
                if self.open.len() > MAX_DEPTH {
                    return Err(DecodeError(format!(
                        "nested deeper than {MAX_DEPTH} levels"
                    )));
                }
                self.open.push(items);
            }
        }
        Ok(Some(self.pos))
    }

    /// Ready for the object after the one just found (whose bytes the caller removed).
    pub fn reset(&mut self) {
        *self = Scanner::default();
    }
}

/// The element at the front of `b`: its own size (the header alone for arrays and maps) and how
/// many items it opens; `None` if `b` does not hold all of it yet.
fn element(b: &[u8]) -> Result<Option<(usize, u64)>, DecodeError> {
    let Some((&m, rest)) = b.split_first() else {
        return Ok(None);
    };
    // Big-endian length of `n` bytes after the marker, if they are here.
    let len = |n: usize| -> Option<u64> {
        let bytes = rest.get(..n)?;
        Some(bytes.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    };
    let sized = |header: usize, body: Option<u64>| -> Option<(usize, u64)> {
        let total = usize::try_from(body?).ok()?.checked_add(header)?;
        (b.len() >= total).then_some((total, 0))
    };
    let container = |header: usize, items: Option<u64>| -> Option<(usize, u64)> {
        let items = items?;
        (b.len() >= header).then_some((header, items))
    };
    Ok(match m {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => Some((1, 0)),
        0x80..=0x8f => Some((1, 2 * u64::from(m & 0x0f))),
        0x90..=0x9f => Some((1, u64::from(m & 0x0f))),
        0xa0..=0xbf => sized(1, Some(u64::from(m & 0x1f))),
        0xc4 | 0xd9 => sized(2, len(1)),
        0xc5 | 0xda => sized(3, len(2)),
        0xc6 | 0xdb => sized(5, len(4)),
        0xc7 => sized(3, len(1)),
        0xc8 => sized(4, len(2)),
        0xc9 => sized(6, len(4)),
        0xca => sized(5, Some(0)),
        0xcb => sized(9, Some(0)),
        0xcc | 0xd0 => sized(2, Some(0)),
        0xcd | 0xd1 => sized(3, Some(0)),
        0xce | 0xd2 => sized(5, Some(0)),
        0xcf | 0xd3 => sized(9, Some(0)),
        0xd4 => sized(3, Some(0)),
        0xd5 => sized(4, Some(0)),
        0xd6 => sized(6, Some(0)),
        0xd7 => sized(10, Some(0)),
        0xd8 => sized(18, Some(0)),
        0xdc => container(3, len(2)),
        0xdd => container(5, len(4)),
        0xde => container(3, len(2).map(|n| 2 * n)),
        0xdf => container(5, len(4).map(|n| 2 * n)),
        0xc1 => return Err(DecodeError("never-used marker 0xc1".into())),
    })
}

enum Stop {
    Incomplete,
    Bad(String),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        if self.buf.len() - self.pos < n {
            return Err(Stop::Incomplete);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, Stop> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn value(&mut self, depth: usize) -> Result<Value, Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::Bad(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => Value::Uint(u64::from(m)),
            0x80..=0x8f => self.map(usize::from(m & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(m & 0x0f), depth)?,
            0xa0..=0xbf => Value::Str(self.take(usize::from(m & 0x1f))?.to_vec()),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))? as usize;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc7..=0xc9 => {
                let n = self.be(1 << (m - 0xc7))? as usize;
                let t = self.byte()? as i8;
                Value::Ext(t, self.take(n)?.to_vec())
            }
            0xca => Value::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Value::F64(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => Value::Uint(self.be(1 << (m - 0xcc))?),
            0xd0..=0xd3 => {
                let n = 1 << (m - 0xd0);
                let raw = self.be(n)?;
                let shift = 64 - 8 * n as u32;
                let v = ((raw << shift) as i64) >> shift;
                if v >= 0 {
                    Value::Uint(v as u64)
                } else {
                    Value::Int(v)
                }
            }
            0xd4..=0xd8 => {
                let t = self.byte()? as i8;
                Value::Ext(t, self.take(1 << (m - 0xd4))?.to_vec())
            }
            0xd9..=0xdb => {
                let n = self.be(1 << (m - 0xd9))? as usize;
                Value::Str(self.take(n)?.to_vec())
            }
            0xdc | 0xdd => {
                let n = self.be(if m == 0xdc { 2 } else { 4 })? as usize;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.be(if m == 0xde { 2 } else { 4 })? as usize;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
            0xc1 => return Err(Stop::Bad("marker 0xc1 is never used".into())),
        })
    }

    /// Capacity for `n` elements that each take at least `min` bytes: never more than the
    /// bytes at hand could hold, whatever the header claims.
    fn capacity(&self, n: usize, min: usize) -> usize {
        n.min((self.buf.len() - self.pos) / min)
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, Stop> {
        let mut items = Vec::with_capacity(self.capacity(n, 1));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, Stop> {
        let mut items = Vec::with_capacity(self.capacity(n, 2));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            items.push((k, v));
        }
        Ok(Value::Map(items))
    }
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(s.as_bytes().to_vec())
    }

    /// The entry for `key` in a map (keys may be str or bin); `None` for other values.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Map(items) = self else {
            return None;
        };
        items.iter().find_map(|(k, v)| match k {
            Value::Str(b) | Value::Bin(b) if b == key.as_bytes() => Some(v),
            _ => None,
        })
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::Uint(_) => "integer",
            Value::F32(_) | Value::F64(_) => "float",
            Value::Str(_) => "string",
            Value::Bin(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Ext(..) => "extension",
        }
    }

    /// Writes the value in the new spec, each part in its smallest form.
    pub fn encode(&self, w: &mut Vec<u8>) {
        match self {
            Value::Nil => w.push(0xc0),
            Value::Bool(b) => w.push(if *b { 0xc3 } else { 0xc2 }),
            Value::Uint(v) => write_uint(w, *v),
            Value::Int(v) => write_int(w, *v),
            Value::F32(v) => {
                w.push(0xca);
                w.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Value::F64(v) => {
                w.push(0xcb);
                w.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Value::Str(s) => write_str(w, s),
            Value::Bin(b) => write_bin(w, b),
            Value::Array(items) => {
                write_len(w, items.len(), 0x90, 0xdc, 0xdd);
                for i in items {
                    i.encode(w);
                }
            }
            Value::Map(items) => {
                write_len(w, items.len(), 0x80, 0xde, 0xdf);
                for (k, v) in items {
                    k.encode(w);
                    v.encode(w);
                }
            }
            Value::Ext(t, data) => {
                match data.len() {
                    1 => w.push(0xd4),
                    2 => w.push(0xd5),
                    4 => w.push(0xd6),
                    8 => w.push(0xd7),
                    16 => w.push(0xd8),
                    n => write_sized(w, n, [0xc7, 0xc8, 0xc9]),
                }
                w.push(*t as u8);
                w.extend_from_slice(data);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode(&mut w);
        w
    }
}

/// A readable rendering: strings quoted, bytes as a list, maps as `{k: v}`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{:?}", String::from_utf8_lossy(s)),
            Value::Bin(b) => write!(f, "bin{b:?}"),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Nil => f.write_str("nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Uint(n) => write!(f, "{n}"),
            Value::F32(x) => write!(f, "{x}"),
            Value::F64(x) => write!(f, "{x}"),
            Value::Ext(t, b) => write!(f, "ext({t}, {b:?})"),
        }
    }
}

fn write_uint(w: &mut Vec<u8>, v: u64) {
    if v <= 0x7f {
        w.push(v as u8);
    } else if v <= 0xff {
        w.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        w.push(0xcd);
        w.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        w.push(0xce);
        w.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        w.push(0xcf);
        w.extend_from_slice(&v.to_be_bytes());
    }
}

/// Non-negative values as unsigned ones, as go-msgpack writes Go's signed integers.
fn write_int(w: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(w, v as u64);
    } else if v >= -32 {
        w.push(v as i8 as u8);
    } else if v >= i64::from(i8::MIN) {
        w.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i64::from(i16::MIN) {
        w.push(0xd1);
        w.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        w.push(0xd2);
        w.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        w.push(0xd3);
        w.extend_from_slice(&v.to_be_bytes());
    }
}

fn write_str(w: &mut Vec<u8>, s: &[u8]) {
    if s.len() < 32 {
        w.push(0xa0 | s.len() as u8);
    } else {
        write_sized(w, s.len(), [0xd9, 0xda, 0xdb]);
    }
    w.extend_from_slice(s);
}

fn write_bin(w: &mut Vec<u8>, b: &[u8]) {
    write_sized(w, b.len(), [0xc4, 0xc5, 0xc6]);
    w.extend_from_slice(b);
}

/// A length in 1, 2 or 4 bytes after the matching marker.
fn write_sized(w: &mut Vec<u8>, n: usize, markers: [u8; 3]) {
    if n <= 0xff {
        w.extend_from_slice(&[markers[0], n as u8]);
    } else if n <= 0xffff {
        w.push(markers[1]);
        w.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        w.push(markers[2]);
        w.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn write_len(w: &mut Vec<u8>, n: usize, fix: u8, m16: u8, m32: u8) {
    if n < 16 {
        w.push(fix | n as u8);
    } else if n <= 0xffff {
        w.push(m16);
        w.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        w.push(m32);
        w.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bytes_are_bin_and_strings_may_be_str8() {
        assert_eq!(
            Value::Bin(vec![127, 0, 0, 1]).to_bytes(),
            b"\xc4\x04\x7f\x00\x00\x01"
        );
        let long = "x".repeat(40);
        let enc = Value::str(&long).to_bytes();
        assert_eq!(&enc[..2], b"\xd9\x28");
    }

    #[test]
    fn an_incomplete_object_asks_for_more() {
        let full = Value::Map(vec![
            (Value::str("Command"), Value::str("members")),
            (Value::str("Seq"), Value::Uint(300)),
        ])
        .to_bytes();
        for cut in 0..full.len() {
            assert_eq!(decode(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let (v, used) = decode(&full).unwrap().unwrap();
        assert_eq!(used, full.len());
        assert_eq!(v.get("Seq"), Some(&Value::Uint(300)));
    }

    #[test]
    fn huge_claimed_lengths_do_not_allocate() {
        // An array claiming 4 billion elements, with none present: just incomplete.
        assert_eq!(decode(b"\xdd\xff\xff\xff\xff"), Ok(None));
        assert_eq!(decode(b"\xc6\xff\xff\xff\xff\x00"), Ok(None));
    }

    #[test]
    fn deep_nesting_and_the_unused_marker_are_errors() {
        let deep = vec![0x91u8; MAX_DEPTH + 2];
        assert!(decode(&deep).is_err());
        assert!(decode(b"\xc1").is_err());
    }

    #[test]
    fn signed_markers_decode_to_their_value() {
        assert_eq!(decode(b"\xd0\xff").unwrap().unwrap().0, Value::Int(-1));
        assert_eq!(decode(b"\xd1\x00\x05").unwrap().unwrap().0, Value::Uint(5));
        assert_eq!(decode(b"\xff").unwrap().unwrap().0, Value::Int(-1));
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::Uint),
            (i64::MIN..0).prop_map(Value::Int),
            any::<f64>()
                .prop_filter("NaN != NaN", |f| !f.is_nan())
                .prop_map(Value::F64),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bin),
        ];
        leaf.prop_recursive(3, 64, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..20).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn values_round_trip(v in value()) {
            let bytes = v.to_bytes();
            prop_assert_eq!(decode(&bytes), Ok(Some((v, bytes.len()))));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = Scanner::default().scan(&bytes);
        }

        // Issue 11: a request trickled byte by byte is found whole exactly where decode finds
        // it, by a scanner that never looks at a byte twice.
        #[test]
        fn scanner_finds_the_end_decode_finds_at_every_cut(v in value(), extra in any::<u8>()) {
            let mut bytes = v.to_bytes();
            let len = bytes.len();
            bytes.push(extra);
            let mut scanner = Scanner::default();
            for cut in 0..len {
                prop_assert_eq!(scanner.scan(&bytes[..cut]), Ok(None), "cut at {}", cut);
            }
            prop_assert_eq!(scanner.scan(&bytes), Ok(Some(len)));
        }

        #[test]
        fn scanner_and_decode_agree_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let found = Scanner::default().scan(&bytes);
            match decode(&bytes) {
                Ok(Some((_, used))) => prop_assert_eq!(found, Ok(Some(used))),
                Ok(None) => prop_assert_eq!(found, Ok(None)),
                // decode refuses more (bad UTF-8 is fine, but e.g. depth): never less.
                Err(_) => {}
            }
        }
    }
}
