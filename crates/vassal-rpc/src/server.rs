//! The agent's RPC server (Serf's `AgentIPC`, spec §6): one task per client connection, any
//! number of clients at once, every command Serf's agent answers, with its exact error strings.
//!
//! A connection handles its requests strictly in order. Answers and stream records (events,
//! logs, query results) go through one writer task per connection, so a header and its body
//! are never split by another record. A client that sends garbage, an unknown command or an
//! oversized request is answered as Serf answers (or not) and disconnected; nothing it does
//! reaches other clients or the agent.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use vassal_node::{Handle, NodeError, QueryReply, QueryResponse};
use vassal_serf::keys::KeyCommand;
use vassal_serf::{Event, EventFilter, QueryParams, INTERNAL_QUERY_PREFIX};

use crate::monitor::{self, LogHub};
use crate::msgpack::{self, Value};
use crate::protocol::{
    self, command, errors, map, query_record, str_value, AuthRequest, CoordinateRequest,
    CoordinateResponse, EventRequest, ForceLeaveRequest, HandshakeRequest, JoinRequest,
    JoinResponse, KeyRequest, KeyResponse, Member, MembersFilter, MonitorRequest, QueryRecord,
    QueryRequest, RequestHeader, RespondRequest, ResponseHeader, StopRequest, StreamRequest,
    TagsRequest, IPC_VERSION,
};

/// Largest request (header or body) a client may send; bigger ones close the connection.
/// Serf's largest legitimate request is a few KiB (events and queries are capped at 9 KiB).
pub const MAX_REQUEST_SIZE: usize = 1 << 20;

/// Records buffered per stream or monitor before they are dropped (Serf's 512).
const STREAM_BUFFER: usize = 512;

/// What the server needs besides the node.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Clients must `auth` with this first; empty: no authentication.
    pub auth_key: String,
    /// The agent's log lines, for `monitor`.
    pub logs: LogHub,
    /// The events `stream` serves: the agent's (coalesced) member, user and query events.
    pub events: broadcast::Sender<Arc<Event>>,
    /// `"<event>:<name>"` → script, shown by `stats` (Serf's `event_handlers` section).
    pub event_handlers: BTreeMap<String, String>,
    /// Notified once a client's `leave` has completed and been answered: the agent should stop.
    pub left: Arc<Notify>,
}

/// Accepts clients until the listener fails; each gets its own task.
pub async fn serve(listener: TcpListener, handle: Handle, config: ServerConfig) {
    let config = Arc::new(config);
    // Out of file descriptors and the like: back off, and log once per streak, not per error.
    let mut backoff = vassal_node::AcceptBackoff::new("agent.ipc: RPC listener");
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                backoff.succeeded();
                info!("agent.ipc: Accepted client: {peer}");
                metrics::counter!("agent.ipc.accept").increment(1);
                let conn = Connection::new(conn, peer, handle.clone(), config.clone());
                tokio::spawn(async move {
                    let _open = OpenConnection::new();
                    conn.run().await
                });
            }
            Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
        }
    }
}

/// Counts one open client in the `vassal.rpc.connections` gauge for as long as it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        metrics::gauge!("vassal.rpc.connections").increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("vassal.rpc.connections").decrement(1.0);
    }
}

/// Why a connection is closed.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("client closed the connection")]
    Eof,
    #[error("failed to read: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to decode request: {0}")]
    Decode(#[from] msgpack::DecodeError),
    #[error("failed to decode request: {0}")]
    Shape(#[from] protocol::ShapeError),
    #[error("request larger than {MAX_REQUEST_SIZE} bytes")]
    TooLarge,
    #[error("the connection's writer stopped")]
    Writer,
    /// Serf's own reasons (handshake missing, unknown command, bad regex).
    #[error("{0}")]
    Refused(String),
}

/// Queries handed to this client by its streams, answerable with `respond` until the deadline.
#[derive(Debug, Default)]
struct PendingQueries {
    next_id: u64,
    queries: HashMap<u64, PendingQuery>,
}

#[derive(Debug, Clone, Copy)]
struct PendingQuery {
    ltime: u64,
    id: u32,
    deadline: Instant,
    responded: bool,
}

impl PendingQueries {
    /// Serf's `RegisterQuery`: every query gets the next per-connection ID, but only one still
    /// running is remembered.
    fn register(&mut self, q: &vassal_serf::Query) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        let now = Instant::now();
        self.queries.retain(|_, p| p.deadline > now);
        if q.deadline > now {
            self.queries.insert(
                self.next_id,
                PendingQuery {
                    ltime: q.ltime,
                    id: q.id,
                    deadline: q.deadline,
                    responded: false,
                },
            );
        }
        self.next_id
    }
}

