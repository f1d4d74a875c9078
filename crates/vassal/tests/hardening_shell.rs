//! Issue 11, the shell's half: each attack on the parts around the protocol core, tried against
//! a real `target/release/vassal agent` on loopback (build it first: `cargo build --release
//! --bin vassal`), with what a user would check afterwards: the agent still runs, requests and
//! events still flow.
//!
//! - slowloris and connection floods on the built-in balancer (`-lb-header-timeout`,
//!   `-lb-max-conns`);
//! - a handler that hangs, and one that leaves a child holding its output
//!   (`-handler-timeout`, the output grace);
//! - a member advertising an address outside `-lb-backend-cidr`;
//! - a mistyped keyring file or `-encrypt` key (the error must not echo key material);
//! - `kill -USR1` (Serf's telemetry signal: the metrics dump).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vassal_testkit::{
    hold_for, http_get, run_cli, vassal_bin, wait_until, Loopback, VassalAgent, VassalAgentBuilder,
};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const CONVERGE: Duration = Duration::from_secs(20);

/// A balancer agent (`role=lb`) with its proxy and stats addresses, and extra flags.
fn lb_builder(lo: &Loopback, extra: &[&str]) -> (VassalAgentBuilder, SocketAddr, SocketAddr) {
    let (proxy, stats) = (lo.addr(), lo.addr());
    let mut b = VassalAgent::builder("lb", lo)
        .tag("role", "lb")
        .arg(&format!("-lb-listen={proxy}"))
        .arg(&format!("-lb-stats={stats}"));
    for a in extra {
        b = b.arg(a);
    }
    (b, proxy, stats)
}

/// A web agent `name` on `lo`, serving its page and retry-joining `lb_gossip`.
fn web_agent(name: &str, lo: &Loopback, lb_gossip: SocketAddr) -> VassalAgent {
    let http = lo.addr();
    VassalAgent::builder(name, lo)
        .tag("role", "web")
        .arg(&format!("-web-listen={http}"))
        .arg(&format!("-retry-join={lb_gossip}"))
        .arg("-retry-interval=500ms")
        .spawn()
}

fn in_rotation(stats: SocketAddr) -> Result<Vec<String>, String> {
    let r = http_get(stats, "/stats.json", HTTP_TIMEOUT)?;
    let v: Value =
        serde_json::from_str(&r.body).map_err(|e| format!("stats.json: {e}: {}", r.body))?;
    Ok(v["in_rotation"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

#[track_caller]
fn wait_rotation(lb: &mut VassalAgent, stats: SocketAddr, names: &[&str]) {
    wait_until(
        CONVERGE,
        &format!("the balancer's rotation to be {names:?}"),
        || {
            lb.assert_running();
            let got = in_rotation(stats)?;
            if got == names {
                Ok(())
            } else {
                Err(format!(
                    "in rotation: {got:?}\nlb log:\n{}",
                    lb.log_tail(20)
                ))
            }
        },
    )
}

/// One request through the balancer; the node that served it.
fn served_by(proxy: SocketAddr) -> Result<String, String> {
    let r = http_get(proxy, "/", HTTP_TIMEOUT)?;
    if r.status != 200 {
        return Err(format!("HTTP {}: {}", r.status, r.body));
    }
    r.header("x-served-by")
        .map(str::to_owned)
        .ok_or_else(|| format!("no X-Served-By in {:?}", r.headers))
}

/// Whether the server has closed `s` (EOF or reset); `s` is non-blocking.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 512];
    match s.read(&mut b) {
        Ok(0) => true,
        // A 408 or other bytes before the close; the next read tells.
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Opens `n` connections to `addr`, each sending `prefix` and then nothing more.
fn stalled_clients(addr: SocketAddr, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
                .unwrap_or_else(|e| panic!("stalled client {i}: connect to {addr}: {e}"));
            if !prefix.is_empty() {
                s.write_all(prefix)
                    .unwrap_or_else(|e| panic!("stalled client {i}: write: {e}"));
            }
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

#[test]
fn slowloris_clients_are_dropped_after_the_header_timeout_while_requests_still_flow() {
    // HAProxy's `timeout http-request`: a client that never finishes its headers is dropped.
    let lo = Loopback::fresh();
    let (b, proxy, stats) = lb_builder(&lo, &["-lb-header-timeout=1s"]);
    let mut lb = b.spawn();
    let _web = web_agent("web-1", &Loopback::fresh(), lb.addr());
    wait_rotation(&mut lb, stats, &["web-1"]);

    let opened = Instant::now();
    let mut slow = stalled_clients(proxy, 200, b"GET / HTTP/1.1\r\nHost: victim\r\nX-Slow: ");
    // While they hang on, an ordinary client is served.
    let by = served_by(proxy).unwrap_or_else(|e| panic!("request during the attack: {e}"));
    assert_eq!(by, "web-1");

    let mut open: Vec<usize> = (0..slow.len()).collect();
    wait_until(
        Duration::from_secs(15),
        "the balancer to close all 200 stalled connections",
        || {
            open.retain(|&i| !closed_by_server(&mut slow[i]));
            if open.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of 200 still open after {:.1?}",
                    open.len(),
                    opened.elapsed()
                ))
            }
        },
    );
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}: before the 1 s header timeout?"
    );
    lb.assert_running();
    assert_eq!(served_by(proxy).expect("request after the attack"), "web-1");
    // The balancer logs nothing per dropped connection.
    let log = lb.log();
    assert!(
        log.lines().count() < 200,
        "the balancer logged {} lines; one per slow client?\n{}",
        log.lines().count(),
        lb.log_tail(30)
    );
}

