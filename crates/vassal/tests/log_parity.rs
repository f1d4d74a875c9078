//! Log lines as Go's Serf writes them (issue 13, item 3), side by side with the real Go agent
//! (`/usr/bin/serf`, Debian 0.9.4).
//!
//! The same scenario runs on a cluster of three Go agents and on a cluster of three Vassal
//! agents, with the same node names (`n1`, `n2`, `n3`), each on its own loopback address: n1
//! starts, n2 and n3 join it with `-join`, n1 sends a user event, n2 leaves gracefully (SIGINT)
//! and n3 is killed with SIGKILL, so n1 marks it failed. Then the INFO and WARN lines tools grep
//! for (start, join, member events, received events, suspicion, leave and shutdown) must be the
//! same on both sides after the timestamp, once addresses and ports are written `IP` and
//! `PORT`. Lines are compared as sets: how often Serf repeats a line (a probe failing twice, two
//! joins coalesced into one event or not) is timing, not wording.
//!
//! And Go's `serf monitor` against either agent prints `Serf agent starting` first (the
//! backlog a new monitor client is sent).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use regex::Regex;
use vassal_testkit::{
    serf_cli, wait_until, Agent, GoSerf, Loopback, VassalAgent, CLI_DEADLINE, SERF_BIN,
};

const JOIN: Duration = Duration::from_secs(10);
/// Go's LAN profile suspects for at least 5 s after a probe fails; slack for 2 loaded cores.
const FAIL: Duration = Duration::from_secs(25);
/// Member and user events pass the agent's coalescer (up to 3 s) before `Received event`.
const RECEIVED: Duration = Duration::from_secs(10);

/// The beginnings (after the timestamp) of the lines this test holds to Go's text.
const CONTRACT: [&str; 10] = [
    "[INFO] agent: Serf agent starting",
    "[INFO] serf: EventMember",
    "[INFO] agent: Received event: ",
    "[INFO] agent: joining: ",
    "[INFO] agent: joined: ",
    "[INFO] memberlist: Suspect ",
    "[INFO] memberlist: Marking ",
    "[WARN] memberlist: Refuting ",
    "[INFO] agent: requesting ",
    "[INFO] agent: shutdown complete",
];

/// One log line after its timestamp, with addresses and ports made comparable; `None` for
/// lines that are not log lines (the banner, `==>` notices) or are below INFO.
fn normalise(line: &str) -> Option<String> {
    let start = ["[INFO] ", "[WARN] ", "[ERR] "]
        .iter()
        .filter_map(|tag| line.find(tag))
        .min()?;
    let rest = &line[start..];
    let addr = Regex::new(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(:\d+)?\b").unwrap();
    Some(
        addr.replace_all(rest, |c: &regex::Captures<'_>| {
            if c.get(1).is_some() {
                "IP:PORT".to_owned()
            } else {
                "IP".to_owned()
            }
        })
        .into_owned(),
    )
}

/// The log's contract lines, normalised, as a set.
fn contract_lines(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(normalise)
        .filter(|l| CONTRACT.iter().any(|c| l.starts_with(c)))
        .collect()
}

/// The first log line, normalised.
fn first_log_line(log: &str) -> Option<String> {
    log.lines().find_map(normalise)
}

/// Waits until `agent`'s log has a line containing `needle`.
#[track_caller]
fn wait_log<K: Clone>(agent: &mut Agent<K>, needle: &str, deadline: Duration, side: &str) {
    let what = format!("{side} {} to log {needle:?}", agent.name());
    wait_until(deadline, &what, || {
        agent.assert_running();
        if agent.log().contains(needle) {
            Ok(())
        } else {
            Err(agent.log_tail(30))
        }
    });
}

/// Waits until `agent` lists `n` members alive (Go's CLI asks it).
#[track_caller]
fn wait_alive<K: Clone>(agent: &Agent<K>, n: usize, side: &str) {
    let what = format!("{side} {} to list {n} members alive", agent.name());
    wait_until(JOIN, &what, || {
        let run = serf_cli(agent.rpc_addr(), &["members", "-status", "alive"]);
        if run.code == 0 && run.stdout.lines().count() == n {
            Ok(())
        } else {
            Err(run.combined())
        }
    });
}

/// The logs of n1 (the observer) and n2 (the joiner that leaves) after the scenario.
struct Logs {
    n1: String,
    n2: String,
}

