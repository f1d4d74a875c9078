//! Issue 3 against the real Go Serf agent: user events with handlers both ways in a mixed
//! 3 Go + 3 Vassal cluster, tags given at start filtering Go's `serf members`, a Go leave seen
//! as a leave, and the original Serf demo's load-balancer handlers producing the same HAProxy
//! config on a Go and a Vassal agent. They run `target/release/vassal` (build it first:
//! `cargo build --release --bin vassal`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vassal_testkit::{hold_for, wait_until, GoSerf, Loopback, VassalAgent};

const JOIN: Duration = Duration::from_secs(10);
const EVENT: Duration = Duration::from_secs(10);
/// Go's LAN profile needs ~6 s to declare a node failed; then 3 s of coalescing.
const FAIL: Duration = Duration::from_secs(20);

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// A handler script that writes, per node and user event name, the `SERF_*` environment, a
/// `---` line and the stdin it got, to `DIR/<self>.<event>`.
fn recording_handler(dir: &Path) -> String {
    let script = dir.join("record.sh");
    let d = dir.display();
    fs::write(
        &script,
        format!(
            "f={d}/$SERF_SELF_NAME.$SERF_USER_EVENT\n\
             {{ env | grep ^SERF_ | sort; echo ---; cat; }} > $f.tmp && mv $f.tmp $f\n"
        ),
    )
    .unwrap();
    format!("user=/bin/sh {}", script.display())
}

/// Waits until `DIR/<node>.<event>` shows a `user` event `event` with `payload` on stdin.
#[track_caller]
fn wait_user_handler(dir: &Path, node: &str, event: &str, payload: &str) {
    let path = dir.join(format!("{node}.{event}"));
    wait_until(
        EVENT,
        &format!("{node}'s handler to run for user event {event}"),
        || {
            let got = read(&path);
            let want_env = [
                "SERF_EVENT=user\n".to_string(),
                format!("SERF_USER_EVENT={event}\n"),
                format!("SERF_SELF_NAME={node}\n"),
            ];
            let (env, stdin) = got.split_once("---\n").unwrap_or(("", ""));
            if want_env.iter().all(|l| env.contains(l.as_str())) && stdin == payload {
                Ok(())
            } else {
                Err(format!("{} = {got:?}", path.display()))
            }
        },
    );
}

// Issue 3, user events both ways: `serf event deploy v1` on a Go node runs every Vassal agent's
// handler with SERF_EVENT=user, SERF_USER_EVENT=deploy and `v1` on stdin; an event sent by a
// Vassal node runs every Go agent's handler the same way (spec §4.6, §5.2).
#[test]
fn user_events_run_handlers_both_ways_in_a_mixed_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let handler = recording_handler(dir.path());
    let go1 = GoSerf::builder("go1", &Loopback::fresh())
        .event_handler(&handler)
        .spawn();
    let gos: Vec<GoSerf> = ["go2", "go3"]
        .iter()
        .map(|n| {
            GoSerf::builder(n, &Loopback::fresh())
                .event_handler(&handler)
                .join(go1.addr())
                .spawn()
        })
        .collect();
    let mut vs: Vec<VassalAgent> = ["v1", "v2", "v3"]
        .iter()
        .map(|n| {
            VassalAgent::builder(n, &Loopback::fresh())
                .arg(&format!("-event-handler={handler}"))
                .join(go1.addr())
                .spawn()
        })
        .collect();
    go1.wait_all_alive(&["go1", "go2", "go3", "v1", "v2", "v3"], JOIN);

    // Go → Vassal.
    let out = go1.cli(&["event", "deploy", "v1"]).expect("serf event");
    assert!(out.contains("Event 'deploy' dispatched"), "{out}");
    for v in &mut vs {
        v.assert_running();
        wait_user_handler(dir.path(), v.name(), "deploy", "v1\n");
    }

    // Vassal → Go: the agent has no `event` command yet (it comes with RPC), so a Vassal node
    // in this process joins through a Vassal agent and sends it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sender = rt.block_on(async {
        let ml = vassal_memberlist::Config::lan("v4");
        let config =
            vassal_node::NodeConfig::new(vassal_serf::Config::new(ml), Loopback::fresh().addr());
        let (node, _task) = vassal_node::spawn(config).await.expect("bind");
        node.join(vec![vs[0].addr()], false).await.expect("join v1");
        node.user_event("release", b"v2", false)
            .await
            .expect("event fits");
        node
    });
    for n in ["go1", "go2", "go3", "v1", "v2", "v3"] {
        wait_user_handler(dir.path(), n, "release", "v2\n");
    }
    rt.block_on(sender.shutdown());
    drop(gos);
}

