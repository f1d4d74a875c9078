//! Keyring operations started by this node (spec §4.9): the `_serf_*-key` query to send, and
//! the tally of the answers, as Serf's key manager keeps it. The answering side is
//! [`Serf`](crate::Serf)'s own (`answer_key_query` in `serf/internal_query.rs`).

use std::collections::BTreeMap;

use crate::messages;

/// The four key operations of `serf keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCommand {
    /// Add a key to the keyring (`_serf_install-key`).
    Install,
    /// Make a key the primary one (`_serf_use-key`).
    Use,
    /// Remove a key (`_serf_remove-key`).
    Remove,
    /// List the keys (`_serf_list-keys`).
    List,
}

impl KeyCommand {
    /// The internal query that carries the operation.
    pub fn query_name(self) -> &'static str {
        match self {
            KeyCommand::Install => "_serf_install-key",
            KeyCommand::Use => "_serf_use-key",
            KeyCommand::Remove => "_serf_remove-key",
            KeyCommand::List => "_serf_list-keys",
        }
    }

    /// The command a `_serf_*-key` query name carries; `None` for any other name.
    pub fn from_query_name(name: &str) -> Option<Self> {
        [Self::Install, Self::Use, Self::Remove, Self::List]
            .into_iter()
            .find(|c| c.query_name() == name)
    }

    /// The query payload for `key` (empty for a listing).
    pub fn payload(self, key: &[u8]) -> Vec<u8> {
        messages::encode_key_request(key)
    }
}

/// Decodes standard base64 exactly as Go's `base64.StdEncoding.DecodeString` does, so a bad key
/// gets Go's error text: `illegal base64 data at input byte N`. Newlines are skipped, padding
/// is required.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    let src = s.as_bytes();
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    // Each arm's range keeps `c − base` in 0..26 (or 0..10), so nothing wraps.
    #[allow(clippy::arithmetic_side_effects)]
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let newline = |c: Option<&u8>| matches!(c, Some(b'\n' | b'\r'));
    let mut out = Vec::with_capacity((src.len() / 4).saturating_mul(3));
    // `si` only ever steps onto a byte of `src` (or just past the last), so `+ 1` cannot
    // overflow and `- 1` is only taken after a step; saturating keeps the lint quiet.
    let mut si = 0usize;
    loop {
        // One quantum of up to four symbols (Go's decodeQuantum).
        let mut buf = [0u32; 4];
        let mut len = 4usize;
        let mut trailing_error = None;
        let mut j = 0usize;
        while j < 4 {
            let Some(&c) = src.get(si) else {
                match j {
                    0 => return Ok(out),
                    // Input ends inside a quantum: padding was required.
                    _ => return Err(corrupt(si.saturating_sub(j))),
                }
            };
            let at = si;
            si = si.saturating_add(1);
            if let Some(v) = value(c) {
                if let Some(slot) = buf.get_mut(j) {
                    *slot = v;
                }
                j = j.saturating_add(1);
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return Err(corrupt(at));
            }
            // Padding: only after two or three symbols.
            if j < 2 {
                return Err(corrupt(at));
            }
            if j == 2 {
                while newline(src.get(si)) {
                    si = si.saturating_add(1);
                }
                match src.get(si) {
                    None => return Err(corrupt(src.len())),
                    Some(b'=') => {}
                    Some(_) => return Err(corrupt(si.saturating_sub(1))),
                }
                si = si.saturating_add(1);
            }
            while newline(src.get(si)) {
                si = si.saturating_add(1);
            }
            if si < src.len() {
                trailing_error = Some(corrupt(si));
            }
            len = j;
            break;
        }
        let [b0, b1, b2, b3] = buf;
        let v = b0 << 18 | b1 << 12 | b2 << 6 | b3;
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        // `len` is 2, 3 or 4: one byte fewer than the symbols read.
        out.extend_from_slice(bytes.get(..len.saturating_sub(1)).unwrap_or_default());
        if let Some(e) = trailing_error {
            return Err(e);
        }
        if len < 4 {
            return Ok(out);
        }
    }
}

/// The answers to one key operation, counted as Serf's `KeyResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyReport {
    /// Alive (and suspect) members when the query was sent: the answers we wait for.
    pub num_nodes: usize,
    /// Answers received.
    pub num_resp: usize,
    /// Answers that report a failure.
    pub num_err: usize,
    /// Node → its error, or its warning on success (a truncated key list).
    pub messages: BTreeMap<String, String>,
    /// Base64 key → how many nodes have it installed (listings only).
    pub keys: BTreeMap<String, usize>,
    /// Base64 key → how many nodes use it as primary (listings only).
    pub primary_keys: BTreeMap<String, usize>,
}

