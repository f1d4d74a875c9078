//! Simulated clusters under faults, with invariants checked after every step. A failure prints
//! `SIM_SEED=…`; set it to replay that exact run.

use std::collections::BTreeMap;
use std::time::Duration;

use vassal_memberlist::{Config, NodeStateKind};
use vassal_serf::MemberEventKind;
use vassal_serf::MemberStatus::{self, Failed, Left};
use vassal_sim::Sim;

fn seed(default: u64) -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn lan_cluster(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, n, |_| Config::lan("n"));
    sim.check_invariants();
    sim.record_events();
    sim.join_all(Duration::from_millis(10));
    let converged = sim.run_until_cond(Duration::from_secs(30), Sim::converged);
    assert!(
        converged.is_some(),
        "cluster of {n} did not converge; replay with SIM_SEED={seed}"
    );
    sim
}

#[test]
fn cluster_converges_after_joins() {
    let sim = lan_cluster(seed(1), 20);
    for i in 0..sim.len() {
        assert_eq!(sim.serf(i).members().count(), 20, "node {i} members");
    }
}

#[test]
fn crashed_node_is_declared_failed_by_everyone() {
    // SWIM §4: a node that stops answering is suspected, then declared dead.
    let s = seed(2);
    let mut sim = lan_cluster(s, 10);
    let t0 = sim.now();
    sim.crash(3);
    let all_failed = |sim: &Sim| {
        (0..10)
            .filter(|&i| i != 3)
            .all(|i| sim.view(i, 3) == Some(NodeStateKind::Dead))
    };
    let at = sim.run_until_cond(Duration::from_secs(60), all_failed);
    let at = at.unwrap_or_else(|| {
        panic!("crash of n3 not detected within 60 s; replay with SIM_SEED={s}")
    });
    for i in (0..10).filter(|&i| i != 3) {
        assert!(
            sim.first_event(i, MemberEventKind::Failed, "n3", t0)
                .is_some(),
            "n{i} raised no member-failed for n3; SIM_SEED={s}"
        );
    }
    // Lifeguard's minimum suspicion at n=10 is 4 s; detection cannot beat it.
    assert!(
        at - t0 >= Duration::from_secs(4),
        "detected implausibly fast: {:?}",
        at - t0
    );
}

#[test]
fn graceful_leave_is_seen_as_left_not_failed() {
    let s = seed(3);
    let mut sim = lan_cluster(s, 8);
    let t0 = sim.now();
    sim.leave(5);
    let all_left = |sim: &Sim| {
        (0..8)
            .filter(|&i| i != 5)
            .all(|i| sim.view(i, 5) == Some(NodeStateKind::Left))
    };
    assert!(
        sim.run_until_cond(Duration::from_secs(10), all_left)
            .is_some(),
        "leave not seen; SIM_SEED={s}"
    );
    for i in (0..8).filter(|&i| i != 5) {
        assert!(
            sim.first_event(i, MemberEventKind::Leave, "n5", t0)
                .is_some(),
            "n{i}: no member-leave; SIM_SEED={s}"
        );
        assert!(
            sim.first_event(i, MemberEventKind::Failed, "n5", t0)
                .is_none(),
            "n{i}: saw failed; SIM_SEED={s}"
        );
    }
}

#[test]
fn tag_change_reaches_every_node() {
    let s = seed(4);
    let mut sim = lan_cluster(s, 30);
    let t0 = sim.now();
    sim.set_tags(7, BTreeMap::from([("role".to_string(), "web".to_string())]));
    let all = |sim: &Sim| {
        (0..30).all(|i| {
            sim.serf(i)
                .member("n7")
                .is_some_and(|m| m.tags.get("role").is_some_and(|r| r == "web"))
        })
    };
    assert!(
        sim.run_until_cond(Duration::from_secs(10), all).is_some(),
        "update not everywhere; SIM_SEED={s}"
    );
    assert!(sim
        .first_event(0, MemberEventKind::Update, "n7", t0)
        .is_some());
}

