//! Watching agents through their RPC: one tokio task per observer, one request in flight per
//! observer, the next one sent a poll interval after the previous one was sent (or at once if
//! the answer came later), so a slow agent never delays the sampling of the others.
//!
//! A timestamp is the arrival of the first answer showing the new state: an upper bound, late
//! by up to one poll interval plus the round trip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use vassal_rpc::protocol::MembersFilter;
use vassal_rpc::{Client, ClientError};

use crate::report::now;

/// An observed agent and its (lazily re-made) RPC connection.
pub struct Conn {
    pub idx: usize,
    pub name: String,
    pub addr: String,
    client: Option<Client>,
}

impl Conn {
    pub fn new(idx: usize, name: String, addr: String, client: Option<Client>) -> Conn {
        Conn {
            idx,
            name,
            addr,
            client,
        }
    }

    async fn client(&mut self) -> Result<&Client, ClientError> {
        if self.client.is_none() {
            self.client = Some(Client::connect(&self.addr, "").await?);
        }
        self.client.as_ref().ok_or(ClientError::Closed)
    }

    /// Closes the connection (the agent is gone, or its answer never came).
    pub fn disconnect(&mut self) {
        self.client = None;
    }
}

/// What an observer waits for.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `n` members alive: `stats` (members − failed − left) until it says so, then confirmed
    /// with `members-filtered(Status=alive)`; polling `members-filtered` if that disagrees or
    /// the agent's `stats` lacks the counts.
    Converge { n: usize },
    /// Member `target` in status `want`; the first sighting of `also` is noted on the way.
    Status {
        target: String,
        want: &'static str,
        also: Option<&'static str>,
    },
    /// Every member of `targets` listed `failed` (`members-filtered(Status=failed)`).
    Failed { targets: Vec<String> },
}

/// One observer's outcome.
#[derive(Debug, Default, Clone)]
pub struct Watch {
    pub done_at: Option<f64>,
    pub also_at: Option<f64>,
    pub requests: u64,
    pub errors: u64,
    pub rtts: Vec<f64>,
    /// `stats` said N but `members-filtered(alive)` did not agree.
    pub verify_failed: bool,
    /// Convergence: how many alive members the observer listed at its last answer (how far a
    /// cluster that never converged got).
    pub last_alive: Option<i64>,
    pub last_error: Option<String>,
}

/// Alive members according to `stats`: serf.members − failed − left.
fn alive_from_stats(stats: &vassal_rpc::protocol::Stats) -> Option<i64> {
    let serf = stats.get("serf")?;
    let get = |k: &str| serf.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    Some(get("members")? - get("failed")? - get("left")?)
}

fn alive_filter() -> MembersFilter {
    MembersFilter {
        status: "alive".to_owned(),
        ..MembersFilter::default()
    }
}

/// One request with its answer time, bounded by `deadline`.
async fn timed<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, fut).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout),
    }
}

