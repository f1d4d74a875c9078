//! Binding the gossip sockets (spec §2.1): one UDP socket and one TCP listener on the same
//! address and port, the UDP receive buffer raised to 2 MiB where the OS allows it; and the
//! back-off every accept loop of the agent uses when `accept` fails.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, info, warn};

/// Receive buffer we ask for, then smaller ones, like memberlist's `setUDPRecvBuf`.
const UDP_RECV_BUF: usize = 2 << 20;

/// Why a node could not start; nothing is left running.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {}", bind_reason(.source))]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot find an address to advertise ({0}); pass -advertise")]
    NoAdvertise(io::Error),
    #[error("invalid configuration: {0}")]
    Config(#[from] vassal_memberlist::ConfigError),
    #[error("Failed to setup snapshot {}: {source} (check the -snapshot path)", .path.display())]
    Snapshot {
        path: std::path::PathBuf,
        source: io::Error,
    },
}

fn bind_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            "address in use (is another agent running? pass -bind to choose another port)".into()
        }
        io::ErrorKind::AddrNotAvailable => {
            "address not available on this host (pass -bind with one of its addresses)".into()
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges; pass -bind with another port)"
                .into()
        }
        _ => e.to_string(),
    }
}

/// Binds UDP and TCP on `addr`. With port 0 both get the same free port (retrying if the TCP
/// side of the port the UDP socket got is taken).
pub(crate) fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let attempts = if addr.port() == 0 { 10 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = bind_udp(addr).map_err(|source| StartError::Bind { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        match bind_tcp(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && addr.port() == 0 => last = Some(e),
            Err(source) => {
                return Err(StartError::Bind {
                    addr: bound,
                    source,
                })
            }
        }
    }
    Err(StartError::Bind {
        addr,
        source: last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()),
    })
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&addr.into())?;
    let mut size = UDP_RECV_BUF;
    while size >= 64 << 10 {
        if socket.set_recv_buffer_size(size).is_ok() {
            break;
        }
        size /= 2;
    }
    debug!(
        requested = size,
        actual = socket.recv_buffer_size().unwrap_or(0),
        "udp receive buffer"
    );
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(StdUdpSocket::from(socket))
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Like Go's listeners: a restarted agent can rebind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// The address we tell peers about: the explicit one, else the bound one, else (bound to
/// `0.0.0.0`) the local address of the interface that routes outward. Connecting a UDP socket
/// sends nothing; it only asks the kernel for a route.
pub(crate) fn advertise_addr(
    explicit: Option<SocketAddr>,
    bound: SocketAddr,
) -> Result<SocketAddr, StartError> {
    let mut addr = explicit.unwrap_or(bound);
    if addr.port() == 0 {
        addr.set_port(bound.port());
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(outward_ip(addr.ip()).map_err(StartError::NoAdvertise)?);
    }
    Ok(addr)
}

fn outward_ip(unspecified: IpAddr) -> io::Result<IpAddr> {
    let (local, probe): (SocketAddr, SocketAddr) = match unspecified {
        IpAddr::V4(_) => (([0, 0, 0, 0], 0).into(), ([10, 255, 255, 255], 7946).into()),
        IpAddr::V6(_) => (
            ("::".parse::<IpAddr>().expect("literal"), 0).into(),
            ("fd00::1".parse::<IpAddr>().expect("literal"), 7946).into(),
        ),
    };
    let s = StdUdpSocket::bind(local)?;
    s.connect(probe)?;
    Ok(s.local_addr()?.ip())
}

/// The first wait after a failed `accept` (Go memberlist's `tcpListen`: 5 ms, doubling).
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest wait between failed `accept`s (Go memberlist: 1 s).
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Keeps an accept loop from spinning when `accept` keeps failing (out of file descriptors:
/// EMFILE, ENFILE; out of buffers or memory: ENOBUFS, ENOMEM), and from writing a warning per
/// failure: the first failure of a streak is logged, and the end of the streak with its count.
/// The wait doubles from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`], as in Go memberlist.
///
/// ```no_run
/// # async fn demo(listener: tokio::net::TcpListener) {
/// let mut backoff = vassal_node::AcceptBackoff::new("gossip TCP listener");
/// loop {
///     match listener.accept().await {
///         Ok((conn, peer)) => { backoff.succeeded(); /* serve conn */ }
///         Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    delay: Duration,
    failures: u64,
    since: Option<Instant>,
}

