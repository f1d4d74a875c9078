//! Tags in memberlist's node metadata (spec §4.3): `ff` then a msgpack map of strings.

use std::collections::BTreeMap;

use thiserror::Error;
use vassal_memberlist::wire::msgpack::{Reader, Writer};

/// Encoded tags may not exceed memberlist's metadata limit.
pub const META_MAX_SIZE: usize = 512;

/// The first byte of the tags form of metadata (Serf protocol ≥ 3).
const TAG_MAGIC: u8 = 0xff;

/// Why tags could not be set.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TagsError {
    /// Nothing was changed.
    #[error("Encoded length of tags exceeds limit of {META_MAX_SIZE} bytes (tags are {0} bytes)")]
    TooLarge(usize),
}

/// `ff` + msgpack map, failing if over 512 bytes.
pub fn encode(tags: &BTreeMap<String, String>) -> Result<Vec<u8>, TagsError> {
    let mut w = Writer::with_buf(vec![TAG_MAGIC]);
    w.map_header(tags.len());
    for (k, v) in tags {
        w.str(k);
        w.str(v);
    }
    let buf = w.into_vec();
    if buf.len() > META_MAX_SIZE {
        return Err(TagsError::TooLarge(buf.len()));
    }
    Ok(buf)
}

/// Tags from metadata: anything not starting with `ff` is the old form, `{role: meta}`; an
/// undecodable map gives no tags.
pub fn decode(meta: &[u8]) -> BTreeMap<String, String> {
    let Some((&TAG_MAGIC, body)) = meta.split_first() else {
        return BTreeMap::from([(
            "role".to_owned(),
            String::from_utf8_lossy(meta).into_owned(),
        )]);
    };
    let mut r = Reader::new(body);
    let mut tags = BTreeMap::new();
    let Ok(n) = r.map_len() else {
        return tags;
    };
    for _ in 0..n {
        match (r.string(), r.string()) {
            (Ok(k), Ok(v)) => {
                tags.insert(k, v);
            }
            _ => return BTreeMap::new(),
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tags_encode_as_ff_80() {
        assert_eq!(encode(&BTreeMap::new()).unwrap(), vec![0xff, 0x80]);
    }

    #[test]
    fn tags_round_trip() {
        let tags = BTreeMap::from([
            ("role".to_string(), "web".to_string()),
            ("dc".into(), "east".into()),
        ]);
        assert_eq!(decode(&encode(&tags).unwrap()), tags);
    }

    #[test]
    fn old_meta_is_the_role() {
        assert_eq!(
            decode(b"lb"),
            BTreeMap::from([("role".to_string(), "lb".to_string())])
        );
        assert_eq!(
            decode(b""),
            BTreeMap::from([("role".to_string(), String::new())])
        );
    }

    #[test]
    fn oversized_tags_are_refused() {
        let tags = BTreeMap::from([("k".to_string(), "v".repeat(600))]);
        assert!(matches!(encode(&tags), Err(TagsError::TooLarge(_))));
    }
}
