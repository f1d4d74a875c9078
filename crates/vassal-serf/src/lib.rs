//! The Serf layer (spec §4) over [`vassal_memberlist`]: member status with join/leave intents and
//! Lamport clocks, tags in the node metadata, a graceful leave, and the snapshot file's records.
//! Pure and deterministic like the layer below: `handle_*` in, `poll_*` out, time as an argument.
//!
//! The shell around a [`Serf`] (the agent's event loop, or a simulator) does all the I/O: it
//! sends what [`Serf::poll_transmit`] returns, feeds what arrives to [`Serf::handle_packet`]
//! and [`Serf::handle_stream`], calls [`Serf::handle_timeout`] at [`Serf::poll_timeout`], and
//! acts on [`Serf::poll_event`]. Here two nodes on a perfect in-memory network with a fake
//! clock; `b` joins `a` and both see each other join:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//!
//! use vassal_memberlist::{Config as MlConfig, Transmit};
//! use vassal_serf::{Config, Event, MemberEventKind, Serf};
//!
//! let addrs: [SocketAddr; 2] = ["127.0.0.1:7946".parse().unwrap(), "127.0.0.2:7946".parse().unwrap()];
//! // Any instant will do as the epoch: the core only compares and adds.
//! let mut now = Instant::now();
//! let mut nodes: Vec<Serf> = ["a", "b"]
//!     .into_iter()
//!     .zip(addrs)
//!     .map(|(name, addr)| {
//!         let mut ml = MlConfig::lan(name);
//!         ml.advertise = addr;
//!         Serf::new(Config::new(ml), now).expect("valid config")
//!     })
//!     .collect();
//! nodes[1].join(&[addrs[0]], true, now);
//!
//! // Who each node has seen join (itself first).
//! let mut joined: [Vec<String>; 2] = Default::default();
//! for step in 0.. {
//!     if joined.iter().all(|j| j.len() == 2) {
//!         break;
//!     }
//!     assert!(step < 10_000, "the nodes never saw each other join");
//!     // Deliver what each node sends to the other.
//!     for (from, to) in [(0, 1), (1, 0)] {
//!         while let Some(t) = nodes[from].poll_transmit() {
//!             match t {
//!                 Transmit::Packet { bytes, .. } => nodes[to].handle_packet(addrs[from], &bytes, now),
//!                 // A TCP exchange (push/pull): one message there, one reply back.
//!                 Transmit::Stream { id, bytes, .. } => {
//!                     let msg = nodes[to].decode_stream(&bytes).map(|m| m.expect("a whole message").0);
//!                     let reply = nodes[to].handle_stream(addrs[from], msg, now).expect("a reply");
//!                     let reply = match nodes[from].decode_stream(&reply) {
//!                         Ok(Some((m, _))) => Ok(m),
//!                         other => Err(format!("bad reply: {other:?}")),
//!                     };
//!                     nodes[from].handle_stream_reply(id, reply, now);
//!                 }
//!             }
//!         }
//!     }
//!     for (k, node) in nodes.iter_mut().enumerate() {
//!         while let Some(event) = node.poll_event() {
//!             if let Event::Member(e) = event {
//!                 if e.kind == MemberEventKind::Join {
//!                     joined[k].extend(e.members.into_iter().map(|m| m.name));
//!                 }
//!             }
//!         }
//!     }
//!     // Move the fake clock to the earliest timer and run the timers that are due.
//!     if let Some(next) = nodes.iter().filter_map(Serf::poll_timeout).min() {
//!         now = now.max(next);
//!     }
//!     for node in &mut nodes {
//!         if node.poll_timeout().is_some_and(|t| t <= now) {
//!             node.handle_timeout(now);
//!         }
//!     }
//! }
//! assert_eq!(joined, [["a", "b"], ["b", "a"]]);
//! assert!(nodes[0].member("b").is_some_and(|m| m.status == vassal_serf::MemberStatus::Alive));
//! ```

// No panic reachable from the network (issue 11): the release profile aborts on panic, so one
// crafted message must not be able to overflow, index out of bounds or unwrap. Sites that
// provably cannot panic carry a local, commented `allow`.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]

// The test helpers in `tests/support/` are shared with the unit tests, and name the crate.
#[cfg(test)]
extern crate self as vassal_serf;

pub mod clock;
pub mod coalesce;
pub mod coordinate;
pub mod filter;
pub mod fuzzing;
pub mod keys;
mod member;
pub mod messages;
mod serf;
pub mod snapshot;
pub mod tags;

pub use filter::EventFilter;
pub use member::{Member, MemberEvent, MemberEventKind, MemberStatus};
pub use messages::{SerfMessage, UserEvent};
pub use serf::{
    Config, Event, ForceLeaveError, Outcome, Query, QueryError, QueryParams, RespondError, Serf,
    SerfStats, UserEventError, EVENT_BUFFER_SIZE, INTERNAL_QUERY_PREFIX, PING_QUERY,
    USER_EVENT_SIZE_HARD_LIMIT,
};

/// The oldest Serf protocol version we speak (protocol versions: spec §2.12).
pub const PROTOCOL_MIN: u8 = 2;
/// The newest Serf protocol version we speak.
pub const PROTOCOL_MAX: u8 = 5;
/// The Serf protocol version the agent speaks unless told otherwise.
pub const PROTOCOL_DEFAULT: u8 = 5;
