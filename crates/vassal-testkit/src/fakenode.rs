//! A fake cluster member for attack tests: a UDP socket and a TCP listener on a loopback address
//! that speak just enough memberlist and Serf to join a real agent (Go's or ours), and then send
//! it whatever a hostile peer might.
//!
//! While it runs, a [`FakeNode`] answers the agent's probes (UDP pings and TCP fallback pings)
//! with an ack whose payload the test chooses ([`FakeNode::set_ack_payload`]), answers push/pulls
//! with its own alive state, refutes suspicions about itself, and records the Serf queries and
//! query responses it receives, so a test can react to them (e.g. forge answers to a
//! `_serf_conflict` query). What it sends is built by the functions in [`msg`] with the
//! project's own encoders (`vassal_memberlist::wire`, `vassal_serf::messages`). What it records
//! it reads with its own lenient decoders, which take what Serf's refuses (e.g. a query
//! `Timeout` beyond Go's `int64`).
//! [`trickle`] dribbles a stream into a TCP port, and [`proc_usage`] reads what a process costs.
//!
//! Bounded like every helper here: the background threads stop when the node is dropped (or
//! after [`MAX_LIFETIME`]), every read has a timeout, every loop a count or a deadline, and what
//! it records is capped at [`MAX_RECORDED`] entries.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vassal_memberlist::wire::{
    self, msgpack::Reader, Keyring, Message, NodeStateKind, PushNodeState, PushPull, ReadOptions,
    StreamMessage, WriteOptions,
};

use crate::net::Loopback;
use crate::wait::wait_until;

/// The longest a fake node's background threads run, even if the test forgets to drop it.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// How many queries, responses and packets a fake node remembers (older ones are dropped).
pub const MAX_RECORDED: usize = 10_000;

/// How long the fake node waits for a whole stream message (Go's LAN `TCPTimeout` is 10 s).
const STREAM_DEADLINE: Duration = Duration::from_secs(5);

/// The most bytes the fake node buffers while reading one stream message.
const MAX_STREAM_BYTES: usize = 16 << 20;

/// How often the background loops look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// `[pmin, pmax, pcur, dmin, dmax, dcur]` of a stock Serf agent (spec §2.12).
pub const VSN: [u8; 6] = [1, 5, 2, 2, 5, 5];

/// A Serf query the fake node received (gossiped to it because it is a member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenQuery {
    pub ltime: u64,
    pub id: u32,
    pub name: String,
    pub source_node: String,
    /// Where the query wants its acks and responses (`Addr:Port`).
    pub reply_to: Option<SocketAddr>,
    pub flags: u32,
    pub payload: Vec<u8>,
    pub timeout_ns: u64,
}

/// A Serf query response (or ack, `flags & 1`) the fake node received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenResponse {
    pub ltime: u64,
    pub id: u32,
    pub from: String,
    pub flags: u32,
    pub payload: Vec<u8>,
}

/// How to start a [`FakeNode`].
#[derive(Debug, Clone)]
pub struct FakeNodeBuilder {
    name: String,
    bind: SocketAddr,
    key: Option<Vec<u8>>,
    tags: Vec<(String, String)>,
    ack_payload: Option<Vec<u8>>,
}

impl FakeNodeBuilder {
    /// Encrypt and decrypt with this AES key (16, 24 or 32 raw bytes), as `-encrypt` does.
    pub fn key(mut self, key: &[u8]) -> Self {
        self.key = Some(key.to_vec());
        self
    }
    /// A Serf tag in the node's metadata.
    pub fn tag(mut self, k: &str, v: &str) -> Self {
        self.tags.push((k.into(), v.into()));
        self
    }
    /// The payload of the acks it answers pings with (default: a fresh, valid coordinate).
    pub fn ack_payload(mut self, payload: Option<Vec<u8>>) -> Self {
        self.ack_payload = payload;
        self
    }

    /// Binds the sockets and starts answering pings and streams.
    #[track_caller]
    pub fn start(self) -> FakeNode {
        let keyring = self.key.as_deref().map(|k| {
            Keyring::new(k).unwrap_or_else(|e| panic!("fake node key of {} bytes: {e}", k.len()))
        });
        let udp = UdpSocket::bind(self.bind)
            .unwrap_or_else(|e| panic!("fake node {}: udp bind {}: {e}", self.name, self.bind));
        udp.set_read_timeout(Some(TICK)).expect("udp read timeout");
        let tcp = TcpListener::bind(self.bind)
            .unwrap_or_else(|e| panic!("fake node {}: tcp bind {}: {e}", self.name, self.bind));
        tcp.set_nonblocking(true).expect("nonblocking listener");
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            addr: self.bind,
            keyring,
            stop: AtomicBool::new(false),
            nonce: AtomicU64::new(1),
            started: Instant::now(),
            state: Mutex::new(State {
                ack_payload: self.ack_payload,
                answer_pings: true,
                incarnation: 1,
                meta: msg::tags_meta(&self.tags),
                pings: 0,
                packets: 0,
                queries: Vec::new(),
                responses: Vec::new(),
                acks: Vec::new(),
                streams: 0,
            }),
        });
        let udp = Arc::new(udp);
        let threads = vec![
            {
                let (s, u) = (shared.clone(), udp.clone());
                std::thread::Builder::new()
                    .name(format!("fake-{}-udp", self.name))
                    .spawn(move || udp_loop(&s, &u))
                    .expect("spawning fake node udp thread")
            },
            {
                let (s, u) = (shared.clone(), udp.clone());
                std::thread::Builder::new()
                    .name(format!("fake-{}-tcp", self.name))
                    .spawn(move || tcp_loop(&s, &tcp, &u))
                    .expect("spawning fake node tcp thread")
            },
        ];
        FakeNode {
            shared,
            udp,
            threads,
        }
    }
}

