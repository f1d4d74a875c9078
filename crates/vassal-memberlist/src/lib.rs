//! Pure, deterministic SWIM membership with the Lifeguard extensions, speaking HashiCorp
//! memberlist's wire protocol.
//!
//! No IO, no clock, no OS randomness: time comes in as an argument, randomness from a seed in the
//! [`Config`], and bytes in and out through `handle_*` and `poll_*`.

pub mod fuzzing;
pub mod wire;
