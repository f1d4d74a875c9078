//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: Serf's decoders must
//! never panic, and what decodes must re-encode to the same message.

use crate::{messages, tags};

/// Decodes a Serf message and, if it decodes, checks that it survives a round trip.
#[allow(clippy::expect_used)] // a property check: failing it is the bug the fuzzer looks for
pub fn decode_serf_message(data: &[u8]) {
    if let Ok(msg) = messages::decode(data) {
        let again = messages::decode(&messages::encode(&msg)).expect("re-encoded message decodes");
        assert_eq!(again, msg, "round trip changed the message");
    }
    let _ = tags::decode(data);
}
