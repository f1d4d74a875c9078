//! Rule tests for the core: one or two nodes fed packets and time, checked through what
//! [`Serf`] hands out (`poll_event`, member status) and, being inside the module, the state a
//! rule is about. Each test names the spec section (`/work/shared/spec/serf-protocol.md`) and
//! the Go Serf function whose rule it checks. Helpers are shared with `tests/*.rs`.

// Tests take `Instant::now()` as their epoch; only differences from it matter.
#![allow(clippy::disallowed_methods)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{
    addr, events, forged_alive, node, packet, serf_packet, user_event, user_names, Cluster, VSN,
};
use vassal_memberlist::wire::{Alive, Dead, Message};
use vassal_memberlist::Transmit;

use super::leave::LeavePhase;
use super::{Event, Outcome, Serf};
use crate::messages::{Join, Leave, QueryMsg, QueryResponseMsg, SerfMessage};
use crate::{MemberEventKind, MemberStatus};

/// memberlist's alive message announcing node `name` at `addr(i)`.
fn alive(name: &str, i: u8) -> Vec<u8> {
    packet(Message::Alive(Alive {
        incarnation: 1,
        node: name.into(),
        addr: addr(i).ip(),
        port: addr(i).port(),
        meta: crate::tags::encode(&Default::default()).expect("empty tags fit"),
        vsn: VSN,
    }))
}

fn join_intent(node: &str, ltime: u64) -> Vec<u8> {
    let node = node.into();
    serf_packet(&SerfMessage::Join(Join { ltime, node }))
}

fn leave_intent(node: &str, ltime: u64) -> Vec<u8> {
    let node = node.into();
    serf_packet(&SerfMessage::Leave(Leave {
        ltime,
        node,
        prune: false,
    }))
}

fn query(ltime: u64, id: u32, name: &str) -> Vec<u8> {
    query_with_flags(ltime, id, name, 0)
}

fn query_with_flags(ltime: u64, id: u32, name: &str, flags: u32) -> Vec<u8> {
    serf_packet(&SerfMessage::Query(QueryMsg {
        ltime,
        id,
        addr: addr(9).ip(),
        port: 7946,
        source_node: "asker".into(),
        filters: vec![],
        flags,
        relay_factor: 0,
        timeout: 5_000_000_000,
        name: name.into(),
        payload: b"?".to_vec(),
    }))
}

fn status(s: &Serf, name: &str) -> Option<MemberStatus> {
    s.member(name).map(|m| m.status)
}

fn member_events(evs: &[Event], kind: MemberEventKind) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Member(m) if m.kind == kind => Some(m.members[0].name.clone()),
            _ => None,
        })
        .collect()
}

/// Two nodes, `a` and `b`, joined and alive in each other's view; events so far dropped.
fn joined_pair(now: Instant, tweak: impl Fn(&mut super::Config)) -> Cluster {
    let mut c = Cluster::with(&["a", "b"], now, tweak);
    c.join(1, 0);
    c.run_for(Duration::from_secs(1));
    for k in 0..2 {
        c.take_events(k);
    }
    assert_eq!(status(&c.nodes[0], "b"), Some(MemberStatus::Alive));
    assert_eq!(status(&c.nodes[1], "a"), Some(MemberStatus::Alive));
    c
}

/// Spec §4.5, Go's `handleNodeLeaveIntent` → `upsertIntent` and `handleNodeJoin`'s
/// `recentIntent`: a leave intent about a node we do not know yet is kept, and when memberlist
/// announces the node it starts as `leaving`, not alive (gossip can outrun memberlist).
#[test]
fn a_leave_intent_about_an_unknown_node_is_applied_when_it_appears() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(2), &leave_intent("b", 10), now);
    assert_eq!(status(&s, "b"), None);
    assert!(s.core.members.intents.contains_key("b"));
    s.handle_packet(addr(2), &alive("b", 2), now);
    assert_eq!(status(&s, "b"), Some(MemberStatus::Leaving));
    assert_eq!(
        s.core.members.states.get("b").map(|m| m.status_ltime),
        Some(10)
    );
    let joins = member_events(&events(&mut s), MemberEventKind::Join);
    assert_eq!(joins, ["a", "b"], "ourselves at start, then b");
}

