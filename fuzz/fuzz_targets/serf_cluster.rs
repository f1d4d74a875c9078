//! Fuzz target: a cluster of three real Serf nodes and one hostile node on the simulated network.
//! The input is a seed and a list of steps (forged memberlist and Serf messages with any name,
//! incarnation, Lamport time, coordinate, timeout, filter and payload size, and time passing);
//! `vassal_sim::hostile::fuzz` runs them and panics if a node panics, quits, lets an incarnation
//! or clock wrap or fall, overfills a queue, or has not healed after the attack stops.
//! `cargo fuzz fmt serf_cluster <file>` prints an input's steps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vassal_sim::hostile::fuzz::{run, Input};

fuzz_target!(|input: Input| {
    run(&input);
});
