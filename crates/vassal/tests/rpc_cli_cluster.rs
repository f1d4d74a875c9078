//! Serf's CLI and ours against Serf's RPC (spec §5.5, §6), on a mixed cluster of a Go agent and
//! Vassal agents: every command prints the same through a Vassal agent as through the Go agent,
//! and `vassal` prints what `serf` prints. Line order (Go's map order) is normalised; bytes are
//! otherwise compared exactly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{both_clis, norm, seen};
use vassal_testkit::{
    go_then_vassal, wait_until, CliMatrix, GoSerf, Loopback, QueryAnswerer, VassalAgent,
};

const CONVERGE: Duration = Duration::from_secs(20);

struct Cluster {
    _host: Loopback,
    _answer: QueryAnswerer,
    g1: GoSerf,
    v1: VassalAgent,
    v2: VassalAgent,
}

/// g1 (Go, role=web, dc=east, answers queries), v1 (Vassal, role=db, answers queries) and
/// v2 (Vassal, role=web), all alive everywhere.
fn cluster() -> Cluster {
    let host = Loopback::fresh();
    let answer = QueryAnswerer::create();
    let (g1, vs) = go_then_vassal(
        GoSerf::builder("g1", &host)
            .tag("role", "web")
            .tag("dc", "east")
            .event_handler(answer.handler()),
        vec![
            VassalAgent::builder("v1", &host)
                .tag("role", "db")
                .event_handler(answer.handler()),
            VassalAgent::builder("v2", &host).tag("role", "web"),
        ],
        CONVERGE,
    );
    let [v1, v2] = <[VassalAgent; 2]>::try_from(vs).unwrap();
    Cluster {
        _host: host,
        _answer: answer,
        g1,
        v1,
        v2,
    }
}

/// Runs `args` with both CLIs against both agents; all four must agree (after `norm`), and
/// exit alike. Returns what Go's CLI printed through the Go agent.
#[track_caller]
fn same_everywhere(c: &Cluster, args: &[&str]) -> String {
    let runs = CliMatrix::run(c.g1.rpc_addr(), c.v1.rpc_addr(), args);
    runs.assert_agree(args, |r| norm(&seen(r)));
    runs.go_go.stdout
}

/// For usage errors the help text is each program's own: compare the exit code and the first
/// line (what went wrong).
#[track_caller]
fn same_usage_error(c: &Cluster, args: &[&str]) {
    for rpc in [c.g1.rpc_addr(), c.v1.rpc_addr()] {
        let (go, ours) = both_clis(rpc, args);
        let first = |r: &vassal_testkit::CliRun| seen(r).lines().next().unwrap_or("").to_string();
        assert_eq!(go.code, 1, "{args:?}: {}", go.combined());
        assert_eq!((ours.code, first(&ours)), (go.code, first(&go)), "{args:?}");
    }
}

#[test]
fn members_with_every_filter_and_format_print_the_same() {
    let c = cluster();
    for args in [
        &["members"][..],
        &["members", "-detailed"],
        &["members", "-status", "alive"],
        &["members", "-status=failed"],
        &["members", "-name", "v.*"],
        &["members", "-name", "v"],
        &["members", "-tag", "role=web"],
        &["members", "-tag", "role=web", "-tag", "dc=east"],
        &["members", "-tag", "role=w"],
        &["members", "-role", "db"],
        &["members", "-format", "json", "-tag", "role=db"],
        &["members", "-format", "yaml"],
    ] {
        same_everywhere(&c, args);
    }
    // The whole list as JSON, members sorted (Go lists them in map order).
    let json = |run: &vassal_testkit::CliRun| {
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let mut m = v["members"].as_array().unwrap().clone();
        m.sort_by_key(|m| m["name"].as_str().unwrap().to_string());
        m
    };
    let (go, ours) = both_clis(c.v1.rpc_addr(), &["members", "-format", "json"]);
    let reference = json(&vassal_testkit::serf_cli(
        c.g1.rpc_addr(),
        &["members", "-format", "json"],
    ));
    assert_eq!(json(&go), reference);
    assert_eq!(json(&ours), reference);
    assert_eq!(reference.len(), 3);
    assert_eq!(reference[1]["tags"]["role"], "db");
}