/// Spec §4.5, Go's `upsertIntent`: of two intents about an unknown node the one with the
/// later Lamport time wins, whatever the arrival order; an older one is not even re-gossiped.
#[test]
fn an_older_intent_loses_to_a_newer_one() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(2), &leave_intent("b", 10), now);
    let queued = s.intent_queue_len();
    s.handle_packet(addr(2), &join_intent("b", 5), now);
    assert_eq!(
        s.intent_queue_len(),
        queued,
        "a stale intent is not gossiped on"
    );
    s.handle_packet(addr(2), &alive("b", 2), now);
    assert_eq!(status(&s, "b"), Some(MemberStatus::Leaving));

    // The other way round: the newer join intent beats the older leave.
    let mut s = node("a", 1, now);
    s.handle_packet(addr(3), &join_intent("c", 10), now);
    s.handle_packet(addr(3), &leave_intent("c", 5), now);
    s.handle_packet(addr(3), &alive("c", 3), now);
    assert_eq!(status(&s, "c"), Some(MemberStatus::Alive));
}

/// Spec §4.5, Go's `handleNodeJoinIntent`: a join intent newer than a member's status time
/// turns `leaving` back into alive; an intent no newer than it is old news.
#[test]
fn a_newer_join_intent_revives_a_leaving_member_and_an_old_one_does_not() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(2), &alive("b", 2), now);
    s.handle_packet(addr(2), &leave_intent("b", 10), now);
    assert_eq!(status(&s, "b"), Some(MemberStatus::Leaving));
    s.handle_packet(addr(2), &join_intent("b", 10), now);
    assert_eq!(
        status(&s, "b"),
        Some(MemberStatus::Leaving),
        "same time: old news"
    );
    s.handle_packet(addr(2), &join_intent("b", 11), now);
    assert_eq!(status(&s, "b"), Some(MemberStatus::Alive));
}

/// Spec §4.5, Go's `handleNodeLeaveIntent`: a leave intent about ourselves while we are not
/// leaving is refuted with a newer join intent, and we stay alive.
#[test]
fn a_leave_intent_about_ourselves_is_refuted() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(2), &leave_intent("a", 50), now);
    assert_eq!(status(&s, "a"), Some(MemberStatus::Alive));
    assert_eq!(s.intent_queue_len(), 1, "our refuting join intent");
    assert!(s.member_clock() > 50);
}

/// Spec §4.7, Go's `handleQuery` (`queryBuffer`): a query is known by its Lamport time and
/// ID; the same query arriving twice (gossip brings it by several paths) is handed up once,
/// while another query at the same time is not a duplicate.
#[test]
fn the_same_query_twice_gives_one_event() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(9), &query(7, 1, "load"), now);
    s.handle_packet(addr(9), &query(7, 1, "load"), now);
    s.handle_packet(addr(9), &query(7, 2, "load"), now);
    let ids: Vec<u32> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::Query(q) => Some(q.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(s.query_queue_len(), 2, "each new query is gossiped on once");
}

/// Spec §4.7, Go's `handleQuery`: a query asking for acks is acked once, straight to its
/// source, however often it arrives.
#[test]
fn a_query_arriving_twice_is_acked_once() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    let q = query_with_flags(7, 1, "load", crate::messages::QUERY_FLAG_ACK);
    s.handle_packet(addr(9), &q, now);
    s.handle_packet(addr(9), &q, now);
    let to_asker = std::iter::from_fn(|| s.poll_transmit())
        .filter(|t| matches!(t, Transmit::Packet { to, .. } if *to == addr(9)))
        .count();
    assert_eq!(to_asker, 1);
}

/// Spec §4.7, Go's `Query.Respond`: a query is answered once, before its deadline.
#[test]
fn a_query_is_answered_once_and_not_after_its_deadline() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(9), &query(7, 1, "load"), now);
    s.handle_packet(addr(9), &query(8, 2, "load"), now);
    assert_eq!(s.respond(7, 1, b"0.5", now), Ok(()));
    let again = s.respond(7, 1, b"0.6", now);
    assert_eq!(again, Err(super::RespondError::PastDeadline));
    let late = now + Duration::from_secs(6);
    let past = s.respond(8, 2, b"0.5", late);
    assert_eq!(past, Err(super::RespondError::PastDeadline));
}

