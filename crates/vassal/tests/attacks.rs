//! Issue 11's network attacks, each sent by a test-side fake node (`vassal_testkit::fakenode`)
//! to real `vassal agent` processes, and checked the way a user would check them: the agent is
//! still running (`/proc`), the victim is `alive` in `vassal members` on every node, a later
//! ordinary `vassal event` reaches every node's handler and a `vassal query` is answered, and
//! memory (`VmHWM`) and CPU time (`utime + stime`) stay bounded.
//!
//! Where Go Serf (`/usr/bin/serf`, 0.9.4) survives the same packet (coordinate, forged conflict
//! answers, bomb, trickle), the same attack runs against it too, to show parity. Where Go falls
//! to it (eviction, silenced clocks), a comment says so and nothing is asserted about Go; its
//! exit on the lone conflict vote is asserted only to document it, because it is stable.
//!
//! They run `target/release/vassal` (build it first: `cargo build --release --bin vassal`).

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vassal_testkit::fakenode::{msg, proc_usage, trickle, FakeNode, Trickle};
use vassal_testkit::{hold_for, wait_until, GoSerf, Loopback, VassalAgent, VassalAgentBuilder};

/// How long a fresh cluster may take to list every member alive.
const CONVERGE: Duration = Duration::from_secs(15);
/// How long an event or query may take to reach every handler.
const DELIVER: Duration = Duration::from_secs(15);
/// How long a round trip through the agent's UDP socket may take.
const ROUND_TRIP: Duration = Duration::from_secs(5);
/// Well past the LAN suspicion timeout for a handful of nodes (4 s at n = 3, spec §3.5), and past
/// the conflict query's 3.2 s timeout (spec §4.7).
const VERDICT: Duration = Duration::from_secs(12);

/// The highest incarnation, where a refutation (`accused + 1`) used to wrap to 0.
const MAX_INCARNATION: u32 = u32::MAX;
/// The top of a Lamport clock, minus one so that a witness (`v + 1`) lands exactly on the top.
const TOP_LTIME: u64 = u64::MAX - 1;
/// Go Serf's `MaxQueueDepth`: the most messages one broadcast queue may hold (spec §4.14).
const MAX_QUEUE_DEPTH: u64 = 4096;

// ---- harness ------------------------------------------------------------------------------

/// Event handlers shared by every agent of a test: user events are appended, one
/// `NAME PAYLOAD` line each, to `<dir>/<node>.user`; the `ping` query is answered
/// `pong-<node>`.
struct Handlers {
    dir: tempfile::TempDir,
}