#[test]
fn events_queries_and_tags_through_a_vassal_agent() {
    let c = cluster();
    let out = same_everywhere(&c, &["event", "deploy", "v1"]);
    assert_eq!(out, "Event 'deploy' dispatched! Coalescing enabled: true\n");
    same_usage_error(&c, &["event"]);
    // Each CLI through each agent, with names of their own (Serf drops an event with the same
    // name and payload at the same Lamport time as a duplicate).
    let mut names = Vec::new();
    for (rpc, agent) in [(c.g1.rpc_addr(), "g"), (c.v1.rpc_addr(), "v")] {
        let (go, ours) = (format!("evt-serf-{agent}"), format!("evt-vassal-{agent}"));
        let runs = [
            (
                &go,
                vassal_testkit::serf_cli(rpc, &["event", "-coalesce=false", &go, "p"]),
            ),
            (
                &ours,
                vassal_testkit::vassal_cli(rpc, &["event", "-coalesce=false", &ours, "p"]),
            ),
        ];
        for (name, run) in runs {
            assert_eq!(
                (run.code, run.stdout),
                (
                    0,
                    format!("Event '{name}' dispatched! Coalescing enabled: false\n")
                )
            );
            names.push(name.clone());
        }
    }
    // The Go agent received every one of them.
    let mut g1 = c.g1;
    wait_until(CONVERGE, "g1 to receive the four user events", || {
        g1.assert_running();
        let log = g1.log();
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !log.contains(&format!("Received event: user-event: {n}\n")))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}:\n{}", g1.log_tail(20)))
        }
    });
    let c = Cluster { g1, ..c };

    // Queries: JSON documents, with filters, and text without acks.
    let query_json = |rpc, args: &[&str], vassal: bool| {
        let run = if vassal {
            vassal_testkit::vassal_cli(rpc, args)
        } else {
            vassal_testkit::serf_cli(rpc, args)
        };
        assert_eq!(run.code, 0, "{args:?}: {}", run.combined());
        let v: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", run.stdout));
        let mut acks: Vec<String> = v["Acks"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        acks.sort();
        let responses: BTreeMap<String, String> =
            serde_json::from_value(v["Responses"].clone()).unwrap();
        (acks, responses)
    };
    let expect = |acks: &[&str], responses: &[&str]| {
        (
            acks.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            responses
                .iter()
                .map(|n| (n.to_string(), format!("resp-from-{n}\n")))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    for (args, acks, responses) in [
        (
            &["query", "-format", "json", "-timeout", "1s", "q"][..],
            &["g1", "v1", "v2"][..],
            &["g1", "v1"][..],
        ),
        (
            &[
                "query", "-format", "json", "-timeout", "1s", "-node", "v1", "q",
            ],
            &["v1"],
            &["v1"],
        ),
        (
            &[
                "query", "-format", "json", "-timeout", "1s", "-tag", "role=web", "q", "p",
            ],
            &["g1", "v2"],
            &["g1"],
        ),
    ] {
        // Both CLIs at once through the Vassal agent, but one after the other through the Go
        // agent: Go's `Serf.Query` reads its query clock without a lock, so two queries sent
        // at the same moment may share a Lamport time, and the second one's registration then
        // replaces the first's ("query reply ID mismatch"), leaving the first with nothing.
        let check = |rpc, vassal| {
            assert_eq!(
                query_json(rpc, args, vassal),
                expect(acks, responses),
                "{args:?} via {rpc} (vassal CLI: {vassal})"
            )
        };
        std::thread::scope(|s| {
            let check = &check;
            let g1 = c.g1.rpc_addr();
            s.spawn(move || [false, true].map(|vassal| check(g1, vassal)));
            for vassal in [false, true] {
                let v1 = c.v1.rpc_addr();
                s.spawn(move || check(v1, vassal));
            }
        });
    }
    let out = same_everywhere(
        &c,
        &["query", "-no-ack", "-timeout", "1s", "-node", "g1", "q"],
    );
    assert_eq!(
        out,
        "Query 'q' dispatched\nResponse from 'g1': resp-from-g1\nTotal Responses: 1\n"
    );
    same_everywhere(&c, &["query", "-relay-factor", "300", "q"]);
    same_everywhere(&c, &["query", "_serf_x"]);

    // Tags set through a Vassal agent show in the Go agent's filtered member list.
    for (rpc, vassal) in [(c.v2.rpc_addr(), false), (c.v1.rpc_addr(), true)] {
        let run = if vassal {
            vassal_testkit::vassal_cli(rpc, &["tags", "-set", "role=cache", "-set", "zone=a"])
        } else {
            vassal_testkit::serf_cli(rpc, &["tags", "-set", "role=cache", "-delete", "dc"])
        };
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "Successfully updated agent tags\n"),
            "{}",
            run.combined()
        );
    }
    wait_until(CONVERGE, "g1 to list v1 and v2 with role=cache", || {
        let out = c.g1.cli(&["members", "-tag", "role=cache"])?;
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        if names.contains(&"v1") && names.contains(&"v2") {
            Ok(())
        } else {
            Err(out)
        }
    });
    let out = c.g1.cli(&["members", "-tag", "zone=a"]).unwrap();
    assert!(out.starts_with("v1 "), "{out}");
    same_everywhere(&c, &["tags", "-set", "novalue"]);
}

