//! The bounded [`Reader`]: Go-lenient, dialect-blind reading of values from a borrowed buffer.

use super::{malformed, MAX_DEPTH};
use crate::wire::DecodeError;

/// Reads msgpack values from a borrowed buffer without ever reading past its end.
///
/// One reader reads both dialects: it accepts whatever go-msgpack's decoder accepts for the Go
/// type asked for (str8 and bin as well as raw strings, any integer marker whose value fits, nil
/// as the zero value), so that nothing Go Serf would read from a peer or an RPC client is refused
/// here, whichever msgpack library wrote it. Lengths and counts from the input are checked against what is
/// left of it before anything is allocated, copied or skipped, so input that is cut short is
/// [`DecodeError::Truncated`] and never a large allocation; byte slices and strings are borrowed,
/// not copied. After an error the reader's position is unspecified: start over, with more input
/// after `Truncated`, or drop the input after [`DecodeError::Malformed`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
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

    /// How many bytes are left unread.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Take `n` raw bytes (not msgpack: e.g. the user state after a push/pull header), or
    /// `Truncated` if fewer remain.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (s, rest) = self
            .rest()
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated)?;
        self.pos = self.buf.len().saturating_sub(rest.len());
        Ok(s)
    }

    /// The next byte, whatever it is.
    pub(super) fn byte(&mut self) -> Result<u8, DecodeError> {
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

    /// An `n`-byte big-endian unsigned integer (`n` at most 8).
    pub(super) fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    /// An `n`-byte big-endian length, refused if it does not fit in a `usize`.
    pub(super) fn len_of(&mut self, n: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.be(n)?).map_err(|_| malformed("length does not fit in memory"))
    }

    /// A map header (fixmap, map16, map32): how many key/value pairs follow. nil counts as an
    /// empty map (Go's zero value). A count of more pairs than the rest of the input could hold
    /// (two bytes each at least) is `Truncated`, so callers may size buffers by it.
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

    /// An array header (fixarray, array16, array32): how many values follow. nil counts as an
    /// empty array. A count of more values than bytes left is `Truncated`, as for
    /// [`Reader::map_len`].
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

    /// The payload of a str-family value (fixstr, str8, str16, str32; bin8/16/32 too if
    /// `allow_bin`), or `None` if the marker is not one. Does not consume anything when it
    /// returns `Ok(None)` or `Truncated`.
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

    /// A Go `string`: the str family (fixstr, str8, str16, str32) only, in either dialect, since
    /// go-msgpack 0.5.x refuses bin here; nil is "". Invalid UTF-8 is replaced rather than
    /// refused, because Go strings are arbitrary bytes. The only copy is into the `String`.
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

    /// A Go `[]byte`, borrowed from the input: the str family (gossip's raw strings) or bin (the
    /// RPC dialect), whichever arrives; nil is `None`.
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

    /// A Go `[]byte` where nil and empty are the same; otherwise as [`Reader::opt_bytes`].
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        Ok(self.opt_bytes()?.unwrap_or(&[]))
    }

    /// A Go `[]uint8` that may also arrive as an array of small integers (Go accepts both; a
    /// node's `Vsn` is read this way). Each array element must be an integer from 0 to 255; the
    /// array's count is bounded by [`Reader::array_len`] before anything is allocated.
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

    /// An integer of any marker (positive or negative fixint, `cc`–`d3`) converted to `T`, signed
    /// or unsigned, if its value fits; otherwise [`DecodeError::Malformed`]. Like Go's lenient
    /// decoder it also reads nil as 0 and a bool as 0 or 1.
    pub fn uint_as<T: TryFrom<i128>>(&mut self) -> Result<T, DecodeError> {
        let v = self.integer()?;
        T::try_from(v).map_err(|_| malformed(format!("integer {v} out of range")))
    }

    /// A Go `bool`: `c2`/`c3`, also the fixints 0 and 1 and nil (false), as Go's decoder
    /// accepts them.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.byte()? {
            0xc3 | 0x01 => Ok(true),
            0xc2 | 0xc0 | 0x00 => Ok(false),
            m => Err(malformed(format!("expected a bool, found marker {m:#04x}"))),
        }
    }

    /// A Go `float64`: `cb`, `ca` (widened), or anything [`Reader::uint_as`] reads as an integer.
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

    /// Skip one value of any kind, including nested containers and ext types, without decoding
    /// or allocating. Every length is checked against the input before it is stepped over, and
    /// containers nested deeper than [`MAX_DEPTH`] are [`DecodeError::Malformed`], as is the
    /// never-used marker `c1`.
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
    ///
    /// Keys must be strings of the str family (a bin key is [`DecodeError::Malformed`]); they may
    /// come in any order, a repeated key calls `field` again, and a nil map is a struct with no
    /// fields. Skipping unknown keys is what lets newer peers add fields, as Go does.
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

#[cfg(test)]
mod tests {
    use super::*;

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
