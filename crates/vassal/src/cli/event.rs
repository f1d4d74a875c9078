//! `vassal event`: sends a user event to the cluster.

use std::process::ExitCode;

use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Dispatches a custom event across the Serf cluster.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(FlagSet::new("event").flag(
        "coalesce",
        Kind::Bool,
        "",
        "Whether the event may be coalesced (default true)",
    ));
    let p = match super::parse(&set, args, SUMMARY) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let coalesce = p.value("coalesce").is_none() || p.bool("coalesce");
    match p.args.len() {
        0 => return super::usage_error("An event name must be specified.", &set, SUMMARY),
        1 | 2 => {}
        _ => {
            return super::usage_error(
                "Too many command line arguments. Only a name and payload must be specified.",
                &set,
                SUMMARY,
            )
        }
    }
    let name = &p.args[0];
    let payload = p.args.get(1).map(String::as_bytes);
    let client = match super::connect(&p).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.user_event(name, payload, coalesce).await {
        Ok(()) => {
            println!("Event '{name}' dispatched! Coalescing enabled: {coalesce}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error sending event: {e}");
            ExitCode::FAILURE
        }
    }
}
