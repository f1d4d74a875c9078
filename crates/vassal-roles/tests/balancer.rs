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

/// A test CA in `dir` (`ca.pem`) and two leaves it signed for `ip` and localhost:
/// `one.pem`/`one.key` (CN lb-one, serial 1001) and `two.pem`/`two.key` (CN lb-two, 1002).
fn make_certificates(dir: &std::path::Path, ip: std::net::IpAddr) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=vassal test CA",
        "-days",
        "1",
    ]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "subjectAltName=IP:{ip},DNS:localhost\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("writing leaf.ext");
    for (leaf, serial) in [("one", "1001"), ("two", "1002")] {
        let (key, csr, pem, subj) = (
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
            format!("{leaf}.pem"),
            format!("/CN=lb-{leaf}"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
                "-out",
                &pem,
            ],
        );
    }
}

/// `curl --cacert` through the balancer: (status, HTTP version, body, verbose log).
fn curl_https(ca: &std::path::Path, url: &str, http: &str) -> (String, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "5", http, "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code} %{http_version}", url])
        .output()
        .expect("running curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        tail.to_owned(),
        body.to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The serial and subject of the certificate a new connection to `addr` is shown.
fn served_certificate(ca: &std::path::Path, addr: SocketAddr) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -CAfile {} -verify_return_error </dev/null \
             2>/dev/null | openssl x509 -noout -serial -subject",
            ca.display()
        ))
        .output()
        .expect("running openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// Issue 15: HTTPS through the balancer with HTTP/1.1 and HTTP/2, checked against the test's
// own CA; a SIGHUP swaps the certificate for new connections while an open keep-alive
// connection carries on and serves its next request.
#[test]
fn https_with_both_protocols_and_sighup_swaps_the_certificate_keeping_open_connections() {
    use std::io::{Read, Write};
    use std::process::Stdio;

    let lo = Loopback::fresh();
    let dir = tempfile::tempdir().expect("a temporary directory");
    make_certificates(dir.path(), lo.ip().into());
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::copy(dir.path().join("one.pem"), &cert).expect("cert.pem");
    std::fs::copy(dir.path().join("one.key"), &key).expect("key.pem");
    let tls_args = [
        format!("-lb-tls-cert={}", cert.display()),
        format!("-lb-tls-key={}", key.display()),
    ];
    // The kept connection waits between its requests; give it room on a busy machine.
    let (mut lb, proxy, stats_addr) = balancer(
        "lb",
        &lo,
        &[&tls_args[0], &tls_args[1], "-lb-header-timeout=30s"],
    );
    let _w1 = web_node("w1", &lo, lo.addr(), true, lb.addr());
    wait_rotation(&mut lb, stats_addr, &["w1"]);

    let url = format!("https://{proxy}/");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (tail, body, log) = curl_https(&ca, &url, flag);
        assert_eq!(tail, format!("200 {version}"), "curl {flag}: {log}");
        assert_eq!(body, "w1\n", "curl {flag}");
    }
    assert_eq!(
        served_certificate(&ca, proxy),
        "serial=03E9\nsubject=CN = lb-one"
    );

    // One connection, kept open: a request before the swap and one after.
    let mut client = Command::new("openssl")
        .args(["s_client", "-connect", &proxy.to_string(), "-CAfile"])
        .arg(&ca)
        .args(["-verify_return_error", "-alpn", "http/1.1", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting openssl s_client");
    let mut stdin = client.stdin.take().expect("s_client's stdin");
    let mut stdout = client.stdout.take().expect("s_client's stdout");
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {proxy}\r\n\r\n");
    let answers = |n: usize, what: &str| {
        wait_until(Duration::from_secs(10), what, || {
            let s = seen.lock().unwrap().clone();
            if s.matches("HTTP/1.1 200 OK").count() >= n {
                Ok(())
            } else {
                Err(format!("s_client has read: {s:?}"))
            }
        })
    };
    stdin.write_all(request.as_bytes()).expect("first request");
    answers(1, "the first answer on the kept connection");

    std::fs::copy(dir.path().join("two.pem"), &cert).expect("new cert.pem");
    std::fs::copy(dir.path().join("two.key"), &key).expect("new key.pem");
    let hup = Command::new("kill")
        .args(["-HUP", &lb.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    lb.wait_log_contains("Reloaded the TLS certificate", SETTLE);
    lb.assert_running();
    assert_eq!(
        served_certificate(&ca, proxy),
        "serial=03EA\nsubject=CN = lb-two",
        "a new connection gets the new certificate"
    );
    let (tail, _, log) = curl_https(&ca, &url, "--http2");
    assert_eq!(tail, "200 2", "curl after the swap: {log}");

    stdin.write_all(request.as_bytes()).expect("second request");
    answers(
        2,
        "the second answer on the connection opened before the swap",
    );
    assert!(
        client.try_wait().expect("s_client status").is_none(),
        "the kept connection is still open"
    );
    drop(stdin);
    let _ = client.kill();
    let _ = client.wait();
    let _ = reader.join();
}