impl Handlers {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for handlers");
        let d = dir.path().display();
        fs::write(
            dir.path().join("user.sh"),
            format!("printf '%s %s\\n' \"$SERF_USER_EVENT\" \"$(cat)\" >> {d}/\"$SERF_SELF_NAME\".user\n"),
        )
        .unwrap();
        fs::write(
            dir.path().join("query.sh"),
            "cat > /dev/null\necho \"pong-$SERF_SELF_NAME\"\n",
        )
        .unwrap();
        Handlers { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// An agent `name` on `lo` running these handlers.
    fn agent(&self, name: &str, lo: &Loopback) -> VassalAgentBuilder {
        let d = self.dir.path().display();
        VassalAgent::builder(name, lo)
            .arg(&format!("-event-handler=user=/bin/sh {d}/user.sh"))
            .arg(&format!("-event-handler=query:ping=/bin/sh {d}/query.sh"))
    }

    /// An agent `name` on `lo` with the query handler only (so that floods of user events do
    /// not queue handler runs ahead of a query).
    fn query_agent(&self, name: &str, lo: &Loopback) -> VassalAgentBuilder {
        let d = self.dir.path().display();
        VassalAgent::builder(name, lo)
            .arg(&format!("-event-handler=query:ping=/bin/sh {d}/query.sh"))
    }

    /// The user events `node`'s handler has seen.
    fn user_events(&self, node: &str) -> String {
        fs::read_to_string(self.path(&format!("{node}.user"))).unwrap_or_default()
    }
}

/// Starts `names[0]`, then the others joining it, all with `handlers`, and waits until every
/// one lists all of them alive.
fn cluster(handlers: &Handlers, lo: &Loopback, names: &[&str]) -> Vec<VassalAgent> {
    cluster_with(handlers, lo, names, |b| b)
}

fn cluster_with(
    handlers: &Handlers,
    lo: &Loopback,
    names: &[&str],
    extra: impl Fn(VassalAgentBuilder) -> VassalAgentBuilder,
) -> Vec<VassalAgent> {
    let mut agents: Vec<VassalAgent> = Vec::new();
    for name in names {
        let mut b = extra(handlers.agent(name, lo));
        if let Some(first) = agents.first() {
            b = b.join(first.addr());
        }
        agents.push(b.spawn_ready());
    }
    for a in &agents {
        a.wait_alive_count(names.len(), CONVERGE);
    }
    agents
}

/// Runs `vassal COMMAND -format json` on `agent` and parses what it prints; an error names the
/// command, the agent and the output.
fn cli_json(agent: &VassalAgent, command: &str) -> Result<Value, String> {
    let run = agent.vassal_cli(&[command, "-format", "json"]);
    if run.code != 0 {
        return Err(format!(
            "vassal {command} on {}: {}",
            agent.name(),
            run.combined()
        ));
    }
    serde_json::from_str(&run.stdout)
        .map_err(|e| format!("vassal {command} -format json ({e}): {}", run.stdout))
}

/// `vassal members -format json` on `agent`: name → status.
fn statuses(agent: &VassalAgent) -> Result<BTreeMap<String, String>, String> {
    let v = cli_json(agent, "members")?;
    Ok(v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// `Ok` if every agent runs and lists `victim` alive.
fn victim_alive_everywhere(agents: &mut [VassalAgent], victim: &str) -> Result<(), String> {
    for a in agents.iter_mut() {
        if let Some(status) = a.exit_status() {
            return Err(format!(
                "{} exited with {status}; log tail:\n{}",
                a.name(),
                a.log_tail(30)
            ));
        }
    }
    for a in agents.iter() {
        let view = statuses(a)?;
        if view.get(victim).map(String::as_str) != Some("alive") {
            return Err(format!(
                "{} lists {victim} as {:?}; all: {view:?}",
                a.name(),
                view.get(victim)
            ));
        }
    }
    Ok(())
}

/// `vassal info -format json` on `agent`: the `serf` section.
fn serf_info(agent: &VassalAgent) -> Result<BTreeMap<String, String>, String> {
    let v = cli_json(agent, "info")?;
    Ok(v["serf"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect())
}

fn info_u64(agent: &VassalAgent, key: &str) -> u64 {
    let info = serf_info(agent).unwrap_or_else(|e| panic!("{e}"));
    info.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no numeric serf.{key} in `vassal info` of {}: {info:?}",
                agent.name()
            )
        })
}

/// `vassal event -coalesce=false NAME PAYLOAD` on `agent`; panics unless it is dispatched.
#[track_caller]
fn event(agent: &VassalAgent, name: &str, payload: &str) {
    let run = agent.vassal_cli(&["event", "-coalesce=false", name, payload]);
    assert!(
        run.code == 0 && run.stdout.contains("dispatched"),
        "`vassal event {name} {payload}` on {}: {}",
        agent.name(),
        run.combined()
    );
}

/// Waits until the user handler of every one of `agents` has seen `NAME PAYLOAD`.
#[track_caller]
fn wait_event_everywhere(handlers: &Handlers, agents: &mut [VassalAgent], line: &str) {
    let want = format!("{line}\n");
    wait_until(
        DELIVER,
        &format!("every handler to see user event `{line}`"),
        || {
            let mut missing = Vec::new();
            for a in agents.iter_mut() {
                a.assert_running();
                let seen = handlers.user_events(a.name());
                if !seen.contains(&want) {
                    missing.push(format!("{} saw {seen:?}", a.name()));
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join("\n"))
            }
        },
    )
}

/// `vassal query -format json ping` on `agent`; waits (retrying) until every one of `names`
/// answered `pong-NAME`.
#[track_caller]
fn wait_query_answered(agent: &mut VassalAgent, names: &[&str]) {
    let what = format!(
        "a `vassal query ping` on {} to be answered by {names:?}",
        agent.name()
    );
    wait_until(DELIVER, &what, || {
        agent.assert_running();
        let run = agent.vassal_cli(&["query", "-format", "json", "-timeout", "2s", "ping"]);
        if run.code != 0 {
            return Err(run.combined());
        }
        let v: Value = serde_json::from_str(&run.stdout)
            .map_err(|e| format!("query -format json ({e}): {}", run.stdout))?;
        let answered = names.iter().all(|n| {
            v["Responses"][*n]
                .as_str()
                .is_some_and(|p| p.trim() == format!("pong-{n}"))
        });
        if answered {
            Ok(())
        } else {
            Err(run.stdout)
        }
    })
}

/// One ordinary query right after an attack: it must be answered by all of `names` the first
/// time (a query that is silently dropped and only works on retry is what the attack does).
#[track_caller]
fn query_answered_once(agent: &mut VassalAgent, names: &[&str]) {
    agent.assert_running();
    let run = agent.vassal_cli(&["query", "-format", "json", "-timeout", "3s", "ping"]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| v["Responses"][**n].as_str().map(str::trim) != Some(&format!("pong-{n}")))
        .collect();
    assert!(
        run.code == 0 && missing.is_empty(),
        "`vassal query ping` on {} got no answer from {missing:?}: {}",
        agent.name(),
        run.combined()
    );
}

// ---- 1. remote abort ----------------------------------------------------------------------

/// Every component 1e300 seconds: finite (Go's only check is NaN/Inf), and far too large for a
/// `Duration`.
fn huge_coordinate() -> Vec<u8> {
    msg::coordinate(&[1e300; 8], 1.5, 1e300, 1e300)
}

/// Waits until the fake node has answered `n` of the agent's probes (with whatever payload it
/// is set to); `assert_running` panics as soon as the agent is gone.
#[track_caller]
fn wait_probed(fake: &FakeNode, n: u64, mut assert_running: impl FnMut()) {
    wait_until(
        Duration::from_secs(20),
        &format!("the agent to probe fake node {} {n} times", fake.name()),
        || {
            assert_running();
            match fake.pings_answered() {
                got if got >= n => Ok(()),
                got => Err(format!("{got} probes answered")),
            }
        },
    );
}

// A member answers our probes with an ack whose Vivaldi coordinate has height and vector
// 1e300 (spec §4.13): the coordinate is dropped, the agent keeps running, `vassal rtt`
// answers, and events and queries still flow.
#[test]
fn coordinate_ack_with_huge_height_does_not_abort_the_agent() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut a = h.agent("a", &lo).spawn_ready();
    let fake = FakeNode::builder("fake", &lo)
        .ack_payload(Some(huge_coordinate()))
        .start();
    fake.join(a.addr()).expect("fake node joins a");

