//! TCP streams (spec §2.10): one message each way per connection, framed incrementally.
//!
//! Framing needs only the read options (label, keyring, verify-incoming), not the state machine,
//! so each connection task gets an owned copy ([`Framing`]) taken from the node's config when the
//! task is spawned. The task reads and decodes on its own (decryption and decompression stay off
//! the driver) and sends the decoded message, or why there is none, to the driver, which runs
//! `Serf::handle_stream` and hands back the reply to write on the same connection. Outgoing
//! exchanges work the same way in reverse: connect, write, read one framed message, report.
//! A keyring change reaches every connection opened after it.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout_at;
use tracing::debug;
use vassal_memberlist::wire::{self, DecodeError, Keyring, ReadOptions, StreamMessage};
use vassal_memberlist::StreamId;

/// Largest stream we buffer: memberlist's 20 MiB user-state limit plus room for node states.
const MAX_STREAM: usize = 32 << 20;

/// What connection tasks tell the driver.
#[derive(Debug)]
pub(crate) enum StreamInput {
    /// A peer's message (or why it could not be read); the driver answers with the reply bytes.
    Inbound {
        from: SocketAddr,
        msg: Result<StreamMessage, DecodeError>,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    /// How one of our outgoing exchanges ended.
    Completed {
        id: StreamId,
        result: Result<StreamMessage, String>,
    },
}

/// Owned read options, so a connection task can frame messages without the state machine.
#[derive(Debug, Clone)]
pub(crate) struct Framing {
    pub label: Vec<u8>,
    pub keyring: Option<Keyring>,
    pub verify_incoming: bool,
}

impl Framing {
    pub fn from_config(c: &vassal_memberlist::Config) -> Self {
        Framing {
            label: c.label.clone(),
            keyring: c.keyring.clone(),
            verify_incoming: c.gossip_verify_incoming,
        }
    }

    fn options(&self) -> ReadOptions<'_> {
        ReadOptions {
            label: &self.label,
            keyring: self.keyring.as_ref(),
            verify_incoming: self.verify_incoming,
        }
    }
}

/// Why no message was read.
#[derive(Debug)]
enum ReadError {
    Decode(DecodeError),
    Io(std::io::Error),
    Closed { buffered: usize },
    TooLarge,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Decode(e) => write!(f, "{e}"),
            ReadError::Io(e) => f.write_str(&io_reason(e)),
            ReadError::Closed { buffered: 0 } => f.write_str("EOF"),
            ReadError::Closed { buffered } => {
                write!(f, "unexpected EOF after {buffered} bytes")
            }
            ReadError::TooLarge => write!(f, "stream exceeds {MAX_STREAM} bytes"),
        }
    }
}

/// Reads until one whole message is buffered. The decoder keeps its progress between reads, so
/// a peer trickling bytes costs linear CPU; the caller's deadline bounds the time.
async fn read_message(
    r: &mut (impl AsyncRead + Unpin),
    framing: &Framing,
) -> Result<StreamMessage, ReadError> {
    // Small at first: an idle or trickling connection should not hold 64 KiB.
    let mut buf = Vec::with_capacity(4 << 10);
    let mut decoder = wire::StreamDecoder::new();
    loop {
        if buf.capacity() - buf.len() < 4 << 10 {
            buf.reserve(buf.len().clamp(4 << 10, 1 << 20));
        }
        let n = r.read_buf(&mut buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed {
                buffered: buf.len(),
            });
        }
        match decoder.decode(&buf, &framing.options()) {
            Ok(Some((msg, _used))) => return Ok(msg),
            Ok(None) if buf.len() >= MAX_STREAM => return Err(ReadError::TooLarge),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Decode(e)),
        }
    }
}

/// Serves one accepted connection: read a message, let the driver answer, write the answer.
pub(crate) async fn serve_inbound(
    mut conn: TcpStream,
    from: SocketAddr,
    framing: Framing,
    deadline: Instant,
    driver: mpsc::Sender<StreamInput>,
) {
    let msg = match timeout_at(deadline.into(), read_message(&mut conn, &framing)).await {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(ReadError::Decode(e))) => Err(e),
        Ok(Err(ReadError::Closed { buffered: 0 })) => {
            // A port probe or health check: nothing was said, so there is nothing to answer.
            debug!(%from, "stream closed before any bytes");
            return;
        }
        Ok(Err(e)) => Err(DecodeError::Malformed(format!("failed to receive: {e}"))),
        Err(_) => Err(DecodeError::Malformed(
            "failed to receive: i/o timeout".into(),
        )),
    };
    let (tx, rx) = oneshot::channel();
    let input = StreamInput::Inbound {
        from,
        msg,
        reply: tx,
    };
    if driver.send(input).await.is_err() {
        return;
    }
    if let Ok(Some(bytes)) = rx.await {
        metrics::counter!("memberlist.tcp.sent").increment(bytes.len() as u64);
        let write = async {
            conn.write_all(&bytes).await?;
            conn.shutdown().await
        };
        match timeout_at(deadline.into(), write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(%from, error = %e, "failed to write stream reply"),
            Err(_) => debug!(%from, "timed out writing stream reply"),
        }
    }
}

/// One outgoing exchange: connect, write, read one message, report it (Go's error wording).
pub(crate) async fn exchange(
    id: StreamId,
    to: SocketAddr,
    bytes: Vec<u8>,
    deadline: Instant,
    framing: Framing,
    driver: mpsc::Sender<StreamInput>,
) {
    let run = async {
        let mut conn = TcpStream::connect(to)
            .await
            .map_err(|e| format!("dial tcp {to}: connect: {}", io_reason(&e)))?;
        metrics::counter!("memberlist.tcp.connect").increment(1);
        metrics::counter!("memberlist.tcp.sent").increment(bytes.len() as u64);
        conn.write_all(&bytes)
            .await
            .map_err(|e| format!("write tcp {to}: {}", io_reason(&e)))?;
        read_message(&mut conn, &framing)
            .await
            .map_err(|e| format!("read tcp {to}: {e}"))
    };
    let result = match timeout_at(deadline.into(), run).await {
        Ok(r) => r,
        Err(_) => Err(format!("tcp {to}: i/o timeout")),
    };
    let _ = driver.send(StreamInput::Completed { id, result }).await;
}

/// An IO error the way Go words it: `connection refused`, not `Connection refused (os error 111)`.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
