//! `vassal agent`: parse Serf's agent flags, start a node, join, log membership, and shut down on
//! signals the way Serf does (spec §5.1, §5.5, §5.6).
//!
//! The flow, one module a step: `options` checks the flags and config files and turns them
//! into the node's config; `start` binds RPC, prints Serf's banner and spawns the tasks beside
//! the node (template mode among them, `crate::template`); `events` fans the node's events out to the handlers, RPC streams and the HAProxy
//! sync; `signals` waits for SIGINT/SIGTERM/SIGHUP/SIGUSR1 (or an RPC leave) and says how the
//! agent exits.

mod events;
mod options;
mod signals;
mod start;

use std::process::ExitCode;

use tracing::{info, warn};
use vassal_rpc::LogHub;

use crate::logging;

pub use options::{flags, options, AgentOptions};

pub async fn run(opts: AgentOptions) -> ExitCode {
    let logs = LogHub::new();
    let settings = logging::LogSettings {
        level: opts.log_level,
        json: opts.log_json,
        syslog: opts.syslog,
    };
    let level = match logging::init(settings, logs.clone()) {
        Ok(level) => level,
        Err(msg) => {
            eprintln!("==> {msg}");
            return ExitCode::FAILURE;
        }
    };
    match run_until_exit(opts, logs, level).await {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the agent, waits for the signal (or RPC leave) that ends it, and stops it: the exit
/// status, or why it could not start.
async fn run_until_exit(
    mut opts: AgentOptions,
    logs: LogHub,
    level: logging::LevelControl,
) -> Result<ExitCode, String> {
    for key in &opts.file_only.ignored {
        warn!("agent: config key {key:?} is not supported by vassal and is ignored");
    }
    if opts.rejoin && opts.snapshot.is_none() {
        println!("Warning: 'RejoinAfterLeave' enabled without snapshot file");
    }
    options::load_files(&mut opts)?;
    // Before anything starts: a bad template is refused with its line and a hint.
    let templates = match opts.templates.is_empty() {
        true => None,
        false => Some(crate::template::Engine::load(&opts.templates).map_err(|e| e.to_string())?),
    };
    let config = options::node_config(&opts).await?;
    // Before the node starts, so its first joins are counted.
    let telemetry = crate::telemetry::Telemetry::start(&opts.metrics).await?;
    let mut agent = start::start(&opts, config, logs, templates).await?;
    telemetry.spawn_figures(agent.handle.clone(), agent.handler_stats.clone());
    let code = signals::wait(&opts, &level, &mut agent, &telemetry).await?;
    // After the leave: the balancer has stopped sending here, so open requests can finish.
    agent.roles.stop().await;
    info!("agent: requesting serf shutdown");
    agent.handle.shutdown().await;
    info!("agent: shutdown complete");
    Ok(code)
}