    wait_probed(&fake, 3, || a.assert_running());
    hold_for(
        Duration::from_secs(3),
        "a to keep running and list fake alive",
        || victim_alive_everywhere(std::slice::from_mut(&mut a), "fake"),
    );

    // `vassal rtt fake` (to a, the default) finishes on its own, with an estimate or an error.
    let rtt = a.vassal_cli(&["rtt", "fake"]);
    assert!(rtt.code == 0 || rtt.code == 1, "vassal rtt fake: {rtt:?}");
    a.assert_running();

    event(&a, "after", "v1");
    wait_event_everywhere(&h, std::slice::from_mut(&mut a), "after v1");
    wait_query_answered(&mut a, &["a"]);
}

// Parity: Go Serf survives the same acks (it resets its coordinate when the update goes
// non-finite) and `serf rtt` still answers.
#[test]
fn go_serf_survives_the_same_coordinate_ack() {
    let lo = Loopback::fresh();
    let mut go = GoSerf::start("g", &lo);
    let fake = FakeNode::builder("fake", &lo)
        .ack_payload(Some(huge_coordinate()))
        .start();
    fake.join(go.addr()).expect("fake node joins g");
    wait_probed(&fake, 3, || go.assert_running());
    hold_for(Duration::from_secs(3), "Go agent g to keep running", || {
        if go.is_running() {
            Ok(())
        } else {
            Err(go.log_tail(30))
        }
    });
    let _ = go.cli(&["rtt", "fake"]);
    go.assert_running();
    go.wait_member_status("fake", "alive", Duration::from_secs(5));
}

// ---- 2. remote shutdown -------------------------------------------------------------------

// One unauthenticated `alive` claims a lone agent's name at another address (spec §3.3 rule 3,
// §4.10). The conflict query gets no answers; "0 of 0" is not a lost vote, so the agent keeps
// running as itself at its own address. (Go Serf 0.9.4 shuts down here: see the next test.)
#[test]
fn alive_claiming_a_lone_agents_name_does_not_shut_it_down() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut a = h.agent("a", &lo).spawn_ready();
    let mallory = FakeNode::start("mallory", &lo);
    let impostor = lo.addr();
    mallory.send(a.addr(), &[msg::alive("a", impostor, 1, &[0xff, 0x80])]);
    mallory.round_trip(a.addr(), "a", ROUND_TRIP);

    hold_for(VERDICT, "a to keep running and list itself alive", || {
        victim_alive_everywhere(std::slice::from_mut(&mut a), "a")
    });
    let view = a.vassal_cli(&["members", "-format", "json"]).stdout;
    assert!(
        view.contains(&format!("\"{}\"", a.addr())) && !view.contains(&impostor.to_string()),
        "a should list itself at {} only: {view}",
        a.addr()
    );
    event(&a, "after", "v1");
    wait_event_everywhere(&h, std::slice::from_mut(&mut a), "after v1");
    wait_query_answered(&mut a, &["a"]);
}

// Go Serf 0.9.4 counts "0 of 0" as a lost vote and exits on the same single packet. This
// documents the weakness Vassal fixes; it asserts Go's behaviour only because it is stable.
#[test]
fn go_serf_lone_agent_exits_on_an_alive_claiming_its_name() {
    let lo = Loopback::fresh();
    let mut go = GoSerf::start("g", &lo);
    let mallory = FakeNode::start("mallory", &lo);
    mallory.send(go.addr(), &[msg::alive("g", lo.addr(), 1, &[0xff, 0x80])]);
    wait_until(
        VERDICT,
        "Go agent g to exit after losing the 0-of-0 vote",
        || {
            if go.is_running() {
                Err(go.log_tail(10))
            } else {
                Ok(())
            }
        },
    );
}

// In a 3-node cluster, a member forges answers to the victim's `_serf_conflict` query: it names
// real members and made-up ones as `From`, says the impostor's address is the right one, but
// cannot know the query's ID (it guesses wrong). Answers are matched by query ID, so the forger
// casts no votes: a keeps running and stays alive everywhere. (Go checks the ID too: see next.)
#[test]
fn forged_conflict_answers_with_the_wrong_query_id_do_not_win_the_vote() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut agents = cluster(&h, &lo, &["a", "b", "c"]);
    let fake = FakeNode::start("fake", &lo);
    fake.join(agents[0].addr()).expect("fake node joins a");
    wait_until(CONVERGE, "every agent to list the fake node alive", || {
        for a in &agents {
            let view = statuses(a)?;
            if view.get("fake").map(String::as_str) != Some("alive") {
                return Err(format!("{} lists {view:?}", a.name()));
            }
        }
        Ok(())
    });

    let impostor = lo.addr();
    fake.send(
        agents[0].addr(),
        &[msg::alive("a", impostor, 1, &[0xff, 0x80])],
    );
    let q = fake.wait_query("_serf_conflict", Duration::from_secs(10));
    assert_eq!(
        (q.source_node.as_str(), q.payload.as_slice()),
        ("a", &b"a"[..]),
        "a's conflict query: {q:?}"
    );
    let to = q.reply_to.expect("conflict query has a reply address");
    let ballot = msg::conflict_response("a", impostor);
    let forged: Vec<Vec<u8>> = ["b", "c", "x1", "x2", "x3"]
        .iter()
        .map(|from| msg::query_response(q.ltime, q.id.wrapping_add(1), from, 0, &ballot))
        .collect();
    fake.send_each(to, &forged);

    hold_for(
        VERDICT,
        "a to keep running and stay alive on a, b and c",
        || victim_alive_everywhere(&mut agents, "a"),
    );
    event(&agents[1], "after", "v1");
    wait_event_everywhere(&h, &mut agents, "after v1");
    let all = ["a", "b", "c"];
    wait_query_answered(&mut agents[0], &all);
}

