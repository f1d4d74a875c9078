//! Compound messages (type 7, spec §2.5): several messages in one datagram,
//! `07 <n:u8> <len:u16 BE>×n <msg>×n`.

use super::{DecodeError, MessageType};

/// The most parts one compound can describe (its count is one byte).
pub const MAX_PARTS: usize = 255;

/// The parts of a compound body (the bytes after the `07` type byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompoundParts<'a> {
    /// The complete leading parts, in order.
    pub parts: Vec<&'a [u8]>,
    /// How many announced parts were cut off by the end of the buffer (Go processes the complete
    /// ones and counts these).
    pub truncated: usize,
}

/// Split a compound body. A missing count or length table is malformed; parts that run past the end
/// are counted in `truncated`.
pub fn decode_compound(body: &[u8]) -> Result<CompoundParts<'_>, DecodeError> {
    let (&n, rest) = body
        .split_first()
        .ok_or_else(|| DecodeError::Malformed("compound without a part count".into()))?;
    let n = n as usize;
    // n ≤ 255, so 2·n cannot overflow.
    let Some((lens, mut data)) = rest.split_at_checked(n.saturating_mul(2)) else {
        return Err(DecodeError::Malformed(
            "compound length table is truncated".into(),
        ));
    };
    let mut parts = Vec::with_capacity(n);
    for (i, len) in lens.chunks_exact(2).enumerate() {
        let &[hi, lo] = len else {
            continue; // chunks_exact(2) yields only pairs
        };
        let len = u16::from_be_bytes([hi, lo]) as usize;
        let Some((part, more)) = data.split_at_checked(len) else {
            return Ok(CompoundParts {
                parts,
                truncated: n.saturating_sub(i),
            });
        };
        parts.push(part);
        data = more;
    }
    Ok(CompoundParts {
        parts,
        truncated: 0,
    })
}

/// One compound message holding `msgs` (each a complete encoded message of at most 65535 bytes;
/// at most [`MAX_PARTS`] of them).
pub fn encode_compound_one(msgs: &[impl AsRef<[u8]>]) -> Vec<u8> {
    debug_assert!(
        msgs.len() <= MAX_PARTS,
        "a compound holds at most 255 parts"
    );
    let total: usize = msgs.iter().map(|m| m.as_ref().len()).sum();
    let mut out = Vec::with_capacity(
        msgs.len()
            .saturating_mul(2)
            .saturating_add(total)
            .saturating_add(2),
    );
    out.push(MessageType::Compound as u8);
    out.push(msgs.len() as u8);
    for m in msgs {
        debug_assert!(
            m.as_ref().len() <= u16::MAX as usize,
            "compound part over 65535 bytes"
        );
        out.extend_from_slice(&(m.as_ref().len() as u16).to_be_bytes());
    }
    for m in msgs {
        out.extend_from_slice(m.as_ref());
    }
    out
}

/// Compound messages holding `msgs`, split into chunks of at most [`MAX_PARTS`] parts the way
/// memberlist's `makeCompoundMessages` does.
pub fn encode_compound(msgs: &[impl AsRef<[u8]>]) -> Vec<Vec<u8>> {
    msgs.chunks(MAX_PARTS).map(encode_compound_one).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_parts() {
        let msgs = [vec![1u8, 2, 3], vec![], vec![9; 300]];
        let enc = encode_compound_one(&msgs);
        assert_eq!(&enc[..8], [7, 3, 0, 3, 0, 0, 1, 44]);
        let dec = decode_compound(&enc[1..]).unwrap();
        assert_eq!(
            dec.parts,
            msgs.iter().map(|m| m.as_slice()).collect::<Vec<_>>()
        );
        assert_eq!(dec.truncated, 0);
    }

    #[test]
    fn truncated_compound_keeps_leading_parts() {
        // spec §2.5: complete leading parts are processed, the rest counted as truncated.
        let enc = encode_compound_one(&[vec![1u8; 4], vec![2u8; 4], vec![3u8; 4]]);
        let dec = decode_compound(&enc[1..enc.len() - 5]).unwrap();
        assert_eq!(dec.parts, vec![&[1u8; 4][..]]);
        assert_eq!(dec.truncated, 2);
    }

    #[test]
    fn long_lists_are_split_into_chunks_of_255() {
        let msgs = vec![vec![0u8]; 600];
        let chunks = encode_compound(&msgs);
        assert_eq!(
            chunks.iter().map(|c| c[1]).collect::<Vec<_>>(),
            [255, 255, 90]
        );
    }

    #[test]
    fn missing_length_table_is_malformed() {
        assert!(decode_compound(&[]).is_err());
        assert!(decode_compound(&[2, 0, 1, 0]).is_err());
    }
}
