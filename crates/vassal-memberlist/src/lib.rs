//! Pure, deterministic SWIM membership with the Lifeguard extensions, speaking HashiCorp
//! memberlist's wire protocol.
//!
//! No IO, no clock, no OS randomness: time comes in as an argument, randomness from a seed in the
//! [`Config`], and bytes in and out through `handle_*` and `poll_*`.

#![warn(missing_docs)]
// No panic reachable from the network (issue 11): the release profile aborts on panic, so one
// crafted packet must not be able to overflow, index out of bounds or unwrap. Sites that provably
// cannot panic carry a local, commented `allow`.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]

pub mod broadcast;
pub mod config;
pub mod delegate;
pub mod fuzzing;
pub mod limits;
mod memberlist;
pub mod suspicion;
pub mod telemetry;
pub mod wire;

// The rule tests' helpers, shared with `tests/rules.rs`; they name this crate as an outside
// test would.
#[cfg(test)]
extern crate self as vassal_memberlist;
#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod test_support;

pub use config::{Config, ConfigError};
pub use delegate::{Delegate, NoDelegate, Node};
pub use limits::Drops;
pub use memberlist::{
    push_pull_scale, Event, JoinId, Memberlist, Stats, StreamId, Transmit, Transport, META_MAX_SIZE,
};
pub use wire::NodeStateKind;
