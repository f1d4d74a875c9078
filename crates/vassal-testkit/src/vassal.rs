//! Our own agent binary (`target/release/vassal agent …`) under test, observed through its log
//! and its RPC port (each agent gets its own `-rpc-addr`, so parallel tests never meet on
//! 127.0.0.1:7373): Go's `serf` CLI ([`VassalAgent::cli`]) or ours ([`VassalAgent::vassal_cli`]).
//!
//! Log contract the interop tests rely on: Go Serf's own lines (INFO level, one per line),
//! `serf: EventMemberJoin: NAME ADDR`, `serf: EventMemberFailed: NAME ADDR`,
//! `serf: EventMemberLeave: NAME ADDR` (see [`member_event_needles`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::{rpc_args, Agent, AgentBuilder};
use crate::go_serf::SERF_BIN;
use crate::net::Loopback;
use crate::process::{run_cli, CliRun, Proc};
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

/// What only a Vassal agent is started with: nothing more (a marker).
#[derive(Debug, Clone)]
pub struct VassalKind;

/// Everything needed to start (and restart, under the same name and address) a Vassal agent.
pub type VassalAgentBuilder = AgentBuilder<VassalKind>;

/// A running `vassal agent`. Dropping it SIGKILLs and reaps the process.
pub type VassalAgent = Agent<VassalKind>;

impl VassalAgentBuilder {
    /// Starts the agent and waits (≤ 10 s) until its RPC port lists it alive; panics with the
    /// log if it exits or never gets there.
    #[track_caller]
    pub fn spawn_ready(&self) -> VassalAgent {
        let mut agent = self.spawn();
        agent.wait_ready(Duration::from_secs(10));
        agent
    }

    /// Starts the agent. There is no readiness signal yet, so this returns at once; callers wait
    /// on an observable condition (Go's member list, a log line).
    #[track_caller]
    pub fn spawn(&self) -> VassalAgent {
        let bin = vassal_bin();
        self.spawn_program(&bin, Vec::new())
    }

    /// Starts the agent from another `vassal` binary than [`vassal_bin`]: a baseline build, for
    /// a benchmark that measures two builds side by side.
    #[track_caller]
    pub fn spawn_bin(&self, bin: &Path) -> VassalAgent {
        assert!(bin.exists(), "{} not found", bin.display());
        self.spawn_program(bin, Vec::new())
    }

    /// Starts the agent through a wrapper: `program prefix… vassal agent …`. The wrapper must
    /// end by exec-ing its arguments (as `unshare -m sh -c '…; exec "$0" "$@"'` does), so
    /// that the PID we signal is the agent's.
    #[track_caller]
    pub fn spawn_via(&self, program: &Path, prefix: &[String]) -> VassalAgent {
        let mut args = prefix.to_vec();
        args.push(vassal_bin().display().to_string());
        self.spawn_program(program, args)
    }

    /// Runs `program args… agent …` once the binary is there.
    #[track_caller]
    fn spawn_program(&self, program: &Path, mut args: Vec<String>) -> VassalAgent {
        let bin = vassal_bin();
        assert!(
            bin.exists(),
            "{} not found: run `cargo build --release --bin vassal` first (or set VASSAL_BIN)",
            bin.display()
        );
        args.extend(self.agent_args(&[]));
        let env = [("NO_COLOR", "1"), ("RUST_BACKTRACE", "1")];
        let proc = Proc::spawn(&format!("vassal-{}", self.name), program, &args, &env);
        Agent {
            cfg: self.clone(),
            proc,
        }
    }
}

impl VassalAgent {
    /// A builder for agent `name` with gossip and RPC ports allocated on `host`.
    pub fn builder(name: &str, host: &Loopback) -> VassalAgentBuilder {
        AgentBuilder::new(name, host, VassalKind)
    }

