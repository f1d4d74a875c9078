//! `vassal rtt`: the round trip time between two nodes, estimated from their coordinates.

use std::process::ExitCode;

use super::output::go_quote;
use crate::flags::FlagSet;

const SUMMARY: &str = "Estimates the round trip time between two nodes using Serf's network\n  \
                       coordinate model of the cluster. With one node, the other is the agent.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(FlagSet::new("rtt"));
    let (p, client) = match super::parse_and_connect(&set, args, SUMMARY).await {
        Ok(pc) => pc,
        Err(code) => return code,
    };
    let mut nodes = p.args.clone();
    match nodes.len() {
        1 => match client.stats().await {
            Ok(s) => nodes.push(
                s.get("agent")
                    .and_then(|a| a.get("name"))
                    .cloned()
                    .unwrap_or_default(),
            ),
            Err(e) => {
                eprintln!("Error querying agent: {e}");
                return ExitCode::FAILURE;
            }
        },
        2 => {}
        _ => return super::usage_error("One or two node names must be specified", &set, SUMMARY),
    }
    let mut coords = Vec::new();
    for n in &nodes {
        match client.get_coordinate(n).await {
            Ok(Some(c)) => coords.push(c.to_serf()),
            Ok(None) => {
                eprintln!("Could not find a coordinate for node {}", go_quote(n));
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("Error getting coordinates: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if coords[0].vec.len() != coords[1].vec.len() {
        eprintln!("Error: coordinates have different dimensions");
        return ExitCode::FAILURE;
    }
    let ms = coords[0].distance_to(&coords[1]).as_secs_f64() * 1000.0;
    println!("Estimated {} <-> {} rtt: {ms:.3} ms", nodes[0], nodes[1]);
    ExitCode::SUCCESS
}
