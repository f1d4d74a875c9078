//! Fuzz target: Serf's message and tag decoders must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vassal_serf::fuzzing::decode_serf_message(data));
