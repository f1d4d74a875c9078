//! The balancer's stats page (Serf's demo used HAProxy's on port 9999): each backend's name,
//! address, state, requests served and last health check. The page is complete as served and
//! then keeps itself current by fetching `/stats.json` every second.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::http::{self, escape, Body};
use crate::lb::{Lb, Stats};
use crate::pool::BackendStats;

pub async fn serve(lb: Arc<Lb>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return http::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the stats page only answers GET",
        );
    }
    match req.uri().path() {
        "/" | "/stats" => http::respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page(&lb.stats()),
        ),
        "/stats.json" => match serde_json::to_vec(&lb.stats()) {
            Ok(json) => http::respond(StatusCode::OK, "application/json", json),
            Err(e) => http::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        other => http::text(
            StatusCode::NOT_FOUND,
            format!("no page {other:?} here: the stats are at / and /stats.json"),
        ),
    }
}

fn last_check(b: &BackendStats) -> String {
    match (&b.last_check, b.last_check_ms_ago) {
        (Some(what), Some(ms)) => format!("{what}, {:.1} s ago", ms as f64 / 1000.0),
        _ => "not yet".to_owned(),
    }
}

fn row(b: &BackendStats) -> String {
    format!(
        "<tr class=\"{state}\"><td class=name>{name}</td><td>{addr}</td><td class=state>{state}</td>\
         <td class=num>{served}</td><td class=num>{errors}</td><td class=num>{in_flight}</td><td>{check}</td></tr>\n",
        state = b.state.as_str(),
        name = escape(&b.name),
        addr = escape(&b.addr),
        served = b.served,
        errors = b.errors,
        in_flight = b.in_flight,
        check = escape(&last_check(b)),
    )
}

/// The whole page for `s`.
pub fn page(s: &Stats) -> String {
    let rows: String = s.backends.iter().map(row).collect();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Vassal load balancer: {node}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: .3em .8em; text-align: left; }}
td.num {{ text-align: right; }}
tr.up td.state {{ background: #8e8; }}
tr.checking td.state, tr.draining td.state {{ background: #fe8; }}
tr.down td.state, tr.failed td.state {{ background: #f88; }}
tr.left td.state {{ background: #ccc; }}
</style></head>
<body>
<h1>Vassal load balancer on {node}</h1>
<p>Requests: <span id="requests">{requests}</span>, retried on another backend: <span id="retries">{retries}</span>,
failed: <span id="failed">{failed}</span>. In rotation: <span id="rotation">{rotation}</span>.</p>
<table id="backends">
<thead><tr><th>Backend</th><th>Address</th><th>State</th><th>Served</th><th>Errors</th><th>In flight</th><th>Last health check</th></tr></thead>
<tbody>
{rows}</tbody></table>
<p id="updated">Served at start-up; live updates need JavaScript.</p>
<script>
function esc(s) {{ return String(s).replace(/[&<>"']/g, c => ({{'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}})[c]); }}
function check(b) {{ return b.last_check == null ? 'not yet' : b.last_check + ', ' + (b.last_check_ms_ago / 1000).toFixed(1) + ' s ago'; }}
async function refresh() {{
  try {{
    const s = await (await fetch('/stats.json', {{cache: 'no-store'}})).json();
    document.getElementById('requests').textContent = s.requests;
    document.getElementById('retries').textContent = s.retries;
    document.getElementById('failed').textContent = s.failed;
    document.getElementById('rotation').textContent = s.in_rotation.join(', ') || 'none';
    document.querySelector('#backends tbody').innerHTML = s.backends.map(b =>
      `<tr class="${{esc(b.state)}}"><td class=name>${{esc(b.name)}}</td><td>${{esc(b.addr)}}</td><td class=state>${{esc(b.state)}}</td>` +
      `<td class=num>${{b.served}}</td><td class=num>${{b.errors}}</td><td class=num>${{b.in_flight}}</td><td>${{esc(check(b))}}</td></tr>`).join('\n');
    document.getElementById('updated').textContent = 'Live: updated ' + new Date().toLocaleTimeString() + ' (every second).';
  }} catch (e) {{
    document.getElementById('updated').textContent = 'Cannot reach the balancer: ' + e;
  }}
}}
refresh();
setInterval(refresh, 1000);
</script>
</body></html>
"#,
        node = escape(&s.node),
        requests = s.requests,
        retries = s.retries,
        failed = s.failed,
        rotation = if s.in_rotation.is_empty() {
            "none".to_owned()
        } else {
            escape(&s.in_rotation.join(", "))
        },
    )
}
