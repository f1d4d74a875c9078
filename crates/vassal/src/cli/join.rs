//! `vassal join`: asks the agent to join a cluster through the given addresses.

use std::process::ExitCode;

use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Tells a running Serf agent (with \"serf agent\") to join the cluster\n  \
                       by specifying at least one existing member.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(FlagSet::new("join").flag(
        "replay",
        Kind::Bool,
        "",
        "Replay past user events",
    ));
    let p = match super::parse(&set, args, SUMMARY) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if p.args.is_empty() {
        return super::usage_error(
            "At least one address to join must be specified.",
            &set,
            SUMMARY,
        );
    }
    let client = match super::connect(&p).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.join(&p.args, p.bool("replay")).await {
        Ok(n) => {
            println!("Successfully joined cluster by contacting {n} nodes.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error joining the cluster: {e}");
            ExitCode::FAILURE
        }
    }
}
