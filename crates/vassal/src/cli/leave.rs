//! `vassal leave`: the agent leaves the cluster gracefully and shuts down.

use std::process::ExitCode;

use crate::flags::FlagSet;

const SUMMARY: &str = "Causes the agent to gracefully leave the Serf cluster and shutdown.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(FlagSet::new("leave"));
    let (_, client) = match super::parse_and_connect(&set, args, SUMMARY).await {
        Ok(pc) => pc,
        Err(code) => return code,
    };
    match client.leave().await {
        Ok(()) => {
            println!("Graceful leave complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error leaving: {e}");
            ExitCode::FAILURE
        }
    }
}
