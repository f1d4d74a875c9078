//! `vassal demo` itself (issue 5), as a person runs it: start it, open the URLs it prints,
//! press Ctrl-C, and find nothing left running. It serves on the fixed ports
//! 127.0.0.1:8080 and :9999, so this is the only test that uses them; its agents' gossip
//! addresses are moved off the default 127.0.0.10.. with -bind-base.
//! Run `cargo build --release --bin vassal` first.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vassal_testkit::{http_get, vassal_bin, wait_until, Loopback};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The running `vassal demo`, its output collected line by line. Dropped early (a failing
/// test), it interrupts the demo so that it stops its agents, and kills it after 15 s.
struct Demo {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Demo {
    fn start(args: &[String]) -> Self {
        let bin = vassal_bin();
        assert!(
            bin.exists(),
            "{} not found: run `cargo build --release --bin vassal` first",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning vassal demo");
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Demo { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the demo says all `n` agents started; its output so far.
    #[track_caller]
    fn wait_started(&self, n: usize) -> String {
        let line = format!("==> all {n} agents started");
        wait_until(
            Duration::from_secs(20),
            "the demo to start its agents",
            || {
                let out = self.output();
                if out.contains(&line) {
                    Ok(out)
                } else {
                    Err(out)
                }
            },
        )
    }

    fn interrupt(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGINT).expect("SIGINT to our own demo process");
    }

    /// Waits for the demo to exit; panics with its output after `deadline`.
    fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let mut child_status = None;
        let out = self.out.clone();
        wait_until(deadline, "vassal demo to exit", || {
            match self.child.try_wait().expect("waitpid on vassal demo") {
                Some(s) => {
                    child_status = Some(s);
                    Ok(())
                }
                None => Err(out.lock().unwrap().clone()),
            }
        });
        child_status.unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.interrupt();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- vassal demo output ----\n{}", self.output());
        }
    }
}

/// `name → pid` from the demo's `==> started NAME (pid N, ...` lines.
fn started(out: &str) -> BTreeMap<String, i32> {
    out.lines()
        .filter_map(|l| l.strip_prefix("==> started "))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once(" (pid ")?;
            let pid = rest.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), pid))
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie would also count, but the demo reaps its children.
    kill(Pid::from_raw(pid), None).is_ok()
}

/// A loopback address with room above it for the demo's agents (`-bind-base`).
fn fresh_base() -> Ipv4Addr {
    let [a, b, c, d] = Loopback::fresh().ip().octets();
    Ipv4Addr::new(a, b, c, d % 200 + 1)
}

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
