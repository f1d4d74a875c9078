//! Template mode, in the spirit of consul-template (issue 15): `-template SRC:DEST[:COMMAND]`
//! renders a Jinja template (through `minijinja`) over the live membership into DEST whenever
//! the text changes, then runs COMMAND, e.g. `nginx -s reload`.
//!
//! - [`spec`] parses the flag's `SRC:DEST[:COMMAND]` and the config file's objects;
//! - [`render`] is pure: the engine with its limits and helper filters, the start-time checks
//!   (syntax, unknown filters and tests, unknown variables: refused with the line and a hint)
//!   and the context (`members`, `self`) built from the node's member list;
//! - [`watch`] is the task beside the node: it watches membership, waits for quiet, renders,
//!   writes DEST atomically when the text changed, and runs the command through the handler
//!   runner (`handlers::runner::run`, with its timeout and process-group kill); a SIGHUP
//!   hands it the templates read and checked again ([`Templates::reload`]).
//!
//! Nothing is rendered until this agent sees at least one other member alive (it joined, or
//! was joined): a proxy is never handed the empty list of a node that is still alone.

pub mod render;
pub mod spec;
pub mod watch;

pub use render::Engine;
pub use spec::TemplateSpec;
pub use watch::{spawn, Templates};

use std::time::Duration;

/// `-template-wait`: membership must have been quiet this long before a render.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);
/// A burst of changes renders after at most this many waits, however busy membership stays.
pub const MAX_WAIT_FACTOR: u32 = 4;
/// `command_timeout`: a template's command is killed, with its process group, after this.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
