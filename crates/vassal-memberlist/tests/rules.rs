//! The SWIM and Lifeguard rules, checked on the pure state machine by feeding it messages and
//! reading what it sends back (spec §3.3–§3.4).

// `Instant::now()` is each test's epoch; only differences from it matter.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{addr, advance, alive, node, packet, sent, suspect};
use vassal_memberlist::wire::{self, Dead, Message, Nack, Suspect};
use vassal_memberlist::{NoDelegate, NodeStateKind, Transmit};

#[test]
fn suspect_about_ourselves_is_refuted_with_a_higher_incarnation() {
    // SWIM §4.2 / spec §3.3 Refute.
    let mut now = Instant::now();
    let mut a = node("a", 1, now);
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
    sent(&mut a);
    a.handle_packet(
        addr(2),
        &packet(&[Message::Suspect(Suspect {
            incarnation: 7,
            node: "a".into(),
            from: "b".into(),
        })]),
        now,
        &mut NoDelegate,
    );
    assert_eq!(
        a.incarnation_of("a"),
        Some(8),
        "refute goes one past the accusation"
    );
    assert_eq!(a.node("a").unwrap().state, NodeStateKind::Alive);
    assert_eq!(
        a.health_score(),
        1,
        "Lifeguard: refuting counts against our health"
    );
    // The refutation is gossiped.
    advance(&mut a, &mut now, Duration::from_millis(300));
    let refuted = sent(&mut a)
        .into_iter()
        .any(|(_, m)| matches!(m, Message::Alive(al) if al.node == "a" && al.incarnation == 8));
    assert!(refuted, "no alive{{a, 8}} was gossiped");
}

#[test]
fn stale_alive_is_ignored_and_newer_one_accepted() {
    let now = Instant::now();
    let mut a = node("a", 1, now);
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 5)]), now, &mut NoDelegate);
    let suspect = Suspect {
        incarnation: 5,
        node: "b".into(),
        from: "c".into(),
    };
    a.handle_packet(
        addr(3),
        &packet(&[Message::Suspect(suspect)]),
        now,
        &mut NoDelegate,
    );
    assert_eq!(a.node("b").unwrap().state, NodeStateKind::Suspect);
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 5)]), now, &mut NoDelegate);
    assert_eq!(
        a.node("b").unwrap().state,
        NodeStateKind::Suspect,
        "same incarnation does not clear suspicion"
    );
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 6)]), now, &mut NoDelegate);
    assert_eq!(
        a.node("b").unwrap().state,
        NodeStateKind::Alive,
        "a higher incarnation refutes"
    );
}

#[test]
fn dead_from_the_node_itself_means_left() {
    let now = Instant::now();
    let mut a = node("a", 1, now);
    a.handle_packet(
        addr(2),
        &packet(&[alive("b", 2, 1), alive("c", 3, 1)]),
        now,
        &mut NoDelegate,
    );
    let left = Dead {
        incarnation: 1,
        node: "b".into(),
        from: "b".into(),
    };
    let killed = Dead {
        incarnation: 1,
        node: "c".into(),
        from: "a".into(),
    };
    a.handle_packet(
        addr(2),
        &packet(&[Message::Dead(left), Message::Dead(killed)]),
        now,
        &mut NoDelegate,
    );
    assert_eq!(a.node("b").unwrap().state, NodeStateKind::Left);
    assert_eq!(a.node("c").unwrap().state, NodeStateKind::Dead);
    // A left node comes back only with a newer incarnation.
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
    assert_eq!(a.node("b").unwrap().state, NodeStateKind::Left);
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 2)]), now, &mut NoDelegate);
    assert_eq!(a.node("b").unwrap().state, NodeStateKind::Alive);
}

#[test]
fn unanswered_probe_goes_indirect_then_suspects() {
    // SWIM §4.1 (indirect probes), Lifeguard §IV-A (nacks feed local health), spec §3.4.
    let mut now = Instant::now();
    let mut a = node("a", 1, now);
    let peers = [alive("b", 2, 1), alive("c", 3, 1)];
    a.handle_packet(addr(2), &packet(&peers), now, &mut NoDelegate);
    sent(&mut a);
    // Run probe rounds until one targets b; c answers nothing either, but only b is the target.
    let mut indirect = None;
    for _ in 0..5000 {
        advance(&mut a, &mut now, Duration::from_millis(1));
        for (to, m) in sent(&mut a) {
            if let Message::IndirectPing(ind) = m {
                indirect = Some((to, ind));
            }
        }
        if indirect.is_some() {
            break;
        }
    }
    let (to, ind) = indirect.expect("a probe with no ack must fall back to an indirect probe");
    let target = ind.node.clone();
    let helper = if target == "b" { addr(3) } else { addr(2) };
    assert_eq!(to, helper, "the indirect probe goes to the other peer");
    assert!(ind.nack, "peers with protocol max ≥ 4 are asked for nacks");
    // The helper could not reach the target either: it nacks.
    a.handle_packet(
        helper,
        &packet(&[Message::Nack(Nack { seq_no: ind.seq_no })]),
        now,
        &mut NoDelegate,
    );
    advance(&mut a, &mut now, Duration::from_secs(1));
    assert_eq!(
        a.node(&target).unwrap().state,
        NodeStateKind::Suspect,
        "{target} should be suspect"
    );
    assert_eq!(
        a.health_score(),
        0,
        "a nack means the helper, not we, had trouble: no health penalty"
    );
    // With no refutation, suspicion ends in death (min timeout: 4 s at n = 3).
    advance(&mut a, &mut now, Duration::from_secs(5));
    assert_eq!(a.node(&target).unwrap().state, NodeStateKind::Dead);
}

