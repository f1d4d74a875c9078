//! The `load` query (the Serf demo's `uptime` handler): every node with a role answers with a
//! line like `uptime` prints, read from `/proc/uptime` and `/proc/loadavg`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};
use vassal_node::Handle;
use vassal_serf::Event;

/// The query name the web page asks and the roles answer.
pub const QUERY: &str = "load";

/// `uptime`'s line from its parts: ` 14:05:56 up 3 days,  2:01,  load average: 0.52, 0.58, 0.59`
/// (`time_of_day` in seconds since midnight UTC; `loadavg` is `/proc/loadavg`'s text).
pub fn uptime_line(time_of_day: u64, uptime_secs: u64, loadavg: &str) -> String {
    let days = uptime_secs / 86400;
    let (uh, um) = (uptime_secs / 3600 % 24, uptime_secs / 60 % 60);
    let up = match (days, uh) {
        (0, 0) => format!("{um} min"),
        (0, _) => format!("{uh:2}:{um:02}"),
        (1, _) => format!("1 day, {uh:2}:{um:02}"),
        (d, _) => format!("{d} days, {uh:2}:{um:02}"),
    };
    let mut avg = loadavg.split_whitespace().take(3);
    let (a, b, c) = (
        avg.next().unwrap_or("?"),
        avg.next().unwrap_or("?"),
        avg.next().unwrap_or("?"),
    );
    format!(
        " {} up {up},  load average: {a}, {b}, {c}",
        clock(time_of_day)
    )
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `HH:MM:SS` (UTC) of a time in seconds since the epoch or since midnight.
pub(crate) fn clock(secs: u64) -> String {
    let t = secs % 86400;
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

/// This machine's `uptime` line now.
pub fn current() -> String {
    let now = now_secs();
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next().and_then(|u| u.parse().ok()))
        .unwrap_or(0);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_else(|_| "? ? ?".to_owned());
    uptime_line(now % 86400, uptime, &loadavg)
}

/// Answers every `load` query this node receives until `stop` (or the node stops).
pub async fn answer(
    handle: Handle,
    mut events: broadcast::Receiver<Arc<Event>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let e = tokio::select! {
            e = events.recv() => e,
            () = crate::http::stopped(&mut stop) => return,
        };
        match e.as_deref() {
            Ok(Event::Query(q)) if q.name == QUERY => {
                let line = current();
                debug!(from = %q.source_node, "answering load query");
                if let Err(e) = handle.respond(q.ltime, q.id, line.as_bytes()).await {
                    debug!("load query answer not sent: {e}");
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("roles: load answers missed {n} events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_uptime() {
        let avg = "0.52 0.58 0.59 1/123 4567\n";
        assert_eq!(
            uptime_line(14 * 3600 + 5 * 60 + 56, 3 * 86400 + 2 * 3600 + 60, avg),
            " 14:05:56 up 3 days,  2:01,  load average: 0.52, 0.58, 0.59"
        );
        assert_eq!(
            uptime_line(0, 86400 + 11 * 3600, avg),
            " 00:00:00 up 1 day, 11:00,  load average: 0.52, 0.58, 0.59"
        );
        assert_eq!(
            uptime_line(59, 7 * 60, avg),
            " 00:00:59 up 7 min,  load average: 0.52, 0.58, 0.59"
        );
        assert_eq!(
            uptime_line(59, 3600, avg),
            " 00:00:59 up  1:00,  load average: 0.52, 0.58, 0.59"
        );
    }

    #[test]
    fn the_current_line_has_this_machines_load_average() {
        let line = current();
        let averages = line
            .split_once("load average: ")
            .map_or("", |(_, a)| a)
            .split(", ")
            .map(|a| a.trim().parse::<f64>())
            .collect::<Result<Vec<_>, _>>();
        assert!(
            matches!(&averages, Ok(a) if a.len() == 3),
            "three numbers read from /proc/loadavg: {line}"
        );
        assert!(line.len() < 1024, "fits a query answer");
    }
}
