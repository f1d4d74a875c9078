//! The CRC wrapper (type 12, spec §2.6): `0c <crc32 IEEE of the rest, u32 BE> <message>`, added for
//! peers whose PMax ≥ 5 so corrupted datagrams are dropped instead of misread.

use super::{DecodeError, MessageType};

/// Prefix `msg` with the CRC header.
pub fn add_crc(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len().saturating_add(5));
    out.push(MessageType::HasCrc as u8);
    out.extend_from_slice(&crc32fast::hash(msg).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Check and remove the CRC header of `buf` (which starts with `0c`).
pub fn strip_crc(buf: &[u8]) -> Result<&[u8], DecodeError> {
    let Some(([ty, c0, c1, c2, c3], rest)) = buf.split_first_chunk::<5>() else {
        return Err(DecodeError::Truncated);
    };
    if *ty != MessageType::HasCrc as u8 {
        return Err(DecodeError::Truncated);
    }
    let want = u32::from_be_bytes([*c0, *c1, *c2, *c3]);
    let got = crc32fast::hash(rest);
    if got != want {
        return Err(DecodeError::Malformed(format!(
            "CRC mismatch: header says {want:08x}, payload has {got:08x}"
        )));
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_spec_appendix_a3() {
        // spec A.3: CRC-wrapped gossip suspect.
        let suspect = b"\x03\x83\xa4From\xa1a\xabIncarnation\x01\xa4Node\xa7arrnode";
        let wrapped = add_crc(suspect);
        assert_eq!(&wrapped[..5], [0x0c, 0xe8, 0xb2, 0xda, 0x3e]);
        assert_eq!(strip_crc(&wrapped).unwrap(), suspect);
    }

    #[test]
    fn corrupted_payload_is_refused() {
        let mut wrapped = add_crc(b"\x0b\x81\xa5SeqNo\x01");
        *wrapped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            strip_crc(&wrapped),
            Err(DecodeError::Malformed(_))
        ));
    }
}