/// One write for the connection's writer task; `written` is told once it is on the socket.
type Write = (Vec<u8>, Option<oneshot::Sender<()>>);

/// Sends whole messages (a header and its body) to the connection's writer task.
#[derive(Debug, Clone)]
struct Outbox(mpsc::Sender<Write>);

impl Outbox {
    fn bytes(seq: u64, error: &str, body: Option<Value>) -> Vec<u8> {
        let mut bytes = msgpack::encode(
            &ResponseHeader {
                seq,
                error: error.to_owned(),
            }
            .to_value(),
        );
        if let Some(b) = body {
            msgpack::encode_into(&b, &mut bytes);
        }
        bytes
    }

    async fn send(&self, seq: u64, error: &str, body: Option<Value>) -> Result<(), Close> {
        let bytes = Self::bytes(seq, error, body);
        self.0.send((bytes, None)).await.map_err(|_| Close::Writer)
    }

    /// Sends and waits until the answer is written (before the agent stops, say).
    async fn send_written(&self, seq: u64, error: &str) -> Result<(), Close> {
        let (tx, rx) = oneshot::channel();
        let bytes = Self::bytes(seq, error, None);
        self.0
            .send((bytes, Some(tx)))
            .await
            .map_err(|_| Close::Writer)?;
        rx.await.map_err(|_| Close::Writer)
    }
}

struct Connection {
    peer: SocketAddr,
    reader: OwnedReadHalf,
    buf: Vec<u8>,
    out: Outbox,
    writer: JoinHandle<()>,
    handle: Handle,
    config: Arc<ServerConfig>,
    version: i32,
    authed: bool,
    streams: HashMap<u64, JoinHandle<()>>,
    monitor: Option<(u64, JoinHandle<()>)>,
    queries: Vec<JoinHandle<()>>,
    pending: Arc<Mutex<PendingQueries>>,
}

enum Flow {
    Continue,
    Close(Close),
}

impl Connection {
    fn new(conn: TcpStream, peer: SocketAddr, handle: Handle, config: Arc<ServerConfig>) -> Self {
        let _ = conn.set_nodelay(true);
        let (reader, writer) = conn.into_split();
        let (tx, rx) = mpsc::channel(64);
        Connection {
            peer,
            reader,
            buf: Vec::new(),
            out: Outbox(tx),
            writer: tokio::spawn(write_loop(writer, rx)),
            handle,
            config,
            version: 0,
            authed: false,
            streams: HashMap::new(),
            monitor: None,
            queries: Vec::new(),
            pending: Arc::default(),
        }
    }

