//! `vassal demo` run by a test (shared by `demo.rs` and `cluster_ui.rs` through `#[path]`):
//! the process with its output collected, the PIDs it prints, and a loopback base for its
//! agents.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vassal_testkit::{vassal_bin, wait_until, Loopback};

/// The running `vassal demo`, its output collected line by line. Dropped early (a failing
/// test), it interrupts the demo so that it stops its agents, and kills it after 15 s.
pub struct Demo {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Demo {
    pub fn start(args: &[String]) -> Self {
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

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the demo says all `n` agents started; its output so far.
    #[track_caller]
    pub fn wait_started(&self, n: usize) -> String {
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

    pub fn interrupt(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGINT).expect("SIGINT to our own demo process");
    }

    /// Waits for the demo to exit; panics with its output after `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
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
pub fn started(out: &str) -> BTreeMap<String, i32> {
    out.lines()
        .filter_map(|l| l.strip_prefix("==> started "))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once(" (pid ")?;
            let pid = rest.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), pid))
        })
        .collect()
}

pub fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie would also count, but the demo reaps its children.
    kill(Pid::from_raw(pid), None).is_ok()
}

/// A loopback address with room above it for the demo's agents (`-bind-base`).
pub fn fresh_base() -> Ipv4Addr {
    let [a, b, c, d] = Loopback::fresh().ip().octets();
    Ipv4Addr::new(a, b, c, d % 200 + 1)
}
