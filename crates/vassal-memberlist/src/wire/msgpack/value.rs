//! [`Value`], a whole decoded object, and the resumable [`Scanner`].

use std::fmt;

use super::{malformed, Dialect, Reader, Writer, MAX_DEPTH};
use crate::wire::DecodeError;

impl Reader<'_> {
    /// One whole object of any kind, in either dialect, nested at most [`MAX_DEPTH`] deep.
    /// Containers are never preallocated beyond what the remaining input could fill, whatever
    /// their header claims, so the tree costs at most a small constant times the input's size.
    /// Cut-short input is [`DecodeError::Truncated`]; marker `c1` and deeper nesting are
    /// [`DecodeError::Malformed`]. Integers come out as [`Value::Uint`] when non-negative,
    /// whatever their marker, and as [`Value::Int`] otherwise.
    pub fn value(&mut self) -> Result<Value, DecodeError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let inner = depth.saturating_add(1);
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => Value::Uint(u64::from(m)),
            0x80..=0x8f => self.map_items(usize::from(m & 0x0f), inner)?,
            0x90..=0x9f => self.array_items(usize::from(m & 0x0f), inner)?,
            0xa0..=0xbf => Value::Str(self.take(usize::from(m & 0x1f))?.to_vec()),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len_of(width(m, 0xc4))?;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc7..=0xc9 => {
                let n = self.len_of(width(m, 0xc7))?;
                let kind = self.byte()? as i8;
                Value::Ext(kind, self.take(n)?.to_vec())
            }
            0xca => Value::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Value::F64(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => Value::Uint(self.be(width(m, 0xcc))?),
            0xd0 => signed(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => signed(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => signed(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => signed(self.be(8)? as i64),
            0xd4..=0xd8 => {
                let kind = self.byte()? as i8;
                let n = match m {
                    0xd4 => 1,
                    0xd5 => 2,
                    0xd6 => 4,
                    0xd7 => 8,
                    _ => 16,
                };
                Value::Ext(kind, self.take(n)?.to_vec())
            }
            0xd9..=0xdb => {
                let n = self.len_of(width(m, 0xd9))?;
                Value::Str(self.take(n)?.to_vec())
            }
            0xdc | 0xdd => {
                let n = self.len_of(width(m, 0xdb))?;
                self.array_items(n, inner)?
            }
            0xde | 0xdf => {
                let n = self.len_of(width(m, 0xdd))?;
                self.map_items(n, inner)?
            }
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
            0xc1 => return Err(malformed("marker 0xc1 is never used")),
        })
    }

    /// Room for `n` items of at least `min` bytes each, never more than the input could hold.
    fn capacity(&self, n: usize, min: usize) -> usize {
        n.min(self.remaining().checked_div(min).unwrap_or(0))
    }

    fn array_items(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut items = Vec::with_capacity(self.capacity(n, 1));
        for _ in 0..n {
            items.push(self.value_at(depth)?);
        }
        Ok(Value::Array(items))
    }

    fn map_items(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut items = Vec::with_capacity(self.capacity(n, 2));
        for _ in 0..n {
            let k = self.value_at(depth)?;
            let v = self.value_at(depth)?;
            items.push((k, v));
        }
        Ok(Value::Map(items))
    }
}

/// How many length bytes follow a marker of a 1/2/4(/8)-byte family starting at `first`.
fn width(marker: u8, first: u8) -> usize {
    1usize << marker.saturating_sub(first).min(3)
}

/// Non-negative values as [`Value::Uint`], as go-msgpack reads any integer into a Go `uint`.
fn signed(v: i64) -> Value {
    u64::try_from(v).map_or(Value::Int(v), Value::Uint)
}

/// A decoded msgpack object, as [`Reader::value`] reads it and [`Value::write`] writes it: the
/// RPC's messages are read into one and then field by field. Strings keep their raw bytes: Go
/// strings need not be UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// nil (`c0`).
    Nil,
    /// A boolean (`c2`, `c3`).
    Bool(bool),
    /// A negative integer; non-negative ones are [`Value::Uint`].
    Int(i64),
    /// A non-negative integer, whichever marker (unsigned or signed) carried it.
    Uint(u64),
    /// A 32-bit float (`ca`).
    F32(f32),
    /// A 64-bit float (`cb`).
    F64(f64),
    /// A string of the str family (fixstr, str8, str16, str32), as its raw bytes.
    Str(Vec<u8>),
    /// A byte slice (bin8, bin16, bin32); written in [`Dialect::Raw`] it becomes a raw string,
    /// and so reads back as [`Value::Str`].
    Bin(Vec<u8>),
    /// An array, in order.
    Array(Vec<Value>),
    /// A map's entries in the order they came; keys need not be strings or unique.
    Map(Vec<(Value, Value)>),
    /// An extension value: its type and its data (fixext, ext8, ext16, ext32).
    Ext(i8, Vec<u8>),
}

