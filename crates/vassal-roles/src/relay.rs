//! A client's request body on its way to a backend, streamed: nothing is buffered beyond what
//! hyper holds for one read, so a 100 MiB upload costs the balancer no more memory than a small
//! one.
//!
//! The body lives in a [`Source`] shared by every attempt of one request: when a backend fails
//! before a byte of the body went to it, the same body is handed to the next backend
//! ([`Source::retryable`]); once a byte has gone, the request cannot be replayed and is not
//! retried. A client that stops sending for [`BODY_IDLE_TIMEOUT`] fails the request.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// A client must send the next piece of its request body within this once the balancer asks
/// for it: a body trickled in byte by byte, or not at all, must not hold a connection slot and
/// a backend connection for ever.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Shared {
    body: Incoming,
    /// A data frame has been handed to a backend connection.
    started: bool,
    /// The last time a frame came from the client (or the request began).
    progress: Instant,
}

/// The client's body, shared by the attempts of one request.
#[derive(Debug, Clone)]
pub struct Source {
    shared: Arc<Mutex<Shared>>,
}

impl Source {
    pub fn new(body: Incoming, now: Instant) -> Self {
        Source {
            shared: Arc::new(Mutex::new(Shared {
                body,
                started: false,
                progress: now,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Each poll leaves the state whole; a poisoned lock is still consistent.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether nothing of the body has gone to a backend yet, so it can go to another.
    pub fn retryable(&self) -> bool {
        !self.lock().started
    }

    /// When the client last sent a piece of the body (or the request began): the balancer
    /// waits for a backend's answer counting from this, so that a long upload is not cut off.
    pub fn progress(&self) -> Instant {
        self.lock().progress
    }

    /// A body for one attempt.
    pub fn attempt(&self) -> Outgoing {
        Outgoing {
            source: Some(self.clone()),
            idle: None,
        }
    }
}

/// A request body as sent to a backend: empty, or streamed from the client.
#[derive(Debug)]
pub struct Outgoing {
    source: Option<Source>,
    /// Armed while the client's body has nothing ready.
    idle: Option<Pin<Box<Sleep>>>,
}

impl Outgoing {
    /// No body (a `GET`): such a request can always be sent again.
    pub fn empty() -> Self {
        Outgoing {
            source: None,
            idle: None,
        }
    }
}

/// Why the client's body could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the client sent nothing of its request body for {BODY_IDLE_TIMEOUT:?}")]
    Idle,
    #[error("reading the client's request body: {0}")]
    Client(hyper::Error),
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = RelayError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        let this = &mut *self;
        let Some(source) = this.source.as_ref() else {
            return Poll::Ready(None);
        };
        let mut s = source.lock();
        match Pin::new(&mut s.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.data_ref().is_some_and(|d| !d.is_empty()) {
                    s.started = true;
                }
                s.progress = Instant::now();
                this.idle = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RelayError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                drop(s);
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(BODY_IDLE_TIMEOUT)));
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(RelayError::Idle))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.source
            .as_ref()
            .is_none_or(|s| s.lock().body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            None => SizeHint::with_exact(0),
            Some(s) => s.lock().body.size_hint(),
        }
    }
}
