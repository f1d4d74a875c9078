//! The built-in load-balancer demo roles (issue 5), as a person running the demo would check
//! them: requests through the balancer, `X-Served-By`, and the stats page's JSON. Every agent is
//! a real `target/release/vassal agent` on its own loopback address (build it first:
//! `cargo build --release --bin vassal`).

#[path = "support/chromium.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::chromium;
use vassal_testkit::{http_get, wait_until, Loopback, VassalAgent, VassalAgentBuilder};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const CONVERGE: Duration = Duration::from_secs(20);

/// A load-balancer agent with its proxy and stats addresses.
struct Lb {
    agent: VassalAgent,
    proxy: SocketAddr,
    stats: SocketAddr,
}

fn lb_builder(lo: &Loopback) -> (VassalAgentBuilder, SocketAddr, SocketAddr) {
    let (proxy, stats) = (lo.addr(), lo.addr());
    let b = VassalAgent::builder("lb", lo)
        .tag("role", "lb")
        .arg(&format!("-lb-listen={proxy}"))
        .arg(&format!("-lb-stats={stats}"));
    (b, proxy, stats)
}

fn start_lb() -> Lb {
    let (b, proxy, stats) = lb_builder(&Loopback::fresh());
    Lb {
        agent: b.spawn(),
        proxy,
        stats,
    }
}

/// A web agent `name` on a loopback address of its own, retry-joining `lb_gossip`.
fn web_builder(name: &str, lb_gossip: SocketAddr) -> VassalAgentBuilder {
    let lo = Loopback::fresh();
    let http = lo.addr();
    VassalAgent::builder(name, &lo)
        .tag("role", "web")
        .arg(&format!("-web-listen={http}"))
        .arg(&format!("-retry-join={lb_gossip}"))
        .arg("-retry-interval=500ms")
}

fn stats(lb: &Lb) -> Result<Value, String> {
    let r = http_get(lb.stats, "/stats.json", HTTP_TIMEOUT)?;
    serde_json::from_str(&r.body).map_err(|e| format!("stats.json: {e}: {}", r.body))
}

