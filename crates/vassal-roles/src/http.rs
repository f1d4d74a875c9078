//! What the three servers share: one accept loop with graceful shutdown and connection limits,
//! response helpers, and HTML escaping.

use std::cell::Cell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};
use vassal_node::{AcceptBackoff, Throttle};

use crate::cork::Corked;
use crate::timer::HyperTimer;

/// Every response body the servers send: a whole buffer or a backend's stream.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long a stopping server waits for open requests to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A client that has not sent a request's whole header this long after connecting (or after
/// its previous response, on a kept-alive connection) is disconnected: HAProxy's
/// `timeout http-request`, whose usual setting this is. `-lb-header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many client connections at once per server; more wait in the kernel's listen
/// backlog until one closes (HAProxy's `maxconn` does the same). `-lb-max-conns`. The agent
/// lowers it to half its file-descriptor limit when that is smaller.
pub const DEFAULT_MAX_CONNS: usize = 4096;
/// A client that does not take any of its response for this long (its receive window stays
/// full) is disconnected: with bodies streamed, a client reading nothing would otherwise hold
/// a backend connection and a connection slot for ever (HAProxy's `timeout client`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The warning that a server is at its connection limit is logged at most this often.
pub const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The limits one server enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// See [`DEFAULT_HEADER_TIMEOUT`]; `None` for no limit.
    pub header_timeout: Option<Duration>,
    /// See [`DEFAULT_MAX_CONNS`]; at least 1.
    pub max_conns: usize,
    /// See [`DEFAULT_WRITE_TIMEOUT`]; `None` for no limit.
    pub write_timeout: Option<Duration>,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_timeout: Some(DEFAULT_HEADER_TIMEOUT),
            max_conns: DEFAULT_MAX_CONNS,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
        }
    }
}

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A response with `status`, a content type and a body.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text error or notice.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    msg.push('\n');
    respond(status, "text/plain; charset=utf-8", msg)
}

/// Escapes text for HTML (node names and query answers come from the network).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Resolves once `stop` says true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves HTTP/1.1 on `listener` with `handle(request, peer)` until `stop` turns true, then
/// stops accepting and gives open connections [`SHUTDOWN_GRACE`] to finish their requests.
/// `name` (`"-lb-listen"`) says which server a log line is about.
///
/// Within `limits`: a connection that has not sent a whole request header in time is closed
/// (slowloris); past `max_conns` open connections no more are accepted until one closes, so a
/// flood of clients waits in the backlog instead of exhausting file descriptors. A failing
/// `accept` is retried with [`AcceptBackoff`], never in a tight loop.
pub async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: ServeLimits,
    handle: F,
    stop: watch::Receiver<bool>,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(name, listener, limits, None, None, handle, stop).await
}

/// [`serve`], over TLS when `tls` is given: the handshake must finish within the header
/// timeout (10 s without one), and a client that chose `h2` by ALPN is served HTTP/2.
///
/// With `workers`, each accepted connection is handed to the next worker thread in turn and
/// served there to its end (TLS handshake included); without, on the caller's runtime.
///
/// The response body is any body of bytes: the balancer answers with its own, which holds a
/// backend's response without a box per request.
pub async fn serve_with<F, Fut, B>(
    name: &'static str,
    listener: TcpListener,
    limits: ServeLimits,
    tls: Option<TlsAcceptor>,
    workers: Option<Arc<Workers>>,
    handle: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    let graceful = Graceful::default();
    let local = listener.local_addr().ok();
    let max_conns = limits.max_conns.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_conns));
    let mut at_limit = Throttle::new(LIMIT_LOG_INTERVAL);
    let mut backoff = AcceptBackoff::new(name);
    let mut builder = http1::Builder::new();
    builder.timer(HyperTimer);
    builder.header_read_timeout(limits.header_timeout);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(HyperTimer);
    let handshake_timeout = limits.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(held) = at_limit.ready(Instant::now()) {
                    warn!(
                        server = name,
                        ?local,
                        max_conns,
                        "{name}: {max_conns} client connections open, the limit; new ones wait \
                         in the listen backlog until one closes (raise it with -lb-max-conns; hit \
                         {held} more times since the last warning)"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = stopped(&mut stop) => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => {
                        backoff.succeeded();
                        a
                    }
                    Err(e) => {
                        let pause = backoff.failed(&e);
                        tokio::select! {
                            () = tokio::time::sleep(pause) => continue,
                            () = stopped(&mut stop) => break,
                        }
                    }
                };
                let _ = stream.set_nodelay(true);
                let handle = handle.clone();
                let service = service_fn(move |req| {
                    let fut = handle(req, peer);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let (h1, h2, watcher) = (builder.clone(), h2.clone(), graceful.watcher());
                let (tls, write_timeout) = (tls.clone(), limits.write_timeout);
                let serve = move |stream: TcpStream| async move {
                    let stream = WriteTimeout::new(Corked::new(stream), write_timeout);
                    let Some(acceptor) = tls else {
                        let conn = h1.serve_connection(TokioIo::new(stream), service);
                        if let Err(e) = watcher.watch(conn).await {
                            debug!(%peer, "connection ended: {e}");
                        }
                        drop(slot);
                        return;
                    };
                    let stream =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                debug!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                debug!(%peer, "no TLS handshake within {handshake_timeout:?}");
                                return;
                            }
                        };
                    let is_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let io = TokioIo::new(stream);
                    let ended = if is_h2 {
                        watcher.watch(h2.serve_connection(io, service)).await
                    } else {
                        watcher.watch(h1.serve_connection(io, service)).await
                    };
                    if let Err(e) = ended {
                        debug!(%peer, "connection ended: {e}");
                    }
                    drop(slot);
                };
                match &workers {
                    None => {
                        tokio::spawn(serve(stream));
                    }
                    Some(w) => w.spawn(stream, peer, serve),
                }
            }
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            warn!(?local, "requests still open after {SHUTDOWN_GRACE:?}; closing them");
        }
    }
}

