//! memberlist's wire format (spec §1–§2): message bodies in Go's msgpack dialect, and the packet
//! and stream layers around them (label, encryption, CRC, LZW compression, compound).
//!
//! Everything here is pure: bytes in, bytes out. Randomness (the AES-GCM nonce) is an argument.
//! Every decoder bounds lengths taken from the wire before allocating and never panics.

mod codec;
pub mod compound;
pub mod compress;
pub mod crc;
pub mod crypto;
pub mod label;
pub mod messages;
pub mod msgpack;
mod packet;
mod stream;

pub use codec::{decode_message, encode_message, ip_bytes, ip_from_bytes};
pub use compound::{decode_compound, encode_compound, encode_compound_one, CompoundParts};
pub use compress::{
    compress_message, decompress_body, lzw_compress, lzw_decompress, DEFAULT_MAX_DECOMPRESSED,
};
pub use crc::{add_crc, strip_crc};
pub use crypto::{encrypt_with, KeyringError, ENCRYPTION_OVERHEAD};
pub use label::{add_label, label_header, strip_label};
pub use messages::*;
pub use packet::{decode_packet, decode_packet_limited, encode_packet, DecodedPacket};
pub use stream::{
    decode_stream, decode_stream_limited, encode_stream, encode_stream_body, StreamDecoder,
    MAX_BUFFERED, MAX_PUSH_NODES, MAX_STREAM_PAYLOAD,
};

use thiserror::Error;

/// Why bytes from the wire could not be read. Receivers count and log these; they are never fatal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside a message.
    #[error("message is truncated")]
    Truncated,
    /// The input is not a message we can read; the text says what is wrong.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// A keyring of AES-GCM keys: index 0 is the primary (used to encrypt); every key is tried to
/// decrypt (spec §2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Vec<u8>>,
}

/// How this node reads packets and streams.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions<'a> {
    /// The label this node expects (empty: none).
    pub label: &'a [u8],
    /// Keys to decrypt with; `None` when encryption is off.
    pub keyring: Option<&'a Keyring>,
    /// Refuse unencrypted input when a keyring is set (`GossipVerifyIncoming`).
    pub verify_incoming: bool,
}

/// How this node writes packets and streams.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Label to prefix (empty: none).
    pub label: &'a [u8],
    /// Encrypt with the primary key when set.
    pub keyring: Option<&'a Keyring>,
    /// LZW-compress (packets: only when smaller; streams: always).
    pub compress: bool,
    /// Prefix a CRC (packets only; for peers whose PMax ≥ 5).
    pub crc: bool,
}
