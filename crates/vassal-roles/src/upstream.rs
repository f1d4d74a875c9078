//! The balancer's kept-alive connections to its backends, and each backend's metric handles.
//!
//! A connection is driven by the request using it, inside the client connection's own task:
//! the proxied request is written, and the response read and streamed back to the client,
//! without a task of its own per backend connection and without a hop between tasks for each
//! request (hyper-util's pooled client spawns one and hands every request and response across).
//! Between requests a connection waits here, unpolled; the reactor still notes a close by the
//! backend, which the next request to take it sees before using it.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use metrics::{Counter, Histogram};
use tokio::net::TcpStream;

use crate::cork::Corked;
use crate::relay::Outgoing;

/// A backend must accept a connection within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// An idle connection unused this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many idle connections are kept per backend.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

/// One kept-alive HTTP/1.1 connection to a backend. Boxed: it goes from the idle list to a
/// request, its response body and back, and hyper's connection state is several hundred bytes
/// that each of those moves (and every future holding it) would otherwise copy.
pub struct Conn(Box<ConnState>);

/// What a [`Conn`] holds.
pub struct ConnState {
    sender: SendRequest<Outgoing>,
    /// The connection's state machine; `None` once it has ended.
    driver: Option<Connection<TokioIo<Corked>, Outgoing>>,
    idle_since: Instant,
}

/// Why a request could not be sent to a backend, or its answer not read.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect(std::io::Error),
    /// The connection failed or broke before the response's headers.
    Broken(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "cannot connect: {e}"),
            SendError::Broken(e) => {
                write!(f, "{e}")?;
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    write!(f, ": {c}")?;
                    cause = c.source();
                }
                Ok(())
            }
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = ConnState;

    fn deref(&self) -> &ConnState {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ConnState {
        &mut self.0
    }
}

impl Conn {
    /// Opens a connection to `addr` (no bytes are exchanged until the first request).
    async fn connect(addr: SocketAddr) -> Result<Conn, SendError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => {
                return Err(SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {CONNECT_TIMEOUT:?}"),
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, driver) = http1::handshake(TokioIo::new(Corked::new(stream)))
            .await
            .map_err(SendError::Broken)?;
        Ok(Conn(Box::new(ConnState {
            sender,
            driver: Some(driver),
            idle_since: Instant::now(),
        })))
    }

    /// Moves the connection on (writes, reads, body chunks); ready once it has ended (with
    /// `Ok` again if polled after that).
    pub fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        let Some(d) = self.driver.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let r = std::task::ready!(Pin::new(d).poll(cx));
        self.driver = None;
        Poll::Ready(r)
    }

    /// Whether it can carry another request (it has not ended).
    pub fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Waits until the connection takes a request: `Ok(false)` if it ended instead.
    async fn ready(&mut self) -> Result<bool, hyper::Error> {
        poll_fn(|cx| {
            if let Poll::Ready(r) = self.poll_drive(cx) {
                return Poll::Ready(r.map(|()| false));
            }
            self.sender.poll_ready(cx).map(|r| r.map(|()| true))
        })
        .await
    }

    /// Sends `req` and waits for the response's headers. When the request was not written
    /// (the connection had ended), it is handed back with the error.
    async fn send(
        &mut self,
        req: Request<Outgoing>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<Outgoing>>)> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        poll_fn(|cx| {
            // An ending connection fails the response, which says how.
            let _ = self.poll_drive(cx);
            response.as_mut().poll(cx)
        })
        .await
        .map_err(|mut e| {
            let req = e.take_message();
            (e.into_error(), req)
        })
    }
}

/// One backend's idle connections and metric handles.
struct Upstream {
    addr: SocketAddr,
    /// Most recently used last.
    idle: Vec<Conn>,
    metrics: BackendMetrics,
}

/// A backend's per-request series, registered once.
#[derive(Clone)]
pub struct BackendMetrics {
    /// `vassal.lb.backend.requests{backend}`.
    pub requests: Counter,
    /// `vassal.lb.backend.latency{backend}`.
    pub latency: Histogram,
}

impl BackendMetrics {
    fn register(name: &str) -> Self {
        BackendMetrics {
            requests: metrics::counter!("vassal.lb.backend.requests", "backend" => name.to_owned()),
            latency: metrics::histogram!("vassal.lb.backend.latency", "backend" => name.to_owned()),
        }
    }
}

/// Every backend's idle connections, by member name.
#[derive(Default)]
pub struct Upstreams {
    by_name: Mutex<HashMap<String, Upstream>>,
}

