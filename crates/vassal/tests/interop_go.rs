//! Interoperability with the real Go Serf agent (`/usr/bin/serf`, Debian 0.9.4): the tests the
//! project must pass. They run `target/release/vassal` (build it first: `scripts/test` does).
//!
//! The Vassal agent's view of the cluster is read from its log, in the lines Go's Serf writes
//! (INFO level, after the timestamp):
//!
//! ```text
//! [INFO] serf: EventMemberJoin: NAME ADDR
//! [INFO] serf: EventMemberFailed: NAME ADDR
//! [INFO] serf: EventMemberLeave: NAME ADDR
//! [INFO] agent: Received event: user-event: NAME
//! ```
//!
//! The Go side's view comes from `serf members -format json`. Timings: Go's LAN profile probes
//! every 1 s and suspects for ≥ 5 s (spec §3.4–3.5); a killed Go node is listed `failed` ~6 s
//! after SIGKILL and a SIGINTed one `left` within ~1 s, so 15 s / 10 s deadlines leave slack for
//! a loaded 2-core machine without hiding real slowness.

use std::time::Duration;

use vassal_testkit::{hold_for, wait_until, GoSerf, Loopback, VassalAgent};

const JOIN: Duration = Duration::from_secs(5);
const FAIL: Duration = Duration::from_secs(15);
const LEAVE: Duration = Duration::from_secs(10);

/// Waits until `go` lists `name` with `status`, failing fast (with its log) if `v` dies.
#[track_caller]
fn go_sees(go: &GoSerf, v: &mut VassalAgent, name: &str, status: &str, deadline: Duration) {
    let what = format!("Go agent {} to list {name} as {status}", go.name());
    wait_until(deadline, &what, || {
        v.assert_running();
        let members = go.try_members()?;
        match members.iter().find(|m| m.name == name) {
            Some(m) if m.status == status => Ok(()),
            _ => Err(format!("{members:#?}")),
        }
    });
}

// (a) Vassal joins a Go cluster: push/pull over TCP, then gossip over UDP (spec §3.7–3.8).
#[test]
fn vassal_joins_go_and_go_lists_it_alive() {
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    let mut v = VassalAgent::builder("v1", &lo).join(go.addr()).spawn();

    go_sees(&go, &mut v, "v1", "alive", JOIN);
    let seen = go.members().into_iter().find(|m| m.name == "v1").unwrap();
    assert_eq!(seen.addr, v.addr(), "Go's view of v1's gossip address");
    v.wait_member_event("member-join", "go1", JOIN);
}

// (a) Go joins Vassal: `serf join` makes Go initiate the push/pull against our TCP listener.
#[test]
fn go_joins_vassal_and_lists_it_alive() {
    let lo = Loopback::fresh();
    let mut v = VassalAgent::builder("v1", &lo).spawn();
    let go = GoSerf::start("go1", &lo);

    // Vassal has no readiness signal yet; retry the join until its listener is up.
    wait_until(JOIN, "`serf join` to the Vassal agent to succeed", || {
        v.assert_running();
        go.try_join(v.addr())
    });
    go_sees(&go, &mut v, "v1", "alive", JOIN);
    v.wait_member_event("member-join", "go1", JOIN);
}

// (b) SWIM failure detection of a Vassal node by Go, then refutation on restart: the restarted
// node must out-incarnate its own death (spec §3.3) for Go to list it alive again.
#[test]
fn killed_vassal_is_failed_in_go_and_alive_again_after_restart() {
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    let mut v = VassalAgent::builder("v1", &lo).join(go.addr()).spawn();
    go_sees(&go, &mut v, "v1", "alive", JOIN);

    v.kill_9();
    go.wait_member_status("v1", "failed", FAIL);

    let mut v = v.builder_again().spawn();
    go_sees(&go, &mut v, "v1", "alive", Duration::from_secs(10));
}

// (c) SIGINT is a graceful leave (spec §5.6): Go lists the node `left`, not `failed`.
#[test]
fn interrupted_vassal_is_left_in_go() {
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    let mut v = VassalAgent::builder("v1", &lo).join(go.addr()).spawn();
    go_sees(&go, &mut v, "v1", "alive", JOIN);

    let status = v.stop();
    assert!(
        status.success(),
        "vassal exited with {status} after SIGINT; log:\n{}",
        v.log_tail(30)
    );
    go.wait_member_status("v1", "left", LEAVE);
}