#[test]
fn join_force_leave_prune_and_leave_through_a_vassal_agent() {
    let c = cluster();
    let host = Loopback::fresh();
    // A join that cannot work says so in Serf's words, whoever asks whom.
    let dead = host.addr();
    same_everywhere(&c, &["join", &dead.to_string()]);
    same_usage_error(&c, &["join"]);

    // A join that works: a new Go agent, joined through the Vassal agent.
    let g2 = GoSerf::start("g2", &host);
    for run in [
        vassal_testkit::serf_cli(c.v1.rpc_addr(), &["join", &g2.addr().to_string()]),
        vassal_testkit::vassal_cli(
            c.v1.rpc_addr(),
            &["join", "-replay", &g2.addr().to_string()],
        ),
    ] {
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "Successfully joined cluster by contacting 1 nodes.\n"),
            "{}",
            run.combined()
        );
    }
    c.g1.wait_all_alive(&["g1", "g2", "v1", "v2"], CONVERGE);

    // force-leave of a failed member, through the Vassal agent: left everywhere.
    let mut g2 = g2;
    g2.kill_9();
    c.g1.wait_member_status("g2", "failed", CONVERGE);
    wait_until(CONVERGE, "v1 to see g2 failed", || {
        let out = c.v1.cli(&["members", "-status", "failed"])?;
        if out.starts_with("g2 ") {
            Ok(())
        } else {
            Err(out)
        }
    });
    let run = vassal_testkit::serf_cli(c.v1.rpc_addr(), &["force-leave", "g2"]);
    assert_eq!((run.code, run.combined().as_str()), (0, ""));
    c.g1.wait_member_status("g2", "left", CONVERGE);
    same_usage_error(&c, &["force-leave"]);

    // With -prune (our CLI this time), the member is forgotten everywhere.
    let run = vassal_testkit::vassal_cli(c.v1.rpc_addr(), &["force-leave", "-prune", "g2"]);
    assert_eq!((run.code, run.combined().as_str()), (0, ""));
    wait_until(CONVERGE, "g2 to be gone from every member list", || {
        let lists = [c.g1.cli(&["members"])?, c.v1.cli(&["members"])?];
        if lists.iter().all(|l| !l.contains("g2")) {
            Ok(())
        } else {
            Err(lists.join("\n--\n"))
        }
    });

    // leave: the Vassal agent leaves gracefully and exits 0; the Go agent sees it left.
    let mut v2 = c.v2;
    let run = vassal_testkit::serf_cli(v2.rpc_addr(), &["leave"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "Graceful leave complete\n"),
        "{}",
        run.combined()
    );
    wait_until(
        Duration::from_secs(10),
        "v2 to exit after leave",
        || match v2.exit_status() {
            Some(s) if s.success() => Ok(()),
            Some(s) => panic!("v2 exited with {s}:\n{}", v2.log_tail(20)),
            None => Err("still running".to_string()),
        },
    );
    c.g1.wait_member_status("v2", "left", CONVERGE);
    let run = vassal_testkit::vassal_cli(c.v1.rpc_addr(), &["leave"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "Graceful leave complete\n")
    );
    c.g1.wait_member_status("v1", "left", CONVERGE);
}
