//! The load balancer: an HTTP reverse proxy over the members tagged `role=web`, kept in step
//! with the cluster by the node's own events (no handler scripts), with active health checks
//! and retries on another backend.
//!
//! The [`Pool`] sits behind a plain mutex: every request takes it twice (pick, finish) for a
//! few hundred nanoseconds, which is cheaper than a round trip to an owning task. Requests go
//! to the backends over kept-alive connections ([`Upstreams`]) that the client connection's
//! task drives itself; the per-request metrics are handles registered once.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue, HOST};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};
use vassal_node::Handle;
use vassal_serf::{Event, Member, MemberEventKind, MemberStatus};

use crate::backend::{reported_load, web_backend, BackendPolicy, RefusedOnce};
use crate::check::CheckConfig;
use crate::http::{self, Body};
use crate::pool::{BackendStats, Balance, Outcome, Pick, Pool, PoolConfig};
use crate::relay::{Outgoing, Source};
use crate::timer::{Deadline, Kind};
use crate::upstream::{Conn, SendError, Upstreams};

/// A health check's page is read (then dropped) up to this size.
const CHECK_BODY_LIMIT: usize = 64 << 10;
/// A backend must start its answer within this.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the pool is reconciled with the full member list (events can be missed when a
/// subscriber lags; a `leaving` status has no event of its own).
const RESYNC_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Totals {
    requests: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
}

/// The balancer-wide series, registered once.
struct Counters {
    /// `vassal.lb.requests`.
    requests: metrics::Counter,
    /// `vassal.lb.retries`.
    retries: metrics::Counter,
    /// `vassal.lb.failed`.
    failed: metrics::Counter,
}

/// The balancer's shared state.
pub struct Lb {
    node: String,
    started: Instant,
    pool: Mutex<Pool>,
    /// For the health checks.
    client: Client<HttpConnector, Full<Bytes>>,
    /// For the proxied requests: one set per worker thread ([`http::Workers`]), since a
    /// connection stays on the runtime that opened it.
    upstreams: Box<[Upstreams]>,
    totals: Totals,
    counters: Counters,
    /// Which member addresses may be backends.
    policy: BackendPolicy,
    /// Refused backends already logged.
    refused: Mutex<RefusedOnce>,
    /// What a health check asks and accepts.
    check: CheckConfig,
}

/// What `/stats.json` returns.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub node: String,
    pub uptime_secs: u64,
    pub requests: u64,
    pub retries: u64,
    pub failed: u64,
    pub in_rotation: Vec<String>,
    pub backends: Vec<BackendStats>,
}