#[test]
fn intermediary_relays_an_ack_or_nacks_in_time() {
    let now = Instant::now();
    let mut b = node("b", 2, now);
    let ind = wire::IndirectPing {
        seq_no: 99,
        target: addr(3).ip(),
        port: 7946,
        node: "c".into(),
        nack: true,
        source_addr: Some(addr(1).ip()),
        source_port: 7946,
        source_node: "a".into(),
    };
    b.handle_packet(
        addr(1),
        &packet(&[Message::IndirectPing(ind)]),
        now,
        &mut NoDelegate,
    );
    let pings: Vec<_> = sent(&mut b)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Ping(_)))
        .collect();
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].0, addr(3), "b pings the target for a");
    // No ack from c within the probe timeout: b tells a with a nack carrying a's sequence number.
    b.handle_timeout(now + Duration::from_millis(501), &mut NoDelegate);
    let nacks: Vec<_> = sent(&mut b)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Nack(n) if n.seq_no == 99))
        .collect();
    assert_eq!(nacks.len(), 1, "one nack for seq 99");
    assert_eq!(nacks[0].0, addr(1));
}

#[test]
fn graceful_leave_gossips_a_dead_from_ourselves() {
    let mut now = Instant::now();
    let mut a = node("a", 1, now);
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
    sent(&mut a);
    a.leave(now, &mut NoDelegate);
    assert!(a.leave_pending());
    advance(&mut a, &mut now, Duration::from_secs(2));
    let dead = sent(&mut a)
        .into_iter()
        .any(|(_, m)| matches!(m, Message::Dead(d) if d.node == "a" && d.from == "a"));
    assert!(dead, "the leave message was never sent");
    assert!(!a.leave_pending());
    assert_eq!(a.node("a").unwrap().state, NodeStateKind::Left);
}

/// `direct_fanout` (beyond Go): a leaving node tells every alive member of a small cluster
/// itself, at once, so none of them waits for the next push/pull when gossip misses it.
#[test]
fn a_leaving_node_tells_each_alive_member_directly() {
    let now = Instant::now();
    let mut a = node("a", 1, now);
    let peers = [alive("b", 2, 1), alive("c", 3, 1), alive("d", 4, 1)];
    a.handle_packet(addr(2), &packet(&peers), now, &mut NoDelegate);
    sent(&mut a);
    a.leave(now, &mut NoDelegate);
    let mut told: Vec<SocketAddr> = sent(&mut a)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Dead(d) if d.node == "a" && d.from == "a"))
        .map(|(to, _)| to)
        .collect();
    told.sort();
    assert_eq!(
        told,
        vec![addr(2), addr(3), addr(4)],
        "before any gossip round"
    );
}

#[test]
fn accusations_far_above_the_known_incarnation_are_refused() {
    // Issue 11, "permanent eviction": one suspect at 2^32−1 once left the accused no incarnation
    // to refute with. Vassal refuses accusations more than MAX_INCARNATION_JUMP above what the
    // accused has announced, and counts them.
    use vassal_memberlist::limits::MAX_INCARNATION_JUMP;
    let now = Instant::now();
    let mut a = node("a", 1, now);
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 5)]), now, &mut NoDelegate);
    for msg in [
        suspect("b", "c", u32::MAX),
        Message::Dead(Dead {
            incarnation: u32::MAX,
            node: "b".into(),
            from: "c".into(),
        }),
        alive("b", 2, u32::MAX),
        suspect("a", "c", u32::MAX),
    ] {
        a.handle_packet(addr(3), &packet(&[msg]), now, &mut NoDelegate);
    }
    assert_eq!(a.node("b").unwrap().state, NodeStateKind::Alive);
    assert_eq!(a.incarnation_of("b"), Some(5));
    assert_eq!(
        a.incarnation_of("a"),
        Some(1),
        "no refutation of the incredible"
    );
    assert_eq!(a.stats().drops.get("incredible incarnation"), 4);
    // A better-informed peer's suspicion, within the margin, still counts.
    a.handle_packet(
        addr(3),
        &packet(&[suspect("b", "c", 5 + MAX_INCARNATION_JUMP)]),
        now,
        &mut NoDelegate,
    );
    assert_eq!(a.node("b").unwrap().state, NodeStateKind::Suspect);
}