// (d) Vassal's own failure detector: a SIGKILLed Go node must be logged `EventMemberFailed: go2`
// by Vassal (and, as a control, listed failed by the surviving Go node).
#[test]
fn killed_go_node_is_seen_failed_by_vassal() {
    let lo = Loopback::fresh();
    let go1 = GoSerf::start("go1", &lo);
    let mut go2 = GoSerf::builder("go2", &lo).join(go1.addr()).spawn();
    let mut v = VassalAgent::builder("v1", &lo).join(go1.addr()).spawn();
    go_sees(&go1, &mut v, "v1", "alive", JOIN);
    v.wait_member_event("member-join", "go2", JOIN);

    go2.kill_9();
    v.wait_member_event("member-failed", "go2", FAIL);
    go1.wait_member_status("go2", "failed", FAIL);
    assert!(
        !v.saw_member_event("member-failed", "go1"),
        "v1 wrongly failed go1:\n{}",
        v.log_tail(30)
    );
}

// (e) The same with AES-GCM gossip encryption on both sides (spec §2.9).
#[test]
fn encrypted_cluster_joins_and_detects_failures_both_ways() {
    let lo = Loopback::fresh();
    let key = GoSerf::keygen();
    let go1 = GoSerf::builder("go1", &lo).encrypt(&key).spawn();
    let mut go2 = GoSerf::builder("go2", &lo)
        .encrypt(&key)
        .join(go1.addr())
        .spawn();
    let mut v = VassalAgent::builder("v1", &lo)
        .encrypt(&key)
        .join(go1.addr())
        .spawn();
    go_sees(&go1, &mut v, "v1", "alive", JOIN);
    go_sees(&go2, &mut v, "v1", "alive", JOIN);
    v.wait_member_event("member-join", "go2", JOIN);

    go2.kill_9();
    v.wait_member_event("member-failed", "go2", FAIL);

    v.kill_9();
    go1.wait_member_status("v1", "failed", FAIL);
    assert!(
        !go1.log().contains("No installed keys could decrypt"),
        "{}",
        go1.log_tail(30)
    );
}

// (f) Different keys: no join in either direction, and both sides say why. Go logs
// "[ERR] memberlist: failed to receive: No installed keys could decrypt the message"; Vassal
// logs a WARN/ERROR line about decryption. Like `serf agent -join`, a Vassal agent whose start-up
// join fails everywhere exits 1, naming the reason.
#[test]
fn mismatched_keys_prevent_join_and_both_sides_log_why() {
    let lo = Loopback::fresh();
    let go = GoSerf::builder("go1", &lo)
        .encrypt(&GoSerf::keygen())
        .spawn();
    let mut v = VassalAgent::builder("v1", &lo)
        .encrypt(&GoSerf::keygen())
        .spawn();

    // Go cannot join Vassal: Vassal cannot read Go's stream, and Go cannot read the reply.
    wait_until(JOIN, "the Vassal agent to listen", || {
        v.assert_running();
        match go.try_join(v.addr()) {
            Err(e) if e.contains("decrypt") => Ok(()),
            Err(e) => Err(e),
            Ok(()) => panic!("Go joined a Vassal agent with a different key"),
        }
    });
    hold_for(Duration::from_secs(3), "Go to list only itself", || {
        v.assert_running();
        let m = go.try_members()?;
        if m.len() == 1 {
            Ok(())
        } else {
            Err(format!("{m:#?}"))
        }
    });
    assert!(
        !v.saw_member_event("member-join", "go1"),
        "v1 joined go1:\n{}",
        v.log_tail(30)
    );
    // One log entry per line, with the `\t* …` lines of a multi-error (as Go's `agent: error
    // joining: 1 error occurred:` has) belonging to the entry above them.
    let line = |log: &str| {
        let mut entries: Vec<String> = Vec::new();
        for l in log.lines() {
            match entries.last_mut() {
                Some(e) if l.starts_with('\t') => {
                    e.push('\n');
                    e.push_str(l);
                }
                _ => entries.push(l.to_owned()),
            }
        }
        entries.iter().any(|e| {
            let e = e.to_ascii_lowercase();
            (e.contains("[err]") || e.contains("[warn]")) && e.contains("decrypt")
        })
    };
    wait_until(
        JOIN,
        "Vassal to log why it could not read Go's stream",
        || {
            v.assert_running();
            if line(&v.log()) {
                Ok(())
            } else {
                Err(v.log_tail(20))
            }
        },
    );

    // Vassal cannot join Go either; it exits 1 and says why, and Go logs its side.
    let mut v2 = VassalAgent::builder("v2", &lo)
        .encrypt(&GoSerf::keygen())
        .join(go.addr())
        .spawn();
    let status = wait_until(JOIN, "the Vassal agent with a bad key to exit", || {
        v2.exit_status().ok_or_else(|| v2.log_tail(10))
    });
    assert_eq!(
        status.code(),
        Some(1),
        "exit status; log:\n{}",
        v2.log_tail(20)
    );
    assert!(
        line(&v2.log()),
        "no decryption error in the log:\n{}",
        v2.log_tail(20)
    );
    wait_until(JOIN, "Go to log that it could not decrypt", || {
        let log = go.log();
        if log.contains("No installed keys could decrypt") {
            Ok(())
        } else {
            Err(go.log_tail(20))
        }
    });
    assert_eq!(go.try_members().map(|m| m.len()), Ok(1), "Go's members");
}