#[test]
fn partition_heals_and_the_cluster_converges() {
    let s = seed(5);
    let mut sim = lan_cluster(s, 12);
    sim.partition(|i| (i % 2) as u32);
    sim.run_for(Duration::from_secs(40));
    let split = (0..12)
        .any(|i| (0..12).any(|j| i % 2 != j % 2 && sim.view(i, j) != Some(NodeStateKind::Alive)));
    assert!(
        split,
        "a 40 s partition should make some cross-side node look failed; SIM_SEED={s}"
    );
    sim.heal();
    // Failed nodes come back through periodic push/pull; allow a few intervals.
    let healed = sim.run_until_cond(Duration::from_secs(180), Sim::converged);
    assert!(
        healed.is_some(),
        "cluster did not reconverge after the partition healed; SIM_SEED={s}"
    );
}

#[test]
fn paused_node_refutes_suspicion_and_stays_alive() {
    // Lifeguard: a short stall should not get a node declared dead.
    let s = seed(6);
    let mut sim = lan_cluster(s, 10);
    let t0 = sim.now();
    sim.pause(4, Duration::from_millis(1500));
    sim.run_for(Duration::from_secs(20));
    for i in (0..10).filter(|&i| i != 4) {
        assert!(
            sim.first_event(i, MemberEventKind::Failed, "n4", t0)
                .is_none(),
            "n{i} declared the paused n4 failed; SIM_SEED={s}"
        );
    }
    assert!(sim.converged());
}

#[test]
fn lossy_network_still_converges_and_detects_a_crash() {
    let s = seed(7);
    let mut sim = Sim::new(s, 15, |_| Config::lan("n"));
    sim.check_invariants();
    sim.network.loss = 0.05;
    sim.join_all(Duration::from_millis(10));
    assert!(
        sim.run_until_cond(Duration::from_secs(60), Sim::converged)
            .is_some(),
        "SIM_SEED={s}"
    );
    sim.crash(9);
    assert!(
        sim.run_until_cond(Duration::from_secs(90), Sim::converged)
            .is_some(),
        "crash not agreed; SIM_SEED={s}"
    );
}

#[test]
fn same_seed_gives_the_same_trace() {
    let run = |seed| {
        let mut sim = Sim::new(seed, 12, |_| Config::lan("n"));
        sim.network.loss = 0.02;
        sim.join_all(Duration::from_millis(5));
        sim.crash(2);
        sim.run_for(Duration::from_secs(30));
        sim.trace_hash()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43), "different seeds should differ");
}

#[test]
fn user_event_reaches_every_node_exactly_once() {
    // Serf §4.6: the 512-slot event buffer deduplicates re-gossiped copies.
    let s = seed(8);
    let mut sim = lan_cluster(s, 25);
    sim.user_event(3, "deploy", b"v1");
    let all = |sim: &Sim| (0..25).all(|i| sim.user_events_named(i, "deploy") >= 1);
    assert!(
        sim.run_until_cond(Duration::from_secs(10), all).is_some(),
        "event did not reach everyone; SIM_SEED={s}"
    );
    // Let every copy finish its retransmissions and a push/pull round go by.
    sim.run_for(Duration::from_secs(60));
    for i in 0..25 {
        assert_eq!(
            sim.user_events_named(i, "deploy"),
            1,
            "n{i} delivered deploy more than once; SIM_SEED={s}"
        );
    }
}

#[test]
fn late_joiner_gets_old_events_only_when_it_asks_to_replay() {
    let s = seed(9);
    let mut sim = Sim::new(s, 6, |_| Config::lan("n"));
    sim.record_events();
    for i in 1..4 {
        sim.join(i, 0);
    }
    sim.run_for(Duration::from_secs(5));
    sim.user_event(1, "old", b"before the join");
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        sim.user_events_named(2, "old"),
        1,
        "members of the time got it; SIM_SEED={s}"
    );
    sim.join(4, 0);
    sim.join_with(5, 0, true);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        sim.user_events_named(4, "old"),
        0,
        "a plain join must not replay old events; SIM_SEED={s}"
    );
    assert_eq!(
        sim.user_events_named(5, "old"),
        1,
        "a replaying join gets old events once; SIM_SEED={s}"
    );
    sim.user_event(2, "new", b"after");
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        sim.user_events_named(4, "new"),
        1,
        "new events still arrive; SIM_SEED={s}"
    );
}