#[test]
fn past_lb_max_conns_clients_wait_nothing_crashes_and_service_resumes() {
    let lo = Loopback::fresh();
    // A long header timeout: here the connections are freed by their clients.
    let (b, proxy, stats) = lb_builder(&lo, &["-lb-max-conns=5", "-lb-header-timeout=60s"]);
    let mut lb = b.spawn();
    let _web = web_agent("web-1", &Loopback::fresh(), lb.addr());
    wait_rotation(&mut lb, stats, &["web-1"]);

    // Forty idle clients: five hold the slots, the rest wait in the listen backlog.
    let idle = stalled_clients(proxy, 40, b"");
    let line = lb.wait_log_contains("client connections open, the limit", CONVERGE);
    assert!(line.contains("-lb-max-conns"), "{line}");
    // The stats page has slots of its own (a separate server).
    in_rotation(stats).expect("the stats page while the balancer is full");
    // More clients arrive while full: still one warning.
    let more = stalled_clients(proxy, 20, b"GET / HTTP/1.1\r\n");
    hold_for(Duration::from_secs(1), "the agent to keep running", || {
        if lb.is_running() {
            Ok(())
        } else {
            Err(lb.log_tail(30))
        }
    });
    drop(idle);
    drop(more);
    let by = wait_until(
        CONVERGE,
        "a request to succeed once the clients have gone",
        || served_by(proxy),
    );
    assert_eq!(by, "web-1");
    lb.assert_running();
    let warnings = lb
        .log()
        .matches("client connections open, the limit")
        .count();
    assert_eq!(warnings, 1, "{}", lb.log_tail(30));
}

/// A handler agent with `-handler-timeout=1s` and these handlers, alone on `lo`.
fn handler_agent(lo: &Loopback, handlers: &[String]) -> VassalAgent {
    let mut b = VassalAgent::builder("h", lo).arg("-handler-timeout=1s");
    for h in handlers {
        b = b.arg(&format!("-event-handler={h}"));
    }
    b.spawn_ready()
}

fn send_event(agent: &VassalAgent, name: &str) {
    let run = agent.vassal_cli(&["event", "-coalesce=false", name]);
    assert_eq!(run.code, 0, "vassal event {name}: {}", run.combined());
}

/// The process group ID a handler wrote to `file` (its `$$`: handlers run in a group of their
/// own, led by the shell).
fn read_pgid(file: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.trim()
        .parse()
        .map_err(|e| format!("{}: {text:?}: {e}", file.display()))
}

/// Processes (not zombies) in process group `pgid`, from /proc.
fn group_members(pgid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string() {
            out.push(format!("{head})"));
        }
    }
    out
}

