//! Serf's CLI and ours for the operator commands (spec §5.5, §6): `keys` on an encrypted mixed
//! cluster, `info`, `monitor`, `rtt` and `reachability`, through a Go agent and a Vassal agent.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{both_clis, norm, seen};
use vassal_testkit::{
    go_then_vassal, serf_cli, vassal_bin, vassal_cli, wait_until, CliMatrix, CliRun, GoSerf,
    Loopback, VassalAgent, SERF_BIN,
};

const CONVERGE: Duration = Duration::from_secs(20);

struct Pair {
    _host: Loopback,
    g1: GoSerf,
    v1: VassalAgent,
}

fn pair(encrypt: Option<&str>) -> Pair {
    let host = Loopback::fresh();
    let mut g = GoSerf::builder("g1", &host).tag("role", "web");
    let mut v = VassalAgent::builder("v1", &host).tag("role", "db");
    if let Some(k) = encrypt {
        g = g.encrypt(k);
        v = v.encrypt(k);
    }
    let (g1, vs) = go_then_vassal(g, vec![v], CONVERGE);
    let [v1] = <[VassalAgent; 1]>::try_from(vs).unwrap();
    Pair {
        _host: host,
        g1,
        v1,
    }
}

/// Both CLIs through both agents, in parallel; every run must agree with `serf` → Go agent
/// (after `norm`). Returns that reference run.
#[track_caller]
fn same_everywhere(p: &Pair, args: &[&str]) -> CliRun {
    let runs = CliMatrix::run(p.g1.rpc_addr(), p.v1.rpc_addr(), args);
    runs.assert_agree(args, |r| norm(&seen(r)));
    runs.go_go
}

#[test]
fn keys_rotate_through_a_vassal_agent_as_through_go() {
    let k1 = GoSerf::keygen();
    let k2 = GoSerf::keygen();
    let p = pair(Some(&k1));
    let listed = |keys: &[&str]| {
        let mut out = "==> Asking all members for installed keys...\n\
                       ==> Keys gathered, listing cluster keys...\n\n"
            .to_string();
        let mut lines: Vec<String> = keys.iter().map(|k| format!("{k}  [2/2]")).collect();
        lines.sort();
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        norm(&out)
    };
    let run = same_everywhere(&p, &["keys", "-list"]);
    assert_eq!(norm(&run.stdout), listed(&[&k1]));

    let run = same_everywhere(&p, &["keys", "-install", &k2]);
    assert_eq!(
        run.stdout,
        "==> Installing key on all members...\n==> Successfully installed key!\n"
    );
    assert_eq!(
        norm(&same_everywhere(&p, &["keys", "-list"]).stdout),
        listed(&[&k1, &k2])
    );
    let run = same_everywhere(&p, &["keys", "-use", &k2]);
    assert_eq!(
        run.stdout,
        "==> Changing primary key on all members...\n==> Successfully changed primary key!\n"
    );
    // The primary key cannot go: every node says so, and the command fails.
    let run = same_everywhere(&p, &["keys", "-remove", &k2]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("Removing the primary key is not allowed"),
        "{}",
        run.stdout
    );
    let run = same_everywhere(&p, &["keys", "-remove", &k1]);
    assert_eq!(
        run.stdout,
        "==> Removing key on all members...\n==> Successfully removed key!\n"
    );
    assert_eq!(
        norm(&same_everywhere(&p, &["keys", "-list"]).stdout),
        listed(&[&k2])
    );
    // The cluster still talks after the rotation.
    let run = same_everywhere(&p, &["members", "-status", "alive"]);
    assert_eq!(run.stdout.lines().count(), 2);

    same_everywhere(&p, &["keys", "-install", "!!!"]);
    same_everywhere(&p, &["keys", "-use", "aGVsbG8="]);
    same_everywhere(&p, &["keys", "-list", "-remove", &k2]);
}

