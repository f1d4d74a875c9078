//! The live cluster page (`-ui-addr`): every member with its status, address, tags and
//! protocol versions, a 2-D map of the Vivaldi coordinates, the health score and queue depths,
//! and member events, user events and queries as they arrive.
//!
//! The page (one HTML file with its CSS and script, compiled into the binary) polls
//! `/cluster.json` every second and listens to `/events`, a server-sent event stream. What a
//! browser can make the server hold is bounded: `/cluster.json` is built at most every
//! [`SNAPSHOT_TTL`] whatever the number of clients, the event history is the last
//! [`RECENT_EVENTS`], at most [`MAX_STREAMS`] event streams are open at once, and a stream whose
//! reader falls [`STREAM_BUFFER`] events behind is closed (the browser reconnects and resumes
//! from the history).

pub mod view;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};
use vassal_node::Handle;
use vassal_serf::Event;

use crate::http::{self, Body};
use view::{ClusterView, EventView, MapView, MemberView, StatsView};

/// The page: HTML, CSS and script in one file, no framework.
const PAGE: &str = include_str!("page.html");
/// Events kept for a newly opened page (and a reconnecting stream).
pub const RECENT_EVENTS: usize = 200;
/// Event streams open at once; more are answered 503.
pub const MAX_STREAMS: usize = 32;
/// Events queued for one stream's reader; a reader this far behind is disconnected.
pub const STREAM_BUFFER: usize = 64;
/// `/cluster.json` is rebuilt (a round of questions to the node) at most this often.
pub const SNAPSHOT_TTL: Duration = Duration::from_millis(500);
/// An idle stream gets a comment this often, so a vanished reader is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// The map shows at most this many members (the projection is quadratic in it).
pub const MAX_MAP_POINTS: usize = 256;

/// The page's server state.
pub struct Ui {
    node: String,
    handle: Handle,
    recent: Mutex<VecDeque<Arc<EventView>>>,
    seq: AtomicU64,
    live: broadcast::Sender<Arc<EventView>>,
    streams: Arc<Semaphore>,
    snapshot: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
    stop: watch::Receiver<bool>,
}

impl Ui {
    pub fn new(node: &str, handle: Handle, stop: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Ui {
            node: node.to_owned(),
            handle,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
            seq: AtomicU64::new(0),
            live: broadcast::channel(STREAM_BUFFER).0,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            snapshot: tokio::sync::Mutex::new(None),
            stop,
        })
    }

    fn recent(&self) -> Vec<Arc<EventView>> {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.iter().cloned().collect()
    }

    /// Numbers `e`, keeps it in the history and sends it to every open stream.
    fn record(&self, e: &Event) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let v = Arc::new(EventView::of(e, seq, unix_ms));
        {
            let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if r.len() >= RECENT_EVENTS {
                r.pop_front();
            }
            r.push_back(v.clone());
        }
        let _ = self.live.send(v);
    }

    /// `/cluster.json`'s body, rebuilt when older than [`SNAPSHOT_TTL`].
    async fn cluster_json(&self) -> Result<Bytes, String> {
        let mut cached = self.snapshot.lock().await;
        if let Some((at, body)) = cached.as_ref() {
            if at.elapsed() < SNAPSHOT_TTL {
                return Ok(body.clone());
            }
        }
        let view = self.cluster_view().await.map_err(|e| e.to_string())?;
        let body = Bytes::from(serde_json::to_vec(&view).map_err(|e| e.to_string())?);
        *cached = Some((Instant::now(), body.clone()));
        Ok(body)
    }

    async fn cluster_view(&self) -> Result<ClusterView, vassal_node::NodeError> {
        let mut members = self.handle.members().await?;
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let stats = self.handle.stats().await?;
        let mut alive = Vec::new();
        for m in members
            .iter()
            .filter(|m| view::on_map(m))
            .take(MAX_MAP_POINTS)
        {
            let c = self.handle.coordinate(&m.name).await?;
            alive.push((m.name.clone(), c.filter(|c| c.is_valid())));
        }
        // The projection is CPU work of up to a few milliseconds: off the async workers.
        let map = tokio::task::spawn_blocking(move || MapView::of(&alive))
            .await
            .unwrap_or(MapView {
                points: Vec::new(),
                widest_ms: 0.0,
            });
        Ok(ClusterView {
            node: self.node.clone(),
            members: members.iter().map(MemberView::of).collect(),
            map,
            stats: StatsView::of(&stats),
        })
    }
}

/// Records the node's events for the page until `stop`. A lag (more than the node's event
/// buffer arrived while we were busy) is noted in the log; the page's member table is
/// unaffected, since it comes from the member list.
pub async fn run_events(
    ui: Arc<Ui>,
    mut events: broadcast::Receiver<Arc<Event>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) => ui.record(&e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!("cluster page: missed {n} events (the node produced them faster than the page could record them)");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = http::stopped(&mut stop) => return,
        }
    }
}

