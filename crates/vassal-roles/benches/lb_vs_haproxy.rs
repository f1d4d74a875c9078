//! `cargo bench -p vassal-roles --bench lb_vs_haproxy` (after `cargo build --release -p
//! vassal`): the load-balancer figures of bench/RESULTS.md, all on loopback with wrk.
//!
//! 1. Throughput and p99 latency through HAProxy (kept in step by `-haproxy-socket`) and
//!    through Vassal's built-in load balancer (`-lb-listen`), over the
//!    same three web backends, in one run, with the ratio; plus one backend directly, for scale.
//!    Then the same over TLS: HAProxy terminating with OpenSSL (`bind … ssl crt`) against the
//!    built-in balancer with rustls (`-lb-tls-cert`/`-lb-tls-key`), one self-signed P-256
//!    certificate for both, HTTP/1.1 (wrk offers no ALPN), keep-alive connections.
//!    Each proxy row also gives what the proxy's threads spent per request: CPU time, and
//!    preemptions (the kernel taking a CPU from a thread that could still run), to tell a
//!    proxy that costs more from one that the scheduler treated worse.
//! 2. A graceful leave under load: failed requests with HAProxy through the runtime API, with
//!    the original demo's handlers and reloads, and with the built-in load balancer.
//!
//! `LB_BENCH_SECS` sets the wrk duration of part 1 (default 10), `LB_BENCH_CONNS` its
//! connections (default 32), `LB_BENCH_ROUNDS` how many times HAProxy and the built-in
//! balancer are measured in turn (default 5; the ratios are the rounds' medians);
//! `LB_BENCH_SKIP_TLS=1` skips the TLS rows and `LB_BENCH_ONLY_THROUGHPUT=1` part 2.
//! `LB_BENCH_BASELINE_BIN=PATH` also runs the built-in balancer from another `vassal` binary
//! (the build before a change) beside this one, over the same backends, and compares the two
//! in alternating rounds as it compares HAProxy: what a change to the balancer bought, which
//! the ratios against HAProxy cannot resolve when the machine drifts more than the change.
//!
//! `LB_BENCH_INSTRUCTIONS=1` runs neither part: instead it counts, with valgrind's callgrind,
//! the instructions HAProxy and the built-in balancer (and the baseline build, if given) run
//! per request, a figure that does not move with the machine (see `instructions`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use vassal_testkit::{vassal_bin, wait_until, Haproxy, Loopback, VassalAgent, Wrk, WrkReport};

/// The built-in load balancer: `vassal agent -tag role=lb -lb-listen=… -lb-stats=…`, joining
/// `join` if given.
fn builtin_lb(lo: &Loopback, name: &str, join: Option<SocketAddr>) -> (VassalAgent, SocketAddr) {
    let listen = lo.addr();
    let stats = lo.addr();
    let mut args = vec![format!("-lb-listen={listen}"), format!("-lb-stats={stats}")];
    args.extend(join.map(|j| format!("-join={j}")));
    (lb_agent(name, lo, &args), listen)
}