/// A server's open connections, told to finish when it stops: hyper-util's `GracefulShutdown`,
/// without its lock on every poll. That one parks each connection's task on a `watch`
/// channel that every connection of the server shares, and re-polls it, under the channel's
/// mutex, each time the connection is polled (two or three times a request), so that the
/// worker threads took turns at one lock all the time. Here a poll reads one atomic flag; the
/// task's waker is filed once (again only if it changes), and woken when the stop begins.
#[derive(Default)]
struct Graceful(Arc<GracefulState>);

#[derive(Default)]
struct GracefulState {
    stopping: AtomicBool,
    /// The open connections' wakers, by connection.
    wakers: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
    /// Connections watched and not yet ended (or dropped).
    open: AtomicUsize,
    all_ended: tokio::sync::Notify,
}

/// One connection's place in [`Graceful`], taken when it is accepted.
struct GracefulWatcher {
    state: Arc<GracefulState>,
    id: u64,
}

impl Graceful {
    fn watcher(&self) -> GracefulWatcher {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        GracefulWatcher {
            state: self.0.clone(),
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Tells every open connection to finish (hyper's `graceful_shutdown`: the request in
    /// progress is answered, then the connection closes) and waits until all have ended.
    async fn shutdown(&self) {
        self.0.stopping.store(true, Ordering::Release);
        let wakers: Vec<_> = self.0.wakers().drain().map(|(_, w)| w).collect();
        wakers.into_iter().for_each(Waker::wake);
        loop {
            let ended = self.0.all_ended.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            if self.0.open.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl GracefulState {
    fn wakers(&self) -> MutexGuard<'_, HashMap<u64, Waker>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl GracefulWatcher {
    /// Runs `conn` to its end, starting its graceful shutdown when the server stops.
    async fn watch<C: GracefulConnection>(self, conn: C) -> Result<(), C::Error> {
        let mut conn = std::pin::pin!(conn);
        let mut told = false;
        let mut filed: Option<Waker> = None;
        poll_fn(|cx| {
            if !told {
                let mut stopping = self.state.stopping.load(Ordering::Acquire);
                if !stopping && !filed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    let w = cx.waker().clone();
                    self.state.wakers().insert(self.id, w.clone());
                    filed = Some(w);
                    // The stop may have begun (and taken the wakers) before this one was filed.
                    stopping = self.state.stopping.load(Ordering::Acquire);
                }
                if stopping {
                    told = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            conn.as_mut().poll(cx)
        })
        .await
    }
}

impl Drop for GracefulWatcher {
    fn drop(&mut self) {
        self.state.wakers().remove(&self.id);
        if self.state.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state.all_ended.notify_waiters();
        }
    }
}

thread_local! {
    /// Which of the [`Workers`] this thread is, if it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker thread running the caller (`0` off the worker threads): state that
/// must stay on one runtime, such as the balancer's kept-alive backend connections, is kept
/// per worker.
pub fn worker_index() -> usize {
    WORKER.with(Cell::get).unwrap_or(0)
}

/// Whether the caller runs on one of the [`Workers`] (whose runtime lasts as long as the thread).
pub(crate) fn on_worker() -> bool {
    WORKER.try_with(|w| w.get().is_some()).unwrap_or(false)
}

/// Makes the test's thread count as worker `i` (or none).
#[cfg(test)]
pub(crate) fn set_worker_for_test(i: Option<usize>) {
    WORKER.with(|w| w.set(i));
}

/// Threads that serve a listener's connections, one single-threaded runtime each (HAProxy's
/// `nbthread` model): a connection, and the backend connections it uses, stay on one thread
/// from accept to close, with no work stealing and no wake-ups across threads on the way.
/// The accept loop stays on the caller's runtime and deals connections out in turn.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
    /// Dropped with the workers: each thread then ends its runtime (tasks still on it are
    /// dropped, which closes their connections).
    _stop: watch::Sender<()>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads named `name`.
    pub fn start(name: &str, n: usize) -> io::Result<Arc<Workers>> {
        let (stop, stopped) = watch::channel(());
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            // Each runtime is built, run and dropped on its own thread (a runtime dropped on
            // the caller's, an async context, would abort the agent).
            let (built, handle) = std::sync::mpsc::sync_channel(1);
            let mut stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .on_thread_park(crate::cork::send_held)
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = built.send(Err(e));
                            return;
                        }
                    };
                    let _ = built.send(Ok(rt.handle().clone()));
                    WORKER.with(|w| w.set(Some(i)));
                    rt.block_on(async move {
                        // Resolves when the sender (the Workers) is dropped.
                        while stopped.changed().await.is_ok() {}
                    });
                    // The connections still open are dropped with the runtime: none of their
                    // deadlines is kept, so that no spare `Sleep` outlives the runtime (and its
                    // timer driver) it is filed with.
                    WORKER.with(|w| w.set(None));
                    crate::timer::drop_spares();
                    // What the last turn held goes out, and no stream outlives the runtime
                    // on this thread's queue.
                    crate::cork::send_held();
                    drop(rt);
                })?;
            let started = handle
                .recv()
                .map_err(|_| io::Error::other("a worker thread ended as it started"))?;
            handles.push(started?);
        }
        Ok(Arc::new(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        }))
    }

