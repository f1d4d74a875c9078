//! `vassal info`: the agent's statistics, by section.

use std::process::ExitCode;

use vassal_rpc::protocol::Stats;

use super::output::Json;
use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Provides debugging information for operators";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(FlagSet::new("info").flag(
        "format",
        Kind::Value,
        "text|json",
        "Output format (default text)",
    ));
    let (p, client) = match super::parse_and_connect(&set, args, SUMMARY).await {
        Ok(pc) => pc,
        Err(code) => return code,
    };
    let stats = match client.stats().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error querying agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match format(&stats, p.value("format").unwrap_or("text")) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Encoding error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serf's `section:` / `\tkey = value` text, sorted, or JSON.
pub fn format(stats: &Stats, format: &str) -> Result<String, String> {
    match format {
        "text" => {
            let mut out = String::new();
            for (section, values) in stats {
                out.push_str(&format!("{section}:\n"));
                for (k, v) in values {
                    out.push_str(&format!("\t{k} = {v}\n"));
                }
            }
            Ok(out.trim().to_owned())
        }
        "json" => Ok(Json::map(stats, |section| Json::map(section, |v| Json::str(v))).pretty()),
        other => Err(format!("Invalid output format \"{other}\"")),
    }
}
