//! Test support for Vassal: deadline-bounded waits, free loopback addresses, and process
//! harnesses for the real Go Serf agent ([`GoSerf`]), our own binary ([`VassalAgent`]), the
//! real HAProxy ([`Haproxy`]), the real nginx ([`Nginx`]), a tiny web backend ([`WebServer`]) and bounded load ([`Wrk`]).
//!
//! House rules this crate enforces (STYLE.md item 11, spec §8):
//! - tests wait on conditions with deadlines ([`wait_until`]), never on bare sleeps;
//! - traffic stays on 127.0.0.0/8, on a fresh address per [`Loopback`] so parallel tests and
//!   other agents on the machine do not collide;
//! - only processes we spawned are signalled, by PID, and every one is killed and reaped on drop.

mod agent;
pub mod fakenode;
mod go_serf;
mod haproxy;
mod http;
mod mixed;
mod net;
mod nginx;
mod process;
mod prometheus;
mod vassal;
mod wait;
mod web;
mod wrk;

pub use agent::{Agent, AgentBuilder};
pub use go_serf::{GoSerf, GoSerfBuilder, GoSerfKind, Member, SERF_BIN};
pub use haproxy::{admin_command, haproxy_bin, Haproxy, HaproxyServer};
pub use http::{http_get, http_get_ok, HttpResponse};
pub use mixed::{go_then_vassal, CliMatrix, QueryAnswerer};
pub use net::Loopback;
pub use nginx::{nginx_bin, Nginx};
pub use process::{run_cli, run_with_timeout, CliRun};
pub use prometheus::{
    prometheus_bin, promtool_bin, promtool_check_metrics, PromSample, Prometheus,
};
pub use vassal::{
    member_event_needles, serf_cli, vassal_bin, vassal_cli, VassalAgent, VassalAgentBuilder,
    VassalKind, CLI_DEADLINE,
};
pub use wait::{hold_for, wait_until, POLL_INTERVAL};
pub use web::WebServer;
pub use wrk::{wrk_bin, Wrk, WrkReport};