#[test]
fn refutation_saturates_instead_of_wrapping() {
    // Go memberlist 0.2.2 refutes a suspect at 2^32−1 with incarnation 0, which every peer ignores.
    let now = Instant::now();
    let mut a = node("a", 1, now);
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
    let mut inc = a.incarnation_of("a").unwrap();
    // Walk ourselves up within the margin each time, as a patient forger would.
    while inc < u32::MAX {
        let accused = inc.saturating_add(vassal_memberlist::limits::MAX_INCARNATION_JUMP);
        a.handle_packet(
            addr(2),
            &packet(&[suspect("a", "b", accused)]),
            now,
            &mut NoDelegate,
        );
        let next = a.incarnation_of("a").unwrap();
        assert!(
            next > inc || next == u32::MAX,
            "incarnation went {inc} -> {next}"
        );
        inc = next;
    }
    a.handle_packet(
        addr(2),
        &packet(&[suspect("a", "b", u32::MAX)]),
        now,
        &mut NoDelegate,
    );
    assert_eq!(a.incarnation_of("a"), Some(u32::MAX));
    assert_eq!(a.node("a").unwrap().state, NodeStateKind::Alive);
}

#[test]
fn names_with_control_characters_never_enter_the_table() {
    // Issue 11: a newline in a name wrote lines of its own into the snapshot file.
    let now = Instant::now();
    let mut a = node("a", 1, now);
    let evil = "evil\nalive: x 127.0.0.1:22";
    a.handle_packet(addr(2), &packet(&[alive(evil, 2, 1)]), now, &mut NoDelegate);
    assert!(a.node(evil).is_none());
    assert_eq!(a.stats().drops.get("node name has control characters"), 1);
}

/// Beyond Go (whose gossip ticker fires every 200 ms): an idle node does not wake for gossip
/// rounds with nothing to send, and a broadcast queued later goes out at the next tick.
#[test]
fn an_idle_node_sleeps_through_empty_gossip_rounds() {
    let mut now = Instant::now();
    let mut a = node("a", 1, now);
    a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
    // Let the news of b run out of retransmits.
    advance(&mut a, &mut now, Duration::from_secs(10));
    sent(&mut a);
    let gossip = a.config().gossip_interval;
    let next = a.poll_timeout().expect("probing always has a next round");
    assert!(
        next > now + gossip,
        "woken {:?} from now with nothing to gossip",
        next - now
    );
    a.handle_packet(addr(3), &packet(&[alive("c", 3, 1)]), now, &mut NoDelegate);
    let next = a.poll_timeout().unwrap();
    assert!(next <= now + gossip, "news of c waits {:?}", next - now);
}

/// Beyond Go (Lifeguard §IV-A): a probe round that starts late says we are the slow one, so it
/// raises our health score, as a missed nack does, and our probes wait longer before blaming.
#[test]
fn a_late_probe_round_counts_against_our_health() {
    let mut now = Instant::now();
    let mut a = node("a", 1, now);
    advance(&mut a, &mut now, Duration::from_secs(3));
    assert_eq!(a.health_score(), 0, "every round on time");
    now += Duration::from_secs(3);
    a.handle_timeout(now, &mut NoDelegate);
    assert_eq!(a.health_score(), 1, "one round three seconds late");
}

/// Beyond Go: a refutation is our own news, so besides the gossip it goes straight to members
/// (`direct_fanout`), as our join and leave do: once a probe interval at most, since anyone
/// can send us accusations.
#[test]
fn a_refutation_goes_straight_to_members_once_a_probe_interval() {
    let now = Instant::now();
    let mut a = node("a", 1, now);
    for (i, name) in [(2, "b"), (3, "c"), (4, "d"), (5, "e")] {
        a.handle_packet(addr(i), &packet(&[alive(name, i, 1)]), now, &mut NoDelegate);
    }
    sent(&mut a);
    // Members that were sent our refuting alive at once (no gossip round has run).
    let told = |a: &mut vassal_memberlist::Memberlist, accused: u32, at: Instant| {
        a.handle_packet(
            addr(2),
            &packet(&[suspect("a", "b", accused)]),
            at,
            &mut NoDelegate,
        );
        let inc = a.incarnation_of("a").unwrap();
        assert!(inc > accused, "refuted");
        let mut to: Vec<SocketAddr> = (sent(a).into_iter())
            .filter(
                |(_, m)| matches!(m, Message::Alive(al) if al.node == "a" && al.incarnation == inc),
            )
            .map(|(to, _)| to)
            .collect();
        to.sort();
        to.dedup();
        (inc, to.len())
    };
    let (inc, n) = told(&mut a, 1, now);
    assert_eq!(n, 4, "every member, within direct_fanout");
    let (inc, n) = told(&mut a, inc, now + Duration::from_millis(500));
    assert_eq!(n, 0, "a second accusation within the interval: gossip only");
    let (_, n) = told(&mut a, inc, now + Duration::from_secs(1));
    assert_eq!(n, 4, "a probe interval later");
}

