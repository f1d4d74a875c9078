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
//!
//! Writing cannot fail: a [`Writer`] only appends to its own buffer. msgpack cannot express a
//! length or count above `u32::MAX`, and the writer does not check for one (it would write the
//! low 32 bits); nothing Vassal writes comes near that.

use super::DecodeError;

mod read;
mod value;

pub use read::Reader;
pub use value::{Scanner, Value};

/// How deeply nested maps/arrays may be when skipping an unknown value ([`Reader::skip`]),
/// decoding a [`Value`] ([`Reader::value`]) or scanning for an object's end ([`Scanner`]); deeper
/// input is [`DecodeError::Malformed`]. Gossip structs are at most three levels deep, RPC messages
/// three too; anything deeper is hostile, and the bound keeps the recursion's stack use small.
pub const MAX_DEPTH: usize = 32;

/// Which msgpack dialect a [`Writer`] writes; the two differ only in strings and byte slices
/// ([`Writer::str`], [`Writer::str_bytes`], [`Writer::bin`] and [`Value::write`]). Reading needs
/// no dialect: the [`Reader`] accepts both.
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
///
/// Every method writes one value (or one container header, whose items the caller writes next)
/// in the smallest form go-msgpack would choose, so the bytes match Go's byte for byte. A Go
/// struct is a [`Writer::map_header`] followed by key/value pairs, keys written with
/// [`Writer::str`] in the order Go would write them.
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

    /// The dialect this writer writes strings and byte slices in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The buffer: whatever [`Writer::with_buf`] started from, then everything written since.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// The buffer as [`Writer::into_vec`] would return it, without giving up the writer.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// A map header for `n` entries (fixmap, map16, map32), the same in both dialects; the
    /// caller then writes `n` key/value pairs.
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

    /// An array header for `n` elements (fixarray, array16, array32), the same in both dialects;
    /// the caller then writes `n` values.
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

    /// A string or byte slice as a raw string: fixstr, str16 or str32 — go-msgpack 0.5.x never
    /// uses str8 or bin. This ignores the writer's dialect; gossip code calls it directly, and
    /// [`Writer::str_bytes`] and [`Writer::bin`] choose between it and the new forms.
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

    /// An extension value of type `kind`: fixext for 1, 2, 4, 8 or 16 bytes, ext8/16/32 otherwise,
    /// in either dialect. Gossip never writes one; it is here so that any [`Value`] can be
    /// written back.
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

    /// A Go `[]byte` that may be nil, as gossip writes it: `None` is nil (`c0`), `Some` a raw
    /// string ([`Writer::raw`], whatever the dialect).
    pub fn opt_raw(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.raw(b),
            None => self.nil(),
        }
    }

    /// nil (`c0`): a Go nil slice, map or pointer.
    pub fn nil(&mut self) {
        self.buf.push(0xc0);
    }

    /// A Go `bool`: `c3` for true, `c2` for false.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(if v { 0xc3 } else { 0xc2 });
    }

    /// An unsigned integer in its smallest form (positive fixint, `cc`, `cd`, `ce`, `cf`), the same
    /// in both dialects.
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

    /// A Go `float32`: `ca` and its four IEEE 754 bytes, big-endian.
    pub fn f32(&mut self, v: f32) {
        self.buf.push(0xca);
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    /// A Go `float64`: `cb` and its eight IEEE 754 bytes, big-endian (go-msgpack never
    /// shortens one to `ca`).
    pub fn f64(&mut self, v: f64) {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    /// Bytes that are not msgpack, appended as they are (e.g. the raw user state after a
    /// push/pull header).
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
}

fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(what.into())
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
}
