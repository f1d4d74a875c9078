//! An async client for Serf's RPC (Serf's `client.RPCClient`), used by the `vassal` CLI.
//!
//! One task reads the connection and hands each response to whoever waits on its `Seq`:
//! a one-shot answer (header, and body where the command has one), or a stream (`stream`,
//! `monitor`, `query`) whose records keep coming under the same `Seq`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::msgpack::{self, Value};
use crate::protocol::{
    self, command, errors, AuthRequest, Coordinate, CoordinateRequest, CoordinateResponse,
    EventRequest, Fields, ForceLeaveRequest, HandshakeRequest, JoinRequest, JoinResponse,
    KeyRequest, KeyResponse, Member, MembersFilter, MonitorRequest, QueryRecord, QueryRequest,
    RequestHeader, RespondRequest, ResponseHeader, Stats, StopRequest, StreamRequest, TagsRequest,
    IPC_VERSION,
};

/// How long connecting and each request may take (Serf's client default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest single response accepted (a members list of many thousand nodes fits).
const MAX_RESPONSE_SIZE: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the agent; the text is Go's (`dial tcp ADDR: connect: …`).
    #[error("{0}")]
    Connect(String),
    /// The agent answered with an error (Serf's text, verbatim).
    #[error("{0}")]
    Rpc(String),
    #[error("connection closed")]
    Closed,
    #[error("timed out waiting for the agent")]
    Timeout,
    #[error("unreadable response: {0}")]
    Decode(String),
}

impl From<protocol::ShapeError> for ClientError {
    fn from(e: protocol::ShapeError) -> Self {
        ClientError::Decode(e.to_string())
    }
}

type Answer = Result<(ResponseHeader, Option<Value>), ClientError>;

enum Waiter {
    /// One answer; `body` says whether the command has a body after the header.
    Once {
        body: bool,
        tx: oneshot::Sender<Answer>,
    },
    /// The first header answers the request; records follow.
    Stream {
        started: Option<oneshot::Sender<Answer>>,
        records: mpsc::UnboundedSender<Value>,
        /// Query streams end at their `done` record.
        ends_on_done: bool,
    },
}

type Waiters = Arc<Mutex<Option<HashMap<u64, Waiter>>>>;

