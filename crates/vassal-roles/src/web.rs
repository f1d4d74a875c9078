//! The web role: a page naming this node, with the cluster's load table filled from a `load`
//! query sent every few seconds (Serf's demo did this with `serf query load` from cron). Every
//! response carries `X-Served-By: <node name>`.
//!
//! The node also keeps its `load` tag fresh ([`run_load_tag`]): the mean time it took to serve
//! a request over the last second, in milliseconds, which `-lb-balance leastload` weighs
//! backends by. A slow node (a CPU hog beside it, a slow disk, or `-web-delay` in a benchmark)
//! reports a high figure however few requests it gets, so the balancer keeps sending it less.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::watch;
use tracing::warn;
use vassal_node::{Handle, QueryReply};
use vassal_serf::QueryParams;

use crate::backend::LOAD_TAG;
use crate::http::{self, escape, Body};
use crate::load;
use crate::pool::load_weight;

/// How often the `load` tag is brought up to date (when it changed enough to matter).
pub const LOAD_TAG_INTERVAL: Duration = Duration::from_secs(1);

/// How often the load query is sent, and how often the page reloads itself.
pub const LOAD_INTERVAL: Duration = Duration::from_secs(5);

/// A node that misses this many queries in a row drops off the table (one late answer on a
/// busy machine should not make a row flicker).
pub const MISSES_BEFORE_DROP: u32 = 3;

/// The latest answer of each node, as the answers arrive.
#[derive(Debug, Default, Clone)]
pub struct LoadTable {
    /// Node name → its `uptime` line.
    pub rows: BTreeMap<String, String>,
    /// When the last complete query was sent (seconds since the epoch).
    pub asked_at: Option<u64>,
    /// Node name → queries in a row it has not answered.
    missed: BTreeMap<String, u32>,
}

impl LoadTable {
    /// An answer from `node`.
    pub fn answer(&mut self, node: String, line: String) {
        self.missed.insert(node.clone(), 0);
        self.rows.insert(node, line);
    }

    /// The query sent at `asked_at` is over and `answered` answered it.
    pub fn round_done(&mut self, answered: &BTreeSet<String>, asked_at: u64) {
        self.asked_at = Some(asked_at);
        let mut drop = Vec::new();
        for (node, misses) in &mut self.missed {
            if !answered.contains(node) {
                *misses += 1;
                if *misses >= MISSES_BEFORE_DROP {
                    drop.push(node.clone());
                }
            }
        }
        for node in drop {
            self.missed.remove(&node);
            self.rows.remove(&node);
        }
    }
}

pub struct Web {
    node: String,
    served_by: HeaderValue,
    table: RwLock<LoadTable>,
    /// `-web-delay`.
    delay: Option<Duration>,
    /// Requests served and their total time (µs) since the tag was last computed.
    served: AtomicU64,
    busy_micros: AtomicU64,
}

impl Web {
    pub fn new(node: &str, delay: Option<Duration>) -> Arc<Self> {
        Arc::new(Web {
            node: node.to_owned(),
            served_by: HeaderValue::from_str(node)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-node-name")),
            table: RwLock::new(LoadTable::default()),
            delay,
            served: AtomicU64::new(0),
            busy_micros: AtomicU64::new(0),
        })
    }

    /// The mean milliseconds per request since the last call, if any request was served;
    /// starts the next window.
    fn take_load(&self) -> Option<f64> {
        let served = self.served.swap(0, Ordering::Relaxed);
        let micros = self.busy_micros.swap(0, Ordering::Relaxed);
        (served > 0).then(|| micros as f64 / served as f64 / 1000.0)
    }

    fn table(&self) -> LoadTable {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        let mut resp = match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/" | "/index.html") => http::respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page(&self.node, &self.table()),
            ),
            (&Method::GET | &Method::HEAD, other) => http::text(
                StatusCode::NOT_FOUND,
                format!("no page {other:?} here; try /"),
            ),
            _ => http::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "this web node only answers GET",
            ),
        };
        resp.headers_mut()
            .insert("x-served-by", self.served_by.clone());
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.busy_micros.fetch_add(took, Ordering::Relaxed);
        resp
    }
}

/// The page a person sees: who served it, and the cluster's load.
pub fn page(node: &str, t: &LoadTable) -> String {
    let node = escape(node);
    let rows: String = if t.rows.is_empty() {
        "<tr><td colspan=2>waiting for the first answers to the load query…</td></tr>\n".to_owned()
    } else {
        t.rows
            .iter()
            .map(|(n, line)| {
                format!(
                    "<tr><td class=node>{}</td><td class=load><code>{}</code></td></tr>\n",
                    escape(n),
                    escape(line.trim_end())
                )
            })
            .collect()
    };
    let asked = match t.asked_at {
        Some(at) => format!(
            "Answers to the <code>load</code> query sent at {} UTC",
            load::clock(at)
        ),
        None => "Answers so far to the first <code>load</code> query".to_owned(),
    };
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}"><title>{node}</title>
<style>body {{ font-family: sans-serif; margin: 2em; }} td {{ padding: .2em .8em; }} h1 {{ font-size: 2.5em; }}</style>
</head><body>
<h1 id="host">{node}</h1>
<p>This page was served by <b id="served-by">{node}</b>, a Vassal web node behind the load balancer.</p>
<h2>Cluster load</h2>
<table id="load">
<thead><tr><th>Node</th><th>uptime</th></tr></thead>
<tbody>
{rows}</tbody></table>
<p>{asked}; the page reloads every {refresh} s.</p>
</body></html>
"#,
        refresh = LOAD_INTERVAL.as_secs(),
    )
}

