//! The agent's signal loop, Serf's `handleSignals`: SIGINT and SIGTERM leave (or not) and end
//! the agent, SIGHUP reloads the config, SIGUSR1 prints the metrics; an RPC `leave`, a
//! retry-join that gave up, or a stopped node end it too.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};
use vassal_node::Handle;

use super::options::{options, AgentOptions};
use super::start::Agent;
use crate::handlers::{DispatchStats, HandlerSpec, SelfInfo};
use crate::logging;
use crate::telemetry::{Figures, Telemetry};

/// How long a graceful leave may take before we exit anyway (Serf's `gracefulTimeout`).
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(3);

/// Waits for what ends the agent, handling SIGHUP and SIGUSR1 meanwhile: the exit status
/// (after a graceful leave where Serf leaves).
pub(super) async fn wait(
    opts: &AgentOptions,
    level: &logging::LevelControl,
    agent: &mut Agent,
    telemetry: &Telemetry,
) -> Result<ExitCode, String> {
    let Agent {
        handle,
        task,
        left,
        gave_up,
        scripts_tx,
        handler_stats,
        roles,
        templates,
        ..
    } = agent;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    // Serf dumps its metrics on SIGUSR1; without a handler the signal would kill us.
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    let mut retry_running = true;
    let mut tags = opts.tags.clone();
    let code = loop {
        tokio::select! {
            // Serf's handleSignals: SIGINT leaves unless skip_leave_on_interrupt, SIGTERM
            // only with leave_on_terminate; not leaving is exit status 1.
            _ = sigint.recv() => {
                println!("==> Caught signal: interrupt");
                if opts.file_only.skip_leave_on_interrupt {
                    break ExitCode::FAILURE;
                }
                break graceful_leave(handle, &mut sigint).await;
            }
            _ = sigterm.recv() => {
                println!("==> Caught signal: terminated");
                if !opts.file_only.leave_on_terminate {
                    break ExitCode::FAILURE;
                }
                break graceful_leave(handle, &mut sigterm).await;
            }
            _ = sighup.recv() => {
                println!("==> Caught signal: hangup");
                if let Some(new) = reload(opts, level, scripts_tx, handle, &mut tags).await {
                    reload_templates(&new, &opts.node, handle, templates);
                }
                reload_tls(roles);
            }
            _ = sigusr1.recv() => telemetry_dump(handle, handler_stats, telemetry).await,
            r = &mut *gave_up, if retry_running => match r {
                Ok(()) => break ExitCode::FAILURE,
                Err(_) => retry_running = false,
            },
            // An RPC client's `leave` finished: Serf's agent then shuts down, status 0.
            () = left.notified() => break ExitCode::SUCCESS,
            _ = &mut *task => {
                warn!("agent: Serf shutdown detected, quitting");
                break ExitCode::FAILURE;
            }
        }
    };
    Ok(code)
}

/// Reads the balancer's certificate and key again: new connections get the new pair, the
/// open ones keep theirs; a bad file keeps the old pair and says why.
fn reload_tls(roles: &vassal_roles::Roles) {
    match roles.reload_tls() {
        None => {}
        Some(Ok(files)) => info!(
            "lb: Reloaded the TLS certificate from {} and {}; new connections use it",
            files.cert.display(),
            files.key.display()
        ),
        Some(Err(e)) => error!("lb: TLS certificate not reloaded, still serving the old one: {e}"),
    }
}

/// Serf's `handleReload`: read the same flags and files again, then apply what Serf applies
/// while running (the log level, the event handlers, the tags); the options read, for what
/// Vassal reloads besides. A bad file keeps the old settings and says why.
async fn reload(
    opts: &AgentOptions,
    level: &logging::LevelControl,
    scripts: &watch::Sender<(Vec<HandlerSpec>, SelfInfo)>,
    handle: &Handle,
    tags: &mut BTreeMap<String, String>,
) -> Option<AgentOptions> {
    println!("==> Reloading configuration...");
    let new = match options(&opts.args) {
        Ok(new) => new,
        Err(e) => {
            error!("agent: Failed to reload configs: {e}");
            return None;
        }
    };
    level.set(new.log_level);
    scripts.send_modify(|(handlers, _)| *handlers = new.event_handlers.clone());
    info!(
        "agent: Reloaded configuration: {} event handler(s)",
        new.event_handlers.len()
    );
    // With a tags file, the file (kept by the agent) is the source of truth, as in Serf.
    if opts.tags_file.is_none() && new.tags != *tags {
        match handle.set_tags(new.tags.clone()).await {
            Ok(()) => *tags = new.tags.clone(),
            Err(e) => error!("agent: Failed to update tags: {e}"),
        }
    }
    Some(new)
}

/// Reads the templates again (sources included) and checks them as at start: the running
/// task takes them if all are good, and keeps rendering the old ones if any is not. Templates
/// given for the first time start the task; `local` is the running node's name.
fn reload_templates(
    new: &AgentOptions,
    local: &str,
    handle: &Handle,
    running: &mut Option<crate::template::Templates>,
) {
    if new.templates.is_empty() && running.is_none() {
        return;
    }
    let engine = match crate::template::Engine::load(&new.templates) {
        Ok(engine) => engine,
        Err(e) => {
            metrics::counter!("vassal.template.reload_failed").increment(1);
            error!("agent: template: not reloaded, still rendering the previous templates: {e}");
            return;
        }
    };
    match running {
        Some(t) => t.reload(engine, new.templates.clone(), new.template_wait),
        None => {
            *running = Some(crate::template::spawn(
                handle.clone(),
                engine,
                new.templates.clone(),
                local.to_owned(),
                new.template_wait,
            ));
        }
    }
}

/// What SIGUSR1 prints, as go-metrics' `InmemSignal` does (to stderr): the in-memory sink's
/// last minute, then the node's and the handler dispatcher's own figures as gauges.
async fn telemetry_dump(handle: &Handle, handlers: &DispatchStats, telemetry: &Telemetry) {
    use std::io::Write;
    match Figures::read(handle, handlers).await {
        Ok(figures) => {
            let dump = telemetry.dump(&figures);
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(dump.as_bytes());
            let _ = err.flush();
        }
        Err(e) => warn!("agent: SIGUSR1: the node did not answer: {e}"),
    }
}

/// Serf's `handleSignals` for a graceful leave: 0 once it completes; 1 on timeout or a second
/// signal.
async fn graceful_leave(handle: &Handle, sigint: &mut tokio::signal::unix::Signal) -> ExitCode {
    println!("==> Gracefully shutting down agent...");
    tokio::select! {
        r = handle.leave() => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::time::sleep(GRACEFUL_TIMEOUT) => {
            warn!("graceful leave did not finish in {GRACEFUL_TIMEOUT:?}; exiting");
            ExitCode::FAILURE
        }
        _ = sigint.recv() => ExitCode::FAILURE,
    }
}
