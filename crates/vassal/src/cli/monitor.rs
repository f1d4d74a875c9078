//! `vassal monitor`: streams the agent's log lines (and its events) until interrupted.

use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use vassal_rpc::msgpack::Value;

use super::output::go_quote;
use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Shows recent log messages of a Serf agent, and streams new ones as\n  \
                       they occur, until interrupted.";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(FlagSet::new("monitor").flag(
        "log-level",
        Kind::Value,
        "<level>",
        "Lowest level shown: trace, debug, info, warn or err (default info)",
    ));
    let (p, client) = match super::parse_and_connect(&set, args, SUMMARY).await {
        Ok(pc) => pc,
        Err(code) => return code,
    };
    let (stream, mut events) = match client.stream("*").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error starting stream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (monitor, mut logs) = match client.monitor(p.value("log-level").unwrap_or("INFO")).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("Error starting monitor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut interrupt = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot watch for interrupts: {e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            line = logs.recv() => match line {
                Some(l) if !l.is_empty() => println!("{l}"),
                _ => break,
            },
            event = events.recv() => match event {
                Some(Value::Map(fields)) => {
                    println!("Event Info:");
                    for (k, v) in &fields {
                        println!("\t{}: {}", go_string(k), go_value(v));
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = interrupt.recv() => {
                let _ = client.stop(monitor).await;
                let _ = client.stop(stream).await;
                return ExitCode::SUCCESS;
            }
        }
    }
    println!();
    println!(
        "Remote side ended the monitor! This usually means that the\n\
         remote side has exited or crashed."
    );
    ExitCode::FAILURE
}

fn go_string(v: &Value) -> String {
    match v {
        Value::Str(b) | Value::Bin(b) => String::from_utf8_lossy(b).into_owned(),
        other => go_value(other),
    }
}

/// Roughly Go's `%#v` of a decoded msgpack value, as Serf's monitor prints event fields.
fn go_value(v: &Value) -> String {
    match v {
        Value::Nil => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Uint(n) => n.to_string(),
        Value::F32(f) => f.to_string(),
        Value::F64(f) => f.to_string(),
        Value::Str(b) => go_quote(&String::from_utf8_lossy(b)),
        Value::Bin(b) => format!(
            "[]byte{{{}}}",
            b.iter()
                .map(|x| format!("{x:#x}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(items) => format!(
            "[]interface {{}}{{{}}}",
            items.iter().map(go_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(items) => {
            let mut parts: Vec<String> = items
                .iter()
                .map(|(k, v)| format!("{}:{}", go_value(k), go_value(v)))
                .collect();
            parts.sort();
            format!("map[string]interface {{}}{{{}}}", parts.join(", "))
        }
        Value::Ext(t, b) => format!("ext({t}, {b:?})"),
    }
}
