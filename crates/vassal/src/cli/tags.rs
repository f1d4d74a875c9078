//! `vassal tags`: sets and deletes the agent's tags at run time.

use std::process::ExitCode;

use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Modifies tags on a running Serf agent.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(
        FlagSet::new("tags")
            .flag("set", Kind::Multi, "<key>=<value>", "Set a tag; repeatable")
            .flag("delete", Kind::Multi, "<key>", "Delete a tag; repeatable"),
    );
    let p = match super::parse(&set, args, SUMMARY) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if p.values("set").is_empty() && p.values("delete").is_empty() {
        print!("{}", set.usage(SUMMARY));
        return ExitCode::FAILURE;
    }
    let client = match super::connect(&p).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let tags = match super::parse_tags(p.values("set")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.update_tags(&tags, p.values("delete")).await {
        Ok(()) => {
            println!("Successfully updated agent tags");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error setting tags: {e}");
            ExitCode::FAILURE
        }
    }
}
