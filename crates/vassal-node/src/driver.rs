//! The driver task: owns the [`Serf`] state machine by value and is its only caller.
//!
//! Each loop turn waits for one input (a datagram, an accepted connection, a stream task's
//! report, a handle's command, or the state machine's next timer), reads the clock once, feeds the
//! input in, then drains `poll_transmit` (datagrams go out of the bound gossip socket; streams get
//! a task each), `poll_event` (logged, answered to waiting handles, broadcast to subscribers) and
//! `poll_snapshot_write` (handed to the snapshot file's writer thread).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use vassal_memberlist::{JoinId, Transmit};
use vassal_serf::{Event, Outcome, Serf};

use vassal_serf::keys::{self, KeyReport};
use vassal_serf::{ForceLeaveError, MemberStatus};

use crate::files;
use crate::handle::{
    Command, Handle, JoinError, KeyOutcome, NodeError, NodeStats, QueryReply, QueryResponse,
};
use crate::snapshot::{self, SnapshotWriter};
use crate::stream::{self, Framing, StreamInput};
use crate::transport::{self, AcceptBackoff, StartError};
use crate::NodeConfig;

/// memberlist's UDP read buffer (spec §2.1).
const UDP_READ_BUF: usize = 65536;
/// Datagrams handled per turn of the driver loop before it sends and polls again.
const PACKETS_PER_TURN: usize = 32;

/// Binds the sockets, builds the state machine and starts the driver task.
pub async fn spawn(config: NodeConfig) -> Result<(Handle, JoinHandle<()>), StartError> {
    let (handle, _events, task) = spawn_with_events(config).await?;
    Ok((handle, task))
}

/// Like [`spawn`], plus a receiver of every event from the very start, our own `member-join`
/// included (one subscribed through [`Handle::events`] after `spawn` returns may miss it).
pub async fn spawn_with_events(
    config: NodeConfig,
) -> Result<(Handle, broadcast::Receiver<Arc<Event>>, JoinHandle<()>), StartError> {
    let (udp, tcp) = transport::bind(config.bind)?;
    let bound = udp.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind,
        source,
    })?;
    let advertise = transport::advertise_addr(config.advertise, bound)?;
    let mut serf_config = config.serf;
    serf_config.memberlist.bind_port = bound.port();
    serf_config.memberlist.advertise = advertise;
    let snapshot = match &config.snapshot_path {
        Some(path) => {
            let (snap, writer) = snapshot::open(path, config.rejoin_after_leave)?;
            serf_config.snapshot = Some(snap);
            Some(writer)
        }
        None => None,
    };
    let serf = Serf::new(serf_config, Instant::now())?;
    debug!(
        node = %serf.local_name(),
        bind = %bound,
        advertise = %advertise,
        "serf agent started"
    );

    let (commands_tx, commands) = mpsc::channel(64);
    let (events, first_events) = broadcast::channel(1024);
    let (streams_tx, streams) = mpsc::channel(256);
    let driver = Driver {
        serf,
        udp,
        tcp,
        commands,
        streams,
        streams_tx,
        events: events.clone(),
        joins: HashMap::new(),
        leaving: Vec::new(),
        force_leaves: HashMap::new(),
        key_ops: HashMap::new(),
        queries: HashMap::new(),
        must_stop: false,
        snapshot,
        accept_backoff: AcceptBackoff::new("gossip TCP listener"),
        accept_resume: None,
        tags_file: config.tags_file,
        keyring_file: config.keyring_file,
    };
    let task = tokio::spawn(driver.run());
    let handle = Handle {
        commands: commands_tx,
        events,
        local_addr: bound,
        advertise,
    };
    Ok((handle, first_events, task))
}

struct Driver {
    serf: Serf,
    udp: UdpSocket,
    tcp: TcpListener,
    commands: mpsc::Receiver<Command>,
    /// Reports from connection tasks; we hold a sender, so this never closes.
    streams: mpsc::Receiver<StreamInput>,
    streams_tx: mpsc::Sender<StreamInput>,
    events: broadcast::Sender<Arc<Event>>,
    joins: HashMap<JoinId, PendingJoin>,
    leaving: Vec<oneshot::Sender<()>>,
    /// Force-leaves waiting for their broadcast, by Serf's token.
    force_leaves: HashMap<u64, oneshot::Sender<Result<(), ForceLeaveError>>>,
    /// Key operations collecting answers, by their query's Lamport time.
    key_ops: HashMap<u64, (KeyReport, oneshot::Sender<KeyOutcome>)>,
    /// Queries sent through a handle, by Lamport time: their acks and answers go to the
    /// caller's [`QueryResponse`]; dropping the sender when the query ends closes it.
    queries: HashMap<u64, mpsc::UnboundedSender<QueryReply>>,
    /// Serf asked to stop (it lost a name-conflict vote).
    must_stop: bool,
    snapshot: Option<SnapshotWriter>,
    /// A failing `accept` (out of file descriptors) is retried after a growing pause rather
    /// than at once: the driver must neither spin nor sleep.
    accept_backoff: AcceptBackoff,
    accept_resume: Option<tokio::time::Instant>,
    tags_file: Option<PathBuf>,
    keyring_file: Option<PathBuf>,
}