/// Spec §4.6, Go's `handleUserEvent` (`eventBuffer`): an event is known by its Lamport time,
/// name and payload; the same one twice is delivered once, a different one at the same time
/// is delivered too.
#[test]
fn the_same_user_event_twice_gives_one_event() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(9), &user_event(5, "deploy"), now);
    s.handle_packet(addr(9), &user_event(5, "deploy"), now);
    s.handle_packet(addr(9), &user_event(5, "restart"), now);
    assert_eq!(user_names(&events(&mut s)), ["deploy", "restart"]);
    assert_eq!(s.event_queue_len(), 2);
}

/// Spec §4.6 and §4.11, Go's `MergeRemoteState`: the event buffer a peer sends in push/pull
/// goes through the same dedup, so an event seen by gossip is not delivered again on join
/// (the joiner here replays old events: `ignore_old` false).
#[test]
fn user_events_replayed_in_push_pull_are_deduplicated() {
    let now = Instant::now();
    let mut c = Cluster::new(&["a", "b"], now);
    c.nodes[0]
        .user_event("deploy", b"v1", false, now)
        .expect("sent");
    c.deliver();
    let event = {
        let evs = c.take_events(0);
        assert_eq!(user_names(&evs), ["deploy"]);
        evs.into_iter().find(|e| matches!(e, Event::User(_)))
    };
    let Some(Event::User(e)) = event else {
        unreachable!("found above")
    };
    // b hears it by gossip first, then joins a, whose push/pull carries it again.
    let gossip = serf_packet(&SerfMessage::UserEvent(e));
    c.nodes[1].handle_packet(addr(1), &gossip, now);
    c.nodes[1].join(&[addr(1)], false, now);
    c.deliver();
    c.run_for(Duration::from_secs(1));
    assert_eq!(user_names(&c.take_events(1)), ["deploy"]);
}

/// Spec §4.5 (graceful leave), Go's `Leave`: leave intent gossiped → memberlist's leave
/// (dead about ourselves) → linger `LeavePropagateDelay` → `LeaveComplete`. The peer sees us
/// `leaving`, then `left` (a `member-leave`, not `member-failed`).
#[test]
fn a_graceful_leave_goes_through_its_phases() {
    let now = Instant::now();
    let mut c = joined_pair(now, |_| {});
    c.nodes[1].leave(c.now);
    assert!(matches!(
        c.nodes[1].core.leave.phase,
        LeavePhase::Intent { .. }
    ));
    assert_eq!(status(&c.nodes[1], "b"), Some(MemberStatus::Leaving));
    let mut phases = vec![c.nodes[1].core.leave.phase];
    let mut seen_leaving = false;
    for _ in 0..1000 {
        c.run_for(Duration::from_millis(10));
        seen_leaving |= status(&c.nodes[0], "b") == Some(MemberStatus::Leaving);
        let phase = c.nodes[1].core.leave.phase;
        if std::mem::discriminant(&phase) != std::mem::discriminant(&phases[phases.len() - 1]) {
            phases.push(phase);
        }
    }
    let names: Vec<&str> = phases
        .iter()
        .map(|p| match p {
            LeavePhase::Running => "running",
            LeavePhase::Intent { .. } => "intent",
            LeavePhase::Memberlist { .. } => "memberlist",
            LeavePhase::Propagate { .. } => "propagate",
            LeavePhase::Left => "left",
        })
        .collect();
    assert_eq!(names, ["intent", "memberlist", "propagate", "left"]);
    assert!(c.nodes[1].has_left());
    assert!(seen_leaving, "a saw b leaving before it left");
    let b_outcomes = c.take_outcomes(1);
    assert_eq!(
        b_outcomes
            .iter()
            .filter(|o| **o == Outcome::LeaveComplete)
            .count(),
        1
    );
    let a_evs = c.take_events(0);
    assert_eq!(member_events(&a_evs, MemberEventKind::Leave), ["b"]);
    assert!(member_events(&a_evs, MemberEventKind::Failed).is_empty());
    assert_eq!(status(&c.nodes[0], "b"), Some(MemberStatus::Left));
}