/// Sends the `load` query every [`LOAD_INTERVAL`] and keeps the table current: answers replace
/// rows as they arrive, and nodes that miss [`MISSES_BEFORE_DROP`] queries in a row drop out.
pub async fn run_load_queries(web: Arc<Web>, handle: Handle, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = http::stopped(&mut stop) => return,
        }
        let asked = load::now_secs();
        let mut replies = match handle.query(load::QUERY, b"", QueryParams::default()).await {
            Ok(r) => r,
            Err(vassal_node::NodeError::Stopped) => return,
            Err(e) => {
                warn!("web: load query not sent: {e}");
                continue;
            }
        };
        let mut answered = BTreeSet::new();
        loop {
            let reply = tokio::select! {
                r = replies.next() => r,
                () = http::stopped(&mut stop) => return,
            };
            match reply {
                Some(QueryReply::Response { from, payload }) => {
                    let line = String::from_utf8_lossy(&payload).into_owned();
                    answered.insert(from.clone());
                    web.table
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .answer(from, line);
                }
                Some(QueryReply::Ack { .. }) => {}
                None => break,
            }
        }
        web.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .round_done(&answered, asked);
    }
}

/// Whether a new load figure is worth a tag update (gossiped to every node): only when the
/// weight it gives differs from the published one's by more than a tenth.
pub fn load_changed(published: Option<f64>, now: f64) -> bool {
    let Some(old) = published else {
        return true;
    };
    let (a, b) = (load_weight(Some(old)), load_weight(Some(now)));
    a.abs_diff(b) * 10 > a.max(b)
}

/// The figure as the tag carries it: milliseconds, to the microsecond.
pub fn format_load(ms: f64) -> String {
    format!("{ms:.3}")
}

/// Keeps this node's `load` tag fresh: every [`LOAD_TAG_INTERVAL`] the mean time per request
/// over the interval, published when it moved enough to change the node's weight (a second
/// without requests keeps the last figure: the health checks alone come every second).
pub async fn run_load_tag(web: Arc<Web>, handle: Handle, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LOAD_TAG_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: Option<f64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = http::stopped(&mut stop) => return,
        }
        let Some(now) = web.take_load() else {
            continue;
        };
        if !load_changed(published, now) {
            continue;
        }
        let members = match handle.members().await {
            Ok(m) => m,
            Err(vassal_node::NodeError::Stopped) => return,
            Err(_) => continue,
        };
        let Some(me) = members.into_iter().find(|m| m.name == web.node) else {
            continue;
        };
        let mut tags = me.tags;
        tags.insert(LOAD_TAG.to_owned(), format_load(now));
        match handle.set_tags(tags).await {
            Ok(()) => published = Some(now),
            Err(vassal_node::NodeError::Stopped) => return,
            Err(e) => warn!("web: load tag not updated: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_drops_off_the_table_after_missing_three_queries_in_a_row() {
        let mut t = LoadTable::default();
        let both: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let only_a: BTreeSet<String> = ["a".to_owned()].into();
        t.answer("a".into(), "1".into());
        t.answer("b".into(), "2".into());
        t.round_done(&both, 0);
        t.round_done(&only_a, 5);
        t.round_done(&only_a, 10);
        assert!(t.rows.contains_key("b"), "two misses keep the row");
        t.answer("b".into(), "3".into());
        t.round_done(&both, 15);
        for at in [20, 25] {
            t.round_done(&only_a, at);
        }
        assert_eq!(t.rows["b"], "3");
        t.round_done(&only_a, 30);
        assert_eq!(t.rows.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(t.asked_at, Some(30));
    }

    #[test]
    fn the_page_names_the_host_and_lists_the_load_escaped() {
        let mut t = LoadTable::default();
        assert!(page("web-1", &t).contains("waiting for the first answers"));
        t.rows.insert(
            "web-2".into(),
            " 10:00:00 up 1 min,  load average: 0.1, 0.2, 0.3".into(),
        );
        t.rows.insert("<evil>".into(), "<script>".into());
        t.asked_at = Some(36000);
        let p = page("web-1", &t);
        assert!(p.contains(r#"<h1 id="host">web-1</h1>"#), "{p}");
        assert!(p.contains("<td class=node>web-2</td>"), "{p}");
        assert!(p.contains("load average: 0.1, 0.2, 0.3"), "{p}");
        assert!(p.contains("&lt;evil&gt;") && !p.contains("<script>"), "{p}");
        assert!(p.contains("sent at 10:00:00 UTC"), "{p}");
    }

    #[test]
    fn the_load_tag_changes_only_when_the_weight_would() {
        assert!(load_changed(None, 0.05), "the first figure is published");
        assert!(!load_changed(Some(0.05), 0.06), "noise around a fast node");
        assert!(load_changed(Some(0.05), 20.0), "a node slowing down");
        assert!(!load_changed(Some(40.0), 60.0), "both at the floor weight");
        assert_eq!(format_load(12.3456), "12.346");
    }
}