fn throughput() {
    let secs = env_u32("LB_BENCH_SECS", 10);
    let conns = env_u32("LB_BENCH_CONNS", 32);
    let rounds = env_u32("LB_BENCH_ROUNDS", 5).max(1);
    let d = Duration::from_secs(u64::from(secs));
    let lo = Loopback::fresh();
    let fe = lo.addr();
    let fe_tls = lo.addr();
    let certs = tempfile::tempdir().expect("a temp dir for the certificate");
    let (cert, key, both) = self_signed(certs.path(), lo.ip().into());
    // One HAProxy, two frontends over the same runtime-synced backend.
    let sections = format!(
        "{}\nfrontend fe_tls\n    bind {fe_tls} ssl crt {} alpn h2,http/1.1\n    \
         default_backend web\n",
        runtime_sections(fe),
        both.display()
    );
    let haproxy = Haproxy::start("bench", &sections);
    let mut lb = runtime_lb(&lo, &haproxy);
    let nodes: Vec<WebNode> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| web_node(n, &lo, lo.addr(), true, lb.addr()))
        .collect();
    wait_servers(&haproxy, &mut lb, &ready(&nodes), "three ready servers");
    let (mut builtin, listen) = builtin_lb(&lo, "lb2", Some(lb.addr()));
    wait_answering(listen, &["w1", "w2", "w3"], &mut builtin);
    wait_answering(fe, &["w1", "w2", "w3"], &mut lb);
    let listen_tls = lo.addr();
    let mut builtin_tls = lb_agent(
        "lb3",
        &lo,
        &[
            format!("-lb-listen={listen_tls}"),
            format!("-lb-stats={}", lo.addr()),
            format!("-lb-tls-cert={}", cert.display()),
            format!("-lb-tls-key={}", key.display()),
            format!("-join={}", lb.addr()),
        ],
    );
    wait_answering_tls(listen_tls, &["w1", "w2", "w3"], &mut builtin_tls);
    wait_answering_tls(fe_tls, &["w1", "w2", "w3"], &mut lb);
    let baseline = std::env::var_os("LB_BENCH_BASELINE_BIN").map(|bin| {
        let bin = PathBuf::from(bin);
        let (plain, tls) = (lo.addr(), lo.addr());
        let mut agents = [
            lb_agent_from(
                Some(&bin),
                "lb-base",
                &lo,
                &[
                    format!("-lb-listen={plain}"),
                    format!("-lb-stats={}", lo.addr()),
                    format!("-join={}", lb.addr()),
                ],
            ),
            lb_agent_from(
                Some(&bin),
                "lb-base-tls",
                &lo,
                &[
                    format!("-lb-listen={tls}"),
                    format!("-lb-stats={}", lo.addr()),
                    format!("-lb-tls-cert={}", cert.display()),
                    format!("-lb-tls-key={}", key.display()),
                    format!("-join={}", lb.addr()),
                ],
            ),
        ];
        wait_answering(plain, &["w1", "w2", "w3"], &mut agents[0]);
        wait_answering_tls(tls, &["w1", "w2", "w3"], &mut agents[1]);
        (bin, agents, plain, tls)
    });

    println!(
        "\n## Throughput and p99: wrk -t2 -c{conns} -d{secs}s, three loopback web backends, \
         {rounds} round(s)\n"
    );
    println!("{TABLE_HEAD}");
    let direct = Wrk::run(&format!("http://{}/", nodes[0].web.addr()), 2, conns, d);
    println!(
        "{} – | – |",
        row("one web backend directly (no LB)", &direct)
    );
    compare(
        rounds,
        (
            "HAProxy 2.6 (runtime-API sync)",
            &format!("http://{fe}/"),
            haproxy.pid(),
        ),
        (
            "Vassal built-in LB",
            &format!("http://{listen}/"),
            builtin.pid(),
        ),
        "built-in / HAProxy",
        |url| Wrk::run(url, 2, conns, d),
    );
    if let Some((bin, agents, plain, _)) = &baseline {
        println!("\n## This build against the baseline {}\n", bin.display());
        println!("{TABLE_HEAD}");
        compare(
            rounds,
            (
                "Vassal built-in LB, baseline build",
                &format!("http://{plain}/"),
                agents[0].pid(),
            ),
            (
                "Vassal built-in LB, this build",
                &format!("http://{listen}/"),
                builtin.pid(),
            ),
            "this build / baseline",
            |url| Wrk::run(url, 2, conns, d),
        );
    }

    if std::env::var_os("LB_BENCH_SKIP_TLS").is_some() {
        return;
    }
    println!("\n## The same over TLS (HTTP/1.1, keep-alive, one P-256 certificate)\n");
    println!("{TABLE_HEAD}");
    compare(
        rounds,
        (
            "HAProxy 2.6, TLS by OpenSSL",
            &format!("https://{fe_tls}/"),
            haproxy.pid(),
        ),
        (
            "Vassal built-in LB, TLS by rustls",
            &format!("https://{listen_tls}/"),
            builtin_tls.pid(),
        ),
        "built-in / HAProxy over TLS",
        |url| Wrk::run(url, 2, conns, d),
    );
    if let Some((bin, agents, _, tls)) = &baseline {
        println!(
            "\n## Over TLS, this build against the baseline {}\n",
            bin.display()
        );
        println!("{TABLE_HEAD}");
        compare(
            rounds,
            (
                "Vassal built-in LB, TLS, baseline build",
                &format!("https://{tls}/"),
                agents[1].pid(),
            ),
            (
                "Vassal built-in LB, TLS, this build",
                &format!("https://{listen_tls}/"),
                builtin_tls.pid(),
            ),
            "this build / baseline over TLS",
            |url| Wrk::run(url, 2, conns, d),
        );
    }
}

