//! The production path against the real HAProxy 2.6 (Debian's): `vassal agent
//! -haproxy-socket` turns web members into servers with runtime-API commands and no reload;
//! a graceful leave under load drains with zero failed requests; a failure is cut at once.
//! They run `target/release/vassal` (build it first: `cargo build --release -p vassal`).

mod support;

use std::time::Duration;

use support::*;
use vassal_testkit::{http_get, wait_until, Haproxy, Loopback, Wrk, WrkReport};

fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// HAProxy with an empty `web` backend, its runtime-API load balancer, and three web nodes.
fn cluster(
    label: &str,
    sections: impl Fn(std::net::SocketAddr) -> String,
    extra: &[String],
) -> (
    Loopback,
    std::net::SocketAddr,
    Haproxy,
    vassal_testkit::VassalAgent,
    Vec<WebNode>,
) {
    let lo = Loopback::fresh();
    let fe = lo.addr();
    let haproxy = Haproxy::start(label, &sections(fe));
    let lb = runtime_lb_with(&lo, &haproxy, extra);
    let nodes = ["w1", "w2", "w3"]
        .iter()
        .map(|n| web_node(n, &lo, lo.addr(), true, lb.addr()))
        .collect();
    (lo, fe, haproxy, lb, nodes)
}

// Joins become `add server` + `enable health` + `enable server`; the HAProxy we started keeps
// serving (no reload); a kill -9 goes into maintenance at once (no drain) and is deleted.
#[test]
fn web_members_become_haproxy_servers_without_a_reload_and_failures_are_cut() {
    let metrics = Loopback::fresh().addr();
    let (_lo, fe, mut haproxy, mut lb, mut nodes) = cluster(
        "runtime",
        runtime_sections,
        &[format!("-metrics-addr={metrics}")],
    );
    let want = ready(&nodes);
    wait_servers(
        &haproxy,
        &mut lb,
        &want,
        "the three web members as ready servers",
    );
    wait_answering(fe, &["w1", "w2", "w3"], &mut lb);
    haproxy.assert_running();
    let info = haproxy.cmd("show info").unwrap();
    assert!(
        info.contains(&format!("Pid: {}\n", haproxy.pid())),
        "the HAProxy we started still serves (no reload):\n{info}"
    );
    let log = lb.log();
    for n in &nodes {
        let add = format!("add server web/{} {} check", n.web.name(), n.web.addr());
        assert_eq!(lines_with(&log, &add).len(), 1, "one {add:?} in:\n{log}");
        for cmd in ["enable health", "enable server"] {
            let line = format!("{cmd} web/{}", n.web.name());
            assert_eq!(lines_with(&log, &line).len(), 1, "{log}");
        }
    }

    // A crash: the member fails; its server goes into maintenance and is deleted, no drain.
    let mut w3 = nodes.pop().unwrap();
    w3.agent.kill_9();
    w3.web.stop();
    wait_servers(
        &haproxy,
        &mut lb,
        &ready(&nodes),
        "w3 removed once detected as failed",
    );
    let log = lb.log();
    assert!(lb.saw_member_event("member-failed", "w3"), "{log}");
    let maint = log.find("set server web/w3 state maint");
    let del = log.find("del server web/w3");
    assert!(
        matches!((maint, del), (Some(a), Some(b)) if a < b),
        "maint, then del:\n{log}"
    );
    assert!(lines_with(&log, "web/w3 state drain").is_empty(), "{log}");
    wait_answering(fe, &["w1", "w2"], &mut lb);
    haproxy.assert_running();

    // The sync's own figures: the commands HAProxy took, and two servers in rotation.
    wait_until(SETTLE, "the HAProxy sync's figures on /metrics", || {
        let page = http_get(metrics, "/metrics", Duration::from_secs(5))?.body;
        let value = |series: &str| {
            page.lines().find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        };
        let (commands, ready) = (
            value("vassal_haproxy_commands"),
            value("vassal_haproxy_in_rotation"),
        );
        // Three adds with their enables, then w3's maint and del: at least 11 commands.
        if commands.is_some_and(|c| c >= 11.0) && ready == Some(2.0) {
            Ok(())
        } else {
            Err(format!(
                "commands {commands:?}, in rotation {ready:?}\n{page}"
            ))
        }
    });
}

