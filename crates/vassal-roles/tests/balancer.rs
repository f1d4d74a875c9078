//! The built-in balancer past Serf's demo (issue 15): health checks an operator sets, bodies
//! streamed through with bounded memory. Each test runs real `vassal agent`s (build first:
//! `cargo build --release -p vassal`, or point `VASSAL_BIN` at a build) in front of the
//! testkit's web servers, all on loopback.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::*;
use vassal_testkit::{http_get, wait_until, Loopback, VassalAgent};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A balancer agent `name` on `lo` with its proxy and stats addresses and `extra` flags.
fn balancer(name: &str, lo: &Loopback, extra: &[&str]) -> (VassalAgent, SocketAddr, SocketAddr) {
    let (proxy, stats) = (lo.addr(), lo.addr());
    let mut args = vec![format!("-lb-listen={proxy}"), format!("-lb-stats={stats}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    (lb_agent(name, lo, &args), proxy, stats)
}

fn stats(stats: SocketAddr) -> Result<Value, String> {
    let r = http_get(stats, "/stats.json", HTTP_TIMEOUT)?;
    serde_json::from_str(&r.body).map_err(|e| format!("stats.json: {e}: {}", r.body))
}

fn backend(s: &Value, name: &str) -> Value {
    s["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `names` are exactly the backends in rotation.
#[track_caller]
fn wait_rotation(lb: &mut VassalAgent, stats_addr: SocketAddr, names: &[&str]) -> Value {
    wait_until(SETTLE, &format!("rotation {names:?}"), || {
        lb.assert_running();
        let s = stats(stats_addr)?;
        if s["in_rotation"] == serde_json::json!(names) {
            Ok(s)
        } else {
            Err(format!("{s:#}\nlb log:\n{}", lb.log_tail(20)))
        }
    })
}

/// The agent's resident set now and at its peak, in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

// Issue 15: a check that wants 204 fails against a server answering 200, says so on the stats
// page, and keeps the backend out; the same server passes a check that accepts 200.
#[test]
fn health_check_status_and_path_are_the_operators() {
    let lo = Loopback::fresh();
    let (mut strict, strict_proxy, strict_stats) = balancer(
        "strict",
        &lo,
        &[
            "-lb-check-path=/healthz",
            "-lb-check-status=204",
            "-lb-check-interval=200ms",
        ],
    );
    let join = format!("-join={}", strict.addr());
    let (mut plain, _, plain_stats) = balancer(
        "plain",
        &lo,
        &[
            "-lb-check-path=/healthz",
            "-lb-check-status=2xx",
            "-lb-check-interval=200ms",
            &join,
        ],
    );
    let _w1 = web_node("w1", &lo, lo.addr(), true, strict.addr());
    wait_rotation(&mut plain, plain_stats, &["w1"]);
    let s = wait_until(SETTLE, "the strict balancer's verdict on w1", || {
        strict.assert_running();
        let s = stats(strict_stats)?;
        let b = backend(&s, "w1");
        if b["last_check"] == "HTTP 200, expected 204" && b["state"] == "down" {
            Ok(s)
        } else {
            Err(format!("{s:#}"))
        }
    });
    assert_eq!(s["in_rotation"], serde_json::json!([]), "{s:#}");
    let r = http_get(strict_proxy, "/", HTTP_TIMEOUT).expect("the strict balancer answers");
    assert_eq!(r.status, 503, "no backend passes a 204 check: {}", r.body);
}

// Issue 15: a 100 MiB upload streams through the balancer to the backend, every byte of it,
// while the agent's resident set stays under 50 MiB (the old balancer buffered bodies whole,
// up to 1 MiB, and refused larger ones).
#[test]
fn a_100_mib_body_streams_through_with_the_agents_memory_bounded() {
    const SIZE: u64 = 100 << 20;
    const RSS_LIMIT_KIB: u64 = 50 << 10;
    let lo = Loopback::fresh();
    let (mut lb, proxy, stats_addr) = balancer("lb", &lo, &[]);
    let w1 = web_node("w1", &lo, lo.addr(), true, lb.addr());
    wait_rotation(&mut lb, stats_addr, &["w1"]);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("body");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(SIZE))
        .expect("a 100 MiB file");

    // Sample the agent's memory while the body passes.
    let pid = lb.pid();
    let (done, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "25", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{size_upload}"])
        .arg("-T")
        .arg(&file)
        .arg(format!("http://{proxy}/upload"))
        .output()
        .expect("running curl");
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        said,
        format!("200 {SIZE}"),
        "curl: {}\nlb log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        lb.log_tail(20)
    );
    assert_eq!(w1.web.received(), SIZE, "every byte reached the backend");
    let (rss, hwm) = rss_kib(pid).expect("the agent's /proc status");
    let sampled = peak.load(Ordering::Relaxed);
    eprintln!("agent RSS: now {rss} KiB, sampled peak {sampled} KiB, VmHWM {hwm} KiB");
    assert!(
        hwm < RSS_LIMIT_KIB && sampled < RSS_LIMIT_KIB,
        "the agent's memory grew with the body: VmHWM {hwm} KiB, sampled peak {sampled} KiB"
    );
}