/// What a proxy's threads spent during one wrk run: time on a CPU, and how many times the
/// kernel took a CPU from one of them while it could still run (a preemption, as opposed to
/// waiting in `epoll_wait`). Summed over `/proc/PID/task/*`: `schedstat`'s first field and
/// `status`'s `nonvoluntary_ctxt_switches`.
#[derive(Clone, Copy, Default)]
struct Spent {
    cpu_ns: u64,
    preempted: u64,
}

impl Spent {
    /// Panics if the process's threads cannot be listed: a proxy that is gone has no figures,
    /// and zeros would print as a proxy that cost nothing. A thread that ends while it is
    /// read counts for nothing.
    fn of(pid: u32) -> Spent {
        let mut spent = Spent::default();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap_or_else(|e| panic!("listing the threads of proxy PID {pid}: {e}"));
        for task in tasks.flatten() {
            let dir = task.path();
            let cpu = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
            spent.cpu_ns += cpu
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            spent.preempted += status
                .lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        spent
    }

    /// Per request of `r`, from `before` to `self`: CPU µs and preemptions.
    fn per_request(self, before: Spent, r: &WrkReport) -> (f64, f64) {
        let requests = (r.requests as f64).max(1.0);
        (
            (self.cpu_ns.saturating_sub(before.cpu_ns)) as f64 / 1e3 / requests,
            (self.preempted.saturating_sub(before.preempted)) as f64 / requests,
        )
    }
}

/// A proxy to compare against (`base`: HAProxy, or a baseline build of the balancer) and the
/// built-in balancer (`own`), each a label, a URL and the PID whose CPU time and preemptions
/// are counted, `rounds` times in turn, each round's rows printed; then the medians of the
/// rounds' ratios. The order alternates from round to round, so that a
/// machine growing busier or quieter favours neither.
fn compare(
    rounds: u32,
    base: (&str, &str, u32),
    own: (&str, &str, u32),
    what: &str,
    run: impl Fn(&str) -> WrkReport,
) {
    let (mut rps, mut p99, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut base_preempted, mut own_preempted) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let one = |(label, url, pid): (&str, &str, u32)| {
            let before = Spent::of(pid);
            let r = run(url);
            let (cpu, preempted) = Spent::of(pid).per_request(before, &r);
            let label = if rounds > 1 {
                format!("{label}, round {round}")
            } else {
                label.to_owned()
            };
            println!("{} {cpu:.1} | {preempted:.2} |", row(&label, &r));
            (r, cpu, preempted)
        };
        let (h, o) = if round % 2 == 1 {
            let h = one(base);
            (h, one(own))
        } else {
            let o = one(own);
            (one(base), o)
        };
        rps.push(o.0.requests_per_sec / h.0.requests_per_sec);
        p99.push(o.0.p99_ms / h.0.p99_ms);
        cpu.push(o.1 / h.1);
        base_preempted.push(h.2);
        own_preempted.push(o.2);
    }
    let each = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\n{what}: throughput {:.2}×, p99 latency {:.2}× (medians of {rounds} round(s): \
         throughput {}; p99 {})",
        median(&rps),
        median(&p99),
        each(&rps),
        each(&p99)
    );
    println!(
        "{what}: CPU per request {:.2}× ({}); preemptions per request {:.2} against {:.2}",
        median(&cpu),
        each(&cpu),
        median(&own_preempted),
        median(&base_preempted)
    );
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The last two columns are the proxy's: its threads' CPU time and preemptions per request.
const TABLE_HEAD: &str = "| target | requests/s | p50 ms | p99 ms | failed | CPU µs/request | \
     preempted/request |\n|---|---|---|---|---|---|---|";

/// A self-signed P-256 certificate for `ip` in `dir`: the certificate, the key, and both in
/// one file (HAProxy's `crt`). wrk does not verify it; curl is told not to.
fn self_signed(dir: &Path, ip: IpAddr) -> (PathBuf, PathBuf, PathBuf) {
    let san = format!("subjectAltName=IP:{ip}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=lb bench",
            "-addext",
            &san,
        ],
    );
    let (cert, key, both) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("both.pem"),
    );
    let pem = std::fs::read_to_string(&cert).expect("reading cert.pem")
        + &std::fs::read_to_string(&key).expect("reading key.pem");
    std::fs::write(&both, pem).expect("writing both.pem");
    (cert, key, both)
}

