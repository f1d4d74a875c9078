//! `vassal demo`: Serf's web-load-balancer demo on one machine. One load-balancer agent `lb`
//! and web agents `web-1..web-N`, each its own `vassal agent` process on its own loopback
//! address, started in random order after random delays; the web nodes retry-join the
//! balancer. The balancer's agent also serves the live cluster page (`-ui-addr`). Ctrl-C stops
//! every agent (by PID) and waits for each.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::flags::{FlagError, FlagSet, Kind};

const GOSSIP_PORT: u16 = vassal_node::addr::DEFAULT_PORT;
const RPC_PORT: u16 = 7373;
/// The longest random pause before each agent starts.
const MAX_START_DELAY_MS: u32 = 700;
/// How long the agents get to leave gracefully after Ctrl-C before they are killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

pub fn flags() -> FlagSet {
    FlagSet::new("demo")
        .flag("web", Kind::Value, "<n>", "Number of web nodes (default 3)")
        .flag(
            "lb-listen",
            Kind::Value,
            "<ip:port>",
            "Where the load balancer serves (default 127.0.0.1:8080)",
        )
        .flag(
            "lb-stats",
            Kind::Value,
            "<ip:port>",
            "Where its stats page is (default 127.0.0.1:9999)",
        )
        .flag(
            "ui-addr",
            Kind::Value,
            "<ip:port>",
            "Where the lb node serves the live cluster page (default 127.0.0.1:9990)",
        )
        .flag(
            "bind-base",
            Kind::Value,
            "<ip>",
            "Loopback address of lb; web-i gets the i-th next one (default 127.0.0.10)",
        )
        .flag(
            "web-port",
            Kind::Value,
            "<port>",
            "Port of each web node's server (default 8000)",
        )
        .flag(
            "profile",
            Kind::Value,
            "<lan|wan|local>",
            "The agents' timing profile (default lan)",
        )
        .flag(
            "log-dir",
            Kind::Value,
            "<dir>",
            "Where each agent's log goes (default a new temp dir)",
        )
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub web: u8,
    pub lb_listen: SocketAddr,
    pub lb_stats: SocketAddr,
    pub ui_addr: SocketAddr,
    pub base: Ipv4Addr,
    pub web_port: u16,
    pub profile: crate::parse::Profile,
    pub log_dir: Option<PathBuf>,
}

pub fn options(args: &[String]) -> Result<DemoOptions, FlagError> {
    let p = flags().parse(args)?;
    if let Some(extra) = p.args.first() {
        return Err(FlagError::BadValue {
            flag: "demo".into(),
            value: extra.clone(),
            why: "vassal demo takes no arguments (did you mean -web=N?)".into(),
        });
    }
    let addr = |v: &str| {
        v.parse::<SocketAddr>()
            .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:8080".to_owned())
    };
    let web = p.parse_or("web", 3u8, |v| match v.parse::<u8>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err("must be a number from 1 to 100".into()),
    })?;
    let base = p.parse_or("bind-base", Ipv4Addr::new(127, 0, 0, 10), |v| match v
        .parse::<Ipv4Addr>()
    {
        Ok(ip) if ip.is_loopback() => Ok(ip),
        _ => Err("must be a loopback address such as 127.0.0.10".into()),
    })?;
    if u16::from(base.octets()[3]) + u16::from(web) > 254 {
        return Err(FlagError::BadValue {
            flag: "bind-base".into(),
            value: base.to_string(),
            why: format!(
                "leaves no room for {web} more addresses after it; pick a lower last byte"
            ),
        });
    }
    let profile = p.parse_or(
        "profile",
        crate::parse::Profile::Lan,
        crate::parse::Profile::parse,
    )?;
    Ok(DemoOptions {
        web,
        lb_listen: p.parse_or("lb-listen", ([127, 0, 0, 1], 8080).into(), addr)?,
        lb_stats: p.parse_or("lb-stats", ([127, 0, 0, 1], 9999).into(), addr)?,
        ui_addr: p.parse_or("ui-addr", ([127, 0, 0, 1], 9990).into(), addr)?,
        base,
        web_port: p.parse_or("web-port", 8000, |v| {
            v.parse().map_err(|_| "expected a port number".to_owned())
        })?,
        profile,
        log_dir: p.value("log-dir").map(PathBuf::from),
    })
}

/// One agent of the demo.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    ip: Ipv4Addr,
    args: Vec<String>,
}

impl Node {
    fn gossip(&self) -> SocketAddr {
        (self.ip, GOSSIP_PORT).into()
    }
    fn rpc(&self) -> SocketAddr {
        (self.ip, RPC_PORT).into()
    }
}