/// A handle's join in progress: the addresses (for the log) and where the answer goes.
type PendingJoin = (Vec<SocketAddr>, oneshot::Sender<Result<usize, JoinError>>);

/// What one loop turn brought.
enum Input {
    Packet(std::io::Result<(usize, SocketAddr)>),
    Accepted(std::io::Result<(tokio::net::TcpStream, SocketAddr)>),
    Stream(StreamInput),
    Command(Option<Command>),
    Timeout,
}

impl Driver {
    async fn run(mut self) {
        let mut buf = vec![0u8; UDP_READ_BUF];
        let mut stopped: Option<oneshot::Sender<()>> = None;
        // What `Serf::new` produced: our own join, a snapshot rejoin's first exchange.
        self.drain().await;
        loop {
            let wake = self.serf.poll_timeout();
            let input = tokio::select! {
                r = self.udp.recv_from(&mut buf) => Input::Packet(r),
                r = transport::accept_after(&self.tcp, self.accept_resume) => Input::Accepted(r),
                Some(s) = self.streams.recv() => Input::Stream(s),
                c = self.commands.recv() => Input::Command(c),
                () = sleep_until(wake) => Input::Timeout,
            };
            let now = Instant::now();
            match input {
                Input::Packet(Ok((0, from))) => debug!(%from, "dropping empty datagram"),
                Input::Packet(Ok((n, from))) => {
                    // Go's transport counts the bytes of every datagram read.
                    metrics::counter!("memberlist.udp.received").increment(n as u64);
                    self.serf.handle_packet(from, &buf[..n], now);
                    // Whatever else is already queued on the socket is read in the same turn:
                    // under load (a join storm, a starved CPU) that saves a trip through the
                    // poll loop and a round of sends per datagram.
                    for _ in 1..PACKETS_PER_TURN {
                        match self.udp.try_recv_from(&mut buf) {
                            Ok((0, _)) => {}
                            Ok((n, from)) => {
                                metrics::counter!("memberlist.udp.received").increment(n as u64);
                                self.serf.handle_packet(from, &buf[..n], Instant::now());
                            }
                            Err(_) => break,
                        }
                    }
                }
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                Input::Packet(Err(e)) => debug!(error = %e, "udp receive failed"),
                Input::Accepted(Ok((conn, from))) => {
                    self.accept_backoff.succeeded();
                    self.accept_resume = None;
                    metrics::counter!("memberlist.tcp.accept").increment(1);
                    let framing = Framing::from_config(self.serf.memberlist().config());
                    let timeout = self.serf.memberlist().config().tcp_timeout;
                    let deadline = vassal_memberlist::limits::later(now, timeout);
                    let driver = self.streams_tx.clone();
                    tokio::spawn(stream::serve_inbound(conn, from, framing, deadline, driver));
                }
                Input::Accepted(Err(e)) => {
                    let pause = self.accept_backoff.failed(&e);
                    self.accept_resume = Some(tokio::time::Instant::now() + pause);
                }
                Input::Stream(StreamInput::Inbound { from, msg, reply }) => {
                    let _ = reply.send(self.serf.handle_stream(from, msg, now));
                }
                Input::Stream(StreamInput::Completed { id, result }) => {
                    self.serf.handle_stream_reply(id, result, now);
                }
                Input::Command(Some(Command::Shutdown(done))) => stopped = Some(done),
                Input::Command(Some(cmd)) => self.command(cmd, now),
                // Every handle is gone: nobody can talk to us any more.
                Input::Command(None) => break,
                Input::Timeout => self.serf.handle_timeout(now),
            }
            self.drain().await;
            if self.must_stop || stopped.is_some() {
                break;
            }
        }
        if let Some(writer) = self.snapshot.take() {
            // As Serf's snapshotter does at shutdown: the clock once more, then flush and sync.
            self.serf.snapshot_clock();
            while let Some(w) = self.serf.poll_snapshot_write() {
                writer.write(w);
            }
            writer.close().await;
        }
        if let Some(done) = stopped {
            debug!("serf agent shut down");
            let _ = done.send(());
        }
    }

