//! Scale benchmarks over the simulator, printing figures (not timed tests).
//!
//! ```text
//! cargo run --release -p vassal-sim --bin sim-bench -- [broadcast N [joined|converged] | detect N | false-positives | events N | adversary [N [SECS [FLOOD]]] | all]
//! ```
//! `broadcast` starts from real joins up to 2,000 nodes and from pre-filled tables above
//! ([`Sim::new_converged`]); the optional third word picks either.
//! All runs use memberlist's LAN defaults; the network has 0.2–2 ms one-way latency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vassal_memberlist::{Config, NodeStateKind};
use vassal_serf::MemberEventKind;
use vassal_sim::Sim;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let what = args.first().map(String::as_str).unwrap_or("all");
    let n = |default: usize| args.get(1).and_then(|s| s.parse().ok()).unwrap_or(default);
    match what {
        "broadcast" => {
            let n = n(1000);
            let start = match args.get(2) {
                None => Start::default_for(n),
                Some(s) => Start::parse(s).unwrap_or_else(|| {
                    eprintln!("unknown start {s}: use joined or converged");
                    std::process::exit(2);
                }),
            };
            broadcast(seed, n, start)
        }
        "detect" => detect(seed, n(100)),
        "false-positives" => false_positives(seed),
        "events" => events(seed, n(100)),
        "adversary" => {
            let secs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(600);
            let flood = args.get(3).and_then(|s| s.parse().ok());
            adversary(seed, n(100), secs, flood)
        }
        "all" => {
            broadcast(seed, 1000, Start::Joined);
            broadcast(seed, 10_000, Start::Converged);
            detect(seed, 100);
            detect(seed, 1000);
            false_positives(seed);
            events(seed, 100);
            events(seed, 1000);
            adversary(seed, 100, 600, None);
        }
        other => {
            eprintln!(
                "unknown benchmark {other}; use broadcast N [joined|converged] | detect N | false-positives | events N | adversary [N [SECS [FLOOD]]] | all"
            );
            std::process::exit(2);
        }
    }
}

/// Builds an `n`-node LAN cluster and runs it until every node sees every other alive and the
/// join gossip has died down.
fn converged_cluster(seed: u64, n: usize) -> (Sim, Duration) {
    let wall = Instant::now();
    let mut sim = Sim::new(seed, n, |_| Config::lan("n"));
    // Joins spread over time, as real nodes start.
    for i in 1..n {
        sim.join(i, 0);
        if i % 10 == 0 {
            sim.run_for(Duration::from_millis(20));
        }
    }
    let t = sim.run_until_cond_every(
        Duration::from_secs(600),
        Duration::from_millis(500),
        Sim::converged,
    );
    assert!(
        t.is_some(),
        "{n} nodes did not converge in 600 simulated seconds (SIM_SEED={seed})"
    );
    // Let join broadcasts (memberlist's and Serf's intents) finish so they do not share packets
    // with the measured one.
    sim.run_until_cond_every(Duration::from_secs(120), Duration::from_millis(100), |s| {
        (0..s.len()).all(|i| {
            let serf = s.serf(i);
            serf.memberlist().queued_broadcasts() == 0 && serf.intent_queue_len() == 0
        })
    });
    (sim, wall.elapsed())
}

/// How a benchmark cluster comes to be converged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Every node joins through node 0 (real push/pulls, real join gossip).
    Joined,
    /// Every node starts with a full, shared table ([`Sim::new_converged`]): no joins simulated.
    Converged,
}

impl Start {
    /// Real joins up to 2,000 nodes; above that each node's own copy of the table would not fit.
    fn default_for(n: usize) -> Start {
        if n <= 2000 {
            Start::Joined
        } else {
            Start::Converged
        }
    }

    fn parse(s: &str) -> Option<Start> {
        match s {
            "joined" => Some(Start::Joined),
            "converged" => Some(Start::Converged),
            _ => None,
        }
    }
}

