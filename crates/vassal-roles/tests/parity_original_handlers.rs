//! The parity path (issue 5): Serf's original web-load-balancer demo runs unchanged with Vassal
//! as its agent. An HAProxy config with no servers, the demo's own `member-join` and
//! `member-leave`/`member-failed` handlers (demo/original/, verbatim), and a reload of HAProxy
//! for every change.
//!
//! The handlers write /etc/haproxy/haproxy.cfg and run `/etc/init.d/haproxy reload`. The test
//! must not touch the machine's HAProxy, so the load balancer's agent runs in a private mount
//! namespace (`unshare -m`) where a temp dir is bind-mounted over /etc/haproxy and a stand-in
//! script over /etc/init.d/haproxy; the stand-in reloads this test's HAProxy the way Debian's
//! init script does (`haproxy -c`, then `haproxy -D -p PIDFILE -sf OLDPID`).
//!
//! Two facts about the original, checked here:
//! - Serf's handler lines carry the member's IP without a port (`NAME\tIP\tROLE\tTAGS`), so the
//!   demo writes `server NAME IP check`, and HAProxy sends each request to the port the client
//!   connected to: the web servers listen on the frontend's port, each on its own IP.
//! - HAProxy 2.6 refuses such a line (`has neither service port nor check port`), which HAProxy
//!   1.4, the demo's, accepted. The config therefore carries one line the original lacks,
//!   `default-server port P`, so that health checks have a port.

mod support;

use std::fs;
use std::net::SocketAddr;
use std::process::Command;

use support::*;
use vassal_testkit::{haproxy_bin, wait_until, Haproxy, Loopback};

#[test]
fn the_original_demo_handlers_run_unchanged_with_vassal_as_the_agent() {
    let real_config = fs::read("/etc/haproxy/haproxy.cfg").ok();
    let lb_lo = Loopback::fresh();
    let port = lb_lo.free_port();
    let mut lb = OriginalLb::start(&lb_lo, port);

    // Two web nodes, each on its own IP, serving on the frontend's port.
    let mut nodes: Vec<WebNode> = ["web1", "web2"]
        .iter()
        .map(|name| {
            let lo = Loopback::fresh();
            let web = SocketAddr::new(lo.ip().into(), port);
            web_node(name, &lo, web, false, lb.agent.addr())
        })
        .collect();

    wait_answering(lb.fe, &["web1", "web2"], &mut lb.agent);
    let cfg = lb.config();
    for n in &nodes {
        let line = format!("    server {} {} check\n", n.web.name(), n.web.addr().ip());
        assert!(
            cfg.contains(&line),
            "the join handler wrote {line:?}:\n{cfg}"
        );
    }
    assert!(lb.reload_count() >= 1, "the join handler reloaded");
    assert_ne!(
        lb.haproxy.current_pid(),
        Some(lb.haproxy.pid()),
        "a reload replaced the first HAProxy process"
    );
    wait_until(SETTLE, "the first HAProxy to finish its soft stop", || {
        if lb.haproxy.has_exited() {
            Ok(())
        } else {
            Err("still running".into())
        }
    });

    // web1 leaves gracefully: the leave handler deletes its line and reloads.
    let reloads_before = lb.reload_count();
    let mut web1 = nodes.remove(0);
    assert!(web1.agent.stop().success(), "web1's graceful leave");
    web1.web.stop();
    wait_until(SETTLE, "web1's line gone from the config", || {
        let cfg = lb.config();
        if cfg.contains("server web1 ") {
            Err(format!(
                "config:\n{cfg}\nlb log:\n{}",
                lb.agent.log_tail(20)
            ))
        } else {
            Ok(())
        }
    });
    wait_answering(lb.fe, &["web2"], &mut lb.agent);
    assert!(
        lb.reload_count() > reloads_before,
        "the leave handler reloaded"
    );
    assert!(
        lb.agent.saw_member_event("member-leave", "web1"),
        "{}",
        lb.agent.log()
    );
    assert_eq!(
        fs::read("/etc/haproxy/haproxy.cfg").ok(),
        real_config,
        "the machine's own /etc/haproxy/haproxy.cfg is untouched"
    );
}

// Why the config has one line more than the original: HAProxy 2.6 refuses the server line the
// demo's join handler writes unless the section gives a port for health checks.
#[test]
fn haproxy_2_6_needs_a_check_port_for_the_originals_server_lines() {
    let dir = Haproxy::temp_dir("parity-check");
    let check = |port_fix: bool| {
        let path = dir.path().join(format!("haproxy-{port_fix}.cfg"));
        let cfg = original_config(
            &dir.path().join("admin.sock"),
            "127.0.0.1".parse().unwrap(),
            8080,
            8081,
            port_fix,
        ) + "    server web1 127.0.0.2 check\n";
        fs::write(&path, cfg).unwrap();
        let out = Command::new(haproxy_bin())
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("running haproxy -c");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = check(false);
    assert!(
        !ok && out.contains("neither service port nor check port"),
        "{out}"
    );
    let (ok, out) = check(true);
    assert!(ok, "{out}");
}