#[test]
fn query_collects_one_ack_and_one_answer_per_node_then_finishes() {
    // Serf §4.7: acks and answers go straight to the source; duplicates are dropped.
    let s = seed(10);
    let mut sim = lan_cluster(s, 20);
    sim.auto_respond();
    let params = vassal_serf::QueryParams {
        request_ack: true,
        ..Default::default()
    };
    let ltime = sim.query(0, "load", &params);
    // Default timeout for 20 nodes: 200 ms × 16 × ceil(log10 21) = 6.4 s.
    sim.run_for(Duration::from_secs(7));
    let vassal_sim::QueryResults {
        mut acks,
        responses,
        done,
    } = sim.query_results(0, ltime);
    acks.sort();
    let mut everyone: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    everyone.sort();
    assert_eq!(acks, everyone, "one ack per node; SIM_SEED={s}");
    assert_eq!(
        responses.len(),
        20,
        "one answer per node: {responses:?}; SIM_SEED={s}"
    );
    assert!(responses
        .iter()
        .all(|(from, p)| p == format!("resp-from-{from}").as_bytes()));
    assert!(done, "the query never finished; SIM_SEED={s}");
}

#[test]
fn query_filters_pick_exactly_the_matching_nodes() {
    let s = seed(11);
    let mut sim = lan_cluster(s, 12);
    for i in [2, 5, 7] {
        sim.set_tags(i, BTreeMap::from([("role".to_string(), "web".to_string())]));
    }
    sim.set_tags(8, BTreeMap::from([("role".to_string(), "lb".to_string())]));
    sim.run_for(Duration::from_secs(5));
    sim.auto_respond();
    let by_tag = vassal_serf::QueryParams {
        filter_tags: BTreeMap::from([("role".to_string(), "w.b".to_string())]),
        request_ack: true,
        ..Default::default()
    };
    let by_node = vassal_serf::QueryParams {
        filter_nodes: vec!["n3".into(), "n8".into()],
        ..Default::default()
    };
    let t1 = sim.query(0, "load", &by_tag);
    let t2 = sim.query(1, "load", &by_node);
    sim.run_for(Duration::from_secs(7));
    let names = |v: Vec<(String, Vec<u8>)>| {
        let mut n: Vec<String> = v.into_iter().map(|(f, _)| f).collect();
        n.sort();
        n
    };
    let vassal_sim::QueryResults {
        mut acks,
        responses,
        ..
    } = sim.query_results(0, t1);
    acks.sort();
    assert_eq!(acks, ["n2", "n5", "n7"], "tag filter acks; SIM_SEED={s}");
    assert_eq!(
        names(responses),
        ["n2", "n5", "n7"],
        "tag filter answers; SIM_SEED={s}"
    );
    let responses = sim.query_results(1, t2).responses;
    assert_eq!(
        names(responses),
        ["n3", "n8"],
        "node filter answers; SIM_SEED={s}"
    );
}