// Issue 5: a graceful leave under load fails no request. wrk keeps 8 connections busy on the
// frontend; w1's agent leaves (SIGINT) and its web server stops right after the agent exits,
// as on a real web node. HAProxy must have drained w1 by then.
#[test]
fn a_graceful_leave_under_load_fails_no_request() {
    let (_lo, fe, haproxy, mut lb, mut nodes) = cluster("leave", runtime_sections, &[]);
    wait_servers(&haproxy, &mut lb, &ready(&nodes), "three ready servers");

    let wrk = Wrk::spawn(&format!("http://{fe}/"), 1, 8, Duration::from_secs(5));
    let before = nodes[0].web.served();
    wait_until(SETTLE, "load to reach w1", || {
        let now = nodes[0].web.served();
        if now > before + 200 {
            Ok(())
        } else {
            Err(format!("w1 served {now} (was {before})"))
        }
    });
    let mut w1 = nodes.remove(0);
    let status = w1.agent.stop();
    assert!(status.success(), "w1's graceful leave exited with {status}");
    w1.web.stop();
    let report: WrkReport = wrk.wait();

    assert_eq!(
        report.failed(),
        0,
        "no request may fail during a graceful leave; wrk said:\n{}\nlb log:\n{}",
        report.raw,
        lb.log_tail(40)
    );
    assert!(
        nodes.iter().map(|n| n.web.served()).sum::<u64>() > 0 && report.requests > w1.web.served(),
        "the load went on after w1 left: {}",
        report.raw
    );
    wait_servers(
        &haproxy,
        &mut lb,
        &ready(&nodes),
        "w1 removed after draining",
    );
    // Drained, then deleted. (When Serf reports the leave as failed first, and the leave
    // arrives only after that batch, the server goes into maint instead of drain: that also
    // lets the requests in flight finish, and the test still demands zero failures.)
    let log = lb.log();
    let stop = log
        .find("set server web/w1 state drain")
        .or_else(|| log.find("set server web/w1 state maint"));
    let del = log.find("del server web/w1");
    assert!(
        matches!((stop, del), (Some(a), Some(b)) if a < b),
        "drain (or maint), then del:\n{log}"
    );
    assert!(
        lines_with(&log, "shutdown sessions server web/w1").is_empty(),
        "a graceful leave cuts no session:\n{log}"
    );
}

// A backend that cannot take dynamic servers: the agent logs HAProxy's refusal with the fix and
// keeps running (and retries on its own).
#[test]
fn a_static_backend_is_refused_clearly_and_the_agent_keeps_running() {
    let lo = Loopback::fresh();
    let haproxy = Haproxy::start(
        "static",
        &runtime_sections(lo.addr()).replace("roundrobin", "static-rr"),
    );
    let mut lb = runtime_lb(&lo, &haproxy);
    let _w1 = web_node("w1", &lo, lo.addr(), true, lb.addr());
    let line = lb.wait_log_contains("HAProxy refused `add server web/w1", SETTLE);
    assert!(line.contains("balance roundrobin"), "{line}");
    lb.assert_running();
    assert_eq!(servers(&haproxy).unwrap(), Vec::<String>::new());
}

// Servers left in the backend by an earlier agent (or by hand) that are not web members are
// drained and removed at start. (That a web member's server already there is kept is the unit
// test `start_up_reconciles_with_what_haproxy_already_has` in sync.rs.)
#[test]
fn start_up_reconciles_what_the_backend_already_holds() {
    let lo = Loopback::fresh();
    let haproxy = Haproxy::start("reconcile", &runtime_sections(lo.addr()));
    for line in [
        format!("add server web/stale {}:1 check", lo.ip()),
        "enable server web/stale".to_owned(),
    ] {
        haproxy.cmd(&line).unwrap();
    }
    let mut lb = runtime_lb(&lo, &haproxy);
    wait_servers(&haproxy, &mut lb, &[], "the stale server removed");
    let log = lb.log();
    assert!(log.contains("set server web/stale state drain"), "{log}");
    assert!(log.contains("del server web/stale"), "{log}");
}

/// `srv_uweight` of `server` in `show servers state web`.
fn user_weight(h: &Haproxy, server: &str) -> Result<u32, String> {
    let reply = h.cmd("show servers state web")?;
    let mut lines = reply.lines().skip(1);
    let header: Vec<&str> = lines
        .next()
        .ok_or("no header")?
        .trim_start_matches('#')
        .split_whitespace()
        .collect();
    let col = |n: &str| header.iter().position(|c| *c == n).ok_or(format!("no {n}"));
    let (name_i, weight_i) = (col("srv_name")?, col("srv_uweight")?);
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(name_i) == Some(&server))
        .and_then(|f| f.get(weight_i)?.parse().ok())
        .ok_or_else(|| format!("no server {server}: {reply}"))
}

// Issue 15: with -lb-balance leastload, each web member's `load` tag becomes its server's
// weight through the runtime API (256 / (1 + load)², at least 1), as the built-in balancer
// weighs its backends.
#[test]
fn leastload_turns_load_tags_into_server_weights() {
    let lo = Loopback::fresh();
    let haproxy = Haproxy::start("weights", &runtime_sections(lo.addr()));
    let mut lb = runtime_lb_with(&lo, &haproxy, &["-lb-balance=leastload".to_owned()]);
    let web = vassal_testkit::WebServer::start(lo.addr(), "w1").expect("web server");
    let _agent = vassal_testkit::VassalAgent::builder("w1", &lo)
        .tag("role", "web")
        .tag("http_port", &web.addr().port().to_string())
        .tag("load", "3")
        .arg("-profile=local")
        .join(lb.addr())
        .spawn();
    wait_until(SETTLE, "w1's weight 16 in HAProxy", || {
        lb.assert_running();
        match user_weight(&haproxy, "w1") {
            Ok(16) => Ok(()),
            other => Err(format!("{other:?}\nlb log:\n{}", lb.log_tail(20))),
        }
    });
}