// Parity: Go Serf checks the query ID as well, so the same forged answers do not make a Go
// agent in a 3-node Go cluster lose its vote.
#[test]
fn go_serf_ignores_the_same_forged_conflict_answers() {
    let lo = Loopback::fresh();
    let g1 = GoSerf::start("g1", &lo);
    let mut gs = vec![g1];
    for name in ["g2", "g3"] {
        let g = GoSerf::builder(name, &lo).join(gs[0].addr()).spawn();
        gs.push(g);
    }
    let fake = FakeNode::start("fake", &lo);
    fake.join(gs[0].addr()).expect("fake node joins g1");
    for g in &gs {
        g.wait_all_alive(&["g1", "g2", "g3", "fake"], CONVERGE);
    }

    let impostor = lo.addr();
    fake.send(
        gs[0].addr(),
        &[msg::alive("g1", impostor, 1, &[0xff, 0x80])],
    );
    let q = fake.wait_query("_serf_conflict", Duration::from_secs(10));
    let to = q.reply_to.expect("conflict query has a reply address");
    let ballot = msg::conflict_response("g1", impostor);
    let forged: Vec<Vec<u8>> = ["g2", "g3", "x1", "x2", "x3"]
        .iter()
        .map(|from| msg::query_response(q.ltime, q.id.wrapping_add(1), from, 0, &ballot))
        .collect();
    fake.send_each(to, &forged);

    hold_for(
        VERDICT,
        "Go agent g1 to keep running and stay alive",
        || {
            for g in gs.iter_mut() {
                if !g.is_running() {
                    return Err(format!(
                        "{} exited; log tail:\n{}",
                        g.name(),
                        g.log_tail(20)
                    ));
                }
            }
            match gs[1].member_status("g1").as_deref() {
                Some("alive") => Ok(()),
                other => Err(format!("g2 lists g1 as {other:?}")),
            }
        },
    );
}

// ---- 3. permanent eviction ----------------------------------------------------------------

/// Sends `accusation` about b to a from a non-member, then checks b stays alive on every node
/// well past the suspicion timeout, and that a later event reaches every node.
fn accusation_does_not_evict(accusation: Vec<u8>) {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut agents = cluster(&h, &lo, &["a", "b", "c"]);
    let mallory = FakeNode::start("mallory", &lo);
    mallory.send(agents[0].addr(), &[accusation]);
    mallory.round_trip(agents[0].addr(), "a", ROUND_TRIP);

    hold_for(VERDICT, "b to stay alive on a, b and c", || {
        victim_alive_everywhere(&mut agents, "b")
    });
    event(&agents[0], "after", "v1");
    wait_event_everywhere(&h, &mut agents, "after v1");
    wait_query_answered(&mut agents[2], &["a", "b", "c"]);
}

// One `suspect` about healthy b at incarnation 2^32−1, in c's name (SWIM §4.2): far above
// anything b announced, so Vassal peers do not believe it (and b's refutation would saturate,
// not wrap). Go memberlist 0.2.2 has the hole: a Go cluster would evict b.
#[test]
fn suspect_at_max_incarnation_does_not_evict_a_healthy_node() {
    accusation_does_not_evict(msg::suspect("b", MAX_INCARNATION, "c"));
}

// The same with a `dead`, which would otherwise take b out at once.
#[test]
fn dead_at_max_incarnation_does_not_evict_a_healthy_node() {
    accusation_does_not_evict(msg::dead("b", MAX_INCARNATION, "c"));
}