    /// How many worker threads there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Moves `stream` to the next worker's runtime and runs `serve` on it there.
    fn spawn<F, Fut>(&self, stream: TcpStream, peer: SocketAddr, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Registered with this runtime's reactor: the socket is taken out and registered
        // again with the worker's.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, "connection dropped: {e}");
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let served = async move {
            match TcpStream::from_std(stream) {
                Ok(s) => serve(s).await,
                Err(e) => debug!(%peer, "connection dropped: {e}"),
            }
        };
        self.handles[i].spawn(async move {
            // Each poll counts towards the turn after which held writes are sent.
            let mut served = std::pin::pin!(served);
            poll_fn(|cx| {
                let r = served.as_mut().poll(cx);
                crate::cork::polled();
                r
            })
            .await
        });
    }
}

/// A client connection whose writes fail once one has waited [`ServeLimits::write_timeout`]
/// for the client to make room.
pub struct WriteTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
    /// Armed while a write (or flush) waits.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, timeout: Option<Duration>) -> Self {
        WriteTimeout {
            inner,
            timeout,
            waiting: None,
        }
    }

    /// The inner stream (for a TLS handshake's details).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A write that did not complete: arms the timer, or fails if it ran out.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        let timer = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took none of its response for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn done<T>(&mut self, r: io::Result<T>) -> Poll<io::Result<T>> {
        self.waiting = None;
        Poll::Ready(r)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => this.done(r),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => this.done(r),
            Poll::Pending => this.pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => this.done(r),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::client::conn::http1 as client;

    async fn ask(sender: &mut client::SendRequest<Full<Bytes>>) -> String {
        let req = Request::get("/")
            .header("host", "test")
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let resp = sender.send_request(req).await.expect("an answer");
        let body = resp.into_body().collect().await.expect("a body").to_bytes();
        String::from_utf8_lossy(&body).trim().to_owned()
    }

    /// A server on a fresh loopback port, its connections served by `threads` worker threads
    /// under `limits`: its address, and what stops it.
    async fn test_server<F, Fut>(
        threads: usize,
        limits: ServeLimits,
        handle: F,
    ) -> (SocketAddr, TestStop)
    where
        F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let workers = Workers::start("test-worker", threads).expect("the worker threads");
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve_with(
            "test",
            listener,
            limits,
            None,
            Some(workers),
            handle,
            stopped,
        ));
        (addr, TestStop { stop, server })
    }

    struct TestStop {
        stop: watch::Sender<bool>,
        server: tokio::task::JoinHandle<()>,
    }

    impl TestStop {
        /// Starts the stop.
        fn begin(&self) {
            self.stop
                .send(true)
                .expect("the server listens for the stop");
        }

        /// Waits up to `secs` for the stopping server to return.
        async fn ended_within(self, secs: u64) {
            tokio::time::timeout(Duration::from_secs(secs), self.server)
                .await
                .unwrap_or_else(|_| panic!("the server did not stop within {secs} s"))
                .expect("the server task ended cleanly");
        }
    }

    /// Each connection goes to the next worker thread and stays there for all its requests;
    /// a stop still waits for them and ends.
    #[tokio::test]
    async fn connections_are_dealt_to_the_worker_threads_in_turn() {
        let (addr, stop) = test_server(2, ServeLimits::default(), |_req, _peer| async {
            let thread = std::thread::current();
            let who = format!("{} {}", worker_index(), thread.name().unwrap_or("?"));
            text(StatusCode::OK, who)
        })
        .await;
        let mut seen = Vec::new();
        for _ in 0..4 {
            let stream = TcpStream::connect(addr).await.expect("a connection");
            let (mut sender, conn) = client::handshake(TokioIo::new(stream))
                .await
                .expect("an HTTP/1.1 connection");
            let driver = tokio::spawn(conn);
            let first = ask(&mut sender).await;
            let second = ask(&mut sender).await;
            assert_eq!(first, second, "a connection moved between threads");
            seen.push(first);
            drop(sender);
            let _ = driver.await;
        }
        assert_eq!(
            seen,
            [
                "0 test-worker-0",
                "1 test-worker-1",
                "0 test-worker-0",
                "1 test-worker-1"
            ]
        );
        stop.begin();
        stop.ended_within(10).await;
    }

    /// Reads `stream` until the server closes it (within 20 s) and checks that `who` got a
    /// 200 whose body ends with `body`.
    async fn read_ok_to_end(stream: &mut TcpStream, body: &str, who: &str) {
        use tokio::io::AsyncReadExt;
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut answer))
            .await
            .unwrap_or_else(|_| {
                panic!("{who} was answered, and the connection closed, within 20 s")
            })
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with(body),
            "{who} got {answer:?}"
        );
    }

    /// A client that takes none of a large response is cut off after the write timeout on a
    /// worker thread too, where writes are held to the end of the turn: its connection slot
    /// is freed and the next client is served.
    #[tokio::test]
    async fn a_client_reading_nothing_is_cut_off_and_frees_its_slot() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = ServeLimits {
            max_conns: 1,
            write_timeout: Some(Duration::from_millis(300)),
            ..ServeLimits::default()
        };
        let (addr, stop) = test_server(1, limits, |req: Request<Incoming>, _peer| async move {
            if req.uri().path() == "/big" {
                Response::new(full(vec![b'x'; 32 << 20]))
            } else {
                Response::new(full("small"))
            }
        })
        .await;
        let mut silent = TcpStream::connect(addr).await.expect("a connection");
        silent
            .write_all(b"GET /big HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("a request");
        // The only slot is taken: the next client waits in the backlog until it is freed.
        let mut next = TcpStream::connect(addr).await.expect("a second connection");
        next.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .expect("a request");
        read_ok_to_end(&mut next, "small", "the second client").await;
        // The silent client's connection was closed under it: reading on, it ends well short
        // of the 32 MiB (a close or a reset).
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match silent.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the silent client's connection stayed open");
        assert!(
            got < 32 << 20,
            "the silent client got the whole body ({got} bytes)"
        );
        stop.begin();
        stop.ended_within(10).await;
    }

    /// A stopping server answers the request in progress, closes the idle kept-alive
    /// connection at once, and returns as soon as both have ended (not after the grace time).
    #[tokio::test]
    async fn a_stop_finishes_the_request_in_progress_and_closes_idle_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (started, release) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let (s, r) = (started.clone(), release.clone());
        let (addr, stop) = test_server(
            1,
            ServeLimits::default(),
            move |req: Request<Incoming>, _peer| {
                let (started, release) = (s.clone(), r.clone());
                async move {
                    if req.uri().path() == "/slow" {
                        started.notify_one();
                        release.notified().await;
                        Response::new(full("slow"))
                    } else {
                        Response::new(full("quick"))
                    }
                }
            },
        )
        .await;
        // One kept-alive connection, answered and idle.
        let mut idle = TcpStream::connect(addr).await.expect("a connection");
        idle.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("a request");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"quick") {
            let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
                .await
                .expect("an answer within 10 s")
                .expect("an answer");
            assert!(
                n > 0,
                "closed before the answer: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        // One request in progress.
        let mut busy = TcpStream::connect(addr).await.expect("a second connection");
        busy.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("a request");
        tokio::time::timeout(Duration::from_secs(10), started.notified())
            .await
            .expect("the slow request reached its handler within 10 s");

        stop.begin();
        let closed = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "the idle connection was not closed within 3 s of the stop: {closed:?}"
        );
        release.notify_one();
        read_ok_to_end(&mut busy, "slow", "the request in progress").await;
        // Well inside the 5 s grace: the server saw both connections end.
        stop.ended_within(3).await;
    }
}
