//! One attack each, as the fuzz harness runs them (`vassal_sim::hostile::fuzz`): forged messages
//! from the adversary, then the harness's checks: nothing wraps or falls, nobody quits, queues
//! stay within their cap, and after the attack everyone is alive and hears everyone's events.
//! Issue 11 lists these attacks; the fuzz target generalizes them.

use vassal_sim::hostile::fuzz::{
    run, AddrSel, Float, FloodKind, Incarnation, Input, LTime, Name, Step, Target, Timeout,
};

fn attack(steps: Vec<Step>) {
    let outcome = run(&Input { seed: 1, steps });
    eprintln!("{outcome:?}");
}

fn wait(millis: u16) -> Step {
    Step::Wait { millis }
}

#[test]
fn no_attack_heals_trivially() {
    attack(vec![wait(5000)]);
}

// Issue 11, "permanent eviction": a refutation above u32::MAX must not wrap to 0.
#[test]
fn suspect_at_the_top_incarnation_does_not_evict() {
    attack(vec![
        Step::Suspect {
            to: Target::All,
            node: Name::Honest(1),
            incarnation: Incarnation::Max,
            from: Name::Adversary,
        },
        wait(20_000),
    ]);
}

#[test]
fn dead_just_above_the_known_incarnation_is_refuted() {
    attack(vec![
        Step::Dead {
            to: Target::Node(0),
            node: Name::Honest(2),
            incarnation: Incarnation::Known(1),
            from: Name::Ghost(0),
        },
        wait(20_000),
    ]);
}

// Issue 11, "silenced events": one event at 2^64-2 must not move every clock to the top.
#[test]
fn user_event_at_the_top_ltime_does_not_silence_later_events() {
    attack(vec![
        Step::UserEvent {
            to: Target::All,
            ltime: LTime::NearMax(1),
            name: Name::Ghost(1),
            payload: vassal_sim::hostile::fuzz::Size(1),
            cc: false,
        },
        wait(5000),
    ]);
}

#[test]
fn query_at_the_top_ltime_with_endless_timeout_is_harmless() {
    attack(vec![
        Step::Query {
            to: Target::Node(1),
            ltime: LTime::NearMax(1),
            id: 7,
            name: Name::Ghost(2),
            timeout: Timeout::Max,
            filter: vassal_sim::hostile::fuzz::FilterSel::None,
            ack: true,
            no_broadcast: false,
            relay_factor: 3,
            payload: vassal_sim::hostile::fuzz::Size(4),
            reply_to: AddrSel::Own,
        },
        wait(5000),
    ]);
}

#[test]
fn leave_intent_at_the_top_ltime_does_not_stick() {
    attack(vec![
        Step::LeaveIntent {
            to: Target::Node(0),
            node: Name::Honest(1),
            ltime: LTime::NearMax(1),
            prune: false,
        },
        wait(5000),
    ]);
}

#[test]
fn push_pull_with_clocks_at_the_top_is_harmless() {
    attack(vec![
        Step::PushPull {
            to: Target::Node(2),
            join: false,
            nodes: Vec::new(),
            state: Some(vassal_sim::hostile::fuzz::StateSel {
                ltime: LTime::Max,
                event_ltime: LTime::Max,
                query_ltime: LTime::Max,
                status_ltimes: vec![(Name::Honest(0), LTime::Max)],
                left_members: vec![Name::Honest(0)],
                events: Vec::new(),
            }),
        },
        wait(5000),
    ]);
}

// Issue 11, "remote abort": an ack whose coordinate is finite but huge.
#[test]
fn huge_coordinate_in_an_ack_is_refused() {
    attack(vec![
        Step::Coordinate {
            vec: [Float::Zero; 8],
            error: Float::Millis(1500),
            adjustment: Float::Zero,
            height: Float::Huge,
        },
        wait(10_000),
        Step::Coordinate {
            vec: [Float::Nan; 8],
            error: Float::Inf,
            adjustment: Float::NegHuge,
            height: Float::MaxFinite,
        },
        wait(10_000),
    ]);
}