/// A converged cluster that starts with every table pre-filled, then runs the real protocol for
/// one push/pull interval, so that every node's first push/pull (staggered over that interval
/// from start) is behind it and all timers run at their steady pace.
fn preconverged_cluster(seed: u64, n: usize) -> (Sim, Duration) {
    let wall = Instant::now();
    let config = Config::lan("n");
    let warm_up = config.push_pull_interval;
    let mut sim = Sim::new_converged(seed, n, |_| config.clone());
    sim.run_for(warm_up);
    sim.run_until_cond_every(Duration::from_secs(120), Duration::from_millis(100), |s| {
        (0..s.len()).all(|i| {
            let serf = s.serf(i);
            serf.memberlist().queued_broadcasts() == 0 && serf.intent_queue_len() == 0
        })
    });
    // Every node up and seeing n alive nodes is every node seeing every other alive (the O(n²)
    // name look-ups of `Sim::converged` take a minute at 10,000 nodes).
    let lost = (0..n).find(|&i| !up_and_sees_all(&sim, i, n));
    assert!(
        lost.is_none(),
        "the pre-converged {n}-node cluster lost a member during its warm-up: n{} sees {} alive (SIM_SEED={seed})",
        lost.unwrap_or(0),
        sim.serf(lost.unwrap_or(0)).memberlist().num_alive()
    );
    (sim, wall.elapsed())
}

fn up_and_sees_all(sim: &Sim, i: usize, n: usize) -> bool {
    sim.is_up(i) && sim.serf(i).memberlist().num_alive() == n
}

fn broadcast(seed: u64, n: usize, start: Start) {
    let (mut sim, setup) = match start {
        Start::Joined => converged_cluster(seed, n),
        Start::Converged => preconverged_cluster(seed, n),
    };
    let hwm_setup = peak_rss();
    let t0 = sim.now();
    let wall = Instant::now();
    let cpu0 = cpu_time();
    sim.set_tags(0, BTreeMap::from([("v".to_string(), "2".to_string())]));
    let seen = |s: &Sim, i: usize| {
        s.serf(i)
            .member("n0")
            .is_some_and(|m| m.tags.get("v").is_some_and(|v| v == "2"))
    };
    // Nodes holding the update, the sender included; 99.99 % is ceil(0.9999 n) of them.
    let target_9999 = (n * 9999).div_ceil(10_000);
    let mut has = vec![false; n];
    has[0] = true;
    let mut count = 1;
    let mut t_9999 = None;
    // A step changes only the node it was for, so each step checks that one node.
    let t_all = sim.run_until_cond(Duration::from_secs(60), |s| {
        if let Some(i) = s.last_node().filter(|&i| !has[i] && seen(s, i)) {
            has[i] = true;
            count += 1;
        }
        if count >= target_9999 && t_9999.is_none() {
            t_9999 = Some(s.now());
        }
        count == n
    });
    let measure = wall.elapsed();
    let cpu = cpu_time();
    let fmt = |t: Option<Duration>| {
        t.map_or("not reached".to_string(), |t| {
            format!("{:.2} s", (t - t0).as_secs_f64())
        })
    };
    let how = match start {
        Start::Joined => "every node joined through node 0 (real joins)".to_string(),
        Start::Converged => format!(
            "pre-converged: tables pre-filled as after a completed push/pull, no joins simulated, then {} s of real protocol before the broadcast",
            Config::lan("n").push_pull_interval.as_secs()
        ),
    };
    let hwm = peak_rss();
    println!("broadcast n={n} (SIM_SEED={seed}); start: {how}");
    println!(
        "  one tag change from n0 reached 99.99% ({target_9999} of {n} nodes) in {}, 100% in {}",
        fmt(t_9999),
        fmt(t_all),
    );
    let node_secs = |d: Duration| d.as_secs_f64() * n as f64;
    println!(
        "  wall: setup {:.1} s ({:.1} simulated s), broadcast {:.1} s ({:.2} simulated s); {:.0} simulated node-s per wall s overall, {:.0} during the broadcast",
        setup.as_secs_f64(),
        t0.as_secs_f64(),
        measure.as_secs_f64(),
        (sim.now() - t0).as_secs_f64(),
        node_secs(sim.now()) / (setup + measure).as_secs_f64(),
        node_secs(sim.now() - t0) / measure.as_secs_f64(),
    );
    println!(
        "  CPU (one core): {:.1} s in all, {:.1} s for the broadcast; {:.0} simulated node-s per CPU s overall, {:.0} during the broadcast",
        cpu.as_secs_f64(),
        (cpu - cpu0).as_secs_f64(),
        node_secs(sim.now()) / cpu.as_secs_f64(),
        node_secs(sim.now() - t0) / (cpu - cpu0).as_secs_f64(),
    );
    println!(
        "  peak RSS (VmHWM) {} after setup, {} at the end: {:.0} bytes per node pair",
        mib(hwm_setup),
        mib(hwm),
        hwm.unwrap_or(0) as f64 / (n as f64 * n as f64),
    );
}

