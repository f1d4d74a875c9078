//! `vassal force-leave`: marks a failed member left (with `-prune`, forgets it too).

use std::process::ExitCode;

use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Causes a member to be forced into the \"left\" state. This is useful\n  \
                       for removing failed members that will not come back.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(FlagSet::new("force-leave").flag(
        "prune",
        Kind::Bool,
        "",
        "Also remove the member from the member list at once",
    ));
    let p = match super::parse(&set, args, SUMMARY) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if p.args.len() != 1 {
        return super::usage_error(
            "A node name must be specified to force leave.",
            &set,
            SUMMARY,
        );
    }
    let client = match super::connect(&p).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.force_leave(&p.args[0], p.bool("prune")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error force leaving: {e}");
            ExitCode::FAILURE
        }
    }
}