impl AcceptBackoff {
    /// `what` names the listener in the log (`"gossip TCP listener"`).
    pub fn new(what: &'static str) -> Self {
        AcceptBackoff {
            what,
            delay: Duration::ZERO,
            failures: 0,
            since: None,
        }
    }

    /// An accept failed with `e`: how long to wait before the next one.
    pub fn failed(&mut self, e: &io::Error) -> Duration {
        self.failures = self.failures.saturating_add(1);
        metrics::counter!("vassal.accept.failed", "listener" => self.what).increment(1);
        if self.since.is_none() {
            self.since = Some(Instant::now());
            warn!(
                listener = self.what,
                "{}: accept failed: {e} ({}); backing off up to {ACCEPT_BACKOFF_MAX:?} between \
                 attempts, further failures are counted, not logged",
                self.what,
                accept_hint(e)
            );
        }
        self.delay = if self.delay.is_zero() {
            ACCEPT_BACKOFF_MIN
        } else {
            self.delay.saturating_mul(2).min(ACCEPT_BACKOFF_MAX)
        };
        self.delay
    }

    /// An accept worked: a streak of failures, if any, is over.
    pub fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            info!(
                listener = self.what,
                "{}: accepting again after {} failed accepts over {:.1?}",
                self.what,
                self.failures,
                since.elapsed()
            );
        }
        self.failures = 0;
        self.delay = Duration::ZERO;
    }

    /// Failed accepts in the current streak (0 when the last accept worked).
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// Lets a warning about a limit being hit through at most once per interval, counting the
/// times it was held back, so that a flood costs one log line a minute rather than one per
/// packet or connection.
///
/// ```
/// # use std::time::{Duration, Instant};
/// let mut t = vassal_node::Throttle::new(Duration::from_secs(60));
/// let now = Instant::now();
/// assert_eq!(t.ready(now), Some(0)); // log, nothing held back before
/// assert_eq!(t.ready(now), None); // held back
/// assert_eq!(t.ready(now + Duration::from_secs(61)), Some(1)); // log: "1 more since"
/// ```
#[derive(Debug, Clone)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            held: 0,
        }
    }

    /// The limit was hit at `now`: `Some(n)` if this one should be logged (`n` were held back
    /// since the last one logged), `None` if it is held back.
    pub fn ready(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held = self.held.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// What an accept error usually means, for the operator.
fn accept_hint(e: &io::Error) -> &'static str {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    match e.raw_os_error() {
        Some(24) => "this process is out of file descriptors: raise `ulimit -n`, or lower the connection limits",
        Some(23) => "the system is out of file descriptors",
        Some(105) | Some(12) => "the system is out of memory for sockets",
        _ => "a connection failed before it was accepted",
    }
}

/// `listener.accept()`, once `resume` (if any) has passed: lets a `select!` loop that must not
/// sleep (the driver) back off its accepts. Cancel-safe, like `accept`.
pub(crate) async fn accept_after(
    listener: &TcpListener,
    resume: Option<tokio::time::Instant>,
) -> io::Result<(TcpStream, SocketAddr)> {
    if let Some(at) = resume {
        tokio::time::sleep_until(at).await;
    }
    listener.accept().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_from_5ms_to_1s_and_resets_on_success() {
        // Go memberlist's tcpListen.
        let mut b = AcceptBackoff::new("test");
        let e = io::Error::from_raw_os_error(24);
        let delays: Vec<Duration> = (0..10).map(|_| b.failed(&e)).collect();
        assert_eq!(delays[0], Duration::from_millis(5));
        assert_eq!(delays[1], Duration::from_millis(10));
        assert_eq!(delays[7], Duration::from_millis(640));
        assert_eq!(delays[8], Duration::from_secs(1));
        assert_eq!(delays[9], Duration::from_secs(1));
        assert_eq!(b.failures(), 10);
        b.succeeded();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed(&e), Duration::from_millis(5));
    }
}
