//! The web role: a page naming this node, with the cluster's load table filled from a `load`
//! query sent every few seconds (Serf's demo did this with `serf query load` from cron). Every
//! response carries `X-Served-By: <node name>`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};
use vassal_node::Handle;
use vassal_serf::{Event, QueryParams};

use crate::http::{self, escape, Body};
use crate::load;

/// How often the load query is sent, and how often the page reloads itself.
pub const LOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The latest answer of each node that answered the last query (or the one under way).
#[derive(Debug, Default, Clone)]
pub struct LoadTable {
    /// Node name → its `uptime` line.
    pub rows: BTreeMap<String, String>,
    /// When the last complete query was sent (seconds since the epoch).
    pub asked_at: Option<u64>,
}

pub struct Web {
    node: String,
    served_by: HeaderValue,
    table: RwLock<LoadTable>,
}

impl Web {
    pub fn new(node: &str) -> Arc<Self> {
        Arc::new(Web {
            node: node.to_owned(),
            served_by: HeaderValue::from_str(node)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-node-name")),
            table: RwLock::new(LoadTable::default()),
        })
    }

    fn table(&self) -> LoadTable {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
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
            clock(at)
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

fn clock(epoch_secs: u64) -> String {
    let t = epoch_secs % 86400;
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sends the `load` query every [`LOAD_INTERVAL`] and keeps the table current: answers replace
/// rows as they arrive, and nodes that did not answer a whole query drop out.
pub async fn run_load_queries(web: Arc<Web>, handle: Handle, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = http::stopped(&mut stop) => return,
        }
        let mut events = handle.events();
        let asked = now_secs();
        let ltime = match handle.query(load::QUERY, b"", QueryParams::default()).await {
            Ok(l) => l,
            Err(vassal_node::NodeError::Stopped) => return,
            Err(e) => {
                warn!("web: load query not sent: {e}");
                continue;
            }
        };
        let mut answered = BTreeMap::new();
        loop {
            let e = tokio::select! {
                e = events.recv() => e,
                () = http::stopped(&mut stop) => return,
            };
            match e {
                Ok(Event::QueryResponse {
                    ltime: l,
                    from,
                    payload,
                }) if l == ltime => {
                    let line = String::from_utf8_lossy(&payload).into_owned();
                    answered.insert(from.clone(), line.clone());
                    web.table
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .rows
                        .insert(from, line);
                }
                Ok(Event::QueryDone { ltime: l }) if l == ltime => break,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    debug!("web: missed {n} events while collecting load answers");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        let mut t = web.table.write().unwrap_or_else(|e| e.into_inner());
        t.rows = answered;
        t.asked_at = Some(asked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
