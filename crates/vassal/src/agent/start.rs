//! Starting the agent on its node: the RPC listener, Serf's banner, then the tasks beside the
//! node (handlers, templates, mDNS discovery, the demo roles, the first join, the HAProxy sync and
//! retry-join), in the order Serf's agent starts them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use vassal_node::{Handle, NodeConfig};
use vassal_rpc::{LogHub, ServerConfig};

use super::events::{coalesced_events, handler_stats, start_handlers, start_haproxy};
use super::options::AgentOptions;
use crate::handlers::{DispatchStats, HandlerSpec, SelfInfo};

/// A started agent: its node and what the signal loop watches and drives.
pub(super) struct Agent {
    pub(super) handle: Handle,
    /// The node's driver task; it ends only if the node stops.
    pub(super) task: JoinHandle<()>,
    /// Notified once an RPC client's `leave` has finished.
    pub(super) left: Arc<Notify>,
    /// Sent to when retry-join gives up; closed when it joined (or never ran).
    pub(super) gave_up: oneshot::Receiver<()>,
    /// The event handlers and our own name and tags, as the dispatcher sees them.
    pub(super) scripts_tx: watch::Sender<(Vec<HandlerSpec>, SelfInfo)>,
    pub(super) handler_stats: Arc<DispatchStats>,
    pub(super) roles: vassal_roles::Roles,
    /// Template mode's task, if templates were given (at start or by a SIGHUP since).
    pub(super) templates: Option<crate::template::Templates>,
    /// mDNS discovery, running while this is held.
    pub(super) _discovery: Option<crate::discover::Discovery>,
}

/// Serf's agent start: spawns the node, binds RPC and prints the banner, then starts the tasks
/// beside it. A failure shuts down what had started and says why.
pub(super) async fn start(
    opts: &AgentOptions,
    config: NodeConfig,
    logs: LogHub,
    templates: Option<crate::template::Engine>,
) -> Result<Agent, String> {
    println!("==> Starting Serf agent...");
    // Serf's `Agent.Start` logs this before creating Serf: the first line a `monitor` client
    // is sent (unless a tags or keyring file was restored just before).
    info!("agent: Serf agent starting");
    // Events from the very start, so handlers see our own member-join too.
    let (handle, events, task) = vassal_node::spawn_with_events(config)
        .await
        .map_err(|e| e.to_string())?;
    // Serf's agent event channel: coalesced, shared by handlers and RPC streams.
    let agent_events = coalesced_events(events);
    let handler_events = agent_events.subscribe();
    let rpc_listener = match tokio::net::TcpListener::bind(&opts.rpc_addr).await {
        Ok(l) => l,
        Err(e) => {
            handle.shutdown().await;
            return Err(format!(
                "Error starting RPC listener: listen tcp {}: bind: {} \
                 (is another agent running? pass -rpc-addr to choose another address)",
                opts.rpc_addr,
                vassal_node::io_reason(&e)
            ));
        }
    };
    println!("==> Starting Serf agent RPC...");
    let left = Arc::new(Notify::new());
    tokio::spawn(vassal_rpc::serve(
        rpc_listener,
        handle.clone(),
        ServerConfig {
            auth_key: opts.rpc_auth.clone(),
            logs,
            events: agent_events.clone(),
            event_handlers: handler_stats(&opts.event_handlers),
            left: left.clone(),
        },
    ));
    println!("==> Serf agent running!");
    println!("         Node name: '{}'", opts.node);
    println!("         Bind addr: '{}'", handle.local_addr());
    println!("    Advertise addr: '{}'", handle.advertise_addr());
    println!("          RPC addr: '{}'", opts.rpc_addr);
    println!("         Encrypted: {}", opts.keyring.is_some());
    println!("          Snapshot: {}", opts.snapshot.is_some());
    println!("           Profile: {}", opts.profile);
    println!();
    println!("==> Log data will now stream in as it occurs:");
    println!();

    let (scripts_tx, handler_stats) = start_handlers(opts, &handle, handler_events);
    // Before the first join, so that its member events are seen.
    let templates = templates.map(|engine| {
        crate::template::spawn(
            handle.clone(),
            engine,
            opts.templates.clone(),
            opts.node.clone(),
            opts.template_wait,
        )
    });

    let _discovery = match &opts.discover {
        None => None,
        Some(d) => Some(crate::discover::start(
            crate::discover::Settings {
                cluster: d.cluster.clone(),
                node: opts.node.clone(),
                addr: handle.advertise_addr(),
                iface: d.iface.clone(),
                disable_ipv4: d.disable_ipv4,
                disable_ipv6: d.disable_ipv6,
                replay: opts.replay,
            },
            handle.clone(),
        )?),
    };

    // Built-in demo roles: listening before the first join, so the balancer sees the web nodes
    // that are already there and a web node can be checked as soon as it is known.
    let roles = match vassal_roles::start(&handle, opts.roles.clone()).await {
        Ok(r) => r,
        Err(e) => {
            handle.shutdown().await;
            return Err(e.to_string());
        }
    };

    if !opts.join.is_empty() {
        // Serf's `startupJoin` says these to the terminal, not the log (retry-join logs them).
        println!("==> Joining cluster...(replay: {})", opts.replay);
        match join(&handle, &opts.join, opts.replay).await {
            Ok(n) => println!("    Join completed. Synced with {n} initial agents"),
            Err(e) => {
                roles.stop().await;
                handle.shutdown().await;
                return Err(e);
            }
        }
    }

    // After the initial join, so that the start-up reconcile already knows the web members.
    start_haproxy(opts, &handle);

    let (gave_up_tx, gave_up) = oneshot::channel();
    if !opts.retry_join.is_empty() {
        tokio::spawn(retry_join(
            handle.clone(),
            opts.retry_join.clone(),
            opts.retry_interval,
            opts.retry_max,
            opts.replay,
            gave_up_tx,
        ));
    }

    Ok(Agent {
        handle,
        task,
        left,
        gave_up,
        scripts_tx,
        handler_stats,
        roles,
        templates,
        _discovery,
    })
}

