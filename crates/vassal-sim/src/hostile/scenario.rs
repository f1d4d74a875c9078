//! One malicious node among honest ones for a stretch of simulated time (issue 11): it forges
//! suspects and deads about honest nodes (at the top incarnation and just above the one it
//! knows), alives for other names at its own address (honest names too, which starts their
//! name-conflict votes, and it forges votes), far-future Lamport times on user events, queries
//! and intents, floods of queries, and acks carrying absurd Vivaldi coordinates. Meanwhile honest
//! nodes send user events. [`run`] returns what happened; the test and `sim-bench adversary`
//! assert and print it.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vassal_memberlist::{Config as MlConfig, NodeStateKind};
use vassal_serf::{Event, MemberEventKind, MemberStatus};

use super::forge;
use super::{outside_addr, Adversary};
use crate::Sim;

/// The scenario's shape.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub seed: u64,
    /// Honest nodes.
    pub honest: usize,
    /// How long the adversary attacks.
    pub attack: Duration,
    /// One honest node sends a user event this often, throughout the attack.
    pub event_every: Duration,
    /// The adversary acts this often (each time: a handful of forgeries and a query flood).
    pub tick: Duration,
    /// Queries in each flood.
    pub flood: u32,
    /// After the attack the adversary falls silent for this long before the end state is read
    /// (verdicts and deliveries during it count too).
    pub quiet: Duration,
    /// Forge deads at incarnations the victim has reached (its own or a little above) too,
    /// not only far above them; such a dead is what an honest peer sends when its suspicion
    /// times out.
    pub credible_deads: bool,
    /// Put absurd coordinates (1e300, NaN, infinities) in the adversary's acks; off, it acks
    /// with the origin (to look at the other attacks on a core that still dies of these).
    pub absurd_coordinates: bool,
}

impl Scenario {
    /// Issue 11's figures: 100 honest nodes, 10 simulated minutes.
    pub fn issue_11(seed: u64) -> Self {
        Scenario {
            seed,
            honest: 100,
            attack: Duration::from_secs(600),
            event_every: Duration::from_secs(10),
            tick: Duration::from_millis(250),
            flood: 20,
            quiet: Duration::from_secs(60),
            absurd_coordinates: true,
            credible_deads: true,
        }
    }
}

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `member-failed` events an honest node raised about an honest node.
    pub false_failed: usize,
    /// `member-leave` events an honest node raised about an honest node (none left).
    pub false_left: usize,
    /// Honest nodes that stopped (lost a forged name-conflict vote).
    pub stopped: Vec<String>,
    /// Honest (observer, subject) pairs where the observer does not list the subject alive at
    /// the end (after the quiet time), in memberlist or in Serf.
    pub not_alive_at_end: Vec<(String, String)>,
    /// Honest user events delivered by honest nodes (once per node and event), and expected.
    pub events_delivered: usize,
    pub events_expected: usize,
    /// Deliveries of honest events beyond the first per node.
    pub events_duplicated: usize,
    pub honest_events: usize,
    /// Everything the adversary sent (packets and streams it opened).
    pub forged: u64,
    /// Forgeries by kind.
    pub suspects: u64,
    pub deads: u64,
    pub alives: u64,
    pub far_future: u64,
    pub queries: u64,
    pub votes: u64,
    /// The highest event and member clocks any honest node ended with.
    pub max_event_clock: u64,
    pub max_member_clock: u64,
    pub simulated: Duration,
    pub wall: Duration,
}