/// Kills process group `pgid` (started by a handler of an agent this test started).
fn kill_group(pgid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_hanging_handler_is_killed_with_its_process_group_and_the_next_event_runs() {
    let lo = Loopback::fresh();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("hang.pid");
    let done = dir.path().join("next.done");
    let mut agent = handler_agent(
        &lo,
        &[
            // It starts a child of its own too: the whole group must go.
            format!(
                "user:hang=echo $$ > {}; sleep 1000 & sleep 1000",
                pidfile.display()
            ),
            format!("user:next=echo ran > {}", done.display()),
        ],
    );
    send_event(&agent, "hang");
    let pgid = wait_until(CONVERGE, "the hanging handler to start", || {
        read_pgid(&pidfile)
    });
    send_event(&agent, "next");
    let line = agent.wait_log_contains("ran longer than", CONVERGE);
    assert!(
        line.contains("user:\"hang\"") && line.contains("killed it and its process group"),
        "{line}"
    );
    wait_until(CONVERGE, "the next event's handler to run", || {
        std::fs::read_to_string(&done).map_err(|e| format!("{e}; log:\n{}", agent.log_tail(20)))
    });
    let left = group_members(pgid);
    if !left.is_empty() {
        kill_group(pgid);
        panic!("process group {pgid} outlived the timeout: {left:?}");
    }
    agent.assert_running();
}

#[test]
fn a_background_child_holding_the_output_does_not_block_the_next_handler() {
    let lo = Loopback::fresh();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let done = dir.path().join("next.done");
    let mut agent = handler_agent(
        &lo,
        &[
            format!("user:bg=echo $$ > {}; sleep 1000 &", pidfile.display()),
            format!("user:next=echo ran > {}", done.display()),
        ],
    );
    send_event(&agent, "bg");
    let pgid = wait_until(CONVERGE, "the handler to start its child", || {
        read_pgid(&pidfile)
    });
    send_event(&agent, "next");
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            Duration::from_secs(10),
            "the next handler to run while the child holds the output",
            || {
                std::fs::read_to_string(&done)
                    .map_err(|e| format!("{e}; log:\n{}", agent.log_tail(20)))
            },
        );
        agent.wait_log_contains("still holds its output", CONVERGE)
    }));
    // The child is left running by design; it is ours to clean up.
    let left = group_members(pgid);
    kill_group(pgid);
    let line = ran.unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert!(line.contains("not waiting for it"), "{line}");
    assert!(
        !left.is_empty(),
        "the background child was killed, but only a timeout should kill"
    );
    // It ran to its end, so no timeout kill.
    assert!(!agent.log().contains("ran longer than"), "{}", agent.log());
    agent.assert_running();
}

#[test]
fn a_member_outside_lb_backend_cidr_is_refused_once_and_never_served() {
    let (web1_lo, web2_lo) = (Loopback::fresh(), Loopback::fresh());
    let allowed = format!("-lb-backend-cidr={}/32", web1_lo.ip());
    let (b, proxy, stats) = lb_builder(&Loopback::fresh(), &[&allowed]);
    let mut lb = b.spawn();
    let mut web1 = web_agent("web-1", &web1_lo, lb.addr());
    let mut web2 = web_agent("web-2", &web2_lo, lb.addr());
    lb.wait_member_event("member-join", "web-2", CONVERGE);
    wait_rotation(&mut lb, stats, &["web-1"]);
    let line = lb.wait_log_contains("member web-2 refused as a backend", CONVERGE);
    assert!(
        line.contains(&format!(
            "{} is outside -lb-backend-cidr {}/32",
            web2_lo.ip(),
            web1_lo.ip()
        )) && line.contains("pass -lb-backend-cidr"),
        "{line}"
    );
    // Several member-list resyncs (every 2 s) later: still one line, still only web-1.
    hold_for(
        Duration::from_millis(4500),
        "web-1 alone in rotation",
        || match in_rotation(stats)? {
            r if r == ["web-1"] => Ok(()),
            r => Err(format!("{r:?}")),
        },
    );
    for i in 0..10 {
        let by = served_by(proxy).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(by, "web-1", "request {i}");
    }
    let refusals = lb
        .log()
        .matches("member web-2 refused as a backend")
        .count();
    assert_eq!(refusals, 1, "{}", lb.log_tail(30));
    for a in [&mut lb, &mut web1, &mut web2] {
        a.assert_running();
    }
}

/// `vassal agent` with `extra` flags, which must refuse to start; its output.
fn refused_start(extra: &[String]) -> String {
    let lo = Loopback::fresh();
    let mut args = vec![
        "agent".to_owned(),
        "-node=k".to_owned(),
        format!("-bind={}", lo.addr()),
        format!("-rpc-addr={}", lo.addr()),
    ];
    args.extend(extra.iter().cloned());
    let run = run_cli(&vassal_bin(), &args, &[], CONVERGE);
    assert!(
        run.code > 0,
        "vassal agent {extra:?} should refuse to start: exit {}\n{}",
        run.code,
        run.combined()
    );
    run.combined()
}