/// A fake member on a loopback address. Dropping it stops its threads and closes its sockets.
#[derive(Debug)]
pub struct FakeNode {
    shared: Arc<Shared>,
    udp: Arc<UdpSocket>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    addr: SocketAddr,
    keyring: Option<Keyring>,
    stop: AtomicBool,
    nonce: AtomicU64,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    ack_payload: Option<Vec<u8>>,
    answer_pings: bool,
    incarnation: u32,
    meta: Vec<u8>,
    pings: u64,
    packets: u64,
    queries: Vec<SeenQuery>,
    responses: Vec<SeenResponse>,
    acks: Vec<(u32, Option<Vec<u8>>)>,
    streams: u64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a test thread while holding the lock must not hide the real failure.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.started.elapsed() < MAX_LIFETIME
    }

    /// A fresh AES-GCM nonce: a counter, which is all a test needs (never reused per node).
    fn nonce(&self) -> [u8; 12] {
        let n = self.nonce.fetch_add(1, Ordering::Relaxed);
        let mut out = [0u8; 12];
        out[4..].copy_from_slice(&n.to_be_bytes());
        out
    }

    fn write_opts(&self, compress: bool) -> WriteOptions<'_> {
        WriteOptions {
            label: b"",
            keyring: self.keyring.as_ref(),
            compress,
            crc: false,
        }
    }

    fn read_opts(&self) -> ReadOptions<'_> {
        ReadOptions {
            label: b"",
            keyring: self.keyring.as_ref(),
            verify_incoming: self.keyring.is_some(),
        }
    }

    /// Our own entry in a push/pull.
    fn own_state(&self) -> PushNodeState {
        let st = self.state();
        msg::push_node(
            &self.name,
            self.addr,
            st.incarnation,
            NodeStateKind::Alive,
            &st.meta,
        )
    }

    fn push_pull_stream(&self, join: bool) -> Vec<u8> {
        let pp = PushPull {
            join,
            nodes: vec![self.own_state()],
            user_state: msg::serf_state(1, &[(&self.name, 1)]),
        };
        wire::encode_stream(
            &StreamMessage::PushPull(pp),
            &self.write_opts(true),
            self.nonce(),
        )
    }

    fn send_packet(&self, udp: &UdpSocket, to: SocketAddr, msgs: &[Vec<u8>]) {
        let bytes = wire::encode_packet(msgs, &self.write_opts(false), self.nonce());
        // Loopback sends only fail when the buffer is full; the test sees the consequence.
        let _ = udp.send_to(&bytes, to);
    }
}

impl FakeNode {
    /// A fake node called `name` on a fresh port of `host`.
    pub fn builder(name: &str, host: &Loopback) -> FakeNodeBuilder {
        FakeNodeBuilder {
            name: name.into(),
            bind: host.addr(),
            key: None,
            tags: Vec::new(),
            ack_payload: Some(msg::coordinate(&[0.0; 8], 1.5, 0.0, 1e-5)),
        }
    }