// Issue 3, tags: tags given at start on Vassal agents (by -tag, or from a -tags-file) are in
// their node metadata, so Go's `serf members -tag role=web` picks exactly those nodes.
#[test]
fn tags_given_at_start_filter_go_serf_members() {
    let dir = tempfile::tempdir().unwrap();
    let tags_file = dir.path().join("v2-tags.json");
    fs::write(&tags_file, r#"{"role": "web", "rack": "r2"}"#).unwrap();
    let go = GoSerf::builder("go1", &Loopback::fresh())
        .tag("role", "db")
        .spawn();
    let mut v1 = VassalAgent::builder("v1", &Loopback::fresh())
        .tag("role", "web")
        .tag("dc", "eu")
        .join(go.addr())
        .spawn();
    let mut v2 = VassalAgent::builder("v2", &Loopback::fresh())
        .arg(&format!("-tags-file={}", tags_file.display()))
        .join(go.addr())
        .spawn();
    let _v3 = VassalAgent::builder("v3", &Loopback::fresh())
        .tag("role", "lb")
        .join(go.addr())
        .spawn();
    go.wait_all_alive(&["go1", "v1", "v2", "v3"], JOIN);
    v1.assert_running();
    v2.assert_running();

    let web = go
        .try_members_filtered(&["-tag", "role=web"])
        .expect("serf members -tag role=web");
    let mut names: Vec<&str> = web.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["v1", "v2"], "{web:#?}");
    let tags_of = |n: &str| web.iter().find(|m| m.name == n).unwrap().tags.clone();
    assert_eq!(tags_of("v1").get("dc").map(String::as_str), Some("eu"));
    assert_eq!(tags_of("v2").get("rack").map(String::as_str), Some("r2"));
    let lb = go
        .try_members_filtered(&["-tag", "role=lb"])
        .expect("serf members -tag role=lb");
    assert_eq!(
        lb.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["v3"]
    );
}

// Issue 3, leave: a Go agent's graceful leave (SIGINT) is a member-leave on a Vassal agent, not a
// failure, and its member-leave handler gets the node's line (spec §4.5, §5.2). The other
// direction is `interop_go::interrupted_vassal_is_left_in_go`.
#[test]
fn go_graceful_leave_is_a_member_leave_on_vassal() {
    let dir = tempfile::tempdir().unwrap();
    let stdin = dir.path().join("leave.stdin");
    let go1 = GoSerf::start("go1", &Loopback::fresh());
    let mut go2 = GoSerf::builder("go2", &Loopback::fresh())
        .tag("role", "web")
        .join(go1.addr())
        .spawn();
    let mut v = VassalAgent::builder("v1", &Loopback::fresh())
        .arg(&format!(
            "-event-handler=member-leave=cat >> {}",
            stdin.display()
        ))
        .join(go1.addr())
        .spawn();
    v.wait_member_event("member-join", "go2", JOIN);

    let status = go2.stop();
    assert!(status.success(), "go2 exited with {status}");
    v.wait_member_event("member-leave", "go2", JOIN);
    let line = format!("go2\t{}\tweb\trole=web\n", go2.addr().ip());
    wait_until(EVENT, "the member-leave handler to get go2's line", || {
        let s = read(&stdin);
        if s == line {
            Ok(())
        } else {
            Err(format!("{s:?}\n{}", v.log_tail(20)))
        }
    });
    assert!(
        !v.saw_member_event("member-failed", "go2"),
        "{}",
        v.log_tail(20)
    );
}

// An agent's handlers see its own member-join at start, as under Go Serf (the event comes from
// the node's creation, before any join; a subscription made after start could miss it).
#[test]
fn own_member_join_runs_the_handler_under_go_and_vassal() {
    let dir = tempfile::tempdir().unwrap();
    let handler = |who: &str| {
        format!(
            "member-join=cat >> {}",
            dir.path().join(format!("{who}.stdin")).display()
        )
    };
    let go = GoSerf::builder("go1", &Loopback::fresh())
        .tag("role", "lb")
        .event_handler(&handler("go1"))
        .spawn();
    let mut v = VassalAgent::builder("v1", &Loopback::fresh())
        .tag("role", "lb")
        .arg(&format!("-event-handler={}", handler("v1")))
        .spawn();
    for (name, ip) in [("go1", go.addr().ip()), ("v1", v.addr().ip())] {
        let path = dir.path().join(format!("{name}.stdin"));
        let want = format!("{name}\t{ip}\tlb\trole=lb\n");
        wait_until(
            EVENT,
            &format!("{name}'s own join to run its handler"),
            || {
                v.assert_running();
                let s = read(&path);
                if s == want {
                    Ok(())
                } else {
                    Err(format!("{} = {s:?}", path.display()))
                }
            },
        );
    }
}

const HAPROXY_HEADER: &str =
    "global\n    daemon\n\nlisten web 0.0.0.0:80\n    mode http\n    balance roundrobin\n";

