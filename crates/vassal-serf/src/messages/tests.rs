//! Encoding and decoding of Serf's messages.
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