/// The process's peak resident set size in bytes (`VmHWM` in /proc/self/status), if readable.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time this (single-threaded) process has run, from /proc/self/schedstat; zero if unreadable.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("unknown".into(), |b| format!("{} MiB", b / (1024 * 1024)))
}

/// User-event and query latency to 100 % of an `n`-node cluster.
fn events(seed: u64, n: usize) {
    let (mut sim, _) = converged_cluster(seed, n);
    sim.record_events();
    sim.auto_respond();
    let t0 = sim.now();
    sim.user_event(0, "deploy", b"v1");
    let all_got_it = |s: &Sim| (0..s.len()).all(|i| s.user_events_named(i, "deploy") == 1);
    let ev = sim.run_until_cond(Duration::from_secs(60), all_got_it);
    let t1 = sim.now();
    let ltime = sim.query(0, "load", &vassal_serf::QueryParams::default());
    let q = sim.run_until_cond(Duration::from_secs(60), |s| {
        s.query_results(0, ltime).responses.len() == s.len()
    });
    let fmt = |t: Option<Duration>, from: Duration| {
        t.map_or("not reached".into(), |t| {
            format!("{:.2} s", (t - from).as_secs_f64())
        })
    };
    println!(
        "events n={n}: user event at 100% of nodes in {}; query answered by 100% in {} (SIM_SEED={seed})",
        fmt(ev, t0),
        fmt(q, t1)
    );
}

fn detect(seed: u64, n: usize) {
    let (mut sim, _) = converged_cluster(seed, n);
    sim.record_events();
    let victim = n / 2;
    let t0 = sim.now();
    sim.crash(victim);
    let name = sim.name(victim).to_string();
    let all = sim.run_until_cond(Duration::from_secs(300), |s| {
        (0..s.len())
            .filter(|&i| i != victim)
            .all(|i| matches!(s.view(i, victim), Some(NodeStateKind::Dead) | None))
    });
    let mut firsts: Vec<Duration> = (0..n)
        .filter(|&i| i != victim)
        .filter_map(|i| sim.first_event(i, MemberEventKind::Failed, &name, t0))
        .map(|t| t - t0)
        .collect();
    firsts.sort();
    let pct = |p: f64| {
        firsts
            .get(((firsts.len() as f64 - 1.0) * p) as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64())
    };
    println!(
        "detect n={n}: first member-failed after {:.2} s, median {:.2} s, all {} nodes by {} (SIM_SEED={seed})",
        pct(0.0),
        pct(0.5),
        firsts.len(),
        all.map_or("never".into(), |t| format!("{:.2} s", (t - t0).as_secs_f64())),
    );
}

fn false_positives(seed: u64) {
    let n = 100;
    let minutes = Duration::from_secs(600);

    let (mut sim, _) = converged_cluster(seed, n);
    sim.network.loss = 0.05;
    sim.record_events();
    let t0 = sim.now();
    sim.run_for(minutes);
    let (verdicts, nodes) = count_failed(&sim, t0);
    println!("false failures n={n}, 5% loss, 10 min: {verdicts} member-failed verdicts about {nodes} distinct live nodes");

    stall_scenario(
        seed,
        n,
        minutes,
        Duration::from_secs(3),
        Duration::from_secs(30),
        "false failures",
    );
    // Control: a stall longer than the suspicion timeout (8-48 s at n=100) must be reported,
    // which shows the counter above can see failures at all.
    stall_scenario(
        seed,
        n,
        minutes,
        Duration::from_secs(60),
        Duration::from_secs(120),
        "control (real failures)",
    );
}

