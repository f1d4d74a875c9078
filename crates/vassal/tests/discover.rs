//! `-discover` (spec §5.8) across hosts: three network namespaces that this test creates,
//! bridged on a private 10.99.7.0/24, one agent in each (two Vassal, one Go `serf`), none given
//! an address to join. mDNS alone must bring all three together. Needs root (`ip netns`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vassal_testkit::{run_cli, vassal_bin, wait_until};

const DEADLINE: Duration = Duration::from_secs(20);

/// The namespaces and links of one test run, removed on drop (processes first, by PID).
struct Net {
    prefix: String,
    children: Vec<(String, Child)>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Net {
    /// Hosts `a`, `b`, `c` at 10.99.7.1-3, each with a veth into a bridge in a hub namespace.
    fn new() -> Net {
        let prefix = format!("vd{}", std::process::id() % 100_000);
        let net = Net {
            prefix: prefix.clone(),
            children: Vec::new(),
        };
        let hub = format!("{prefix}-h");
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, host) in ["a", "b", "c"].iter().enumerate() {
            let ns = net.ns(host);
            let (inner, outer) = (format!("{prefix}{host}"), format!("{prefix}{host}p"));
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &outer, "master", "br0", "up"]);
            let addr = format!("10.99.7.{}/24", i + 1);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", &inner]);
        }
        net
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Runs `program args…` inside `host`'s namespace, output to a log file under `dir`.
    fn spawn(&mut self, host: &str, program: &Path, args: &[&str], dir: &Path) {
        let log = std::fs::File::create(dir.join(format!("{host}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ip netns exec runs");
        self.children.push((host.to_owned(), child));
    }

    /// `vassal members` from inside `host`'s namespace (its agent's RPC is on its loopback).
    fn members(&self, host: &str) -> String {
        let args: Vec<String> = ["netns", "exec", &self.ns(host)]
            .iter()
            .map(|s| s.to_string())
            .chain([
                vassal_bin().display().to_string(),
                "members".into(),
                "-status=alive".into(),
            ])
            .collect();
        let run = run_cli(Path::new("ip"), &args, &[], Duration::from_secs(5));
        run.combined()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill(); // our own child, by handle (`ip netns exec` execs the agent)
            let _ = child.wait();
        }
        for host in ["a", "b", "c", "h"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(host)])
                .status();
        }
    }
}

#[test]
fn agents_on_three_hosts_find_each_other_by_mdns_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new();
    let vassal = vassal_bin();
    net.spawn(
        "a",
        &vassal,
        &["agent", "-node=a", "-bind=10.99.7.1", "-discover=demo"],
        dir.path(),
    );
    net.spawn(
        "b",
        &vassal,
        &["agent", "-node=b", "-bind=10.99.7.2", "-discover=demo"],
        dir.path(),
    );
    net.spawn(
        "c",
        Path::new("/usr/bin/serf"),
        &["agent", "-node=c", "-bind=10.99.7.3", "-discover=demo"],
        dir.path(),
    );
    let logs = |dir: &Path| {
        ["a", "b", "c"]
            .iter()
            .map(|h| {
                let log = std::fs::read_to_string(dir.join(format!("{h}.log"))).unwrap_or_default();
                format!("--- {h} ---\n{log}")
            })
            .collect::<String>()
    };
    for host in ["a", "b", "c"] {
        wait_until(
            DEADLINE,
            &format!("{host} to list a, b and c alive"),
            || {
                let out = net.members(host);
                let alive: Vec<&str> = out
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .collect();
                if ["a", "b", "c"].iter().all(|n| alive.contains(n)) {
                    Ok(())
                } else {
                    Err(format!("{out}\n{}", logs(dir.path())))
                }
            },
        );
    }
}