fn plan(o: &DemoOptions) -> Vec<Node> {
    let ip = |i: u8| {
        let [a, b, c, d] = o.base.octets();
        Ipv4Addr::new(a, b, c, d + i)
    };
    let common = |name: &str, ip: Ipv4Addr| {
        vec![
            "agent".to_owned(),
            format!("-node={name}"),
            format!("-bind={ip}:{GOSSIP_PORT}"),
            format!("-rpc-addr={ip}:{RPC_PORT}"),
            format!("-profile={}", o.profile),
        ]
    };
    let lb_ip = ip(0);
    let mut lb = common("lb", lb_ip);
    lb.extend([
        "-tag".to_owned(),
        "role=lb".to_owned(),
        format!("-lb-listen={}", o.lb_listen),
        format!("-lb-stats={}", o.lb_stats),
        format!("-ui-addr={}", o.ui_addr),
        // The web nodes are on loopback, whatever -lb-listen says (e.g. 0.0.0.0 to show the
        // demo to another machine): allow exactly them.
        "-lb-backend-cidr=127.0.0.0/8".to_owned(),
    ]);
    let mut nodes = vec![Node {
        name: "lb".into(),
        ip: lb_ip,
        args: lb,
    }];
    for i in 1..=o.web {
        let name = format!("web-{i}");
        let mut a = common(&name, ip(i));
        a.extend([
            "-tag".to_owned(),
            "role=web".to_owned(),
            format!("-web-listen={}:{}", ip(i), o.web_port),
            format!("-retry-join={lb_ip}:{GOSSIP_PORT}"),
            "-retry-interval=1s".to_owned(),
        ]);
        nodes.push(Node {
            name,
            ip: ip(i),
            args: a,
        });
    }
    nodes
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    u32::from_le_bytes(b)
}

/// A running agent.
struct Running {
    name: String,
    pid: u32,
    child: Child,
    log: PathBuf,
}

