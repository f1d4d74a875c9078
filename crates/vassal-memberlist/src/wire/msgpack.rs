//! The one msgpack codec: a writer and a bounded reader for the two dialects Serf speaks (spec §1,
//! §6), chosen by [`Dialect`].
//!
//! - [`Dialect::Raw`] is memberlist's and Serf's gossip: what go-msgpack 0.5.x writes. Strings
//!   *and* byte slices are the old "raw" family (fixstr, str16, str32; never str8, never bin).
//!   A general-purpose msgpack library would pick str8 or bin and break byte-for-byte fidelity,
//!   which is why this exists.
//! - [`Dialect::Rpc`] is Serf's RPC codec (go-msgpack with `WriteExt`/new spec): strings may be
//!   str8, and a `[]byte` is bin.
//!
//! Both write unsigned integers in their smallest form and structs as maps whose keys the caller
//! writes in Go's byte order. The reader is the same for both: as lenient as Go (str8/bin
//! accepted, any integer marker that fits, nil as the zero value, unknown keys skipped) and as
//! careful as network input demands: every length is checked against the remaining input before
//! anything is allocated or skipped, nesting depth is bounded by [`MAX_DEPTH`], and running out of
//! input is always [`DecodeError::Truncated`] (streams use that to mean "wait for more bytes"),
//! never a panic. [`Value`] is a whole decoded object, for RPC messages read field by field;
//! [`Scanner`] finds where an object ends in a growing buffer without decoding it.

use std::fmt;

use super::DecodeError;

/// How deeply nested maps/arrays may be when skipping an unknown value or decoding a [`Value`].
/// Gossip structs are at most three levels deep, RPC messages three too; anything deeper is
/// hostile.
pub const MAX_DEPTH: usize = 32;

/// Which msgpack dialect a [`Writer`] writes; the two differ only in strings and byte slices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// go-msgpack 0.5.x as memberlist and Serf's gossip use it: strings and `[]byte` both as raw
    /// strings (fixstr, str16, str32).
    #[default]
    Raw,
    /// Serf's RPC codec: strings as str (str8 included), `[]byte` as bin.
    Rpc,
}

/// Appends msgpack values to a buffer in go-msgpack's encoding, in one [`Dialect`].
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
    dialect: Dialect,
}

impl Writer {
    /// A writer in the gossip dialect, [`Dialect::Raw`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer in `dialect`.
    pub fn with_dialect(dialect: Dialect) -> Self {
        Self {
            buf: Vec::new(),
            dialect,
        }
    }

    /// Start from an existing buffer (e.g. one holding a type byte already), in the gossip
    /// dialect; [`Writer::in_dialect`] changes that.
    pub fn with_buf(buf: Vec<u8>) -> Self {
        Self {
            buf,
            dialect: Dialect::Raw,
        }
    }

