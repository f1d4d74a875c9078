//! Helpers shared by the RPC and CLI test binaries.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use vassal_testkit::{serf_cli, vassal_cli, CliRun};

/// Output lines sorted, with the tags column of `members` (the fourth field) sorted too: Go
/// prints both in map order, which varies from run to run. Field widths do not change.
pub fn norm(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut out = l.to_string();
            if let Some(tags) = l.split_whitespace().nth(3).filter(|t| t.contains('=')) {
                let mut parts: Vec<&str> = tags.split(',').collect();
                parts.sort_unstable();
                out = l.replacen(tags, &parts.join(","), 1);
            }
            out
        })
        .collect();
    lines.sort();
    lines
}

/// Both CLIs against one agent: (Go's `serf`, our `vassal`).
pub fn both_clis(rpc: SocketAddr, args: &[&str]) -> (CliRun, CliRun) {
    (serf_cli(rpc, args), vassal_cli(rpc, args))
}

/// What a user sees: Go prints errors on stdout, we on stderr, so failures compare combined.
pub fn seen(run: &CliRun) -> String {
    if run.code == 0 {
        run.stdout.clone()
    } else {
        run.combined()
    }
}

/// Writes an executable shell script.
pub fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}