fn spawn(node: &Node, log: &Path) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let out = File::create(log)?;
    Command::new(exe)
        .args(&node.args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .env("NO_COLOR", "1")
        // Its own process group: a Ctrl-C in the terminal reaches only us, and we stop each
        // agent ourselves, once, in order.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

fn signal_pid(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

pub async fn run(o: DemoOptions) -> ExitCode {
    match demo(o).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Fails with a hint if an address the demo needs is taken (another demo, or agents by hand).
fn preflight(o: &DemoOptions, nodes: &[Node]) -> Result<(), String> {
    let mut wanted = vec![
        ("-lb-listen", o.lb_listen),
        ("-lb-stats", o.lb_stats),
        ("-ui-addr", o.ui_addr),
    ];
    for n in nodes {
        wanted.push(("-bind-base", n.gossip()));
        if n.name != "lb" {
            wanted.push(("-web-port", SocketAddr::from((n.ip, o.web_port))));
        }
    }
    for (flag, addr) in wanted {
        std::net::TcpListener::bind(addr).map_err(|e| {
            format!(
                "cannot use {addr}: {e} (is another demo or agent running? pass {flag} to move it)"
            )
        })?;
    }
    Ok(())
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

async fn demo(o: DemoOptions) -> Result<ExitCode, String> {
    let nodes = plan(&o);
    preflight(&o, &nodes)?;
    let log_dir = match &o.log_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("vassal-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&log_dir).map_err(|e| {
        format!(
            "cannot create log dir {}: {e} (pass -log-dir)",
            log_dir.display()
        )
    })?;

    println!("==> Vassal demo: a load balancer and {} web nodes", o.web);
    println!(
        "    Web site (through the balancer): http://{}/",
        o.lb_listen
    );
    println!(
        "    Load balancer stats:             http://{}/",
        o.lb_stats
    );
    println!("    Cluster page (members, map):     http://{}/", o.ui_addr);
    println!("    Agent logs:                      {}", log_dir.display());
    println!();
    println!("    {:<8} {:<21} {:<21} web", "node", "gossip", "rpc");
    for n in &nodes {
        let web = if n.name == "lb" {
            format!("http://{}/", o.lb_listen)
        } else {
            format!("http://{}:{}/", n.ip, o.web_port)
        };
        println!(
            "    {:<8} {:<21} {:<21} {web}",
            n.name,
            n.gossip().to_string(),
            n.rpc().to_string()
        );
    }
    println!();

    // Random order, random pauses: the cluster must converge however it forms.
    let mut order: Vec<Node> = nodes;
    for i in (1..order.len()).rev() {
        let j = random_u32() as usize % (i + 1);
        order.swap(i, j);
    }
    let mut pending = order.into_iter();
    let mut next_at = Instant::now() + delay();
    let mut running: Vec<Running> = Vec::new();
    let total = o.web as usize + 1;

    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut next = pending.next();
    loop {
        let start_due = vassal_node::sleep_until(next.is_some().then_some(next_at));
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = start_due => {
                let node = next.take().expect("a node is due");
                let log = log_dir.join(format!("{}.log", node.name));
                match spawn(&node, &log) {
                    Ok(child) => {
                        let pid = child.id().expect("a just-spawned child has a PID");
                        println!("==> started {} (pid {pid}, gossip {}, log {})",
                            node.name, node.gossip(), log.display());
                        running.push(Running { name: node.name.clone(), pid, child, log });
                    }
                    Err(e) => {
                        println!("==> could not start {}: {e}", node.name);
                    }
                }
                next = pending.next();
                next_at = Instant::now() + delay();
                if next.is_none() {
                    println!("==> all {} agents started; press Ctrl-C to stop them", running.len());
                    if running.len() < total {
                        println!("==> ({} of {total} failed to start)", total - running.len());
                    }
                }
            }
            _ = poll.tick() => {
                for r in &mut running {
                    if r.child.id().is_none() {
                        continue;
                    }
                    if let Ok(Some(status)) = r.child.try_wait() {
                        println!("==> {} (pid {}) exited unexpectedly ({status}); its log: {}\n{}",
                            r.name, r.pid, r.log.display(), tail(&r.log, 5));
                    }
                }
            }
        }
    }

    println!(
        "==> Stopping {} agents...",
        running
            .iter_mut()
            .filter(|r| r.child.id().is_some())
            .count()
    );
    for r in &running {
        // Not yet reaped, so the PID is still our child's.
        if let Some(pid) = r.child.id() {
            signal_pid(pid, Signal::SIGINT);
        }
    }
    let deadline = Instant::now() + STOP_DEADLINE;
    for r in &mut running {
        if r.child.id().is_none() {
            continue;
        }
        match tokio::time::timeout_at(deadline, r.child.wait()).await {
            Ok(Ok(status)) => println!("==> {} (pid {}) stopped ({status})", r.name, r.pid),
            Ok(Err(e)) => println!("==> waiting for {} (pid {}): {e}", r.name, r.pid),
            Err(_) => {
                println!(
                    "==> {} (pid {}) did not leave within {STOP_DEADLINE:?}; killing it",
                    r.name, r.pid
                );
                let _ = r.child.kill().await;
            }
        }
    }
    println!("==> every agent has stopped");
    Ok(ExitCode::SUCCESS)
}

fn delay() -> Duration {
    Duration::from_millis(u64::from(random_u32() % MAX_START_DELAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_plan_puts_each_node_on_its_own_address_and_web_nodes_join_the_lb() {
        let o = options(&args(&["-web=3"])).unwrap();
        let nodes = plan(&o);
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["lb", "web-1", "web-2", "web-3"]);
        let ips: std::collections::BTreeSet<_> = nodes.iter().map(|n| n.ip).collect();
        assert_eq!(ips.len(), 4);
        assert!(nodes[0]
            .args
            .contains(&"-lb-listen=127.0.0.1:8080".to_owned()));
        assert!(nodes[0]
            .args
            .contains(&"-lb-stats=127.0.0.1:9999".to_owned()));
        assert!(nodes[0]
            .args
            .contains(&"-ui-addr=127.0.0.1:9990".to_owned()));
        assert!(nodes[0].args.contains(&"-node=lb".to_owned()));
        for w in &nodes[1..] {
            assert!(w.args.contains(&format!("-node={}", w.name)));
            assert!(
                w.args.contains(&"-retry-join=127.0.0.10:7946".to_owned()),
                "{:?}",
                w.args
            );
            assert!(w.args.contains(&format!("-web-listen={}:8000", w.ip)));
            // What `vassal agent` will accept.
            crate::agent::options(&w.args[1..]).unwrap();
            let rpc = format!("-rpc-addr={}:7373", w.ip);
            assert!(w.args.contains(&rpc), "{:?}", w.args);
        }
        crate::agent::options(&nodes[0].args[1..]).unwrap();
    }

    #[test]
    fn bad_demo_flags_name_the_flag() {
        for (a, flag) in [
            (&["-web=0"][..], "-web"),
            (&["-web=lots"], "-web"),
            (&["-bind-base=10.0.0.1"], "-bind-base"),
            (&["-bind-base=127.0.0.250", "-web=5"], "-bind-base"),
            (&["-lb-listen=8080"], "-lb-listen"),
            (&["-ui-addr=9990"], "-ui-addr"),
        ] {
            let e = options(&args(a)).unwrap_err().to_string();
            assert!(e.contains(flag), "{a:?}: {e}");
        }
    }
}
