//! `vassal`: a Serf-compatible agent and CLI. One module per subcommand; flags parse Go-style
//! (see [`flags`]).

mod agent;
mod cli;
mod config;
mod demo;
mod discover;
mod flags;
mod handlers;
mod logging;
mod parse;
mod telemetry;
mod template;

use std::process::ExitCode;

use flags::FlagError;

fn usage() -> String {
    let mut out = String::from("Usage: vassal <command> [args]\n\nAvailable commands are:\n");
    out.push_str(&format!("    {:<14} {}\n", "agent", "Runs a Serf agent"));
    out.push_str(&format!(
        "    {:<14} {}\n",
        "demo", "Runs Serf's load-balancer demo: a balancer and web nodes on loopback"
    ));
    for (name, summary) in cli::COMMANDS {
        out.push_str(&format!("    {name:<14} {summary}\n"));
    }
    out
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // As Serf: `-v` and `--version` anywhere mean `version`.
    if args.iter().any(|a| a == "-v" || a == "--version") {
        args = vec!["version".into()];
    }
    let Some(command) = args.first() else {
        eprint!("{}", usage());
        return ExitCode::FAILURE;
    };
    let rest = &args[1..];
    match command.as_str() {
        "agent" => match agent::options(rest) {
            Ok(opts) => run_to_end(agent_runtime(&opts), agent::run(opts)),
            Err(e) => flag_error(
                e,
                &agent::flags()
                    .usage("Starts the Serf agent and runs until an interrupt is received."),
            ),
        },
        "demo" => match demo::options(rest) {
            Ok(opts) => run_to_end(runtime(), demo::run(opts)),
            Err(e) => flag_error(
                e,
                &demo::flags().usage(
                    "Starts a load-balancer agent and web agents on loopback addresses; Ctrl-C stops them.",
                ),
            ),
        },
        "-h" | "-help" | "--help" | "help" => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        other => match cli::run(other, rest) {
            Some(code) => code,
            None => {
                eprintln!("error: unknown command {other:?}\n\n{}", usage());
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs `main` to its end, then stops the runtime without waiting on stragglers: dropping a
/// runtime waits for every blocking task (a render, a DNS lookup, a handler's pipe read) and
/// would keep an agent that has logged "shutdown complete" alive for as long as one of them
/// takes.
fn run_to_end(
    rt: tokio::runtime::Runtime,
    main: impl std::future::Future<Output = ExitCode>,
) -> ExitCode {
    let code = rt.block_on(main);
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

fn flag_error(e: FlagError, usage: &str) -> ExitCode {
    if e == FlagError::Help {
        print!("{usage}");
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// An agent serving the web role (`-web-listen`) gets a worker thread per core, for its
/// throughput. Every other agent runs on one thread: its work is a packet or a timer at a
/// time, and a second and third worker only cost memory (a thread stack and a malloc arena
/// each, about 1 MiB of private memory in all) and cross-thread wake-ups. The balancer
/// (`-lb-listen`) serves its connections on threads of its own (`vassal_roles::http::Workers`).
fn agent_runtime(opts: &agent::AgentOptions) -> tokio::runtime::Runtime {
    if opts.roles.web_listen.is_some() {
        return runtime();
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}
