//! LZW compression (type 9, spec §2.7): `09 {Algo: 0, Buf: <lzw>}` where `Buf` is Go's
//! `compress/lzw` stream with LSB bit order and 8-bit literals (the GIF flavour).
//!
//! Stock agents compress every TCP stream, so reading one needs this. `weezl` speaks the same
//! flavour; its encoder starts with a clear code, as Go 1.19 does, and its decoder accepts streams
//! with or without one. Decompression is bounded because a few kilobytes of LZW can claim megabytes.

use std::cell::RefCell;

use weezl::{decode::Decoder, encode::Encoder, BitOrder, LzwStatus};

use super::codec::{read_compress, write_compress};
use super::msgpack::{Reader, Writer};
use super::{DecodeError, MessageType};

/// Default bound on one decompressed message: memberlist master's `2 × 20 MiB`.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 40 * 1024 * 1024;

// One coder of each kind per thread, reset for each message: building one allocates its code
// table (tens of KiB), and a node under a join storm compresses and decompresses every gossip
// packet.
thread_local! {
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new(BitOrder::Lsb, 8));
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::new(BitOrder::Lsb, 8));
}

/// Go-compatible LZW (LSB, literal width 8) of `data`.
#[allow(clippy::expect_used)] // weezl's encoder only fails on a misconfigured code size; 8 is valid.
pub fn lzw_compress(data: &[u8]) -> Vec<u8> {
    ENCODER.with(|enc| {
        let mut enc = enc.borrow_mut();
        enc.reset();
        enc.encode(data)
            .expect("LZW encoding with code size 8 cannot fail")
    })
}

/// Decode a Go LZW stream, refusing output beyond `max` bytes (checked as it grows, so a bomb
/// stops early) and streams that end without the end code (Go reports unexpected EOF).
pub fn lzw_decompress(data: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    DECODER.with(|dec| {
        let mut dec = dec.borrow_mut();
        dec.reset();
        // Gossip compresses to about half; grow from there, never past one byte over `max`.
        let step = data.len().saturating_mul(2).clamp(256, 32 * 1024);
        let mut out: Vec<u8> = Vec::new();
        let mut input = data;
        loop {
            let len = out.len();
            let room = step.min(max.saturating_sub(len).saturating_add(1));
            out.resize(len.saturating_add(room), 0);
            let res = dec.decode_bytes(input, out.get_mut(len..).unwrap_or_default());
            out.truncate(len.saturating_add(res.consumed_out));
            // weezl reports at most what it was given and had room for.
            input = input.get(res.consumed_in..).unwrap_or_default();
            if out.len() > max {
                return Err(DecodeError::Malformed(format!(
                    "decompressed message is over the {max}-byte limit"
                )));
            }
            match res.status {
                Ok(LzwStatus::Done) => return Ok(out),
                Ok(LzwStatus::Ok) => {}
                Ok(LzwStatus::NoProgress) => {
                    return Err(DecodeError::Malformed(
                        "LZW stream ends without an end code".into(),
                    ))
                }
                Err(e) => return Err(DecodeError::Malformed(format!("bad LZW stream: {e:?}"))),
            }
        }
    })
}

/// Wrap an encoded message in a `compress` message.
pub fn compress_message(msg: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_buf(vec![MessageType::Compress as u8]);
    write_compress(&mut w, &lzw_compress(msg));
    w.into_vec()
}

/// Decompress the body of a `compress` message (the bytes after `09`).
pub fn decompress_body(body: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let buf = read_compress(&mut Reader::new(body)).map_err(|e| match e {
        DecodeError::Truncated => DecodeError::Malformed("compress message is truncated".into()),
        e => e,
    })?;
    lzw_decompress(buf, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn matches_spec_appendix_a9_vectors() {
        // spec A.9: identical to Go's compressor, which starts with a clear code.
        let with_clear = hex("00 d1 94 61 c3 e6 0d 08 81 04 0d 22 2c 18 10");
        assert_eq!(lzw_compress(b"hello hello hello"), with_clear);
        assert_eq!(lzw_compress(b""), hex("00 03 02"));
        let max = DEFAULT_MAX_DECOMPRESSED;
        assert_eq!(
            lzw_decompress(&with_clear, max).unwrap(),
            b"hello hello hello"
        );
        let without_clear = hex("68 ca b0 61 f3 06 84 40 82 06 11 16 0c 08");
        assert_eq!(
            lzw_decompress(&without_clear, max).unwrap(),
            b"hello hello hello"
        );
        assert_eq!(lzw_decompress(&hex("00 03 02"), max).unwrap(), b"");
    }

    #[test]
    fn round_trips_through_table_resets() {
        // Enough distinct sequences to fill the 4096-entry table several times.
        let data: Vec<u8> = (0u32..60_000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let enc = lzw_compress(&data);
        assert_eq!(
            lzw_decompress(&enc, DEFAULT_MAX_DECOMPRESSED).unwrap(),
            data
        );
    }

    #[test]
    fn output_beyond_the_limit_is_refused() {
        let enc = lzw_compress(&vec![0u8; 100_000]);
        assert!(lzw_decompress(&enc, 99_999).is_err());
        assert_eq!(lzw_decompress(&enc, 100_000).unwrap().len(), 100_000);
    }

    #[test]
    fn stream_without_end_code_is_refused() {
        let enc = lzw_compress(b"hello hello hello");
        assert!(lzw_decompress(&enc[..enc.len() - 3], DEFAULT_MAX_DECOMPRESSED).is_err());
    }

    #[test]
    fn compress_message_round_trips() {
        let msg = b"\x0b\x81\xa5SeqNo\x01";
        let c = compress_message(msg);
        assert_eq!(&c[..9], b"\x09\x82\xa4Algo\x00\xa3");
        assert_eq!(decompress_body(&c[1..], 1000).unwrap(), msg);
    }

    /// The per-thread coders start afresh for every message: the same input gives the same
    /// bytes, and a stream cut short or over the limit leaves nothing behind for the next one.
    #[test]
    fn reused_coders_start_each_message_afresh() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let once = lzw_compress(&data);
        assert_eq!(lzw_compress(&data), once);
        assert!(lzw_decompress(&once[..once.len() / 2], 1 << 20).is_err());
        assert!(lzw_decompress(&once, 100).is_err());
        assert_eq!(lzw_decompress(&once, data.len()).unwrap(), data);
        assert!(lzw_decompress(&once, data.len() - 1).is_err());
    }
}