#[test]
fn newcomer_reusing_a_live_name_loses_the_vote_and_stops() {
    // Serf §4.10: the node whose address the majority does not know for the name shuts down.
    let s = seed(12);
    let names: Vec<String> = ["n0", "n1", "n2", "n3", "n4", "n1"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut sim = Sim::with_names(s, &names, |_| Config::lan("n"));
    sim.record_events();
    for i in 1..5 {
        sim.join(i, 0);
    }
    assert!(sim
        .run_until_cond(Duration::from_secs(30), |s| (0..5).all(|i| s
            .serf(i)
            .members()
            .count()
            == 5))
        .is_some());
    sim.join(5, 0);
    let stopped = sim.run_until_cond(Duration::from_secs(30), |s| !s.is_up(5));
    assert!(
        stopped.is_some(),
        "the impostor n1 never stopped; SIM_SEED={s}"
    );
    assert!(sim.is_up(1), "the original n1 must stay; SIM_SEED={s}");
    let shut = |i: usize| {
        sim.outcomes(i)
            .iter()
            .any(|(_, o)| matches!(o, vassal_serf::Outcome::Shutdown(_)))
    };
    assert!(
        shut(5) && !shut(1),
        "only the impostor lost the vote; SIM_SEED={s}"
    );
}

#[test]
fn coordinates_estimate_rtts_of_the_right_order() {
    // Vivaldi (spec §4.13): with one-way latencies of 0.2–2 ms, RTTs average about 2.2 ms.
    let s = seed(13);
    let mut sim = lan_cluster(s, 10);
    sim.run_for(Duration::from_secs(120));
    let me = sim
        .serf(0)
        .coordinate("n0")
        .expect("our own coordinate")
        .clone();
    for j in 1..10 {
        let other = sim
            .serf(0)
            .coordinate(&format!("n{j}"))
            .unwrap_or_else(|| panic!("no coordinate for n{j}; SIM_SEED={s}"));
        let est = me.distance_to(other).as_secs_f64() * 1000.0;
        assert!(
            (0.5..6.0).contains(&est),
            "n0 -> n{j} estimated {est:.2} ms; SIM_SEED={s}"
        );
    }
}

// Serf's flap metric (serf.go handleNodeJoin): a member declared failed that is alive again
// within FlapTimeout (60 s) counts as a flap; one that stayed away longer does not.
#[test]
fn a_member_back_within_the_flap_timeout_counts_as_a_flap() {
    let s = seed(13);
    let mut sim = lan_cluster(s, 6);
    let t0 = sim.now();
    // Paused long enough to be declared dead, then it refutes and is alive again.
    sim.pause(4, Duration::from_secs(15));
    let failed_everywhere = |sim: &Sim| {
        (0..6).filter(|&i| i != 4).all(|i| {
            sim.first_event(i, MemberEventKind::Failed, "n4", t0)
                .is_some()
        })
    };
    assert!(
        sim.run_until_cond(Duration::from_secs(30), failed_everywhere)
            .is_some(),
        "paused n4 was not declared failed; SIM_SEED={s}"
    );
    assert!(
        sim.run_until_cond(Duration::from_secs(30), Sim::converged)
            .is_some(),
        "n4 did not come back; SIM_SEED={s}"
    );
    for i in (0..6).filter(|&i| i != 4) {
        assert_eq!(
            sim.serf(i).stats().member_flaps,
            1,
            "n{i} counted n4's return; SIM_SEED={s}"
        );
    }

    // Down for longer than the flap timeout: back, but not a flap.
    sim.crash(5);
    sim.run_for(Duration::from_secs(70));
    sim.restart(5);
    sim.join(5, 0);
    assert!(
        sim.run_until_cond(Duration::from_secs(30), Sim::converged)
            .is_some(),
        "n5 did not rejoin; SIM_SEED={s}"
    );
    for i in 0..4 {
        assert_eq!(
            sim.serf(i).stats().member_flaps,
            1,
            "n{i} counted n5's late return as a flap; SIM_SEED={s}"
        );
    }
}

// spec §5.3: a node restarted from its snapshot rejoins the members it recorded, on its own, and
// does not deliver again the user events it had already seen; newer ones still arrive.
#[test]
fn restart_from_snapshot_rejoins_and_skips_seen_events() {
    let s = seed(14);
    let mut sim = Sim::new(s, 5, |_| Config::lan("n"));
    sim.check_invariants();
    sim.keep_snapshot(4);
    sim.record_events();
    sim.join_all(Duration::from_millis(10));
    assert!(
        sim.run_until_cond(Duration::from_secs(30), Sim::converged)
            .is_some(),
        "SIM_SEED={s}"
    );
    sim.user_event(1, "deploy", b"v1");
    assert!(
        sim.run_until_cond(Duration::from_secs(10), |sim| sim
            .user_events_named(4, "deploy")
            == 1)
            .is_some(),
        "SIM_SEED={s}"
    );
    let file = String::from_utf8(sim.snapshot_file(4).unwrap().to_vec()).unwrap();
    assert!(
        file.contains("alive: n0 ") && file.contains("event-clock: "),
        "{file}"
    );

    sim.crash(4);
    assert!(
        sim.run_until_cond(Duration::from_secs(30), Sim::converged)
            .is_some(),
        "crash not agreed; SIM_SEED={s}"
    );
    sim.restart(4);
    // Well before the others' reconnect attempts (every 30 s, with probability failed/alive)
    // could bring it back.
    assert!(
        sim.run_until_cond(Duration::from_secs(3), Sim::converged)
            .is_some(),
        "n4 did not rejoin from its snapshot; SIM_SEED={s}"
    );
    // Through a push/pull round, whose event buffers still hold deploy v1.
    sim.run_for(Duration::from_secs(40));
    assert_eq!(
        sim.user_events_named(4, "deploy"),
        1,
        "deploy v1 delivered again after the restart; SIM_SEED={s}"
    );
    sim.user_event(2, "deploy", b"v2");
    assert!(
        sim.run_until_cond(Duration::from_secs(10), |sim| sim
            .user_events_named(4, "deploy")
            == 2)
            .is_some(),
        "a new event after the restart did not arrive; SIM_SEED={s}"
    );
}

// spec §5.3: a graceful leave writes `leave`, so a restart does not rejoin.
#[test]
fn restart_after_a_graceful_leave_does_not_rejoin() {
    let s = seed(15);
    let mut sim = Sim::new(s, 3, |_| Config::lan("n"));
    sim.keep_snapshot(2);
    sim.join_all(Duration::from_millis(10));
    assert!(
        sim.run_until_cond(Duration::from_secs(30), Sim::converged)
            .is_some(),
        "SIM_SEED={s}"
    );
    sim.leave(2);
    sim.run_for(Duration::from_secs(10));
    let file = String::from_utf8(sim.snapshot_file(2).unwrap().to_vec()).unwrap();
    assert!(file.contains("\nleave\n"), "{file}");
    sim.crash(2);
    sim.restart(2);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        sim.serf(2).members().count(),
        1,
        "n2 rejoined after leaving; SIM_SEED={s}"
    );
}

