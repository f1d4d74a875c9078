//! TCP stream messages (spec §2.10): push/pull, fallback ping/ack, reliable user messages and error
//! responses, inside optional compression (`09`) and encryption (`0a <len:u32 BE> <envelope>`).
//!
//! Peers never half-close, so the reader cannot wait for EOF: [`decode_stream`] is incremental and
//! answers "need more bytes" until one whole message has arrived. Every count and length from the
//! wire is bounded before it is trusted.

use super::codec::*;
use super::compress::{compress_message, lzw_decompress, DEFAULT_MAX_DECOMPRESSED};
use super::crypto::ENCRYPTION_OVERHEAD;
use super::label::strip_label;
use super::msgpack::{Reader, Writer};
use super::{
    DecodeError, Keyring, MessageType, PushPull, ReadOptions, StreamMessage, WriteOptions,
};

/// Most node states one push/pull may announce (memberlist master's limit).
pub const MAX_PUSH_NODES: u64 = 1 << 20;
/// How many bytes may be buffered without completing a message before the stream is refused (a
/// 20 MiB state plus 1 Mi nodes of overhead, generously); without it a forged length would make
/// the reader wait forever.
pub const MAX_BUFFERED: usize = 64 * 1024 * 1024;
/// Largest push/pull user state, reliable user message, or encrypted stream (20 MiB).
pub const MAX_STREAM_PAYLOAD: usize = 20 * 1024 * 1024;

fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(what.into())
}

/// The inner message bytes: type byte and body, with no compression or encryption.
pub fn encode_stream_body(msg: &StreamMessage) -> Vec<u8> {
    let ty = match msg {
        StreamMessage::PushPull(_) => MessageType::PushPull,
        StreamMessage::Ping(_) => MessageType::Ping,
        StreamMessage::Ack(_) => MessageType::Ack,
        StreamMessage::User(_) => MessageType::User,
        StreamMessage::Err(_) => MessageType::Err,
    };
    let mut w = Writer::with_buf(vec![ty as u8]);
    match msg {
        StreamMessage::PushPull(pp) => {
            write_push_pull_header(&mut w, pp.join, pp.nodes.len(), pp.user_state.len());
            for n in &pp.nodes {
                write_push_node_state(&mut w, n);
            }
            w.bytes(&pp.user_state);
        }
        StreamMessage::Ping(p) => write_ping(&mut w, p),
        StreamMessage::Ack(a) => write_ack(&mut w, a),
        StreamMessage::User(b) => {
            write_user_msg_header(&mut w, b.len());
            w.bytes(b);
        }
        StreamMessage::Err(e) => write_err(&mut w, e),
    }
    w.into_vec()
}

/// Encode a stream message: compressed whenever `opts.compress` (streams are compressed even when
/// that makes them larger, as Go does), then encrypted with `nonce` if there is a keyring.
///
/// The label is *not* written here: the dialer writes [`label_header`](super::label_header) once at
/// the start of the connection, the acceptor never does. Both use the label as encryption AAD.
pub fn encode_stream(msg: &StreamMessage, opts: &WriteOptions<'_>, nonce: [u8; 12]) -> Vec<u8> {
    let mut buf = encode_stream_body(msg);
    if opts.compress {
        buf = compress_message(&buf);
    }
    match opts.keyring {
        Some(ring) => encrypt_stream(ring, &buf, opts.label, nonce),
        None => buf,
    }
}

fn encrypt_stream(ring: &Keyring, plain: &[u8], label: &[u8], nonce: [u8; 12]) -> Vec<u8> {
    // Our own message, far below 4 GiB (a push/pull is at most MAX_NODES states).
    let len = ENCRYPTION_OVERHEAD.saturating_add(plain.len()) as u32;
    let mut out = vec![MessageType::Encrypt as u8];
    out.extend_from_slice(&len.to_be_bytes());
    let mut aad = out.clone();
    aad.extend_from_slice(label);
    out.extend_from_slice(&ring.encrypt(plain, &aad, nonce));
    out
}

/// Read one stream message from the start of `buf`, which holds everything received so far.
///
/// `Ok(None)`: not complete yet, read more. `Ok(Some((msg, n)))`: `msg` used the first `n` bytes.
/// A leading label header is checked against `opts.label` and consumed; an acceptor that requires
/// the header should check with [`strip_label`](super::strip_label) first.
pub fn decode_stream(
    buf: &[u8],
    opts: &ReadOptions<'_>,
) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
    decode_stream_limited(buf, opts, DEFAULT_MAX_DECOMPRESSED)
}