// Found by the simulator's hostile node (crates/vassal-sim/tests/hostile.rs): a forged leave
// (a `dead` about b from b itself, at b's incarnation) then an `alive` for b at the forger's
// address. memberlist lets a left node come back anywhere, so every peer once moved b to the
// forger; b then saw its name claimed elsewhere, asked, and lost its own vote 0 of 2. Vassal
// moves a left node only after LEFT_NODE_RECLAIM_TIME, and b refutes the leave long before.
#[test]
fn forged_leave_then_alive_elsewhere_does_not_hijack_a_node() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut agents = cluster(&h, &lo, &["a", "b", "c"]);
    let mallory = FakeNode::start("mallory", &lo);
    let b_addr = agents[1].addr();
    // b has refuted nothing yet, so its incarnation is small: one of these is its own.
    let leaves: Vec<Vec<u8>> = (1..=3).map(|inc| msg::dead("b", inc, "b")).collect();
    let hijack = msg::alive("b", mallory.addr(), 1, &[0xff, 0x80]);
    for peer in [agents[0].addr(), agents[2].addr()] {
        mallory.send_each(peer, &leaves);
        mallory.send(peer, std::slice::from_ref(&hijack));
        mallory.round_trip(
            peer,
            if peer == agents[0].addr() { "a" } else { "c" },
            ROUND_TRIP,
        );
    }
    // A leave at b's real incarnation cannot be told from b's own without -encrypt: b may show
    // failed until its refutation spreads. It must come back, at its own address, and stay.
    let at_home = |agents: &mut [VassalAgent]| -> Result<(), String> {
        victim_alive_everywhere(agents, "b")?;
        for a in agents.iter() {
            let view = a.vassal_cli(&["members", "-format", "json"]).stdout;
            if view.contains(&mallory.addr().to_string()) {
                return Err(format!(
                    "{} lists b at the forger's address: {view}",
                    a.name()
                ));
            }
            if !view.contains(&b_addr.to_string()) {
                return Err(format!("{} does not list b at {b_addr}: {view}", a.name()));
            }
        }
        Ok(())
    };
    wait_until(CONVERGE, "b to refute the forged leave everywhere", || {
        at_home(&mut agents)
    });
    hold_for(
        VERDICT,
        "b to stay alive at its own address everywhere",
        || at_home(&mut agents),
    );
    event(&agents[1], "after", "v1");
    wait_event_everywhere(&h, &mut agents, "after v1");
}

// ---- 4. silenced events -------------------------------------------------------------------

/// Sends `marker` then `evil` in one compound from a non-member and waits until the marker
/// (an ordinary event) reaches a's handler: the evil part has then been read too.
fn send_after_marker(h: &Handlers, lo: &Loopback, a: &mut VassalAgent, evil: Vec<u8>) -> u64 {
    let marker_ltime = info_u64(a, "event_time") + 1;
    let mallory = FakeNode::start("mallory", lo);
    let marker = msg::user_event(marker_ltime, "marker", b"m", false);
    mallory.send(a.addr(), &[marker, evil]);
    wait_until(DELIVER, "a's handler to see the marker event", || {
        a.assert_running();
        let seen = h.user_events(a.name());
        if seen.contains("marker m\n") {
            Ok(())
        } else {
            Err(seen)
        }
    });
    marker_ltime
}

/// Starts c joining a after an attack on a and b, and waits until all three list each other.
fn late_joiner(h: &Handlers, lo: &Loopback, agents: &mut Vec<VassalAgent>) {
    let c = h.agent("c", lo).join(agents[0].addr()).spawn_ready();
    agents.push(c);
    for a in agents.iter() {
        a.wait_alive_count(3, CONVERGE);
    }
}

// One user event at LTime 2^64−2 (spec §4.4, §4.6) would move every clock to the top, where
// the next events wrap to 0 and are dropped as old, or below the minimum time of any node that
// joins later (or restarts from a snapshot). It is not credible (far ahead of our clock), so it
// is dropped: after it, c joins, and ordinary events from each node reach every handler.
// (Go Serf is silenced by it; nothing is asserted about Go.)
#[test]
fn user_event_at_the_top_of_the_clock_does_not_silence_later_events() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut agents = cluster(&h, &lo, &["a", "b"]);
    send_after_marker(
        &h,
        &lo,
        &mut agents[0],
        msg::user_event(TOP_LTIME, "evil", b"e", false),
    );
    late_joiner(&h, &lo, &mut agents);

    for (i, sender) in [0, 1, 2, 0].into_iter().enumerate() {
        let payload = format!("v{}", i + 1);
        event(&agents[sender], "deploy", &payload);
        wait_event_everywhere(&h, &mut agents, &format!("deploy {payload}"));
    }
}

// The same for queries (spec §4.7): one query at LTime 2^64−2, marked not to be rebroadcast,
// reaches a alone. Believed, it would put a's query clock at the top, where every query from
// b (LTime far below a's clock) is dropped as old, until a wraps. It is not credible, so it is
// dropped, and every later `vassal query`, from b first, is answered by both nodes the first
// time. (Go Serf has the same arithmetic; nothing is asserted about Go.)
#[test]
fn query_at_the_top_of_the_clock_does_not_silence_later_queries() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut agents = cluster(&h, &lo, &["a", "b"]);
    let a_addr = agents[0].addr();
    let fake = FakeNode::start("mallory", &lo);
    let qt = info_u64(&agents[0], "query_time");
    let mut marker = msg::Query::new(qt + 1, 1, "marker", fake.addr(), "mallory");
    marker.flags = 1; // ack requested: the ack tells us a read the packet
    let mut evil = msg::Query::new(TOP_LTIME, 2, "evil", fake.addr(), "mallory");
    evil.flags = 2; // not rebroadcast: only a's clock is at stake
    fake.send(a_addr, &[msg::query(&marker), msg::query(&evil)]);
    wait_until(DELIVER, "a to ack the marker query", || {
        let acks = fake.responses();
        if acks.iter().any(|r| r.id == 1 && r.from == "a") {
            Ok(())
        } else {
            Err(format!("{acks:?}"))
        }
    });

    for i in [1, 0, 1] {
        query_answered_once(&mut agents[i], &["a", "b"]);
    }
}

