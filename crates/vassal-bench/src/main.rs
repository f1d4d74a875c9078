//! `cluster-bench`: the project's side-by-side cluster benchmark of Go Serf and Vassal.
//!
//! It starts N agents of one kind on loopback, watches them through the Serf RPC (with
//! [`vassal_rpc::Client`], which speaks to the Go agent too) and through their event-handler
//! scripts, and measures, per cluster lifetime and in this order:
//!
//! 1. **convergence**: from the last spawn until each observer's `stats` shows N members alive
//!    (confirmed with `members-filtered(Status=alive)`); t50/t99/t100 over the observers, and
//!    when every agent's handler had run for a member-join of every other agent;
//! 2. **resources** after `--settle`, over an `--idle` window: per-agent RSS, PSS and USS
//!    (`/proc/PID/smaps_rollup`), threads, CPU %, loopback bytes and packets per second;
//! 3. **user events** (`--events`, not coalesced, from a random agent): when 50/99/100 % of the
//!    live agents ran their handler;
//! 4. **queries** (`--queries`): acks, responses and handler runs, first/50/99/100 %;
//! 5. **failure**: `kill -9` of a random non-seed agent, until every observer reports it
//!    `failed`;
//! 6. **graceful leave**: an RPC `leave` on another non-seed agent, until every observer
//!    reports it `left`.
//!
//! Every scenario writes one JSON line (stdout, and appended to `--out`), carrying the machine's
//! CPU busy % and load average over the scenario. `summarize FILE` prints Markdown tables per
//! start mode and N: Go median, Vassal median, their ratio and the largest single record.
//!
//! ```text
//! cargo build --release -p vassal -p vassal-bench
//! target/release/cluster-bench --go /usr/bin/serf --vassal target/release/vassal \
//!     --sizes 10,50 --reps 3 --start sequential --out results.jsonl
//! target/release/cluster-bench --start burst --join-mode retry --sizes 50 --out results.jsonl
//! target/release/cluster-bench summarize results.jsonl
//! ```
//!
//! `bench/cluster.sh` runs the default comparison. Addresses: each agent its own 127.x.y.z
//! (`--addr-mode ip`, the default) or consecutive ports on one (`--addr-mode port`), at a random
//! place in 127/8; nothing outside 127.0.0.0/8 is ever used. Processes: the harness signals
//! only its own children, by PID, and kills them all at the end of each cluster, on Ctrl-C or
//! SIGTERM, and on a panic. Its work directory under /tmp (handler scripts, handler logs, agent
//! output) is removed unless `--keep`.
//!
//! The figures measure each implementation *and* how it behaves sharing the machine's cores
//! with N-1 peers, their handler processes and the harness; read them with
//! `machine_cpu_busy_pct` and `loadavg1`. The Go agent holds member events back for 1–3 s
//! (coalescing), so compare the RPC-observed columns; handler columns are "what an application
//! sees".

mod cli;
mod cluster;
mod handlers;
mod observe;
mod report;
mod resources;
mod scenarios;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::cluster::procs;

/// Raises the soft open-files limit to the hard one (each agent and observer holds a few).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                eprintln!("cluster-bench: could not raise RLIMIT_NOFILE from {soft}: {e}");
            }
        }
    }
}

/// On a panic: kill every child still ours and remove the work directories, then let the
/// default hook report it (the release profile aborts, so no destructor would run).
fn install_panic_hook(keep: bool) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let n = procs::kill_all();
        if !keep {
            procs::remove_workdirs();
        }
        eprintln!("cluster-bench: panic; killed {n} agent(s)");
        default(info);
    }));
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Some(Command::Summarize { file }) = &cli.command {
        print!("{}", report::summarize(file)?);
        return Ok(());
    }
    let args = cli.run;
    let summary_of = args.summary.then(|| args.out.clone()).flatten();
    let mut bench = scenarios::Bench::new(args).await?;
    bench.run().await?;
    if let Some(out) = summary_of {
        println!();
        print!("{}", report::summarize(&out)?);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_nofile();
    install_panic_hook(cli.run.keep);
    // One thread: the harness should take as little CPU from the agents as it can, and one
    // thread keeps the child table simple.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let keep = cli.run.keep;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| eprintln!("cluster-bench: no SIGTERM handler: {e}"))
            .ok();
        let sigterm = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let work = std::pin::pin!(run(cli));
        tokio::select! {
            r = work => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    procs::kill_all();
                    eprintln!("cluster-bench: {e}");
                    ExitCode::FAILURE
                }
            },
            _ = tokio::signal::ctrl_c() => interrupted("interrupt", keep),
            _ = sigterm => interrupted("SIGTERM", keep),
        }
    })
}

/// Ctrl-C or SIGTERM: the run's future is still alive (its children unreaped), so their PIDs
/// are still ours to kill.
fn interrupted(what: &str, keep: bool) -> ExitCode {
    let n = procs::kill_all();
    if !keep {
        procs::remove_workdirs();
    }
    eprintln!("cluster-bench: {what}; killed {n} agent(s)");
    ExitCode::from(130)
}