/// [`decode_stream`] with an explicit bound on decompressed size.
pub fn decode_stream_limited(
    buf: &[u8],
    opts: &ReadOptions<'_>,
    max_decompressed: usize,
) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
    let mut b = buf;
    if buf.first() == Some(&(MessageType::HasLabel as u8)) {
        let (label, rest) = match strip_label(buf) {
            Err(DecodeError::Truncated) => return Ok(None),
            other => other?,
        };
        if label != opts.label {
            return Err(malformed(format!(
                "stream label {:?} does not match ours ({:?})",
                String::from_utf8_lossy(label),
                String::from_utf8_lossy(opts.label)
            )));
        }
        b = rest;
    }
    // `b` is a suffix of `buf`: what the label header left.
    let off = buf.len().saturating_sub(b.len());
    let Some((&ty, after_ty)) = b.split_first() else {
        return Ok(None);
    };

    if ty == MessageType::Encrypt as u8 {
        let Some(ring) = opts.keyring else {
            return Err(malformed(
                "remote state is encrypted and encryption is not configured",
            ));
        };
        let Some((header, body)) = b.split_first_chunk::<5>() else {
            return Ok(None);
        };
        let [_, l0, l1, l2, l3] = *header;
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if len > MAX_STREAM_PAYLOAD {
            return Err(malformed(format!(
                "encrypted stream of {len} bytes is over the {MAX_STREAM_PAYLOAD}-byte limit"
            )));
        }
        let Some(sealed) = body.get(..len) else {
            return Ok(None);
        };
        let mut aad = header.to_vec();
        aad.extend_from_slice(opts.label);
        let plain = ring.decrypt(sealed, &aad)?;
        let msg = decode_complete(&plain, max_decompressed)?;
        // All three lie within `buf`, so the sum is at most `buf.len()`.
        let used = off.saturating_add(header.len()).saturating_add(len);
        return Ok(Some((msg, used)));
    }
    if opts.keyring.is_some() && opts.verify_incoming {
        return Err(malformed(
            "encryption is configured but remote state is not encrypted",
        ));
    }

    let parsed = if ty == MessageType::Compress as u8 {
        let mut r = Reader::new(after_ty);
        read_compress(&mut r).and_then(|lzw| {
            let used = r.position().saturating_add(1);
            let raw = lzw_decompress(lzw, max_decompressed)?;
            Ok((complete(parse_inner(&raw))?.0, used))
        })
    } else {
        parse_inner(b)
    };
    match parsed {
        Ok((msg, used)) => Ok(Some((msg, off.saturating_add(used)))),
        Err(DecodeError::Truncated) if b.len() > MAX_BUFFERED => Err(malformed(format!(
            "no complete stream message in {} bytes; giving up",
            b.len()
        ))),
        Err(DecodeError::Truncated) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A decrypted payload must hold a whole message: running out of bytes is malformed, not "wait".
fn complete<T>(r: Result<T, DecodeError>) -> Result<T, DecodeError> {
    r.map_err(|e| match e {
        DecodeError::Truncated => malformed("stream message is truncated"),
        e => e,
    })
}

fn decode_complete(plain: &[u8], max: usize) -> Result<StreamMessage, DecodeError> {
    match plain.split_first() {
        Some((&ty, body)) if ty == MessageType::Compress as u8 => {
            let lzw = complete(read_compress(&mut Reader::new(body)))?;
            let raw = lzw_decompress(lzw, max)?;
            Ok(complete(parse_inner(&raw))?.0)
        }
        _ => Ok(complete(parse_inner(plain))?.0),
    }
}

/// An incremental [`decode_stream`] for one connection: bytes that have been parsed are not
/// parsed again, so a peer trickling a push/pull byte by byte costs us linear, not quadratic, CPU.
///
/// Feed it the whole buffer read so far (it only ever grows) after each read. Encrypted and
/// compressed messages carry their length up front and are decoded once they are whole; a plain
/// push/pull is decoded node state by node state as the bytes arrive.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// A plain push/pull in progress: its header, the node states read so far, and where the
    /// next one starts.
    push_pull: Option<PartialPushPull>,
    /// Don't try again before the buffer holds this many bytes (a known shortfall).
    wait_for: usize,
}