// The far-future event again, on an agent with `-snapshot` that is then killed and restarted
// from its snapshot (spec §5.3): the snapshot must not carry a clock that silences the agent
// after the restart. Events from both nodes reach both handlers afterwards.
#[test]
fn far_future_event_does_not_silence_a_restarted_snapshot_agent() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let snap = h.path("a.snap");
    let snap_arg = format!("-snapshot={}", snap.display());
    let mut agents = cluster_with(&h, &lo, &["a", "b"], |b| b.arg(&snap_arg));
    let marker = send_after_marker(
        &h,
        &lo,
        &mut agents[0],
        msg::user_event(TOP_LTIME, "evil", b"e", false),
    );
    // The writer flushes within 500 ms: wait until the marker's event clock is on disk.
    wait_until(
        DELIVER,
        "a's snapshot to record the marker's event clock",
        || {
            let text = fs::read_to_string(&snap).unwrap_or_default();
            let newest = text
                .lines()
                .filter_map(|l| l.strip_prefix("event-clock: "))
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .max();
            match newest {
                Some(t) if t >= marker => Ok(()),
                _ => Err(text),
            }
        },
    );

    agents[0].kill_9();
    let again = agents[0].builder_again();
    agents[0] = again.spawn_ready();
    for a in &agents {
        a.wait_alive_count(2, CONVERGE);
    }
    for (i, sender) in [1, 0, 1].into_iter().enumerate() {
        let payload = format!("r{}", i + 1);
        event(&agents[sender], "deploy", &payload);
        wait_event_everywhere(&h, &mut agents, &format!("deploy {payload}"));
    }
}

// The same for membership intents (spec §4.5): a forged leave intent about healthy b at LTime
// 2^64−2. Believed, it lists b as `leaving` at once and sets b's status time to the top: b's
// refutation moves its member clock past the top, where it wraps, and b's later graceful leave
// (at a small LTime) is then ignored as stale, so the others report b `failed` instead of
// `left` (both seen before the fix). It is not credible, so b stays alive throughout, and when
// it does leave, a and c both list it as left.
#[test]
fn leave_intent_at_the_top_of_the_clock_does_not_turn_a_later_leave_into_a_failure() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut agents = cluster(&h, &lo, &["a", "b", "c"]);
    let mallory = FakeNode::start("mallory", &lo);
    mallory.send(
        agents[0].addr(),
        &[msg::leave_intent(TOP_LTIME, "b", false)],
    );
    mallory.round_trip(agents[0].addr(), "a", ROUND_TRIP);
    hold_for(
        Duration::from_secs(3),
        "b to stay alive on a, b and c",
        || victim_alive_everywhere(&mut agents, "b"),
    );

    let status = agents[1].stop();
    assert!(status.success(), "b's graceful leave exited with {status}");
    for i in [0, 2] {
        let a = &agents[i];
        wait_until(DELIVER, &format!("{} to list b as left", a.name()), || {
            let view = statuses(a)?;
            match view.get("b").map(String::as_str) {
                Some("left") => Ok(()),
                _ => Err(format!("{view:?}")),
            }
        });
    }
}

// ---- 5. decompression bomb ----------------------------------------------------------------

/// Just under the old 40 MiB cap, so an unbounded (or 40 MiB-bounded) decoder inflates it all.
const BOMB_LEN: usize = 39 << 20;

// One ~19 KB datagram that LZW-decompresses to 39 MiB (spec §2.7), sent ten times: a UDP packet
// may only decompress to a small bound, so the agent's peak memory (`VmHWM`) grows by less than
// 20 MiB, and it still answers pings, events and queries.
#[test]
fn decompression_bomb_keeps_memory_bounded() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut a = h.agent("a", &lo).spawn_ready();
    let mallory = FakeNode::start("mallory", &lo);
    let bomb = msg::lzw_bomb(BOMB_LEN);
    assert!(bomb.len() < 24_000, "bomb is {} bytes", bomb.len());
    mallory.round_trip(a.addr(), "a", ROUND_TRIP);
    let before = proc_usage(a.pid()).unwrap();

    for _ in 0..10 {
        mallory.send_raw(a.addr(), &bomb);
        mallory.round_trip(a.addr(), "a", ROUND_TRIP);
    }
    a.assert_running();
    let after = proc_usage(a.pid()).unwrap();
    let grew_kib = after.peak_rss_kib.saturating_sub(before.peak_rss_kib);
    eprintln!("before {before:?}, after {after:?}: peak grew {grew_kib} KiB");
    assert!(
        grew_kib < 20 << 10,
        "peak RSS grew by {grew_kib} KiB (before {before:?}, after {after:?}) from ten {}-byte \
         datagrams",
        bomb.len()
    );
    event(&a, "after", "v1");
    wait_event_everywhere(&h, std::slice::from_mut(&mut a), "after v1");
    wait_query_answered(&mut a, &["a"]);
}

// Parity: Go Serf 0.9.4 inflates the bomb in full (memberlist 0.2.2 has no cap) but survives
// it and keeps answering.
#[test]
fn go_serf_survives_the_same_decompression_bomb() {
    let lo = Loopback::fresh();
    let mut go = GoSerf::start("g", &lo);
    let mallory = FakeNode::start("mallory", &lo);
    let bomb = msg::lzw_bomb(BOMB_LEN);
    for _ in 0..3 {
        mallory.send_raw(go.addr(), &bomb);
        mallory.round_trip(go.addr(), "g", Duration::from_secs(10));
    }
    go.assert_running();
    go.wait_member_status("g", "alive", Duration::from_secs(5));
}