impl Upstreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upstream>> {
        self.by_name.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request to `name` at `addr` and takes the backend's most recently used idle
    /// connection, if any, in one lookup. The backend's metric handles are registered on its
    /// first request; a new address drops the old one's connections (they are to somewhere
    /// else now).
    fn checkout(&self, name: &str, addr: SocketAddr) -> Option<Conn> {
        let mut all = self.lock();
        let mut dropped = Vec::new();
        let u = match all.get_mut(name) {
            Some(u) => {
                if u.addr != addr {
                    u.addr = addr;
                    dropped = std::mem::take(&mut u.idle);
                }
                u
            }
            None => all.entry(name.to_owned()).or_insert_with(|| Upstream {
                addr,
                idle: Vec::new(),
                metrics: BackendMetrics::register(name),
            }),
        };
        u.metrics.requests.increment(1);
        let conn = u.idle.pop();
        drop(all);
        drop(dropped);
        conn
    }

    /// The most recently used idle connection to `name` at `addr`, if any.
    fn take(&self, name: &str, addr: SocketAddr) -> Option<Conn> {
        let mut all = self.lock();
        let u = all.get_mut(name)?;
        if u.addr != addr {
            return None;
        }
        u.idle.pop()
    }

    /// Ends a request to `name` at `addr` whose response's headers came `latency_ms` after it
    /// was sent, in one lookup: records the latency, and keeps `conn` (if given and still
    /// open) for the next request.
    pub fn finish(&self, name: &str, addr: SocketAddr, latency_ms: f64, conn: Option<Conn>) {
        let conn = conn.filter(Conn::is_open).map(|mut c| {
            c.idle_since = Instant::now();
            c
        });
        let mut all = self.lock();
        let Some(u) = all.get_mut(name) else {
            drop(all);
            drop(conn);
            return;
        };
        u.metrics.latency.record(latency_ms);
        if let Some(conn) = conn {
            if u.addr == addr && u.idle.len() < MAX_IDLE_PER_BACKEND {
                u.idle.push(conn);
                return;
            }
            drop(all);
            drop(conn);
        }
    }

    /// Closes the connections idle longer than [`IDLE_TIMEOUT`] and every idle connection of
    /// a backend `keep` says no to (out of rotation, or gone: its entry goes too).
    pub fn sweep(&self, now: Instant, keep: impl Fn(&str) -> Option<bool>) {
        let mut closed = Vec::new();
        let mut all = self.lock();
        all.retain(|name, u| match keep(name) {
            None => {
                closed.append(&mut u.idle);
                false
            }
            Some(false) => {
                closed.append(&mut u.idle);
                true
            }
            Some(true) => {
                let (old, fresh): (Vec<Conn>, Vec<Conn>) = std::mem::take(&mut u.idle)
                    .into_iter()
                    .partition(|c| now.saturating_duration_since(c.idle_since) >= IDLE_TIMEOUT);
                closed.extend(old);
                u.idle = fresh;
                true
            }
        });
        drop(all);
        drop(closed);
    }

    /// Counts a request to `name` at `addr` and sends it on an idle connection, or a new one;
    /// returns the response's headers and the connection, which its body (read through
    /// [`Conn::poll_drive`]) still needs, and which goes back with [`Upstreams::finish`]. A
    /// kept connection the backend has closed meanwhile is dropped and the next one tried:
    /// the request was not written to it.
    pub async fn send(
        &self,
        name: &str,
        addr: SocketAddr,
        mut req: Request<Outgoing>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        let mut idle = self.checkout(name, addr);
        loop {
            let (mut conn, fresh) = match idle.take() {
                Some(c) => (c, false),
                // Boxed: connecting is rare and its future large; unboxed it would make every
                // request's future as large, and each move of that future a copy.
                None => (Box::pin(Conn::connect(addr)).await?, true),
            };
            match conn.ready().await {
                Ok(true) => {}
                // Closed by the backend while it was kept: the request was not written.
                _ if !fresh => {
                    idle = self.take(name, addr);
                    continue;
                }
                // A new connection that ended at once: sending says why.
                Ok(false) => {}
                Err(e) => return Err(SendError::Broken(e)),
            }
            match conn.send(req).await {
                Ok(resp) => return Ok((resp, conn)),
                Err((_, Some(r))) if !fresh => {
                    req = r;
                    idle = self.take(name, addr);
                }
                Err((e, _)) => return Err(SendError::Broken(e)),
            }
        }
    }
}
