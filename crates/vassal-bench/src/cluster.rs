//! Spawning a cluster of agents on loopback, and tearing it down.
//!
//! Every agent the harness starts is tracked by PID in [`procs`] from spawn until it has been
//! reaped. Signals go only to those PIDs, and only while they are unreaped children, so a PID
//! can never have been handed to another process meanwhile. Nothing is ever killed by name.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::process::{Child, Command};
use vassal_rpc::Client;

use crate::cli::{AddrMode, JoinMode, Kind, StartMode};
use crate::handlers::{self, EventLogs};
use crate::report::now;

/// The table of live child PIDs, for the exit, Ctrl-C and panic paths.
pub mod procs {
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
    static WORKDIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// A child was spawned.
    pub fn track(pid: u32) {
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).insert(pid);
    }

    /// A child was reaped: its PID is no longer ours to signal.
    pub fn forget(pid: u32) {
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
    }

    /// SIGKILL to every child not yet reaped. For the abnormal exits (Ctrl-C, panic); the normal
    /// path stops each cluster through its own `Child` handles.
    pub fn kill_all() -> usize {
        let live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        for &pid in live.iter() {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        live.len()
    }

    /// A work directory to remove on an abnormal exit (unless `--keep`).
    pub fn add_workdir(dir: PathBuf) {
        WORKDIRS.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
    }

    pub fn remove_workdir_entry(dir: &std::path::Path) {
        WORKDIRS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| d != dir);
    }

    /// Removes every registered work directory.
    pub fn remove_workdirs() {
        let mut dirs = WORKDIRS.lock().unwrap_or_else(|p| p.into_inner());
        for d in dirs.drain(..) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `ip` if it is in 127.0.0.0/8; the harness never sends anywhere else.
pub fn loopback(ip: Ipv4Addr) -> Result<Ipv4Addr, String> {
    if ip.octets()[0] == 127 {
        Ok(ip)
    } else {
        Err(format!("refusing non-loopback address {ip}"))
    }
}

/// Gossip and RPC addresses for `n` agents, at a random place in 127/8 so that parallel runs
/// do not collide.
pub fn addresses(
    rng: &mut impl Rng,
    n: usize,
    mode: AddrMode,
) -> Result<Vec<(SocketAddrV4, SocketAddrV4)>, String> {
    let mut out = Vec::with_capacity(n);
    match mode {
        AddrMode::Ip => {
            // 250 agents per /24; 127.0.x.x is left to everyone else.
            let blocks = n.div_ceil(250);
            if blocks > 200 {
                return Err(format!("{n} agents do not fit the address plan"));
            }
            let second: u8 = rng.gen_range(16..=250);
            let third0: usize = rng.gen_range(0..=(255 - blocks));
            for i in 0..n {
                let third = u8::try_from(third0 + i / 250).map_err(|e| e.to_string())?;
                let fourth = u8::try_from(1 + i % 250).map_err(|e| e.to_string())?;
                let ip = loopback(Ipv4Addr::new(127, second, third, fourth))?;
                out.push((SocketAddrV4::new(ip, 7946), SocketAddrV4::new(ip, 7373)));
            }
        }
        AddrMode::Port => {
            let ip = loopback(Ipv4Addr::new(
                127,
                rng.gen_range(16..=250),
                rng.gen_range(0..=255),
                rng.gen_range(1..=254),
            ))?;
            let span = 2 * n;
            if span > 30_000 {
                return Err(format!("{n} agents do not fit the port range"));
            }
            let base = rng.gen_range(20_000..=(60_000 - span));
            for i in 0..n {
                let gossip = u16::try_from(base + i).map_err(|e| e.to_string())?;
                let rpc = u16::try_from(base + n + i).map_err(|e| e.to_string())?;
                out.push((SocketAddrV4::new(ip, gossip), SocketAddrV4::new(ip, rpc)));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    New,
    Running,
    /// Killed by the failure scenario.
    Killed,
    /// Left gracefully.
    Left,
}

pub struct Agent {
    pub idx: usize,
    pub name: String,
    pub bind: SocketAddrV4,
    pub rpc: SocketAddrV4,
    pub handler: PathBuf,
    pub agent_log: PathBuf,
    pub child: Option<Child>,
    pub pid: Option<u32>,
    pub state: State,
    pub t_spawn: Option<f64>,
    pub t_ready: Option<f64>,
}

impl Agent {
    /// SIGKILL to this agent if it is still our unreaped child, then reap it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `start_kill` on a reaped child does nothing: the PID cannot be reused under us.
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            if let Some(pid) = self.pid {
                procs::forget(pid);
            }
        }
    }

    /// Waits up to `limit` for the agent to exit by itself; the moment it was seen gone.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<f64> {
        let child = self.child.as_mut()?;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(_) => {
                let t = now();
                self.child = None;
                if let Some(pid) = self.pid {
                    procs::forget(pid);
                }
                Some(t)
            }
            Err(_) => None,
        }
    }

    /// The last `n` bytes of the agent's own output, on one line.
    pub fn log_tail(&self, n: u64) -> String {
        tail(&self.agent_log, n)
    }
}

