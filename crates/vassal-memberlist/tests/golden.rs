//! Golden fixtures captured from the real Go agent (`/usr/bin/serf`, Debian 0.9.4 = memberlist
//! 0.2.2); see `tests/fixtures/README.md`. Each is decoded, and re-encoded byte for byte wherever
//! Go's encoding is deterministic — which, since our LZW matches Go's and the nonce is in the
//! envelope, turns out to be every fixture, whole packets and streams included.

use std::net::IpAddr;
use std::path::PathBuf;

use vassal_memberlist::wire::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let s = text.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key() -> Keyring {
    let text = include_str!("fixtures/encryption_key.txt")
        .trim()
        .to_string();
    Keyring::new(&base64_decode(&text)).unwrap()
}

/// Tiny standard base64 decoder so the test needs no extra dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | A.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

const PLAIN: ReadOptions<'static> = ReadOptions {
    label: b"",
    keyring: None,
    verify_incoming: true,
};

/// The innermost messages of a packet, found by peeling the layers by hand.
fn leaves(buf: &[u8]) -> Vec<Vec<u8>> {
    match buf[0] {
        12 => leaves(strip_crc(buf).unwrap()),
        9 => leaves(&decompress_body(&buf[1..], DEFAULT_MAX_DECOMPRESSED).unwrap()),
        7 => decode_compound(&buf[1..])
            .unwrap()
            .parts
            .iter()
            .flat_map(|p| leaves(p))
            .collect(),
        _ => vec![buf.to_vec()],
    }
}