/// The original demo's handlers (`demo/original/`), copied into `dir` with only the HAProxy
/// config path and the reload command replaced; the config starts as a small HAProxy header.
/// Returns the two `-event-handler` specs.
fn original_lb_handlers(dir: &Path) -> (PathBuf, [String; 2]) {
    let cfg = dir.join("haproxy.cfg");
    fs::write(&cfg, HAPROXY_HEADER).unwrap();
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo/original");
    let mut specs = Vec::new();
    for (events, script) in [
        ("member-join", "serf_member_join.sh"),
        ("member-leave,member-failed", "serf_member_left.sh"),
    ] {
        let text = fs::read_to_string(original.join(script)).unwrap();
        assert!(
            text.contains("/etc/haproxy/haproxy.cfg")
                && text.contains("/etc/init.d/haproxy reload"),
            "{script} is not the original:\n{text}"
        );
        let text = text
            .replace("/etc/haproxy/haproxy.cfg", &cfg.display().to_string())
            .replace("/etc/init.d/haproxy reload", "true");
        let path = dir.join(script);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        specs.push(format!("{events}={}", path.display()));
    }
    (cfg, [specs[0].clone(), specs[1].clone()])
}

/// The config's lines, sorted (coalesced joins may be listed in any order).
fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

// The original Serf demo (web-load-balancer): its member-join and member-leave/failed handlers run
// unchanged on a Go LB agent and a Vassal LB agent in the same cluster, and at every step (web
// nodes join, one leaves, one is killed) both write the same HAProxy config.
#[test]
fn original_lb_handlers_write_the_same_config_under_go_and_vassal() {
    let go_dir = tempfile::tempdir().unwrap();
    let v_dir = tempfile::tempdir().unwrap();
    let (go_cfg, go_handlers) = original_lb_handlers(go_dir.path());
    let (v_cfg, v_handlers) = original_lb_handlers(v_dir.path());

    let lb_go = GoSerf::builder("lb-go", &Loopback::fresh())
        .tag("role", "lb")
        .event_handler(&go_handlers[0])
        .event_handler(&go_handlers[1])
        .spawn();
    let mut lb_v = VassalAgent::builder("lb-v", &Loopback::fresh())
        .tag("role", "lb")
        .arg(&format!("-event-handler={}", v_handlers[0]))
        .arg(&format!("-event-handler={}", v_handlers[1]))
        .join(lb_go.addr())
        .spawn();
    lb_go.wait_all_alive(&["lb-go", "lb-v"], JOIN);

    let web1 = GoSerf::builder("web1", &Loopback::fresh())
        .tag("role", "web")
        .join(lb_go.addr())
        .spawn();
    let mut web2 = VassalAgent::builder("web2", &Loopback::fresh())
        .tag("role", "web")
        .join(lb_go.addr())
        .spawn();
    let mut web3 = GoSerf::builder("web3", &Loopback::fresh())
        .tag("role", "web")
        .join(lb_go.addr())
        .spawn();
    let _db1 = GoSerf::builder("db1", &Loopback::fresh())
        .tag("role", "db")
        .join(lb_go.addr())
        .spawn();

    let server = |name: &str, ip: std::net::IpAddr| format!("    server {name} {ip} check");
    let expect = |step: &str, servers: &[String], lb_v: &mut VassalAgent| {
        let mut want = sorted_lines(HAPROXY_HEADER);
        want.extend(servers.iter().cloned());
        want.sort();
        wait_until(
            FAIL,
            &format!("{step}: both LB configs to list exactly {servers:?}"),
            || {
                lb_v.assert_running();
                let (g, v) = (read(&go_cfg), read(&v_cfg));
                if sorted_lines(&g) == want && sorted_lines(&v) == want {
                    Ok(())
                } else {
                    Err(format!("Go LB config:\n{g}\nVassal LB config:\n{v}"))
                }
            },
        );
    };

    let (ip1, ip2, ip3) = (web1.addr().ip(), web2.addr().ip(), web3.addr().ip());
    expect(
        "web nodes joined",
        &[
            server("web1", ip1),
            server("web2", ip2),
            server("web3", ip3),
        ],
        &mut lb_v,
    );
    // No handler run adds a line twice, even later.
    hold_for(Duration::from_secs(2), "the configs to stay put", || {
        let (g, v) = (read(&go_cfg), read(&v_cfg));
        if sorted_lines(&g) == sorted_lines(&v) && g.lines().count() == 9 {
            Ok(())
        } else {
            Err(format!("Go LB config:\n{g}\nVassal LB config:\n{v}"))
        }
    });

    let status = web2.stop();
    assert!(status.success(), "web2 exited with {status}");
    expect(
        "web2 left",
        &[server("web1", ip1), server("web3", ip3)],
        &mut lb_v,
    );

    web3.kill_9();
    expect("web3 failed", &[server("web1", ip1)], &mut lb_v);
    assert!(
        lb_v.saw_member_event("member-failed", "web3"),
        "{}",
        lb_v.log_tail(20)
    );
}
