//! Writes held until the worker thread has run what is ready, then sent together, as HAProxy
//! sends behind its reads.
//!
//! Each send on loopback wakes the thread that receives it (wrk, a backend, a client). Sent
//! in the middle of the worker's turn, that wake-up often takes the CPU from the worker while
//! it still has other connections' requests in hand, and all of them wait for the CPU to come
//! back, which lengthens the balancer's tail latency on a busy machine. So on the
//! [`Workers`](crate::http::Workers) threads a [`Corked`] stream accepts a write into its own
//! buffer and queues itself with its thread; the queue is sent when the thread is about to
//! wait for events ([`send_held`], the runtime's park hook), or after [`TURN`] task polls if
//! it never comes to wait. Off the worker threads a `Corked` stream writes straight through.
//!
//! What is held is sent before anything that must follow it: a shutdown sends it first, and a
//! write that would make it more than [`MAX_HELD`] bytes sends it first. A send at the end of
//! the turn that cannot finish (the peer's window is full) or fails wakes the connection's
//! task, whose next write or flush carries on with it, or returns the error.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// At most this many bytes are held per stream; a write past it sends what is held first, and
/// a write this large goes straight through (bulk bodies gain nothing from waiting).
pub const MAX_HELD: usize = 16 * 1024;

/// A stream's buffer, once sent, is kept for its next writes up to this size and freed past
/// it, so that thousands of idle connections do not each keep the largest write they held.
const KEPT_CAPACITY: usize = 4 * 1024;

/// A worker thread that has polled this many tasks since it last sent what was held sends it,
/// whether or not it has come to wait: tokio's own number of task polls between two looks at
/// the sockets (`event_interval`).
pub const TURN: u32 = 61;

thread_local! {
    /// The streams of this thread with bytes held.
    static HELD: RefCell<Vec<Arc<Mutex<Held>>>> = const { RefCell::new(Vec::new()) };
    /// Task polls since the last [`send_held`].
    static POLLS: Cell<u32> = const { Cell::new(0) };
}

/// A TCP stream whose writes wait for the end of the worker thread's turn (see the module).
pub struct Corked {
    read: OwnedReadHalf,
    write: Arc<Mutex<Held>>,
}

/// The write side of a [`Corked`] stream, shared with its thread's queue.
struct Held {
    half: OwnedWriteHalf,
    /// Accepted and not yet sent.
    buf: Vec<u8>,
    /// On its thread's queue.
    queued: bool,
    /// The connection's task, woken when a send at the end of the turn left bytes or failed.
    waker: Option<Waker>,
    /// What a send at the end of the turn failed with, for the task's next write or flush.
    error: Option<io::Error>,
}