/// Decode a plaintext datagram, check every message re-encodes to Go's bytes, then rebuild the
/// whole datagram with the same layers and compare.
fn check_packet(
    plain: &[u8],
    opts: &ReadOptions<'_>,
    wire_bytes: &[u8],
    nonce: [u8; 12],
) -> Vec<Message> {
    let decoded = decode_packet(wire_bytes, opts).unwrap();
    assert_eq!(decoded.malformed, 0);
    let parts = leaves(plain);
    assert_eq!(decoded.messages.len(), parts.len());
    for (msg, part) in decoded.messages.iter().zip(&parts) {
        assert_eq!(&decode_message(part).unwrap(), msg);
        assert_eq!(&encode_message(msg), part, "re-encoding {msg:?}");
    }
    // Serf enables compression; Go keeps it only when smaller, which encode_packet decides too.
    let wopts = WriteOptions {
        label: b"",
        keyring: opts.keyring,
        compress: true,
        crc: plain[0] == 12,
    };
    let again = encode_packet(&parts, &wopts, nonce);
    assert_eq!(hex(&again), hex(wire_bytes), "whole packet re-encoding");
    decoded.messages
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn packet(name: &str) -> Vec<Message> {
    let b = fixture(name);
    check_packet(&b, &PLAIN, &b, [0; 12])
}

fn enc_packet(name: &str) -> Vec<Message> {
    let b = fixture(name);
    let ring = key();
    let opts = ReadOptions {
        label: b"",
        keyring: Some(&ring),
        verify_incoming: true,
    };
    let plain = ring.decrypt(&b, b"").unwrap();
    let nonce: [u8; 12] = b[1..13].try_into().unwrap();
    assert!(
        decode_packet(&b, &PLAIN).is_err(),
        "ciphertext must not decode as plaintext"
    );
    check_packet(&plain, &opts, &b, nonce)
}

#[test]
fn ping_from_go_round_trips() {
    let [Message::Ping(p)] = &packet("udp_ping.hex")[..] else {
        panic!()
    };
    assert_eq!(p.node, "cap");
    assert_eq!(p.source_node, "a");
    assert_eq!(p.source_addr, Some(IpAddr::from([127, 0, 0, 1])));
    assert_ne!(p.source_port, 0);
}

#[test]
fn indirect_ping_from_go_round_trips() {
    let [Message::IndirectPing(p)] = &packet("udp_indirect_ping.hex")[..] else {
        panic!()
    };
    assert_eq!(p.target, IpAddr::from([127, 0, 0, 1]));
    assert!(p.nack, "our Vsn says PMax 5, so Go asks for a nack");
}

#[test]
fn ack_with_coordinate_round_trips() {
    for name in ["udp_ack_coordinate.hex", "udp_compress_ack.hex"] {
        let [Message::Ack(a)] = &packet(name)[..] else {
            panic!("{name}")
        };
        assert_eq!(
            a.payload.as_ref().unwrap()[0],
            1,
            "Serf coordinate payloads start with version 1"
        );
    }
}

#[test]
fn crc_compound_of_alives_round_trips() {
    let msgs = packet("udp_crc_compound_alives.hex");
    assert_eq!(msgs.len(), 2);
    for m in &msgs {
        let Message::Alive(a) = m else {
            panic!("{m:?}")
        };
        // Go agents say DCur 5; the capture node advertised DCur 4.
        assert_eq!(a.vsn[..5], [1, 5, 2, 2, 5]);
        assert_eq!(a.meta[0], 0xff, "Serf tags start with ff");
    }
    packet("udp_crc_alive.hex");
    packet("udp_compound_ack_alive.hex");
}

#[test]
fn suspect_and_graceful_dead_round_trip() {
    let [Message::Suspect(s)] = &packet("udp_crc_suspect.hex")[..] else {
        panic!()
    };
    assert_eq!((s.node.as_str(), s.from.as_str()), ("b", "a"));
    let [Message::Dead(d)] = &packet("udp_crc_dead_left.hex")[..] else {
        panic!()
    };
    assert_eq!(
        d.node, d.from,
        "a graceful leave is a dead from the node itself"
    );
    assert!(matches!(
        &packet("udp_compound_ping_dead.hex")[..],
        [Message::Ping(_), Message::Dead(_)]
    ));
    assert!(matches!(
        &packet("udp_compound_ping_suspect.hex")[..],
        [Message::Ping(_), Message::Suspect(_)]
    ));
}

#[test]
fn serf_user_messages_round_trip() {
    // Serf message types: 0 leave intent, 1 join intent, 3 user event, 4 query (spec §4.1).
    for (name, serf_type) in [
        ("udp_crc_user_leave_intent.hex", 0),
        ("udp_crc_user_join_intent.hex", 1),
        ("udp_crc_user_event.hex", 3),
        ("udp_crc_user_query.hex", 4),
    ] {
        let [Message::User(u)] = &packet(name)[..] else {
            panic!("{name}")
        };
        assert_eq!(u[0], serf_type, "{name}");
    }
    assert!(matches!(
        &packet("udp_compound_ack_query.hex")[..],
        [Message::Ack(_), Message::User(_)]
    ));
}

#[test]
fn compressed_compounds_round_trip() {
    assert!(packet("udp_crc_compress_compound.hex").len() >= 4);
    assert_eq!(packet("udp_compress_compound.hex").len(), 3);
}

#[test]
fn encrypted_packets_round_trip_with_their_nonce() {
    assert!(matches!(
        &enc_packet("enc_udp_ping.hex")[..],
        [Message::Ping(_)]
    ));
    assert!(matches!(
        &enc_packet("enc_udp_ack_coordinate.hex")[..],
        [Message::Ack(_)]
    ));
    assert_eq!(enc_packet("enc_udp_crc_compound_alives.hex").len(), 2);
    assert!(enc_packet("enc_udp_crc_compress_compound.hex").len() >= 4);
    assert_eq!(enc_packet("enc_udp_compound_ping_dead.hex").len(), 2);
}

fn check_stream(name: &str, ring: Option<&Keyring>) -> PushPull {
    let b = fixture(name);
    let opts = ReadOptions {
        label: b"",
        keyring: ring,
        verify_incoming: true,
    };
    let (msg, used) = decode_stream(&b, &opts).unwrap().expect("complete");
    assert_eq!(used, b.len());
    // Every shorter prefix asks for more bytes.
    for cut in [0, 1, 4, 5, b.len() / 2, b.len() - 1] {
        assert_eq!(
            decode_stream(&b[..cut], &opts),
            Ok(None),
            "{name} cut at {cut}"
        );
    }
    let nonce: [u8; 12] = if ring.is_some() {
        b[6..18].try_into().unwrap()
    } else {
        [0; 12]
    };
    let wopts = WriteOptions {
        label: b"",
        keyring: ring,
        compress: true,
        crc: false,
    };
    assert_eq!(
        hex(&encode_stream(&msg, &wopts, nonce)),
        hex(&b),
        "{name} re-encoding"
    );
    let StreamMessage::PushPull(pp) = msg else {
        panic!("{msg:?}")
    };
    pp
}

#[test]
fn compressed_push_pull_streams_round_trip() {
    let pp = check_stream("stream_pushpull_join_reply.hex", None);
    assert!(pp.join, "the join reply carries the same Join flag");
    assert_eq!(
        pp.user_state[0], 2,
        "Serf push/pull state starts with its message type"
    );
    let pp = check_stream("stream_pushpull_periodic.hex", None);
    assert!(!pp.join);
    assert!(pp.nodes.iter().any(|n| n.state == NodeStateKind::Left));
}

#[test]
fn encrypted_push_pull_stream_round_trips() {
    let ring = key();
    let pp = check_stream("enc_stream_pushpull_join_reply.hex", Some(&ring));
    assert!(pp.join);
    // spec §2.9 error strings
    let b = fixture("enc_stream_pushpull_join_reply.hex");
    let err = decode_stream(&b, &PLAIN).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Malformed("remote state is encrypted and encryption is not configured".into())
    );
    let plain = fixture("stream_pushpull_join_reply.hex");
    let opts = ReadOptions {
        label: b"",
        keyring: Some(&ring),
        verify_incoming: true,
    };
    let err = decode_stream(&plain, &opts).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Malformed("encryption is configured but remote state is not encrypted".into())
    );
}