impl Lb {
    /// A balancer whose requests are served on `workers` threads (see [`http::Workers`]; 1
    /// when they are served on the caller's runtime).
    pub fn new(
        node: &str,
        policy: BackendPolicy,
        check: CheckConfig,
        balance: Balance,
        workers: usize,
    ) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        Arc::new(Lb {
            node: node.to_owned(),
            started: Instant::now(),
            pool: Mutex::new(Pool::new(PoolConfig {
                check_interval: check.interval,
                fall: check.fall,
                rise: check.rise,
                balance,
            })),
            client,
            upstreams: (0..workers.max(1)).map(|_| Upstreams::default()).collect(),
            totals: Totals::default(),
            counters: Counters {
                requests: metrics::counter!("vassal.lb.requests"),
                retries: metrics::counter!("vassal.lb.retries"),
                failed: metrics::counter!("vassal.lb.failed"),
            },
            policy,
            refused: Mutex::new(RefusedOnce::default()),
            check,
        })
    }

    /// The backend connections of the worker thread running the caller.
    fn upstreams(&self) -> &Upstreams {
        &self.upstreams[http::worker_index() % self.upstreams.len()]
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock leaves a consistent pool (each method is one step).
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes how many backends are in rotation (`vassal.lb.in_rotation`), after any change
    /// to the pool's membership or checks.
    fn publish_rotation(pool: &Pool) {
        metrics::gauge!("vassal.lb.in_rotation").set(pool.in_rotation().len() as f64);
    }

    /// A request the balancer could not serve (`vassal.lb.failed`).
    fn count_failed(&self) {
        self.totals.failed.fetch_add(1, Ordering::Relaxed);
        self.counters.failed.increment(1);
    }

    pub fn stats(&self) -> Stats {
        let now = Instant::now();
        let pool = self.pool();
        Stats {
            node: self.node.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            requests: self.totals.requests.load(Ordering::Relaxed),
            retries: self.totals.retries.load(Ordering::Relaxed),
            failed: self.totals.failed.load(Ordering::Relaxed),
            in_rotation: pool.in_rotation().iter().map(|s| s.to_string()).collect(),
            backends: pool.stats(now),
        }
    }

    /// Where `m`'s web server is, if it is a backend the policy allows; a refusal is logged
    /// once per member and address.
    fn backend(&self, m: &Member) -> Option<SocketAddr> {
        match web_backend(m, &self.policy) {
            Ok(addr) => addr,
            Err(why) => {
                let first = self
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .first(&why);
                if first {
                    warn!("lb: {why}; not a backend until then");
                }
                None
            }
        }
    }

    fn apply_event(&self, kind: MemberEventKind, members: &[Member]) {
        let now = Instant::now();
        for m in members {
            let addr = self.backend(m);
            let mut pool = self.pool();
            match (kind, addr) {
                (MemberEventKind::Reap, _) | (_, None) => pool.remove(&m.name),
                (MemberEventKind::Join | MemberEventKind::Update, Some(a)) => {
                    pool.member_alive(&m.name, a, now);
                    pool.set_load(&m.name, reported_load(m));
                }
                (MemberEventKind::Leave, Some(_)) => pool.member_left(&m.name),
                (MemberEventKind::Failed, Some(_)) => pool.member_failed(&m.name),
            }
            debug!(node = %m.name, event = %kind, in_rotation = ?pool.in_rotation(), "lb: member event");
            Self::publish_rotation(&pool);
        }
    }

    /// Makes the pool agree with the member list.
    fn resync(&self, members: &[Member]) {
        let now = Instant::now();
        let backends: Vec<(&Member, SocketAddr)> = members
            .iter()
            .filter_map(|m| self.backend(m).map(|a| (m, a)))
            .collect();
        let mut pool = self.pool();
        let stale: Vec<String> = pool
            .names()
            .filter(|n| !backends.iter().any(|(m, _)| m.name == *n))
            .map(str::to_owned)
            .collect();
        for n in stale {
            pool.remove(&n);
        }
        for (m, a) in backends {
            match m.status {
                MemberStatus::Alive => {
                    pool.member_alive(&m.name, a, now);
                    pool.set_load(&m.name, reported_load(m));
                }
                MemberStatus::Leaving | MemberStatus::Left => pool.member_left(&m.name),
                MemberStatus::Failed => pool.member_failed(&m.name),
                MemberStatus::None => {}
            }
        }
        Self::publish_rotation(&pool);
    }

    /// Closes idle backend connections that have waited too long or whose backend is out of
    /// rotation, and forgets backends no longer in the pool.
    fn sweep_idle(&self) {
        let in_rotation: Vec<String> = self
            .pool()
            .in_rotation()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let known: Vec<String> = self.pool().names().map(str::to_owned).collect();
        let now = Instant::now();
        for upstreams in &self.upstreams {
            upstreams.sweep(now, |name| {
                if in_rotation.iter().any(|n| n == name) {
                    Some(true)
                } else if known.iter().any(|n| n == name) {
                    Some(false)
                } else {
                    None
                }
            });
        }
    }

    /// One health check: `GET <path>` answered within the timeout with a status the
    /// [`CheckConfig`] accepts (by default any below 500).
    async fn check(self: Arc<Self>, pick: Pick) {
        let timeout = self.check.timeout;
        let req = Request::get(format!("http://{}{}", pick.addr, self.check.path))
            .header("user-agent", "vassal-lb-check")
            .body(Full::new(Bytes::new()));
        let checked = async {
            // An address no URI can hold fails its check rather than the agent.
            let req = req.map_err(|e| e.to_string())?;
            match tokio::time::timeout(timeout, self.client.request(req)).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(describe(&e)),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        };
        let (ok, detail) = match checked.await {
            Ok(resp) => {
                let status = resp.status();
                // Read the page to the end (within the timeout, and at most a few pages'
                // worth) so the connection goes back to the pool.
                let _ = tokio::time::timeout(
                    timeout,
                    Limited::new(resp.into_body(), CHECK_BODY_LIMIT).collect(),
                )
                .await;
                let ok = self.check.status.contains(status.as_u16());
                let detail = if ok {
                    format!("HTTP {}", status.as_u16())
                } else {
                    format!("HTTP {}, expected {}", status.as_u16(), self.check.status)
                };
                (ok, detail)
            }
            Err(detail) => (false, detail),
        };
        let mut pool = self.pool();
        let was = pool.in_rotation().contains(&&*pick.name);
        pool.check_result(&pick, ok, detail.clone(), Instant::now());
        let is = pool.in_rotation().contains(&&*pick.name);
        Self::publish_rotation(&pool);
        drop(pool);
        if !ok {
            metrics::counter!("vassal.lb.check_failures", "backend" => pick.name.to_string())
                .increment(1);
        }
        if was != is {
            info!(backend = %pick.name, addr = %pick.addr, check = %detail,
                "lb: {} is {} rotation", pick.name, if is { "in" } else { "out of" });
        }
    }

    /// Waits for `send`: a backend must start its answer within [`RESPONSE_TIMEOUT`] of the
    /// request, or of the last piece of its body the client sent (an upload of any length
    /// is not cut off while it moves).
    async fn answer_within<F: std::future::Future>(
        &self,
        sent: Instant,
        source: Option<&Source>,
        mut send: Pin<&mut F>,
    ) -> Result<F::Output, ()> {
        let mut since = source.map_or(sent, |s| s.progress().max(sent));
        let mut timeout = Deadline::at((since + RESPONSE_TIMEOUT).into(), Kind::Answer);
        loop {
            tokio::select! {
                biased;
                r = &mut send => return Ok(r),
                () = &mut timeout => {
                    let progress = source.map_or(since, Source::progress);
                    if progress <= since {
                        return Err(());
                    }
                    since = progress;
                    timeout.reset((since + RESPONSE_TIMEOUT).into());
                }
            }
        }
    }

    /// Proxies one request to a backend in rotation, retrying on the next one when a backend
    /// cannot be reached (or, for idempotent methods, when it broke before answering).
    pub async fn proxy(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        self.totals.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.requests.increment(1);
        let (parts, body) = req.into_parts();
        // A bodiless request (most are) can be sent again as it is; a body streams from the
        // client, and the request is retried only while none of it has gone to a backend.
        let source = (!body.is_end_stream()).then(|| Source::new(body, Instant::now()));
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        // Origin form: the backend is named by the Host header (the client's, or its address).
        let path = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        // The first attempt takes these; a retry builds them again.
        let mut headers = Some(forwarded_headers(&parts.headers, peer));
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        loop {
            let Some(pick) = self.pool().pick(&tried) else {
                self.count_failed();
                return local(if tried.is_empty() {
                    http::text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no backend in rotation: no alive member tagged role=web passes its health check",
                    )
                } else {
                    http::text(
                        StatusCode::BAD_GATEWAY,
                        format!("every backend tried failed: {}", errors.join("; ")),
                    )
                });
            };
            if !tried.is_empty() {
                self.totals.retries.fetch_add(1, Ordering::Relaxed);
                self.counters.retries.increment(1);
            }
            if source.as_ref().is_some_and(|s| !s.retryable()) {
                // Part of the body went to the backend that failed: it cannot be replayed.
                self.count_failed();
                return local(http::text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "backend failed while the request body was being sent (not retried): {}",
                        errors.join("; ")
                    ),
                ));
            }
            let out_body = source
                .as_ref()
                .map_or_else(Outgoing::empty, Source::attempt);
            let mut out = Request::new(out_body);
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = path.clone();
            *out.headers_mut() = headers
                .take()
                .unwrap_or_else(|| forwarded_headers(&parts.headers, peer));
            if !out.headers().contains_key(HOST) {
                // HTTP/2 names the host in the request's authority, not in a header.
                let host = match parts.uri.authority() {
                    Some(a) => HeaderValue::from_str(a.as_str()),
                    None => HeaderValue::from_str(&pick.addr.to_string()),
                };
                if let Ok(v) = host {
                    out.headers_mut().insert(HOST, v);
                }
            }

            let sent = Instant::now();
            // Pinned here and lent: an owned future would be kept twice in the one awaiting it
            // (as its argument and as its pinned local), and copied between the two.
            let result = {
                let send = std::pin::pin!(self.upstreams().send(&pick.name, pick.addr, out));
                self.answer_within(sent, source.as_ref(), send).await
            };
            if !matches!(result, Ok(Ok(_))) {
                metrics::counter!("vassal.lb.backend.failures", "backend" => pick.name.to_string())
                    .increment(1);
            }
            match result {
                Ok(Ok((resp, conn))) => {
                    // Time to the response's headers, in milliseconds as Go's timers.
                    let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    let body = Tracked {
                        inner: rbody,
                        conn: Some(conn),
                        // The request's own handle on the balancer: a clone would be two
                        // more counts on an atomic every worker thread shares.
                        guard: Some(Finish { lb: self, pick }),
                        latency_ms,
                    };
                    return Response::from_parts(rparts, ProxyBody::Backend(body));
                }
                Ok(Err(e)) => {
                    let connect = matches!(e, SendError::Connect(_));
                    let outcome = if connect {
                        Outcome::ConnectFailed
                    } else {
                        Outcome::Broken
                    };
                    self.pool().finished(&pick, outcome, Instant::now());
                    warn!(backend = %pick.name, addr = %pick.addr, "lb: {e}");
                    errors.push(format!("{}: {e}", pick.name));
                    tried.push(pick.name);
                    if !(connect || idempotent) {
                        self.count_failed();
                        return local(http::text(
                            StatusCode::BAD_GATEWAY,
                            format!("backend failed: {}", errors.join("; ")),
                        ));
                    }
                }
                Err(_) => {
                    self.pool().finished(&pick, Outcome::Broken, Instant::now());
                    self.count_failed();
                    return local(http::text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("{} did not answer within {RESPONSE_TIMEOUT:?}", pick.name),
                    ));
                }
            }
        }
    }
}