impl Corked {
    /// Wraps `stream`. Its writes are held while it is written from a worker thread.
    pub fn new(stream: TcpStream) -> Corked {
        let (read, half) = stream.into_split();
        Corked {
            read,
            write: Arc::new(Mutex::new(Held {
                half,
                buf: Vec::new(),
                queued: false,
                waker: None,
                error: None,
            })),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Nothing panics while holding it; a poisoned lock is still consistent.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Held {
    /// Sends what is held, registering `cx` for when the socket has room.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.half).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        self.trim();
        Poll::Ready(Ok(()))
    }

    /// Frees a large buffer once it is empty (see [`KEPT_CAPACITY`]).
    fn trim(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEPT_CAPACITY {
            self.buf = Vec::new();
        }
    }

    /// Sends what is held without a task: at the end of the turn.
    fn send_now(&mut self) {
        while !self.buf.is_empty() {
            match self.half.try_write(&self.buf) {
                Ok(0) => {
                    self.error = Some(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        if self.error.is_some() {
            self.buf.clear();
        }
        self.trim();
        if !self.buf.is_empty() || self.error.is_some() {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }
}

/// Sends every stream's held bytes on this thread. The worker runtimes call it before they
/// wait for events; [`polled`] after every [`TURN`] task polls.
pub fn send_held() {
    POLLS.with(|p| p.set(0));
    let Ok(mut queued) = HELD.try_with(|h| std::mem::take(&mut *h.borrow_mut())) else {
        return;
    };
    for held in queued.drain(..) {
        let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
        h.queued = false;
        h.send_now();
    }
    // Keep the list's allocation for the next turn (nothing queued itself meanwhile: sending
    // queues nothing).
    let _ = HELD.try_with(|h| {
        let mut h = h.borrow_mut();
        if h.is_empty() {
            *h = queued;
        }
    });
}

/// Counts a task poll on this thread, and sends what is held once there have been [`TURN`].
pub fn polled() {
    let due = POLLS
        .try_with(|p| {
            let n = p.get() + 1;
            p.set(n);
            n >= TURN
        })
        .unwrap_or(false);
    if due {
        send_held();
    }
}

impl AsyncRead for Corked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Corked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &*self;
        let mut h = this.held();
        if let Some(e) = h.error.take() {
            return Poll::Ready(Err(e));
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        // Only a worker thread sends what its streams hold.
        let hold = crate::http::on_worker();
        if !hold || (h.buf.len() + len > MAX_HELD) || (!h.queued && !h.buf.is_empty()) {
            // Straight through, after what is held (a remainder the end of the turn could
            // not send, or a buffer this write would overfill).
            ready!(h.poll_send(cx))?;
            if !hold || len >= MAX_HELD {
                return Pin::new(&mut h.half).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            h.buf.extend_from_slice(b);
        }
        match &h.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => h.waker = Some(cx.waker().clone()),
        }
        if !h.queued {
            h.queued = true;
            let queued = HELD.try_with(|q| q.borrow_mut().push(this.write.clone()));
            if queued.is_err() {
                // The thread is ending: send it now. The bytes are taken either way (a
                // remainder goes out with the next write or flush, `cx` is woken for it), so
                // a pending send must not make the caller write them again.
                h.queued = false;
                if let Poll::Ready(Err(e)) = h.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut h = self.held();
        if let Some(e) = h.error.take() {
            return Poll::Ready(Err(e));
        }
        if h.queued {
            // Sent at the end of the turn.
            return Poll::Ready(Ok(()));
        }
        h.poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut h = self.held();
        if let Some(e) = h.error.take() {
            return Poll::Ready(Err(e));
        }
        ready!(h.poll_send(cx))?;
        Pin::new(&mut h.half).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A corked stream and its peer, a plain non-blocking socket whose reads show at once what
    /// has been sent (on loopback a send is in the peer's queue when it returns).
    async fn pair() -> (Corked, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
        let ours = TcpStream::connect(listener.local_addr().expect("an address"))
            .await
            .expect("a connection");
        let (peer, _) = listener.accept().await.expect("the peer");
        let peer = peer.into_std().expect("a std socket");
        peer.set_nonblocking(true).expect("non-blocking");
        (Corked::new(ours), peer)
    }

    /// What the peer has been sent so far, and whether it has seen the end.
    fn arrived(peer: &mut std::net::TcpStream) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (got, false),
                Err(e) => panic!("reading the peer: {e}"),
            }
        }
    }

    /// Runs `f` as if on a worker thread.
    async fn as_worker<F: std::future::Future<Output = ()>>(f: F) {
        crate::http::set_worker_for_test(Some(0));
        f.await;
        crate::http::set_worker_for_test(None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn writes_are_held_until_the_end_of_the_turn() {
        as_worker(async {
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"GET / HTTP/1.1\r\n").await.expect("held");
            ours.write_all(b"\r\n").await.expect("held");
            ours.flush().await.expect("a flush of held bytes is done");
            assert_eq!(
                arrived(&mut peer),
                (Vec::new(), false),
                "sent before the turn ended"
            );
            send_held();
            assert_eq!(
                arrived(&mut peer),
                (b"GET / HTTP/1.1\r\n\r\n".to_vec(), false),
                "the turn's end sent what was held, in order"
            );
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn off_a_worker_writes_go_straight_through() {
        let (mut ours, mut peer) = pair().await;
        ours.write_all(b"hello").await.expect("a write");
        assert_eq!(arrived(&mut peer), (b"hello".to_vec(), false));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_turn_of_polls_sends_what_is_held() {
        as_worker(async {
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"late").await.expect("held");
            send_held();
            ours.write_all(b"x").await.expect("held");
            for _ in 1..TURN {
                polled();
            }
            assert_eq!(arrived(&mut peer), (b"late".to_vec(), false));
            polled();
            assert_eq!(
                arrived(&mut peer),
                (b"x".to_vec(), false),
                "sent after {TURN} polls"
            );
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_shutdown_sends_what_is_held_first() {
        as_worker(async {
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"last words").await.expect("held");
            ours.shutdown().await.expect("a shutdown");
            assert_eq!(arrived(&mut peer), (b"last words".to_vec(), true));
            // Nothing is sent twice.
            send_held();
            assert_eq!(arrived(&mut peer), (Vec::new(), true));
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn large_writes_go_straight_through_after_what_is_held() {
        as_worker(async {
            let (mut ours, mut peer) = pair().await;
            let big = vec![7u8; MAX_HELD];
            ours.write_all(b"head").await.expect("held");
            ours.write_all(&big).await.expect("a large write");
            let mut want = b"head".to_vec();
            want.extend_from_slice(&big);
            assert_eq!(arrived(&mut peer), (want, false));
        })
        .await;
    }

    struct CountingWaker(AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn what_a_full_window_leaves_is_sent_by_the_next_flush() {
        as_worker(async {
            // Fill the peer's receive window and our send buffer before corking.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
            let raw = std::net::TcpStream::connect(listener.local_addr().expect("an address"))
                .expect("a connection");
            let (peer, _) = listener.accept().expect("the peer");
            raw.set_nonblocking(true).expect("non-blocking");
            let mut filled = 0usize;
            let chunk = [1u8; 64 * 1024];
            loop {
                match (&raw).write(&chunk) {
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("filling the window: {e}"),
                }
            }
            let mut ours = Corked::new(TcpStream::from_std(raw).expect("a tokio socket"));

            let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
            let waker = Waker::from(counter.clone());
            let mut cx = Context::from_waker(&waker);
            match Pin::new(&mut ours).poll_write(&mut cx, b"tail") {
                Poll::Ready(Ok(4)) => {}
                other => panic!("a held write should be taken at once, got {other:?}"),
            }
            send_held();
            assert_eq!(
                counter.0.load(Ordering::SeqCst),
                1,
                "a send that could not finish wakes the connection's task"
            );

            // The peer drains; our flush carries on with the rest.
            let reader = std::thread::spawn(move || {
                let mut peer = peer;
                peer.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("a read timeout");
                let mut got = Vec::new();
                let mut buf = [0u8; 64 * 1024];
                while got.len() < filled + 4 {
                    match peer.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => panic!("after {} of {} bytes: {e}", got.len(), filled + 4),
                    }
                }
                got
            });
            tokio::time::timeout(Duration::from_secs(20), ours.flush())
                .await
                .expect("the flush finished once the peer read")
                .expect("a flush");
            let got = tokio::task::spawn_blocking(move || reader.join())
                .await
                .expect("the reader")
                .expect("the reader did not panic");
            assert_eq!(got.len(), filled + 4, "every byte arrived once");
            assert!(
                got[..filled].iter().all(|&b| b == 1),
                "the filler came first"
            );
            assert_eq!(&got[filled..], b"tail", "then what was held");
        })
        .await;
    }
}
