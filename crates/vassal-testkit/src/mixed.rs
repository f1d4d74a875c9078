//! Mixed clusters for the tests that compare Go Serf with Vassal through their CLIs: a Go
//! agent with Vassal agents joined to it, and one command run by both CLIs (`serf` and
//! `vassal`) through both kinds of agent.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::CliRun;
use crate::vassal::{serf_cli, vassal_cli};
use crate::{GoSerf, GoSerfBuilder, VassalAgent, VassalAgentBuilder};

/// Spawns `go`, then each of `vassal` joining it, and waits (up to `deadline` for each) until
/// the Go agent lists every one of them alive and each Vassal agent counts them all alive.
#[track_caller]
pub fn go_then_vassal(
    go: GoSerfBuilder,
    vassal: Vec<VassalAgentBuilder>,
    deadline: Duration,
) -> (GoSerf, Vec<VassalAgent>) {
    let g = go.spawn();
    let vs: Vec<VassalAgent> = vassal
        .into_iter()
        .map(|v| v.join(g.addr()).spawn_ready())
        .collect();
    let names: Vec<&str> = std::iter::once(g.name())
        .chain(vs.iter().map(VassalAgent::name))
        .collect();
    g.wait_all_alive(&names, deadline);
    for v in &vs {
        v.wait_alive_count(names.len(), deadline);
    }
    (g, vs)
}

/// A query handler for either kind of agent, answering every query with
/// `resp-from-<node name>`: a shell script in its own temp dir, removed on drop.
#[derive(Debug)]
pub struct QueryAnswerer {
    _dir: TempDir,
    handler: String,
}

impl QueryAnswerer {
    /// Writes the script.
    #[track_caller]
    pub fn create() -> QueryAnswerer {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir for the query handler");
        let path = dir.path().join("answer.sh");
        let body = "#!/bin/sh\necho \"resp-from-$SERF_SELF_NAME\"\n";
        std::fs::write(&path, body)
            .and_then(|()| std::fs::set_permissions(&path, PermissionsExt::from_mode(0o755)))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        QueryAnswerer {
            handler: format!("query={}", path.display()),
            _dir: dir,
        }
    }

    /// `query=<script>`, for [`event_handler`](crate::AgentBuilder::event_handler).
    pub fn handler(&self) -> &str {
        &self.handler
    }
}

/// One CLI command as each CLI prints it through each kind of agent.
#[derive(Debug, Clone)]
pub struct CliMatrix {
    /// `serf` → Go agent: the reference.
    pub go_go: CliRun,
    /// `vassal` → Go agent.
    pub vassal_go: CliRun,
    /// `serf` → Vassal agent.
    pub go_vassal: CliRun,
    /// `vassal` → Vassal agent.
    pub vassal_vassal: CliRun,
}

impl CliMatrix {
    /// Runs `args` with both CLIs against the Go agent at `go_rpc` and the Vassal agent at
    /// `vassal_rpc`, the two agents in parallel (queries take their whole timeout).
    pub fn run(go_rpc: SocketAddr, vassal_rpc: SocketAddr, args: &[&str]) -> CliMatrix {
        let both = |rpc| (serf_cli(rpc, args), vassal_cli(rpc, args));
        let ((go_go, vassal_go), (go_vassal, vassal_vassal)) = std::thread::scope(|s| {
            let g = s.spawn(|| both(go_rpc));
            let v = s.spawn(|| both(vassal_rpc));
            (g.join().unwrap(), v.join().unwrap())
        });
        CliMatrix {
            go_go,
            vassal_go,
            go_vassal,
            vassal_vassal,
        }
    }

    /// Asserts that every run exits as `serf` → Go agent does and that `view` sees the same in
    /// its output (`args`: the command, for the message).
    #[track_caller]
    pub fn assert_agree<T: PartialEq + Debug>(&self, args: &[&str], view: impl Fn(&CliRun) -> T) {
        let reference = (self.go_go.code, view(&self.go_go));
        for (who, run) in [
            ("serf → Vassal agent", &self.go_vassal),
            ("vassal → Go agent", &self.vassal_go),
            ("vassal → Vassal agent", &self.vassal_vassal),
        ] {
            assert_eq!(
                (run.code, view(run)),
                reference,
                "`{}` via {who} differs from serf → Go agent",
                args.join(" ")
            );
        }
    }
}
