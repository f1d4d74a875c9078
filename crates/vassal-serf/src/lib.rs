//! The Serf layer (spec §4) over [`vassal_memberlist`]: member status with join/leave intents and
//! Lamport clocks, tags in the node metadata, a graceful leave, and the snapshot file's records.
//! Pure and deterministic like the layer below: `handle_*` in, `poll_*` out, time as an argument.

// No panic reachable from the network (issue 11): the release profile aborts on panic, so one
// crafted message must not be able to overflow, index out of bounds or unwrap. Sites that
// provably cannot panic carry a local, commented `allow`.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]

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
    Config, Event, ForceLeaveError, Query, QueryError, QueryParams, RespondError, Serf, SerfStats,
    UserEventError, EVENT_BUFFER_SIZE, INTERNAL_QUERY_PREFIX, PING_QUERY,
    USER_EVENT_SIZE_HARD_LIMIT,
};

/// Serf protocol versions this implementation speaks: min, max, and the agent default.
pub const PROTOCOL_MIN: u8 = 2;
pub const PROTOCOL_MAX: u8 = 5;
pub const PROTOCOL_DEFAULT: u8 = 5;