/// Whether n0…n3 all list n4 with `status`.
fn n4_is_on_all_others(sim: &Sim, status: MemberStatus) -> bool {
    (0..4).all(|i| sim.serf(i).member("n4").is_some_and(|m| m.status == status))
}

/// A converged cluster of five in which n4 has crashed and the other four list it failed.
fn five_with_n4_failed(s: u64) -> Sim {
    let mut sim = lan_cluster(s, 5);
    sim.crash(4);
    assert!(
        sim.run_until_cond(Duration::from_secs(60), |sim| n4_is_on_all_others(
            sim, Failed
        ))
        .is_some(),
        "n4 not failed everywhere; SIM_SEED={s}"
    );
    sim
}

#[test]
fn force_leave_turns_a_failed_member_left_everywhere() {
    // Serf's RemoveFailedNode: a leave intent for a failed member makes it left, not failed.
    let s = seed(31);
    let mut sim = five_with_n4_failed(s);
    let t0 = sim.now();
    sim.force_leave(0, 4, false);
    assert!(
        sim.run_until_cond(Duration::from_secs(10), |sim| n4_is_on_all_others(
            sim, Left
        ))
        .is_some(),
        "n4 not left everywhere after force-leave; SIM_SEED={s}"
    );
    for i in 0..4 {
        assert!(
            sim.first_event(i, MemberEventKind::Leave, "n4", t0)
                .is_some(),
            "n{i} raised no member-leave for n4; SIM_SEED={s}"
        );
    }
}

#[test]
fn force_leave_with_prune_erases_the_member_everywhere() {
    let s = seed(32);
    let mut sim = five_with_n4_failed(s);
    let t0 = sim.now();
    sim.force_leave(1, 4, true);
    let gone_everywhere = |sim: &Sim| (0..4).all(|i| sim.serf(i).member("n4").is_none());
    assert!(
        sim.run_until_cond(Duration::from_secs(10), gone_everywhere)
            .is_some(),
        "n4 still listed after force-leave -prune; SIM_SEED={s}"
    );
    for i in 0..4 {
        assert!(
            sim.first_event(i, MemberEventKind::Reap, "n4", t0)
                .is_some(),
            "n{i} raised no member-reap for n4; SIM_SEED={s}"
        );
    }
}

// ----- clusters that start converged (the 10,000-node benchmark's start) -----

