//! Keeps an HAProxy backend in step with the cluster through HAProxy's runtime API: web
//! members become servers (`add server`), graceful leaves drain before they are removed, and
//! failures are removed at once, all without reloading HAProxy.
//!
//! - [`sync`]: the pure state machine that decides the commands (time is an argument);
//! - [`command`] and [`state`]: the commands as HAProxy spells them and its replies parsed;
//! - [`runtime_api`]: the async client for the admin socket;
//! - [`run`]: the task `vassal agent -haproxy-socket` starts, joining the three.
//!
//! ```no_run
//! # async fn demo(handle: vassal_node::Handle) {
//! use vassal_roles::haproxy::{run, SyncConfig};
//! tokio::spawn(run(handle, "/run/haproxy/admin.sock".into(), SyncConfig::new("web")));
//! # }
//! ```

pub mod command;
pub mod runtime_api;
mod shell;
pub mod state;
pub mod sync;

pub use shell::run;
pub use sync::{BackendSync, Output, SyncConfig};