/// Not in Go (see `handle_node_leave`): memberlist's `dead` from the node itself, arriving
/// before the node's Serf leave intent, is a leave, not a failure; the intent that follows
/// changes nothing and reports nothing twice.
#[test]
fn a_memberlist_leave_that_outruns_the_intent_is_still_a_leave() {
    let now = Instant::now();
    let mut c = joined_pair(now, |_| {});
    let incarnation = c.nodes[0]
        .memberlist()
        .incarnation_of("b")
        .expect("a knows b");
    let dead = |from: &str| {
        packet(Message::Dead(Dead {
            incarnation,
            node: "b".into(),
            from: from.into(),
        }))
    };
    c.nodes[0].handle_packet(addr(2), &dead("b"), c.now);
    assert_eq!(status(&c.nodes[0], "b"), Some(MemberStatus::Left));
    c.nodes[0].handle_packet(addr(2), &leave_intent("b", 1_000), c.now);
    assert_eq!(status(&c.nodes[0], "b"), Some(MemberStatus::Left));
    let evs = events(&mut c.nodes[0]);
    assert_eq!(member_events(&evs, MemberEventKind::Leave), ["b"]);
    assert!(member_events(&evs, MemberEventKind::Failed).is_empty());

    // Someone else's verdict is still a failure, as in Go.
    let mut c = joined_pair(now, |_| {});
    c.nodes[0].handle_packet(addr(2), &dead("c"), c.now);
    assert_eq!(status(&c.nodes[0], "b"), Some(MemberStatus::Failed));
    let evs = events(&mut c.nodes[0]);
    assert_eq!(member_events(&evs, MemberEventKind::Failed), ["b"]);
}

/// Spec §4.5, Go's `Leave`: a lone node does not wait for a broadcast nobody would hear; its
/// leave still completes after the propagate delay.
#[test]
fn a_lone_node_leaves_without_waiting_for_its_broadcast() {
    let mut now = Instant::now();
    let mut s = node("a", 1, now);
    s.leave(now);
    assert_eq!(s.intent_queue_len(), 0);
    let outcomes = support::run_for(&mut s, &mut now, Duration::from_secs(2));
    assert!(outcomes.contains(&Outcome::LeaveComplete));
    assert!(s.has_left());
}

/// Spec §4.10, Go's `resolveNodeConflict` and `handleConflict`: another address claiming our
/// name starts a `_serf_conflict` query; our peer names our address, so the majority is ours
/// and we keep running. A lone node's vote with no answers keeps its name too.
#[test]
fn a_name_conflict_is_put_to_a_vote_that_we_win() {
    let now = Instant::now();
    let mut c = joined_pair(now, |_| {});
    c.nodes[0].handle_packet(addr(9), &forged_alive("a", 100, 9), c.now);
    assert!(c.nodes[0].core.internal.conflict_vote.is_some());
    c.deliver();
    c.run_for(Duration::from_secs(10));
    assert!(
        c.nodes[0].core.internal.conflict_vote.is_none(),
        "the vote ended"
    );
    let outcomes = c.take_outcomes(0);
    assert!(
        !outcomes.iter().any(|o| matches!(o, Outcome::Shutdown(_))),
        "{outcomes:?}"
    );
}

/// Spec §4.10, Go's `resolveNodeConflict` (`resp.From` / ID check): an answer to our conflict
/// query counts only from a live member we know, once, with the query's ID; anything else is
/// dropped and counted.
#[test]
fn conflict_answers_count_only_from_known_live_members() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    s.handle_packet(addr(2), &alive("b", 2), now);
    s.handle_packet(addr(9), &forged_alive("a", 100, 9), now);
    let Some(vote) = s.core.internal.conflict_vote.clone() else {
        panic!("no vote started");
    };
    let body = crate::messages::encode_conflict_response(None);
    let answer = |from: &str, id: u32| {
        serf_packet(&SerfMessage::QueryResponse(QueryResponseMsg {
            ltime: vote.ltime,
            id,
            from: from.into(),
            flags: 0,
            payload: body.clone(),
        }))
    };
    s.handle_packet(addr(9), &answer("mallory", vote.id), now);
    s.handle_packet(addr(2), &answer("b", vote.id.wrapping_add(1)), now);
    assert_eq!(s.stats().drops.get("conflict answer from a non-voter"), 2);
}