/// A connected, handshaken (and authenticated) client.
pub struct Client {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    seq: AtomicU64,
    waiters: Waiters,
    reader: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects to `addr` (`host:port`), performs the handshake and, with a non-empty
    /// `auth_key`, authenticates.
    pub async fn connect(addr: &str, auth_key: &str) -> Result<Client, ClientError> {
        let conn = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Connect(format!("dial tcp {addr}: i/o timeout")))?
            .map_err(|e| {
                ClientError::Connect(format!(
                    "dial tcp {addr}: connect: {}",
                    vassal_node::io_reason(&e)
                ))
            })?;
        let _ = conn.set_nodelay(true);
        let (r, w) = conn.into_split();
        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));
        let reader = tokio::spawn(read_loop(r, waiters.clone()));
        let client = Client {
            writer: tokio::sync::Mutex::new(w),
            seq: AtomicU64::new(0),
            waiters,
            reader,
            timeout: DEFAULT_TIMEOUT,
        };
        client
            .call(
                command::HANDSHAKE,
                Some(
                    HandshakeRequest {
                        version: IPC_VERSION.into(),
                    }
                    .to_value(),
                ),
                false,
            )
            .await?;
        if !auth_key.is_empty() {
            client
                .call(
                    command::AUTH,
                    Some(
                        AuthRequest {
                            auth_key: auth_key.to_owned(),
                        }
                        .to_value(),
                    ),
                    false,
                )
                .await?;
        }
        Ok(client)
    }

    fn next_seq(&self) -> u64 {
        // fetch_add wraps; so does the +1 (a u64 of requests never gets there).
        self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    fn register(&self, seq: u64, w: Waiter) -> Result<(), ClientError> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.as_mut().ok_or(ClientError::Closed)?.insert(seq, w);
        Ok(())
    }

    fn forget(&self, seq: u64) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = waiters.as_mut() {
            w.remove(&seq);
        }
    }

    async fn send(&self, cmd: &str, seq: u64, body: Option<Value>) -> Result<(), ClientError> {
        let mut bytes = msgpack::encode(
            &RequestHeader {
                command: cmd.to_owned(),
                seq,
            }
            .to_value(),
        );
        if let Some(b) = body {
            msgpack::encode_into(&b, &mut bytes);
        }
        let mut w = self.writer.lock().await;
        w.write_all(&bytes).await.map_err(|_| ClientError::Closed)
    }

    /// Sends a request and waits for its answer; `Err(Rpc)` if the agent reported an error.
    async fn call(
        &self,
        cmd: &str,
        body: Option<Value>,
        has_body: bool,
    ) -> Result<Option<Value>, ClientError> {
        let (header, body) = self.call_raw(cmd, body, has_body).await?;
        if !header.error.is_empty() {
            return Err(ClientError::Rpc(header.error));
        }
        Ok(body)
    }

    /// Like `call`, but an agent error comes back with the header, next to the body.
    async fn call_raw(
        &self,
        cmd: &str,
        body: Option<Value>,
        has_body: bool,
    ) -> Result<(ResponseHeader, Option<Value>), ClientError> {
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        self.register(seq, Waiter::Once { body: has_body, tx })?;
        if let Err(e) = self.send(cmd, seq, body).await {
            self.forget(seq);
            return Err(e);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.forget(seq);
                Err(ClientError::Timeout)
            }
        }
    }

    async fn start_stream(
        &self,
        cmd: &str,
        body: Value,
        ends_on_done: bool,
    ) -> Result<(u64, mpsc::UnboundedReceiver<Value>), ClientError> {
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        let (records, records_rx) = mpsc::unbounded_channel();
        self.register(
            seq,
            Waiter::Stream {
                started: Some(tx),
                records,
                ends_on_done,
            },
        )?;
        if let Err(e) = self.send(cmd, seq, Some(body)).await {
            self.forget(seq);
            return Err(e);
        }
        let started = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        };
        match started {
            Ok((h, _)) if h.error.is_empty() => Ok((seq, records_rx)),
            Ok((h, _)) => {
                self.forget(seq);
                Err(ClientError::Rpc(h.error))
            }
            Err(e) => {
                self.forget(seq);
                Err(e)
            }
        }
    }

    pub async fn members(&self) -> Result<Vec<Member>, ClientError> {
        let body = self.call(command::MEMBERS, None, true).await?;
        Ok(protocol::members_from_value(&body.unwrap_or(Value::Nil))?)
    }

    pub async fn members_filtered(&self, f: &MembersFilter) -> Result<Vec<Member>, ClientError> {
        let body = self
            .call(command::MEMBERS_FILTERED, Some(f.to_value()), true)
            .await?;
        Ok(protocol::members_from_value(&body.unwrap_or(Value::Nil))?)
    }

    /// Joins through `addrs`; the number of nodes contacted.
    pub async fn join(&self, addrs: &[String], replay: bool) -> Result<i64, ClientError> {
        let body = JoinRequest {
            existing: addrs.to_vec(),
            replay,
        }
        .to_value();
        let (h, body) = self.call_raw(command::JOIN, Some(body), true).await?;
        if !h.error.is_empty() {
            return Err(ClientError::Rpc(h.error));
        }
        let body = body.unwrap_or(Value::Nil);
        Ok(JoinResponse::from_value(&body)?.num)
    }

    pub async fn leave(&self) -> Result<(), ClientError> {
        // A leave waits for the broadcast; allow for Serf's 5 s broadcast timeout and more.
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        self.register(seq, Waiter::Once { body: false, tx })?;
        self.send(command::LEAVE, seq, None).await?;
        let (h, _) = rx.await.map_err(|_| ClientError::Closed)??;
        if !h.error.is_empty() {
            return Err(ClientError::Rpc(h.error));
        }
        Ok(())
    }

    pub async fn force_leave(&self, node: &str, prune: bool) -> Result<(), ClientError> {
        let body = ForceLeaveRequest {
            node: node.to_owned(),
            prune,
        }
        .to_value();
        self.call(command::FORCE_LEAVE, Some(body), false).await?;
        Ok(())
    }

    pub async fn user_event(
        &self,
        name: &str,
        payload: Option<&[u8]>,
        coalesce: bool,
    ) -> Result<(), ClientError> {
        let body = EventRequest {
            name: name.to_owned(),
            payload: payload.map(<[u8]>::to_vec),
            coalesce,
        }
        .to_value();
        self.call(command::EVENT, Some(body), false).await?;
        Ok(())
    }

    pub async fn update_tags(
        &self,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<(), ClientError> {
        let body = TagsRequest {
            tags: set.clone(),
            delete_tags: delete.to_vec(),
        }
        .to_value();
        self.call(command::TAGS, Some(body), false).await?;
        Ok(())
    }

    /// A key command (`install-key`, `use-key`, `remove-key`, `list-keys`): the tally, and the
    /// agent's error text (empty when every node succeeded).
    pub async fn key_command(
        &self,
        cmd: &str,
        key: Option<&str>,
    ) -> Result<(KeyResponse, String), ClientError> {
        let body = key.map(|k| KeyRequest { key: k.to_owned() }.to_value());
        // Key operations wait for a whole query round.
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        self.register(seq, Waiter::Once { body: true, tx })?;
        self.send(cmd, seq, body).await?;
        let (h, body) = rx.await.map_err(|_| ClientError::Closed)??;
        if h.error == errors::AUTH_REQUIRED {
            return Err(ClientError::Rpc(h.error));
        }
        let resp = KeyResponse::from_value(&body.unwrap_or(Value::Nil))?;
        Ok((resp, h.error))
    }

    pub async fn stats(&self) -> Result<Stats, ClientError> {
        let body = self.call(command::STATS, None, true).await?;
        Ok(protocol::stats_from_value(&body.unwrap_or(Value::Nil))?)
    }

    /// The coordinate the agent holds for `node`; `None` if it has none.
    pub async fn get_coordinate(&self, node: &str) -> Result<Option<Coordinate>, ClientError> {
        let body = CoordinateRequest {
            node: node.to_owned(),
        }
        .to_value();
        let body = self
            .call(command::GET_COORDINATE, Some(body), true)
            .await?
            .unwrap_or(Value::Nil);
        let answer = CoordinateResponse::from_value(&body)?;
        Ok(answer.ok.then_some(answer.coord))
    }

    /// Starts a query; its acks and answers arrive on the receiver, which closes after `done`.
    pub async fn query(
        &self,
        q: &QueryRequest,
    ) -> Result<mpsc::UnboundedReceiver<QueryRecord>, ClientError> {
        let (_, mut raw) = self
            .start_stream(command::QUERY, q.to_value(), true)
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(v) = raw.recv().await {
                let Ok(rec) = QueryRecord::from_value(&v) else {
                    return;
                };
                let done = rec.kind == protocol::query_record::DONE;
                if tx.send(rec).is_err() || done {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Subscribes to events (`*`, `member-join,user:deploy`, …); returns the stream's handle
    /// (for [`stop`](Self::stop)) and its records.
    pub async fn stream(
        &self,
        filter: &str,
    ) -> Result<(u64, mpsc::UnboundedReceiver<Value>), ClientError> {
        let body = StreamRequest {
            kind: filter.to_owned(),
        }
        .to_value();
        self.start_stream(command::STREAM, body, false).await
    }

    /// Streams the agent's log lines at `level` and above.
    pub async fn monitor(
        &self,
        level: &str,
    ) -> Result<(u64, mpsc::UnboundedReceiver<String>), ClientError> {
        let body = MonitorRequest {
            log_level: level.to_owned(),
        }
        .to_value();
        let (seq, mut raw) = self.start_stream(command::MONITOR, body, false).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(v) = raw.recv().await {
                let line = Fields::of("log record", &v)
                    .and_then(|f| f.string("Log"))
                    .unwrap_or_default();
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok((seq, rx))
    }

    /// Ends a stream or monitor.
    pub async fn stop(&self, handle: u64) -> Result<(), ClientError> {
        self.forget(handle);
        let body = StopRequest { stop: handle }.to_value();
        self.call(command::STOP, Some(body), false).await?;
        Ok(())
    }

    /// Answers a query received on a stream.
    pub async fn respond(&self, id: u64, payload: &[u8]) -> Result<(), ClientError> {
        let body = RespondRequest {
            id,
            payload: payload.to_vec(),
        }
        .to_value();
        self.call(command::RESPOND, Some(body), false).await?;
        Ok(())
    }
}

struct Reader {
    r: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    async fn next(&mut self) -> Result<Value, ClientError> {
        loop {
            match msgpack::decode(&self.buf) {
                Ok(Some((v, used))) => {
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Decode(e.to_string())),
            }
            if self.buf.len() > MAX_RESPONSE_SIZE {
                return Err(ClientError::Decode("response too large".into()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .r
                .read(&mut chunk)
                .await
                .map_err(|_| ClientError::Closed)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn read_loop(r: OwnedReadHalf, waiters: Waiters) {
    let mut reader = Reader { r, buf: Vec::new() };
    let mut carried: Option<Value> = None;
    let end = loop {
        let v = match carried.take() {
            Some(v) => v,
            None => match reader.next().await {
                Ok(v) => v,
                Err(e) => break e,
            },
        };
        let header = match ResponseHeader::from_value(&v) {
            Ok(h) => h,
            Err(e) => break e.into(),
        };
        let waiter = {
            let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
            let Some(map) = w.as_mut() else { return };
            match map.get_mut(&header.seq) {
                None => None,
                Some(Waiter::Once { .. }) => map.remove(&header.seq),
                Some(Waiter::Stream {
                    started,
                    records,
                    ends_on_done,
                }) => {
                    if let Some(tx) = started.take() {
                        let _ = tx.send(Ok((header, None)));
                        continue;
                    }
                    // A record follows the header; the lock is released while reading it.
                    Some(Waiter::Stream {
                        started: None,
                        records: records.clone(),
                        ends_on_done: *ends_on_done,
                    })
                }
            }
        };
        match waiter {
            Some(Waiter::Once { body, tx }) => {
                let answer = if body && header.error != errors::AUTH_REQUIRED {
                    match reader.next().await {
                        Ok(b) => Ok((header, Some(b))),
                        Err(e) => {
                            let _ = tx.send(Err(e.clone()));
                            break e;
                        }
                    }
                } else {
                    Ok((header, None))
                };
                let _ = tx.send(answer);
            }
            Some(Waiter::Stream {
                records,
                ends_on_done,
                ..
            }) => {
                let rec = match reader.next().await {
                    Ok(r) => r,
                    Err(e) => break e,
                };
                let done = ends_on_done
                    && rec.get("Type") == Some(&Value::str(protocol::query_record::DONE));
                let _ = records.send(rec);
                if done {
                    let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(map) = w.as_mut() {
                        map.remove(&header.seq);
                    }
                }
            }
            None => {
                // Nobody waits (a stream we stopped): skip its record, if one follows.
                match reader.next().await {
                    Ok(next) if ResponseHeader::looks_like(&next) => carried = Some(next),
                    Ok(_) => {}
                    Err(e) => break e,
                }
            }
        }
    };
    // Everyone still waiting learns the connection is gone; streams end.
    let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(map) = w.take() {
        for (_, waiter) in map {
            match waiter {
                Waiter::Once { tx, .. } => {
                    let _ = tx.send(Err(end.clone()));
                }
                Waiter::Stream {
                    started: Some(tx), ..
                } => {
                    let _ = tx.send(Err(end.clone()));
                }
                Waiter::Stream { .. } => {}
            }
        }
    }
}