/// What the balancer answers a client with: a backend's response, or its own.
pub enum ProxyBody {
    /// A backend's body, streamed (unboxed: most responses are these).
    Backend(Tracked),
    /// An answer of the balancer's own (no backend, a timeout).
    Local(Body),
}

/// The balancer's own answer `r`.
fn local(r: Response<Body>) -> Response<ProxyBody> {
    r.map(ProxyBody::Local)
}

impl hyper::body::Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Backend(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Local(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Backend(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Backend(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
        }
    }
}

/// An error and its causes on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Headers that concern one connection, not the request. `expect` is answered by the
/// balancer's own server (its `100 Continue`), so it does not go on either.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::EXPECT,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // The lengths of the names above: most headers are ruled out without a comparison.
    matches!(name.as_str().len(), 2 | 6 | 7 | 10 | 16 | 17 | 19) && HOP_BY_HOP.contains(name)
}

/// What goes to a backend: the client's end-to-end headers, and its address appended to
/// `X-Forwarded-For`. Copied into a map with room for that one more (a clone of the client's
/// map would have to grow for it).
fn forwarded_headers(from: &hyper::HeaderMap, peer: SocketAddr) -> hyper::HeaderMap {
    let mut headers = hyper::HeaderMap::with_capacity(from.len() + 1);
    for (k, v) in from {
        if !is_hop_by_hop(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    append_forwarded_for(&mut headers, peer);
    headers
}

fn strip_hop_by_hop(h: &mut hyper::HeaderMap) {
    // Most responses carry none: one pass over their few headers instead of a lookup of each
    // name.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    for name in HOP_BY_HOP.iter() {
        h.remove(name);
    }
}

fn append_forwarded_for(h: &mut hyper::HeaderMap, peer: SocketAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match h.get(&name).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", peer.ip())),
        None => Ok(ip_value(peer.ip())),
    };
    if let Ok(v) = value {
        h.insert(name, v);
    }
}