    /// Shorthand for `FakeNode::builder(name, host).start()`.
    #[track_caller]
    pub fn start(name: &str, host: &Loopback) -> FakeNode {
        Self::builder(name, host).start()
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its gossip address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The payload of acks from now on (`None`: a nil payload, as relayed acks carry).
    pub fn set_ack_payload(&self, payload: Option<Vec<u8>>) {
        self.shared.state().ack_payload = payload;
    }

    /// Whether it answers pings at all (turn off to let the agent's failure detector take it).
    pub fn set_answer_pings(&self, on: bool) {
        self.shared.state().answer_pings = on;
    }

    /// How many pings (UDP and TCP) it has acked.
    pub fn pings_answered(&self) -> u64 {
        self.shared.state().pings
    }

    /// How many datagrams it has received.
    pub fn packets_received(&self) -> u64 {
        self.shared.state().packets
    }

    /// How many streams the agent opened to it.
    pub fn streams_accepted(&self) -> u64 {
        self.shared.state().streams
    }

    /// The Serf queries it has received, oldest first.
    pub fn queries(&self) -> Vec<SeenQuery> {
        self.shared.state().queries.clone()
    }

    /// The Serf query responses and acks it has received, oldest first.
    pub fn responses(&self) -> Vec<SeenResponse> {
        self.shared.state().responses.clone()
    }

    /// Waits until it has received a query called `name`; panics with what it did see.
    #[track_caller]
    pub fn wait_query(&self, name: &str, deadline: Duration) -> SeenQuery {
        wait_until(
            deadline,
            &format!("fake node {} to receive a {name:?} query", self.name()),
            || {
                let seen = self.queries();
                seen.iter()
                    .find(|q| q.name == name)
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "{} queries seen: {:?}",
                            seen.len(),
                            seen.iter()
                                .map(|q| (&q.name, q.ltime, q.id))
                                .collect::<Vec<_>>()
                        )
                    })
            },
        )
    }

    /// The acks it has received (sequence number and payload), oldest first.
    pub fn acks(&self) -> Vec<(u32, Option<Vec<u8>>)> {
        self.shared.state().acks.clone()
    }

    /// Pings the agent `name` gossiping at `agent` and waits for its ack: a round trip that
    /// proves the agent has read every datagram we sent it before (it reads its socket in
    /// order) and still answers. Returns the ack's payload; panics if no ack comes.
    #[track_caller]
    pub fn round_trip(&self, agent: SocketAddr, name: &str, deadline: Duration) -> Option<Vec<u8>> {
        let seq = 0x5000_0000 | (self.shared.nonce.fetch_add(1, Ordering::Relaxed) as u32 & 0xffff);
        let ping = msg::ping(seq, name, Some((self.addr(), self.name())));
        let mut sent: Option<Instant> = None;
        wait_until(
            deadline,
            &format!(
                "{name} at {agent} to ack ping {seq} from fake node {}",
                self.name()
            ),
            || {
                if let Some((_, p)) = self.acks().into_iter().find(|(s, _)| *s == seq) {
                    return Ok(p);
                }
                // UDP may drop: ask again every second.
                if sent.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    self.send(agent, std::slice::from_ref(&ping));
                    sent = Some(Instant::now());
                }
                Err(format!(
                    "{} acks received, none for {seq}",
                    self.acks().len()
                ))
            },
        )
    }

    /// Joins the agent gossiping at `agent`: a push/pull with `Join: true` announcing this node
    /// alive, as `serf join` does. Returns the names in the agent's reply.
    pub fn join(&self, agent: SocketAddr) -> Result<Vec<(String, NodeStateKind)>, String> {
        let request = self.shared.push_pull_stream(true);
        let mut conn = TcpStream::connect_timeout(&agent, STREAM_DEADLINE)
            .map_err(|e| format!("dial {agent}: {e}"))?;
        conn.set_write_timeout(Some(STREAM_DEADLINE))
            .and_then(|()| conn.write_all(&request))
            .map_err(|e| format!("write push/pull to {agent}: {e}"))?;
        match read_stream(&self.shared, &mut conn)? {
            StreamMessage::PushPull(pp) => {
                Ok(pp.nodes.into_iter().map(|n| (n.name, n.state)).collect())
            }
            other => Err(format!("{agent} answered the join with {other:?}")),
        }
    }

    /// Sends `msgs` (each a whole encoded message, see [`msg`]) in one datagram: alone, or in a
    /// compound; encrypted when the node has a key.
    pub fn send(&self, to: SocketAddr, msgs: &[Vec<u8>]) {
        self.shared.send_packet(&self.udp, to, msgs);
    }

    /// Sends each message in its own datagram.
    pub fn send_each(&self, to: SocketAddr, msgs: &[Vec<u8>]) {
        for m in msgs {
            self.send(to, std::slice::from_ref(m));
        }
    }

    /// Sends these exact bytes as one datagram: no compound, no encryption.
    pub fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        let _ = self.udp.send_to(bytes, to);
    }

    /// An `alive` about this node with its current incarnation and tags.
    pub fn alive(&self) -> Vec<u8> {
        let st = self.shared.state();
        msg::alive(
            &self.shared.name,
            self.shared.addr,
            st.incarnation,
            &st.meta,
        )
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn udp_loop(shared: &Shared, udp: &UdpSocket) {
    let mut buf = vec![0u8; 65_536];
    while shared.running() {
        let (n, from) = match udp.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            // ICMP errors from earlier sends; nothing to do.
            Err(_) => continue,
        };
        shared.state().packets += 1;
        let Ok(packet) = wire::decode_packet(&buf[..n], &shared.read_opts()) else {
            continue;
        };
        for m in packet.messages {
            handle_message(shared, udp, from, m);
        }
    }
}

fn handle_message(shared: &Shared, udp: &UdpSocket, from: SocketAddr, m: Message) {
    match m {
        Message::Ping(p) if p.node.is_empty() || p.node == shared.name => {
            let payload = {
                let mut st = shared.state();
                if !st.answer_pings {
                    return;
                }
                st.pings += 1;
                st.ack_payload.clone()
            };
            let to = match (p.source_addr, p.source_port) {
                (Some(ip), port) if port != 0 => SocketAddr::new(ip, port),
                _ => from,
            };
            shared.send_packet(udp, to, &[msg::ack(p.seq_no, payload)]);
        }
        // Someone doubts us: refute, as a member would (spec §3.3), to whoever told us.
        Message::Suspect(s) if s.node == shared.name => refute(shared, udp, from, s.incarnation),
        Message::Dead(d) if d.node == shared.name && d.from != shared.name => {
            refute(shared, udp, from, d.incarnation)
        }
        Message::Ack(a) => push_bounded(&mut shared.state().acks, (a.seq_no, a.payload)),
        Message::User(body) => record_serf(shared, &body),
        _ => {}
    }
}