/// Like `wait_answering`, over HTTPS (`curl -k`).
fn wait_answering_tls(addr: SocketAddr, want: &[&str], lb: &mut VassalAgent) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    wait_until(
        SETTLE,
        &format!("{want:?} to answer through https://{addr}"),
        || {
            lb.assert_running();
            let got: Result<BTreeSet<String>, String> = (0..2 * want.len() + 2)
                .map(|_| {
                    let out = Command::new("curl")
                        .args(["-sSk", "--max-time", "2"])
                        .arg(format!("https://{addr}/"))
                        .output()
                        .map_err(|e| format!("running curl: {e}"))?;
                    if out.status.success() {
                        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
                    } else {
                        Err(String::from_utf8_lossy(&out.stderr).into_owned())
                    }
                })
                .collect();
            match got {
                Ok(got) if got == want => Ok(()),
                got => Err(format!("answered by {got:?}\nlb log:\n{}", lb.log_tail(20))),
            }
        },
    );
}

/// One graceful leave under wrk load; returns the report and how long after the leave started
/// its agent exited.
fn leave_under_load(
    fe: SocketAddr,
    nodes: &mut Vec<WebNode>,
    lb: &mut VassalAgent,
) -> (WrkReport, Duration) {
    let wrk = Wrk::spawn(&format!("http://{fe}/"), 1, 8, Duration::from_secs(8));
    let before = nodes[0].web.served();
    wait_until(SETTLE, "load to reach the leaving node", || {
        lb.assert_running();
        let n = nodes[0].web.served();
        if n > before + 500 && wrk.elapsed() > Duration::from_secs(2) {
            Ok(())
        } else {
            Err(format!("served {n}"))
        }
    });
    let mut w1 = nodes.remove(0);
    let t = Instant::now();
    let status = w1.agent.stop();
    let took = t.elapsed();
    assert!(status.success(), "graceful leave exited with {status}");
    w1.web.stop();
    (wrk.wait(), took)
}

fn leave_row(what: &str, r: &WrkReport, took: Duration) -> String {
    format!(
        "| {what} | {} | {} | {} / {} / {} / {} | {:.0} | {:.1} s |",
        r.requests,
        r.failed(),
        r.bad_status,
        r.connect_errors,
        r.read_errors + r.write_errors,
        r.timeouts,
        r.requests_per_sec,
        took.as_secs_f64()
    )
}

fn leaves() {
    println!("\n## A graceful leave under load: wrk -t1 -c8 -d8s, one of three web nodes leaves\n");
    println!(
        "| load balancer | requests | failed | of which bad status / connect / read+write / \
         timeout | requests/s | leave took |"
    );
    println!("|---|---|---|---|---|---|");

    // HAProxy through the runtime API.
    {
        let lo = Loopback::fresh();
        let fe = lo.addr();
        let haproxy = Haproxy::start("bench-leave", &runtime_sections(fe));
        let mut lb = runtime_lb(&lo, &haproxy);
        let mut nodes: Vec<WebNode> = ["w1", "w2", "w3"]
            .iter()
            .map(|n| web_node(n, &lo, lo.addr(), true, lb.addr()))
            .collect();
        wait_servers(&haproxy, &mut lb, &ready(&nodes), "three ready servers");
        let (r, took) = leave_under_load(fe, &mut nodes, &mut lb);
        println!("{}", leave_row("HAProxy, runtime API (drain)", &r, took));
    }

    // The original demo: handlers rewrite the config and reload HAProxy.
    {
        let lb_lo = Loopback::fresh();
        let port = lb_lo.free_port();
        let mut lb = OriginalLb::start(&lb_lo, port);
        let mut nodes: Vec<WebNode> = ["web1", "web2", "web3"]
            .iter()
            .map(|name| {
                let lo = Loopback::fresh();
                web_node(
                    name,
                    &lo,
                    SocketAddr::new(lo.ip().into(), port),
                    false,
                    lb.agent.addr(),
                )
            })
            .collect();
        wait_answering(lb.fe, &["web1", "web2", "web3"], &mut lb.agent);
        let reloads = lb.reload_count();
        let (r, took) = leave_under_load(lb.fe, &mut nodes, &mut lb.agent);
        println!(
            "{}",
            leave_row("HAProxy, original handlers (reload)", &r, took)
        );
        eprintln!(
            "(original path: {} reload(s) during the run)",
            lb.reload_count() - reloads
        );
    }

    let lo = Loopback::fresh();
    let (mut lb, listen) = builtin_lb(&lo, "lb", None);
    let mut nodes: Vec<WebNode> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| web_node(n, &lo, lo.addr(), true, lb.addr()))
        .collect();
    wait_answering(listen, &["w1", "w2", "w3"], &mut lb);
    let (r, took) = leave_under_load(listen, &mut nodes, &mut lb);
    println!("{}", leave_row("Vassal built-in LB", &r, took));
}

