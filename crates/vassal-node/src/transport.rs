//! Binding the gossip sockets (spec §2.1): one UDP socket and one TCP listener on the same
//! address and port, the UDP receive buffer raised to 2 MiB where the OS allows it.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tracing::debug;

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