    async fn run(mut self) {
        let why = loop {
            let header = match self.next_value().await {
                Ok(v) => v,
                Err(e) => break e,
            };
            let header = match RequestHeader::from_value(&header) {
                Ok(h) => h,
                Err(e) => break e.into(),
            };
            match self.request(header).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close(why)) | Err(why) => break why,
            }
        };
        match why {
            Close::Eof => debug!("agent.ipc: client {} disconnected", self.peer),
            Close::Refused(e) => error!("agent.ipc: Failed to evaluate request: {e}"),
            other => error!("agent.ipc: closing client {}: {other}", self.peer),
        }
        // Stop the streams, then let the writer flush what is queued (a final error answer).
        for (_, t) in self.streams.drain() {
            t.abort();
        }
        if let Some((_, t)) = self.monitor.take() {
            t.abort();
        }
        for t in self.queries.drain(..) {
            t.abort();
        }
        drop(self.out);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer).await;
    }

    /// The next msgpack object from the client. The scanner resumes where it stopped, so a
    /// request trickled in byte by byte costs linear CPU; it is decoded once, when whole.
    async fn next_value(&mut self) -> Result<Value, Close> {
        let mut scanner = msgpack::Scanner::default();
        loop {
            if let Some(end) = scanner
                .scan(&self.buf)
                .map_err(msgpack::DecodeError::from)?
            {
                let whole = self.buf.get(..end).unwrap_or_default();
                let Some((v, used)) = msgpack::decode(whole)? else {
                    return Err(msgpack::DecodeError("object ended early".into()).into());
                };
                self.buf.drain(..used);
                return Ok(v);
            }
            if self.buf.len() > MAX_REQUEST_SIZE {
                return Err(Close::TooLarge);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.reader.read(&mut chunk).await?;
            if n == 0 {
                return Err(Close::Eof);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The request's body, read as `decode` reads it (a body of the wrong shape closes the
    /// connection).
    async fn body<T>(
        &mut self,
        decode: fn(&Value) -> Result<T, protocol::ShapeError>,
    ) -> Result<T, Close> {
        let v = self.next_value().await?;
        Ok(decode(&v)?)
    }

    async fn request(&mut self, h: RequestHeader) -> Result<Flow, Close> {
        let seq = h.seq;
        if h.command != command::HANDSHAKE && self.version == 0 {
            self.out.send(seq, errors::HANDSHAKE_REQUIRED, None).await?;
            return Ok(Flow::Close(Close::Refused(
                errors::HANDSHAKE_REQUIRED.into(),
            )));
        }
        // Go counts every command past the handshake check, authenticated or not.
        metrics::counter!("agent.ipc.command").increment(1);
        if !self.config.auth_key.is_empty()
            && !self.authed
            && h.command != command::AUTH
            && h.command != command::HANDSHAKE
        {
            // As Serf: no body is read, so a body that follows is taken as the next header.
            warn!("agent.ipc: Client sending commands before auth");
            self.out.send(seq, errors::AUTH_REQUIRED, None).await?;
            return Ok(Flow::Continue);
        }
        match h.command.as_str() {
            command::HANDSHAKE => self.handshake(seq).await,
            command::AUTH => self.auth(seq).await,
            command::EVENT => self.event(seq).await,
            command::MEMBERS => self.members(seq, None).await,
            command::MEMBERS_FILTERED => {
                let filter = self.body(MembersFilter::from_value).await?;
                self.members(seq, Some(filter)).await
            }
            command::STREAM => self.stream(seq).await,
            command::MONITOR => self.monitor(seq).await,
            command::STOP => self.stop(seq).await,
            command::FORCE_LEAVE => self.force_leave(seq).await,
            command::JOIN => self.join(seq).await,
            command::LEAVE => self.leave(seq).await,
            command::INSTALL_KEY => self.key(seq, KeyCommand::Install).await,
            command::USE_KEY => self.key(seq, KeyCommand::Use).await,
            command::REMOVE_KEY => self.key(seq, KeyCommand::Remove).await,
            command::LIST_KEYS => self.key(seq, KeyCommand::List).await,
            command::TAGS => self.tags(seq).await,
            command::QUERY => self.query(seq).await,
            command::RESPOND => self.respond(seq).await,
            command::STATS => self.stats(seq).await,
            command::GET_COORDINATE => self.coordinate(seq).await,
            other => {
                self.out
                    .send(seq, errors::UNSUPPORTED_COMMAND, None)
                    .await?;
                Ok(Flow::Close(Close::Refused(format!(
                    "command '{other}' not recognized"
                ))))
            }
        }
    }

    async fn handshake(&mut self, seq: u64) -> Result<Flow, Close> {
        let version = self.body(HandshakeRequest::from_value).await?.version;
        let error = if version != i64::from(IPC_VERSION) {
            errors::UNSUPPORTED_IPC_VERSION
        } else if self.version != 0 {
            errors::DUPLICATE_HANDSHAKE
        } else {
            self.version = IPC_VERSION;
            ""
        };
        self.out.send(seq, error, None).await?;
        Ok(Flow::Continue)
    }

    async fn auth(&mut self, seq: u64) -> Result<Flow, Close> {
        let key = self.body(AuthRequest::from_value).await?.auth_key;
        let error = if key == self.config.auth_key {
            self.authed = true;
            ""
        } else {
            errors::INVALID_AUTH_TOKEN
        };
        self.out.send(seq, error, None).await?;
        Ok(Flow::Continue)
    }

    async fn event(&mut self, seq: u64) -> Result<Flow, Close> {
        let req = self.body(EventRequest::from_value).await?;
        let (name, payload, coalesce) = (req.name, req.payload.unwrap_or_default(), req.coalesce);
        debug!(
            "agent: Requesting user event send: {name}. Coalesced: {coalesce}. Payload: {:?}",
            String::from_utf8_lossy(&payload)
        );
        let result = self.handle.user_event(&name, &payload, coalesce).await;
        if let Err(e) = &result {
            warn!("agent: failed to send user event: {e}");
        }
        self.out.send(seq, &err_text(result), None).await?;
        Ok(Flow::Continue)
    }

    async fn members(&mut self, seq: u64, filter: Option<MembersFilter>) -> Result<Flow, Close> {
        let mut members = self.handle.members().await.unwrap_or_default();
        if let Some(f) = filter {
            let anchored = |e: &str| {
                Regex::new(&format!("^{e}$"))
                    .map_err(|e| Close::Refused(format!("Failed to compile regex: {e}")))
            };
            let tags = f
                .tags
                .iter()
                .map(|(t, e)| Ok((t.clone(), anchored(e)?)))
                .collect::<Result<Vec<_>, Close>>();
            let (tags, status, name) = match (tags, anchored(&f.status), anchored(&f.name)) {
                (Ok(t), Ok(s), Ok(n)) => (t, s, n),
                // Serf closes the connection without an answer.
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Ok(Flow::Close(e)),
            };
            members.retain(|m| {
                tags.iter()
                    .all(|(t, re)| re.is_match(m.tags.get(t).map_or("", String::as_str)))
                    && (f.status.is_empty() || status.is_match(m.status.as_str()))
                    && (f.name.is_empty() || name.is_match(&m.name))
            });
        }
        let members: Vec<Member> = members.iter().map(Member::from_serf).collect();
        self.out
            .send(seq, "", Some(protocol::members_value(&members)))
            .await?;
        Ok(Flow::Continue)
    }

    async fn stream(&mut self, seq: u64) -> Result<Flow, Close> {
        let kind = self.body(StreamRequest::from_value).await?.kind;
        // Serf's ParseEventFilter and Valid: one unknown type refuses the whole list.
        let filters = EventFilter::parse_list(&kind).ok();
        let error = if filters.is_none() {
            errors::INVALID_FILTER
        } else if self.streams.contains_key(&seq) {
            errors::STREAM_EXISTS
        } else {
            ""
        };
        // Subscribe before answering so nothing between the answer and the first record is lost.
        let events = self.config.events.subscribe();
        self.out.send(seq, error, None).await?;
        if let (Some(filters), "") = (filters, error) {
            let task = tokio::spawn(event_stream(
                seq,
                filters,
                events,
                self.out.clone(),
                self.pending.clone(),
                self.peer,
            ));
            self.streams.insert(seq, task);
        }
        Ok(Flow::Continue)
    }

    async fn monitor(&mut self, seq: u64) -> Result<Flow, Close> {
        let asked = self.body(MonitorRequest::from_value).await?.log_level;
        let level = monitor::parse_level(&asked);
        let error = match level {
            None => format!("Unknown log level: {}", asked.to_uppercase()),
            Some(_) if self.monitor.is_some() => errors::MONITOR_EXISTS.to_owned(),
            Some(_) => String::new(),
        };
        let sub = self.config.logs.subscribe(STREAM_BUFFER);
        self.out.send(seq, &error, None).await?;
        if let (Some(level), true) = (level, error.is_empty()) {
            let task = tokio::spawn(log_stream(seq, level, sub, self.out.clone()));
            self.monitor = Some((seq, task));
        }
        Ok(Flow::Continue)
    }

    async fn stop(&mut self, seq: u64) -> Result<Flow, Close> {
        let target = self.body(StopRequest::from_value).await?.stop;
        if let Some((_, task)) = self.monitor.take_if(|(s, _)| *s == target) {
            task.abort();
        }
        if let Some(task) = self.streams.remove(&target) {
            task.abort();
        }
        self.out.send(seq, "", None).await?;
        Ok(Flow::Continue)
    }

    async fn force_leave(&mut self, seq: u64) -> Result<Flow, Close> {
        let req = self.body(ForceLeaveRequest::from_value).await?;
        let result = self.handle.force_leave(&req.node, req.prune).await;
        self.out.send(seq, &err_text(result), None).await?;
        Ok(Flow::Continue)
    }

    async fn join(&mut self, seq: u64) -> Result<Flow, Close> {
        let JoinRequest { existing, replay } = self.body(JoinRequest::from_value).await?;
        info!("agent: joining: [{}] replay: {replay}", existing.join(" "));
        let (addrs, resolve_errors) = vassal_node::addr::resolve_all(&existing).await;
        let result = if addrs.is_empty() && resolve_errors.is_empty() {
            Ok(0)
        } else if addrs.is_empty() {
            Err(vassal_node::JoinError {
                errors: resolve_errors,
            }
            .into())
        } else {
            for e in &resolve_errors {
                warn!("{e}");
            }
            self.handle.join(addrs, replay).await
        };
        let (num, error) = match result {
            Ok(n) => {
                info!("agent: joined: {n} nodes");
                (n, String::new())
            }
            // Go's multi-error ends in a blank line.
            Err(NodeError::Join(e)) => {
                warn!("agent: error joining: {e}");
                (0, format!("{e}\n\n"))
            }
            Err(e) => (0, e.to_string()),
        };
        let body = JoinResponse { num: num as i64 }.to_value();
        self.out.send(seq, &error, Some(body)).await?;
        Ok(Flow::Continue)
    }

    async fn leave(&mut self, seq: u64) -> Result<Flow, Close> {
        info!("agent.ipc: Graceful leave triggered");
        let result = self.handle.leave().await;
        if let Err(e) = &result {
            error!("agent.ipc: leave failed: {e}");
        }
        let written = self.out.send_written(seq, &err_text(result)).await;
        self.config.left.notify_one();
        written?;
        Ok(Flow::Continue)
    }

    async fn key(&mut self, seq: u64, command: KeyCommand) -> Result<Flow, Close> {
        let key = if command == KeyCommand::List {
            String::new()
        } else {
            self.body(KeyRequest::from_value).await?.key
        };
        info!(
            "agent: {}",
            match command {
                KeyCommand::Install => "Initiating key installation",
                KeyCommand::Use => "Initiating primary key change",
                KeyCommand::Remove => "Initiating key removal",
                KeyCommand::List => "Initiating key listing",
            }
        );
        let (report, error) = match self.handle.key_command(command, &key).await {
            Ok(o) => (o.report, o.error.unwrap_or_default()),
            Err(e) => (Default::default(), e.to_string()),
        };
        let resp = KeyResponse {
            messages: report.messages,
            keys: (command == KeyCommand::List).then(|| {
                report
                    .keys
                    .into_iter()
                    .map(|(k, n)| (k, n as i64))
                    .collect()
            }),
            num_nodes: report.num_nodes as i64,
            num_err: report.num_err as i64,
            num_resp: report.num_resp as i64,
        };
        self.out.send(seq, &error, Some(resp.to_value())).await?;
        Ok(Flow::Continue)
    }

    async fn tags(&mut self, seq: u64) -> Result<Flow, Close> {
        let TagsRequest {
            tags: set,
            delete_tags: delete,
        } = self.body(TagsRequest::from_value).await?;
        let result = match self.handle.stats().await {
            Ok(s) => {
                let mut tags = s.tags;
                tags.retain(|k, _| !delete.contains(k));
                tags.extend(set);
                self.handle.set_tags(tags).await
            }
            Err(e) => Err(e),
        };
        self.out.send(seq, &err_text(result), None).await?;
        Ok(Flow::Continue)
    }

    async fn query(&mut self, seq: u64) -> Result<Flow, Close> {
        let req = self.body(QueryRequest::from_value).await?;
        // The agent refuses Serf's internal queries, except a payload-less ping
        // (`serf reachability`).
        if req.name.starts_with(INTERNAL_QUERY_PREFIX)
            && (req.name != vassal_serf::PING_QUERY || req.payload.is_some())
        {
            let e = format!("Queries cannot contain the '{INTERNAL_QUERY_PREFIX}' prefix");
            self.out.send(seq, &e, None).await?;
            return Ok(Flow::Continue);
        }
        let params = QueryParams {
            filter_nodes: req.filter_nodes,
            filter_tags: req.filter_tags,
            request_ack: req.request_ack,
            relay_factor: req.relay_factor,
            timeout: match req.timeout {
                0 => None,
                // A negative timeout ends the query at once.
                t => Some(Duration::from_nanos(t.max(1) as u64)),
            },
        };
        let payload = req.payload.unwrap_or_default();
        debug!(
            "agent: Requesting query send: {}. Payload: {:?}",
            req.name,
            String::from_utf8_lossy(&payload)
        );
        match self.handle.query(&req.name, &payload, params).await {
            Ok(replies) => {
                self.out.send(seq, "", None).await?;
                self.queries.retain(|t| !t.is_finished());
                self.queries
                    .push(tokio::spawn(query_stream(seq, replies, self.out.clone())));
            }
            Err(e) => {
                warn!("agent: failed to start user query: {e}");
                self.out.send(seq, &e.to_string(), None).await?;
            }
        }
        Ok(Flow::Continue)
    }

    async fn respond(&mut self, seq: u64) -> Result<Flow, Close> {
        let RespondRequest { id, payload } = self.body(RespondRequest::from_value).await?;
        let found = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            pending.queries.retain(|_, p| p.deadline > now);
            pending.queries.get(&id).copied()
        };
        let error = match found {
            None => errors::INVALID_QUERY_ID.to_owned(),
            Some(q) if q.responded => {
                "failed to respond to key query: response already sent".to_owned()
            }
            Some(q) => match self.handle.respond(q.ltime, q.id, &payload).await {
                Ok(()) => {
                    let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(p) = pending.queries.get_mut(&id) {
                        p.responded = true;
                    }
                    String::new()
                }
                Err(NodeError::Respond(e)) => format!("failed to respond to key query: {e}"),
                Err(e) => e.to_string(),
            },
        };
        self.out.send(seq, &error, None).await?;
        Ok(Flow::Continue)
    }

    async fn stats(&mut self, seq: u64) -> Result<Flow, Close> {
        let stats = match self.handle.stats().await {
            Ok(s) => s,
            Err(e) => {
                self.out
                    .send(seq, &e.to_string(), Some(Value::Map(Vec::new())))
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        let strings = |pairs: Vec<(&str, String)>| -> BTreeMap<String, String> {
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        };
        let mut serf = strings(vec![
            ("members", stats.members.to_string()),
            ("failed", stats.failed.to_string()),
            ("left", stats.left.to_string()),
            ("health_score", stats.health_score.to_string()),
            ("member_time", stats.member_time.to_string()),
            ("event_time", stats.event_time.to_string()),
            ("query_time", stats.query_time.to_string()),
            ("intent_queue", stats.intent_queue.to_string()),
            ("event_queue", stats.event_queue.to_string()),
            ("query_queue", stats.query_queue.to_string()),
            ("encrypted", stats.encrypted.to_string()),
        ]);
        if let Some(r) = stats.coordinate_resets {
            serf.insert("coordinate_resets".into(), r.to_string());
        }
        let mut all = protocol::Stats::new();
        all.insert("agent".into(), strings(vec![("name", stats.name)]));
        all.insert("runtime".into(), runtime_stats());
        all.insert("serf".into(), serf);
        all.insert("tags".into(), stats.tags);
        all.insert("event_handlers".into(), self.config.event_handlers.clone());
        self.out
            .send(seq, "", Some(protocol::stats_value(&all)))
            .await?;
        Ok(Flow::Continue)
    }

    async fn coordinate(&mut self, seq: u64) -> Result<Flow, Close> {
        let node = self.body(CoordinateRequest::from_value).await?.node;
        let found = self.handle.coordinate(&node).await.ok().flatten();
        let coord = match &found {
            Some(c) => protocol::Coordinate {
                adjustment: c.adjustment,
                error: c.error,
                height: c.height,
                vec: Some(c.vec.clone()),
            },
            None => protocol::Coordinate::default(),
        };
        let body = CoordinateResponse {
            coord,
            ok: found.is_some(),
        }
        .to_value();
        self.out.send(seq, "", Some(body)).await?;
        Ok(Flow::Continue)
    }
}

fn err_text<T>(r: Result<T, NodeError>) -> String {
    r.err().map(|e| e.to_string()).unwrap_or_default()
}

async fn write_loop(mut w: OwnedWriteHalf, mut rx: mpsc::Receiver<Write>) {
    while let Some((bytes, written)) = rx.recv().await {
        if let Err(e) = w.write_all(&bytes).await {
            debug!("agent.ipc: failed to write to client: {e}");
            return;
        }
        if let Some(tx) = written {
            let _ = w.flush().await;
            let _ = tx.send(());
        }
    }
    let _ = w.shutdown().await;
}

/// Go's runtime section, with this process's honest equivalents: tokio workers for
/// `max_procs`, live tokio tasks for `goroutines`.
fn runtime_stats() -> BTreeMap<String, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    let metrics = tokio::runtime::Handle::current().metrics();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    [
        ("os", std::env::consts::OS.to_owned()),
        ("arch", arch.to_owned()),
        ("version", env!("VASSAL_RUSTC_VERSION").to_owned()),
        ("max_procs", metrics.num_workers().to_string()),
        ("goroutines", metrics.num_alive_tasks().to_string()),
        ("cpu_count", cpus.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The record a stream sends for an event (`None` for events streams never carry).
fn event_record(e: &Event, pending: &Mutex<PendingQueries>) -> Option<Value> {
    Some(match e {
        Event::Member(m) => map(vec![
            ("Event", str_value(m.kind.as_str())),
            (
                "Members",
                Value::Array(
                    m.members
                        .iter()
                        .map(|m| Member::from_serf(m).to_value())
                        .collect(),
                ),
            ),
        ]),
        Event::User(u) => map(vec![
            ("Coalesce", Value::Bool(u.cc)),
            ("Event", str_value("user")),
            ("LTime", Value::Uint(u.ltime)),
            ("Name", str_value(&u.name)),
            ("Payload", Value::Bin(u.payload.clone())),
        ]),
        Event::Query(q) => {
            let id = pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .register(q);
            map(vec![
                ("Event", str_value("query")),
                ("ID", Value::Uint(id)),
                ("LTime", Value::Uint(q.ltime)),
                ("Name", str_value(&q.name)),
                ("Payload", Value::Bin(q.payload.clone())),
            ])
        }
    })
}

async fn event_stream(
    seq: u64,
    filters: Vec<EventFilter>,
    mut events: broadcast::Receiver<Arc<Event>>,
    out: Outbox,
    pending: Arc<Mutex<PendingQueries>>,
    peer: SocketAddr,
) {
    loop {
        match events.recv().await {
            Ok(e) => {
                if !filters.iter().any(|f| f.matches(&e)) {
                    continue;
                }
                let Some(record) = event_record(&e, &pending) else {
                    continue;
                };
                if out.send(seq, "", Some(record)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("agent.ipc: Dropping {n} events to {peer}");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn log_stream(seq: u64, level: &'static str, mut sub: monitor::LogSubscription, out: Outbox) {
    let record = |line: &str| map(vec![("Log", str_value(line))]);
    for line in std::mem::take(&mut sub.backlog) {
        if monitor::level_allows(level, &line)
            && out.send(seq, "", Some(record(&line))).await.is_err()
        {
            return;
        }
    }
    while let Some(line) = sub.lines.recv().await {
        if monitor::level_allows(level, &line)
            && out.send(seq, "", Some(record(&line))).await.is_err()
        {
            return;
        }
    }
}

/// Relays one query's acks and answers to the client, then its `done` record.
async fn query_stream(seq: u64, mut replies: QueryResponse, out: Outbox) {
    let record = |kind: &str, from: &str, payload: Option<Vec<u8>>| {
        QueryRecord {
            kind: kind.to_owned(),
            from: from.to_owned(),
            payload,
        }
        .to_value()
    };
    while let Some(reply) = replies.next().await {
        let rec = match reply {
            QueryReply::Ack { from } => record(query_record::ACK, &from, None),
            QueryReply::Response { from, payload } => {
                record(query_record::RESPONSE, &from, Some(payload))
            }
        };
        if out.send(seq, "", Some(rec)).await.is_err() {
            return;
        }
    }
    let _ = out
        .send(seq, "", Some(record(query_record::DONE, "", None)))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_filters_parse_like_serf() {
        let f = EventFilter::parse_list("member-join,user:deploy").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].name(), "deploy");
        assert_eq!(EventFilter::parse_list("").unwrap()[0].event(), "*");
        assert!(EventFilter::parse_list("member-jion").is_err());
        assert!(EventFilter::parse_list("user,bogus").is_err());
    }
}
