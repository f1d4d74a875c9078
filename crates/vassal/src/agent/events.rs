//! The agent's event fan-out: the node's events, coalesced as Serf's agent does, to the event
//! handlers and RPC streams, and raw member events to the HAProxy sync.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tracing::{info, warn};
use vassal_node::Handle;
use vassal_roles::backend;
use vassal_serf::coalesce::Coalescer;

use super::options::AgentOptions;
use crate::handlers::{spawn_dispatcher, DispatchConfig, DispatchStats, HandlerSpec, SelfInfo};

/// Starts feeding the agent's events to the handler dispatcher: the sender that swaps the
/// handlers (on SIGHUP) and the dispatcher's figures (for SIGUSR1).
pub(super) fn start_handlers(
    opts: &AgentOptions,
    handle: &Handle,
    handler_events: broadcast::Receiver<Arc<vassal_serf::Event>>,
) -> (
    watch::Sender<(Vec<HandlerSpec>, SelfInfo)>,
    Arc<DispatchStats>,
) {
    // Always fed, even with no handlers yet: a SIGHUP may add some.
    let me = SelfInfo {
        name: opts.node.clone(),
        tags: opts.tags.clone(),
    };
    let (scripts_tx, scripts) = watch::channel((opts.event_handlers.clone(), me));
    let dispatch = DispatchConfig {
        timeout: opts.handler_timeout,
        ..DispatchConfig::default()
    };
    let handler_stats = Arc::new(DispatchStats::default());
    tokio::spawn(feed_handlers(
        handler_events,
        scripts_tx.clone(),
        scripts,
        handle.clone(),
        dispatch,
        handler_stats.clone(),
    ));
    (scripts_tx, handler_stats)
}

/// `-haproxy-socket`: starts the HAProxy runtime-API sync on the node's member events. Called
/// after the initial join, so that the start-up reconcile already knows the web members.
pub(super) fn start_haproxy(opts: &AgentOptions, handle: &Handle) {
    if let Some((socket, config)) = &opts.haproxy {
        let mut config = config.clone();
        // HAProxy's own listener is unknown to us: loopback servers are allowed when this
        // cluster lives on loopback (one host, as in the tests), or when named by a range.
        config.backends = backend::BackendPolicy {
            allow_loopback: handle.advertise_addr().ip().to_canonical().is_loopback(),
            cidrs: opts.roles.lb_backend_cidrs.clone(),
        };
        tokio::spawn(vassal_roles::haproxy::run(
            handle.clone(),
            socket.clone(),
            config,
        ));
    }
}

/// Serf's agent event channel: the node's events with member events, and user events sent
/// with coalescing, held for up to 3 s (or 1 s of quiet) and passed on as fewer events. Event
/// handlers and RPC streams subscribe to the returned sender.
pub(super) fn coalesced_events(
    mut events: broadcast::Receiver<Arc<vassal_serf::Event>>,
) -> broadcast::Sender<Arc<vassal_serf::Event>> {
    let (tx, _) = broadcast::channel(1024);
    let out = tx.clone();
    tokio::spawn(async move {
        let mut coalescer = Coalescer::new(Duration::from_secs(3), Duration::from_secs(1));
        let mut closed = false;
        loop {
            let flush_due = vassal_node::sleep_until(coalescer.poll_timeout());
            tokio::select! {
                e = events.recv() => match e {
                    Ok(e) => coalescer.push(Arc::unwrap_or_clone(e), Instant::now()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!("agent: event subscribers missed {n} events");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        coalescer.flush();
                        closed = true;
                    }
                },
                () = flush_due => coalescer.handle_timeout(Instant::now()),
            }
            for e in coalescer.drain() {
                info!("agent: Received event: {}", go_event_text(&e));
                // No subscriber is fine.
                let _ = out.send(Arc::new(e));
            }
            if closed {
                return;
            }
        }
    });
    tx
}

/// What Go's `Event.String()` says of an event: `member-join`, `user-event: NAME`,
/// `query: NAME`.
fn go_event_text(e: &vassal_serf::Event) -> String {
    match e {
        vassal_serf::Event::Member(m) => m.kind.to_string(),
        vassal_serf::Event::User(u) => format!("user-event: {}", u.name),
        vassal_serf::Event::Query(q) => format!("query: {}", q.name),
    }
}

/// Forwards the agent's (coalesced) events to the handler dispatcher. This only queues (the
/// dispatcher bounds its own queue, dropping the oldest), so it keeps up and never blocks the
/// node.
async fn feed_handlers(
    mut events: broadcast::Receiver<Arc<vassal_serf::Event>>,
    scripts_tx: watch::Sender<(Vec<HandlerSpec>, SelfInfo)>,
    scripts: watch::Receiver<(Vec<HandlerSpec>, SelfInfo)>,
    node: Handle,
    config: DispatchConfig,
    stats: Arc<DispatchStats>,
) {
    let (tx, _task) = spawn_dispatcher(scripts, Some(node), config, stats);
    loop {
        match events.recv().await {
            Ok(e) => {
                // Our own tags as they are now (`SERF_TAG_*`), after `vassal tags` or a reload.
                if let vassal_serf::Event::Member(m) = &*e {
                    scripts_tx.send_if_modified(|(_, me)| {
                        match m.members.iter().find(|x| x.name == me.name) {
                            Some(x) if x.tags != me.tags => {
                                me.tags = x.tags.clone();
                                true
                            }
                            _ => false,
                        }
                    });
                }
                if tx.send(e).is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("agent: event handlers missed {n} events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Serf's `event_handlers` statistics: `"<event>:<name>"` → script, one per filter.
pub(super) fn handler_stats(handlers: &[HandlerSpec]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for h in handlers {
        for f in &h.filters {
            // Serf's key is the filter's `Event` and `Name` fields, so `user:` for any name.
            out.insert(format!("{}:{}", f.event(), f.name()), h.script.clone());
        }
    }
    out
}