    /// The same writer, writing `dialect` from now on.
    pub fn in_dialect(self, dialect: Dialect) -> Self {
        Self { dialect, ..self }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// A map header for `n` entries (fixmap, map16, map32).
    pub fn map_header(&mut self, n: usize) {
        if n < 16 {
            self.buf.push(0x80 | n as u8);
        } else if n <= 0xffff {
            self.buf.push(0xde);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdf);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }

    /// An array header for `n` elements (fixarray, array16, array32).
    pub fn array_header(&mut self, n: usize) {
        if n < 16 {
            self.buf.push(0x90 | n as u8);
        } else if n <= 0xffff {
            self.buf.push(0xdc);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdd);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }

    /// A string or byte slice as a raw string: fixstr, str16 or str32 — Go never uses str8 or bin.
    pub fn raw(&mut self, b: &[u8]) {
        let n = b.len();
        if n < 32 {
            self.buf.push(0xa0 | n as u8);
        } else if n <= 0xffff {
            self.buf.push(0xda);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdb);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.buf.extend_from_slice(b);
    }

    /// A Go `string`: a raw string in [`Dialect::Raw`]; in [`Dialect::Rpc`] fixstr, str8, str16
    /// or str32, whichever is smallest.
    pub fn str(&mut self, s: &str) {
        self.str_bytes(s.as_bytes());
    }

    /// A Go `string` given as bytes (Go strings need not be UTF-8); see [`Writer::str`].
    pub fn str_bytes(&mut self, b: &[u8]) {
        match self.dialect {
            Dialect::Raw => self.raw(b),
            Dialect::Rpc if b.len() < 32 => self.raw(b),
            Dialect::Rpc => {
                self.sized(b.len(), [0xd9, 0xda, 0xdb]);
                self.buf.extend_from_slice(b);
            }
        }
    }

    /// A Go `[]byte`: a raw string in [`Dialect::Raw`], bin8/16/32 in [`Dialect::Rpc`].
    pub fn bin(&mut self, b: &[u8]) {
        match self.dialect {
            Dialect::Raw => self.raw(b),
            Dialect::Rpc => {
                self.sized(b.len(), [0xc4, 0xc5, 0xc6]);
                self.buf.extend_from_slice(b);
            }
        }
    }

    /// A length in 1, 2 or 4 bytes after the matching marker.
    fn sized(&mut self, n: usize, [m8, m16, m32]: [u8; 3]) {
        if n <= 0xff {
            self.buf.extend_from_slice(&[m8, n as u8]);
        } else if n <= 0xffff {
            self.buf.push(m16);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(m32);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }

    /// An extension value: fixext for 1, 2, 4, 8 or 16 bytes, ext8/16/32 otherwise.
    pub fn ext(&mut self, kind: i8, data: &[u8]) {
        match data.len() {
            1 => self.buf.push(0xd4),
            2 => self.buf.push(0xd5),
            4 => self.buf.push(0xd6),
            8 => self.buf.push(0xd7),
            16 => self.buf.push(0xd8),
            n => self.sized(n, [0xc7, 0xc8, 0xc9]),
        }
        self.buf.push(kind as u8);
        self.buf.extend_from_slice(data);
    }

    /// A Go `[]byte` that may be nil: `None` is `c0`.
    pub fn opt_raw(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.raw(b),
            None => self.nil(),
        }
    }

    pub fn nil(&mut self) {
        self.buf.push(0xc0);
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(if v { 0xc3 } else { 0xc2 });
    }

    /// An unsigned integer in its smallest form (positive fixint, `cc`, `cd`, `ce`, `cf`).
    pub fn uint(&mut self, v: u64) {
        if v <= 0x7f {
            self.buf.push(v as u8);
        } else if v <= 0xff {
            self.buf.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= 0xffff {
            self.buf.push(0xcd);
            self.buf.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= 0xffff_ffff {
            self.buf.push(0xce);
            self.buf.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            self.buf.push(0xcf);
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// A signed integer the way go-msgpack 0.5.x writes it: non-negative values exactly like
    /// unsigned ones, negative values in the smallest signed form.
    pub fn int(&mut self, v: i64) {
        if v >= 0 {
            self.uint(v as u64);
        } else if v >= -32 {
            self.buf.push(v as i8 as u8);
        } else if v >= i8::MIN as i64 {
            self.buf.extend_from_slice(&[0xd0, v as i8 as u8]);
        } else if v >= i16::MIN as i64 {
            self.buf.push(0xd1);
            self.buf.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i32::MIN as i64 {
            self.buf.push(0xd2);
            self.buf.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            self.buf.push(0xd3);
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
    }

    pub fn f32(&mut self, v: f32) {
        self.buf.push(0xca);
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    /// Bytes that are not msgpack (e.g. the raw user state after a push/pull header).
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
}

/// Reads msgpack values from a borrowed buffer without ever reading past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(what.into())
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        // `pos` never passes the end (only `take` and `step` move it forward, both checked).
        self.buf.get(self.pos..).unwrap_or_default()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Take `n` raw bytes, or `Truncated` if fewer remain.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (s, rest) = self
            .rest()
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated)?;
        self.pos = self.buf.len().saturating_sub(rest.len());
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        self.take(1)?.first().copied().ok_or(DecodeError::Truncated)
    }

    /// Steps over the marker byte that [`Reader::peek`] just returned.
    fn step(&mut self) {
        self.pos = self.pos.saturating_add(1).min(self.buf.len());
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    fn len_of(&mut self, n: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.be(n)?).map_err(|_| malformed("length does not fit in memory"))
    }

    /// A map header; nil counts as an empty map (Go's zero value).
    pub fn map_len(&mut self) -> Result<usize, DecodeError> {
        let m = self.byte()?;
        let n = match m {
            0x80..=0x8f => (m & 0x0f) as usize,
            0xde => self.len_of(2)?,
            0xdf => self.len_of(4)?,
            0xc0 => 0,
            _ => return Err(malformed(format!("expected a map, found marker {m:#04x}"))),
        };
        // Every entry needs at least two bytes; a count the input cannot hold is a lie, but it may
        // still be a prefix of a longer stream, so it is "truncated" rather than "malformed".
        if n.saturating_mul(2) > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    /// An array header; nil counts as empty.
    pub fn array_len(&mut self) -> Result<usize, DecodeError> {
        let m = self.byte()?;
        let n = match m {
            0x90..=0x9f => (m & 0x0f) as usize,
            0xdc => self.len_of(2)?,
            0xdd => self.len_of(4)?,
            0xc0 => 0,
            _ => {
                return Err(malformed(format!(
                    "expected an array, found marker {m:#04x}"
                )))
            }
        };
        if n > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    /// The payload of a str-family value (fixstr, str8, str16, str32), or `None` if the marker is
    /// not a string. Does not consume anything when it returns `Ok(None)`.
    fn str_payload(&mut self, allow_bin: bool) -> Result<Option<&'a [u8]>, DecodeError> {
        let m = self.peek()?;
        let save = self.pos;
        let n = match m {
            0xa0..=0xbf => {
                self.step();
                (m & 0x1f) as usize
            }
            0xd9 => {
                self.step();
                self.len_of(1)?
            }
            0xda => {
                self.step();
                self.len_of(2)?
            }
            0xdb => {
                self.step();
                self.len_of(4)?
            }
            0xc4 if allow_bin => {
                self.step();
                self.len_of(1)?
            }
            0xc5 if allow_bin => {
                self.step();
                self.len_of(2)?
            }
            0xc6 if allow_bin => {
                self.step();
                self.len_of(4)?
            }
            _ => return Ok(None),
        };
        match self.take(n) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                self.pos = save;
                Err(e)
            }
        }
    }

    /// A Go `string`: str family only (go-msgpack 0.5.x refuses bin here); nil is "".
    /// Invalid UTF-8 is replaced rather than refused, because Go strings are arbitrary bytes.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        if self.peek()? == 0xc0 {
            self.step();
            return Ok(String::new());
        }
        match self.str_payload(false)? {
            Some(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            None => Err(malformed(format!(
                "expected a string, found marker {:#04x}",
                self.peek()?
            ))),
        }
    }

    /// A Go `[]byte`: str family or bin; nil is `None`.
    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        if self.peek()? == 0xc0 {
            self.step();
            return Ok(None);
        }
        match self.str_payload(true)? {
            Some(b) => Ok(Some(b)),
            None => Err(malformed(format!(
                "expected bytes, found marker {:#04x}",
                self.peek()?
            ))),
        }
    }

    /// A Go `[]byte` where nil and empty are the same.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        Ok(self.opt_bytes()?.unwrap_or(&[]))
    }

    /// A Go `[]uint8` that may also arrive as an array of small integers (Go accepts both).
    pub fn byte_vec_lenient(&mut self) -> Result<Vec<u8>, DecodeError> {
        let m = self.peek()?;
        if matches!(m, 0x90..=0x9f | 0xdc | 0xdd) {
            let n = self.array_len()?;
            let mut out = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                out.push(self.uint_as::<u8>()?);
            }
            return Ok(out);
        }
        Ok(self.bytes()?.to_vec())
    }