impl Value {
    /// A [`Value::Str`] holding `s`'s bytes.
    pub fn str(s: &str) -> Value {
        Value::Str(s.as_bytes().to_vec())
    }

    /// The value of the first entry whose key is `key` in a map (keys may be str or bin), or
    /// `None`, also when `self` is not a map.
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

    /// Writes the value in the writer's dialect, each part in its smallest form: strings and
    /// byte slices as [`Writer::str_bytes`] and [`Writer::bin`] write them, so in
    /// [`Dialect::Raw`] both become raw strings.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Value::Nil => w.nil(),
            Value::Bool(b) => w.bool(*b),
            Value::Uint(v) => w.uint(*v),
            Value::Int(v) => w.int(*v),
            Value::F32(v) => w.f32(*v),
            Value::F64(v) => w.f64(*v),
            Value::Str(s) => w.str_bytes(s),
            Value::Bin(b) => w.bin(b),
            Value::Array(items) => {
                w.array_header(items.len());
                for i in items {
                    i.write(w);
                }
            }
            Value::Map(items) => {
                w.map_header(items.len());
                for (k, v) in items {
                    k.write(w);
                    v.write(w);
                }
            }
            Value::Ext(kind, data) => w.ext(*kind, data),
        }
    }

    /// The value's bytes in `dialect` (see [`Value::write`]).
    pub fn to_bytes(&self, dialect: Dialect) -> Vec<u8> {
        let mut w = Writer::with_dialect(dialect);
        self.write(&mut w);
        w.into_vec()
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

/// Finds where the first msgpack object in a growing buffer ends, resuming where the last call
/// stopped: every byte is looked at once, however the object is cut into reads. A client that
/// trickles a request byte by byte so costs linear CPU, where re-running [`Reader::value`] after
/// every read would cost quadratic; the object is then decoded once, whole. It refuses exactly
/// what [`Reader::value`] refuses for nesting ([`MAX_DEPTH`]) and marker 0xc1.
///
/// Its memory is bounded too: one count per open level, at most [`MAX_DEPTH`] + 1 of them. A
/// length is never allocated for, only waited for: a header claiming 4 GiB keeps the answer at
/// `Ok(None)`, so the caller must cap how much it buffers (the RPC server does). Both dialects
/// scan alike.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Offset of the first element not yet skipped.
    pos: usize,
    /// Items still to skip at each open level; empty before the first call and once complete.
    open: Vec<u64>,
}

impl Scanner {
    /// `Ok(Some(end))` once `buf[..end]` holds a whole object; `Ok(None)`: read more. `buf` must
    /// only grow between calls (bytes appended, none changed or removed); after a whole object,
    /// [`Scanner::reset`] before the next. An error is [`DecodeError::Malformed`] and final: no
    /// more bytes can make the object whole.
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
            *left = left.saturating_sub(1);
            self.pos = self.pos.saturating_add(size);
            if items > 0 {
                if self.open.len() > MAX_DEPTH {
                    return Err(malformed(format!("nested deeper than {MAX_DEPTH} levels")));
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
    // A map of n entries opens 2·n items; n is at most 2³², so this cannot saturate.
    let pairs = |n: u64| n.saturating_mul(2);
    Ok(match m {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => Some((1, 0)),
        0x80..=0x8f => Some((1, pairs(u64::from(m & 0x0f)))),
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
        0xde => container(3, len(2).map(pairs)),
        0xdf => container(5, len(4).map(pairs)),
        0xc1 => return Err(malformed("never-used marker 0xc1")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_with_every_marker_family() {
        let v = b"\x87\xa1a\xd0\xff\xa1b\xd1\x00\x05\xa1c\xc4\x01\x07\xa1d\xd6\x01abcd\xa1e\xca\x3f\x80\x00\x00\xa1f\x91\xc0\xa1g\xe0";
        let got = Reader::new(v).value().unwrap();
        assert_eq!(got.get("a"), Some(&Value::Int(-1)));
        assert_eq!(got.get("b"), Some(&Value::Uint(5)));
        assert_eq!(got.get("c"), Some(&Value::Bin(vec![7])));
        assert_eq!(got.get("d"), Some(&Value::Ext(1, b"abcd".to_vec())));
        assert_eq!(got.get("e"), Some(&Value::F32(1.0)));
        assert_eq!(got.get("f"), Some(&Value::Array(vec![Value::Nil])));
        assert_eq!(got.get("g"), Some(&Value::Int(-32)));
        let again = got.to_bytes(Dialect::Rpc);
        assert_eq!(Reader::new(&again).value().unwrap(), got);
    }
}
