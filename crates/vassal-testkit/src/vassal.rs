//! Our own agent binary (`target/release/vassal agent …`) under test, observed through its log
//! and its RPC port (each agent gets its own `-rpc-addr`, so parallel tests never meet on
//! 127.0.0.1:7373): Go's `serf` CLI ([`VassalAgent::cli`]) or ours ([`VassalAgent::vassal_cli`]).
//!
//! Log contract the interop tests rely on (INFO level, one per line, anywhere in the line):
//! `member-join: NAME ADDR`, `member-failed: NAME`, `member-leave: NAME`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::go_serf::SERF_BIN;
use crate::net::Loopback;
use crate::process::{run_cli, CliRun, Proc, STOP_DEADLINE};
use crate::wait::wait_until;

/// The release binary the interop tests run: `$VASSAL_BIN` if set, else
/// `$CARGO_TARGET_DIR/release/vassal`, else `<workspace>/target/release/vassal`.
pub fn vassal_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VASSAL_BIN") {
        return PathBuf::from(p);
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        // This crate lives at <workspace>/crates/vassal-testkit.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    };
    target.join("release/vassal")
}

/// Everything needed to start (and restart, under the same name and address) a Vassal agent.
#[derive(Debug, Clone)]
pub struct VassalAgentBuilder {
    name: String,
    bind: SocketAddr,
    rpc: SocketAddr,
    join: Vec<SocketAddr>,
    encrypt: Option<String>,
    tags: Vec<(String, String)>,
    extra_args: Vec<String>,
}

impl VassalAgentBuilder {
    pub fn join(mut self, addr: SocketAddr) -> Self {
        self.join.push(addr);
        self
    }
    pub fn encrypt(mut self, key: &str) -> Self {
        self.encrypt = Some(key.to_string());
        self
    }
    pub fn tag(mut self, k: &str, v: &str) -> Self {
        self.tags.push((k.to_string(), v.to_string()));
        self
    }
    /// Gossip on this address instead of the one allocated (to restart a node where another
    /// one ran, e.g. from its snapshot).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }
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

    /// Starts the agent and waits (≤ 10 s) until its RPC port lists it alive; panics with the
    /// log if it exits or never gets there.
    #[track_caller]
    pub fn spawn_ready(&self) -> VassalAgent {
        let mut agent = self.spawn();
        agent.wait_ready(Duration::from_secs(10));
        agent
    }

