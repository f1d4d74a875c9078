//! The live cluster page (issue 13), as a person sees it in a browser: a 5-node `vassal demo`
//! (its lb node serves the page), one node killed with `kill -9`, and the page afterwards
//! showing it failed while the map keeps one point per alive node. Screenshots before and
//! after are kept in `target/artifacts/` (cluster-ui-before.png, cluster-ui-failed.png).
//! Run `cargo build --release --bin vassal` first.

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/demo.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::{fresh_base, started, Demo};
use vassal_testkit::{http_get, vassal_cli, wait_until, Loopback};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

fn cluster(ui: SocketAddr) -> Result<Value, String> {
    let r = http_get(ui, "/cluster.json", HTTP_TIMEOUT)?;
    if r.status != 200 {
        return Err(format!("HTTP {}: {}", r.status, r.body));
    }
    serde_json::from_str(&r.body).map_err(|e| format!("cluster.json: {e}: {}", r.body))
}

fn status_of<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["status"]
        .as_str()
}

fn point_names(c: &Value) -> Vec<String> {
    let mut names: Vec<String> = c["map"]["points"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The dumped DOM's table row for `name` (up to its `</tr>`).
fn row<'a>(dom: &'a str, name: &str) -> &'a str {
    let key = format!("data-name=\"{name}\"><td");
    let start = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no table row for {name}:\n{dom}"));
    let start = dom[..start].rfind("<tr").unwrap_or(start);
    let rest = &dom[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

// Issue 13, "must show": headless Chromium loads the cluster page of a 5-node demo, a node is
// killed, and the screenshot taken afterwards shows it failed; the map has one point per alive
// node.
#[test]
fn the_cluster_page_shows_a_killed_node_failed_and_maps_only_the_alive_ones() {
    let base = fresh_base();
    let lo = Loopback::at(base);
    let ui = lo.addr();
    let log_dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(&[
        "-web=4".into(),
        format!("-bind-base={base}"),
        format!("-lb-listen={}", lo.addr()),
        format!("-lb-stats={}", lo.addr()),
        format!("-ui-addr={ui}"),
        format!("-log-dir={}", log_dir.path().display()),
    ]);
    let out = demo.wait_started(5);
    let url = format!("http://{ui}/");
    assert!(out.contains(&url), "the demo did not print {url}:\n{out}");
    let pids = started(&out);
    let all = ["lb", "web-1", "web-2", "web-3", "web-4"];

    // Every member alive, and a coordinate from each (the lb node has probed them all).
    wait_until(
        Duration::from_secs(40),
        "five alive members, each with a known coordinate, on the page's JSON",
        || {
            let c = cluster(ui)?;
            let known = c["map"]["points"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p["known"] == true).count());
            if point_names(&c) == all && known == 5 {
                Ok(())
            } else {
                Err(format!("{c:#}"))
            }
        },
    );
    let c = cluster(ui).unwrap();
    let web1 = c["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "web-1")
        .unwrap();
    assert_eq!(web1["tags"]["role"], "web", "{c:#}");
    assert_eq!(web1["serf_protocol"][2], 5, "{c:#}");
    assert!(c["stats"]["health_score"].is_number(), "{c:#}");

    // A user event, to be seen streaming in.
    let lb_rpc = SocketAddr::from((base, 7373));
    let sent = vassal_cli(lb_rpc, &["event", "deploy", "v42"]);
    assert_eq!(sent.code, 0, "{}", sent.combined());

    let dom = chromium::chromium_sized(&url, "cluster-ui-before", 1280, 760, None);
    // The rows and points are drawn by the page's script, from the data it was served with.
    assert!(
        dom.contains("As served at"),
        "the page's script did not run:\n{dom}"
    );
    for n in all {
        assert!(
            row(&dom, n).contains("<td class=\"status\">alive</td>"),
            "{n} not shown alive:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("<circle class=\"pt").count(),
        5,
        "one point per node:\n{dom}"
    );

    // kill -9 one web node (our demo's own child, by the PID it printed).
    let victim = "web-4";
    kill(Pid::from_raw(pids[victim]), Signal::SIGKILL).unwrap();
    wait_until(
        Duration::from_secs(40),
        "the page's JSON to show web-4 failed and off the map",
        || {
            let c = cluster(ui)?;
            if status_of(&c, victim) == Some("failed") && point_names(&c) == all[..4] {
                Ok(())
            } else {
                Err(format!("{c:#}"))
            }
        },
    );

    let dom = chromium::chromium_sized(&url, "cluster-ui-failed", 1280, 760, None);
    let failed = row(&dom, victim);
    assert!(
        failed.contains("class=\"member failed\"")
            && failed.contains("<td class=\"status\">failed</td>"),
        "{victim} not shown failed: {failed}\n{dom}"
    );
    for n in &all[..4] {
        assert!(
            row(&dom, n).contains("<td class=\"status\">alive</td>"),
            "{n} not shown alive:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("<circle class=\"pt").count(),
        4,
        "one point per alive node:\n{dom}"
    );
    assert!(
        !dom.contains(&format!("<g class=\"node\" data-name=\"{victim}\">")),
        "{victim} is still on the map:\n{dom}"
    );
    // The event stream's history reached the page: the failure and the user event.
    assert!(
        dom.contains("<span class=\"kind\">member-failed</span>") && dom.contains(victim),
        "no member-failed event listed:\n{dom}"
    );
    assert!(
        dom.contains("<span class=\"kind\">user</span><b>deploy</b>"),
        "the user event is not listed:\n{dom}"
    );

    demo.interrupt();
    let status = demo.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", demo.output());
}

// The page's server bounds what browsers can make it hold: event streams past the cap are
// refused with 503 (and the JSON still answers), and an unknown path says where the page is.
#[test]
fn the_event_streams_are_capped_and_the_json_still_answers() {
    let base = fresh_base();
    let lo = Loopback::at(base);
    let ui = lo.addr();
    let log_dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&[
        "-web=1".into(),
        format!("-bind-base={base}"),
        format!("-lb-listen={}", lo.addr()),
        format!("-lb-stats={}", lo.addr()),
        format!("-ui-addr={ui}"),
        format!("-log-dir={}", log_dir.path().display()),
    ]);
    demo.wait_started(2);
    wait_until(Duration::from_secs(20), "the cluster page", || cluster(ui));
    // Open 32 streams (the cap) and keep them open; the 33rd is refused.
    let mut open = Vec::new();
    for i in 0..32 {
        open.push(open_stream(ui).unwrap_or_else(|e| panic!("stream {i} should be accepted: {e}")));
    }
    // A user event arrives on an open stream.
    let sent = vassal_cli(SocketAddr::from((base, 7373)), &["event", "deploy", "v7"]);
    assert_eq!(sent.code, 0, "{}", sent.combined());
    read_until(&mut open[0], "\"name\":\"deploy\",\"payload\":\"v7\"")
        .unwrap_or_else(|e| panic!("the user event did not stream in: {e}"));
    let refused = http_get(ui, "/events", HTTP_TIMEOUT).unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("event streams are open"),
        "{}",
        refused.body
    );
    assert!(cluster(ui).is_ok());
    // Closing them frees the slots.
    drop(open);
    wait_until(Duration::from_secs(10), "a stream slot to free up", || {
        open_stream(ui).map(drop)
    });
    let missing = http_get(ui, "/nope", HTTP_TIMEOUT).unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("/cluster.json"), "{}", missing.body);
}

/// Opens `/events` and reads its header and first frame; the connection stays open while the
/// returned stream is held.
fn open_stream(ui: SocketAddr) -> Result<std::net::TcpStream, String> {
    use std::io::Write;
    let mut s =
        std::net::TcpStream::connect_timeout(&ui, HTTP_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET /events HTTP/1.1\r\nHost: {ui}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let head = read_until(&mut s, "retry: 2000")?;
    if !head.starts_with("HTTP/1.1 200") || !head.contains("text/event-stream") {
        return Err(head);
    }
    Ok(s)
}

/// Reads `s` until `needle` has arrived; what was read.
fn read_until(s: &mut std::net::TcpStream, needle: &str) -> Result<String, String> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("{e}; read so far: {}", String::from_utf8_lossy(&got)))?;
        if n == 0 {
            return Err(format!("closed: {}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}
