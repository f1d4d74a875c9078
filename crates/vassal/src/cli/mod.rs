//! The client commands (spec §5.5): each talks to an agent's RPC port, with Serf's flags,
//! output text and exit codes. `-rpc-addr` defaults to `$SERF_RPC_ADDR`, else
//! `127.0.0.1:7373`; `-rpc-auth` to `$SERF_RPC_AUTH`.
//!
//! Output goes to stdout in Serf's exact shape (scripts parse it); errors go to stderr (Serf
//! prints them on stdout too) and exit 1. Serf's CLI uses no colour, and neither do we.

mod event;
mod force_leave;
mod info;
mod join;
mod keygen;
mod keys;
mod leave;
mod members;
mod monitor;
pub mod output;
mod query;
mod reachability;
mod rtt;
mod tags;

use std::process::ExitCode;

use vassal_rpc::Client;

use crate::flags::{FlagError, FlagSet, Kind, Parsed};

/// Serf's default RPC address.
pub const DEFAULT_RPC_ADDR: &str = "127.0.0.1:7373";

/// The client commands and their one-line summaries, for `vassal -h`.
pub const COMMANDS: &[(&str, &str)] = &[
    ("event", "Send a custom event through the Serf cluster"),
    (
        "force-leave",
        "Forces a member of the cluster to enter the \"left\" state",
    ),
    ("info", "Provides debugging information for operators"),
    ("join", "Tell Serf agent to join cluster"),
    ("keygen", "Generates a new encryption key"),
    (
        "keys",
        "Manipulate the internal encryption keyring used by Serf",
    ),
    ("leave", "Gracefully leaves the Serf cluster and shuts down"),
    ("members", "Lists the members of a Serf cluster"),
    ("monitor", "Stream logs from a Serf agent"),
    ("query", "Send a query to the Serf cluster"),
    ("reachability", "Test network reachability"),
    ("rtt", "Estimates network round trip time between nodes"),
    ("tags", "Modify tags of a running Serf agent"),
    ("version", "Prints the Vassal version"),
];

/// Runs client command `name`; `None` if there is no such command.
pub fn run(name: &str, args: &[String]) -> Option<ExitCode> {
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the tokio runtime starts")
    };
    Some(match name {
        "event" => rt().block_on(event::run(args)),
        "force-leave" => rt().block_on(force_leave::run(args)),
        "info" => rt().block_on(info::run(args)),
        "join" => rt().block_on(join::run(args)),
        "keygen" => keygen::run(args),
        "keys" => rt().block_on(keys::run(args)),
        "leave" => rt().block_on(leave::run(args)),
        "members" => rt().block_on(members::run(args)),
        "monitor" => rt().block_on(monitor::run(args)),
        "query" => rt().block_on(query::run(args)),
        "reachability" => rt().block_on(reachability::run(args)),
        "rtt" => rt().block_on(rtt::run(args)),
        "tags" => rt().block_on(tags::run(args)),
        "version" => version(),
        _ => return None,
    })
}

fn version() -> ExitCode {
    println!("Vassal v{}", env!("CARGO_PKG_VERSION"));
    println!(
        "Agent Protocol: {} (Understands back to: {})",
        vassal_serf::PROTOCOL_MAX,
        vassal_serf::PROTOCOL_MIN
    );
    ExitCode::SUCCESS
}

/// Adds `-rpc-addr` and `-rpc-auth`.
fn with_rpc(set: FlagSet) -> FlagSet {
    set.flag(
        "rpc-addr",
        Kind::Value,
        "127.0.0.1:7373",
        "RPC address of the Serf agent ($SERF_RPC_ADDR)",
    )
    .flag(
        "rpc-auth",
        Kind::Value,
        "\"\"",
        "RPC auth token of the Serf agent ($SERF_RPC_AUTH)",
    )
}

/// Parses a command line; on `-h` prints the usage (exit 0), on a bad flag the error (exit 1).
fn parse(set: &FlagSet, args: &[String], summary: &str) -> Result<Parsed, ExitCode> {
    set.parse(args).map_err(|e| {
        if e == FlagError::Help {
            print!("{}", set.usage(summary));
            ExitCode::SUCCESS
        } else {
            eprintln!("error: {e}");
            eprint!("\n{}", set.usage(summary));
            ExitCode::FAILURE
        }
    })
}

/// Where the agent is: the flags, else the environment, else Serf's defaults.
fn target(p: &Parsed) -> (String, String) {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let addr = p
        .value("rpc-addr")
        .map(str::to_owned)
        .or_else(|| env("SERF_RPC_ADDR"))
        .unwrap_or_else(|| DEFAULT_RPC_ADDR.to_owned());
    let auth = p
        .value("rpc-auth")
        .map(str::to_owned)
        .or_else(|| env("SERF_RPC_AUTH"))
        .unwrap_or_default();
    (addr, auth)
}

/// Connects (and authenticates) as the flags say; prints Serf's error on failure.
async fn connect(p: &Parsed) -> Result<Client, ExitCode> {
    let (addr, auth) = target(p);
    Client::connect(&addr, &auth).await.map_err(|e| {
        eprintln!("Error connecting to Serf agent: {e}");
        ExitCode::FAILURE
    })
}

/// [`parse`], then [`connect`]: for commands that check nothing before they connect.
async fn parse_and_connect(
    set: &FlagSet,
    args: &[String],
    summary: &str,
) -> Result<(Parsed, Client), ExitCode> {
    let p = parse(set, args, summary)?;
    let client = connect(&p).await?;
    Ok((p, client))
}

/// Prints an error with the usage, as Serf does for missing or extra arguments.
fn usage_error(msg: &str, set: &FlagSet, summary: &str) -> ExitCode {
    eprintln!("{msg}");
    eprintln!();
    eprint!("{}", set.usage(summary));
    ExitCode::FAILURE
}

/// One pair of Go's `agent.UnmarshalTags`: `key=value`, the key not empty.
pub(crate) fn parse_tag(t: &str) -> Result<(String, String), String> {
    match t.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("Invalid tag: '{t}'")),
    }
}

/// Go's `agent.UnmarshalTags`.
fn parse_tags(pairs: &[String]) -> Result<std::collections::BTreeMap<String, String>, String> {
    pairs.iter().map(|t| parse_tag(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_need_a_key_and_an_equals_sign() {
        let ok = parse_tags(&["role=web".into(), "x==y".into()]).unwrap();
        assert_eq!(ok["role"], "web");
        assert_eq!(ok["x"], "=y");
        assert_eq!(
            parse_tags(&["novalue".into()]).unwrap_err(),
            "Invalid tag: 'novalue'"
        );
        assert!(parse_tags(&["=v".into()]).is_err());
    }
}