    /// Runs Go's `serf ARGS[0] -rpc-addr=<this agent> ARGS[1..]`: its stdout, or an error with
    /// its output if it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let run = serf_cli(self.rpc_addr(), args);
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
        serf_cli(self.rpc_addr(), args)
    }

    /// Our `vassal` CLI against this agent, whatever it exits with.
    pub fn vassal_cli(&self, args: &[&str]) -> CliRun {
        vassal_cli(self.rpc_addr(), args)
    }

    /// Waits until the agent's RPC port answers and lists it alive (Go's CLI asks).
    #[track_caller]
    pub fn wait_ready(&mut self, deadline: Duration) {
        let what = format!("vassal {} to answer RPC and list itself alive", self.name());
        let rpc = self.rpc_addr();
        let name = self.name().to_string();
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
        let what = format!("vassal {} to list {n} members alive", self.name());
        wait_until(deadline, &what, || {
            let out = self.cli(&["members", "-status", "alive"])?;
            if out.lines().count() == n {
                Ok(())
            } else {
                Err(out)
            }
        })
    }

    /// Whether the log shows the member event `event` (`member-join`, `member-leave`,
    /// `member-failed`, `member-update`, `member-reap`) about `name`, in the line Go's Serf
    /// logs for it: `saw_member_event("member-failed", "v1")` looks for
    /// `serf: EventMemberFailed: v1` as a whole word (not `v10`); a forced leave or reap
    /// (`EventMemberLeave (forced): v1 …`) counts too.
    pub fn saw_member_event(&self, event: &str, name: &str) -> bool {
        let log = self.log();
        member_event_needles(event, name).iter().any(|needle| {
            log.lines().any(|line| {
                line.match_indices(needle.as_str()).any(|(i, _)| {
                    line[i + needle.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| c.is_whitespace() || c == '"')
                })
            })
        })
    }

    /// Waits until the log shows the member event (see [`Self::saw_member_event`]); panics with
    /// the log tail. Also fails fast if the agent exits.
    #[track_caller]
    pub fn wait_member_event(&mut self, event: &str, name: &str, deadline: Duration) {
        let what = format!(
            "vassal {} to log {:?}",
            self.name(),
            member_event_needles(event, name)
        );
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
        let what = format!("vassal {} to log {needle:?}", self.name());
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

/// What Go's Serf logs for member event `event` (Serf's event name, `member-join`) about
/// `name`: `serf: EventMemberJoin: NAME`, and the forced variants of leave and reap.
pub fn member_event_needles(event: &str, name: &str) -> Vec<String> {
    let go = match event {
        "member-join" => "EventMemberJoin",
        "member-leave" => "EventMemberLeave",
        "member-failed" => "EventMemberFailed",
        "member-update" => "EventMemberUpdate",
        "member-reap" => "EventMemberReap",
        other => panic!("{other:?} is not a member event"),
    };
    let mut needles = vec![format!("serf: {go}: {name}")];
    if matches!(event, "member-leave" | "member-reap") {
        needles.push(format!("serf: {go} (forced): {name}"));
    }
    needles
}

/// How long one CLI call may take (queries default to a few seconds).
pub const CLI_DEADLINE: Duration = Duration::from_secs(15);

/// Runs `PROGRAM ARGS[0] -rpc-addr=RPC ARGS[1..]`.
fn run_against(program: &Path, rpc: SocketAddr, args: &[&str]) -> CliRun {
    run_cli(program, &rpc_args(rpc, args), &[], CLI_DEADLINE)
}

/// Go's `serf` CLI against the agent at `rpc`.
pub fn serf_cli(rpc: SocketAddr, args: &[&str]) -> CliRun {
    run_against(Path::new(SERF_BIN), rpc, args)
}

/// Our `vassal` CLI against the agent at `rpc`.
pub fn vassal_cli(rpc: SocketAddr, args: &[&str]) -> CliRun {
    run_against(&vassal_bin(), rpc, args)
}