fn refute(shared: &Shared, udp: &UdpSocket, to: SocketAddr, accused: u32) {
    let alive = {
        let mut st = shared.state();
        if accused >= st.incarnation {
            st.incarnation = accused.saturating_add(1);
        }
        msg::alive(&shared.name, shared.addr, st.incarnation, &st.meta)
    };
    shared.send_packet(udp, to, &[alive]);
}

/// Records Serf queries (type 4) and responses (type 5); everything else is ignored.
fn record_serf(shared: &Shared, body: &[u8]) {
    match body.split_first() {
        Some((4, rest)) => {
            if let Some(q) = msg::decode_query(rest) {
                let mut st = shared.state();
                push_bounded(&mut st.queries, q);
            }
        }
        Some((5, rest)) => {
            if let Some(r) = msg::decode_query_response(rest) {
                let mut st = shared.state();
                push_bounded(&mut st.responses, r);
            }
        }
        _ => {}
    }
}

fn push_bounded<T>(v: &mut Vec<T>, item: T) {
    if v.len() >= MAX_RECORDED {
        v.remove(0);
    }
    v.push(item);
}

fn tcp_loop(shared: &Shared, listener: &TcpListener, udp: &UdpSocket) {
    let _ = udp; // streams are answered on the stream itself
    while shared.running() {
        match listener.accept() {
            Ok((mut conn, _from)) => {
                shared.state().streams += 1;
                let _ = serve_stream(shared, &mut conn);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

/// Answers one stream: a push/pull with our own state (same `Join` flag), a ping with an ack.
fn serve_stream(shared: &Shared, conn: &mut TcpStream) -> Result<(), String> {
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    let reply = match read_stream(shared, conn)? {
        StreamMessage::PushPull(pp) => shared.push_pull_stream(pp.join),
        StreamMessage::Ping(p) => {
            shared.state().pings += 1;
            wire::encode_stream(
                &StreamMessage::Ack(wire::Ack {
                    seq_no: p.seq_no,
                    payload: None,
                }),
                &shared.write_opts(true),
                shared.nonce(),
            )
        }
        _ => return Ok(()),
    };
    conn.set_write_timeout(Some(STREAM_DEADLINE))
        .and_then(|()| conn.write_all(&reply))
        .map_err(|e| e.to_string())
}

/// Reads one whole stream message within [`STREAM_DEADLINE`].
fn read_stream(shared: &Shared, conn: &mut TcpStream) -> Result<StreamMessage, String> {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let left = STREAM_DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "no whole stream message within {STREAM_DEADLINE:?}"
            ));
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = conn
            .read(&mut chunk)
            .map_err(|e| format!("reading stream: {e}"))?;
        if n == 0 {
            return Err(format!("stream closed after {} bytes", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
        match wire::decode_stream(&buf, &shared.read_opts()) {
            Ok(Some((m, _))) => return Ok(m),
            Ok(None) if buf.len() > MAX_STREAM_BYTES => {
                return Err(format!("stream message over {MAX_STREAM_BYTES} bytes"))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("undecodable stream: {e}")),
        }
    }
}

/// How to dribble bytes into a stream.
#[derive(Debug, Clone, Copy)]
pub struct Trickle {
    /// Bytes per write (each its own TCP segment: `TCP_NODELAY` is set).
    pub chunk: usize,
    /// Pause between writes.
    pub interval: Duration,
    /// Stop writing after this long even if the peer keeps the connection open.
    pub max_duration: Duration,
}

/// What a [`trickle`] saw.
#[derive(Debug, Clone)]
pub struct TrickleReport {
    /// Bytes written before the end.
    pub sent: usize,
    pub writes: usize,
    /// When the peer closed (or reset) the connection, measured from the connect; `None` if it
    /// was still open at `max_duration`.
    pub closed_after: Option<Duration>,
    /// What the peer wrote back (e.g. an error response), at most 64 KiB.
    pub reply: Vec<u8>,
}

/// Connects to `to` and writes `bytes` `chunk` bytes at a time, one write per `interval`, until
/// all are sent, the peer closes, or `max_duration` passes.
pub fn trickle(to: SocketAddr, bytes: &[u8], how: Trickle) -> Result<TrickleReport, String> {
    let start = Instant::now();
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .map_err(|e| format!("dial {to}: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut reader = conn.try_clone().map_err(|e| e.to_string())?;
    let closed = Arc::new(Mutex::new(None::<Duration>));
    let reply = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (closed, reply) = (closed.clone(), reply.clone());
        let limit = how.max_duration + Duration::from_secs(2);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let _ = reader.set_read_timeout(Some(TICK));
            while start.elapsed() < limit {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut r = reply.lock().unwrap_or_else(|p| p.into_inner());
                        if r.len() < 64 << 10 {
                            r.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue
                    }
                    Err(_) => break,
                }
            }
            if start.elapsed() < limit {
                *closed.lock().unwrap_or_else(|p| p.into_inner()) = Some(start.elapsed());
            }
        })
    };
    let chunk = how.chunk.max(1);
    let (mut sent, mut writes) = (0, 0);
    for piece in bytes.chunks(chunk) {
        if start.elapsed() >= how.max_duration
            || closed.lock().unwrap_or_else(|p| p.into_inner()).is_some()
        {
            break;
        }
        if conn.write_all(piece).is_err() {
            let mut c = closed.lock().unwrap_or_else(|p| p.into_inner());
            c.get_or_insert(start.elapsed());
            break;
        }
        sent += piece.len();
        writes += 1;
        std::thread::sleep(how.interval);
    }
    // Wake the watcher if the peer is still silent, then collect what it saw.
    let _ = conn.shutdown(std::net::Shutdown::Both);
    let _ = watcher.join();
    let closed_after = *closed.lock().unwrap_or_else(|p| p.into_inner());
    let reply = reply.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(TrickleReport {
        sent,
        writes,
        // Our own shutdown above ends the watcher too; only a close before max_duration counts.
        closed_after: closed_after.filter(|d| *d < how.max_duration),
        reply,
    })
}

/// What a process costs, from `/proc/PID/status` and `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcUsage {
    /// `VmRSS`: resident memory now.
    pub rss_kib: u64,
    /// `VmHWM`: the most resident memory the process ever had.
    pub peak_rss_kib: u64,
    /// User plus system CPU time of all its threads.
    pub cpu: Duration,
}

/// Reads `pid`'s memory and CPU use.
pub fn proc_usage(pid: u32) -> Result<ProcUsage, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    let kib = |key: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("unreadable /proc/{pid}/stat: {stat}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unreadable /proc/{pid}/stat: {stat}"))
    };
    // USER_HZ is 100 on every Linux architecture we run on.
    let cpu_ticks = ticks(11)? + ticks(12)?;
    Ok(ProcUsage {
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
        cpu: Duration::from_millis(cpu_ticks * 10),
    })
}

