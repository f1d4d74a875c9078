//! `vassal`: a Serf-compatible agent and CLI. One module per subcommand; flags parse Go-style
//! (see [`flags`]).

mod agent;
#[allow(dead_code)] // wired into `agent` once the file-backed options land
mod config;
#[allow(dead_code)] // wired into `agent` with the config files
mod discover;
mod demo;
mod flags;
mod handlers;
mod logging;

use std::process::ExitCode;

use flags::FlagError;

const USAGE: &str = "Usage: vassal <command> [args]

Available commands are:
    agent      Runs a Serf agent
    demo       Runs Serf's load-balancer demo: a balancer and web nodes on loopback
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let rest = &args[1..];
    match command.as_str() {
        "agent" => match agent::options(rest) {
            Ok(opts) => runtime().block_on(agent::run(opts)),
            Err(e) => flag_error(
                e,
                &agent::flags()
                    .usage("Starts the Serf agent and runs until an interrupt is received."),
            ),
        },
        "demo" => match demo::options(rest) {
            Ok(opts) => runtime().block_on(demo::run(opts)),
            Err(e) => flag_error(
                e,
                &demo::flags().usage(
                    "Starts a load-balancer agent and web agents on loopback addresses; Ctrl-C stops them.",
                ),
            ),
        },
        "-h" | "-help" | "--help" | "help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("error: unknown command {other:?}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn flag_error(e: FlagError, usage: &str) -> ExitCode {
    if e == FlagError::Help {
        print!("{usage}");
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}