/// Runs the scenario on agents made by `spawn(name, join)`, which returns once the agent is up.
fn scenario<K: Clone>(side: &str, spawn: impl Fn(&str, Option<SocketAddr>) -> Agent<K>) -> Logs {
    let mut n1 = spawn("n1", None);
    // Our own join, through the coalescer.
    wait_log(&mut n1, "Received event: member-join", RECEIVED, side);
    let mut n2 = spawn("n2", Some(n1.addr()));
    let mut n3 = spawn("n3", Some(n1.addr()));
    wait_alive(&n1, 3, side);
    wait_log(&mut n1, "EventMemberJoin: n3", JOIN, side);
    wait_log(&mut n2, "joined: 1 nodes", JOIN, side);

    let sent = serf_cli(n1.rpc_addr(), &["event", "deploy", "v1"]);
    assert_eq!(sent.code, 0, "{side} serf event: {}", sent.combined());
    wait_log(
        &mut n1,
        "Received event: user-event: deploy",
        RECEIVED,
        side,
    );
    // n2 and n3 hear it too before anyone goes, so n2's log does not depend on timing.
    wait_log(
        &mut n2,
        "Received event: user-event: deploy",
        RECEIVED,
        side,
    );
    wait_log(
        &mut n3,
        "Received event: user-event: deploy",
        RECEIVED,
        side,
    );

    let status = n2.stop();
    assert!(
        status.success(),
        "{side} n2 exited with {status} after SIGINT; log:\n{}",
        n2.log_tail(30)
    );
    wait_log(&mut n1, "EventMemberLeave: n2", JOIN, side);
    wait_log(&mut n1, "Received event: member-leave", RECEIVED, side);

    n3.kill_9();
    wait_log(&mut n1, "EventMemberFailed: n3", FAIL, side);
    wait_log(&mut n1, "Received event: member-failed", RECEIVED, side);
    Logs {
        n1: n1.log(),
        n2: n2.log(),
    }
}

/// Says which contract lines only one side wrote.
fn compare(who: &str, go: &str, vassal: &str) -> Option<String> {
    let (g, v) = (contract_lines(go), contract_lines(vassal));
    if g == v {
        return None;
    }
    let only_go: Vec<_> = g.difference(&v).collect();
    let only_vassal: Vec<_> = v.difference(&g).collect();
    Some(format!(
        "{who}: lines only Go wrote: {only_go:#?}\nlines only Vassal wrote: {only_vassal:#?}\n\
         --- Go {who} log ---\n{go}\n--- Vassal {who} log ---\n{vassal}"
    ))
}

#[test]
fn info_lines_match_go_for_start_join_event_leave_and_failure() {
    let go_lo = Loopback::fresh();
    let go = scenario("Go", |name, join| {
        let mut b = GoSerf::builder(name, &go_lo);
        if let Some(addr) = join {
            b = b.join(addr);
        }
        b.spawn()
    });
    let v_lo = Loopback::fresh();
    let vassal = scenario("Vassal", |name, join| {
        let mut b = VassalAgent::builder(name, &v_lo);
        if let Some(addr) = join {
            b = b.join(addr);
        }
        b.spawn_ready()
    });

    // Both start with Serf's first line.
    for (side, logs) in [("Go", &go), ("Vassal", &vassal)] {
        for (who, log) in [("n1", &logs.n1), ("n2", &logs.n2)] {
            assert_eq!(
                first_log_line(log).as_deref(),
                Some("[INFO] agent: Serf agent starting"),
                "{side} {who}'s first log line:\n{log}"
            );
        }
    }
    // The observer saw every kind of line (so an empty match on both sides cannot pass).
    let seen = contract_lines(&vassal.n1);
    for expected in [
        "[INFO] serf: EventMemberJoin: n1 IP",
        "[INFO] serf: EventMemberJoin: n2 IP",
        "[INFO] serf: EventMemberLeave: n2 IP",
        "[INFO] serf: EventMemberFailed: n3 IP",
        "[INFO] agent: Received event: member-join",
        "[INFO] agent: Received event: user-event: deploy",
        "[INFO] agent: Received event: member-failed",
        "[INFO] memberlist: Suspect n3 has failed, no acks received",
    ] {
        assert!(
            seen.contains(expected),
            "Vassal n1 lacks {expected:?}: {seen:#?}"
        );
    }
    let problems: Vec<String> = [
        compare("n1", &go.n1, &vassal.n1),
        compare("n2", &go.n2, &vassal.n2),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Runs Go's `serf monitor` against `rpc` and returns the first line it prints.
fn first_monitor_line(rpc: SocketAddr) -> String {
    let mut child = Command::new(SERF_BIN)
        .args(["monitor", &format!("-rpc-addr={rpc}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serf monitor starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if !line.trim().is_empty() {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let first = rx.recv_timeout(CLI_DEADLINE);
    // Only the child we started, by its PID.
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    first.unwrap_or_else(|_| panic!("`serf monitor -rpc-addr={rpc}` printed nothing"))
}

#[test]
fn serf_monitor_prints_serf_agent_starting_first() {
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    let mut v = VassalAgent::builder("v1", &lo)
        .join(go.addr())
        .spawn_ready();
    wait_log(&mut v, "EventMemberJoin: go1", JOIN, "Vassal");
    for (side, rpc) in [("Go", go.rpc_addr()), ("Vassal", v.rpc_addr())] {
        let line = first_monitor_line(rpc);
        assert_eq!(
            normalise(&line).as_deref(),
            Some("[INFO] agent: Serf agent starting"),
            "{side}'s `serf monitor` printed first: {line:?}"
        );
    }
}
