//! go-metrics' statsd (UDP) and statsite (TCP) sinks: a queue of lines
//! (`serf-agent.serf.member.join:1.000000|c`), flushed every 100 ms; a statsd datagram holds
//! at most 1400 bytes. When the address cannot be reached the sink drops what comes for 5 s
//! and tries again, as Go's does.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::error;

/// go-metrics' `flushInterval`.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// go-metrics' `statsdMaxLen`: a datagram's most bytes.
const STATSD_MAX_LEN: usize = 1400;
/// Lines queued before new ones are dropped (go-metrics' queue size).
const QUEUE: usize = 4096;
/// How long a sink waits after a failure before it connects again.
const RETRY: Duration = Duration::from_secs(5);
/// A statsite buffer is written out at this size even before the tick.
const TCP_BUFFER: usize = 64 * 1024;

/// Which sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// statsd, over UDP.
    Statsd,
    /// statsite, over TCP.
    Statsite,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Statsd => "statsd",
            Proto::Statsite => "statsite",
        }
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Conn {
    async fn open(proto: Proto, addr: &str) -> std::io::Result<Conn> {
        match proto {
            Proto::Statsd => {
                let to = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
                })?;
                let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let sock = UdpSocket::bind(any).await?;
                sock.connect(to).await?;
                Ok(Conn::Udp(sock))
            }
            Proto::Statsite => Ok(Conn::Tcp(TcpStream::connect(addr).await?)),
        }
    }

    async fn send(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Udp(s) => s.send(buf).await.map(|_| ()),
            Conn::Tcp(s) => s.write_all(buf).await,
        }
    }
}

/// Starts the sink for `addr`; the queue its lines go to.
pub fn spawn(proto: Proto, addr: String) -> mpsc::Sender<String> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(proto, addr, rx));
    tx
}

async fn run(proto: Proto, addr: String, mut rx: mpsc::Receiver<String>) {
    let name = proto.name();
    loop {
        match Conn::open(proto, &addr).await {
            Ok(mut conn) => match pump(proto, &mut conn, &mut rx).await {
                Ok(()) => return,
                Err(e) => error!("agent: Error writing to {name} at {addr}! Err: {e}"),
            },
            Err(e) => error!("agent: Error connecting to {name} at {addr}! Err: {e}"),
        }
        // Go's WAIT: drop what comes for a while, then connect again.
        let wait = tokio::time::sleep(RETRY);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                m = rx.recv() => if m.is_none() { return },
                () = &mut wait => break,
            }
        }
    }
}

/// Sends queued lines until the queue closes (`Ok`) or a write fails.
async fn pump(
    proto: Proto,
    conn: &mut Conn,
    rx: &mut mpsc::Receiver<String>,
) -> std::io::Result<()> {
    let mut buf = String::new();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else {
                    if !buf.is_empty() {
                        conn.send(buf.as_bytes()).await?;
                    }
                    return Ok(());
                };
                let limit = match proto {
                    Proto::Statsd => STATSD_MAX_LEN,
                    Proto::Statsite => TCP_BUFFER,
                };
                if !buf.is_empty() && buf.len().saturating_add(m.len()) > limit {
                    let r = conn.send(buf.as_bytes()).await;
                    buf.clear();
                    r?;
                }
                buf.push_str(&m);
            }
            _ = tick.tick() => {
                if !buf.is_empty() {
                    let r = conn.send(buf.as_bytes()).await;
                    buf.clear();
                    r?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_reach_a_statsd_socket_in_one_datagram() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = spawn(Proto::Statsd, rx.local_addr().unwrap().to_string());
        tx.send("a.b:1.000000|c\n".into()).await.unwrap();
        tx.send("a.c:2.000000|ms\n".into()).await.unwrap();
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "a.b:1.000000|c\na.c:2.000000|ms\n"
        );
    }

    #[tokio::test]
    async fn lines_reach_a_statsite_stream() {
        use tokio::io::AsyncReadExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tx = spawn(Proto::Statsite, l.local_addr().unwrap().to_string());
        tx.send("a.b:1.000000|c\n".into()).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = vec![0u8; 15];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("the line within 5 s")
            .unwrap();
        assert_eq!(got, b"a.b:1.000000|c\n");
    }
}