/// Resolves a join list: the addresses, warning about entries that did not resolve, or every
/// entry's error when none did (Serf's join error).
async fn resolve_all(list: &[String]) -> Result<Vec<SocketAddr>, Vec<String>> {
    let (addrs, errors) = vassal_node::addr::resolve_all(list).await;
    if addrs.is_empty() && !errors.is_empty() {
        return Err(errors);
    }
    for e in errors {
        warn!("{e}");
    }
    Ok(addrs)
}

/// Serf's `Agent.Join`: joins `list`, logging it as Serf does; the number of nodes synced
/// with, or Serf's multi-error text.
async fn join(handle: &Handle, list: &[String], replay: bool) -> Result<usize, String> {
    info!("agent: joining: [{}] replay: {replay}", list.join(" "));
    let result = match resolve_all(list).await {
        Ok(addrs) => handle.join(addrs, replay).await.map_err(|e| e.to_string()),
        Err(errors) => Err(vassal_node::JoinError { errors }.to_string()),
    };
    match &result {
        Ok(n) => info!("agent: joined: {n} nodes"),
        Err(e) => warn!("agent: error joining: {e}"),
    }
    result
}

/// Serf's `retryJoin`: try every `interval` until a join works or `max` attempts failed.
async fn retry_join(
    handle: Handle,
    list: Vec<String>,
    interval: Duration,
    max: u32,
    replay: bool,
    gave_up: oneshot::Sender<()>,
) {
    info!("agent: Joining cluster...(replay: {replay})");
    let mut attempt = 0u32;
    loop {
        match join(&handle, &list, replay).await {
            Ok(n) => {
                info!("agent: Join completed. Synced with {n} initial agents");
                return;
            }
            Err(e) => {
                attempt += 1;
                // As in Serf: `-retry-max N` allows N retries after the first attempt.
                if max > 0 && attempt > max {
                    error!("agent: maximum retry join attempts made, exiting");
                    let _ = gave_up.send(());
                    return;
                }
                warn!("agent: Join failed: {e}, retrying in {interval:?}");
            }
        }
        tokio::time::sleep(interval).await;
    }
}