    /// Any integer marker as an i128 (wide enough for every msgpack integer); nil is 0, and
    /// booleans are 0/1 like Go's lenient decoder.
    fn integer(&mut self) -> Result<i128, DecodeError> {
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => m as i128,
            0xe0..=0xff => m as i8 as i128,
            0xcc => self.be(1)? as i128,
            0xcd => self.be(2)? as i128,
            0xce => self.be(4)? as i128,
            0xcf => self.be(8)? as i128,
            0xd0 => self.be(1)? as u8 as i8 as i128,
            0xd1 => self.be(2)? as u16 as i16 as i128,
            0xd2 => self.be(4)? as u32 as i32 as i128,
            0xd3 => self.be(8)? as i64 as i128,
            0xc0 | 0xc2 => 0,
            0xc3 => 1,
            _ => {
                return Err(malformed(format!(
                    "expected an integer, found marker {m:#04x}"
                )))
            }
        })
    }

    /// An integer of any marker converted to `T` if it fits.
    pub fn uint_as<T: TryFrom<i128>>(&mut self) -> Result<T, DecodeError> {
        let v = self.integer()?;
        T::try_from(v).map_err(|_| malformed(format!("integer {v} out of range")))
    }

    /// A Go `bool`: `c2`/`c3`, also 0/1 integers and nil (false).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.byte()? {
            0xc3 | 0x01 => Ok(true),
            0xc2 | 0xc0 | 0x00 => Ok(false),
            m => Err(malformed(format!("expected a bool, found marker {m:#04x}"))),
        }
    }

    /// A Go `float64`: `cb`, `ca`, or any integer.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        match self.peek()? {
            0xcb => {
                self.step();
                Ok(f64::from_bits(self.be(8)?))
            }
            0xca => {
                self.step();
                Ok(f32::from_bits(self.be(4)? as u32) as f64)
            }
            _ => Ok(self.integer()? as f64),
        }
    }

    /// Skip one value of any kind, including nested containers and ext types.
    pub fn skip(&mut self) -> Result<(), DecodeError> {
        self.skip_depth(0)
    }

    fn skip_depth(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(malformed("msgpack nesting is too deep"));
        }
        let m = self.byte()?;
        let skip_bytes = |r: &mut Self, n: usize| r.take(n).map(|_| ());
        match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(()),
            0xc1 => Err(malformed("reserved marker 0xc1")),
            0xa0..=0xbf => skip_bytes(self, (m & 0x1f) as usize),
            0x80..=0x8f | 0xde | 0xdf | 0x90..=0x9f | 0xdc | 0xdd => {
                // Un-read the marker `byte` just took, so the header is read whole.
                self.pos = self.pos.saturating_sub(1);
                let is_map = matches!(m, 0x80..=0x8f | 0xde | 0xdf);
                let n = if is_map {
                    // `map_len` checked that 2·n bytes remain, so this cannot saturate.
                    self.map_len()?.saturating_mul(2)
                } else {
                    self.array_len()?
                };
                for _ in 0..n {
                    self.skip_depth(depth.saturating_add(1))?;
                }
                Ok(())
            }
            0xc4 | 0xd9 => {
                let n = self.len_of(1)?;
                skip_bytes(self, n)
            }
            0xc5 | 0xda => {
                let n = self.len_of(2)?;
                skip_bytes(self, n)
            }
            0xc6 | 0xdb => {
                let n = self.len_of(4)?;
                skip_bytes(self, n)
            }
            0xc7 => {
                let n = self.len_of(1)?;
                skip_bytes(self, n.saturating_add(1))
            }
            0xc8 => {
                let n = self.len_of(2)?;
                skip_bytes(self, n.saturating_add(1))
            }
            0xc9 => {
                let n = self.len_of(4)?;
                skip_bytes(self, n.saturating_add(1))
            }
            0xca => skip_bytes(self, 4),
            0xcb => skip_bytes(self, 8),
            0xcc | 0xd0 => skip_bytes(self, 1),
            0xcd | 0xd1 => skip_bytes(self, 2),
            0xce | 0xd2 => skip_bytes(self, 4),
            0xcf | 0xd3 => skip_bytes(self, 8),
            0xd4 => skip_bytes(self, 2),
            0xd5 => skip_bytes(self, 3),
            0xd6 => skip_bytes(self, 5),
            0xd7 => skip_bytes(self, 9),
            0xd8 => skip_bytes(self, 17),
        }
    }

    /// Read a struct encoded as a map: `field` is called with each key and must consume the value
    /// and return `true`, or return `false` (consuming nothing) for unknown keys, which are skipped.
    pub fn read_struct(
        &mut self,
        mut field: impl FnMut(&[u8], &mut Self) -> Result<bool, DecodeError>,
    ) -> Result<(), DecodeError> {
        let n = self.map_len()?;
        for _ in 0..n {
            let key = match self.str_payload(false)? {
                Some(k) => k,
                None => return Err(malformed("map key is not a string")),
            };
            if !field(key, self)? {
                self.skip()?;
            }
        }
        Ok(())
    }
}