/// Beyond Go: while starved of CPU a node sends its packets plain, since LZW is the dearest
/// step of sending; on time it compresses them whenever that is smaller, as Go does.
#[test]
fn a_starved_node_sends_plain_packets() {
    let mut now = Instant::now();
    let mut a = node("a", 1, now);
    // Twenty arrivals with names alike: a gossip packet of them compresses well.
    let arrivals = |first: u8| {
        let msgs: Vec<Message> = (first..first + 20)
            .map(|i| alive(&format!("web-server-{i:03}.example.internal"), i, 1))
            .collect();
        packet(&msgs)
    };
    // The first byte of every packet queued (plain packets: no label, CRC or key).
    let kinds = |a: &mut vassal_memberlist::Memberlist| {
        let mut first = Vec::new();
        while let Some(t) = a.poll_transmit() {
            if let Transmit::Packet { bytes, .. } = t {
                first.push(bytes[0]);
            }
        }
        first
    };
    let compressed = wire::MessageType::Compress as u8;

    a.handle_packet(addr(2), &arrivals(10), now, &mut NoDelegate);
    advance(&mut a, &mut now, Duration::from_millis(1000));
    let on_time = kinds(&mut a);
    assert!(
        on_time.contains(&compressed),
        "on time, gossip is compressed: first bytes {on_time:?}"
    );

    // Three seconds without a turn: the probe round starts late, and the gossip round after it
    // goes out plain.
    a.handle_packet(addr(2), &arrivals(40), now, &mut NoDelegate);
    kinds(&mut a);
    now += Duration::from_secs(3);
    a.handle_timeout(now, &mut NoDelegate);
    let starved = kinds(&mut a);
    assert_eq!(
        a.stats().starved_gossip_rounds,
        1,
        "a gossip round went out"
    );
    assert!(
        !starved.is_empty() && !starved.contains(&compressed),
        "starved, nothing is compressed: first bytes {starved:?}"
    );
}

/// Beyond Go: a node starved of CPU (a probe round started late) gossips to one node a round
/// instead of `gossip_nodes`, and to all of them again once it keeps time.
#[test]
fn a_starved_node_gossips_to_one_node_a_round() {
    let mut now = Instant::now();
    let mut a = node("a", 1, now);
    for (i, name) in [(2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")] {
        a.handle_packet(addr(i), &packet(&[alive(name, i, 1)]), now, &mut NoDelegate);
    }
    // Gossip targets of the rounds in `sent`: the packets that carry no ping.
    let gossiped = |out: Vec<(SocketAddr, Message)>| {
        let pinged: Vec<SocketAddr> = (out.iter())
            .filter(|(_, m)| matches!(m, Message::Ping(_)))
            .map(|(to, _)| *to)
            .collect();
        let mut to: Vec<SocketAddr> = (out.into_iter())
            .filter(|(to, m)| matches!(m, Message::Alive(_)) && !pinged.contains(to))
            .map(|(to, _)| to)
            .collect();
        to.sort();
        to.dedup();
        to.len()
    };
    // On time: the first round goes to three nodes.
    let next = a.poll_timeout().unwrap();
    now = now.max(next);
    a.handle_timeout(now, &mut NoDelegate);
    assert_eq!(gossiped(sent(&mut a)), 3);
    assert_eq!(a.stats().starved_gossip_rounds, 0);

    // Three seconds without a turn: the probe round starts late, and so does gossip.
    advance(&mut a, &mut now, Duration::from_secs(1));
    sent(&mut a);
    a.handle_packet(addr(7), &packet(&[alive("g", 7, 1)]), now, &mut NoDelegate);
    now += Duration::from_secs(3);
    a.handle_timeout(now, &mut NoDelegate);
    assert_eq!(gossiped(sent(&mut a)), 1, "one target while starved");
    assert_eq!(a.stats().starved_gossip_rounds, 1);

    // Back on time once three probe rounds in a row start on time.
    advance(&mut a, &mut now, Duration::from_millis(3100));
    sent(&mut a);
    a.handle_packet(addr(8), &packet(&[alive("h", 8, 1)]), now, &mut NoDelegate);
    let next = a.poll_timeout().unwrap();
    now = now.max(next);
    a.handle_timeout(now, &mut NoDelegate);
    assert_eq!(gossiped(sent(&mut a)), 3, "three targets again");
}