/// Runs the scenario. Honest nodes start converged ([`Sim::new_converged`]), with the
/// simulator's invariants checked after every step (an incarnation or clock that falls or
/// reaches the top panics).
pub fn run(s: Scenario) -> Report {
    let wall = Instant::now();
    let n = s.honest;
    let mut sim = Sim::new_converged(s.seed, n, |_| MlConfig::lan("n"));
    sim.check_invariants();
    sim.record_events();
    let mut adv = Adversary::new(&mut sim, "mallory", outside_addr(66, 7946));
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed ^ 0x6d616c6c6f7279);
    adv.join(&mut sim, 0);
    adv.run_for(&mut sim, Duration::from_secs(5));
    let mut report = Report::default();
    let start = sim.now();
    let end = start + s.attack;
    let mut next_event = start + s.event_every / 2;
    let mut sent: Vec<(Duration, String)> = Vec::new();
    let coordinates = [
        forge::coordinate_payload(&[0.0; 8], 1.5, 0.0, 1e300),
        forge::coordinate_payload(&[1e300; 8], 1.5, -1e300, 1e-5),
        forge::coordinate_payload(&[f64::NAN; 8], f64::INFINITY, 0.0, f64::MAX),
        forge::coordinate_payload(&[0.0; 8], 1.5, 0.0, 1e5),
    ];
    let mut tick = 0u64;
    let mut query_id = 0u32;
    while sim.now() < end {
        tick += 1;
        if s.absurd_coordinates {
            adv.ack_payload = Some(coordinates[(tick / 8) as usize % coordinates.len()].clone());
        }
        let victim = rng.gen_range(0..n);
        let victim_name = sim.name(victim).to_owned();
        let to = rng.gen_range(0..n);
        let known = sim
            .serf(to)
            .memberlist()
            .incarnation_of(&victim_name)
            .unwrap_or(0);
        let incarnation = match rng.gen_range(0..4) {
            0 => u32::MAX,
            1 => known.saturating_add(1),
            2 => known,
            _ => known.saturating_add(rng.gen_range(2..1000)),
        };
        let accuser = if rng.gen_bool(0.5) {
            adv.name.clone()
        } else {
            sim.name(rng.gen_range(0..n)).to_owned()
        };
        match tick % 4 {
            0 | 2 => {
                report.suspects += 1;
                adv.send(
                    &mut sim,
                    to,
                    &[forge::suspect(&victim_name, incarnation, &accuser)],
                );
            }
            1 => {
                report.deads += 1;
                // A dead at an incarnation the victim has reached reads like an honest verdict.
                let incarnation = if s.credible_deads || incarnation > known.saturating_add(1024) {
                    incarnation
                } else {
                    u32::MAX
                };
                adv.send(
                    &mut sim,
                    to,
                    &[forge::dead(&victim_name, incarnation, &accuser)],
                );
            }
            _ => {
                // Alives for other names at the adversary's own address: ghosts, and now and
                // then an honest name told to its owner (a name conflict, answered by a vote).
                report.alives += 1;
                let (name, dest) = if tick % 20 == 3 {
                    (victim_name.clone(), victim)
                } else {
                    (format!("ghost{}", rng.gen_range(0..16)), to)
                };
                let known = sim.serf(dest).memberlist().incarnation_of(&name);
                let inc = match rng.gen_range(0..3) {
                    0 => u32::MAX,
                    1 => rng.gen_range(1..=u32::MAX),
                    _ => known.unwrap_or(0).saturating_add(1),
                };
                let msg = forge::alive(&name, inc, adv.addr, forge::empty_tags(), adv.vsn);
                adv.send(&mut sim, dest, &[msg]);
            }
        }
        // Far-future Lamport times: a user event, a query, and intents about honest nodes.
        if tick.is_multiple_of(2) {
            report.far_future += 1;
            let serf = sim.serf(to);
            let far = |clock: u64, rng: &mut ChaCha8Rng| match rng.gen_range(0..3) {
                0 => u64::MAX - 1,
                1 => u64::MAX / 2,
                _ => clock.saturating_add(1 << 40),
            };
            let (event, member, query) = (
                far(serf.event_clock(), &mut rng),
                far(serf.member_clock(), &mut rng),
                far(serf.query_clock(), &mut rng),
            );
            let msg = match tick % 8 {
                0 => forge::user_event(event, &format!("evil{tick}"), b"x", false),
                2 => forge::leave_intent(member, &victim_name, false),
                4 => forge::join_intent(member, &victim_name),
                _ => {
                    let id = u32::MAX - tick as u32;
                    forge::query(&flood_query(
                        &adv,
                        query,
                        id,
                        u64::MAX,
                        forge::QUERY_FLAG_ACK,
                    ))
                }
            };
            adv.send_serf(&mut sim, to, msg);
        }
        // A query flood: fresh Lamport times just above the receiver's, each re-gossiped.
        let clock = sim.serf(to).query_clock();
        let msgs: Vec<Vec<u8>> = (0..s.flood)
            .map(|k| {
                query_id = query_id.wrapping_add(1);
                let q = flood_query(&adv, clock + 1 + k as u64, query_id, 5_000_000_000, 0);
                user(forge::query(&q))
            })
            .collect();
        report.queries += s.flood as u64;
        for chunk in msgs.chunks(32) {
            adv.send(&mut sim, to, chunk);
        }
        // Forged votes for every name-conflict query it sees.
        let conflicts: Vec<_> = adv
            .seen_queries()
            .iter()
            .filter(|q| q.name == "_serf_conflict")
            .cloned()
            .collect();
        for q in conflicts.iter().rev().take(1) {
            if let Some(asker) = sim.node_at(q.reply_to) {
                let name = String::from_utf8_lossy(&q.payload).into_owned();
                let body = forge::conflict_response(&name, adv.addr, adv.vsn);
                let votes: Vec<Vec<u8>> = (0..40)
                    .map(|k| {
                        user(forge::query_response(
                            q.ltime,
                            q.id,
                            &format!("voter{k}"),
                            0,
                            &body,
                        ))
                    })
                    .collect();
                report.votes += votes.len() as u64;
                adv.send(&mut sim, asker, &votes);
            }
        }
        // Honest traffic.
        if sim.now() >= next_event {
            let k = sent.len();
            let from = (k * 37) % n;
            let name = format!("honest{k}");
            if sim.is_up(from) {
                sim.user_event(from, &name, b"payload");
                sent.push((sim.now(), name));
            }
            next_event += s.event_every;
        }
        adv.run_for(&mut sim, s.tick);
    }

    // The adversary falls silent; whatever it did must heal.
    adv.silence();
    adv.run_for(&mut sim, s.quiet);

    // The figures.
    let honest_names: Vec<String> = (0..n).map(|i| sim.name(i).to_owned()).collect();
    for i in 0..n {
        if !sim.is_up(i) {
            report.stopped.push(honest_names[i].clone());
        }
        for (at, e) in sim.events(i) {
            match e {
                Event::Member(m) if *at >= start => {
                    let honest = m
                        .members
                        .iter()
                        .filter(|m| honest_names.contains(&m.name))
                        .count();
                    match m.kind {
                        MemberEventKind::Failed => report.false_failed += honest,
                        MemberEventKind::Leave => report.false_left += honest,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        for (_, name) in &sent {
            let got = sim
                .events(i)
                .iter()
                .filter(|(_, e)| matches!(e, Event::User(u) if &u.name == name))
                .count();
            report.events_delivered += usize::from(got > 0);
            report.events_duplicated += got.saturating_sub(1);
        }
        for (j, subject) in honest_names.iter().enumerate() {
            let ml_alive = sim.view(i, j) == Some(NodeStateKind::Alive);
            let serf_alive = sim
                .serf(i)
                .member(subject)
                .is_some_and(|m| m.status == MemberStatus::Alive);
            if !(ml_alive && serf_alive) {
                report
                    .not_alive_at_end
                    .push((honest_names[i].clone(), subject.clone()));
            }
        }
        report.max_event_clock = report.max_event_clock.max(sim.serf(i).event_clock());
        report.max_member_clock = report.max_member_clock.max(sim.serf(i).member_clock());
    }
    report.honest_events = sent.len();
    report.events_expected = sent.len() * n;
    report.forged = adv.forged;
    report.simulated = sim.now() - start;
    report.wall = wall.elapsed();
    report
}

fn flood_query(adv: &Adversary, ltime: u64, id: u32, timeout: u64, flags: u32) -> forge::Query {
    forge::Query {
        ltime,
        id,
        reply_to: adv.addr,
        source_node: adv.name.clone(),
        filters: Vec::new(),
        flags,
        relay_factor: 0,
        timeout,
        name: format!("flood{id}"),
        payload: Vec::new(),
    }
}

fn user(serf_msg: Vec<u8>) -> Vec<u8> {
    vassal_memberlist::wire::encode_message(&vassal_memberlist::wire::Message::User(serf_msg))
}