/// Builders for the messages a hostile peer sends: each returns one whole memberlist message
/// (type byte first), ready for [`FakeNode::send`]. Serf messages come wrapped in a memberlist
/// user message (`08 <serf type> <body>`). All are written by the project's own encoders
/// (`vassal_memberlist::wire`, `vassal_serf::messages`), except the decompression bomb, whose
/// crafted LZW stream no encoder writes.
pub mod msg {
    use super::*;
    use std::collections::BTreeMap;
    use vassal_memberlist::wire::msgpack::Writer;
    use vassal_serf::coordinate::Coordinate;
    use vassal_serf::messages::{self as serf_msg, SerfMessage};
    use vassal_serf::{Member, MemberStatus};

    /// Serf tags as node metadata: `ff` + a msgpack map, keys sorted (spec §4.3). Panics if
    /// they encode to more than Serf's 512-byte limit.
    #[track_caller]
    pub fn tags_meta(tags: &[(String, String)]) -> Vec<u8> {
        let tags: BTreeMap<String, String> = tags.iter().cloned().collect();
        vassal_serf::tags::encode(&tags).unwrap_or_else(|e| panic!("fake node tags: {e}"))
    }

    /// `alive` (type 4) for `node` at `addr`.
    pub fn alive(node: &str, addr: SocketAddr, incarnation: u32, meta: &[u8]) -> Vec<u8> {
        wire::encode_message(&Message::Alive(wire::Alive {
            incarnation,
            node: node.into(),
            addr: addr.ip(),
            port: addr.port(),
            meta: meta.to_vec(),
            vsn: VSN,
        }))
    }

    /// `suspect` (type 3): `from` suspects `node` at `incarnation`.
    pub fn suspect(node: &str, incarnation: u32, from: &str) -> Vec<u8> {
        wire::encode_message(&Message::Suspect(wire::Suspect {
            incarnation,
            node: node.into(),
            from: from.into(),
        }))
    }

    /// `dead` (type 5): `from` declares `node` dead at `incarnation` (`from == node`: a leave).
    pub fn dead(node: &str, incarnation: u32, from: &str) -> Vec<u8> {
        wire::encode_message(&Message::Dead(wire::Dead {
            incarnation,
            node: node.into(),
            from: from.into(),
        }))
    }

    /// `ping` (type 0) for `node`, asking for the ack at `source` if given.
    pub fn ping(seq_no: u32, node: &str, source: Option<(SocketAddr, &str)>) -> Vec<u8> {
        wire::encode_message(&Message::Ping(wire::Ping {
            seq_no,
            node: node.into(),
            source_addr: source.map(|(a, _)| a.ip()),
            source_port: source.map_or(0, |(a, _)| a.port()),
            source_node: source.map_or(String::new(), |(_, n)| n.into()),
        }))
    }

    /// `ackResp` (type 2) with any payload.
    pub fn ack(seq_no: u32, payload: Option<Vec<u8>>) -> Vec<u8> {
        wire::encode_message(&Message::Ack(wire::Ack { seq_no, payload }))
    }

