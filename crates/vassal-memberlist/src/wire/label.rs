//! The label header (spec §2.8): `f4 <len:u8 1..255> <label>` before everything else, so clusters
//! sharing a network can tell each other's packets apart. An empty label means no header.

use super::{DecodeError, MessageType};

/// The longest label the one-byte length can carry.
pub const MAX_LABEL_LEN: usize = 255;

/// The header for `label` (empty when `label` is empty). Labels longer than 255 bytes are a
/// configuration error the caller must refuse earlier; here they are cut to 255.
pub fn label_header(label: &[u8]) -> Vec<u8> {
    if label.is_empty() {
        return Vec::new();
    }
    let label = label.get(..MAX_LABEL_LEN).unwrap_or(label);
    let mut out = Vec::with_capacity(label.len().saturating_add(2));
    out.push(MessageType::HasLabel as u8);
    out.push(label.len() as u8);
    out.extend_from_slice(label);
    out
}

/// Prefix `buf` with the header for `label`.
pub fn add_label(label: &[u8], buf: &[u8]) -> Vec<u8> {
    let mut out = label_header(label);
    out.extend_from_slice(buf);
    out
}

/// Split `buf` into `(label, rest)`; no header gives an empty label. A header cut short is
/// `Truncated` (streams wait for more), a zero-length one is malformed (Go refuses it too).
pub fn strip_label(buf: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    if buf.first() != Some(&(MessageType::HasLabel as u8)) {
        return Ok((&[], buf));
    }
    let len = *buf.get(1).ok_or(DecodeError::Truncated)? as usize;
    if len == 0 {
        return Err(DecodeError::Malformed(
            "label header cannot be empty when present".into(),
        ));
    }
    buf.get(2..)
        .and_then(|rest| rest.split_at_checked(len))
        .ok_or(DecodeError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_round_trips() {
        let b = add_label(b"prod", b"\x00rest");
        assert_eq!(b, b"\xf4\x04prod\x00rest");
        assert_eq!(strip_label(&b).unwrap(), (&b"prod"[..], &b"\x00rest"[..]));
        assert_eq!(strip_label(b"\x00x").unwrap(), (&b""[..], &b"\x00x"[..]));
        assert_eq!(add_label(b"", b"\x01"), b"\x01");
    }

    #[test]
    fn short_or_empty_headers_are_refused() {
        assert_eq!(strip_label(b"\xf4"), Err(DecodeError::Truncated));
        assert_eq!(strip_label(b"\xf4\x05ab"), Err(DecodeError::Truncated));
        assert!(matches!(
            strip_label(b"\xf4\x00"),
            Err(DecodeError::Malformed(_))
        ));
    }
}
