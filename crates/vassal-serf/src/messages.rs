//! Serf's messages (spec §4.1–§4.2), carried inside memberlist user messages as
//! `<serf type byte> <msgpack body>`.

use std::collections::BTreeMap;

use vassal_memberlist::wire::msgpack::{Reader, Writer};
use vassal_memberlist::wire::DecodeError;

/// Serf message type bytes.
#[allow(dead_code)] // queries, keys and relays arrive with issue 3
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Leave = 0,
    Join = 1,
    PushPull = 2,
    UserEvent = 3,
    Query = 4,
    QueryResponse = 5,
    ConflictResponse = 6,
    KeyRequest = 7,
    KeyResponse = 8,
    Relay = 9,
}

/// A join intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub ltime: u64,
    pub node: String,
}

/// A leave intent; `prune` erases the member at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    pub ltime: u64,
    pub node: String,
    pub prune: bool,
}

/// One user event in the push/pull event buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEventEntry {
    pub name: String,
    pub payload: Vec<u8>,
}

/// The events seen at one Lamport time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvents {
    pub ltime: u64,
    pub events: Vec<UserEventEntry>,
}

/// Serf's push/pull state (spec §4.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushPullState {
    pub ltime: u64,
    pub status_ltimes: BTreeMap<String, u64>,
    pub left_members: Vec<String>,
    pub event_ltime: u64,
    pub events: Vec<Option<UserEvents>>,
    pub query_ltime: u64,
}

/// A user event as gossiped (type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    pub ltime: u64,
    pub name: String,
    pub payload: Vec<u8>,
    /// May be coalesced with later events of the same name.
    pub cc: bool,
}

/// A decoded Serf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerfMessage {
    Leave(Leave),
    Join(Join),
    PushPull(PushPullState),
    UserEvent(UserEvent),
    /// A type this version does not handle yet; kept raw.
    Other {
        kind: u8,
        body: Vec<u8>,
    },
}

/// Encodes a message with its type byte, keys in Go's order.
pub fn encode(msg: &SerfMessage) -> Vec<u8> {
    let kind = match msg {
        SerfMessage::Leave(_) => MessageType::Leave as u8,
        SerfMessage::Join(_) => MessageType::Join as u8,
        SerfMessage::PushPull(_) => MessageType::PushPull as u8,
        SerfMessage::UserEvent(_) => MessageType::UserEvent as u8,
        SerfMessage::Other { kind, .. } => *kind,
    };
    let mut w = Writer::with_buf(vec![kind]);
    match msg {
        SerfMessage::Leave(l) => {
            w.map_header(3);
            w.str("LTime");
            w.uint(l.ltime);
            w.str("Node");
            w.str(&l.node);
            w.str("Prune");
            w.bool(l.prune);
        }
        SerfMessage::Join(j) => {
            w.map_header(2);
            w.str("LTime");
            w.uint(j.ltime);
            w.str("Node");
            w.str(&j.node);
        }
        SerfMessage::PushPull(p) => {
            w.map_header(6);
            w.str("EventLTime");
            w.uint(p.event_ltime);
            w.str("Events");
            w.array_header(p.events.len());
            for slot in &p.events {
                match slot {
                    None => w.nil(),
                    Some(e) => {
                        w.map_header(2);
                        w.str("Events");
                        w.array_header(e.events.len());
                        for ev in &e.events {
                            w.map_header(2);
                            w.str("Name");
                            w.str(&ev.name);
                            w.str("Payload");
                            w.raw(&ev.payload);
                        }
                        w.str("LTime");
                        w.uint(e.ltime);
                    }
                }
            }
            w.str("LTime");
            w.uint(p.ltime);
            w.str("LeftMembers");
            w.array_header(p.left_members.len());
            for m in &p.left_members {
                w.str(m);
            }
            w.str("QueryLTime");
            w.uint(p.query_ltime);
            w.str("StatusLTimes");
            w.map_header(p.status_ltimes.len());
            for (name, t) in &p.status_ltimes {
                w.str(name);
                w.uint(*t);
            }
        }
        SerfMessage::UserEvent(e) => {
            w.map_header(4);
            w.str("CC");
            w.bool(e.cc);
            w.str("LTime");
            w.uint(e.ltime);
            w.str("Name");
            w.str(&e.name);
            w.str("Payload");
            w.raw(&e.payload);
        }
        SerfMessage::Other { body, .. } => return [&[kind][..], body].concat(),
    }
    w.into_vec()
}