impl Reader<'_> {
    /// One whole object of any kind, nested at most [`MAX_DEPTH`] deep. Containers are never
    /// preallocated beyond what the remaining input could fill, whatever their header claims.
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

/// A decoded msgpack object. Strings keep their raw bytes: Go strings need not be UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    /// A negative integer; non-negative ones are [`Value::Uint`].
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

    /// Writes the value in the writer's dialect, each part in its smallest form.
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

    /// The value's bytes in `dialect`.
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

    fn written(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::new();
        f(&mut w);
        w.into_vec()
    }

    #[test]
    fn strings_use_go_raw_family_and_never_str8() {
        assert_eq!(written(|w| w.raw(b"ab")), b"\xa2ab");
        let s = vec![b'x'; 41];
        assert_eq!(&written(|w| w.raw(&s))[..3], b"\xda\x00\x29"); // spec §1.1: 41 bytes → da 00 29
        let s = vec![b'x'; 70_000];
        assert_eq!(&written(|w| w.raw(&s))[..5], b"\xdb\x00\x01\x11\x70");
    }

    #[test]
    fn unsigned_ints_take_their_smallest_form() {
        assert_eq!(written(|w| w.uint(127)), [0x7f]);
        assert_eq!(written(|w| w.uint(128)), [0xcc, 0x80]);
        assert_eq!(written(|w| w.uint(344)), [0xcd, 0x01, 0x58]);
        assert_eq!(written(|w| w.uint(70_000)), [0xce, 0, 1, 0x11, 0x70]);
        assert_eq!(written(|w| w.uint(1 << 40))[0], 0xcf);
        assert_eq!(written(|w| w.int(-1)), [0xff]);
        assert_eq!(written(|w| w.int(-200)), [0xd1, 0xff, 0x38]);
    }

    #[test]
    fn reader_accepts_go_leniencies() {
        // str8 string, bin bytes, nil as zero values, bool from int.
        let mut r = Reader::new(b"\xd9\x02hi\xc4\x01\x07\xc0\xc0\x01\xd0\x05");
        assert_eq!(r.string().unwrap(), "hi");
        assert_eq!(r.bytes().unwrap(), [7]);
        assert_eq!(r.string().unwrap(), "");
        assert_eq!(r.uint_as::<u32>().unwrap(), 0);
        assert!(r.bool().unwrap());
        assert_eq!(r.uint_as::<u16>().unwrap(), 5);
    }

    #[test]
    fn lengths_beyond_the_input_are_truncated_not_allocated() {
        assert_eq!(
            Reader::new(b"\xdb\xff\xff\xff\xff").bytes(),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Reader::new(b"\xdf\xff\xff\xff\xff").map_len(),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Reader::new(b"\xdd\xff\xff\xff\xff").skip(),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn skipping_is_depth_bounded() {
        let deep = vec![0x91u8; 10_000];
        assert!(matches!(
            Reader::new(&deep).skip(),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn skip_handles_ext_and_nested_values() {
        let v = b"\x82\xa1a\x92\xc7\x02\x05xy\xd6\x01abcd\xa1b\x81\xa1c\xcb\0\0\0\0\0\0\0\0\x07";
        let mut r = Reader::new(v);
        r.skip().unwrap();
        assert_eq!(r.rest(), [7]);
    }

    #[test]
    fn the_rpc_dialect_writes_str8_and_bin_where_raw_writes_raw_strings() {
        let s = [b'x'; 40];
        let raw = Writer::new();
        let rpc = Writer::with_dialect(Dialect::Rpc);
        let mut w = raw.clone();
        w.str_bytes(&s);
        assert_eq!(&w.as_slice()[..3], b"\xda\x00\x28");
        let mut w = rpc.clone();
        w.str_bytes(&s);
        assert_eq!(&w.as_slice()[..2], b"\xd9\x28");
        let mut w = raw;
        w.bin(&[127, 0, 0, 1]);
        assert_eq!(w.as_slice(), b"\xa4\x7f\x00\x00\x01");
        let mut w = rpc;
        w.bin(&[127, 0, 0, 1]);
        assert_eq!(w.as_slice(), b"\xc4\x04\x7f\x00\x00\x01");
        // Short strings are fixstr in both.
        assert_eq!(Value::str("ab").to_bytes(Dialect::Raw), b"\xa2ab");
        assert_eq!(Value::str("ab").to_bytes(Dialect::Rpc), b"\xa2ab");
    }

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

    #[test]
    fn integers_out_of_range_are_malformed() {
        assert!(matches!(
            Reader::new(b"\xcd\x01\x00").uint_as::<u8>(),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Reader::new(b"\xff").uint_as::<u32>(),
            Err(DecodeError::Malformed(_))
        ));
    }
}
