//! Replays every file in `fuzz/corpus/<target>/` through the same entry points the fuzz targets
//! use, so plain `cargo test` catches a regression on any input a fuzzer (or a human) saved.

use std::path::PathBuf;

use vassal_memberlist::fuzzing;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| f(&data));
        assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
        n += 1;
    }
    assert!(n > 0, "no corpus files in {}", dir.display());
}

#[test]
fn decode_packet_corpus_never_panics() {
    replay("decode_packet", fuzzing::decode_packet);
}

#[test]
fn decode_stream_corpus_never_panics() {
    replay("decode_stream", fuzzing::decode_stream);
}

#[test]
fn decode_message_corpus_never_panics() {
    replay("decode_message", fuzzing::decode_message);
}

#[test]
fn lzw_decompress_corpus_never_panics() {
    replay("lzw_decompress", fuzzing::lzw_decompress);
}

#[test]
fn keyring_decrypt_corpus_never_panics() {
    replay("keyring_decrypt", fuzzing::keyring_decrypt);
}