    /// `compound` (type 7) of up to 255 messages.
    pub fn compound(parts: &[Vec<u8>]) -> Vec<u8> {
        assert!(parts.len() <= 255, "a compound holds at most 255 parts");
        wire::encode_compound_one(parts)
    }

    /// `compress` (type 9): `msg` LZW-compressed, as Go sends it.
    pub fn compress(msg: &[u8]) -> Vec<u8> {
        wire::compress_message(msg)
    }

    /// `hasCrc` (type 12) around `msg`.
    pub fn crc(msg: &[u8]) -> Vec<u8> {
        wire::add_crc(msg)
    }

    /// A ping-ack payload carrying a Vivaldi coordinate: `01` + msgpack `{Adjustment, Error,
    /// Height, Vec}` (spec §4.13). Any values, valid or not.
    pub fn coordinate(vec: &[f64], error: f64, adjustment: f64, height: f64) -> Vec<u8> {
        Coordinate {
            vec: vec.to_vec(),
            error,
            adjustment,
            height,
        }
        .to_ack_payload()
    }

    /// A Serf message in a memberlist user message (`08 <serf type> <body>`).
    fn serf(m: SerfMessage) -> Vec<u8> {
        wire::encode_message(&Message::User(serf_msg::encode(&m)))
    }

    /// A Serf join intent (type 1).
    pub fn join_intent(ltime: u64, node: &str) -> Vec<u8> {
        serf(SerfMessage::Join(serf_msg::Join {
            ltime,
            node: node.into(),
        }))
    }

    /// A Serf leave intent (type 0).
    pub fn leave_intent(ltime: u64, node: &str, prune: bool) -> Vec<u8> {
        serf(SerfMessage::Leave(serf_msg::Leave {
            ltime,
            node: node.into(),
            prune,
        }))
    }

    /// A Serf user event (type 3).
    pub fn user_event(ltime: u64, name: &str, payload: &[u8], cc: bool) -> Vec<u8> {
        serf(SerfMessage::UserEvent(serf_msg::UserEvent {
            ltime,
            name: name.into(),
            payload: payload.to_vec(),
            cc,
        }))
    }

    /// A Serf query (type 4), every field settable.
    #[derive(Debug, Clone)]
    pub struct Query {
        pub ltime: u64,
        pub id: u32,
        pub name: String,
        pub payload: Vec<u8>,
        /// `Addr:Port`: where acks and responses go.
        pub reply_to: SocketAddr,
        pub source_node: String,
        /// Each a whole filter: see [`node_filter`].
        pub filters: Vec<Vec<u8>>,
        /// 1: ack requested; 2: do not rebroadcast.
        pub flags: u32,
        pub relay_factor: u8,
        /// Nanoseconds (Go's `int64`; any `u64` may be sent).
        pub timeout_ns: u64,
    }

    impl Query {
        /// A query with no filters, no flags and a 5 s timeout.
        pub fn new(ltime: u64, id: u32, name: &str, reply_to: SocketAddr, source: &str) -> Self {
            Query {
                ltime,
                id,
                name: name.into(),
                payload: Vec::new(),
                reply_to,
                source_node: source.into(),
                filters: Vec::new(),
                flags: 0,
                relay_factor: 0,
                timeout_ns: 5_000_000_000,
            }
        }
    }

    /// A Serf query (type 4), keys in Go's order (spec §4.2).
    pub fn query(q: &Query) -> Vec<u8> {
        serf(SerfMessage::Query(serf_msg::QueryMsg {
            ltime: q.ltime,
            id: q.id,
            addr: q.reply_to.ip(),
            port: q.reply_to.port(),
            source_node: q.source_node.clone(),
            filters: q.filters.clone(),
            flags: q.flags,
            relay_factor: q.relay_factor,
            timeout: q.timeout_ns,
            name: q.name.clone(),
            payload: q.payload.clone(),
        }))
    }

