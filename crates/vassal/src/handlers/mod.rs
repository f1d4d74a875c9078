//! Event handlers (spec §5.2): `-event-handler` scripts run for matching events.
//!
//! - [`spec`] parses `[FILTERS=]script` and decides which events a handler wants;
//! - [`invocation`] turns an event into pure data (environment and stdin) for one run;
//! - [`runner`] is the only code that starts a process, and [`runner::spawn_dispatcher`] runs
//!   handlers one at a time, in event order, off the node's driver (spec §5.1).

pub mod invocation;
pub mod runner;
pub mod spec;

pub use invocation::SelfInfo;
pub use runner::{spawn_dispatcher, DispatchConfig, DispatchStats};
pub use spec::HandlerSpec;