// ---- 6. trickled push/pull ----------------------------------------------------------------

/// Four streams, each a large well-formed push/pull dribbled 64 bytes per millisecond for up to
/// 14 s: decoding must not restart from the first byte on every read, and the agent must cut
/// each stream at its read deadline (Go: `TCPTimeout`, 10 s on LAN).
const TRICKLE: Trickle = Trickle {
    chunk: 64,
    interval: Duration::from_millis(1),
    max_duration: Duration::from_secs(14),
};
const TRICKLE_STREAMS: usize = 4;
/// When the agent must have closed a trickled stream (10 s deadline plus slack).
const TRICKLE_CUT: Duration = Duration::from_secs(13);
/// CPU time the agent may spend on all four trickles together.
const TRICKLE_CPU: Duration = Duration::from_secs(3);

/// Trickles [`TRICKLE_STREAMS`] push/pulls into `to` at once; returns how long each stayed open
/// and the CPU `pid` spent meanwhile.
fn trickle_attack(pid: u32, to: SocketAddr) -> (Vec<Option<Duration>>, Duration, Vec<usize>) {
    let payloads: Vec<Vec<u8>> = (0..TRICKLE_STREAMS)
        .map(|i| msg::big_push_pull(&format!("t{i}-"), 20_000, to.ip()))
        .collect();
    let before = proc_usage(pid).unwrap();
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = payloads
            .iter()
            .map(|p| s.spawn(move || trickle(to, p, TRICKLE)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = proc_usage(pid).unwrap();
    let reports: Vec<_> = reports
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("trickle to {to}: {e}")))
        .collect();
    (
        reports.iter().map(|r| r.closed_after).collect(),
        after.cpu.saturating_sub(before.cpu),
        reports.iter().map(|r| r.sent).collect(),
    )
}

#[test]
fn trickled_push_pulls_cost_little_cpu_and_are_cut_at_the_deadline() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut a = h.agent("a", &lo).spawn_ready();
    let (closed, cpu, sent) = trickle_attack(a.pid(), a.addr());
    eprintln!("vassal: {cpu:?} of CPU; streams closed after {closed:?}; {sent:?} bytes sent");
    a.assert_running();
    assert!(
        cpu < TRICKLE_CPU,
        "the agent spent {cpu:?} of CPU on {TRICKLE_STREAMS} trickled push/pulls ({sent:?} bytes \
         sent); limit {TRICKLE_CPU:?}"
    );
    assert!(
        closed.iter().all(|c| c.is_some_and(|d| d <= TRICKLE_CUT)),
        "every trickled stream should be closed by the agent within {TRICKLE_CUT:?}: {closed:?}"
    );
    event(&a, "after", "v1");
    wait_event_everywhere(&h, std::slice::from_mut(&mut a), "after v1");
    wait_query_answered(&mut a, &["a"]);
}

// Parity: Go reads streams with a streaming decoder and a 10 s deadline.
#[test]
fn go_serf_cuts_the_same_trickles_cheaply() {
    let lo = Loopback::fresh();
    let mut go = GoSerf::start("g", &lo);
    let (closed, cpu, sent) = trickle_attack(go.pid(), go.addr());
    eprintln!("go: {cpu:?} of CPU; streams closed after {closed:?}; {sent:?} bytes sent");
    go.assert_running();
    assert!(
        cpu < TRICKLE_CPU,
        "Go spent {cpu:?} of CPU on the trickles ({sent:?} bytes sent)"
    );
    assert!(
        closed.iter().all(|c| c.is_some_and(|d| d <= TRICKLE_CUT)),
        "Go should close every trickled stream within {TRICKLE_CUT:?}: {closed:?}"
    );
}

// ---- 7. endless queries and floods --------------------------------------------------------

/// How many of each message the flood sends: more than [`MAX_QUEUE_DEPTH`].
const FLOOD: u64 = 6000;