    /// A node filter for [`Query::filters`]: `00` + the names.
    pub fn node_filter(names: &[&str]) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        serf_msg::node_filter(&names)
    }

    /// A Serf query response (type 5); `flags` 1 makes it an ack.
    pub fn query_response(ltime: u64, id: u32, from: &str, flags: u32, payload: &[u8]) -> Vec<u8> {
        serf(SerfMessage::QueryResponse(serf_msg::QueryResponseMsg {
            ltime,
            id,
            from: from.into(),
            flags,
            payload: payload.to_vec(),
        }))
    }

    /// The payload of a `_serf_conflict` answer: `06` + a Serf `Member` saying `name` is at
    /// `addr` (alive, stock protocol versions, no tags).
    pub fn conflict_response(name: &str, addr: SocketAddr) -> Vec<u8> {
        serf_msg::encode_conflict_response(Some(&Member {
            name: name.into(),
            addr: addr.ip(),
            port: addr.port(),
            tags: BTreeMap::new(),
            status: MemberStatus::Alive,
            vsn: VSN,
        }))
    }

    /// Serf's push/pull user state (`02` + `messagePushPull`, spec §4.11) with every clock at
    /// `ltime` and these members' status times.
    pub fn serf_state(ltime: u64, members: &[(&str, u64)]) -> Vec<u8> {
        serf_msg::encode(&SerfMessage::PushPull(serf_msg::PushPullState {
            ltime,
            status_ltimes: members.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect(),
            left_members: Vec::new(),
            event_ltime: ltime,
            events: Vec::new(),
            query_ltime: ltime,
        }))
    }

    /// One node entry of a push/pull.
    pub fn push_node(
        name: &str,
        addr: SocketAddr,
        incarnation: u32,
        state: NodeStateKind,
        meta: &[u8],
    ) -> PushNodeState {
        PushNodeState {
            name: name.into(),
            addr: addr.ip(),
            port: addr.port(),
            meta: meta.to_vec(),
            incarnation,
            state,
            vsn: VSN.to_vec(),
        }
    }

    /// A whole push/pull stream message (`06` + header + nodes + user state), uncompressed and
    /// unencrypted: the bytes a trickle attack dribbles.
    pub fn push_pull(join: bool, nodes: Vec<PushNodeState>, user_state: Vec<u8>) -> Vec<u8> {
        wire::encode_stream_body(&StreamMessage::PushPull(PushPull {
            join,
            nodes,
            user_state,
        }))
    }

    /// A push/pull announcing `n` alive nodes `{prefix}{i}` at `addr` with consecutive ports:
    /// large, well formed, and valid until its last byte.
    pub fn big_push_pull(prefix: &str, n: usize, ip: IpAddr) -> Vec<u8> {
        let nodes = (0..n)
            .map(|i| {
                let port = 20_000 + (i % 10_000) as u16;
                push_node(
                    &format!("{prefix}{i:07}"),
                    SocketAddr::new(ip, port),
                    1,
                    NodeStateKind::Alive,
                    &[0xff, 0x80],
                )
            })
            .collect();
        push_pull(false, nodes, serf_state(1, &[]))
    }

    /// Go's LZW stream (LSB, 8-bit literals) that decompresses to `len` zero bytes from far
    /// fewer: it grows the code table along one run of zeros until it is full (codes of 12
    /// bits), then repeats the longest code. About 19 KB make 40 MiB. Decoders that keep using
    /// a full table without a clear code (Go's, `weezl`) accept it.
    pub fn lzw_bomb_stream(len: usize) -> Vec<u8> {
        const CLEAR: u32 = 256;
        const EOF: u32 = 257;
        let mut bits = BitWriter::default();
        // The decoder's state, mirrored (Go's compress/lzw reader).
        let mut width = 9u32;
        bits.put(CLEAR, width);
        // Go's `hi`: the code the next code read will define.
        let mut hi = EOF;
        let mut last_valid = false;
        let mut produced = 0usize;
        // Code c ≥ 258 stands for c − 256 zeros; literal 0 for one.
        let expands = |c: u32| if c == 0 { 1 } else { (c - 256) as usize };
        while produced < len {
            let code = if last_valid {
                hi // the entry being defined by this very code (KwKwK): one zero longer
            } else if hi == EOF {
                0 // the first code after a clear: a literal
            } else {
                hi - 1 // the table is full and frozen: its longest complete entry
            };
            if produced + expands(code) > len {
                // Finish with literals so the output is exactly `len` long.
                for _ in produced..len {
                    bits.put(0, width);
                    advance(&mut hi, &mut width, &mut last_valid);
                }
                break;
            }
            bits.put(code, width);
            produced += expands(code);
            advance(&mut hi, &mut width, &mut last_valid);
        }
        bits.put(EOF, width);
        bits.finish()
    }

    const MAX_WIDTH: u32 = 12;

    /// One code read by Go's decoder: the table grows by one (`hi`), the width grows when the
    /// next code would not fit, and at 12 bits the table freezes.
    fn advance(hi: &mut u32, width: &mut u32, last_valid: &mut bool) {
        *hi += 1;
        *last_valid = true;
        if *hi >= 1 << *width {
            if *width == MAX_WIDTH {
                *last_valid = false;
                *hi -= 1;
            } else {
                *width += 1;
            }
        }
    }

    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }

    impl BitWriter {
        fn put(&mut self, code: u32, width: u32) {
            self.acc |= u64::from(code) << self.n;
            self.n += width;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }

    /// A `compress` message (type 9) whose LZW body expands to `len` zero bytes: a
    /// decompression bomb in one datagram (spec §2.7).
    pub fn lzw_bomb(len: usize) -> Vec<u8> {
        // Written by hand: `wire::compress_message` compresses real data, and its body writer
        // is private; a bomb needs this crafted stream in the same `{Algo, Buf}` body.
        let mut w = Writer::with_buf(vec![9]);
        w.map_header(2);
        w.str("Algo");
        w.uint(0);
        w.str("Buf");
        w.raw(&lzw_bomb_stream(len));
        w.into_vec()
    }

    /// Reads a Serf query body (after the `04`), leniently; `None` if it is not one.
    pub fn decode_query(body: &[u8]) -> Option<SeenQuery> {
        let mut q = SeenQuery {
            ltime: 0,
            id: 0,
            name: String::new(),
            source_node: String::new(),
            reply_to: None,
            flags: 0,
            payload: Vec::new(),
            timeout_ns: 0,
        };
        let (mut ip, mut port) = (None, 0u16);
        Reader::new(body)
            .read_struct(|k, r| {
                match k {
                    b"LTime" => q.ltime = r.uint_as()?,
                    b"ID" => q.id = r.uint_as()?,
                    b"Name" => q.name = r.string()?,
                    b"SourceNode" => q.source_node = r.string()?,
                    b"Flags" => q.flags = r.uint_as()?,
                    b"Payload" => q.payload = r.bytes()?.to_vec(),
                    b"Timeout" => q.timeout_ns = r.uint_as()?,
                    b"Addr" => ip = wire::ip_from_bytes(r.bytes()?),
                    b"Port" => port = r.uint_as()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })
            .ok()?;
        q.reply_to = ip.map(|ip| SocketAddr::new(ip, port));
        Some(q)
    }

    /// Reads a Serf query response body (after the `05`); `None` if it is not one.
    pub fn decode_query_response(body: &[u8]) -> Option<SeenResponse> {
        let mut out = SeenResponse {
            ltime: 0,
            id: 0,
            from: String::new(),
            flags: 0,
            payload: Vec::new(),
        };
        Reader::new(body)
            .read_struct(|k, r| {
                match k {
                    b"LTime" => out.ltime = r.uint_as()?,
                    b"ID" => out.id = r.uint_as()?,
                    b"From" => out.from = r.string()?,
                    b"Flags" => out.flags = r.uint_as()?,
                    b"Payload" => out.payload = r.bytes()?.to_vec(),
                    _ => return Ok(false),
                }
                Ok(true)
            })
            .ok()?;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bomb_expands_to_exactly_what_was_asked_from_a_few_kilobytes() {
        for len in [1, 2, 3, 1000, 7_400_000, 40 << 20] {
            let stream = msg::lzw_bomb_stream(len);
            let out = wire::lzw_decompress(&stream, 64 << 20)
                .unwrap_or_else(|e| panic!("bomb of {len} bytes does not decode: {e}"));
            assert_eq!(out.len(), len);
            assert!(out.iter().all(|&b| b == 0));
        }
        let bomb = msg::lzw_bomb(40 << 20);
        assert!(bomb.len() < 24_000, "40 MiB bomb is {} bytes", bomb.len());
    }

    #[test]
    fn serf_messages_decode_as_the_fake_node_reads_them() {
        let to: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        let mut q = msg::Query::new(u64::MAX - 1, 7, "_serf_conflict", to, "a");
        q.payload = b"a".to_vec();
        q.timeout_ns = u64::MAX;
        q.filters = vec![msg::node_filter(&["x"])];
        let bytes = msg::query(&q);
        assert_eq!(&bytes[..2], &[8, 4]);
        let seen = msg::decode_query(&bytes[2..]).unwrap();
        assert_eq!(
            (
                seen.ltime,
                seen.id,
                seen.name.as_str(),
                seen.reply_to,
                seen.timeout_ns
            ),
            (u64::MAX - 1, 7, "_serf_conflict", Some(to), u64::MAX)
        );
        let r = msg::query_response(3, 9, "b", 0, &msg::conflict_response("a", to));
        let seen = msg::decode_query_response(&r[2..]).unwrap();
        assert_eq!((seen.ltime, seen.id, seen.from.as_str()), (3, 9, "b"));
        assert_eq!(seen.payload[0], 6);
    }

    #[test]
    fn own_process_usage_is_readable() {
        let u = proc_usage(std::process::id()).unwrap();
        assert!(u.rss_kib > 0 && u.peak_rss_kib >= u.rss_kib, "{u:?}");
    }

    #[test]
    fn two_fake_nodes_join_each_other_and_ack_pings() {
        let lo = Loopback::fresh();
        let a = FakeNode::start("fa", &lo);
        let b = FakeNode::start("fb", &lo);
        joined_and_pinged(&a, &b);
    }

    #[test]
    fn two_fake_nodes_with_one_key_join_each_other_and_ack_pings() {
        let lo = Loopback::fresh();
        let key = [7u8; 32];
        let a = FakeNode::builder("fa", &lo).key(&key).start();
        let b = FakeNode::builder("fb", &lo).key(&key).start();
        joined_and_pinged(&a, &b);
        let stranger = FakeNode::start("fc", &lo);
        assert!(stranger.join(a.addr()).is_err(), "a joined without the key");
    }

    fn joined_and_pinged(a: &FakeNode, b: &FakeNode) {
        let names = b.join(a.addr()).unwrap();
        assert_eq!(names, vec![("fa".to_string(), NodeStateKind::Alive)]);
        b.send(a.addr(), &[msg::ping(1, "fa", Some((b.addr(), "fb")))]);
        wait_until(Duration::from_secs(5), "fa to ack a ping", || {
            if a.pings_answered() == 1 {
                Ok(())
            } else {
                Err(format!("{} pings answered", a.pings_answered()))
            }
        });
    }
}
