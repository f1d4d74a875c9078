//! Fuzz target: `vassal_memberlist::fuzzing::decode_packet` must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vassal_memberlist::fuzzing::decode_packet(data));