#[derive(Debug)]
struct PartialPushPull {
    join: bool,
    remaining: u64,
    user_len: usize,
    nodes: Vec<super::PushNodeState>,
    /// Offset in the stream buffer of the next unread byte.
    pos: usize,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Like [`decode_stream`]: `Ok(None)` means read more.
    pub fn decode(
        &mut self,
        buf: &[u8],
        opts: &ReadOptions<'_>,
    ) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
        if buf.len() < self.wait_for {
            return Ok(None);
        }
        if self.push_pull.is_none() {
            let Some(start) = self.plain_push_pull_start(buf, opts)? else {
                return self.whole(buf, opts);
            };
            // `start` is the offset of a byte we saw, so `start + 1 <= buf.len()`.
            let mut r = Reader::new(buf.get(start.saturating_add(1)..).unwrap_or_default());
            let (join, n, user_len) = match read_push_pull_header(&mut r) {
                Err(DecodeError::Truncated) => return self.more(buf),
                other => other?,
            };
            check_push_pull_header(n, user_len)?;
            self.push_pull = Some(PartialPushPull {
                join,
                remaining: n,
                // Bounded by MAX_STREAM_PAYLOAD just above.
                user_len: user_len as usize,
                nodes: Vec::new(),
                pos: start.saturating_add(1).saturating_add(r.position()),
            });
        }
        let Some(p) = self.push_pull.as_mut() else {
            return Ok(None);
        };
        while p.remaining > 0 {
            let mut r = Reader::new(buf.get(p.pos..).ok_or_else(shrank)?);
            match read_push_node_state(&mut r) {
                Ok(node) => {
                    p.nodes.push(node);
                    p.remaining = p.remaining.saturating_sub(1);
                    p.pos = p.pos.saturating_add(r.position());
                }
                Err(DecodeError::Truncated) => return self.more(buf),
                Err(e) => return Err(e),
            }
        }
        let end = p.pos.saturating_add(p.user_len);
        if buf.len() < end {
            self.wait_for = end;
            return Ok(None);
        }
        let Some(p) = self.push_pull.take() else {
            return Ok(None);
        };
        let msg = StreamMessage::PushPull(PushPull {
            join: p.join,
            nodes: p.nodes,
            user_state: buf.get(p.pos..end).ok_or_else(shrank)?.to_vec(),
        });
        Ok(Some((msg, end)))
    }

    /// Any message but a plain push/pull: decoded whole, once the bytes it announces are here.
    fn whole(
        &mut self,
        buf: &[u8],
        opts: &ReadOptions<'_>,
    ) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
        match decode_stream(buf, opts)? {
            Some(done) => Ok(Some(done)),
            None => self.more(buf),
        }
    }

    /// Not complete: wait for more bytes, or give up past [`MAX_BUFFERED`].
    fn more(&mut self, buf: &[u8]) -> Result<Option<(StreamMessage, usize)>, DecodeError> {
        if buf.len() > MAX_BUFFERED {
            return Err(malformed(format!(
                "no complete stream message in {} bytes; giving up",
                buf.len()
            )));
        }
        self.wait_for = buf.len().saturating_add(1);
        Ok(None)
    }

    /// Where the type byte of a plain (neither encrypted nor compressed) push/pull starts, after
    /// any label; `None` for every other message or when too few bytes are here to tell.
    fn plain_push_pull_start(
        &self,
        buf: &[u8],
        opts: &ReadOptions<'_>,
    ) -> Result<Option<usize>, DecodeError> {
        let mut off = 0;
        if buf.first() == Some(&(MessageType::HasLabel as u8)) {
            match strip_label(buf) {
                Ok((_, rest)) => off = buf.len().saturating_sub(rest.len()),
                Err(DecodeError::Truncated) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let plain_allowed = !(opts.keyring.is_some() && opts.verify_incoming);
        Ok(match buf.get(off) {
            // Let decode_stream check the label and refuse plaintext where it must.
            Some(&ty) if ty == MessageType::PushPull as u8 && plain_allowed => {
                let label_ok = off == 0 || strip_label(buf).is_ok_and(|(l, _)| l == opts.label);
                label_ok.then_some(off)
            }
            _ => None,
        })
    }
}

/// The caller broke [`StreamDecoder::decode`]'s contract (the buffer only ever grows).
fn shrank() -> DecodeError {
    malformed("stream buffer shrank between reads")
}

fn check_push_pull_header(n: u64, user_len: u64) -> Result<(), DecodeError> {
    if n > MAX_PUSH_NODES {
        return Err(malformed(format!(
            "push/pull announces {n} nodes; limit is {MAX_PUSH_NODES}"
        )));
    }
    if user_len > MAX_STREAM_PAYLOAD as u64 {
        return Err(malformed(format!(
            "push/pull user state of {user_len} bytes is over the {MAX_STREAM_PAYLOAD}-byte limit"
        )));
    }
    Ok(())
}

/// Parse one plain stream message; `Truncated` means the buffer ends too early.
fn parse_inner(b: &[u8]) -> Result<(StreamMessage, usize), DecodeError> {
    let (&ty, body) = b.split_first().ok_or(DecodeError::Truncated)?;
    let mut r = Reader::new(body);
    let msg = match MessageType::from_u8(ty) {
        Some(MessageType::PushPull) => {
            let (join, n, user_len) = read_push_pull_header(&mut r)?;
            check_push_pull_header(n, user_len)?;
            // Not pre-allocated: `n` is the sender's claim, the bytes are the proof.
            let mut nodes = Vec::new();
            for _ in 0..n {
                nodes.push(read_push_node_state(&mut r)?);
            }
            let user_state = r.take(user_len as usize)?.to_vec();
            StreamMessage::PushPull(PushPull {
                join,
                nodes,
                user_state,
            })
        }
        Some(MessageType::Ping) => StreamMessage::Ping(read_ping(&mut r)?),
        Some(MessageType::Ack) => StreamMessage::Ack(read_ack(&mut r)?),
        Some(MessageType::Err) => StreamMessage::Err(read_err(&mut r)?),
        Some(MessageType::User) => {
            let len = read_user_msg_header(&mut r)?;
            if len > MAX_STREAM_PAYLOAD as u64 {
                return Err(malformed(format!(
                    "user message of {len} bytes is over the {MAX_STREAM_PAYLOAD}-byte limit"
                )));
            }
            StreamMessage::User(r.take(len as usize)?.to_vec())
        }
        _ => return Err(malformed(format!("unexpected stream message type {ty}"))),
    };
    Ok((msg, r.position().saturating_add(1)))
}
