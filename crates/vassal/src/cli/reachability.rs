//! `vassal reachability`: pings every member through a `_serf_ping` query and compares the
//! acks with the live members.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Instant;

use tokio::signal::unix::{signal, SignalKind};
use vassal_rpc::protocol::{query_record, QueryRequest};

use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Tests the network reachability of this node: every live member should\n  \
                       acknowledge a ping query.";

const TOO_MANY_ACKS: &str =
    "This could mean Serf is detecting false-failures due to a misconfiguration or network issue.";
const TOO_FEW_ACKS: &str = "This could mean Serf gossip packets are being lost due to a misconfiguration or network issue.";
const DUPLICATE_RESPONSES: &str =
    "Duplicate responses means there is a misconfiguration. Verify that node names are unique.";
const TROUBLESHOOTING: &str = "
Troubleshooting tips:
* Ensure that the bind addr:port is accessible by all other nodes
* If an advertise address is set, ensure it routes to the bind address
* Check that no nodes are behind a NAT
* If nodes are behind firewalls or iptables, check that Serf traffic is permitted (UDP and TCP)
* Verify networking equipment is functional";

pub async fn run(args: &[String]) -> ExitCode {
    let set = super::with_rpc(FlagSet::new("reachability").flag(
        "verbose",
        Kind::Bool,
        "",
        "Print every ack and the timing",
    ));
    let p = match super::parse(&set, args, SUMMARY) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let verbose = p.bool("verbose");
    let client = match super::connect(&p).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let members = match client.members().await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("Error getting members: {e}");
            return ExitCode::FAILURE;
        }
    };
    let live: BTreeSet<String> = members
        .iter()
        .filter(|m| m.status.is(vassal_serf::MemberStatus::Alive))
        .map(|m| m.name.clone())
        .collect();
    println!(
        "Total members: {}, live members: {}",
        members.len(),
        live.len()
    );
    let req = QueryRequest {
        request_ack: true,
        name: vassal_serf::PING_QUERY.into(),
        ..QueryRequest::default()
    };
    let mut records = match client.query(&req).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error sending query: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Starting reachability test...");
    let start = Instant::now();
    let mut last = start;
    let mut interrupt = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot watch for interrupts: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut num_acks, mut dups, mut acks_from) = (0usize, false, BTreeSet::new());
    loop {
        let rec = tokio::select! {
            r = records.recv() => r,
            _ = interrupt.recv() => {
                eprintln!("Test interrupted");
                return ExitCode::FAILURE;
            }
        };
        let Some(rec) = rec.filter(|r| !r.from.is_empty()) else {
            break;
        };
        if rec.kind != query_record::ACK {
            continue;
        }
        if verbose {
            println!("\tAck from '{}'", rec.from);
        }
        num_acks += 1;
        if !acks_from.insert(rec.from.clone()) {
            dups = true;
            println!("Duplicate response from '{}'", rec.from);
        }
        last = Instant::now();
    }
    if verbose {
        println!(
            "Query time: {:.2} sec, time to last response: {:.2} sec",
            start.elapsed().as_secs_f64(),
            (last - start).as_secs_f64()
        );
    }
    let mut code = ExitCode::SUCCESS;
    if dups {
        println!("{DUPLICATE_RESPONSES}");
        code = ExitCode::FAILURE;
    }
    let n = live.len();
    if num_acks == n {
        println!("Successfully contacted all live nodes");
    } else if num_acks > n {
        println!("Received more acks than live nodes! Acks from non-live nodes:");
        for m in acks_from.difference(&live) {
            println!("\t{m}");
        }
        println!("{TOO_MANY_ACKS}");
        println!("{TROUBLESHOOTING}");
        return ExitCode::FAILURE;
    } else {
        println!("Received less acks than live nodes! Missing acks from:");
        for m in live.difference(&acks_from) {
            println!("\t{m}");
        }
        println!("{TOO_FEW_ACKS}");
        println!("{TROUBLESHOOTING}");
        return ExitCode::FAILURE;
    }
    code
}
