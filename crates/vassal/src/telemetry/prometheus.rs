//! The Prometheus page (`-metrics-addr`): every series in the text exposition format, named
//! as go-metrics' Prometheus sink names them for Consul, served at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use vassal_roles::http::{respond, serve, text, ServeLimits};

use super::registry::{Kind, Registry, Value};

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The family name for facade key `name`, and the factor its values are scaled by.
///
/// go-metrics joins the key with `_` and turns ` .=-/` into `_` (`serf.member.join` →
/// `serf_member_join`). Where that name would fail `promtool check metrics`, it is changed
/// as little as passes: a camelCase word is split (`memberlist.probeNode` →
/// `memberlist_probe_node`), and a millisecond figure named for its unit is given in seconds
/// (`serf.coordinate.adjustment-ms` → `serf_coordinate_adjustment_seconds`, divided by
/// 1000). Any other character a name may not hold becomes `_`.
pub fn family_name(name: &str) -> (String, f64) {
    let mut out = String::with_capacity(name.len() + 8);
    let mut prev_lower = false;
    for c in name.chars() {
        match c {
            'A'..='Z' if prev_lower => {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            }
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | ':' => out.push(c),
            _ => out.push('_'),
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    match out.strip_suffix("_ms") {
        Some(base) => (format!("{base}_seconds"), 0.001),
        None => (out, 1.0),
    }
}

/// A label name the format accepts.
fn label_name(k: &str) -> String {
    let mut out: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) || out.starts_with("__") {
        out.insert(0, 'l');
    }
    out
}

/// `{k="v",…}` with the format's escapes, or nothing without labels.
fn labels(l: &[(String, String)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (n, (k, v)) in l.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&label_name(k));
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// A float as the format spells it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// One family: its type, the dotted name it came from, and its lines.
struct Family {
    kind: Kind,
    help: String,
    lines: Vec<String>,
}

/// The page: every family sorted by name, each with `# HELP` (the Go name) and `# TYPE`.
///
/// Counters are typed `untyped`: the format's linter wants a counter's name to end in
/// `_total`, and the names Consul's dashboards query (`serf_member_join`) do not. Timers and
/// samples are summaries (`_sum`, `_count`).
pub fn render(registry: &Registry) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for s in registry.all() {
        let (name, scale) = family_name(&s.name);
        let fam = families.entry(name.clone()).or_insert_with(|| Family {
            kind: s.kind,
            help: s.name.clone(),
            lines: Vec::new(),
        });
        // Two keys that flatten to one name with different kinds: the first one wins.
        if fam.kind != s.kind {
            continue;
        }
        let l = labels(&s.labels);
        match s.value() {
            Value::Counter(n) if scale == 1.0 => fam.lines.push(format!("{name}{l} {n}")),
            #[allow(clippy::cast_precision_loss)]
            Value::Counter(n) => fam
                .lines
                .push(format!("{name}{l} {}", float(n as f64 * scale))),
            Value::Gauge(v) => fam.lines.push(format!("{name}{l} {}", float(v * scale))),
            Value::Summary(n, sum) => {
                fam.lines
                    .push(format!("{name}_sum{l} {}", float(sum * scale)));
                fam.lines.push(format!("{name}_count{l} {n}"));
            }
        }
    }
    let mut out = String::new();
    for (name, f) in &mut families {
        f.lines.sort();
        let kind = match f.kind {
            Kind::Counter => "untyped",
            Kind::Gauge => "gauge",
            Kind::Histogram => "summary",
        };
        let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for l in &f.lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Binds `addr` for the page.
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("Failed to start the metrics listener on {addr}: {e}"))
}

/// Serves the page on `listener` until `stop` turns true (or its sender is dropped).
pub fn spawn(listener: TcpListener, registry: Arc<Registry>, stop: watch::Receiver<bool>) {
    let limits = ServeLimits {
        max_conns: 64,
        ..ServeLimits::default()
    };
    tokio::spawn(serve(
        "-metrics-addr",
        listener,
        limits,
        move |req, _peer: SocketAddr| {
            let registry = registry.clone();
            async move {
                if req.uri().path() != "/metrics" {
                    return text(
                        StatusCode::NOT_FOUND,
                        "not found; the metrics are at /metrics",
                    );
                }
                if req.method() != Method::GET && req.method() != Method::HEAD {
                    return text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics");
                }
                respond(StatusCode::OK, CONTENT_TYPE, render(&registry))
            }
        },
        stop,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_flatten_as_go_metrics_does_and_pass_the_linter() {
        assert_eq!(
            family_name("serf.member.join"),
            ("serf_member_join".into(), 1.0)
        );
        assert_eq!(
            family_name("serf.queue.Intent"),
            ("serf_queue_Intent".into(), 1.0)
        );
        assert_eq!(
            family_name("memberlist.probeNode"),
            ("memberlist_probe_node".into(), 1.0)
        );
        assert_eq!(
            family_name("serf.coordinate.adjustment-ms"),
            ("serf_coordinate_adjustment_seconds".into(), 0.001)
        );
        assert_eq!(family_name("9x/y=z").0, "_9x_y_z");
    }

    #[test]
    fn the_page_has_help_type_and_one_line_per_series() {
        use super::super::inmem::Inmem;
        use super::super::registry::{Sinks, VassalRecorder};
        let reg = Arc::new(Registry::new(
            "serf-agent",
            "",
            Sinks {
                inmem: Inmem::new(),
                streams: vec![],
            },
        ));
        let rec = VassalRecorder(reg.clone());
        metrics::with_local_recorder(&rec, || {
            metrics::counter!("serf.events").increment(2);
            metrics::counter!("serf.events", "name" => "deploy").increment(2);
            metrics::gauge!("memberlist.health.score").set(1.0);
            metrics::histogram!("memberlist.probeNode").record(1.5);
            metrics::histogram!("memberlist.probeNode").record(0.5);
        });
        assert_eq!(
            render(&reg),
            "# HELP memberlist_health_score memberlist.health.score\n\
             # TYPE memberlist_health_score gauge\n\
             memberlist_health_score 1\n\
             # HELP memberlist_probe_node memberlist.probeNode\n\
             # TYPE memberlist_probe_node summary\n\
             memberlist_probe_node_count 2\n\
             memberlist_probe_node_sum 2\n\
             # HELP serf_events serf.events\n\
             # TYPE serf_events untyped\n\
             serf_events 2\n\
             serf_events{name=\"deploy\"} 2\n"
        );
    }

    #[test]
    fn labels_are_escaped() {
        let l = vec![
            ("name".into(), "a\"b\\c\nd".into()),
            ("1x".into(), "v".into()),
        ];
        assert_eq!(labels(&l), r#"{name="a\"b\\c\nd",l1x="v"}"#);
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(1.5), "1.5");
    }
}