fn tail(path: &Path, n: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(n)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().replace('\n', " | ")
}

/// How a cluster is started.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub binary: PathBuf,
    pub start: StartMode,
    pub join: JoinMode,
    /// Whether the handler also runs for member events (else only for user events and
    /// queries: at N = 1,000 a member event is 1,000 handler processes).
    pub member_handlers: bool,
}

pub struct Cluster {
    pub plan: Plan,
    pub workdir: PathBuf,
    pub agents: Vec<Agent>,
    pub events: EventLogs,
    keep: bool,
    pub t_first_spawn: f64,
    pub t_last_spawn: f64,
    pub t_last_ready: f64,
}

impl Cluster {
    /// Lays out `addrs.len()` agents under a fresh work directory in /tmp: per agent a handler
    /// script, an (empty) handler log and the agent's output log.
    pub fn prepare(
        plan: Plan,
        addrs: &[(SocketAddrV4, SocketAddrV4)],
        tag: &str,
        keep: bool,
    ) -> Result<Cluster, String> {
        let workdir = std::env::temp_dir().join(format!(
            "cluster-bench-{}-{}-{tag}",
            std::process::id(),
            plan.kind.as_str()
        ));
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(&workdir)
            .map_err(|e| format!("creating {}: {e}", workdir.display()))?;
        if !keep {
            procs::add_workdir(workdir.clone());
        }
        let mut agents = Vec::with_capacity(addrs.len());
        let mut logs = Vec::with_capacity(addrs.len());
        for (idx, (bind, rpc)) in addrs.iter().enumerate() {
            loopback(*bind.ip())?;
            loopback(*rpc.ip())?;
            let name = format!("{}{idx:04}", plan.kind.as_str());
            let dir = workdir.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let handler = dir.join("handler.sh");
            let evlog = dir.join("events.log");
            std::fs::write(&handler, handlers::script(&name, &evlog))
                .and_then(|_| std::fs::write(&evlog, b""))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            set_executable(&handler)?;
            logs.push(evlog);
            agents.push(Agent {
                idx,
                name,
                bind: *bind,
                rpc: *rpc,
                handler,
                agent_log: dir.join("agent.log"),
                child: None,
                pid: None,
                state: State::New,
                t_spawn: None,
                t_ready: None,
            });
        }
        Ok(Cluster {
            plan,
            workdir,
            agents,
            events: EventLogs::new(logs),
            keep,
            t_first_spawn: 0.0,
            t_last_spawn: 0.0,
            t_last_ready: 0.0,
        })
    }

    pub fn n(&self) -> usize {
        self.agents.len()
    }

    /// Indices of the agents still running.
    pub fn live(&self) -> Vec<usize> {
        self.agents
            .iter()
            .filter(|a| a.state == State::Running)
            .map(|a| a.idx)
            .collect()
    }

    fn args(&self, idx: usize, seed: Option<SocketAddrV4>) -> Vec<String> {
        let a = &self.agents[idx];
        let mut args = vec![
            "agent".to_owned(),
            format!("-node={}", a.name),
            format!("-bind={}", a.bind),
            format!("-rpc-addr={}", a.rpc),
        ];
        if let Some(seed) = seed {
            match self.plan.join {
                JoinMode::Join => args.push(format!("-join={seed}")),
                JoinMode::Retry => {
                    args.push(format!("-retry-join={seed}"));
                    args.push("-retry-interval=1s".to_owned());
                }
            }
        }
        args.push("-tag=bench=1".to_owned());
        if self.plan.member_handlers {
            args.push(format!("-event-handler={}", a.handler.display()));
        } else {
            args.push(format!("-event-handler=user={}", a.handler.display()));
            args.push(format!("-event-handler=query={}", a.handler.display()));
        }
        args
    }

    /// Lines of every agent's own log that contain `needle` (e.g. Serf's
    /// `EventMemberFailed:`, which Go and Vassal both log), summed over the agents.
    pub fn logged(&self, needle: &str) -> usize {
        self.agents
            .iter()
            .filter_map(|a| std::fs::read(&a.agent_log).ok())
            .map(|text| {
                text.split(|&b| b == b'\n')
                    .filter(|line| line.windows(needle.len()).any(|w| w == needle.as_bytes()))
                    .count()
            })
            .sum()
    }

