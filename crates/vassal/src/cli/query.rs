//! `vassal query`: sends a query and prints acks and answers until it times out.

use std::collections::BTreeMap;
use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use vassal_rpc::protocol::{query_record, QueryRequest};

use super::output::Json;
use crate::flags::{parse_duration, FlagSet, Kind};

const SUMMARY: &str = "Dispatches a query to the Serf cluster and prints the answers.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(
        FlagSet::new("query")
            .flag(
                "node",
                Kind::Multi,
                "<name>",
                "Only this node answers; repeatable",
            )
            .flag(
                "tag",
                Kind::Multi,
                "<key>=<regexp>",
                "Only nodes whose tag matches; repeatable",
            )
            .flag(
                "timeout",
                Kind::Value,
                "<duration>",
                "How long to wait (default: by cluster size)",
            )
            .flag("no-ack", Kind::Bool, "", "Do not ask for acknowledgements")
            .flag(
                "relay-factor",
                Kind::Value,
                "<n>",
                "Also relay each answer through n nodes (0-255)",
            )
            .flag(
                "format",
                Kind::Value,
                "text|json",
                "Output format (default text)",
            ),
    );
    let p = match super::parse(&set, args, SUMMARY) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let timeout = match p.parse_or("timeout", std::time::Duration::ZERO, parse_duration) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let relay: i64 = match p.parse_or("relay-factor", 0, |v| v.parse().map_err(|e| format!("{e}")))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter_tags = match super::parse_tags(p.values("tag")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match p.args.len() {
        0 => return super::usage_error("A query name must be specified.", &set, SUMMARY),
        1 | 2 => {}
        _ => {
            return super::usage_error(
                "Too many command line arguments. Only a name and payload must be specified.",
                &set,
                SUMMARY,
            )
        }
    }
    if !(0..=255).contains(&relay) {
        eprintln!("Relay factor must be between 0 and 255");
        return ExitCode::FAILURE;
    }
    let name = p.args[0].clone();
    let no_ack = p.bool("no-ack");
    let format = p.value("format").unwrap_or("text").to_owned();
    let client = match super::connect(&p).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if format != "text" && format != "json" {
        eprintln!("Invalid format: {format}");
        return ExitCode::FAILURE;
    }
    let req = QueryRequest {
        filter_nodes: p.values("node").to_vec(),
        filter_tags,
        request_ack: !no_ack,
        relay_factor: relay as u8,
        timeout: timeout.as_nanos() as i64,
        name: name.clone(),
        payload: p.args.get(1).map(|s| s.as_bytes().to_vec()),
    };
    let mut records = match client.query(&req).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error sending query: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = format == "text";
    if text {
        println!("Query '{name}' dispatched");
    }
    let mut interrupt = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot watch for interrupts: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut acks, mut responses) = (Vec::new(), BTreeMap::new());
    loop {
        let rec = tokio::select! {
            r = records.recv() => r,
            _ = interrupt.recv() => return ExitCode::FAILURE,
        };
        // Serf's CLI ends at the first record without a sender (`done`, or the end).
        let Some(rec) = rec.filter(|r| !r.from.is_empty()) else {
            break;
        };
        match rec.kind.as_str() {
            query_record::ACK => {
                if text {
                    println!("Ack from '{}'", rec.from);
                }
                acks.push(rec.from);
            }
            query_record::RESPONSE => {
                let mut payload = rec.payload.unwrap_or_default();
                if text {
                    if payload.last() == Some(&b'\n') {
                        payload.pop();
                    }
                    println!(
                        "Response from '{}': {}",
                        rec.from,
                        String::from_utf8_lossy(&payload)
                    );
                }
                responses.insert(rec.from, String::from_utf8_lossy(&payload).into_owned());
            }
            _ => {}
        }
    }
    if text {
        if !no_ack {
            println!("Total Acks: {}", acks.len());
        }
        println!("Total Responses: {}", responses.len());
    } else {
        let acks = if acks.is_empty() {
            Json::Null
        } else {
            Json::Array(acks.iter().map(|a| Json::str(a)).collect())
        };
        let doc = Json::Object(vec![
            ("Acks".into(), acks),
            ("Responses".into(), Json::map(&responses, |v| Json::str(v))),
        ]);
        println!("{}", doc.pretty());
    }
    ExitCode::SUCCESS
}
