//! The real Go Serf agent (`/usr/bin/serf`, Debian 0.9.4) as a test oracle: spawned on a
//! [`Loopback`] address, observed through its own CLI (`serf members -format json`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::agent::{rpc_args, Agent, AgentBuilder};
use crate::net::Loopback;
use crate::process::{run_with_timeout, Proc};
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

/// What only a Go agent is started with.
#[derive(Debug, Clone)]
pub struct GoSerfKind {
    log_level: String,
}

/// Everything needed to start (and restart, with the same name and addresses) a Go agent.
pub type GoSerfBuilder = AgentBuilder<GoSerfKind>;

/// A running `/usr/bin/serf agent`. Dropping it SIGKILLs and reaps the process.
pub type GoSerf = Agent<GoSerfKind>;

impl GoSerfBuilder {
    /// `-log-level`; the harness default is `debug` so decode errors show up in the log.
    pub fn log_level(mut self, level: &str) -> Self {
        self.kind.log_level = level.to_string();
        self
    }

    fn args(&self) -> Vec<String> {
        self.agent_args(&[format!("-log-level={}", self.kind.log_level)])
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
        let mut agent = Agent {
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

impl GoSerf {
    /// A builder for agent `name` with gossip and RPC ports allocated on `host`.
    pub fn builder(name: &str, host: &Loopback) -> GoSerfBuilder {
        AgentBuilder::new(
            name,
            host,
            GoSerfKind {
                log_level: "debug".into(),
            },
        )
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

    /// Runs `serf ARGS[0] -rpc-addr=<this agent> ARGS[1..]`; its combined output, or an error
    /// with the output if it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        run_with_timeout(
            Path::new(SERF_BIN),
            &rpc_args(self.rpc_addr(), args),
            CLI_DEADLINE,
        )
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
