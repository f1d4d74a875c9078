//! The sync's tokio side: feeds the node's member events to [`BackendSync`] and carries out
//! its outputs over the runtime API, one at a time, logging every command it sends.

use std::path::PathBuf;

use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};
use vassal_node::Handle;
use vassal_serf::Event;

use super::runtime_api::{ApiError, RuntimeApi};
use super::sync::{BackendSync, Output, RunError, SyncConfig};

/// Keeps HAProxy's backend `config.backend`, reached through the admin socket at `socket`, in
/// step with `node`'s web members, until the node stops. Errors are logged and retried; this
/// never gives up while the node runs.
pub async fn run(node: Handle, socket: PathBuf, config: SyncConfig) {
    let api = RuntimeApi::new(socket);
    // Subscribe before listing, so that no change falls between the list and the events.
    let mut events = node.events();
    let mut sync = BackendSync::new(config, now());
    match node.members().await {
        Ok(members) => sync.handle_members(&members, now()),
        Err(_) => return,
    }
    info!(
        "syncing HAProxy backend {:?} through {} (quiescence {:?})",
        sync.config().backend,
        api.path().display(),
        sync.config().quiesce
    );
    loop {
        sync.handle_timeout(now());
        carry_out(&mut sync, &api).await;
        let due = vassal_node::sleep_until(sync.poll_timeout());
        tokio::select! {
            e = events.recv() => match e.as_deref() {
                Ok(Event::Member(e)) => sync.handle_member_event(e, now()),
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    warn!("missed {n} node events; re-reading the member list");
                    match node.members().await {
                        Ok(members) => sync.handle_members(&members, now()),
                        Err(_) => return,
                    }
                }
                Err(RecvError::Closed) => return,
            },
            () = due => {}
        }
    }
}

/// Does everything the sync asks for until it waits on time or events.
async fn carry_out(sync: &mut BackendSync, api: &RuntimeApi) {
    let backend = sync.config().backend.clone();
    while let Some(out) = sync.poll_output() {
        match out {
            Output::ReadServers => {
                let r = api.servers_state(&backend).await;
                if let Ok(servers) = &r {
                    // In rotation: neither in maintenance nor draining (the admin state alone;
                    // HAProxy's own health checks are its business).
                    let ready = servers.iter().filter(|s| s.admin == 0).count();
                    metrics::gauge!("vassal.haproxy.servers").set(servers.len() as f64);
                    metrics::gauge!("vassal.haproxy.in_rotation").set(ready as f64);
                }
                sync.handle_servers(now(), r.map_err(log_error));
            }
            Output::ReadSessions => {
                let r = api.sessions(&backend).await;
                sync.handle_sessions(now(), r.map_err(log_error));
            }
            Output::Run(commands) => {
                let mut result = Ok(());
                for command in commands {
                    match api.run(&command).await {
                        Ok(()) => {
                            metrics::counter!("vassal.haproxy.commands").increment(1);
                            info!("{command}");
                        }
                        Err(e) => {
                            // HAProxy understood and said no, as against a socket that failed.
                            if matches!(e, ApiError::Refused { .. }) {
                                metrics::counter!("vassal.haproxy.refusals").increment(1);
                            } else {
                                metrics::counter!("vassal.haproxy.errors").increment(1);
                            }
                            let message = log_error(e);
                            result = Err(RunError { command, message });
                            break;
                        }
                    }
                }
                sync.handle_ran(now(), result);
            }
            Output::Warn(w) => warn!("{w}"),
        }
    }
}

fn log_error(e: ApiError) -> String {
    let message = e.to_string();
    warn!("{message}; will retry");
    message
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}