/// Answers one request for the page, its JSON or its event stream.
pub async fn serve(ui: Arc<Ui>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return http::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the cluster page only answers GET",
        );
    }
    match req.uri().path() {
        "/" | "/index.html" => {
            // The page carries the cluster and the history as they are now, so it is complete
            // as served; `null` if the node did not answer (the script then keeps polling).
            let cluster = ui.cluster_json().await.ok();
            let events =
                serde_json::to_string(&ui.recent().iter().map(|e| &**e).collect::<Vec<_>>())
                    .unwrap_or_else(|_| "[]".to_owned());
            no_store(http::respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page(cluster.as_deref(), &events),
            ))
        }
        "/cluster.json" => match ui.cluster_json().await {
            Ok(json) => no_store(http::respond(StatusCode::OK, "application/json", json)),
            Err(e) => http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the node did not answer: {e}"),
            ),
        },
        "/events.json" => {
            match serde_json::to_vec(&ui.recent().iter().map(|e| &**e).collect::<Vec<_>>()) {
                Ok(json) => no_store(http::respond(StatusCode::OK, "application/json", json)),
                Err(e) => http::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        "/events" => {
            // `?after=N` from the page (the last event it was served with); the browser's
            // `Last-Event-ID` when it reconnects.
            let from_query = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let from_header = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            stream(ui, from_query.max(from_header))
        }
        other => http::text(
            StatusCode::NOT_FOUND,
            format!(
                "no page {other:?} here: the cluster page is at /, its data at /cluster.json, \
                 /events.json and /events (server-sent events)"
            ),
        ),
    }
}

/// The page with its initial data: `{"cluster": <cluster.json or null>, "events": [...]}` in
/// a JSON script element. `<`, `>` and `&` are written as JSON escapes, so no text from the
/// network (a node name, a payload) can close the element or start markup.
pub fn page(cluster_json: Option<&[u8]>, events_json: &str) -> String {
    let cluster = cluster_json
        .map(String::from_utf8_lossy)
        .unwrap_or(std::borrow::Cow::Borrowed("null"));
    let initial = format!("{{\"cluster\":{cluster},\"events\":{events_json}}}")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    PAGE.replacen("__INITIAL__", &initial, 1)
}

fn no_store(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// One SSE frame: the event's number as its id, its JSON as data (one line: JSON strings
/// escape newlines).
pub fn sse_frame(e: &EventView) -> Option<Bytes> {
    let json = serde_json::to_string(e).ok()?;
    Some(Bytes::from(format!("id: {}\ndata: {json}\n\n", e.seq)))
}

/// Opens an event stream: the history after event `after`, then each new event.
fn stream(ui: Arc<Ui>, after: u64) -> Response<Body> {
    let Ok(permit) = ui.streams.clone().try_acquire_owned() else {
        return http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{MAX_STREAMS} event streams are open, the most this page serves; try again later"
            ),
        );
    };
    // Subscribed before the history is read, so nothing falls between the two.
    let live = ui.live.subscribe();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(feed(ui.clone(), live, tx, after, permit));
    let mut r = Response::new(SseBody { rx }.boxed());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Writes one stream's frames into its body's channel until the reader leaves, lags or the
/// server stops. Never waits on the reader: a full channel means it is too slow, and it is
/// dropped.
async fn feed(
    ui: Arc<Ui>,
    mut live: broadcast::Receiver<Arc<EventView>>,
    tx: mpsc::Sender<Bytes>,
    mut last: u64,
    _permit: OwnedSemaphorePermit,
) {
    let mut stop = ui.stop.clone();
    let send = |b: Bytes| match tx.try_send(b) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            debug!("cluster page: an event stream's reader is {STREAM_BUFFER} events behind; closing it");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    };
    // A retry hint for the browser's reconnection, then the history.
    if !send(Bytes::from_static(b"retry: 2000\n\n")) {
        return;
    }
    for e in ui.recent() {
        if e.seq > last {
            last = e.seq;
            if !sse_frame(&e).is_some_and(send) {
                return;
            }
        }
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        tokio::select! {
            e = live.recv() => match e {
                Ok(e) => {
                    if e.seq > last {
                        last = e.seq;
                        if !sse_frame(&e).is_some_and(send) {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    debug!("cluster page: an event stream fell behind the node's events; closing it");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keepalive.tick() => {
                if !send(Bytes::from_static(b": keepalive\n\n")) {
                    return;
                }
            }
            () = tx.closed() => return,
            () = http::stopped(&mut stop) => return,
        }
    }
}

/// A response body fed by [`feed`]; it ends when the feeder does.
struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sse_frame_is_one_id_and_one_data_line() {
        let e = EventView {
            seq: 42,
            unix_ms: 1,
            kind: "user",
            members: Vec::new(),
            name: Some("a\nb".into()),
            payload: Some("line1\nline2".into()),
            from: None,
            ltime: Some(3),
        };
        let f = String::from_utf8(sse_frame(&e).unwrap().to_vec()).unwrap();
        assert!(f.starts_with("id: 42\ndata: {"), "{f}");
        assert!(f.ends_with("}\n\n"), "{f}");
        assert_eq!(f.matches('\n').count(), 3, "{f}");
    }

    #[test]
    fn the_initial_data_cannot_close_its_script_element() {
        let hostile = r#"{"node":"</script><script>alert(1)</script>&amp;"}"#;
        let p = page(Some(hostile.as_bytes()), "[]");
        let start = p.find("<script id=\"initial\"").unwrap();
        let data = &p[start..];
        let data = &data[data.find('>').unwrap() + 1..data.find("</script>").unwrap()];
        assert!(!data.contains('<') && !data.contains('&'), "{data}");
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            v["cluster"]["node"],
            "</script><script>alert(1)</script>&amp;"
        );
        assert_eq!(v["events"], serde_json::json!([]));
        let p = page(None, "[]");
        assert!(p.contains(r#"{"cluster":null,"events":[]}"#));
    }

    #[test]
    fn the_page_is_self_contained() {
        // Nothing is fetched from elsewhere: no external scripts, styles or fonts.
        for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
            assert!(
                !PAGE.contains(external),
                "the page loads something: {external}"
            );
        }
        for needed in [
            "/cluster.json",
            "EventSource('/events",
            "<svg",
            "__INITIAL__",
        ] {
            assert!(PAGE.contains(needed), "the page lacks {needed}");
        }
    }
}
