//! The agents' event-handler script and the reader of the logs it writes.
//!
//! Each agent runs its own copy of a bash script that appends one line per event to the
//! agent's log: `<$EPOCHREALTIME> <event> <subject>`, the subject being the member name for
//! member events (one line per member on stdin), the event name for user events and the query
//! name for queries. A query handler also prints the node's name, which becomes its response.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `s` as one single-quoted shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The handler script for node `name`, logging to `log`.
pub fn script(name: &str, log: &Path) -> String {
    let log = shell_quote(&log.to_string_lossy());
    let name = shell_quote(name);
    format!(
        r#"#!/bin/bash
# cluster-bench event handler: "<epoch seconds> <event> <subject>" per event, appended to the
# node's log. The timestamp is a bash builtin, read before anything else runs.
t=$EPOCHREALTIME
log={log}
case "$SERF_EVENT" in
  member-*)
    while IFS= read -r line || [ -n "$line" ]; do
      printf '%s %s %s\n' "$t" "$SERF_EVENT" "${{line%%$'\t'*}}"
    done >> "$log"
    ;;
  user)
    printf '%s user %s\n' "$t" "$SERF_USER_EVENT" >> "$log"
    ;;
  query)
    printf '%s query %s\n' "$t" "$SERF_QUERY_NAME" >> "$log"
    printf '%s' {name}
    ;;
  *)
    printf '%s %s -\n' "$t" "$SERF_EVENT" >> "$log"
    ;;
esac
exit 0
"#
    )
}

struct LogFile {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
}

/// Follows every agent's handler log; remembers, per (event, subject), when each agent first
/// ran its handler for it.
pub struct EventLogs {
    files: Vec<LogFile>,
    first: HashMap<(String, String), HashMap<usize, f64>>,
}

/// One log line: (timestamp, event, subject); `None` for a line that is not ours.
fn parse_line(line: &[u8]) -> Option<(f64, String, String)> {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.splitn(3, ' ');
    // A locale with a decimal comma writes 1700000000,123456.
    let ts: f64 = parts.next()?.replace(',', ".").parse().ok()?;
    let event = parts.next()?.to_owned();
    let subject = parts.next()?.to_owned();
    Some((ts, event, subject))
}

impl EventLogs {
    /// Logs of agents 0..paths.len(), by index.
    pub fn new(paths: Vec<PathBuf>) -> EventLogs {
        EventLogs {
            files: paths
                .into_iter()
                .map(|path| LogFile {
                    path,
                    file: None,
                    partial: Vec::new(),
                })
                .collect(),
            first: HashMap::new(),
        }
    }

    /// Reads whatever the handlers appended since the last call.
    pub fn poll(&mut self) {
        let mut buf = Vec::new();
        for (idx, lf) in self.files.iter_mut().enumerate() {
            if lf.file.is_none() {
                lf.file = File::open(&lf.path).ok();
            }
            let Some(f) = lf.file.as_mut() else { continue };
            buf.clear();
            if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
                continue;
            }
            lf.partial.extend_from_slice(&buf);
            let Some(last_nl) = lf.partial.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = lf.partial.drain(..=last_nl).collect();
            for line in complete.split(|&b| b == b'\n') {
                if let Some((ts, event, subject)) = parse_line(line) {
                    self.first
                        .entry((event, subject))
                        .or_default()
                        .entry(idx)
                        .or_insert(ts);
                }
            }
        }
    }

    /// When each agent (by index) first ran its handler for `event` about `subject`.
    pub fn seen(&self, event: &str, subject: &str) -> Option<&HashMap<usize, f64>> {
        self.first.get(&(event.to_owned(), subject.to_owned()))
    }

    /// Whether every agent in `agents` has run its handler for `event` about `subject`.
    pub fn all_seen(&self, event: &str, subject: &str, agents: &[usize]) -> bool {
        self.seen(event, subject)
            .is_some_and(|m| agents.iter().all(|a| m.contains_key(a)))
    }

    /// How many (agent, subject) pairs have run a handler for `event`, over every subject.
    pub fn count(&self, event: &str) -> usize {
        self.first
            .iter()
            .filter(|((e, _), _)| e == event)
            .map(|(_, by_agent)| by_agent.len())
            .sum()
    }

    /// The handler times of `agents` for `event` about `subject`.
    pub fn times(&self, event: &str, subject: &str, agents: &[usize]) -> Vec<f64> {
        match self.seen(event, subject) {
            None => Vec::new(),
            Some(m) => agents.iter().filter_map(|a| m.get(a).copied()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_line(b"1700000000.250000 member-join go0001"),
            Some((1_700_000_000.25, "member-join".into(), "go0001".into()))
        );
        assert_eq!(
            parse_line(b"1700000000,5 user ev 1"),
            Some((1_700_000_000.5, "user".into(), "ev 1".into()))
        );
        assert_eq!(parse_line(b"garbage"), None);
        assert_eq!(parse_line(b""), None);
    }

    #[test]
    fn script_runs_under_bash() {
        let dir = std::env::temp_dir().join(format!("cluster-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("events.log");
        let path = dir.join("handler.sh");
        std::fs::write(&path, script("n1", &log)).unwrap();
        let out = std::process::Command::new("/bin/bash")
            .arg(&path)
            .env("SERF_EVENT", "query")
            .env("SERF_QUERY_NAME", "q1")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"n1");
        let mut child = std::process::Command::new("/bin/bash")
            .arg(&path)
            .env("SERF_EVENT", "member-join")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"a\t127.0.0.1\t\tbench=1\nb\t127.0.0.2\t\t")
            .unwrap();
        drop(stdin);
        child.wait().unwrap();
        let mut logs = EventLogs::new(vec![log]);
        logs.poll();
        assert!(logs.all_seen("query", "q1", &[0]));
        assert!(logs.all_seen("member-join", "a", &[0]));
        assert!(logs.all_seen("member-join", "b", &[0]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
