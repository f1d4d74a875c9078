//! Property tests: every message and every layer decodes back to what was encoded, and streams
//! report "need more bytes" for every proper prefix (spec §2.10: peers never half-close).

use std::net::IpAddr;

use proptest::prelude::*;
use vassal_memberlist::wire::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from)
    ]
}

fn name() -> impl Strategy<Value = String> {
    // Long enough to cross fixstr → str16.
    "[a-z0-9.-]{0,40}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn ping() -> impl Strategy<Value = Ping> {
    (
        any::<u32>(),
        name(),
        proptest::option::of(ip()),
        any::<u16>(),
        name(),
    )
        .prop_map(
            |(seq_no, node, source_addr, source_port, source_node)| Ping {
                seq_no,
                node,
                source_addr,
                source_port,
                source_node,
            },
        )
}

fn ack() -> impl Strategy<Value = Ack> {
    (any::<u32>(), proptest::option::of(bytes(300)))
        .prop_map(|(seq_no, payload)| Ack { seq_no, payload })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ping().prop_map(Message::Ping),
        (
            any::<u32>(),
            ip(),
            any::<u16>(),
            name(),
            any::<bool>(),
            proptest::option::of(ip()),
            any::<u16>(),
            name()
        )
            .prop_map(
                |(seq_no, target, port, node, nack, source_addr, source_port, source_node)| {
                    Message::IndirectPing(IndirectPing {
                        seq_no,
                        target,
                        port,
                        node,
                        nack,
                        source_addr,
                        source_port,
                        source_node,
                    })
                }
            ),
        ack().prop_map(Message::Ack),
        any::<u32>().prop_map(|seq_no| Message::Nack(Nack { seq_no })),
        (any::<u32>(), name(), name()).prop_map(|(incarnation, node, from)| Message::Suspect(
            Suspect {
                incarnation,
                node,
                from
            }
        )),
        (any::<u32>(), name(), name()).prop_map(|(incarnation, node, from)| Message::Dead(Dead {
            incarnation,
            node,
            from
        })),
        (
            any::<u32>(),
            name(),
            ip(),
            any::<u16>(),
            bytes(100),
            any::<[u8; 6]>()
        )
            .prop_map(
                |(incarnation, node, addr, port, meta, vsn)| Message::Alive(Alive {
                    incarnation,
                    node,
                    addr,
                    port,
                    meta,
                    vsn
                })
            ),
        bytes(200).prop_map(Message::User),
        name().prop_map(|error| Message::Err(ErrResp { error })),
    ]
}

fn node_state() -> impl Strategy<Value = PushNodeState> {
    (
        name(),
        ip(),
        any::<u16>(),
        bytes(60),
        any::<u32>(),
        0i64..4,
        prop_oneof![Just(vec![]), bytes(7)],
    )
        .prop_map(
            |(name, addr, port, meta, incarnation, state, vsn)| PushNodeState {
                name,
                addr,
                port,
                meta,
                incarnation,
                state: NodeStateKind::from_i64(state).unwrap(),
                vsn,
            },
        )
}

fn stream_message() -> impl Strategy<Value = StreamMessage> {
    prop_oneof![
        (
            any::<bool>(),
            proptest::collection::vec(node_state(), 0..20),
            bytes(400)
        )
            .prop_map(
                |(join, nodes, user_state)| StreamMessage::PushPull(PushPull {
                    join,
                    nodes,
                    user_state
                })
            ),
        ping().prop_map(StreamMessage::Ping),
        ack().prop_map(StreamMessage::Ack),
        bytes(300).prop_map(StreamMessage::User),
        name().prop_map(|error| StreamMessage::Err(ErrResp { error })),
    ]
}

