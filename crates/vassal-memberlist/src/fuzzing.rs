//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: each feeds arbitrary
//! bytes to a decoder, with and without a keyring, and must return without panicking.
//!
//! They also check the round-trip property where it holds (anything that decodes re-encodes and
//! decodes to the same value), so fuzzing finds encoder bugs as well as decoder crashes.

use crate::wire::{self, Keyring, ReadOptions};

/// The fixed key the fuzz keyring uses (the one in the golden encrypted fixtures).
pub const FUZZ_KEY: [u8; 32] = [
    0x7c, 0xef, 0xbe, 0x54, 0xdc, 0x77, 0x21, 0x97, 0xe6, 0x9b, 0xf6, 0xe4, 0x4f, 0xc3, 0x64, 0x01,
    0xfd, 0x76, 0x71, 0x2b, 0x71, 0xff, 0xd1, 0xd2, 0x2a, 0x7a, 0x9e, 0x41, 0xaa, 0xc3, 0xdc, 0xa7,
];

/// Small enough that a fuzzer's LZW bombs are cheap, big enough for real packets.
const FUZZ_MAX_DECOMPRESSED: usize = 1 << 20;

#[allow(clippy::expect_used)] // a constant 32-byte key
fn keyring() -> Keyring {
    Keyring::new(&FUZZ_KEY).expect("32-byte key")
}

/// Decode `data` as a UDP packet plain, with a keyring, and with a keyring that verifies.
#[allow(clippy::expect_used)] // a property check: failing it is the bug the fuzzer looks for
pub fn decode_packet(data: &[u8]) {
    let ring = keyring();
    for (keyring, verify) in [(None, false), (Some(&ring), false), (Some(&ring), true)] {
        let opts = ReadOptions {
            label: b"",
            keyring,
            verify_incoming: verify,
        };
        if let Ok(p) = wire::decode_packet_limited(data, &opts, FUZZ_MAX_DECOMPRESSED) {
            for m in &p.messages {
                let again = wire::decode_message(&wire::encode_message(m)).expect("re-decodes");
                assert_eq!(&again, m, "message does not round-trip");
            }
        }
    }
    let labelled = ReadOptions {
        label: b"fuzz",
        keyring: None,
        verify_incoming: false,
    };
    let _ = wire::decode_packet_limited(data, &labelled, FUZZ_MAX_DECOMPRESSED);
}

/// Decode `data` as a stream, whole and fed in growing prefixes, plain and with a keyring.
#[allow(clippy::expect_used)] // a property check: failing it is the bug the fuzzer looks for
pub fn decode_stream(data: &[u8]) {
    let ring = keyring();
    for keyring in [None, Some(&ring)] {
        let opts = ReadOptions {
            label: b"",
            keyring,
            verify_incoming: false,
        };
        let whole = wire::decode_stream_limited(data, &opts, FUZZ_MAX_DECOMPRESSED);
        if let Ok(Some((msg, used))) = &whole {
            assert!(*used <= data.len(), "consumed more than was given");
            // A complete message is reported identically once we stop at its end.
            let head = data.get(..*used).unwrap_or_default();
            let again = wire::decode_stream_limited(head, &opts, FUZZ_MAX_DECOMPRESSED);
            assert_eq!(
                again.as_ref().ok().and_then(|o| o.as_ref()),
                Some(&(msg.clone(), *used))
            );
            let body = wire::encode_stream_body(msg);
            let plain = ReadOptions {
                label: b"",
                keyring: None,
                verify_incoming: false,
            };
            let re = wire::decode_stream(&body, &plain)
                .expect("re-decodes")
                .expect("complete");
            assert_eq!(&re.0, msg, "stream message does not round-trip");
        }
        // A few prefixes: an incomplete stream must say "need more" or fail, never panic.
        for cut in [1, data.len() / 2, data.len().saturating_sub(1)] {
            if let Some(head) = data.get(..cut).filter(|h| h.len() < data.len()) {
                let _ = wire::decode_stream_limited(head, &opts, FUZZ_MAX_DECOMPRESSED);
            }
        }
    }
}

/// Decode `data` as one plain message and check it round-trips.
#[allow(clippy::expect_used)] // a property check: failing it is the bug the fuzzer looks for
pub fn decode_message(data: &[u8]) {
    if let Ok(m) = wire::decode_message(data) {
        let again = wire::decode_message(&wire::encode_message(&m)).expect("re-decodes");
        assert_eq!(again, m, "message does not round-trip");
    }
}

/// Decompress `data` as Go LZW; compress whatever comes out and check it comes back.
#[allow(clippy::expect_used)] // a property check: failing it is the bug the fuzzer looks for
pub fn lzw_decompress(data: &[u8]) {
    if let Ok(out) = wire::lzw_decompress(data, FUZZ_MAX_DECOMPRESSED) {
        let re = wire::lzw_compress(&out);
        assert_eq!(
            wire::lzw_decompress(&re, FUZZ_MAX_DECOMPRESSED).expect("own output"),
            out
        );
    }
}

/// Open `data` as an envelope (UDP AAD and stream-style AAD), and seal/open it as plaintext.
#[allow(clippy::expect_used)] // a property check: failing it is the bug the fuzzer looks for
pub fn keyring_decrypt(data: &[u8]) {
    let mut ring = keyring();
    let _ = ring.add_key(&[0x42; 16]);
    let _ = ring.decrypt(data, b"");
    let _ = ring.decrypt(data, b"label");
    let nonce = [0u8; 12];
    let sealed = ring.encrypt(data, b"aad", nonce);
    assert_eq!(ring.decrypt(&sealed, b"aad").expect("own envelope"), data);
}
