//! `cargo bench -p vassal-roles --bench lb_balance` (after `cargo build --release -p vassal`):
//! the `-lb-balance` figures of bench/RESULTS.md, all on loopback with wrk.
//!
//! Three web nodes (`vassal agent -web-listen`, the built-in web role), one of them slowed by
//! `-web-delay` (every answer held `LB_BENCH_DELAY_MS`, default 20 ms, standing in for a node
//! with a CPU hog beside it); three balancers in the same cluster, one per method
//! (`roundrobin`, `leastconn`, `leastload`); wrk through each in turn, in one run: requests/s
//! and p50/p99 latency side by side. `LB_BENCH_SECS` sets the wrk duration (default 10),
//! `LB_BENCH_CONNS` its connections (default 32).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::*;
use vassal_testkit::{http_get, wait_until, Loopback, VassalAgent, Wrk};

/// A web node with the built-in web role, joining `join`, answering after `delay` ms.
fn web(name: &str, lo: &Loopback, join: SocketAddr, delay_ms: u32) -> VassalAgent {
    let mut b = VassalAgent::builder(name, lo)
        .tag("role", "web")
        .arg("-profile=local")
        .arg(&format!("-web-listen={}", lo.addr()))
        .join(join);
    if delay_ms > 0 {
        b = b.arg(&format!("-web-delay={delay_ms}ms"));
    }
    b.spawn()
}

fn stats(addr: SocketAddr) -> Result<Value, String> {
    let r = http_get(addr, "/stats.json", Duration::from_secs(5))?;
    serde_json::from_str(&r.body).map_err(|e| format!("stats.json: {e}: {}", r.body))
}

fn main() {
    // `cargo bench` passes --bench; anything else (`cargo test --all-targets`, nextest's
    // listing) must not start half a minute of load.
    if !std::env::args().any(|a| a == "--bench") {
        println!("lb_balance: run it with `cargo bench -p vassal-roles --bench lb_balance`");
        return;
    }
    let secs = env_u32("LB_BENCH_SECS", 10);
    let conns = env_u32("LB_BENCH_CONNS", 32);
    let delay = env_u32("LB_BENCH_DELAY_MS", 20);
    let d = Duration::from_secs(u64::from(secs));
    let lo = Loopback::fresh();

    let mut lbs = Vec::new();
    for method in ["roundrobin", "leastconn", "leastload"] {
        let (listen, stats_addr) = (lo.addr(), lo.addr());
        let mut args = vec![
            format!("-lb-listen={listen}"),
            format!("-lb-stats={stats_addr}"),
            format!("-lb-balance={method}"),
        ];
        if let Some((first, _, _, _)) = lbs.first() {
            let first: &VassalAgent = first;
            args.push(format!("-join={}", first.addr()));
        }
        let agent = lb_agent(&format!("lb-{method}"), &lo, &args);
        lbs.push((agent, listen, stats_addr, method));
    }
    let join = lbs[0].0.addr();
    let _nodes = [
        web("w1", &lo, join, 0),
        web("w2", &lo, join, 0),
        web("w3-slow", &lo, join, delay),
    ];
    for (agent, _, stats_addr, method) in &mut lbs {
        wait_until(
            SETTLE,
            &format!("three web nodes in rotation at lb-{method}"),
            || {
                agent.assert_running();
                let s = stats(*stats_addr)?;
                if s["in_rotation"] == serde_json::json!(["w1", "w2", "w3-slow"]) {
                    Ok(())
                } else {
                    Err(format!("{s:#}"))
                }
            },
        );
    }
    // The slowed node's load tag has reached the balancers (the health checks alone make it
    // report its delay).
    let (_, _, ll_stats, _) = &lbs[2];
    wait_until(
        SETTLE,
        "w3-slow's load figure at the leastload balancer",
        || {
            let s = stats(*ll_stats)?;
            let b = s["backends"]
                .as_array()
                .and_then(|a| a.iter().find(|b| b["name"] == "w3-slow"))
                .cloned()
                .unwrap_or(Value::Null);
            match b["load"].as_f64() {
                Some(l) if l >= f64::from(delay) => Ok(()),
                _ => Err(format!("{b:#}")),
            }
        },
    );

    println!(
        "\n## Balancing methods: wrk -t2 -c{conns} -d{secs}s, three web-role nodes, one held {delay} ms per answer\n"
    );
    println!("| -lb-balance | requests/s | p50 ms | p99 ms | failed |");
    println!("|---|---|---|---|---|");
    let mut reports = Vec::new();
    for (_, listen, stats_addr, method) in &lbs {
        let r = Wrk::run(&format!("http://{listen}/"), 2, conns, d);
        println!("{}", row(method, &r));
        if let Ok(s) = stats(*stats_addr) {
            let served: Vec<String> = s["backends"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|b| {
                            format!(
                                "{} {} (weight {})",
                                b["name"].as_str().unwrap_or("?"),
                                b["served"],
                                b["weight"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            eprintln!("  {method}: served {}", served.join(", "));
        }
        reports.push((*method, r));
    }
    let (rr, ll) = (&reports[0].1, &reports[2].1);
    println!(
        "\nleastload / roundrobin: throughput {:.2}×, p99 latency {:.3}×",
        ll.requests_per_sec / rr.requests_per_sec,
        ll.p99_ms / rr.p99_ms
    );
}