// (g) A mixed cluster of 3 Go + 3 Vassal agents, each on its own loopback address, joined
// through both kinds of node; then one Vassal agent dies and the five others agree.
#[test]
fn mixed_cluster_of_three_go_and_three_vassal_agrees_on_membership() {
    let all = ["go1", "go2", "go3", "v1", "v2", "v3"];
    let go1 = GoSerf::start("go1", &Loopback::fresh());
    let go2 = GoSerf::builder("go2", &Loopback::fresh())
        .join(go1.addr())
        .spawn();
    let mut v1 = VassalAgent::builder("v1", &Loopback::fresh())
        .join(go1.addr())
        .spawn();
    go_sees(&go1, &mut v1, "v1", "alive", JOIN);
    // v2 joins through a Vassal node, go3 through a Vassal node, v3 through a Go node.
    let mut v2 = VassalAgent::builder("v2", &Loopback::fresh())
        .join(v1.addr())
        .spawn();
    go_sees(&go1, &mut v2, "v2", "alive", Duration::from_secs(10));
    let go3 = GoSerf::builder("go3", &Loopback::fresh())
        .join(v2.addr())
        .spawn();
    let mut v3 = VassalAgent::builder("v3", &Loopback::fresh())
        .join(go2.addr())
        .spawn();

    // A gossiped alive can miss a newcomer that joined through another node at the same moment
    // (see below); anti-entropy repairs it within one push/pull round, on the Go side too.
    for go in [&go1, &go2, &go3] {
        wait_until(
            Duration::from_secs(40),
            &format!("{} to list all six alive", go.name()),
            || {
                v3.assert_running();
                let m = go.try_members()?;
                let ok = all
                    .iter()
                    .all(|n| m.iter().any(|x| x.name == *n && x.status == "alive"));
                if ok && m.len() == 6 {
                    Ok(())
                } else {
                    Err(format!("{m:#?}"))
                }
            },
        );
    }
    // go3 and v3 join at the same moment through different nodes, so the node that answered
    // v3's join may not know go3 yet, and go3's gossiped alive (sent 4 times per node at this
    // size) can miss the newcomer. Then anti-entropy repairs it: a push/pull within 30 s
    // (random first stagger), exactly as in Go memberlist. Allow one round plus slack.
    for v in [&mut v1, &mut v2, &mut v3] {
        let me = v.name().to_string();
        for other in all.iter().filter(|n| **n != me) {
            v.wait_member_event("member-join", other, Duration::from_secs(40));
        }
    }

    v3.kill_9();
    for go in [&go1, &go2, &go3] {
        go.wait_member_status("v3", "failed", Duration::from_secs(20));
    }
    for v in [&mut v1, &mut v2] {
        v.wait_member_event("member-failed", "v3", Duration::from_secs(20));
        assert!(
            all.iter()
                .filter(|n| **n != "v3")
                .all(|n| !v.saw_member_event("member-failed", n)),
            "{} logged a live node as failed:\n{}",
            v.name(),
            v.log_tail(40)
        );
    }
}

