//! The real Go Serf agent (`/usr/bin/serf`, Debian 0.9.4) as a test oracle: spawned on a
//! [`Loopback`] address, observed through its own CLI (`serf members -format json`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use serde::Deserialize;

use crate::net::Loopback;
use crate::process::{run_with_timeout, Proc, STOP_DEADLINE};
use crate::wait::wait_until;

/// Where `scripts/setup` installs Serf (`apt-get install serf`).
pub const SERF_BIN: &str = "/usr/bin/serf";

/// How long one `serf` CLI call may take before we call the agent unresponsive.
const CLI_DEADLINE: Duration = Duration::from_secs(5);

/// How long a freshly spawned Go agent may take to answer RPC.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// One row of `serf members -format json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub name: String,
    /// Gossip address, `ip:port`.
    pub addr: SocketAddr,
    /// `alive`, `leaving`, `left` or `failed`.
    pub status: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct MembersJson {
    members: Vec<Member>,
}

/// Everything needed to start (and restart, with the same name and addresses) a Go agent.
#[derive(Debug, Clone)]
pub struct GoSerfBuilder {
    name: String,
    bind: SocketAddr,
    rpc: SocketAddr,
    join: Vec<SocketAddr>,
    encrypt: Option<String>,
    tags: Vec<(String, String)>,
    log_level: String,
    event_handlers: Vec<String>,
    extra_args: Vec<String>,
}