// A query whose `Timeout` is u64::MAX ns (and one at i64::MAX), then thousands of user events,
// queries and join intents with distinct LTimes from a non-member, into a lone agent that
// therefore cannot gossip them away: its broadcast queues are pruned to 4096 (Go's
// MaxQueueDepth) within a few seconds and stay there, it stays cheap to run, and a later query
// from the CLI is answered.
#[test]
fn endless_queries_and_floods_keep_queues_bounded() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let mut a = h.query_agent("a", &lo).spawn_ready();
    let fake = FakeNode::start("mallory", &lo);
    let (et, qt, mt) = (
        info_u64(&a, "event_time"),
        info_u64(&a, "query_time"),
        info_u64(&a, "member_time"),
    );

    // Go's `Timeout` is an int64: u64::MAX does not fit (an agent may refuse that query as
    // malformed), i64::MAX (292 years) does, and must be accepted and bounded.
    let mut endless = msg::Query::new(qt + 1, 1, "endless", fake.addr(), "mallory");
    endless.timeout_ns = u64::MAX;
    endless.flags = 1;
    let mut endless_signed = msg::Query::new(qt + 2, 2, "endless", fake.addr(), "mallory");
    endless_signed.timeout_ns = i64::MAX as u64;
    endless_signed.flags = 1;
    fake.send(
        a.addr(),
        &[msg::query(&endless), msg::query(&endless_signed)],
    );
    wait_until(DELIVER, "a to ack the i64::MAX-timeout query", || {
        a.assert_running();
        let acks = fake.responses();
        if acks.iter().any(|r| r.id == 2 && r.from == "a") {
            Ok(())
        } else {
            Err(format!("{acks:?}"))
        }
    });

    let nobody = msg::node_filter(&["nobody"]);
    let mut flood: Vec<Vec<u8>> = Vec::new();
    for i in 0..FLOOD {
        flood.push(msg::user_event(
            et + 1 + i,
            "flood",
            i.to_string().as_bytes(),
            false,
        ));
        let mut q = msg::Query::new(qt + 3 + i, 3 + i as u32, "flood", fake.addr(), "mallory");
        q.filters = vec![nobody.clone()];
        q.timeout_ns = i64::MAX as u64;
        flood.push(msg::query(&q));
        flood.push(msg::join_intent(mt + 1 + i, &format!("ghost-{i}")));
    }
    for chunk in flood.chunks(200) {
        fake.send(a.addr(), &[msg::compound(chunk)]);
        // Pace the attacker so the agent's socket buffer does not drop the flood.
        std::thread::sleep(Duration::from_millis(5));
    }
    fake.round_trip(a.addr(), "a", ROUND_TRIP);
    let witnessed = info_u64(&a, "event_time");
    assert!(
        witnessed >= et + FLOOD,
        "the flood did not land: event_time {witnessed}, expected ≥ {}",
        et + FLOOD
    );

    let queues = |a: &VassalAgent| -> Result<String, String> {
        let info = serf_info(a)?;
        let depth = |k: &str| {
            info.get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        let seen = format!(
            "intent_queue {} event_queue {} query_queue {}",
            depth("intent_queue"),
            depth("event_queue"),
            depth("query_queue")
        );
        if ["intent_queue", "event_queue", "query_queue"]
            .iter()
            .all(|k| depth(k) <= MAX_QUEUE_DEPTH)
        {
            Ok(seen)
        } else {
            Err(seen)
        }
    };
    wait_until(
        Duration::from_secs(5),
        &format!("a's broadcast queues to be pruned to {MAX_QUEUE_DEPTH}"),
        || queues(&a),
    );
    let before = proc_usage(a.pid()).unwrap();
    hold_for(Duration::from_secs(3), "the queues to stay pruned", || {
        victim_alive_everywhere(std::slice::from_mut(&mut a), "a")?;
        queues(&a).map(|_| ())
    });
    let cpu = proc_usage(a.pid()).unwrap().cpu.saturating_sub(before.cpu);
    assert!(
        cpu < Duration::from_millis(1500),
        "the idle agent spent {cpu:?} of CPU in 3 s after the flood"
    );
    query_answered_once(&mut a, &["a"]);
}

// ---- 8. snapshot injection ----------------------------------------------------------------

// A member whose name holds a newline and a whole `alive:` record joins an agent running with
// `-snapshot` (spec §5.3). Names with control characters are refused, so the snapshot gets no
// injected line, no member with such a name is listed, and after a restart from the snapshot
// the agent never dials the injected address (a listener of ours standing in for
// 127.0.0.1:22).
#[test]
fn member_name_with_a_newline_cannot_inject_snapshot_lines() {
    let h = Handlers::new();
    let lo = Loopback::fresh();
    let snap = h.path("a.snap");
    let mut a = h
        .agent("a", &lo)
        .arg(&format!("-snapshot={}", snap.display()))
        .spawn_ready();
    let trap = TcpListener::bind(lo.addr()).expect("binding the trap listener");
    trap.set_nonblocking(true).unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let evil_name = format!("evil\nalive: x {trap_addr}\n#");

    let evil = FakeNode::start(&evil_name, &lo);
    // Refusing the join is one right answer; joining without the name reaching the file is
    // another. Either way, what matters is below.
    let _ = evil.join(a.addr());
    let good = FakeNode::start("good", &lo);
    good.join(a.addr()).expect("an ordinary node joins a");
    wait_until(DELIVER, "a's snapshot to record the good node", || {
        let text = fs::read_to_string(&snap).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("alive: good ")) {
            Ok(())
        } else {
            Err(text)
        }
    });

    let text = fs::read_to_string(&snap).unwrap();
    assert!(
        !text.lines().any(|l| l.starts_with("alive: x ")),
        "the snapshot has an injected record:\n{text}"
    );
    let view = statuses(&a).unwrap();
    assert!(
        !view.keys().any(|n| n.chars().any(char::is_control)),
        "a lists a member whose name has control characters: {view:?}"
    );

    // Restart from the snapshot with every recorded member gone, so the agent tries them all.
    a.kill_9();
    drop((evil, good));
    let mut a = a.builder_again().spawn_ready();
    hold_for(
        Duration::from_secs(6),
        "the restarted agent not to dial the injected address",
        || {
            victim_alive_everywhere(std::slice::from_mut(&mut a), "a")?;
            match trap.accept() {
                Ok((_conn, from)) => Err(format!(
                    "a dialled {trap_addr} from {from}; snapshot:\n{}",
                    fs::read_to_string(&snap).unwrap_or_default()
                )),
                Err(_) => Ok(()),
            }
        },
    );
    event(&a, "after", "v1");
    wait_event_everywhere(&h, std::slice::from_mut(&mut a), "after v1");
}
