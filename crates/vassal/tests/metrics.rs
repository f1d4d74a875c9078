//! The metrics sinks a Serf user already runs, against real receivers (issue 13):
//! - a real Prometheus (Debian's package, its own config and TSDB in a temp dir) scrapes a
//!   3-node cluster's `-metrics-addr` every second and, through its HTTP API, sees
//!   `serf_member_join` rise when a fourth node joins and `serf_member_failed` after that node
//!   is killed with SIGKILL; `promtool check metrics` accepts the page;
//! - a statsd receiver (a UDP socket here) and a statsite one (a TCP listener) get
//!   `serf-agent.serf.member.join` lines in go-metrics' format;
//! - SIGUSR1 prints go-metrics' in-memory dump and the agent keeps running.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use vassal_testkit::{
    http_get, promtool_check_metrics, wait_until, Loopback, Prometheus, VassalAgent,
};

const CONVERGE: Duration = Duration::from_secs(30);
/// Failure detection on a LAN profile takes a few seconds; Prometheus adds a scrape.
const FAILURE: Duration = Duration::from_secs(60);

/// `expr`'s value per scraped instance (the `instance` label).
fn by_instance(prom: &Prometheus, expr: &str) -> Result<BTreeMap<String, f64>, String> {
    let samples = prom.query(expr)?;
    Ok(samples
        .into_iter()
        .map(|s| {
            let inst = s.labels["instance"].as_str().unwrap_or_default().to_owned();
            (inst, s.value)
        })
        .collect())
}

/// A config file in `dir` holding `json`, as the `-config-file` argument.
fn config_file(dir: &tempfile::TempDir, json: &str) -> String {
    let path = dir.path().join("metrics.json");
    std::fs::write(&path, json).unwrap();
    format!("-config-file={}", path.display())
}

#[test]
fn prometheus_scrapes_a_cluster_and_sees_a_join_and_a_failure() {
    let lo = Loopback::fresh();
    let metrics: Vec<SocketAddr> = (0..3).map(|_| lo.addr()).collect();
    let a = VassalAgent::builder("a", &lo)
        .arg(&format!("-metrics-addr={}", metrics[0]))
        .spawn_ready();
    let b = VassalAgent::builder("b", &lo)
        .join(a.addr())
        .arg(&format!("-metrics-addr={}", metrics[1]))
        .spawn_ready();
    let c = VassalAgent::builder("c", &lo)
        .join(a.addr())
        .arg(&format!("-metrics-addr={}", metrics[2]))
        .spawn_ready();
    a.wait_alive_count(3, CONVERGE);

    // The page itself: Go's flattened names, and promtool finds nothing wrong with it.
    let page = http_get(metrics[0], "/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{page:?}"
    );
    assert!(
        page.body
            .lines()
            .any(|l| l.starts_with("serf_member_join ")),
        "no serf_member_join in\n{}",
        page.body
    );
    if let Err(e) = promtool_check_metrics(&page.body) {
        panic!("{e}\nthe page:\n{}", page.body);
    }

    let prom = Prometheus::start(&lo, &metrics);
    let instances: Vec<String> = metrics.iter().map(ToString::to_string).collect();
    let before = wait_until(CONVERGE, "Prometheus to scrape all three agents", || {
        let up = by_instance(&prom, "up")?;
        let joins = by_instance(&prom, "serf_member_join")?;
        if instances
            .iter()
            .all(|i| up.get(i) == Some(&1.0) && joins.contains_key(i))
        {
            Ok(joins)
        } else {
            Err(format!(
                "up {up:?}\nserf_member_join {joins:?}\n{}",
                prom.log()
            ))
        }
    });

    // A fourth node joins: every agent counts it.
    let mut d = VassalAgent::builder("d", &lo).join(a.addr()).spawn_ready();
    a.wait_alive_count(4, CONVERGE);
    wait_until(CONVERGE, "serf_member_join to rise on all three", || {
        let now = by_instance(&prom, "serf_member_join")?;
        if instances
            .iter()
            .all(|i| now.get(i).copied().unwrap_or(0.0) > before.get(i).copied().unwrap_or(0.0))
        {
            Ok(())
        } else {
            Err(format!("before {before:?}\nnow {now:?}"))
        }
    });

    // It is killed: the others find it failed.
    d.kill_9();
    wait_until(FAILURE, "serf_member_failed on all three", || {
        let failed = by_instance(&prom, "serf_member_failed")?;
        if instances
            .iter()
            .all(|i| failed.get(i).copied().unwrap_or(0.0) >= 1.0)
        {
            Ok(())
        } else {
            Err(format!("serf_member_failed {failed:?}"))
        }
    });
    drop((b, c));
}

