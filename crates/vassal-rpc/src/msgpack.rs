//! MessagePack as Serf's RPC speaks it: the *new* spec (strings as str, str8 allowed, `[]byte`
//! as bin), self-delimiting objects back to back on a TCP stream with no length prefix.
//!
//! The codec itself is the shared one in [`vassal_memberlist::wire::msgpack`], used here in its
//! [`Dialect::Rpc`]; this module adds what only the RPC needs: [`decode`], which parses one
//! object from the front of a buffer and says `Ok(None)` while it is still incomplete, so a
//! connection can read until a whole request has arrived, and the RPC's encoding helpers. The
//! shared reader never allocates more than the input could fill and refuses nesting deeper than
//! [`MAX_DEPTH`], so hostile input costs at most what was sent; [`Scanner`] finds where a
//! request ends without re-reading a trickled one.

use vassal_memberlist::wire::msgpack::Reader;
pub use vassal_memberlist::wire::msgpack::{Dialect, Scanner, Value, MAX_DEPTH};
use vassal_memberlist::wire::DecodeError as WireError;

/// Input that is not msgpack (or nests too deep).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed msgpack: {0}")]
pub struct DecodeError(pub String);

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Malformed(why) => DecodeError(why),
            WireError::Truncated => DecodeError("object ended early".into()),
        }
    }
}

/// Decodes the object at the front of `buf`: `Ok(Some((value, bytes used)))`, or `Ok(None)`
/// if more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, DecodeError> {
    let mut r = Reader::new(buf);
    match r.value() {
        Ok(v) => Ok(Some((v, r.position()))),
        Err(WireError::Truncated) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `v`'s bytes in the RPC dialect.
pub fn encode(v: &Value) -> Vec<u8> {
    v.to_bytes(Dialect::Rpc)
}

/// Appends `v` in the RPC dialect to `buf` (a header's bytes, say).
pub fn encode_into(v: &Value, buf: &mut Vec<u8>) {
    let mut w = vassal_memberlist::wire::msgpack::Writer::with_buf(std::mem::take(buf))
        .in_dialect(Dialect::Rpc);
    v.write(&mut w);
    *buf = w.into_vec();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bytes_are_bin_and_strings_may_be_str8() {
        assert_eq!(
            Value::Bin(vec![127, 0, 0, 1]).to_bytes(Dialect::Rpc),
            b"\xc4\x04\x7f\x00\x00\x01"
        );
        let long = "x".repeat(40);
        let enc = Value::str(&long).to_bytes(Dialect::Rpc);
        assert_eq!(&enc[..2], b"\xd9\x28");
    }

    #[test]
    fn an_incomplete_object_asks_for_more() {
        let full = Value::Map(vec![
            (Value::str("Command"), Value::str("members")),
            (Value::str("Seq"), Value::Uint(300)),
        ])
        .to_bytes(Dialect::Rpc);
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
            let bytes = v.to_bytes(Dialect::Rpc);
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
            let mut bytes = v.to_bytes(Dialect::Rpc);
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