/// Spec §4.12, Go's `handleReap` and `eraseNode`: a left member is kept for the tombstone
/// timeout (so late gossip about it is known to be old), then forgotten with `member-reap`.
#[test]
fn a_left_member_is_reaped_after_the_tombstone_timeout() {
    let now = Instant::now();
    let mut c = joined_pair(now, |cfg| {
        cfg.tombstone_timeout = Duration::from_secs(20);
        cfg.reap_interval = Duration::from_secs(1);
    });
    c.nodes[1].leave(c.now);
    c.run_for(Duration::from_secs(10));
    c.down[1] = true; // b has exited
    assert_eq!(status(&c.nodes[0], "b"), Some(MemberStatus::Left));
    assert!(member_events(&c.take_events(0), MemberEventKind::Reap).is_empty());
    // Left within those 10 s, so 15 s after the leave began is under 20 s after it ended.
    c.run_for(Duration::from_secs(5));
    assert!(
        member_events(&c.take_events(0), MemberEventKind::Reap).is_empty(),
        "too early"
    );
    assert_eq!(status(&c.nodes[0], "b"), Some(MemberStatus::Left));
    c.run_for(Duration::from_secs(17));
    assert_eq!(
        member_events(&c.take_events(0), MemberEventKind::Reap),
        ["b"]
    );
    assert_eq!(status(&c.nodes[0], "b"), None);
}

/// Spec §4.5 (force leave with prune), Go's `handlePrune` and `eraseNode`: a failed member
/// force-left with prune is erased at once through the same path as reaping (`member-leave`
/// then `member-reap`).
#[test]
fn a_pruned_force_leave_erases_a_failed_member() {
    let now = Instant::now();
    let mut c = joined_pair(now, |_| {});
    c.down[1] = true;
    c.run_for(Duration::from_secs(30));
    assert_eq!(status(&c.nodes[0], "b"), Some(MemberStatus::Failed));
    c.take_events(0);
    c.nodes[0].force_leave("b", true, c.now);
    c.deliver();
    let evs = c.take_events(0);
    assert_eq!(member_events(&evs, MemberEventKind::Leave), ["b"]);
    assert_eq!(member_events(&evs, MemberEventKind::Reap), ["b"]);
    assert_eq!(status(&c.nodes[0], "b"), None);
}

/// memberlist's `direct_fanout` (beyond Go): the node a user event, a query or a leave starts
/// at sends it straight to each alive member of a small cluster, besides gossiping it, so a
/// member gossip misses does not wait for the next push/pull (or, for a query, never hear it).
#[test]
fn own_events_queries_and_leave_intents_go_straight_to_each_member() {
    let now = Instant::now();
    let mut s = node("a", 1, now);
    for (name, i) in [("b", 2), ("c", 3), ("d", 4)] {
        s.handle_packet(addr(i), &alive(name, i), now);
    }
    std::iter::from_fn(|| s.poll_transmit()).for_each(drop);
    let serf_type_told = |s: &mut Serf| {
        let mut to: Vec<(std::net::SocketAddr, u8)> = std::iter::from_fn(|| s.poll_transmit())
            .filter_map(|t| match t {
                // `08` (memberlist user message) and then the Serf message type.
                Transmit::Packet { to, bytes } if bytes.first() == Some(&8) => {
                    Some((to, *bytes.get(1)?))
                }
                _ => None,
            })
            .collect();
        to.sort();
        to
    };
    let each = |t: crate::messages::MessageType| {
        vec![(addr(2), t as u8), (addr(3), t as u8), (addr(4), t as u8)]
    };
    s.user_event("deploy", b"v2", false, now).unwrap();
    assert_eq!(
        serf_type_told(&mut s),
        each(crate::messages::MessageType::UserEvent)
    );
    s.query("load", b"", &Default::default(), now).unwrap();
    assert_eq!(
        serf_type_told(&mut s),
        each(crate::messages::MessageType::Query)
    );
    s.leave(now);
    assert_eq!(
        serf_type_told(&mut s),
        each(crate::messages::MessageType::Leave)
    );
}