// Issue 11, "remote shutdown": our own name claimed elsewhere, then a forged majority.
#[test]
fn forged_conflict_votes_do_not_make_a_node_quit() {
    attack(vec![
        Step::Alive {
            to: Target::Node(0),
            node: Name::Honest(0),
            incarnation: Incarnation::Known(1),
            at: AddrSel::Own,
            tag: None,
        },
        wait(200),
        Step::ForgeVotes {
            voters: 9,
            honest_names: false,
            claim: AddrSel::Own,
        },
        wait(10_000),
    ]);
}

// Issue 11, "resource exhaustion": queues are pruned to max_queue_depth.
#[test]
fn floods_are_pruned_to_the_queue_cap() {
    attack(vec![
        Step::Flood {
            to: Target::Node(0),
            count: 200,
            kind: FloodKind::Queries,
        },
        Step::Flood {
            to: Target::Node(1),
            count: 200,
            kind: FloodKind::UserEvents,
        },
        Step::Flood {
            to: Target::Node(2),
            count: 200,
            kind: FloodKind::JoinIntents,
        },
        wait(5000),
    ]);
}

// memberlist lets a node that left come back at another address with any incarnation (a new
// process, as Go's does). A forged leave (a dead from the node itself, at its incarnation)
// followed by an alive at the adversary's address once moved the honest node there on every
// peer; the node then saw its name claimed elsewhere, asked, and lost the vote 0 of 2: two
// packets per peer stopped a healthy node (Go memberlist/Serf take the same path). Vassal moves
// a left node only after LEFT_NODE_RECLAIM_TIME, by which time the node has refuted the leave.
#[test]
fn forged_leave_then_alive_elsewhere_does_not_hijack_a_node() {
    attack(vec![
        Step::Dead {
            to: Target::All,
            node: Name::Honest(1),
            incarnation: Incarnation::Known(0),
            from: Name::Honest(1),
        },
        Step::Alive {
            to: Target::All,
            node: Name::Honest(1),
            incarnation: Incarnation::Exact(0),
            at: AddrSel::Own,
            tag: None,
        },
        wait(10_000),
    ]);
}

// A forged leave intent about n1 told to n0 alone marks n1 `leaving` there. n1 refutes only if
// the intent's gossip reaches it; when it does not (four transmissions in a cluster this small,
// some to the silent adversary), push/pull never repairs it: n0 sends n1's status time as a
// join intent, which n1 takes for itself without re-announcing, and n1's own push/pull carries
// that same time, which n0 ignores as not newer. Go Serf merges the same way. Vassal lists a
// member alive again once it has been leaving for LEAVING_TIMEOUT while memberlist sees it alive.
#[test]
fn leave_intent_that_misses_its_subject_is_repaired() {
    attack(vec![
        wait(8000),
        Step::Flood {
            to: Target::All,
            count: 54,
            kind: FloodKind::LeaveIntents,
        },
        Step::Flood {
            to: Target::Node(2),
            count: 71,
            kind: FloodKind::Queries,
        },
        Step::LeaveIntent {
            to: Target::Node(0),
            node: Name::Honest(1),
            ltime: LTime::Clock(1),
            prune: false,
        },
    ]);
}

// A forged leave intent with prune about a live node, told to everyone: the node refutes with a
// join intent, but its peers erase it from Serf's member list once the prune delay has passed,
// and nothing adds it back while memberlist keeps it alive (found by the serf_cluster fuzz
// target; `force-leave -prune` is as unauthenticated in Go Serf). Vassal cancels a pending prune
// of a member that is alive again.
#[test]
fn leave_intent_with_prune_does_not_erase_a_live_node() {
    attack(vec![Step::LeaveIntent {
        to: Target::All,
        node: Name::Honest(1),
        ltime: LTime::Clock(1),
        prune: true,
    }]);
}
