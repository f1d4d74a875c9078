//! UDP packet layering (spec §2.2): label → encryption → CRC → compression → compound → message.
//!
//! Decoding peels the layers in that order and recurses through compress and compound the way
//! memberlist's `handleCommand` does, so one bad compound part costs only that part. Encoding wraps
//! in the reverse order, exactly as `rawSendMsgPacket` does.

use std::borrow::Cow;

use super::codec::decode_message;
use super::compound::{decode_compound, encode_compound, encode_compound_one, MAX_PARTS};
use super::compress::{compress_message, decompress_body};
use super::crc::{add_crc, strip_crc};
use super::label::{add_label, strip_label};
use super::{DecodeError, Message, MessageType, ReadOptions, WriteOptions};
use crate::limits::MAX_PACKET_DECOMPRESSED;

/// How deep compress/compound may nest inside one packet. Go never nests at all when sending; the
/// bound stops a crafted packet from recursing without end.
const MAX_NESTING: usize = 4;

/// What one datagram held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedPacket {
    /// Every message that decoded, in packet order.
    pub messages: Vec<Message>,
    /// Compound parts that were malformed or cut off (the rest were still delivered).
    pub malformed: usize,
}

/// Decode a datagram, with at most [`MAX_PACKET_DECOMPRESSED`] bytes from decompression.
///
/// Errors mean the whole packet was dropped: empty, wrong label, could not be decrypted (or was
/// plaintext while `verify_incoming` demands encryption), bad CRC, or an undecodable outer message.
pub fn decode_packet(buf: &[u8], opts: &ReadOptions<'_>) -> Result<DecodedPacket, DecodeError> {
    decode_packet_limited(buf, opts, MAX_PACKET_DECOMPRESSED)
}

/// [`decode_packet`] with an explicit bound on the total bytes decompression may produce.
pub fn decode_packet_limited(
    buf: &[u8],
    opts: &ReadOptions<'_>,
    max_decompressed: usize,
) -> Result<DecodedPacket, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Malformed("empty packet".into()));
    }
    let (label, rest) = strip_label(buf)?;
    if label != opts.label {
        return Err(DecodeError::Malformed(format!(
            "packet label {:?} does not match ours ({:?})",
            String::from_utf8_lossy(label),
            String::from_utf8_lossy(opts.label)
        )));
    }
    let plain: Cow<'_, [u8]> = match opts.keyring {
        Some(ring) => match ring.decrypt(rest, label) {
            Ok(p) => Cow::Owned(p),
            // memberlist treats undecryptable packets as plaintext unless told to verify.
            Err(_) if !opts.verify_incoming => Cow::Borrowed(rest),
            Err(e) => return Err(e),
        },
        None => Cow::Borrowed(rest),
    };
    let mut body = &plain[..];
    if body.len() >= 5 && body.first() == Some(&(MessageType::HasCrc as u8)) {
        body = strip_crc(body)?;
    }
    let mut out = DecodedPacket::default();
    let mut budget = max_decompressed;
    dispatch(body, 0, &mut out, &mut budget)?;
    Ok(out)
}

fn dispatch(
    buf: &[u8],
    depth: usize,
    out: &mut DecodedPacket,
    budget: &mut usize,
) -> Result<(), DecodeError> {
    if depth > MAX_NESTING {
        return Err(DecodeError::Malformed(
            "compound/compress nested too deeply".into(),
        ));
    }
    let typed = buf
        .split_first()
        .and_then(|(&ty, rest)| Some((MessageType::from_u8(ty)?, rest)));
    // depth ≤ MAX_NESTING, checked above.
    let depth = depth.saturating_add(1);
    match typed {
        Some((MessageType::Compound, rest)) => {
            let parts = decode_compound(rest)?;
            out.malformed = out.malformed.saturating_add(parts.truncated);
            for part in parts.parts {
                if dispatch(part, depth, out, budget).is_err() {
                    out.malformed = out.malformed.saturating_add(1);
                }
            }
            Ok(())
        }
        Some((MessageType::Compress, rest)) => {
            // At most `budget` bytes come back.
            let raw = decompress_body(rest, *budget)?;
            *budget = budget.saturating_sub(raw.len());
            dispatch(&raw, depth, out, budget)
        }
        _ => {
            out.messages.push(decode_message(buf)?);
            Ok(())
        }
    }
}

/// Build one datagram from already-encoded messages (see [`encode_message`](super::encode_message)):
/// one message goes alone, several in a compound (more than 255 are nested rather than lost), then
/// LZW only if it makes the packet smaller, then CRC, encryption with `nonce`, and the label.
pub fn encode_packet(msgs: &[Vec<u8>], opts: &WriteOptions<'_>, nonce: [u8; 12]) -> Vec<u8> {
    let mut buf = match msgs {
        [] => return Vec::new(),
        [one] => one.clone(),
        many if many.len() <= MAX_PARTS => encode_compound_one(many),
        many => encode_compound_one(&encode_compound(many)),
    };
    if opts.compress {
        let c = compress_message(&buf);
        if c.len() < buf.len() {
            buf = c;
        }
    }
    if opts.crc {
        buf = add_crc(&buf);
    }
    if let Some(ring) = opts.keyring {
        buf = ring.encrypt(&buf, opts.label, nonce);
    }
    add_label(opts.label, &buf)
}