impl GoSerfBuilder {
    /// Join this address at startup (`-join`). Go exits 1 if that join fails, and `spawn`
    /// then panics with its log: start the target first (for a Vassal target, prefer
    /// [`GoSerf::try_join`] inside [`wait_until`]).
    #[track_caller]
    pub fn join(mut self, addr: SocketAddr) -> Self {
        self.join.push(addr);
        self
    }
    /// Base64 gossip key (`-encrypt`), e.g. from `serf keygen`.
    pub fn encrypt(mut self, key: &str) -> Self {
        self.encrypt = Some(key.to_string());
        self
    }
    pub fn tag(mut self, k: &str, v: &str) -> Self {
        self.tags.push((k.to_string(), v.to_string()));
        self
    }
    /// `-log-level`; the harness default is `debug` so decode errors show up in the log.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }
    /// `-event-handler` (may be given more than once), e.g. `member-join=/path/to/script`.
    pub fn event_handler(mut self, handler: &str) -> Self {
        self.event_handlers.push(handler.to_string());
        self
    }
    /// Gossip on this address instead of the one allocated (to restart a node where another
    /// one ran, e.g. from its snapshot).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }
    /// Any other `serf agent` flags, passed through verbatim.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }
    pub fn bind_addr(&self) -> SocketAddr {
        self.bind
    }
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "agent".into(),
            "-node".into(),
            self.name.clone(),
            "-bind".into(),
            self.bind.to_string(),
            "-rpc-addr".into(),
            self.rpc.to_string(),
            "-log-level".into(),
            self.log_level.clone(),
        ];
        for j in &self.join {
            a.extend(["-join".into(), j.to_string()]);
        }
        if let Some(k) = &self.encrypt {
            a.extend(["-encrypt".into(), k.clone()]);
        }
        for (k, v) in &self.tags {
            a.extend(["-tag".into(), format!("{k}={v}")]);
        }
        for h in &self.event_handlers {
            a.extend(["-event-handler".into(), h.clone()]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Starts an agent expected to refuse to start (bad flags or files): waits up to
    /// `deadline` for it to exit and returns its exit code and output. Panics if it keeps
    /// running.
    #[track_caller]
    pub fn spawn_expecting_exit(&self, deadline: Duration) -> (Option<i32>, String) {
        let mut proc = Proc::spawn(
            &format!("go-serf-{}", self.name),
            Path::new(SERF_BIN),
            &self.args(),
            &[],
        );
        let status = wait_until(deadline, &format!("Go agent {} to exit", self.name), || {
            proc.try_exit().ok_or_else(|| proc.log_tail(10))
        });
        (status.code(), proc.log())
    }

    /// Starts the agent and waits (≤ 10 s) until its RPC answers and lists itself alive.
    /// Panics with the agent's log if it exits or never becomes ready.
    #[track_caller]
    pub fn spawn(&self) -> GoSerf {
        assert!(
            Path::new(SERF_BIN).exists(),
            "{SERF_BIN} not found: run `scripts/setup` (installs the Debian `serf` package)"
        );
        let proc = Proc::spawn(
            &format!("go-serf-{}", self.name),
            Path::new(SERF_BIN),
            &self.args(),
            &[],
        );
        let mut agent = GoSerf {
            cfg: self.clone(),
            proc,
        };
        let name = self.name.clone();
        wait_until(
            READY_DEADLINE,
            &format!("Go agent {name} to answer RPC and list itself alive"),
            || {
                agent.proc.assert_running();
                let members = agent.try_members()?;
                match members.iter().find(|m| m.name == name) {
                    Some(m) if m.status == "alive" => Ok(()),
                    _ => Err(format!("{members:#?}")),
                }
            },
        );
        agent
    }
}

/// A running `/usr/bin/serf agent`. Dropping it SIGKILLs and reaps the process.
#[derive(Debug)]
pub struct GoSerf {
    cfg: GoSerfBuilder,
    proc: Proc,
}

impl GoSerf {
    /// A builder for agent `name` with gossip and RPC ports allocated on `host`.
    pub fn builder(name: &str, host: &Loopback) -> GoSerfBuilder {
        GoSerfBuilder {
            name: name.to_string(),
            bind: host.addr(),
            rpc: host.addr(),
            join: Vec::new(),
            encrypt: None,
            tags: Vec::new(),
            log_level: "debug".into(),
            event_handlers: Vec::new(),
            extra_args: Vec::new(),
        }
    }

    /// Shorthand for `GoSerf::builder(name, host).spawn()`.
    pub fn start(name: &str, host: &Loopback) -> GoSerf {
        Self::builder(name, host).spawn()
    }

    /// `serf keygen`: a fresh base64 32-byte key.
    #[track_caller]
    pub fn keygen() -> String {
        run_with_timeout(Path::new(SERF_BIN), &["keygen".into()], CLI_DEADLINE)
            .unwrap_or_else(|e| panic!("serf keygen: {e}"))
            .trim()
            .to_string()
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    /// Gossip address (`-bind`).
    pub fn addr(&self) -> SocketAddr {
        self.cfg.bind
    }
    pub fn rpc_addr(&self) -> SocketAddr {
        self.cfg.rpc
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    /// The configuration it was started with; `.spawn()` it again to restart under the same
    /// name and addresses.
    pub fn builder_again(&self) -> GoSerfBuilder {
        self.cfg.clone()
    }

    /// Runs `serf ARGS[0] -rpc-addr=<this agent> ARGS[1..]`; its combined output, or an error
    /// with the output if it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut a: Vec<String> = vec![args[0].to_string(), format!("-rpc-addr={}", self.cfg.rpc)];
        a.extend(args[1..].iter().map(|s| s.to_string()));
        run_with_timeout(Path::new(SERF_BIN), &a, CLI_DEADLINE)
    }

    /// `serf members -format json`, or a description of why it failed.
    pub fn try_members(&self) -> Result<Vec<Member>, String> {
        self.try_members_filtered(&[])
    }

    /// `serf members -format json FILTERS…`, e.g. `&["-tag", "role=web"]` or
    /// `&["-status", "alive"]`.
    pub fn try_members_filtered(&self, filters: &[&str]) -> Result<Vec<Member>, String> {
        let mut args = vec!["members", "-format", "json"];
        args.extend_from_slice(filters);
        let out = self.cli(&args)?;
        serde_json::from_str::<MembersJson>(&out)
            .map(|m| m.members)
            .map_err(|e| format!("cannot parse `serf {}` ({e}):\n{out}", args.join(" ")))
    }

    /// `serf members -format json`; panics (with the agent's log tail) if the CLI fails.
    #[track_caller]
    pub fn members(&self) -> Vec<Member> {
        self.try_members().unwrap_or_else(|e| {
            panic!(
                "{e}\nagent {} log tail:\n{}",
                self.name(),
                self.proc.log_tail(40)
            )
        })
    }

    /// The status this agent reports for `name`, or `None` if it does not list it.
    pub fn member_status(&self, name: &str) -> Option<String> {
        self.members()
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.status)
    }

    /// Waits until this agent lists `name` with `status`; the panic shows the last member list.
    #[track_caller]
    pub fn wait_member_status(&self, name: &str, status: &str, deadline: Duration) -> Member {
        wait_until(
            deadline,
            &format!("Go agent {} to list {name} as {status}", self.name()),
            || {
                let members = self.try_members()?;
                match members.iter().find(|m| m.name == name) {
                    Some(m) if m.status == status => Ok(m.clone()),
                    _ => Err(format_members(&members)),
                }
            },
        )
    }

    /// Waits until this agent lists every one of `names` as alive.
    #[track_caller]
    pub fn wait_all_alive(&self, names: &[&str], deadline: Duration) -> Vec<Member> {
        wait_until(
            deadline,
            &format!("Go agent {} to list {names:?} all alive", self.name()),
            || {
                let members = self.try_members()?;
                let all = names
                    .iter()
                    .all(|n| members.iter().any(|m| m.name == *n && m.status == "alive"));
                if all {
                    Ok(members)
                } else {
                    Err(format_members(&members))
                }
            },
        )
    }

    /// `serf join ADDR`; `Err` carries the CLI's output.
    pub fn try_join(&self, addr: SocketAddr) -> Result<(), String> {
        let out = self.cli(&["join", &addr.to_string()])?;
        if out.contains("Successfully joined cluster") {
            Ok(())
        } else {
            Err(format!("unexpected `serf join` output: {out}"))
        }
    }

    /// `serf event NAME PAYLOAD`; panics if the CLI does not report it dispatched.
    #[track_caller]
    pub fn event(&self, name: &str, payload: &str) {
        let out = self
            .cli(&["event", name, payload])
            .unwrap_or_else(|e| panic!("`serf event {name}` on {}: {e}", self.name()));
        assert!(
            out.contains("dispatched"),
            "`serf event {name}` said: {out}"
        );
    }

    /// `serf join ADDR`; panics if it fails.
    #[track_caller]
    pub fn join(&self, addr: SocketAddr) {
        self.try_join(addr)
            .unwrap_or_else(|e| panic!("Go agent {} joining {addr}: {e}", self.name()))
    }

    /// SIGKILL and reap: the node vanishes without a leave, so peers should mark it failed.
    pub fn kill_9(&mut self) -> ExitStatus {
        self.proc.kill_9()
    }

    /// SIGINT and wait (≤ 10 s): a graceful leave, so peers should mark it left.
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.interrupt(STOP_DEADLINE)
    }

    /// Whether the process is still running (reaps it if not).
    pub fn is_running(&mut self) -> bool {
        self.proc.try_exit().is_none()
    }

    /// Panics with the log tail if the agent has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        self.proc.assert_running()
    }

    /// Everything the agent has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }
    /// The agent's private temp dir (also its working directory): put handler scripts here.
    pub fn dir(&self) -> &Path {
        self.proc.dir()
    }
}

/// `name addr status` per line, like `serf members`.
pub(crate) fn format_members(members: &[Member]) -> String {
    if members.is_empty() {
        return "<no members>".into();
    }
    members
        .iter()
        .map(|m| format!("{}  {}  {}  {:?}", m.name, m.addr, m.status, m.tags))
        .collect::<Vec<_>>()
        .join("\n")
}
