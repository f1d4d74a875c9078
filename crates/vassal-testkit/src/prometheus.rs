//! A real Prometheus server (the Debian package's `/usr/bin/prometheus`) for one test: its own
//! config and TSDB in a temp dir, its web listener on a loopback address, scraping the given
//! targets every second; killed by PID on drop. Never the system's service or its data.
//! Also `promtool check metrics` on an exposition.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::http_get;
use crate::net::Loopback;
use crate::process::{bin_from_env, Proc};
use crate::wait::wait_until;

/// The Prometheus binary the tests run: `$PROMETHEUS_BIN` if set, else Debian's.
pub fn prometheus_bin() -> PathBuf {
    bin_from_env("PROMETHEUS_BIN", "/usr/bin/prometheus")
}

/// `promtool`: `$PROMTOOL_BIN` if set, else Debian's.
pub fn promtool_bin() -> PathBuf {
    bin_from_env("PROMTOOL_BIN", "/usr/bin/promtool")
}

/// Pipes `exposition` into `promtool check metrics`: `Ok` if it finds no problem, else what
/// it said.
pub fn promtool_check_metrics(exposition: &str) -> Result<(), String> {
    let bin = promtool_bin();
    assert!(
        bin.exists(),
        "{} not found: run scripts/setup (installs the Debian prometheus package)",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(exposition.as_bytes())
            .map_err(|e| format!("writing to promtool: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for promtool: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One sample of a query's answer: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    /// The series' labels, `__name__`, `instance` and `job` among them.
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

/// A running Prometheus. Dropping it kills it (SIGKILL, by PID) and removes its temp dir.
#[derive(Debug)]
pub struct Prometheus {
    // Declared first so the process is killed before its data directory is removed.
    proc: Proc,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free port of `lo`, scraping `targets`' `/metrics` every second
    /// (job `vassal`), and waits until it says it is ready.
    #[track_caller]
    pub fn start(lo: &Loopback, targets: &[SocketAddr]) -> Prometheus {
        let bin = prometheus_bin();
        assert!(
            bin.exists(),
            "{} not found: run scripts/setup (installs the Debian prometheus package)",
            bin.display()
        );
        let addr = lo.addr();
        let dir = tempfile::Builder::new()
            .prefix("vassal-test-prometheus-")
            .tempdir()
            .expect("creating Prometheus temp dir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: vassal\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={addr}"),
            "--log.level=warn".to_owned(),
        ];
        let proc = Proc::spawn("prometheus", &bin, &args, &[]);
        let mut p = Prometheus {
            proc,
            addr,
            _dir: dir,
        };
        p.wait_ready();
        p
    }

    /// The web listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Prometheus's own log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    #[track_caller]
    fn wait_ready(&mut self) {
        let addr = self.addr;
        let proc = &mut self.proc;
        wait_until(Duration::from_secs(30), "Prometheus to be ready", || {
            proc.assert_running();
            match http_get(addr, "/-/ready", Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("{} {}", r.status, r.body)),
                Err(e) => Err(e),
            }
        });
    }

    /// Runs the instant query `expr` through the HTTP API (`/api/v1/query`): its samples, or
    /// what went wrong.
    pub fn query(&self, expr: &str) -> Result<Vec<PromSample>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let r = http_get(self.addr, &path, Duration::from_secs(5))?;
        if r.status != 200 {
            return Err(format!("{expr}: HTTP {}: {}", r.status, r.body));
        }
        let v: Value =
            serde_json::from_str(&r.body).map_err(|e| format!("{expr}: {e}: {}", r.body))?;
        let result = v["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("{expr}: no data.result in {}", r.body))?;
        result
            .iter()
            .map(|s| {
                let labels = s["metric"].as_object().cloned().unwrap_or_default();
                let value = s["value"][1]
                    .as_str()
                    .and_then(|t| t.parse::<f64>().ok())
                    .ok_or_else(|| format!("{expr}: no value in {s}"))?;
                Ok(PromSample { labels, value })
            })
            .collect()
    }
}

/// Percent-encodes everything but unreserved characters, for a query string.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