#[test]
fn statsd_and_statsite_receive_go_metrics_lines_with_the_agents_prefix() {
    let lo = Loopback::fresh();
    let statsd = UdpSocket::bind(lo.addr()).unwrap();
    statsd
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let statsite = TcpListener::bind(lo.addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!(
            r#"{{"statsd_addr": "{}", "statsite_addr": "{}"}}"#,
            statsd.local_addr().unwrap(),
            statsite.local_addr().unwrap()
        ),
    );
    let a = VassalAgent::builder("a", &lo).arg(&config).spawn_ready();
    let _b = VassalAgent::builder("b", &lo).join(a.addr()).spawn_ready();
    a.wait_alive_count(2, CONVERGE);

    let want = "serf-agent.serf.member.join:1.000000|c\n";
    // With a statsd or statsite sink Serf names gauges under the host.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let gauge = format!(
        "serf-agent.{}.vassal.members.alive:2.000000|g\n",
        host.trim()
    );
    let mut got = String::new();
    wait_until(
        CONVERGE,
        "statsd datagrams with the join and a gauge",
        || {
            let mut buf = [0u8; 2048];
            if let Ok(n) = statsd.recv(&mut buf) {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            if got.contains(want) && got.contains(&gauge) {
                Ok(())
            } else {
                Err(got.clone())
            }
        },
    );
    // Every datagram is whole lines, each `name:value|type`.
    let shape = regex::Regex::new(r"^[^:\s]+:-?\d+\.\d{6}\|(c|g|ms)$").unwrap();
    for line in got.lines() {
        assert!(shape.is_match(line), "{line:?} in\n{got}");
    }

    let (mut stream, _) = statsite.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = String::new();
    wait_until(CONVERGE, "the join on the statsite stream", || {
        let mut buf = [0u8; 4096];
        if let Ok(n) = stream.read(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        if got.contains(want) {
            Ok(())
        } else {
            Err(got.clone())
        }
    });
}

#[test]
fn sigusr1_prints_the_in_memory_sink_and_the_agent_keeps_running() {
    let lo = Loopback::fresh();
    let metrics = lo.addr();
    let mut a = VassalAgent::builder("a", &lo)
        .arg(&format!("-metrics-addr={metrics}"))
        .spawn_ready();
    let _b = VassalAgent::builder("b", &lo).join(a.addr()).spawn_ready();
    a.wait_alive_count(2, CONVERGE);
    let pid = nix::unistd::Pid::from_raw(a.pid() as i32);
    // The dump holds finished 10 s intervals only, as Go's does: signal now and then until
    // the join's interval has closed.
    let mut last = Instant::now() - Duration::from_secs(60);
    let line = wait_until(
        Duration::from_secs(45),
        "the join in a SIGUSR1 dump",
        || {
            a.assert_running();
            if last.elapsed() >= Duration::from_secs(2) {
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
                last = Instant::now();
            }
            let log = a.log();
            log.lines()
                .find(|l| l.contains("][C] 'serf-agent.serf.member.join': Count: "))
                .map(str::to_owned)
                .ok_or_else(|| a.log_tail(30))
        },
    );
    // go-metrics' `[interval][C] 'name': Count: n Sum: …  LastUpdated: …` line.
    let re = regex::Regex::new(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d0 \+0000 UTC\]\[C\] 'serf-agent\.serf\.member\.join': Count: \d+ .*LastUpdated: \d{4}-",
    )
    .unwrap();
    assert!(re.is_match(&line), "{line}");
    // The agent's own figures come with it, as gauges (no host name without statsd/statsite,
    // as in Serf).
    let log = a.log();
    assert!(
        regex::Regex::new(r"\]\[G\] 'serf-agent\.vassal\.members\.alive': 2\.000")
            .unwrap()
            .is_match(&log),
        "{}",
        a.log_tail(40)
    );
    a.assert_running();
    let out = a.cli(&["members"]).expect("members after SIGUSR1");
    assert_eq!(out.lines().count(), 2, "{out}");
}

/// The value of the first line of `page` that starts with `series` (name and labels, as
/// written), if any.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn the_balancer_exports_requests_latency_and_rotation_per_backend() {
    let lo = Loopback::fresh();
    let (proxy, metrics) = (lo.addr(), lo.addr());
    let lb = VassalAgent::builder("lb", &lo)
        .tag("role", "lb")
        .arg(&format!("-lb-listen={proxy}"))
        .arg(&format!("-metrics-addr={metrics}"))
        .spawn_ready();
    let web_lo = Loopback::fresh();
    let web = VassalAgent::builder("w1", &web_lo)
        .tag("role", "web")
        .arg(&format!("-web-listen={}", web_lo.addr()))
        .join(lb.addr())
        .spawn_ready();
    lb.wait_alive_count(2, CONVERGE);
    // Through the balancer once the web node is in rotation (its first check passed).
    wait_until(
        CONVERGE,
        "a request through the balancer to be answered",
        || {
            let r = http_get(proxy, "/", Duration::from_secs(5))?;
            (r.status == 200).then_some(()).ok_or(format!("{r:?}"))
        },
    );
    let page = wait_until(CONVERGE, "the balancer's figures on /metrics", || {
        let page = http_get(metrics, "/metrics", Duration::from_secs(5))?.body;
        let requests = sample(&page, "vassal_lb_requests").unwrap_or(0.0);
        let to_w1 = sample(&page, r#"vassal_lb_backend_requests{backend="w1"}"#).unwrap_or(0.0);
        let rotation = sample(&page, "vassal_lb_in_rotation");
        if requests >= 1.0 && to_w1 >= 1.0 && rotation == Some(1.0) {
            Ok(page)
        } else {
            Err(format!(
                "requests {requests}, to w1 {to_w1}, in rotation {rotation:?}\n{page}"
            ))
        }
    });
    assert!(
        page.lines()
            .any(|l| l.starts_with("vassal_lb_backend_latency") && l.contains(r#"backend="w1""#)),
        "no latency for w1 in\n{page}"
    );
    if let Err(e) = promtool_check_metrics(&page) {
        panic!("{e}\nthe page:\n{page}");
    }
    drop(web);
}