#[test]
fn a_mistyped_keyring_file_or_key_is_refused_without_echoing_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.json");
    // Text a user would not want in a log: key-like base64 with a typo, or the key itself.
    let secret = "S3CR3TK3YMAT3RIALxxxxx";
    for (text, says) in [
        (
            format!("[\"AAAAAAAAAAAAAAAAAAAAAA==\", \"{secret}==!\"]"),
            "key 1",
        ),
        (format!("[\"{secret}\"]"), "key 0"),
        (format!("\"{secret}\""), "holds a string, not an array"),
        (format!("[1, \"{secret}\"]"), "entry 0"),
        (format!("[\"{secret}\""), "the file ends too early"),
    ] {
        std::fs::write(&keyring, &text).unwrap();
        let out = refused_start(&[format!("-keyring-file={}", keyring.display())]);
        assert!(out.contains(says), "{text}: {out}");
        assert!(
            !out.contains("S3CR3T"),
            "{text}: the error echoes the key: {out}"
        );
    }
    // The same through -encrypt and a config file's encrypt_key.
    let out = refused_start(&[format!("-encrypt={secret}!")]);
    assert!(out.contains("-encrypt") && !out.contains("S3CR3T"), "{out}");
    let config = dir.path().join("agent.json");
    std::fs::write(&config, format!("{{\"encrypt_key\": \"{secret}\"}}")).unwrap();
    let out = refused_start(&[format!("-config-file={}", config.display())]);
    assert!(
        out.contains("encrypt_key") && !out.contains("S3CR3T"),
        "{out}"
    );
}

#[test]
fn sigusr1_logs_a_telemetry_dump_and_the_agent_keeps_running() {
    // Serf's documentation tells operators to send SIGUSR1 for a metrics dump. With no sink
    // configured there is no recorder, and the dump holds the agent's own figures as gauges
    // in go-metrics' format (`[time][G] 'serf-agent.vassal.members.alive': 1.000`).
    let lo = Loopback::fresh();
    let mut agent = VassalAgent::builder("t", &lo).spawn_ready();
    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    let gauge = |name: &str| {
        regex::Regex::new(&format!(
            r"\]\[G\] 'serf-agent\.{}': (-?\d+\.\d{{3}})",
            regex::escape(name)
        ))
        .unwrap()
    };
    for round in 1..=2 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
        wait_until(CONVERGE, &format!("telemetry dump {round}"), || {
            agent.assert_running();
            let n = gauge("vassal.members").find_iter(&agent.log()).count();
            if n >= round {
                Ok(())
            } else {
                Err(agent.log_tail(20))
            }
        });
    }
    let log = agent.log();
    let value = |name: &str| -> String {
        gauge(name)
            .captures(&log)
            .map(|c| c[1].to_owned())
            .unwrap_or_else(|| panic!("no {name:?} gauge in\n{}", agent.log_tail(40)))
    };
    assert_eq!(value("vassal.members"), "1.000");
    assert_eq!(value("vassal.members.alive"), "1.000");
    assert_eq!(value("vassal.members.failed"), "0.000");
    for part in [
        "vassal.health_score",
        "vassal.queue.intent",
        "vassal.queue.event",
        "vassal.queue.query",
        "vassal.handlers.queued",
        "vassal.handlers.dropped",
        "vassal.handlers.killed",
        "vassal.clock.member",
        "vassal.malformed_packets",
        "vassal.malformed_streams",
    ] {
        value(part);
    }
    agent.assert_running();
    let out = agent.cli(&["members"]).expect("members after SIGUSR1");
    assert!(out.starts_with("t "), "{out}");
}

/// CPU time (user + system, in clock ticks) process `pid` has used, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_the_gossip_accept_loop_backs_off_and_recovers() {
    // Issue 11: with its descriptors exhausted, the agent's TCP accept loop spun at 100 % CPU
    // writing a warning per failure.
    let lo = Loopback::fresh();
    let b = VassalAgent::builder("fd", &lo);
    let mut agent = b.spawn_via(
        Path::new("/bin/sh"),
        &["-c".into(), "ulimit -n 64 && exec \"$0\" \"$@\"".into()],
    );
    agent.wait_ready(CONVERGE);
    // Each connection holds one of the agent's descriptors until its stream deadline (10 s):
    // far more than 64 leaves accept failing with EMFILE.
    let flood = stalled_clients(agent.addr(), 150, b"");
    let line = agent.wait_log_contains("accept failed", CONVERGE);
    assert!(line.contains("out of file descriptors"), "{line}");
    let before = cpu_ticks(agent.pid());
    let start = Instant::now();
    hold_for(Duration::from_secs(2), "the agent to keep running", || {
        if agent.is_running() {
            Ok(())
        } else {
            Err(agent.log_tail(30))
        }
    });
    let used = cpu_ticks(agent.pid()) - before;
    // 100 ticks a second is one core; a spinning loop would use about 200 here.
    assert!(
        used < 40,
        "the agent used {used} ticks of CPU in {:.1?} while out of descriptors",
        start.elapsed()
    );
    let failures = agent.log().matches("accept failed").count();
    assert!(
        failures <= 2,
        "{failures} accept warnings (one per listener and streak expected):\n{}",
        agent.log_tail(30)
    );
    drop(flood);
    wait_until(CONVERGE, "the agent to answer `members` again", || {
        agent.assert_running();
        agent.cli(&["members"])
    });
    agent.wait_log_contains("accepting again after", CONVERGE);
}