fn keyring() -> Keyring {
    let mut ring = Keyring::new(&[3; 32]).unwrap();
    ring.add_key(&[4; 16]).unwrap();
    ring
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in message()) {
        prop_assert_eq!(decode_message(&encode_message(&msg)).unwrap(), msg);
    }

    #[test]
    fn packets_round_trip_through_every_layer(
        msgs in proptest::collection::vec(message(), 1..20),
        compress in any::<bool>(), crc in any::<bool>(), encrypt in any::<bool>(),
        label in prop_oneof![Just(vec![]), proptest::collection::vec(any::<u8>(), 1..20)],
        nonce in any::<[u8; 12]>(),
    ) {
        let ring = keyring();
        let keyring = encrypt.then_some(&ring);
        let encoded: Vec<Vec<u8>> = msgs.iter().map(encode_message).collect();
        let wopts = WriteOptions { label: &label, keyring, compress, crc };
        let packet = encode_packet(&encoded, &wopts, nonce);
        let ropts = ReadOptions { label: &label, keyring, verify_incoming: true };
        let got = decode_packet(&packet, &ropts).unwrap();
        prop_assert_eq!(got.malformed, 0);
        prop_assert_eq!(got.messages, msgs);
    }

    #[test]
    fn streams_round_trip_and_prefixes_ask_for_more(
        msg in stream_message(), compress in any::<bool>(), encrypt in any::<bool>(),
        label in prop_oneof![Just(vec![]), proptest::collection::vec(any::<u8>(), 1..20)],
        trailing in bytes(10),
    ) {
        let ring = keyring();
        let keyring = encrypt.then_some(&ring);
        let wopts = WriteOptions { label: &label, keyring, compress, crc: false };
        let mut wire = encode_stream(&msg, &wopts, [9; 12]);
        let len = wire.len();
        let ropts = ReadOptions { label: &label, keyring, verify_incoming: true };
        for cut in 0..len {
            prop_assert_eq!(decode_stream(&wire[..cut], &ropts), Ok(None), "cut at {}", cut);
        }
        wire.extend_from_slice(&trailing);
        prop_assert_eq!(decode_stream(&wire, &ropts), Ok(Some((msg.clone(), len))));
        // The dialer's label header is consumed and checked too.
        let mut dialed = label_header(&label);
        dialed.extend_from_slice(&wire[..len]);
        prop_assert_eq!(decode_stream(&dialed, &ropts), Ok(Some((msg, dialed.len()))));
    }

    // Issue 11: a push/pull trickled in byte by byte decodes exactly as the whole does, and
    // each byte is parsed a bounded number of times (the decoder keeps its progress).
    #[test]
    fn incremental_decoder_agrees_with_decode_stream_byte_by_byte(
        msg in stream_message(), compress in any::<bool>(), encrypt in any::<bool>(),
        label in prop_oneof![Just(vec![]), proptest::collection::vec(any::<u8>(), 1..20)],
        dial in any::<bool>(),
    ) {
        let ring = keyring();
        let keyring = encrypt.then_some(&ring);
        let wopts = WriteOptions { label: &label, keyring, compress, crc: false };
        let mut wire = if dial { label_header(&label) } else { Vec::new() };
        wire.extend_from_slice(&encode_stream(&msg, &wopts, [9; 12]));
        let ropts = ReadOptions { label: &label, keyring, verify_incoming: true };
        let mut dec = StreamDecoder::new();
        for cut in 1..wire.len() {
            prop_assert_eq!(dec.decode(&wire[..cut], &ropts), Ok(None), "cut at {}", cut);
        }
        prop_assert_eq!(dec.decode(&wire, &ropts), Ok(Some((msg, wire.len()))));
    }

    #[test]
    fn lzw_round_trips(data in bytes(5000)) {
        prop_assert_eq!(lzw_decompress(&lzw_compress(&data), DEFAULT_MAX_DECOMPRESSED).unwrap(), data);
    }

    #[test]
    fn decoders_never_panic_on_garbage(data in bytes(300)) {
        vassal_memberlist::fuzzing::decode_packet(&data);
        vassal_memberlist::fuzzing::decode_stream(&data);
        vassal_memberlist::fuzzing::decode_message(&data);
        vassal_memberlist::fuzzing::lzw_decompress(&data);
        vassal_memberlist::fuzzing::keyring_decrypt(&data);
    }
}

#[test]
fn one_bad_compound_part_does_not_lose_the_others() {
    let good = encode_message(&Message::Nack(Nack { seq_no: 1 }));
    let packet = encode_compound_one(&[good.clone(), vec![0xee, 1, 2], good]);
    let got = decode_packet(
        &packet,
        &ReadOptions {
            label: b"",
            keyring: None,
            verify_incoming: false,
        },
    )
    .unwrap();
    assert_eq!(got.messages.len(), 2);
    assert_eq!(got.malformed, 1);
}

#[test]
fn packets_with_the_wrong_label_are_dropped() {
    // spec §2.8: a receiver with label L drops packets whose label differs (missing = empty).
    let msg = encode_message(&Message::Nack(Nack { seq_no: 1 }));
    let w = |label| WriteOptions {
        label,
        keyring: None,
        compress: false,
        crc: false,
    };
    let r = |label| ReadOptions {
        label,
        keyring: None,
        verify_incoming: false,
    };
    assert!(decode_packet(
        &encode_packet(std::slice::from_ref(&msg), &w(b"a"), [0; 12]),
        &r(b"b")
    )
    .is_err());
    assert!(decode_packet(
        &encode_packet(std::slice::from_ref(&msg), &w(b""), [0; 12]),
        &r(b"b")
    )
    .is_err());
    assert!(decode_packet(&encode_packet(&[msg], &w(b"b"), [0; 12]), &r(b"b")).is_ok());
}

#[test]
fn plaintext_is_accepted_only_without_verify_incoming() {
    // spec §2.9: GossipVerifyIncoming drops unencrypted UDP; without it, plaintext still reads.
    let ring = keyring();
    let msg = encode_message(&Message::Nack(Nack { seq_no: 1 }));
    let plain = encode_packet(
        &[msg],
        &WriteOptions {
            label: b"",
            keyring: None,
            compress: false,
            crc: true,
        },
        [0; 12],
    );
    let opts = |verify| ReadOptions {
        label: b"",
        keyring: Some(&ring),
        verify_incoming: verify,
    };
    assert!(decode_packet(&plain, &opts(true)).is_err());
    assert_eq!(
        decode_packet(&plain, &opts(false)).unwrap().messages.len(),
        1
    );
}

#[test]
fn hostile_stream_lengths_are_refused_without_allocating() {
    let opts = ReadOptions {
        label: b"",
        keyring: None,
        verify_incoming: false,
    };
    // Nodes: 2^31 and UserStateLen: 2^31 (spec §2.10 limits).
    let huge_nodes = b"\x06\x83\xa4Join\xc2\xa5Nodes\xce\x80\x00\x00\x00\xacUserStateLen\x00";
    assert!(decode_stream(huge_nodes, &opts).is_err());
    let huge_state = b"\x06\x83\xa4Join\xc2\xa5Nodes\x00\xacUserStateLen\xce\x80\x00\x00\x00";
    assert!(decode_stream(huge_state, &opts).is_err());
    let ring = keyring();
    let enc = ReadOptions {
        label: b"",
        keyring: Some(&ring),
        verify_incoming: true,
    };
    assert!(decode_stream(b"\x0a\xff\xff\xff\xff", &enc).is_err());
}