    fn args(&self) -> Vec<String> {
        // Serf's flag spelling (§5.5); our own -rpc-addr so parallel tests do not fight over
        // the default 127.0.0.1:7373.
        let mut a = vec![
            "agent".into(),
            format!("-node={}", self.name),
            format!("-bind={}", self.bind),
            format!("-rpc-addr={}", self.rpc),
        ];
        a.extend(self.join.iter().map(|j| format!("-join={j}")));
        if let Some(k) = &self.encrypt {
            a.push(format!("-encrypt={k}"));
        }
        for (k, v) in &self.tags {
            a.extend(["-tag".into(), format!("{k}={v}")]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Starts the agent. There is no readiness signal yet, so this returns at once; callers wait
    /// on an observable condition (Go's member list, a log line).
    #[track_caller]
    pub fn spawn(&self) -> VassalAgent {
        let bin = vassal_bin();
        assert!(
            bin.exists(),
            "{} not found: run `cargo build --release --bin vassal` first (or set VASSAL_BIN)",
            bin.display()
        );
        let env = [("NO_COLOR", "1"), ("RUST_BACKTRACE", "1")];
        let proc = Proc::spawn(&format!("vassal-{}", self.name), &bin, &self.args(), &env);
        VassalAgent {
            cfg: self.clone(),
            proc,
        }
    }
}

impl VassalAgentBuilder {
    /// Starts the agent through a wrapper: `program prefix… vassal agent …`. The wrapper must
    /// end by exec-ing its arguments (as `unshare -m sh -c '…; exec "$0" "$@"'` does), so
    /// that the PID we signal is the agent's.
    #[track_caller]
    pub fn spawn_via(&self, program: &Path, prefix: &[String]) -> VassalAgent {
        let bin = vassal_bin();
        assert!(
            bin.exists(),
            "{} not found: run `cargo build --release --bin vassal` first (or set VASSAL_BIN)",
            bin.display()
        );
        let mut args = prefix.to_vec();
        args.push(bin.display().to_string());
        args.extend(self.args());
        let env = [("NO_COLOR", "1"), ("RUST_BACKTRACE", "1")];
        let proc = Proc::spawn(&format!("vassal-{}", self.name), program, &args, &env);
        VassalAgent {
            cfg: self.clone(),
            proc,
        }
    }
}

/// A running `vassal agent`. Dropping it SIGKILLs and reaps the process.
#[derive(Debug)]
pub struct VassalAgent {
    cfg: VassalAgentBuilder,
    proc: Proc,
}

impl VassalAgent {
    /// A builder for agent `name` with gossip and RPC ports allocated on `host`.
    pub fn builder(name: &str, host: &Loopback) -> VassalAgentBuilder {
        VassalAgentBuilder {
            name: name.to_string(),
            bind: host.addr(),
            rpc: host.addr(),
            join: Vec::new(),
            encrypt: None,
            tags: Vec::new(),
            extra_args: Vec::new(),
        }
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
    /// name and address.
    pub fn builder_again(&self) -> VassalAgentBuilder {
        self.cfg.clone()
    }

    /// Runs Go's `serf ARGS[0] -rpc-addr=<this agent> ARGS[1..]`: its stdout, or an error with
    /// its output if it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let run = serf_cli(self.cfg.rpc, args);
        if run.code == 0 {
            Ok(run.stdout)
        } else {
            Err(format!(
                "serf {args:?} exited {}: {}",
                run.code,
                run.combined()
            ))
        }
    }

    /// Go's `serf` CLI against this agent, whatever it exits with.
    pub fn serf_cli(&self, args: &[&str]) -> CliRun {
        serf_cli(self.cfg.rpc, args)
    }

    /// Our `vassal` CLI against this agent, whatever it exits with.
    pub fn vassal_cli(&self, args: &[&str]) -> CliRun {
        vassal_cli(self.cfg.rpc, args)
    }

    /// Waits until the agent's RPC port answers and lists it alive (Go's CLI asks).
    #[track_caller]
    pub fn wait_ready(&mut self, deadline: Duration) {
        let what = format!(
            "vassal {} to answer RPC and list itself alive",
            self.cfg.name
        );
        let rpc = self.cfg.rpc;
        let name = self.cfg.name.clone();
        wait_until(deadline, &what, || {
            self.proc.assert_running();
            let run = serf_cli(rpc, &["members", "-status", "alive", "-name", &name]);
            if run.code == 0 && run.stdout.starts_with(&format!("{name} ")) {
                Ok(())
            } else {
                Err(run.combined())
            }
        })
    }

    /// Waits until `serf members -status alive` against this agent lists exactly `n`
    /// members; panics with the last listing.
    #[track_caller]
    pub fn wait_alive_count(&self, n: usize, deadline: Duration) {
        let what = format!("vassal {} to list {n} members alive", self.cfg.name);
        wait_until(deadline, &what, || {
            let out = self.cli(&["members", "-status", "alive"])?;
            if out.lines().count() == n {
                Ok(())
            } else {
                Err(out)
            }
        })
    }

    /// SIGKILL and reap.
    pub fn kill_9(&mut self) -> ExitStatus {
        self.proc.kill_9()
    }
    /// SIGINT and wait (≤ 10 s): should be a graceful leave (§5.6).
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.interrupt(STOP_DEADLINE)
    }
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

    pub fn log(&self) -> String {
        self.proc.log()
    }
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// Whether some log line contains `EVENT: NAME` as a whole word, e.g.
    /// `saw_member_event("member-failed", "v1")` (does not match `member-failed: v10`).
    pub fn saw_member_event(&self, event: &str, name: &str) -> bool {
        let needle = format!("{event}: {name}");
        self.log().lines().any(|line| {
            line.match_indices(&needle).any(|(i, _)| {
                line[i + needle.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c.is_whitespace() || c == '"')
            })
        })
    }

    /// Waits until the log shows `EVENT: NAME` (see [`Self::saw_member_event`]); panics with the
    /// log tail. Also fails fast if the agent exits.
    #[track_caller]
    pub fn wait_member_event(&mut self, event: &str, name: &str, deadline: Duration) {
        let what = format!("vassal {} to log `{event}: {name}`", self.cfg.name);
        wait_until(deadline, &what, || {
            self.proc.assert_running();
            if self.saw_member_event(event, name) {
                Ok(())
            } else {
                Err(self.proc.log_tail(30))
            }
        })
    }

    /// Waits until some log line contains `needle`; panics with the log tail.
    #[track_caller]
    pub fn wait_log_contains(&mut self, needle: &str, deadline: Duration) -> String {
        let what = format!("vassal {} to log {needle:?}", self.cfg.name);
        wait_until(deadline, &what, || {
            let log = self.proc.log();
            match log.lines().find(|l| l.contains(needle)) {
                Some(line) => Ok(line.to_string()),
                None => {
                    self.proc.assert_running();
                    Err(self.proc.log_tail(30))
                }
            }
        })
    }
}

/// How long one CLI call may take (queries default to a few seconds).
pub const CLI_DEADLINE: Duration = Duration::from_secs(15);

/// Runs `PROGRAM ARGS[0] -rpc-addr=RPC ARGS[1..]`.
fn run_against(program: &Path, rpc: SocketAddr, args: &[&str]) -> CliRun {
    let mut a: Vec<String> = vec![args[0].to_string(), format!("-rpc-addr={rpc}")];
    a.extend(args[1..].iter().map(|s| s.to_string()));
    run_cli(program, &a, &[], CLI_DEADLINE)
}

/// Go's `serf` CLI against the agent at `rpc`.
pub fn serf_cli(rpc: SocketAddr, args: &[&str]) -> CliRun {
    run_against(Path::new(SERF_BIN), rpc, args)
}

/// Our `vassal` CLI against the agent at `rpc`.
pub fn vassal_cli(rpc: SocketAddr, args: &[&str]) -> CliRun {
    run_against(&vassal_bin(), rpc, args)
}