impl KeyReport {
    /// An empty tally waiting for `num_nodes` answers.
    pub fn new(num_nodes: usize) -> Self {
        KeyReport {
            num_nodes,
            ..KeyReport::default()
        }
    }

    /// Counts one node's answer (the payload of its query response).
    pub fn add(&mut self, from: &str, payload: &[u8]) {
        self.num_resp = self.num_resp.saturating_add(1);
        let resp = match messages::decode_key_response(payload) {
            Ok(r) => r,
            Err(_) if payload.first() != Some(&8) => {
                self.messages.insert(
                    from.to_owned(),
                    format!("Invalid key query response type: {payload:?}"),
                );
                self.num_err = self.num_err.saturating_add(1);
                return;
            }
            Err(_) => {
                self.messages.insert(
                    from.to_owned(),
                    format!("Failed to decode key query response: {payload:?}"),
                );
                self.num_err = self.num_err.saturating_add(1);
                return;
            }
        };
        if !resp.result {
            self.messages.insert(from.to_owned(), resp.message.clone());
            self.num_err = self.num_err.saturating_add(1);
        } else if !resp.message.is_empty() {
            self.messages.insert(from.to_owned(), resp.message.clone());
        }
        for key in resp.keys {
            let n = self.keys.entry(key).or_default();
            *n = n.saturating_add(1);
        }
        let n = self.primary_keys.entry(resp.primary_key).or_default();
        *n = n.saturating_add(1);
    }

    /// Every node we waited for has answered.
    pub fn is_complete(&self) -> bool {
        self.num_resp >= self.num_nodes
    }

    /// Serf's verdict once collection ends: an error if any node failed or stayed silent.
    pub fn error(&self) -> Option<String> {
        if self.num_err != 0 {
            return Some(format!(
                "{}/{} nodes reported failure",
                self.num_err, self.num_nodes
            ));
        }
        if self.num_resp != self.num_nodes {
            return Some(format!(
                "{}/{} nodes reported success",
                self.num_resp, self.num_nodes
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{encode_key_response, KeyResponse};

    #[test]
    fn base64_errors_carry_gos_offsets() {
        // Offsets checked against Go's encoding/base64.
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("aGk=\n").unwrap(), b"hi");
        let err = |s| decode_base64(s).unwrap_err();
        assert_eq!(err("!!!"), "illegal base64 data at input byte 0");
        assert_eq!(err("aGVsbG8"), "illegal base64 data at input byte 4");
        assert_eq!(err("aGVsbG8=x"), "illegal base64 data at input byte 8");
        assert_eq!(err("a==="), "illegal base64 data at input byte 1");
        assert_eq!(
            decode_base64("aG==").unwrap(),
            b"h",
            "Go is not strict about unused bits"
        );
        assert_eq!(err("aG="), "illegal base64 data at input byte 3");
        assert_eq!(err("not-base64"), "illegal base64 data at input byte 3");
    }

    #[test]
    fn a_listing_counts_keys_and_primaries() {
        let answer = |keys: &[&str], primary: &str| {
            encode_key_response(&KeyResponse {
                result: true,
                message: String::new(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                primary_key: primary.into(),
            })
        };
        let mut r = KeyReport::new(2);
        r.add("a", &answer(&["k1", "k2"], "k1"));
        assert!(!r.is_complete());
        r.add("b", &answer(&["k1"], "k1"));
        assert!(r.is_complete());
        assert_eq!(r.keys["k1"], 2);
        assert_eq!(r.keys["k2"], 1);
        assert_eq!(r.primary_keys["k1"], 2);
        assert_eq!(r.error(), None);
    }

    #[test]
    fn failures_and_silence_are_errors_with_serfs_text() {
        let failed = encode_key_response(&KeyResponse {
            result: false,
            message: "No keyring to modify (encryption not enabled)".into(),
            ..KeyResponse::default()
        });
        let mut r = KeyReport::new(3);
        r.add("a", &failed);
        r.add("b", b"\x01junk");
        assert_eq!(r.error().unwrap(), "2/3 nodes reported failure");
        assert_eq!(
            r.messages["a"],
            "No keyring to modify (encryption not enabled)"
        );
        assert!(r.messages["b"].starts_with("Invalid key query response type"));
        let mut quiet = KeyReport::new(3);
        quiet.add(
            "a",
            &encode_key_response(&KeyResponse {
                result: true,
                ..KeyResponse::default()
            }),
        );
        assert_eq!(quiet.error().unwrap(), "1/3 nodes reported success");
    }

    #[test]
    fn the_request_payload_is_type_7_with_the_raw_key() {
        let p = KeyCommand::Install.payload(b"0123456789abcdef");
        assert_eq!(
            crate::messages::decode_key_request(&p).unwrap(),
            b"0123456789abcdef"
        );
    }
}
