//! `vassal keys`: installs, switches to, removes or lists gossip encryption keys on every
//! member, through the agent.

use std::process::ExitCode;

use vassal_rpc::protocol::command;

use super::output::columnize;
use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Manages encryption keys used for gossip messages. Exactly one of\n  \
                       -install, -use, -remove or -list must be given. Exits 1 if any node\n  \
                       failed or did not answer.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(
        FlagSet::new("keys")
            .flag(
                "install",
                Kind::Value,
                "<key>",
                "Install a new key on every member",
            )
            .flag(
                "use",
                Kind::Value,
                "<key>",
                "Make an installed key the primary one",
            )
            .flag(
                "remove",
                Kind::Value,
                "<key>",
                "Remove a key from every member",
            )
            .flag(
                "list",
                Kind::Bool,
                "",
                "List the keys installed across the cluster",
            ),
    );
    let p = match super::parse(&set, args, SUMMARY) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let list = p.bool("list");
    let given: Vec<(&str, &str)> = [
        ("install", command::INSTALL_KEY),
        ("use", command::USE_KEY),
        ("remove", command::REMOVE_KEY),
    ]
    .into_iter()
    .filter(|(flag, _)| p.value(flag).is_some_and(|v| !v.is_empty()))
    .collect();
    if given.len() + usize::from(list) > 1 {
        eprintln!("Only one of -install, -use, -remove, or -list allowed");
        return ExitCode::FAILURE;
    }
    if given.is_empty() && !list {
        eprint!("{}", set.usage(SUMMARY));
        return ExitCode::FAILURE;
    }
    let client = match super::connect(&p).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (cmd, key, start, done, failed) = match given.first() {
        None => (
            command::LIST_KEYS,
            None,
            "Asking all members for installed keys...",
            "Keys gathered, listing cluster keys...",
            "Failed to gather member keys",
        ),
        Some(("install", cmd)) => (
            *cmd,
            p.value("install"),
            "Installing key on all members...",
            "Successfully installed key!",
            "Error installing key",
        ),
        Some(("use", cmd)) => (
            *cmd,
            p.value("use"),
            "Changing primary key on all members...",
            "Successfully changed primary key!",
            "Error changing primary key",
        ),
        Some((_, cmd)) => (
            *cmd,
            p.value("remove"),
            "Removing key on all members...",
            "Successfully removed key!",
            "Error removing key",
        ),
    };
    println!("==> {start}");
    let (resp, error) = match client.key_command(cmd, key).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!();
            eprintln!("{failed}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !error.is_empty() {
        if !resp.messages.is_empty() {
            let lines: Vec<String> = resp
                .messages
                .iter()
                .map(|(node, msg)| format!("failed: | {node} | {msg}"))
                .collect();
            eprintln!("{}", columnize(&lines));
        }
        eprintln!();
        eprintln!("{failed}: {error}");
        return ExitCode::FAILURE;
    }
    println!("==> {done}");
    if cmd == command::LIST_KEYS {
        println!();
        let lines: Vec<String> = resp
            .keys
            .unwrap_or_default()
            .iter()
            .map(|(key, n)| format!("{key} | [{n}/{}]", resp.num_nodes))
            .collect();
        println!("{}", columnize(&lines));
    }
    ExitCode::SUCCESS
}
