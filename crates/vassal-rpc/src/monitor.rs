//! The log fan-out behind `monitor` (Serf's `logWriter`): every log line the agent writes is
//! kept in a ring of the last 512 and copied to each subscriber; a new subscriber first gets the
//! ring. A subscriber that falls behind loses lines rather than slowing the logger down.
//!
//! Lines look like Serf's: `2024/05/01 12:00:00 [INFO] agent: …`. [`level_allows`] is Serf's
//! level filter, which reads the `[LEVEL]` tag of each line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// Lines kept for late subscribers, as Serf keeps.
pub const BACKLOG: usize = 512;

/// Serf's log levels, least severe first.
pub const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERR"];

/// Where the agent's log lines go; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LogHub {
    inner: Arc<Mutex<Hub>>,
}

#[derive(Debug, Default)]
struct Hub {
    ring: VecDeque<String>,
    subscribers: Vec<(u64, mpsc::Sender<String>)>,
    next_id: u64,
}

/// A subscription: the backlog at the time of subscribing, then every new line. Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct LogSubscription {
    pub backlog: Vec<String>,
    pub lines: mpsc::Receiver<String>,
    id: u64,
    hub: LogHub,
}

impl Drop for LogSubscription {
    fn drop(&mut self) {
        let mut hub = self.hub.lock();
        hub.subscribers.retain(|(id, _)| *id != self.id);
    }
}

impl LogHub {
    pub fn new() -> Self {
        LogHub::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one line (without its trailing newline) and hands it to every subscriber with
    /// room for it. Never blocks and never logs (it is called from inside the logger).
    pub fn publish(&self, line: &str) {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut hub = self.lock();
        if hub.ring.len() == BACKLOG {
            hub.ring.pop_front();
        }
        hub.ring.push_back(line.to_owned());
        hub.subscribers.retain(|(_, tx)| !tx.is_closed());
        for (_, tx) in &hub.subscribers {
            // A full queue drops the line for that subscriber only.
            let _ = tx.try_send(line.to_owned());
        }
    }

    /// Subscribes with room for `capacity` lines in flight.
    pub fn subscribe(&self, capacity: usize) -> LogSubscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut hub = self.lock();
        let id = hub.next_id;
        hub.next_id += 1;
        hub.subscribers.push((id, tx));
        LogSubscription {
            backlog: hub.ring.iter().cloned().collect(),
            lines: rx,
            id,
            hub: self.clone(),
        }
    }

    /// How many subscribers are listening (a dropped one is gone at once).
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }
}

/// The canonical spelling of a level name (case-insensitive), or `None` if Serf does not know
/// it.
pub fn parse_level(s: &str) -> Option<&'static str> {
    let upper = s.to_ascii_uppercase();
    LEVELS.iter().copied().find(|l| *l == upper)
}

/// Serf's `LevelFilter.Check`: a line passes unless its first `[...]` names a level below
/// `min`. Lines without a level tag always pass.
pub fn level_allows(min: &str, line: &str) -> bool {
    let Some(start) = line.find('[') else {
        return true;
    };
    let Some(len) = line[start..].find(']') else {
        return true;
    };
    let tag = &line[start + 1..start + len];
    let rank = |l: &str| LEVELS.iter().position(|x| *x == l);
    match (rank(tag), rank(min)) {
        (Some(t), Some(m)) => t >= m,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_gets_the_backlog_then_new_lines() {
        let hub = LogHub::new();
        for i in 0..600 {
            hub.publish(&format!("line {i}\n"));
        }
        let mut sub = hub.subscribe(8);
        assert_eq!(sub.backlog.len(), BACKLOG);
        assert_eq!(sub.backlog[0], "line 88");
        hub.publish("fresh");
        assert_eq!(sub.lines.try_recv().unwrap(), "fresh");
        drop(sub);
        assert_eq!(hub.subscribers(), 0);
    }

    #[test]
    fn a_slow_subscriber_loses_lines_without_blocking() {
        let hub = LogHub::new();
        let mut sub = hub.subscribe(2);
        for i in 0..10 {
            hub.publish(&format!("{i}"));
        }
        assert_eq!(sub.lines.try_recv().unwrap(), "0");
        assert_eq!(sub.lines.try_recv().unwrap(), "1");
        assert!(sub.lines.try_recv().is_err());
    }

    #[test]
    fn levels_filter_like_serf() {
        assert!(level_allows("INFO", "2024/01/01 00:00:00 [INFO] agent: x"));
        assert!(level_allows("INFO", "2024/01/01 00:00:00 [ERR] agent: x"));
        assert!(!level_allows(
            "INFO",
            "2024/01/01 00:00:00 [DEBUG] agent: x"
        ));
        assert!(level_allows("WARN", "no level here"));
        assert_eq!(parse_level("debug"), Some("DEBUG"));
        assert_eq!(parse_level("loud"), None);
    }
}