/// Decodes a message that starts with its type byte.
pub fn decode(buf: &[u8]) -> Result<SerfMessage, DecodeError> {
    let (&kind, body) = buf.split_first().ok_or(DecodeError::Truncated)?;
    let mut r = Reader::new(body);
    Ok(match kind {
        k if k == MessageType::Leave as u8 => {
            let mut l = Leave {
                ltime: 0,
                node: String::new(),
                prune: false,
            };
            r.read_struct(|key, r| {
                match key {
                    b"LTime" => l.ltime = r.uint_as()?,
                    b"Node" => l.node = r.string()?,
                    b"Prune" => l.prune = r.bool()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            SerfMessage::Leave(l)
        }
        k if k == MessageType::Join as u8 => {
            let mut j = Join {
                ltime: 0,
                node: String::new(),
            };
            r.read_struct(|key, r| {
                match key {
                    b"LTime" => j.ltime = r.uint_as()?,
                    b"Node" => j.node = r.string()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            SerfMessage::Join(j)
        }
        k if k == MessageType::PushPull as u8 => SerfMessage::PushPull(decode_push_pull(&mut r)?),
        k if k == MessageType::UserEvent as u8 => {
            let mut e = UserEvent {
                ltime: 0,
                name: String::new(),
                payload: Vec::new(),
                cc: false,
            };
            r.read_struct(|key, r| {
                match key {
                    b"CC" => e.cc = r.bool()?,
                    b"LTime" => e.ltime = r.uint_as()?,
                    b"Name" => e.name = r.string()?,
                    b"Payload" => e.payload = r.bytes()?.to_vec(),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            SerfMessage::UserEvent(e)
        }
        kind => SerfMessage::Other {
            kind,
            body: body.to_vec(),
        },
    })
}

/// Consumes a nil if one is next (Go's nil slices and maps).
fn take_nil(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    if r.rest().first() == Some(&0xc0) {
        r.skip()?;
        return Ok(true);
    }
    Ok(false)
}

fn decode_push_pull(r: &mut Reader<'_>) -> Result<PushPullState, DecodeError> {
    let mut p = PushPullState::default();
    r.read_struct(|key, r| {
        match key {
            b"LTime" => p.ltime = r.uint_as()?,
            b"EventLTime" => p.event_ltime = r.uint_as()?,
            b"QueryLTime" => p.query_ltime = r.uint_as()?,
            b"LeftMembers" => {
                if !take_nil(r)? {
                    for _ in 0..r.array_len()? {
                        p.left_members.push(r.string()?);
                    }
                }
            }
            b"StatusLTimes" => {
                if !take_nil(r)? {
                    for _ in 0..r.map_len()? {
                        let name = r.string()?;
                        p.status_ltimes.insert(name, r.uint_as()?);
                    }
                }
            }
            b"Events" => {
                if !take_nil(r)? {
                    for _ in 0..r.array_len()? {
                        p.events.push(decode_user_events(r)?);
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}

fn decode_user_events(r: &mut Reader<'_>) -> Result<Option<UserEvents>, DecodeError> {
    if take_nil(r)? {
        return Ok(None);
    }
    let mut e = UserEvents {
        ltime: 0,
        events: Vec::new(),
    };
    r.read_struct(|key, r| {
        match key {
            b"LTime" => e.ltime = r.uint_as()?,
            b"Events" => {
                if !take_nil(r)? {
                    for _ in 0..r.array_len()? {
                        let mut entry = UserEventEntry {
                            name: String::new(),
                            payload: Vec::new(),
                        };
                        r.read_struct(|key, r| {
                            match key {
                                b"Name" => entry.name = r.string()?,
                                b"Payload" => entry.payload = r.bytes()?.to_vec(),
                                _ => return Ok(false),
                            }
                            Ok(true)
                        })?;
                        e.events.push(entry);
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_intent_matches_go_bytes() {
        // spec A.6: 08 01 {LTime:2, Node:"c"} (the 08 is memberlist's).
        let bytes = encode(&SerfMessage::Join(Join {
            ltime: 2,
            node: "c".into(),
        }));
        assert_eq!(bytes, b"\x01\x82\xa5LTime\x02\xa4Node\xa1c");
        assert_eq!(
            decode(&bytes).unwrap(),
            SerfMessage::Join(Join {
                ltime: 2,
                node: "c".into()
            })
        );
    }

    #[test]
    fn push_pull_state_round_trips_with_nil_event_slots() {
        let state = PushPullState {
            ltime: 5,
            status_ltimes: [("a".to_string(), 3u64), ("b".to_string(), 1)].into(),
            left_members: vec!["b".into()],
            event_ltime: 2,
            events: vec![
                None,
                Some(UserEvents {
                    ltime: 1,
                    events: vec![UserEventEntry {
                        name: "deploy".into(),
                        payload: b"v1".to_vec(),
                    }],
                }),
            ],
            query_ltime: 1,
        };
        let msg = SerfMessage::PushPull(state);
        assert_eq!(decode(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let bytes = encode(&SerfMessage::Leave(Leave {
            ltime: 9,
            node: "n".into(),
            prune: true,
        }));
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
        assert!(decode(&[0, 0xc1]).is_err());
    }
}
