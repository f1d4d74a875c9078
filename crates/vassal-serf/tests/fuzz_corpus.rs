//! Replays `fuzz/corpus/serf_message/` through the fuzz target's entry point, so plain
//! `cargo test` keeps every input the fuzzer ever kept from regressing.

use std::path::Path;

#[test]
fn serf_message_corpus_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/serf_message");
    let mut n = 0;
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
    {
        let path = entry.expect("directory entry").path();
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        vassal_serf::fuzzing::decode_serf_message(&data);
        n += 1;
    }
    assert!(n > 0, "no corpus files in {}", dir.display());
}