async fn watch_one(
    mut conn: Conn,
    probe: Arc<Probe>,
    interval: Duration,
    deadline: Instant,
) -> (Conn, Watch) {
    let mut w = Watch::default();
    let mut members_mode = false;
    while Instant::now() < deadline {
        let sent = Instant::now();
        let outcome: Result<bool, ClientError> = async {
            let client = timed(deadline, conn.client()).await?;
            w.requests += 1;
            match &*probe {
                Probe::Converge { n } => {
                    if !members_mode {
                        let stats = timed(deadline, client.stats()).await?;
                        let t = now();
                        w.rtts.push(sent.elapsed().as_secs_f64());
                        let alive = alive_from_stats(&stats);
                        w.last_alive = alive.or(w.last_alive);
                        match alive {
                            None => members_mode = true,
                            Some(c) if c >= *n as i64 => {
                                w.requests += 1;
                                let m = timed(deadline, client.members_filtered(&alive_filter()))
                                    .await?;
                                if m.len() >= *n {
                                    w.done_at = Some(t);
                                    return Ok(true);
                                }
                                w.verify_failed = true;
                                members_mode = true;
                            }
                            Some(_) => {}
                        }
                        Ok(false)
                    } else {
                        let m = timed(deadline, client.members_filtered(&alive_filter())).await?;
                        let t = now();
                        w.rtts.push(sent.elapsed().as_secs_f64());
                        w.last_alive = i64::try_from(m.len()).ok();
                        if m.len() >= *n {
                            w.done_at = Some(t);
                            return Ok(true);
                        }
                        Ok(false)
                    }
                }
                Probe::Failed { targets } => {
                    let filter = MembersFilter {
                        status: "failed".to_owned(),
                        ..MembersFilter::default()
                    };
                    let m = timed(deadline, client.members_filtered(&filter)).await?;
                    let t = now();
                    w.rtts.push(sent.elapsed().as_secs_f64());
                    if targets.iter().all(|t| m.iter().any(|m| &m.name == t)) {
                        w.done_at = Some(t);
                        return Ok(true);
                    }
                    Ok(false)
                }
                Probe::Status { target, want, also } => {
                    let filter = MembersFilter {
                        name: target.clone(),
                        ..MembersFilter::default()
                    };
                    let m = timed(deadline, client.members_filtered(&filter)).await?;
                    let t = now();
                    w.rtts.push(sent.elapsed().as_secs_f64());
                    let status = m
                        .iter()
                        .find(|m| &m.name == target)
                        .map(|m| m.status.as_str().to_owned());
                    if let (Some(also), Some(s)) = (also, status.as_deref()) {
                        if s == *also && w.also_at.is_none() {
                            w.also_at = Some(t);
                        }
                    }
                    if status.as_deref() == Some(*want) {
                        w.done_at = Some(t);
                        return Ok(true);
                    }
                    Ok(false)
                }
            }
        }
        .await;
        match outcome {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                // An unanswered request leaves the connection out of step: start afresh.
                w.errors += 1;
                w.last_error = Some(format!("{}: {e}", conn.name));
                conn.disconnect();
            }
        }
        let next = (sent + interval).max(Instant::now());
        tokio::time::sleep_until(next.into()).await;
    }
    (conn, w)
}

/// Runs `probe` on every observer at once until each is done or `deadline` passes. The
/// connections come back with the outcomes, in the order given.
pub async fn watch_all(
    conns: Vec<Conn>,
    probe: Probe,
    interval: Duration,
    deadline: Instant,
) -> (Vec<Conn>, Vec<Watch>) {
    let probe = Arc::new(probe);
    let mut set = JoinSet::new();
    let order: Vec<usize> = conns.iter().map(|c| c.idx).collect();
    for conn in conns {
        set.spawn(watch_one(conn, probe.clone(), interval, deadline));
    }
    let mut done: Vec<(Conn, Watch)> = Vec::with_capacity(order.len());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(pair) => done.push(pair),
            Err(e) => eprintln!("  observer task failed: {e}"),
        }
    }
    done.sort_by_key(|(c, _)| order.iter().position(|&i| i == c.idx));
    done.into_iter().unzip()
}

/// Median and 99th percentile of poll round trips, in seconds.
pub fn rtt_summary(watches: &[Watch]) -> (Option<f64>, Option<f64>) {
    let mut all: Vec<f64> = watches
        .iter()
        .flat_map(|w| w.rtts.iter().copied())
        .collect();
    if all.is_empty() {
        return (None, None);
    }
    all.sort_by(f64::total_cmp);
    let p = |q: f64| all[((q * (all.len() - 1) as f64).round() as usize).min(all.len() - 1)];
    (Some(p(0.5)), Some(p(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count() {
        let mut s = vassal_rpc::protocol::Stats::new();
        assert_eq!(alive_from_stats(&s), None);
        let serf = [("members", "10"), ("failed", "1"), ("left", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        s.insert("serf".into(), serf);
        assert_eq!(alive_from_stats(&s), Some(7));
        s.get_mut("serf").unwrap().insert("left".into(), "x".into());
        assert_eq!(alive_from_stats(&s), None);
    }
}
