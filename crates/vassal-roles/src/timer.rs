//! Deadlines that take no new `Sleep`, timer-wheel lock or driver wake-up per request on the
//! balancer's threads (hyper still boxes the small [`Deadline`] it is handed).
//!
//! Every proxied request has two deadlines: hyper's for the whole header of the client's next
//! request (`header_read_timeout`) and the balancer's for the backend's answer. A fresh tokio
//! `Sleep` for each is allocated, filed in the runtime's timer wheel under the driver's lock,
//! taken out again under the lock and freed; and when it is the earliest deadline on the
//! runtime, filing it wakes the driver through its eventfd (a `write(2)` for one request in
//! twenty in the balancer's profile). A `Sleep` that is still filed and is moved to a later
//! deadline costs one atomic compare-exchange instead: the wheel finds it at its old time, sees
//! the new one and files it again then.
//!
//! So on a [`Workers`](crate::http::Workers) thread, where one runtime lives as long as the
//! thread, a [`Deadline`]'s `Sleep` is kept for the next deadline of its kind when it is
//! dropped. Elsewhere a `Deadline` is a plain `Sleep`.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::thread::LocalKey;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::http;

/// Spare sleeps kept per kind and thread: about the requests one thread has in flight.
const SPARES: usize = 256;

type SpareList = RefCell<Vec<Pin<Box<Sleep>>>>;

thread_local! {
    static HEADER: SpareList = const { RefCell::new(Vec::new()) };
    static ANSWER: SpareList = const { RefCell::new(Vec::new()) };
}

/// Which deadlines a `Sleep` is kept for: each kind is always set the same time ahead, so a
/// kept one is moved later, the cheap way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A client's request header (hyper's timer).
    Header,
    /// A backend's answer.
    Answer,
}

impl Kind {
    fn spares(self) -> &'static LocalKey<SpareList> {
        match self {
            Kind::Header => &HEADER,
            Kind::Answer => &ANSWER,
        }
    }
}

/// A future ready at a deadline, like `tokio::time::sleep_until`, whose deadline can be moved
/// later cheaply ([`Deadline::reset`]).
#[derive(Debug)]
pub struct Deadline {
    /// `None` only while it is dropped.
    sleep: Option<Pin<Box<Sleep>>>,
    kind: Kind,
}

impl Deadline {
    /// Ready at `when`.
    pub fn at(when: Instant, kind: Kind) -> Deadline {
        let spare = if http::on_worker() {
            kind.spares()
                .try_with(|s| s.borrow_mut().pop())
                .ok()
                .flatten()
        } else {
            None
        };
        let sleep = match spare {
            Some(mut s) => {
                s.as_mut().reset(when);
                s
            }
            None => Box::pin(tokio::time::sleep_until(when)),
        };
        Deadline {
            sleep: Some(sleep),
            kind,
        }
    }

    /// Ready `after` from now (or in about 30 years, as tokio's `sleep`, if that is past what
    /// an `Instant` can hold).
    pub fn after(after: Duration, kind: Kind) -> Deadline {
        let now = Instant::now();
        let when = now
            .checked_add(after)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        Deadline::at(when, kind)
    }

    /// Ready at `when` instead.
    pub fn reset(&mut self, when: Instant) {
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(when);
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl hyper::rt::Sleep for Deadline {}

impl Drop for Deadline {
    fn drop(&mut self) {
        let Some(mut sleep) = self.sleep.take() else {
            return;
        };
        if !http::on_worker() {
            return;
        }
        // The task that last waited on it may have ended: a no-op waker in its place keeps the
        // spare from holding that task's memory, or waking it, until it is used again.
        let _ = sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        let _ = self.kind.spares().try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.len() < SPARES {
                    s.push(sleep);
                }
            }
        });
    }
}

/// Drops this thread's spare sleeps (before its runtime ends).
pub(crate) fn drop_spares() {
    for kind in [Kind::Header, Kind::Answer] {
        let spares = kind
            .spares()
            .try_with(|s| std::mem::take(&mut *s.borrow_mut()))
            .unwrap_or_default();
        drop(spares);
    }
}

/// hyper's timer (the header read timeout, HTTP/2 keep-alive pings) on [`Deadline`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperTimer;

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline::after(duration, Kind::Header))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline::at(deadline.into(), Kind::Header))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<Deadline>() {
            Some(d) => d.get_mut().reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime whose clock moves only to the next deadline when every task waits.
    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    /// `elapsed` is `secs` to the timer wheel's millisecond.
    fn assert_about(elapsed: Duration, secs: u64) {
        let want = Duration::from_secs(secs);
        assert!(
            elapsed >= want && elapsed <= want + Duration::from_millis(2),
            "fired after {elapsed:?}, not {want:?}"
        );
    }

    /// On a worker thread a dropped deadline's sleep is used again, moved to the new time;
    /// a kept one that had already fired still fires at its new time, not at once.
    #[test]
    fn a_worker_keeps_dropped_sleeps_and_they_fire_at_their_new_time() {
        paused_runtime().block_on(async {
            http::set_worker_for_test(Some(0));
            let first = Deadline::after(Duration::from_secs(10), Kind::Answer);
            let addr = first.sleep.as_ref().map(|s| &**s as *const Sleep);
            drop(first);
            assert_eq!(ANSWER.with(|s| s.borrow().len()), 1);

            // Taken again (the same allocation), at a later time.
            let start = Instant::now();
            let again = Deadline::after(Duration::from_secs(30), Kind::Answer);
            assert_eq!(again.sleep.as_ref().map(|s| &**s as *const Sleep), addr);
            assert_eq!(ANSWER.with(|s| s.borrow().len()), 0);
            again.await;
            assert_about(start.elapsed(), 30);

            // Fired, kept, and used for a deadline that has not come.
            let start = Instant::now();
            let mut d = Deadline::after(Duration::from_secs(5), Kind::Answer);
            let waited = tokio::time::timeout(Duration::from_secs(4), &mut d).await;
            assert!(waited.is_err(), "fired a second early");
            d.await;
            assert_about(start.elapsed(), 5);

            // Moved later while waited on.
            let start = Instant::now();
            let mut d = Deadline::after(Duration::from_secs(5), Kind::Header);
            assert!(tokio::time::timeout(Duration::from_secs(1), &mut d)
                .await
                .is_err());
            d.reset(start + Duration::from_secs(20));
            d.await;
            assert_about(start.elapsed(), 20);

            drop_spares();
            assert_eq!(ANSWER.with(|s| s.borrow().len()), 0);
            assert_eq!(HEADER.with(|s| s.borrow().len()), 0);
            http::set_worker_for_test(None);
        });
    }

    /// A duration past what an `Instant` holds waits (a long time) instead of panicking.
    #[test]
    fn a_deadline_too_far_to_hold_waits_instead_of_panicking() {
        paused_runtime().block_on(async {
            let mut d = Deadline::after(Duration::MAX, Kind::Header);
            let waited = tokio::time::timeout(Duration::from_secs(86_400 * 365), &mut d).await;
            assert!(waited.is_err(), "fired within a year");
        });
    }

    /// Off the worker threads nothing is kept (a thread may run several runtimes in turn).
    #[test]
    fn other_threads_keep_nothing() {
        paused_runtime().block_on(async {
            let start = Instant::now();
            Deadline::after(Duration::from_secs(3), Kind::Header).await;
            assert_about(start.elapsed(), 3);
            drop(Deadline::after(Duration::from_secs(3), Kind::Header));
            assert_eq!(HEADER.with(|s| s.borrow().len()), 0);
        });
    }
}
