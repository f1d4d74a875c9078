//! Replays every input in `fuzz/corpus/serf_cluster/` (the state-machine fuzz target's corpus,
//! minimized crashes included) through the same harness the target runs, so that plain
//! `cargo test` keeps every case the fuzzer found.

use std::panic;
use std::path::PathBuf;

use vassal_sim::hostile::fuzz;

#[test]
fn serf_cluster_corpus_replays_without_a_violation() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/serf_cluster");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("corpus file");
        if panic::catch_unwind(|| fuzz::run_bytes(&data)).is_err() {
            failed.push(file.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} corpus inputs failed (each printed its panic above): {failed:?}\n\
         replay one: cargo fuzz run serf_cluster fuzz/corpus/serf_cluster/<file> (in fuzz/)",
        failed.len(),
        files.len()
    );
}
