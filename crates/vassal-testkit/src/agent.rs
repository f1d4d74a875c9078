//! What the harnesses for Go's `serf agent` ([`GoSerf`](crate::GoSerf)) and our `vassal agent`
//! ([`VassalAgent`](crate::VassalAgent)) share: the flags an agent is started with, and the
//! handle on the running process. Each kind adds its own flags, spawn and observations.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;

use crate::net::Loopback;
use crate::process::{Proc, STOP_DEADLINE};

/// Everything needed to start (and restart, under the same name and addresses) an agent of
/// kind `K`: see [`GoSerfBuilder`](crate::GoSerfBuilder) and
/// [`VassalAgentBuilder`](crate::VassalAgentBuilder).
#[derive(Debug, Clone)]
pub struct AgentBuilder<K> {
    pub(crate) name: String,
    bind: SocketAddr,
    rpc: SocketAddr,
    join: Vec<SocketAddr>,
    encrypt: Option<String>,
    tags: Vec<(String, String)>,
    event_handlers: Vec<String>,
    extra_args: Vec<String>,
    /// What only this kind of agent is started with.
    pub(crate) kind: K,
}

impl<K> AgentBuilder<K> {
    /// Agent `name` with gossip and RPC ports allocated on `host`.
    pub(crate) fn new(name: &str, host: &Loopback, kind: K) -> Self {
        AgentBuilder {
            name: name.to_string(),
            bind: host.addr(),
            rpc: host.addr(),
            join: Vec::new(),
            encrypt: None,
            tags: Vec::new(),
            event_handlers: Vec::new(),
            extra_args: Vec::new(),
            kind,
        }
    }

    /// Join this address at startup (`-join`). Go exits 1 if that join fails, and
    /// [`GoSerfBuilder::spawn`](crate::GoSerfBuilder::spawn) then panics with its log: start
    /// the target first (for a Vassal target, prefer [`GoSerf::try_join`](crate::GoSerf::try_join)
    /// inside [`wait_until`](crate::wait_until)).
    pub fn join(mut self, addr: SocketAddr) -> Self {
        self.join.push(addr);
        self
    }
    /// Base64 gossip key (`-encrypt`), e.g. from `serf keygen`.
    pub fn encrypt(mut self, key: &str) -> Self {
        self.encrypt = Some(key.to_string());
        self
    }
    /// A tag (`-tag k=v`).
    pub fn tag(mut self, k: &str, v: &str) -> Self {
        self.tags.push((k.to_string(), v.to_string()));
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
    /// Any other `agent` flags, passed through verbatim.
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

    /// `agent` and its flags in Serf's spelling (§5.5): name, addresses (our own `-rpc-addr`, so
    /// parallel tests do not fight over the default 127.0.0.1:7373), `kind_args`, joins, key,
    /// tags, handlers, then the extra arguments.
    pub(crate) fn agent_args(&self, kind_args: &[String]) -> Vec<String> {
        let mut a = vec![
            "agent".into(),
            format!("-node={}", self.name),
            format!("-bind={}", self.bind),
            format!("-rpc-addr={}", self.rpc),
        ];
        a.extend_from_slice(kind_args);
        a.extend(self.join.iter().map(|j| format!("-join={j}")));
        if let Some(k) = &self.encrypt {
            a.push(format!("-encrypt={k}"));
        }
        for (k, v) in &self.tags {
            a.extend(["-tag".into(), format!("{k}={v}")]);
        }
        a.extend(
            self.event_handlers
                .iter()
                .map(|h| format!("-event-handler={h}")),
        );
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// A running agent of kind `K`: see [`GoSerf`](crate::GoSerf) and
/// [`VassalAgent`](crate::VassalAgent). Dropping it SIGKILLs and reaps the process.
#[derive(Debug)]
pub struct Agent<K> {
    pub(crate) cfg: AgentBuilder<K>,
    pub(crate) proc: Proc,
}

impl<K: Clone> Agent<K> {
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
    pub fn builder_again(&self) -> AgentBuilder<K> {
        self.cfg.clone()
    }

    /// SIGKILL and reap: the node vanishes without a leave, so peers should mark it failed.
    pub fn kill_9(&mut self) -> ExitStatus {
        self.proc.kill_9()
    }
    /// SIGINT and wait (≤ 10 s): a graceful leave (§5.6), so peers should mark it left.
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.interrupt(STOP_DEADLINE)
    }
    /// Whether the process is still running (reaps it if not).
    pub fn is_running(&mut self) -> bool {
        self.proc.try_exit().is_none()
    }
    /// The exit status, once the agent has exited on its own.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.proc.try_exit()
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

/// `ARGS[0] -rpc-addr=RPC ARGS[1..]`: a CLI command aimed at the agent at `rpc`.
pub(crate) fn rpc_args(rpc: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![args[0].to_string(), format!("-rpc-addr={rpc}")];
    a.extend(args[1..].iter().map(|s| s.to_string()));
    a
}
