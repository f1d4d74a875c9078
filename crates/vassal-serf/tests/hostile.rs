//! Issue 11: one Serf node fed well-formed but hostile messages from a non-member. Each test
//! reproduces an attack from the issue and checks what a user would: the node keeps its name,
//! its clocks stay usable, its queues stay bounded, and an ordinary event still arrives.

// `Instant::now()` is each test's epoch; only differences from it matter.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use support::{addr, events, forged_alive, node, run_for, serf_packet, user_event, user_names};
use vassal_serf::messages::{self, QueryMsg};
use vassal_serf::{Event, Outcome, SerfMessage};

#[test]
fn far_future_event_is_dropped_and_later_events_still_arrive() {
    // "Silenced events": one event at 2^64−2 once moved the clock to the top; the next
    // increment wrapped it and every later event was dropped as old.
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(9), &user_event(u64::MAX - 1, "evil"), now);
    assert!(user_names(&events(&mut s)).is_empty());
    assert!(
        s.event_clock() < 1 << 33,
        "clock moved to {}",
        s.event_clock()
    );
    assert_eq!(s.stats().drops.get("incredible lamport time"), 1);
    s.handle_packet(addr(9), &user_event(5, "deploy"), now);
    assert_eq!(user_names(&events(&mut s)), ["deploy"]);
    s.user_event("local", b"x", false, now).expect("sent");
    assert_eq!(user_names(&events(&mut s)), ["local"]);
}

#[test]
fn far_future_query_and_intents_are_dropped() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    let (member, query) = (s.member_clock(), s.query_clock());
    let q = QueryMsg {
        ltime: u64::MAX - 1,
        id: 1,
        addr: addr(9).ip(),
        port: 7946,
        source_node: "evil".into(),
        filters: vec![],
        flags: 0,
        relay_factor: 0,
        timeout: 1_000_000_000,
        name: "q".into(),
        payload: vec![],
    };
    s.handle_packet(addr(9), &serf_packet(&SerfMessage::Query(q)), now);
    s.handle_packet(
        addr(9),
        &serf_packet(&SerfMessage::Leave(messages::Leave {
            ltime: u64::MAX - 1,
            node: "a".into(),
            prune: false,
        })),
        now,
    );
    assert_eq!((s.member_clock(), s.query_clock()), (member, query));
    assert_eq!(s.stats().drops.get("incredible lamport time"), 2);
}

#[test]
fn a_lone_node_keeps_its_name_when_a_forged_alive_claims_it() {
    // "Remote shutdown": Go Serf 0.9.4 counts 0 answers of 0 as a lost vote and exits.
    let mut now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(9), &forged_alive("a", 2, 9), now);
    let outcomes = run_for(&mut s, &mut now, Duration::from_secs(30));
    assert!(
        !outcomes.iter().any(|o| matches!(o, Outcome::Shutdown(_))),
        "lone node shut down: {outcomes:?}"
    );
    assert_eq!(s.local_member().addr, addr(1).ip());
}

#[test]
fn query_timeouts_are_capped_and_pending_queries_bounded() {
    // "Queries with an enormous Timeout are kept for centuries".
    let now = Instant::now();
    let mut s = node("a", 1, now);
    for i in 0..1500u32 {
        let q = QueryMsg {
            ltime: u64::from(i) + 1,
            id: i,
            addr: addr(9).ip(),
            port: 7946,
            source_node: "evil".into(),
            filters: vec![],
            flags: 0,
            relay_factor: 0,
            // Go's Duration is an int64 of nanoseconds: 292 years.
            timeout: i64::MAX as u64,
            name: "q".into(),
            payload: vec![],
        };
        s.handle_packet(addr(9), &serf_packet(&SerfMessage::Query(q)), now);
    }
    let queries: Vec<_> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::Query(q) => Some(q),
            _ => None,
        })
        .collect();
    assert_eq!(queries.len(), 1500);
    for q in &queries {
        assert!(q.deadline <= now + Duration::from_secs(3600));
    }
    assert!(s
        .poll_timeout()
        .is_some_and(|t| t <= now + Duration::from_secs(3600)));
    // The oldest were forgotten: answering one is refused, the newest is answered.
    assert!(s.respond(1, 0, b"late", now).is_err());
    assert!(s.respond(1500, 1499, b"ok", now).is_ok());
    assert_eq!(
        s.stats().drops.get("pending queries over limit"),
        1500 - 1024
    );
}

#[test]
fn a_flood_of_events_keeps_the_queue_within_max_queue_depth() {
    // Go prunes its queues to MaxQueueDepth (4,096); Vassal defined the bound and never used it.
    let now = Instant::now();
    let mut s = node("a", 1, now);
    let max = s.config().max_queue_depth;
    for i in 0..(max as u64 + 500) {
        s.handle_packet(addr(9), &user_event(i + 1, &format!("e{i}")), now);
        assert!(s.event_queue_len() <= max);
    }
    assert_eq!(s.event_queue_len(), max);
    assert!(s.stats().drops.get("event queue over max_queue_depth") > 0);
}
