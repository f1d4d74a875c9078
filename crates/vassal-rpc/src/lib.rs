//! Serf's RPC protocol (spec §6), so Serf's own CLI, its client libraries and scripts can drive
//! a Vassal agent:
//!
//! - [`msgpack`]: the framing, self-delimiting msgpack objects back to back;
//! - [`protocol`]: the headers, bodies and stream records with Go's field names;
//! - [`server`]: the agent side, serving any number of clients over a [`vassal_node::Handle`];
//! - [`client`]: an async client (the `vassal` CLI uses it);
//! - [`monitor`]: the log fan-out behind the `monitor` command.

pub mod client;
pub mod monitor;
pub mod msgpack;
pub mod protocol;
pub mod server;

pub use client::{Client, ClientError};
pub use monitor::LogHub;
pub use server::{serve, ServerConfig};