#[test]
fn info_rtt_and_reachability_through_a_vassal_agent() {
    let p = pair(None);
    // Without encryption every node refuses key commands, in Serf's words.
    let run = same_everywhere(&p, &["keys", "-list"]);
    assert_eq!(run.code, 1);

    // info: the same sections and keys (values are each agent's own).
    let shape = |out: &str| -> BTreeSet<String> {
        let mut section = String::new();
        let mut keys = BTreeSet::new();
        for line in out.lines() {
            if let Some(s) = line.strip_suffix(':') {
                section = s.to_string();
                keys.insert(section.clone());
            } else if let Some((k, _)) = line.trim().split_once(" = ") {
                keys.insert(format!("{section}.{k}"));
            }
        }
        keys
    };
    let (go_go, vassal_go) = both_clis(p.g1.rpc_addr(), &["info"]);
    let (go_vassal, vassal_vassal) = both_clis(p.v1.rpc_addr(), &["info"]);
    for run in [&go_go, &vassal_go, &go_vassal, &vassal_vassal] {
        assert_eq!(run.code, 0, "{}", run.combined());
        assert_eq!(shape(&run.stdout), shape(&go_go.stdout), "{}", run.stdout);
    }
    assert!(shape(&go_go.stdout).contains("serf.coordinate_resets"));
    // Through the same agent, both CLIs print the same (but for the live goroutine count).
    let steady = |out: &str| {
        out.lines()
            .filter(|l| !l.contains("goroutines"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(steady(&vassal_go.stdout), steady(&go_go.stdout));
    for line in [
        "\tname = v1\n",
        "\tmembers = 2\n",
        "\trole = db\n",
        "\tencrypted = false\n",
    ] {
        assert!(
            go_vassal.stdout.contains(line),
            "{line:?} in {}",
            go_vassal.stdout
        );
    }
    let json = |r: &CliRun| -> serde_json::Value { serde_json::from_str(&r.stdout).unwrap() };
    let (a, b) = (
        json(&serf_cli(p.g1.rpc_addr(), &["info", "-format", "json"])),
        json(&vassal_cli(p.v1.rpc_addr(), &["info", "-format", "json"])),
    );
    let sections =
        |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(sections(&a), sections(&b));
    assert_eq!(b["agent"]["name"], "v1");

    // rtt once both have heard each other's coordinates.
    let rtt = regex::Regex::new(r"^Estimated (\S+) <-> (\S+) rtt: \d+\.\d{3} ms\n$").unwrap();
    for rpc in [p.g1.rpc_addr(), p.v1.rpc_addr()] {
        wait_until(CONVERGE, "rtt g1 v1 to work", || {
            for run in [
                serf_cli(rpc, &["rtt", "g1", "v1"]),
                vassal_cli(rpc, &["rtt", "g1", "v1"]),
            ] {
                if run.code != 0 {
                    return Err(run.combined());
                }
                let caps = rtt.captures(&run.stdout).ok_or(run.stdout.clone())?;
                assert_eq!((&caps[1], &caps[2]), ("g1", "v1"));
            }
            Ok(())
        });
    }
    // One node: the other is the agent itself.
    for (rpc, me) in [(p.g1.rpc_addr(), "g1"), (p.v1.rpc_addr(), "v1")] {
        for run in [
            serf_cli(rpc, &["rtt", "g1"]),
            vassal_cli(rpc, &["rtt", "g1"]),
        ] {
            let caps = rtt
                .captures(&run.stdout)
                .unwrap_or_else(|| panic!("{}", run.combined()));
            assert_eq!((&caps[1], &caps[2]), ("g1", me));
        }
    }
    same_everywhere(&p, &["rtt", "nosuch", "g1"]);
    // Usage errors: the help text is each program's own; the problem and the status agree.
    for rpc in [p.g1.rpc_addr(), p.v1.rpc_addr()] {
        let (go, ours) = both_clis(rpc, &["rtt"]);
        let first = |r: &CliRun| seen(r).lines().next().unwrap_or("").to_string();
        assert_eq!((ours.code, first(&ours)), (1, first(&go)));
    }

    let run = same_everywhere(&p, &["reachability"]);
    assert_eq!(
        run.stdout,
        "Total members: 2, live members: 2\nStarting reachability test...\n\
         Successfully contacted all live nodes\n"
    );
    for run in [
        serf_cli(p.v1.rpc_addr(), &["reachability", "-verbose"]),
        vassal_cli(p.g1.rpc_addr(), &["reachability", "-verbose"]),
    ] {
        assert_eq!(run.code, 0, "{}", run.combined());
        let acks: BTreeSet<&str> = run
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("\tAck from '"))
            .collect();
        assert_eq!(acks, BTreeSet::from(["g1'", "v1'"]), "{}", run.stdout);
        assert!(run.stdout.contains("Query time: "), "{}", run.stdout);
    }
}

/// A running `monitor` CLI whose stdout lines arrive on a channel; killed (by its own PID)
/// when dropped.
struct Monitor {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Monitor {
    fn start(program: &str, rpc: SocketAddr, level: &str) -> Monitor {
        let mut child = Command::new(program)
            .args([
                "monitor",
                &format!("-rpc-addr={rpc}"),
                &format!("-log-level={level}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Monitor {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    #[track_caller]
    fn wait_for(&mut self, what: &str, f: impl Fn(&[String]) -> bool) {
        wait_until(CONVERGE, what, || {
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            if f(&self.seen) {
                Ok(())
            } else {
                Err(self.seen[self.seen.len().saturating_sub(20)..].join("\n"))
            }
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn monitor_streams_logs_and_events_through_a_vassal_agent() {
    let p = pair(None);
    let vassal = vassal_bin();
    let log_line =
        regex::Regex::new(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(DEBUG|INFO|WARN|ERR)\] ").unwrap();
    let mut monitors = [
        (
            "serf → Vassal agent",
            Monitor::start(SERF_BIN, p.v1.rpc_addr(), "info"),
        ),
        (
            "vassal → Vassal agent",
            Monitor::start(vassal.to_str().unwrap(), p.v1.rpc_addr(), "info"),
        ),
        (
            "vassal → Go agent",
            Monitor::start(vassal.to_str().unwrap(), p.g1.rpc_addr(), "info"),
        ),
    ];
    // The backlog: log lines from before the monitor started, at INFO and above only.
    for (who, m) in &mut monitors {
        m.wait_for(&format!("{who}: a Serf-style log line"), |seen| {
            seen.iter().any(|l| log_line.is_match(l))
        });
    }
    let run = serf_cli(
        p.v1.rpc_addr(),
        &["event", "-coalesce=false", "mon-evt", "x"],
    );
    assert_eq!(run.code, 0, "{}", run.combined());
    for (who, m) in &mut monitors {
        m.wait_for(&format!("{who}: the user event's fields"), |seen| {
            seen.iter().any(|l| l == "Event Info:")
                && seen.iter().any(|l| l == "\tName: \"mon-evt\"")
                && seen.iter().any(|l| l == "\tEvent: \"user\"")
        });
        let debug = m.seen.iter().filter(|l| l.contains("[DEBUG]")).count();
        assert_eq!(
            debug, 0,
            "{who}: DEBUG lines at -log-level=info: {:?}",
            m.seen
        );
    }
    // A debug monitor of the Vassal agent sees DEBUG lines (the agent logs at INFO).
    let mut debug = Monitor::start(SERF_BIN, p.v1.rpc_addr(), "debug");
    debug.wait_for("a [DEBUG] line at -log-level=debug", |seen| {
        seen.iter().any(|l| l.contains("[DEBUG]"))
    });
    // A bad level is refused in Serf's words.
    same_everywhere(&p, &["monitor", "-log-level=loud"]);
}
