//! `vassal demo` itself (issue 5), as a person runs it: start it, open the URLs it prints,
//! press Ctrl-C, and find nothing left running. It serves on the fixed ports
//! 127.0.0.1:8080 and :9999 (and the cluster page's default :9990), so this is the only test
//! that uses them; its agents' gossip addresses are moved off the default 127.0.0.10.. with
//! -bind-base.
//! Run `cargo build --release --bin vassal` first.

#[path = "support/demo.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{alive, fresh_base, started, Demo};
use vassal_testkit::{http_get, wait_until, Loopback};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

// Issue 5: `vassal demo` prints its URLs, round-robins through 127.0.0.1:8080, lists the three
// backends on 127.0.0.1:9999, and on Ctrl-C stops every agent it started.
#[test]
fn vassal_demo_serves_round_robin_and_ctrl_c_stops_every_agent() {
    let base = fresh_base();
    let log_dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(&[
        "-web=3".into(),
        format!("-bind-base={base}"),
        format!("-log-dir={}", log_dir.path().display()),
    ]);
    let out = demo.wait_started(4);
    assert!(out.contains("http://127.0.0.1:8080/"), "{out}");
    assert!(out.contains("http://127.0.0.1:9999/"), "{out}");
    assert!(out.contains("http://127.0.0.1:9990/"), "{out}");
    for i in 0..4u8 {
        let [a, b, c, d] = base.octets();
        let rpc = format!("{}:7373", Ipv4Addr::new(a, b, c, d + i));
        assert!(out.contains(&rpc), "no rpc address {rpc} printed:\n{out}");
    }
    let pids = started(&out);
    assert_eq!(
        pids.keys().collect::<Vec<_>>(),
        ["lb", "web-1", "web-2", "web-3"],
        "{out}"
    );

    let lb: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let stats: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    wait_until(
        Duration::from_secs(20),
        "three backends in rotation",
        || {
            let r = http_get(stats, "/stats.json", HTTP_TIMEOUT)?;
            let v: serde_json::Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
            if v["in_rotation"] == serde_json::json!(["web-1", "web-2", "web-3"]) {
                Ok(())
            } else {
                Err(format!("{v:#}\n{}", demo.output()))
            }
        },
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..30 {
        let r = http_get(lb, "/", HTTP_TIMEOUT).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "{}", r.body);
        *counts
            .entry(r.header("x-served-by").unwrap_or("none").to_owned())
            .or_insert(0) += 1;
    }
    let even: BTreeMap<String, usize> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|n| (n.to_string(), 10))
        .collect();
    assert_eq!(counts, even);
    // Issue 13: the lb node serves the cluster page, listing all four members.
    let ui: SocketAddr = "127.0.0.1:9990".parse().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the cluster page to list four alive members",
        || {
            let r = http_get(ui, "/cluster.json", HTTP_TIMEOUT)?;
            let v: serde_json::Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
            let alive = v["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["status"] == "alive").count());
            if alive == 4 && v["node"] == "lb" {
                Ok(())
            } else {
                Err(format!("{v:#}"))
            }
        },
    );
    let page = http_get(stats, "/", HTTP_TIMEOUT).unwrap();
    for n in ["web-1", "web-2", "web-3"] {
        assert!(
            page.body.contains(&format!("<td class=name>{n}</td>")),
            "{n} not on the stats page:\n{}",
            page.body
        );
    }

    demo.interrupt();
    let status = demo.wait_exit(Duration::from_secs(20));
    let out = demo.output();
    assert!(status.success(), "demo exited with {status}:\n{out}");
    assert!(out.contains("==> every agent has stopped"), "{out}");
    assert!(
        !out.contains("killing it"),
        "an agent had to be killed:\n{out}"
    );
    assert!(!out.contains("unexpectedly"), "{out}");
    for (name, pid) in &pids {
        assert!(!alive(*pid), "{name} (pid {pid}) is still running:\n{out}");
    }
    assert!(
        http_get(lb, "/", Duration::from_secs(1)).is_err(),
        "something still answers on {lb}"
    );
}

// If an agent dies under it, the demo says so (and keeps the rest running).
#[test]
fn vassal_demo_reports_an_agent_that_dies() {
    let base = fresh_base();
    // Off the fixed ports: this test runs beside the one above.
    let lo = Loopback::at(base);
    let log_dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(&[
        "-web=1".into(),
        format!("-bind-base={base}"),
        format!("-lb-listen={}", lo.addr()),
        format!("-lb-stats={}", lo.addr()),
        format!("-ui-addr={}", lo.addr()),
        format!("-log-dir={}", log_dir.path().display()),
    ]);
    let out = demo.wait_started(2);
    let pids = started(&out);
    let web = pids["web-1"];
    // Our demo's own child, by the PID it printed.
    kill(Pid::from_raw(web), Signal::SIGKILL).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the demo to report web-1's death",
        || {
            let out = demo.output();
            if out.contains(&format!("==> web-1 (pid {web}) exited unexpectedly")) {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
    demo.interrupt();
    assert!(demo.wait_exit(Duration::from_secs(20)).success());
    assert!(!alive(pids["lb"]), "{}", demo.output());
}

// A taken port is named before any agent starts, with the flag that moves it.
#[test]
fn vassal_demo_refuses_a_taken_port_and_names_the_flag() {
    let lo = Loopback::fresh();
    let taken = std::net::TcpListener::bind(lo.addr()).unwrap();
    let base = fresh_base();
    let mut demo = Demo::start(&[
        format!("-bind-base={base}"),
        format!("-lb-listen={}", taken.local_addr().unwrap()),
        format!("-lb-stats={}", lo.addr()),
        format!("-ui-addr={}", lo.addr()),
    ]);
    let status = demo.wait_exit(Duration::from_secs(10));
    let out = demo.output();
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("cannot use") && out.contains("pass -lb-listen"),
        "{out}"
    );
    assert!(started(&out).is_empty(), "no agent should start:\n{out}");
}
