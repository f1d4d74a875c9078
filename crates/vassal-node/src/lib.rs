//! The tokio shell around the pure [`vassal_serf::Serf`] state machine: one driver task owns it
//! and does all its IO (UDP gossip, TCP streams, timers); everyone else talks to it through a
//! cloneable [`Handle`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use vassal_node::{spawn, NodeConfig};
//! let ml = vassal_memberlist::Config::local("n1");
//! let config = NodeConfig::new(vassal_serf::Config::new(ml), "127.0.0.1:0".parse()?);
//! let (handle, _task) = spawn(config).await?;
//! handle.join(vec!["127.0.0.1:7946".parse()?], false).await?;
//! handle.user_event("deploy", b"v1", false).await?;
//! for m in handle.members().await? {
//!     println!("{} {} {}", m.name, m.addr, m.status);
//! }
//! handle.leave().await?;
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub mod addr;
mod driver;
pub mod files;
mod handle;
mod snapshot;
mod stream;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use driver::{sleep_until, spawn, spawn_with_events};
pub use files::FileError;
pub use handle::{Handle, JoinError, KeyOutcome, NodeError, NodeStats, QueryReply, QueryResponse};
pub use stream::io_reason;
pub use transport::{AcceptBackoff, StartError, Throttle, ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};

/// What the shell needs besides the state machine's own config.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The state machine's settings. `memberlist.advertise` and `memberlist.bind_port` are
    /// overwritten by [`spawn`] from `bind`/`advertise` once the sockets are bound.
    pub serf: vassal_serf::Config,
    /// Where UDP and TCP listen (same address and port). Port 0 picks a free port for both.
    pub bind: SocketAddr,
    /// Address peers should use to reach us. `None`: the bind address, or, when that is
    /// unspecified (`0.0.0.0`), the address of the interface that routes outward.
    /// A port of 0 means "the bound port".
    pub advertise: Option<SocketAddr>,
    /// Serf's snapshot file (spec §5.3): replayed at start (clocks, and the members to rejoin),
    /// then recorded to. `serf.snapshot` is filled in from it by [`spawn`].
    pub snapshot_path: Option<PathBuf>,
    /// Keep the snapshot's members across a graceful leave (agent `-rejoin`).
    pub rejoin_after_leave: bool,
    /// Rewritten with the new tags on every [`Handle::set_tags`] (agent `-tags-file`); the
    /// caller loads it at start ([`files::load_tags`]).
    pub tags_file: Option<PathBuf>,
    /// Rewritten whenever a key query changes the keyring (agent `-keyring-file`); the caller
    /// loads it at start ([`files::load_keyring`]).
    pub keyring_file: Option<PathBuf>,
}

impl NodeConfig {
    pub fn new(serf: vassal_serf::Config, bind: SocketAddr) -> Self {
        NodeConfig {
            serf,
            bind,
            advertise: None,
            snapshot_path: None,
            rejoin_after_leave: false,
            tags_file: None,
            keyring_file: None,
        }
    }
}