fn stall_scenario(
    seed: u64,
    n: usize,
    total: Duration,
    stall: Duration,
    every: Duration,
    label: &str,
) {
    let (mut sim, _) = converged_cluster(seed, n);
    sim.record_events();
    let t0 = sim.now();
    let wall = Instant::now();
    let staller = 17;
    while sim.now() < t0 + total {
        sim.pause(staller, stall);
        sim.run_for(every);
    }
    let (verdicts, nodes) = count_failed(&sim, t0);
    println!(
        "{label} n={n}, one node stalls {stall:?} every {every:?}, {:?}: {verdicts} member-failed verdicts about {nodes} distinct nodes | {:.0} node-s per wall s",
        total,
        n as f64 * (sim.now() - t0).as_secs_f64() / wall.elapsed().as_secs_f64(),
    );
}

/// Member-failed events raised since `t0` (every node is up, so each is false).
fn count_failed(sim: &Sim, t0: Duration) -> (usize, usize) {
    let mut subjects = std::collections::BTreeSet::new();
    let mut verdicts = 0;
    for i in 0..sim.len() {
        for (at, e) in sim.events(i) {
            if let vassal_serf::Event::Member(m) = e {
                if *at >= t0 && m.kind == MemberEventKind::Failed {
                    verdicts += m.members.len();
                    subjects.extend(m.members.iter().map(|m| m.name.clone()));
                }
            }
        }
    }
    (verdicts, subjects.len())
}

/// One malicious node among `n` honest ones for `secs` simulated seconds (issue 11): figures
/// for `bench/RESULTS.md`; `tests/adversary.rs` asserts the same run.
fn adversary(seed: u64, n: usize, secs: u64, flood: Option<u32>) {
    use vassal_sim::hostile::scenario::{self, Scenario};
    let base = Scenario::issue_11(seed);
    let s = Scenario {
        honest: n,
        attack: Duration::from_secs(secs),
        flood: flood.unwrap_or(base.flood),
        credible_deads: std::env::var("CREDIBLE_DEADS").map_or(true, |v| v != "0"),
        ..base
    };
    let cpu0 = cpu_time();
    let r = scenario::run(s);
    let cpu = cpu_time() - cpu0;
    println!(
        "adversary: 1 malicious node among {n} honest, {secs} simulated s (SIM_SEED={seed}); every {:?} it forges a suspect, dead or alive and a flood of {} queries, every other tick a far-future LTime",
        s.tick, s.flood
    );
    println!(
        "  forged: {} packets and streams ({} suspects, {} deads, {} alives, {} far-future LTimes, {} flood queries, {} conflict votes)",
        r.forged, r.suspects, r.deads, r.alives, r.far_future, r.queries, r.votes
    );
    println!(
        "  false member-failed verdicts about honest nodes: {}; false member-leave: {}; honest nodes stopped: {}; honest pairs not alive at the end: {}",
        r.false_failed,
        r.false_left,
        r.stopped.len(),
        r.not_alive_at_end.len()
    );
    println!(
        "  honest user events: {} sent, delivered {} of {} (node, event) pairs, {} duplicate deliveries",
        r.honest_events, r.events_delivered, r.events_expected, r.events_duplicated
    );
    println!(
        "  highest honest clocks at the end: member {}, event {}",
        r.max_member_clock, r.max_event_clock
    );
    println!(
        "  wall {:.1} s, CPU {:.1} s for {:.0} simulated s",
        r.wall.as_secs_f64(),
        cpu.as_secs_f64(),
        r.simulated.as_secs_f64()
    );
}