#[test]
fn preconverged_cluster_shares_one_view_and_runs_the_real_protocol() {
    let s = seed(21);
    let n = 40;
    let mut sim = Sim::new_converged(s, n, |_| Config::lan("n"));
    assert!(sim.converged(), "not converged at start; SIM_SEED={s}");
    for i in 0..n {
        assert_eq!(sim.serf(i).members().count(), n, "node {i} members");
        assert!(
            sim.serf(i).shares_view_with(sim.serf(0)),
            "node {i} holds its own copy of the view"
        );
    }
    sim.check_invariants();
    sim.record_events();
    // Probes, gossip and push/pulls run for real: a minute later nobody was suspected.
    sim.run_for(Duration::from_secs(60));
    assert!(sim.converged(), "lost a member while idle; SIM_SEED={s}");
    let t0 = sim.now();
    sim.set_tags(5, BTreeMap::from([("role".to_string(), "db".to_string())]));
    let all = |sim: &Sim| {
        (0..n).all(|i| {
            sim.serf(i)
                .member("n5")
                .is_some_and(|m| m.tags.get("role").is_some_and(|r| r == "db"))
        })
    };
    assert!(
        sim.run_until_cond(Duration::from_secs(10), all).is_some(),
        "tag change not everywhere; SIM_SEED={s}"
    );
    assert!(sim
        .first_event(1, MemberEventKind::Update, "n5", t0)
        .is_some());
    // The update gave every node its own copy of the changed part.
    assert!(!sim.serf(1).shares_view_with(sim.serf(0)));
    // And a crash is still detected by everyone.
    sim.crash(9);
    let failed = sim.run_until_cond(Duration::from_secs(60), |sim| {
        (0..n)
            .filter(|&i| i != 9)
            .all(|i| sim.view(i, 9) != Some(NodeStateKind::Alive))
    });
    assert!(failed.is_some(), "crash not detected; SIM_SEED={s}");
}

#[test]
fn preconverged_start_is_deterministic() {
    let run = |seed| {
        let mut sim = Sim::new_converged(seed, 20, |_| Config::lan("n"));
        sim.network.loss = 0.02;
        sim.run_for(Duration::from_secs(5));
        sim.set_tags(3, BTreeMap::from([("v".to_string(), "2".to_string())]));
        sim.crash(4);
        sim.run_for(Duration::from_secs(30));
        sim.trace_hash()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8), "different seeds should differ");
}

#[test]
fn only_a_fresh_node_can_adopt_a_view_and_only_one_holding_its_own_entry() {
    use std::net::SocketAddr;
    use std::time::Instant;
    use vassal_memberlist::wire::{PushNodeState, PushPull, StreamMessage};
    use vassal_serf::Serf;

    let epoch = Instant::now();
    let serf = |name: &str, port: u16| {
        let mut c = Config::lan(name);
        c.advertise = SocketAddr::from(([127, 9, 0, 1], port));
        c.bind_port = port;
        Serf::new(vassal_serf::Config::new(c), epoch).expect("valid config")
    };
    let entry = |s: &Serf, state: NodeStateKind| {
        let me = s.memberlist().local_node();
        PushNodeState {
            name: me.name.clone(),
            addr: me.addr,
            port: me.port,
            meta: me.meta.clone(),
            incarnation: 1,
            state,
            vsn: me.vsn.to_vec(),
        }
    };
    let (mut a, b) = (serf("a", 7001), serf("b", 7002));
    let mut template = serf("a", 7001);
    let nodes = vec![
        entry(&a, NodeStateKind::Alive),
        entry(&b, NodeStateKind::Alive),
    ];
    let push_pull = |nodes| {
        Ok(StreamMessage::PushPull(PushPull {
            join: false,
            nodes,
            user_state: Vec::new(),
        }))
    };
    template.handle_stream(
        SocketAddr::from(([127, 9, 0, 9], 1)),
        push_pull(nodes),
        epoch,
    );

    a.adopt_view(&template).expect("a fresh a adopts");
    assert_eq!(a.members().count(), 2);
    let err = a.adopt_view(&template).unwrap_err();
    assert!(err.contains("already knows 2"), "{err}");

    let err = serf("c", 7003).adopt_view(&template).unwrap_err();
    assert!(err.contains("does not know c"), "{err}");

    let err = serf("b", 7999).adopt_view(&template).unwrap_err();
    assert!(err.contains("differs"), "{err}");

    let d = serf("d", 7004);
    template.handle_stream(
        SocketAddr::from(([127, 9, 0, 9], 1)),
        push_pull(vec![entry(&d, NodeStateKind::Alive)]),
        epoch,
    );
    template.handle_stream(
        SocketAddr::from(([127, 9, 0, 9], 1)),
        push_pull(vec![entry(&d, NodeStateKind::Left)]),
        epoch,
    );
    let err = serf("b", 7002).adopt_view(&template).unwrap_err();
    assert!(err.contains("only all-alive"), "{err}");
}