fn in_rotation(s: &Value) -> Vec<String> {
    s["in_rotation"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn backend<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["backends"].as_array()?.iter().find(|b| b["name"] == name)
}

/// Waits until exactly `names` are in rotation; returns the stats.
#[track_caller]
fn wait_rotation(lb: &mut Lb, names: &[&str], deadline: Duration) -> Value {
    let what = format!("the balancer's rotation to be {names:?}");
    wait_until(deadline, &what, || {
        lb.agent.assert_running();
        let s = stats(lb)?;
        if in_rotation(&s) == names {
            Ok(s)
        } else {
            Err(format!("{s:#}\nlb log:\n{}", lb.agent.log_tail(20)))
        }
    })
}

/// `n` requests through the balancer, one after another; `X-Served-By` counts.
#[track_caller]
fn served_by(lb: &Lb, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let r = http_get(lb.proxy, "/", HTTP_TIMEOUT)
            .unwrap_or_else(|e| panic!("request {i} through the balancer: {e}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        let by = r
            .header("x-served-by")
            .unwrap_or_else(|| panic!("request {i} has no X-Served-By: {:?}", r.headers));
        *counts.entry(by.to_owned()).or_insert(0) += 1;
    }
    counts
}

fn even(names: &[&str], each: usize) -> BTreeMap<String, usize> {
    names.iter().map(|n| (n.to_string(), each)).collect()
}

/// Requests through the balancer from `threads` threads until stopped (at most `max` each, and
/// at most 60 s), recording every failure.
struct LoadLoop {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ok: Arc<Mutex<BTreeMap<String, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl LoadLoop {
    fn start(proxy: SocketAddr, threads: usize, max: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let began = Instant::now();
                    for _ in 0..max {
                        if stop.load(Ordering::Relaxed) || began.elapsed() > Duration::from_secs(60)
                        {
                            return;
                        }
                        match http_get(proxy, "/", HTTP_TIMEOUT) {
                            Ok(r) if r.status == 200 => {
                                let by = r.header("x-served-by").unwrap_or("?").to_owned();
                                *ok.lock().unwrap().entry(by).or_insert(0) += 1;
                            }
                            Ok(r) => failures.lock().unwrap().push(format!(
                                "HTTP {}: {}",
                                r.status,
                                r.body.trim()
                            )),
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                        // Bounded load: about 100 requests per second per thread at most.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        LoadLoop {
            stop,
            threads,
            ok,
            failures,
        }
    }

    fn total(&self) -> usize {
        self.ok.lock().unwrap().values().sum()
    }

    /// Stops the threads; (successes by node, failures).
    fn finish(self) -> (BTreeMap<String, usize>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let ok = self.ok.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (ok, failures)
    }
}

/// A balancer and web-1..web-3, in rotation.
fn cluster_of_three() -> (Lb, Vec<VassalAgent>) {
    let mut lb = start_lb();
    let webs: Vec<VassalAgent> = (1..=3)
        .map(|i| web_builder(&format!("web-{i}"), lb.agent.addr()).spawn())
        .collect();
    wait_rotation(&mut lb, &["web-1", "web-2", "web-3"], CONVERGE);
    (lb, webs)
}

// Issue 5: with three web nodes, 30 requests reach each exactly 10 times.
#[test]
fn thirty_requests_reach_each_of_three_web_nodes_ten_times() {
    let (lb, _webs) = cluster_of_three();
    assert_eq!(served_by(&lb, 30), even(&["web-1", "web-2", "web-3"], 10));
    let s = stats(&lb).unwrap();
    for n in ["web-1", "web-2", "web-3"] {
        let b = backend(&s, n).unwrap();
        assert_eq!(b["served"], 10, "{s:#}");
        assert_eq!(b["state"], "up", "{s:#}");
        assert!(b["last_check"].is_string(), "{s:#}");
    }
}

/// The names of the balancer's threads in `pid` (as `ps -T` shows them), sorted.
fn balancer_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the agent's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| c.starts_with("vassal-lb-"))
        .collect();
    names.sort();
    names
}

// As HAProxy's `nbthread`: `-lb-threads=3` runs three balancer threads, and requests dealt
// over them still reach the web nodes in turn.
#[test]
fn lb_threads_sets_how_many_threads_serve_the_balancer() {
    let (b, proxy, stats) = lb_builder(&Loopback::fresh());
    let mut lb = Lb {
        agent: b.arg("-lb-threads=3").spawn(),
        proxy,
        stats,
    };
    let _webs: Vec<VassalAgent> = (1..=2)
        .map(|i| web_builder(&format!("web-{i}"), lb.agent.addr()).spawn())
        .collect();
    wait_rotation(&mut lb, &["web-1", "web-2"], CONVERGE);
    assert_eq!(
        balancer_threads(lb.agent.pid()),
        ["vassal-lb-0", "vassal-lb-1", "vassal-lb-2"]
    );
    assert_eq!(served_by(&lb, 12), even(&["web-1", "web-2"], 6));
}

// Issue 5: kill -9 of a web node takes it out of rotation (no request fails, thanks to the
// retry on another backend), well within gossip's failure detection; a new web node is in
// rotation within 2 s of its join.
#[test]
fn kill_9_of_a_web_node_fails_no_request_and_a_new_node_joins_the_rotation() {
    let (mut lb, mut webs) = cluster_of_three();
    let load = LoadLoop::start(lb.proxy, 2, 5000);
    wait_until(
        Duration::from_secs(10),
        "the load loop to get going",
        || {
            if load.total() >= 20 {
                Ok(())
            } else {
                Err(format!("{} requests so far", load.total()))
            }
        },
    );

    let killed = Instant::now();
    webs[1].kill_9();
    wait_rotation(&mut lb, &["web-1", "web-3"], Duration::from_secs(10));
    let out_of_rotation = killed.elapsed();
    // The balancer's own checks and retries, not gossip, took it out.
    let s = stats(&lb).unwrap();
    let membership = backend(&s, "web-2").map(|b| b["membership"].clone());
    assert!(
        membership.as_ref().is_some_and(|m| m != "failed"),
        "web-2 should leave the rotation before gossip declares it failed; \
         its membership then: {membership:?}\n{s:#}"
    );
    wait_until(
        Duration::from_secs(30),
        "gossip to declare web-2 failed",
        || {
            let s = stats(&lb)?;
            match backend(&s, "web-2") {
                Some(b) if b["membership"] == "failed" => Ok(()),
                _ => Err(format!("{s:#}")),
            }
        },
    );
    let failed = killed.elapsed();
    println!(
        "kill -9 of web-2: out of rotation after {:.0} ms; member-failed after {:.1} s \
         (stats polled every 100 ms)",
        out_of_rotation.as_secs_f64() * 1000.0,
        failed.as_secs_f64()
    );

    let spawned = Instant::now();
    webs.push(web_builder("web-4", lb.agent.addr()).spawn());
    let joined = wait_until(CONVERGE, "the balancer to learn of web-4", || {
        let s = stats(&lb)?;
        backend(&s, "web-4")
            .map(|_| Instant::now())
            .ok_or_else(|| format!("{s:#}"))
    });
    wait_rotation(
        &mut lb,
        &["web-1", "web-3", "web-4"],
        Duration::from_secs(2),
    );
    println!(
        "web-4: in rotation {:.0} ms after the balancer saw its join ({:.0} ms after its process started)",
        joined.elapsed().as_secs_f64() * 1000.0,
        spawned.elapsed().as_secs_f64() * 1000.0
    );
    wait_until(Duration::from_secs(5), "web-4 to serve requests", || {
        let n = load.ok.lock().unwrap().get("web-4").copied().unwrap_or(0);
        if n > 0 {
            Ok(())
        } else {
            Err(format!("{:?}", load.ok.lock().unwrap()))
        }
    });

    let (ok, failures) = load.finish();
    println!("requests served during the test: {ok:?}");
    assert!(
        failures.is_empty(),
        "{} requests failed: {failures:?}",
        failures.len()
    );
    let s = stats(&lb).unwrap();
    let count = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("no {k} in the stats: {s:#}"))
    };
    assert!(count("retries") <= count("requests"), "{s:#}");
}

// Issue 5: a graceful leave (Ctrl-C) of a web node under load drains it: no request fails.
#[test]
fn graceful_leave_under_load_fails_no_request() {
    let (mut lb, mut webs) = cluster_of_three();
    let load = LoadLoop::start(lb.proxy, 4, 5000);
    wait_until(
        Duration::from_secs(10),
        "the load loop to reach every node",
        || {
            let ok = load.ok.lock().unwrap().clone();
            if ok.len() == 3 && ok.values().all(|n| *n >= 5) {
                Ok(())
            } else {
                Err(format!("{ok:?}"))
            }
        },
    );
    let status = webs[1].stop();
    assert!(status.success(), "web-2 should leave cleanly: {status}");
    let before = load.total();
    wait_rotation(&mut lb, &["web-1", "web-3"], Duration::from_secs(10));
    // Serf may show a graceful leave as failed first, when the memberlist leave overtakes the
    // leave intent; the intent turns it into left (as in Go).
    wait_until(
        Duration::from_secs(10),
        "web-2 to be listed as left",
        || {
            let s = stats(&lb)?;
            match backend(&s, "web-2").map(|b| b["membership"].clone()) {
                Some(m) if m == "left" => Ok(()),
                other => Err(format!("web-2's membership is {other:?}: {s:#}")),
            }
        },
    );
    wait_until(
        Duration::from_secs(10),
        "more requests after the leave",
        || {
            if load.total() >= before + 50 {
                Ok(())
            } else {
                Err(format!("{} requests so far", load.total()))
            }
        },
    );
    let (ok, failures) = load.finish();
    let s = stats(&lb).unwrap();
    println!(
        "requests served around web-2's leave: {ok:?}; the balancer retried {} of {}",
        s["retries"], s["requests"]
    );
    assert!(
        failures.is_empty(),
        "{} requests failed: {failures:?}",
        failures.len()
    );
    // Drained, not rescued: the balancer stopped sending to web-2 before it closed, so no
    // request needed the retry on another backend.
    assert_eq!(s["retries"], 0, "{s:#}");
}

/// Starts lb and web-1..3 in `order` (names), each after the previous is running.
fn converge_in_order(order: &[&str]) {
    let (lb_b, proxy, stats_addr) = lb_builder(&Loopback::fresh());
    let lb_gossip = lb_b.bind_addr();
    let mut lb_agent = None;
    let mut webs = Vec::new();
    for name in order {
        if *name == "lb" {
            lb_agent = Some(lb_b.spawn());
        } else {
            webs.push(web_builder(name, lb_gossip).spawn());
        }
    }
    let mut lb = Lb {
        agent: lb_agent.expect("the order names lb"),
        proxy,
        stats: stats_addr,
    };
    wait_rotation(&mut lb, &["web-1", "web-2", "web-3"], CONVERGE);
    assert_eq!(served_by(&lb, 30), even(&["web-1", "web-2", "web-3"], 10));
    for w in &mut webs {
        w.assert_running();
    }
}

// Issue 5: whatever the start order, the rotation converges to the same three web nodes.
#[test]
fn start_order_lb_first_converges() {
    converge_in_order(&["lb", "web-2", "web-1", "web-3"]);
}

#[test]
fn start_order_lb_last_converges() {
    converge_in_order(&["web-3", "web-1", "web-2", "lb"]);
}

#[test]
fn start_order_lb_middle_converges() {
    converge_in_order(&["web-1", "lb", "web-3", "web-2"]);
}

// A web node's page names it and lists the cluster's load, from the `load` query every node
// with a role answers; every response (a 404 too) says who served it.
#[test]
fn web_pages_name_their_host_and_show_the_cluster_load() {
    let (lb, webs) = cluster_of_three();
    let page = wait_until(
        Duration::from_secs(20),
        "a page with four load rows",
        || {
            let r = http_get(lb.proxy, "/", HTTP_TIMEOUT)?;
            let rows = r.body.matches("load average: ").count();
            if rows == 4 {
                Ok(r)
            } else {
                Err(format!("{rows} load rows in:\n{}", r.body))
            }
        },
    );
    let by = page.header("x-served-by").unwrap().to_owned();
    assert!(
        page.body.contains(&format!("<h1 id=\"host\">{by}</h1>")),
        "{}",
        page.body
    );
    for n in ["lb", "web-1", "web-2", "web-3"] {
        assert!(
            page.body.contains(&format!("<td class=node>{n}</td>")),
            "{n} missing:\n{}",
            page.body
        );
    }
    let missing = http_get(lb.proxy, "/nope", HTTP_TIMEOUT).unwrap();
    assert_eq!(missing.status, 404);
    assert!(
        missing.header("x-served-by").is_some(),
        "{:?}",
        missing.headers
    );
    drop(webs);
}

// Bad role flags are refused by name, before the agent starts.
#[test]
fn a_taken_lb_port_is_refused_with_the_flag_named() {
    let lo = Loopback::fresh();
    let taken = std::net::TcpListener::bind(lo.addr()).unwrap();
    let mut a = VassalAgent::builder("lb", &lo)
        .arg(&format!("-lb-listen={}", taken.local_addr().unwrap()))
        .spawn();
    let status = wait_until(Duration::from_secs(10), "the agent to exit", || {
        a.exit_status().ok_or_else(|| a.log_tail(10))
    });
    assert!(!status.success());
    let log = a.log();
    assert!(
        log.contains("cannot listen on") && log.contains("-lb-listen"),
        "{log}"
    );
}

// What a person sees in a browser: the stats page lists every backend (filled in live by its
// script from /stats.json), and a page through the balancer names its host and the load table.
#[test]
fn a_browser_shows_the_backends_on_the_stats_page_and_the_load_on_a_web_page() {
    let (lb, _webs) = cluster_of_three();
    served_by(&lb, 6);
    let dom = chromium(&format!("http://{}/", lb.stats), "stats");
    assert!(
        dom.contains("Live: updated"),
        "the page's script did not run:\n{dom}"
    );
    for n in ["web-1", "web-2", "web-3"] {
        assert!(
            dom.contains(&format!("<td class=\"name\">{n}</td>")),
            "{n} not listed:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches(" s ago</td>").count(),
        3,
        "each backend should show its last health check:\n{dom}"
    );

    // Each web node renders the answers to its own load query, and the browser's request goes
    // to whichever node is next in the rotation: wait until three requests in a row (one per
    // node, round robin) all show four rows.
    wait_until(
        Duration::from_secs(20),
        "web pages with the load of all four nodes, from every web node",
        || {
            for _ in 0..3 {
                let r = http_get(lb.proxy, "/", HTTP_TIMEOUT)?;
                if r.body.matches("load average: ").count() != 4 {
                    return Err(r.body);
                }
            }
            Ok(())
        },
    );
    let dom = chromium(&format!("http://{}/", lb.proxy), "web");
    let host = ["web-1", "web-2", "web-3"]
        .into_iter()
        .find(|n| dom.contains(&format!("<h1 id=\"host\">{n}</h1>")))
        .unwrap_or_else(|| panic!("no web node named in the heading:\n{dom}"));
    assert!(
        dom.contains(&format!("served by <b id=\"served-by\">{host}</b>")),
        "{dom}"
    );
    for n in ["lb", "web-1", "web-2", "web-3"] {
        assert!(
            dom.contains(&format!("<td class=\"node\">{n}</td>")),
            "{n} has no load row:\n{dom}"
        );
    }
    assert_eq!(dom.matches("load average: ").count(), 4, "{dom}");
}