/// A process run under valgrind's callgrind (HAProxy, here), killed by PID when dropped.
struct Profiled(std::process::Child);

impl Drop for Profiled {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The instructions callgrind counted in `pid` during a wrk run against `url`, per request:
/// its counters are zeroed before the run and dumped to `out.N` after it.
fn instructions_per_request(pid: u32, out: &Path, url: &str, d: Duration) -> (WrkReport, f64) {
    let control = |what: &str| {
        let status = Command::new("callgrind_control")
            .args([what, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running callgrind_control {what} {pid}: {e}"));
        assert!(status.success(), "callgrind_control {what} {pid}: {status}");
    };
    let dir = out.parent().expect("the dump's directory");
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    // callgrind names each dump after `out`, with the dump's number appended.
    let dumps = || -> BTreeSet<PathBuf> {
        std::fs::read_dir(dir)
            .map(|e| {
                e.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(name) && n != name)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = dumps();
    control("-z");
    let r = Wrk::run(url, 1, 8, d);
    control("-d");
    assert!(
        r.requests > 0,
        "wrk got no answer through {url} in {d:?} under callgrind (PID {pid}): no figure per request"
    );
    let mut total = 0u64;
    wait_until(SETTLE, &format!("callgrind's dump of PID {pid}"), || {
        for dump in dumps().difference(&before) {
            let text = std::fs::read_to_string(dump).unwrap_or_default();
            if let Some(line) = text.lines().find_map(|l| l.strip_prefix("totals: ")) {
                total = line
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: a totals line that is not a count: {line:?}",
                            dump.display()
                        )
                    });
                return Ok(());
            }
        }
        Err("no new dump with its totals yet".to_owned())
    });
    let per = total as f64 / r.requests as f64;
    (r, per)
}

/// `LB_BENCH_INSTRUCTIONS=1`: the instructions each proxy's own code runs per request, counted
/// by valgrind's callgrind over one wrk run (`-t1 -c8`, `LB_BENCH_INSTRUCTIONS_SECS`, default
/// 10) against HAProxy and the built-in balancer, each under callgrind, over three web
/// backends. User space only: the kernel's part (the same sends and receives for both) is not
/// in it. Unlike the timings, this figure does not drift with the machine, so it resolves a
/// change of a few percent in one run; with `LB_BENCH_BASELINE_BIN` the baseline build is
/// counted too. The agent's count includes its own background work (gossip, one health check
/// a second per backend), well under 1 % of a run's. `LB_BENCH_INSTRUCTIONS_KEEP=1` keeps the
/// dumps (with a build that has symbols, `callgrind_annotate` says where the instructions go).
fn instructions() {
    let secs = env_u32("LB_BENCH_INSTRUCTIONS_SECS", 10);
    let d = Duration::from_secs(u64::from(secs));
    let lo = Loopback::fresh();
    let dir = tempfile::tempdir().expect("a temp dir for callgrind's dumps");
    // A wrapper that drops the binary the testkit names and runs `bin` under callgrind.
    let under_callgrind = |label: &str, bin: &Path| -> (PathBuf, PathBuf) {
        let out = dir.path().join(format!("{label}.out"));
        let wrapper = dir.path().join(format!("{label}.sh"));
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nshift\nexec valgrind --quiet --tool=callgrind \
                 --callgrind-out-file='{}' '{}' \"$@\"\n",
                out.display(),
                bin.display()
            ),
        )
        .expect("writing the callgrind wrapper");
        let mut perm = std::fs::metadata(&wrapper)
            .expect("the wrapper")
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&wrapper, perm).expect("making the wrapper executable");
        (wrapper, out)
    };
    let builtin = |label: &str, bin: &Path, join: Option<SocketAddr>| {
        let (wrapper, out) = under_callgrind(label, bin);
        let listen = lo.addr();
        let mut b = VassalAgent::builder(label, &lo)
            .tag("role", "lb")
            .arg("-profile=local")
            .arg(&format!("-lb-listen={listen}"));
        if let Some(j) = join {
            b = b.join(j);
        }
        let mut agent = b.spawn_via(&wrapper, &[]);
        agent.wait_log_contains("Serf agent running", SETTLE);
        (agent, listen, out)
    };
    let (mut lb, listen, lb_out) = builtin("lb-cg", &vassal_bin(), None);
    let nodes: Vec<WebNode> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| web_node(n, &lo, lo.addr(), true, lb.addr()))
        .collect();
    wait_answering(listen, &["w1", "w2", "w3"], &mut lb);
    let baseline = std::env::var_os("LB_BENCH_BASELINE_BIN").map(|bin| {
        let (mut agent, listen, out) = builtin("lb-cg-base", Path::new(&bin), Some(lb.addr()));
        wait_answering(listen, &["w1", "w2", "w3"], &mut agent);
        (agent, listen, out)
    });
    let fe = lo.addr();
    let servers: String = nodes
        .iter()
        .map(|n| format!("    server {} {}\n", n.web.name(), n.web.addr()))
        .collect();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, format!("{}{servers}", runtime_sections(fe)))
        .expect("writing haproxy.cfg");
    let hap_out = dir.path().join("haproxy.out");
    let haproxy = Profiled(
        Command::new("valgrind")
            .args(["--quiet", "--tool=callgrind"])
            .arg(format!("--callgrind-out-file={}", hap_out.display()))
            .arg(vassal_testkit::haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting HAProxy under valgrind (is valgrind installed?): {e}")
            }),
    );
    wait_until(
        SETTLE,
        &format!("HAProxy under callgrind to answer on {fe}"),
        || match answering(fe, 8) {
            Ok(got) if got.len() == 3 => Ok(()),
            got => Err(format!("answered by {got:?}")),
        },
    );

    println!(
        "\n## Instructions per request: valgrind's callgrind, user space only, wrk -t1 -c8 -d{secs}s\n"
    );
    println!("| proxy | requests | instructions per request |\n|---|---|---|");
    let url = |a: SocketAddr| format!("http://{a}/");
    let (hr, h) = instructions_per_request(haproxy.0.id(), &hap_out, &url(fe), d);
    println!("| HAProxy 2.6 | {} | {h:.0} |", hr.requests);
    let (vr, v) = instructions_per_request(lb.pid(), &lb_out, &url(listen), d);
    println!("| Vassal built-in LB | {} | {v:.0} |", vr.requests);
    let base = baseline.as_ref().map(|(agent, listen, out)| {
        let (br, b) = instructions_per_request(agent.pid(), out, &url(*listen), d);
        println!(
            "| Vassal built-in LB, baseline build | {} | {b:.0} |",
            br.requests
        );
        b
    });
    println!(
        "\nbuilt-in / HAProxy: {:.2}× the instructions per request",
        v / h
    );
    if let Some(b) = base {
        println!(
            "this build / baseline: {:.3}× the instructions per request",
            v / b
        );
    }
    drop(haproxy);
    if std::env::var_os("LB_BENCH_INSTRUCTIONS_KEEP").is_some() {
        println!(
            "callgrind's dumps kept in {} (callgrind_annotate reads them)",
            dir.keep().display()
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; anything else (`cargo test --all-targets`, nextest's
    // listing) must not start a minute of load.
    if !std::env::args().any(|a| a == "--bench") {
        println!("lb_vs_haproxy: run it with `cargo bench -p vassal-roles --bench lb_vs_haproxy`");
        return;
    }
    println!(
        "lb_vs_haproxy: {}, haproxy {}, wrk {}",
        vassal_bin().display(),
        version(&vassal_testkit::haproxy_bin(), "-v"),
        version(&vassal_testkit::wrk_bin(), "--version"),
    );
    if std::env::var_os("LB_BENCH_INSTRUCTIONS").is_some() {
        instructions();
        return;
    }
    throughput();
    if std::env::var_os("LB_BENCH_ONLY_THROUGHPUT").is_none() {
        leaves();
    }
}

fn version(bin: &std::path::Path, flag: &str) -> String {
    Command::new(bin)
        .arg(flag)
        .output()
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            out.lines().next().unwrap_or("").to_owned()
        })
        .unwrap_or_else(|e| format!("({e})"))
}