/// `ip` as a header value; an IPv4 address (most clients) without going through `fmt`, which
/// was a measurable share of the balancer's own time per request.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Ends a request in the pool when its response body has been sent (or dropped).
struct Finish {
    lb: Arc<Lb>,
    pick: Pick,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.lb
            .pool()
            .finished(&self.pick, Outcome::Answered, Instant::now());
    }
}

/// A backend's response body, counted as in flight until it is done, read through its
/// connection; the connection is kept for another request once the body has been read to its
/// end (and closed if the client went away before that).
pub struct Tracked {
    inner: Incoming,
    conn: Option<Conn>,
    guard: Option<Finish>,
    /// Time to the response's headers, recorded when the request ends.
    latency_ms: f64,
}

impl Tracked {
    /// The request is over: it leaves the pool's in-flight count, its latency is recorded, and
    /// with `keep` (a body read to its end) its connection goes back to the idle ones.
    fn done(&mut self, keep: bool) {
        if let Some(guard) = self.guard.take() {
            let conn = if keep { self.conn.take() } else { None };
            guard
                .lb
                .upstreams()
                .finish(&guard.pick.name, guard.pick.addr, self.latency_ms, conn);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body with nothing left to read may never be polled (no content); its connection
        // is as good as after a read to the end.
        let ended = self.inner.is_end_stream();
        self.done(ended);
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // The first poll of the body asks the connection for it, the second reads what the
        // connection decoded then (usually already read with the headers): one write of the
        // headers and the body to the client instead of two.
        for _ in 0..2 {
            if let Some(conn) = this.conn.as_mut() {
                let _ = conn.poll_drive(cx);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => continue,
                Poll::Ready(None) => {
                    this.done(true);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                r @ Poll::Ready(Some(Ok(_))) => return r,
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Keeps the pool in step with the cluster and runs the health checks, until `stop`.
pub async fn run_membership(
    lb: Arc<Lb>,
    handle: Handle,
    mut events: broadcast::Receiver<Arc<Event>>,
    mut stop: watch::Receiver<bool>,
) {
    // Subscribed first, then listed: nothing falls between the two.
    if let Ok(members) = handle.members().await {
        lb.resync(&members);
    }
    // The first resync was just above.
    let mut resync = tokio::time::interval_at(
        tokio::time::Instant::now() + RESYNC_INTERVAL,
        RESYNC_INTERVAL,
    );
    loop {
        // Without a check due, a member event or a resync will bring work.
        let check_due = vassal_node::sleep_until(lb.pool().next_check_at());
        tokio::select! {
            e = events.recv() => match e.as_deref() {
                Ok(Event::Member(m)) => lb.apply_event(m.kind, &m.members),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!("lb: missed {n} events; re-reading the member list");
                    if let Ok(members) = handle.members().await {
                        lb.resync(&members);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = resync.tick() => {
                match handle.members().await {
                    Ok(members) => lb.resync(&members),
                    Err(_) => return,
                }
                lb.sweep_idle();
            }
            () = check_due => {}
            () = http::stopped(&mut stop) => return,
        }
        let due = lb.pool().due_checks(Instant::now());
        for pick in due {
            tokio::spawn(lb.clone().check(pick));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut from = hyper::HeaderMap::new();
        for name in HOP_BY_HOP.iter() {
            from.insert(name, HeaderValue::from_static("x"));
        }
        from.insert("accept", HeaderValue::from_static("text/html"));
        from.append("accept", HeaderValue::from_static("text/plain"));
        from.insert("x-custom-header", HeaderValue::from_static("kept"));
        let mut to = forwarded_headers(&from, "127.0.0.9:5000".parse().unwrap());
        for name in HOP_BY_HOP.iter() {
            assert!(to.get(name).is_none(), "{name} was forwarded");
        }
        let accept: Vec<_> = to.get_all("accept").iter().collect();
        assert_eq!(accept, ["text/html", "text/plain"]);
        assert_eq!(to["x-custom-header"], "kept");
        assert_eq!(to["x-forwarded-for"], "127.0.0.9");
        append_forwarded_for(&mut to, "127.0.0.8:5000".parse().unwrap());
        assert_eq!(to["x-forwarded-for"], "127.0.0.9, 127.0.0.8");
    }

    #[test]
    fn forwarded_for_names_the_client_address_as_display_does() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip), ip.to_string().as_str());
        }
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(ip_value(v6), "::1");
    }
}