    fn command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Members(reply) => {
                let _ = reply.send(self.serf.members().cloned().collect());
            }
            Command::Join {
                addrs,
                replay,
                done,
            } => {
                if addrs.is_empty() {
                    let _ = done.send(Err(JoinError { errors: Vec::new() }));
                    return;
                }
                debug!("joining: {addrs:?}");
                let id = self.serf.join(&addrs, !replay, now);
                self.joins.insert(id, (addrs, done));
            }
            Command::Leave(done) => {
                if self.serf.has_left() {
                    let _ = done.send(());
                } else {
                    info!("agent: requesting graceful leave from Serf");
                    self.leaving.push(done);
                    self.serf.leave(now);
                }
            }
            Command::UserEvent {
                name,
                payload,
                coalesce,
                done,
            } => {
                let _ = done.send(self.serf.user_event(&name, &payload, coalesce, now));
            }
            Command::Query {
                name,
                payload,
                params,
                done,
            } => {
                let sent = self.serf.query(&name, &payload, &params, now).map(|ltime| {
                    // Unbounded but small: Serf passes on at most one ack and one answer per
                    // member, and the query ends at its deadline.
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.queries.insert(ltime, tx);
                    QueryResponse::new(ltime, rx)
                });
                let _ = done.send(sent);
            }
            Command::Respond {
                ltime,
                id,
                payload,
                done,
            } => {
                let _ = done.send(self.serf.respond(ltime, id, &payload, now));
            }
            Command::SetTags { tags, done } => {
                let _ = done.send(self.set_tags(tags, now));
            }
            Command::ForceLeave { node, prune, done } => {
                if prune {
                    info!("agent: Force leaving node (prune): {node}");
                } else {
                    info!("agent: Force leaving node: {node}");
                }
                match self.serf.force_leave(&node, prune, now) {
                    None => {
                        let _ = done.send(Ok(()));
                    }
                    Some(token) => {
                        self.force_leaves.insert(token, done);
                    }
                }
            }
            Command::Key { command, key, done } => {
                let key = match keys::decode_base64(&key) {
                    Ok(k) => k,
                    Err(e) => {
                        let _ = done.send(KeyOutcome {
                            report: KeyReport::default(),
                            error: Some(e),
                        });
                        return;
                    }
                };
                match self.serf.key_query(command, &key, 0, now) {
                    Ok((ltime, num_nodes)) => {
                        self.key_ops
                            .insert(ltime, (KeyReport::new(num_nodes), done));
                    }
                    Err(e) => {
                        let _ = done.send(KeyOutcome {
                            report: KeyReport::default(),
                            error: Some(e.to_string()),
                        });
                    }
                }
            }
            Command::Stats(done) => {
                let serf = &self.serf;
                let count = |s: MemberStatus| serf.members().filter(|m| m.status == s).count();
                let local = serf.local_member();
                let ml_stats = serf.memberlist().stats();
                let _ = done.send(NodeStats {
                    name: local.name.clone(),
                    tags: local.tags.clone(),
                    members: serf.members().count(),
                    failed: count(MemberStatus::Failed),
                    left: count(MemberStatus::Left),
                    health_score: serf.memberlist().health_score(),
                    member_time: serf.member_clock(),
                    event_time: serf.event_clock(),
                    query_time: serf.query_clock(),
                    intent_queue: serf.intent_queue_len(),
                    event_queue: serf.event_queue_len(),
                    query_queue: serf.query_queue_len(),
                    encrypted: serf.encrypted(),
                    coordinate_resets: (!serf.config().disable_coordinates)
                        .then(|| serf.coordinate_resets()),
                    malformed_packets: ml_stats.malformed_packets,
                    malformed_streams: ml_stats.malformed_streams,
                    drops: ml_stats
                        .drops
                        .iter()
                        .chain(serf.stats().drops.iter())
                        .map(|(reason, n)| (reason.to_owned(), n))
                        .collect(),
                });
            }
            Command::Coordinate { node, done } => {
                let _ = done.send(self.serf.coordinate(&node).cloned());
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    /// Serf's agent `SetTags`: the tags file first (if any), then the gossip. Tags too large
    /// to gossip touch neither.
    fn set_tags(&mut self, tags: BTreeMap<String, String>, now: Instant) -> Result<(), NodeError> {
        vassal_serf::tags::encode(&tags)?;
        if let Some(path) = &self.tags_file {
            files::write_tags(path, &tags).inspect_err(|e| error!("{e}"))?;
        }
        self.serf.set_tags(tags, now)?;
        Ok(())
    }

    async fn drain(&mut self) {
        while let Some(t) = self.serf.poll_transmit() {
            match t {
                Transmit::Packet { to, bytes } => {
                    // Go counts the bytes it hands the socket, sent or not.
                    metrics::counter!("memberlist.udp.sent").increment(bytes.len() as u64);
                    if let Err(e) = self.udp.send_to(&bytes, to).await {
                        debug!(%to, error = %e, "failed to send udp packet");
                    }
                }
                Transmit::Stream {
                    id,
                    to,
                    bytes,
                    deadline,
                } => {
                    let framing = Framing::from_config(self.serf.memberlist().config());
                    let driver = self.streams_tx.clone();
                    tokio::spawn(stream::exchange(id, to, bytes, deadline, framing, driver));
                }
            }
        }
        while let Some(e) = self.serf.poll_event() {
            self.event(&e);
            // No subscribers is fine.
            let _ = self.events.send(Arc::new(e));
        }
        while let Some(o) = self.serf.poll_outcome() {
            self.outcome(o);
        }
        if let Some(writer) = &self.snapshot {
            while let Some(w) = self.serf.poll_snapshot_write() {
                writer.write(w);
            }
        }
    }

    /// Traces a cluster event as it leaves the node (before the agent coalesces it). Serf logs
    /// member events itself (`serf: EventMemberJoin: …`) and the agent logs what it receives
    /// (`agent: Received event: …`), so this is only for debugging.
    fn event(&mut self, e: &Event) {
        match e {
            Event::Member(me) => {
                for m in &me.members {
                    debug!("node event: {}: {} {}", me.kind, m.name, m.addr);
                }
            }
            Event::Query(q) => {
                debug!(
                    "node event: query: {} from {} ltime={}",
                    q.name, q.source_node, q.ltime
                )
            }
            Event::User(u) => debug!(
                "node event: user event: {} ltime={} payload={:?}",
                u.name,
                u.ltime,
                String::from_utf8_lossy(&u.payload)
            ),
        }
    }

    /// Hands a command's progress or completion to the handle that gave it, and acts on the
    /// notices meant for the node itself.
    fn outcome(&mut self, o: Outcome) {
        match o {
            Outcome::JoinFinished { id, joined, errors } => {
                for e in &errors {
                    debug!("memberlist: {e}");
                }
                let Some((_, done)) = self.joins.remove(&id) else {
                    return;
                };
                let result = if joined > 0 {
                    debug!("joined: {joined} nodes");
                    Ok(joined)
                } else {
                    debug!("join: no node could be contacted");
                    Err(JoinError { errors })
                };
                let _ = done.send(result);
            }
            Outcome::LeaveComplete => {
                info!("graceful leave complete");
                for done in self.leaving.drain(..) {
                    let _ = done.send(());
                }
            }
            Outcome::Shutdown(reason) => {
                error!("{reason}");
                self.must_stop = true;
            }
            Outcome::KeyringChanged(keys) => {
                debug!("keyring changed: {} keys installed", keys.len());
                if let Some(path) = &self.keyring_file {
                    match files::write_keyring(path, &keys) {
                        Ok(()) => debug!(path = %path.display(), "keyring file rewritten"),
                        Err(e) => error!("{e}"),
                    }
                }
            }
            Outcome::QueryAck { ltime, from } => {
                debug!("query ack from {from} ltime={ltime}");
                if let Some(tx) = self.queries.get(&ltime) {
                    // A caller that dropped its receiver no longer cares.
                    let _ = tx.send(QueryReply::Ack { from });
                }
            }
            Outcome::QueryResponse {
                ltime,
                from,
                payload,
            } => {
                debug!("query response from {from} ltime={ltime}");
                if let Some((report, _)) = self.key_ops.get_mut(&ltime) {
                    report.add(&from, &payload);
                    if report.is_complete() {
                        self.finish_key_op(ltime);
                    }
                } else if let Some(tx) = self.queries.get(&ltime) {
                    let _ = tx.send(QueryReply::Response { from, payload });
                }
            }
            Outcome::QueryDone { ltime } => {
                debug!("query done ltime={ltime}");
                self.finish_key_op(ltime);
                self.queries.remove(&ltime);
            }
            Outcome::ForceLeaveFinished { token, result } => {
                if let Err(e) = &result {
                    warn!("agent: failed to remove node: {e}");
                }
                if let Some(done) = self.force_leaves.remove(&token) {
                    let _ = done.send(result);
                }
            }
        }
    }
}

impl Driver {
    /// Answers a key operation with what it collected (Serf's key manager stops at the first
    /// of: every live member answered, or the query ended).
    fn finish_key_op(&mut self, ltime: u64) {
        if let Some((report, done)) = self.key_ops.remove(&ltime) {
            let error = report.error();
            let _ = done.send(KeyOutcome { report, error });
        }
    }
}

/// Sleeps until `wake`, or forever without one: the timer arm of a `select!` loop around a
/// state machine's `poll_timeout`.
pub async fn sleep_until<I: Into<tokio::time::Instant>>(wake: Option<I>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