    fn spawn(&mut self, idx: usize, seed: Option<SocketAddrV4>) -> Result<(), String> {
        if let Some(s) = seed {
            loopback(*s.ip())?;
        }
        let args = self.args(idx, seed);
        let a = &mut self.agents[idx];
        let out = std::fs::File::create(&a.agent_log)
            .map_err(|e| format!("{}: {e}", a.agent_log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.plan.binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Own process group: a Ctrl-C at the terminal reaches only the harness, which then
            // stops the agents itself.
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.plan.binary.display()))?;
        let pid = child.id();
        if let Some(pid) = pid {
            procs::track(pid);
        }
        a.pid = pid;
        a.child = Some(child);
        a.state = State::Running;
        a.t_spawn = Some(now());
        Ok(())
    }

    /// Waits until agent `idx` answers its RPC (handshake done); the connected client.
    pub async fn wait_ready(&mut self, idx: usize, limit: Duration) -> Result<Client, String> {
        let deadline = Instant::now() + limit;
        let a = &mut self.agents[idx];
        let addr = a.rpc.to_string();
        loop {
            if let Some(child) = a.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    a.child = None;
                    if let Some(pid) = a.pid {
                        procs::forget(pid);
                    }
                    a.state = State::Killed;
                    return Err(format!(
                        "{} exited ({status}) before its RPC answered: {}",
                        a.name,
                        a.log_tail(600)
                    ));
                }
            }
            if let Ok(c) = Client::connect(&addr, "").await {
                a.t_ready = Some(now());
                return Ok(c);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: RPC on {addr} not answering after {:.0} s: {}",
                    a.name,
                    limit.as_secs_f64(),
                    a.log_tail(600)
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts every agent, seed first. Returns the RPC clients of the agents in `keep_clients`
    /// (the observers), by index.
    pub async fn start(&mut self, keep_clients: &[usize]) -> Result<Vec<(usize, Client)>, String> {
        let mut clients = Vec::new();
        let keep = |idx: usize, c: Client, clients: &mut Vec<(usize, Client)>| {
            if keep_clients.contains(&idx) {
                clients.push((idx, c));
            }
        };
        let seed = self.agents[0].bind;
        self.spawn(0, None)?;
        let c = self.wait_ready(0, Duration::from_secs(30)).await?;
        keep(0, c, &mut clients);
        match self.plan.start {
            StartMode::Sequential => {
                for idx in 1..self.n() {
                    self.spawn(idx, Some(seed))?;
                    let c = self.wait_ready(idx, Duration::from_secs(30)).await?;
                    keep(idx, c, &mut clients);
                }
            }
            StartMode::Burst => {
                for idx in 1..self.n() {
                    self.spawn(idx, Some(seed))?;
                }
                // Every joiner is waited for, so the error says how many failed, not just
                // the first (with `-join`, an agent whose join times out exits).
                let mut failed = Vec::new();
                for idx in 1..self.n() {
                    match self.wait_ready(idx, Duration::from_secs(120)).await {
                        Ok(c) => keep(idx, c, &mut clients),
                        Err(e) => failed.push(e),
                    }
                }
                if let Some(first) = failed.first() {
                    return Err(format!(
                        "{} of {} joiners did not start; first: {first}",
                        failed.len(),
                        self.n() - 1
                    ));
                }
            }
        }
        let spawns = self.agents.iter().filter_map(|a| a.t_spawn);
        self.t_first_spawn = spawns.clone().fold(f64::INFINITY, f64::min);
        self.t_last_spawn = spawns.fold(0.0, f64::max);
        self.t_last_ready = self
            .agents
            .iter()
            .filter_map(|a| a.t_ready)
            .fold(0.0, f64::max);
        Ok(clients)
    }

    /// SIGKILL to every agent still running (by its own child handle), reap them, and remove
    /// the work directory unless asked to keep it.
    pub async fn teardown(&mut self) {
        for a in &mut self.agents {
            if let Some(child) = a.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        for a in &mut self.agents {
            a.kill().await;
        }
        if self.keep {
            eprintln!("  kept {}", self.workdir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.workdir);
            procs::remove_workdir_entry(&self.workdir);
        }
    }
}

fn set_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn addresses_stay_in_loopback() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for mode in [AddrMode::Ip, AddrMode::Port] {
            for n in [1, 5, 250, 251, 1000] {
                let addrs = addresses(&mut rng, n, mode).unwrap();
                assert_eq!(addrs.len(), n);
                let mut seen = std::collections::HashSet::new();
                for (g, r) in &addrs {
                    assert_eq!(g.ip().octets()[0], 127);
                    assert_ne!(g.ip().octets()[1], 0);
                    assert!(seen.insert(*g) && seen.insert(*r), "duplicate address");
                }
            }
        }
        assert!(loopback(Ipv4Addr::new(10, 0, 0, 1)).is_err());
    }
}