// Issue 3, user events: `serf event` on a Go node reaches a Vassal node exactly once, through
// gossip and Serf's event buffer (spec §4.6).
#[test]
fn go_user_event_reaches_vassal_once() {
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    // At debug, the node also traces each event with its payload.
    let mut v = VassalAgent::builder("v1", &lo)
        .join(go.addr())
        .arg("-log-level=debug")
        .spawn();
    go_sees(&go, &mut v, "v1", "alive", JOIN);

    go.event("deploy", "v1");
    v.wait_log_contains("[INFO] agent: Received event: user-event: deploy", JOIN);
    // Retransmissions and push/pull replays must not deliver it again.
    hold_for(
        Duration::from_secs(3),
        "Vassal to deliver deploy once",
        || {
            v.assert_running();
            match v
                .log()
                .matches("Received event: user-event: deploy")
                .count()
            {
                1 => Ok(()),
                n => Err(format!("delivered {n} times:\n{}", v.log_tail(20))),
            }
        },
    );
    assert!(
        v.log().contains(r#"payload="v1""#),
        "payload lost:\n{}",
        v.log_tail(10)
    );
}

// Issue 3, key rotation (spec §4.8–§4.9): Go's `serf keys` installs a new key, makes it primary
// and removes the old one across a mixed encrypted cluster. Every node must answer each step
// (`serf keys` exits 1 otherwise) and the cluster stays whole; a node that only knows the new key
// can then join through a Vassal node.
#[test]
fn key_rotation_in_a_mixed_encrypted_cluster_keeps_it_whole() {
    let (old, new) = (GoSerf::keygen(), GoSerf::keygen());
    let go1 = GoSerf::builder("go1", &Loopback::fresh())
        .encrypt(&old)
        .spawn();
    let go2 = GoSerf::builder("go2", &Loopback::fresh())
        .encrypt(&old)
        .join(go1.addr())
        .spawn();
    let mut v1 = VassalAgent::builder("v1", &Loopback::fresh())
        .encrypt(&old)
        .join(go1.addr())
        .spawn();
    let mut v2 = VassalAgent::builder("v2", &Loopback::fresh())
        .encrypt(&old)
        .join(go2.addr())
        .spawn();
    let all = ["go1", "go2", "v1", "v2"];
    go1.wait_all_alive(&all, JOIN);

    for step in [["-install", &new], ["-use", &new], ["-remove", &old]] {
        let out = go1
            .cli(&["keys", step[0], step[1]])
            .unwrap_or_else(|e| panic!("serf keys {}: {e}", step[0]));
        assert!(out.contains("Successfully"), "serf keys {}: {out}", step[0]);
        v1.assert_running();
        v2.assert_running();
        go1.wait_all_alive(&all, JOIN);
    }
    let list = go1.cli(&["keys", "-list"]).expect("serf keys -list");
    let on_all = list
        .lines()
        .any(|l| l.trim_start().starts_with(&new) && l.trim_end().ends_with("[4/4]"));
    assert!(on_all, "new key on all four nodes: {list}");
    assert!(!list.contains(&old), "old key still listed: {list}");

    // Only the new key now: joining through a Vassal node works.
    let go3 = GoSerf::builder("go3", &Loopback::fresh())
        .encrypt(&new)
        .spawn();
    wait_until(JOIN, "go3 (new key only) to join through v1", || {
        v1.assert_running();
        go3.try_join(v1.addr())
    });
    go1.wait_all_alive(&["go1", "go2", "go3", "v1", "v2"], JOIN);
}

// Issue 3, coordinates (spec §4.13): Go caches the Vivaldi coordinate a Vassal node puts in its
// acks, so `serf rtt` can estimate the RTT to it. Go refuses a payload it cannot decode.
#[test]
fn go_estimates_rtt_to_vassal_from_its_ack_coordinates() {
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    let mut v = VassalAgent::builder("v1", &lo).join(go.addr()).spawn();
    go_sees(&go, &mut v, "v1", "alive", JOIN);
    let out = wait_until(
        Duration::from_secs(10),
        "`serf rtt go1 v1` to give an estimate",
        || {
            v.assert_running();
            go.cli(&["rtt", "go1", "v1"])
        },
    );
    let ms: f64 = out
        .split("rtt:")
        .nth(1)
        .and_then(|s| s.trim().trim_end_matches("ms").trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected `serf rtt` output: {out}"));
    // Loopback RTTs are well under a few milliseconds; the estimate must be of that order.
    assert!(
        ms > 0.0 && ms < 50.0,
        "estimated {ms} ms on loopback: {out}"
    );
}
