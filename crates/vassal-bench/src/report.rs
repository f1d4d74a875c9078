//! Records (one JSON line per scenario, to stdout and appended to `--out`), the time and
//! percentile helpers the scenarios share, and the Markdown summary of a results file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::resources::round;

/// Wall-clock seconds since the epoch: the clock the handlers' `$EPOCHREALTIME` uses, so RPC
/// and handler times compare directly.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for epoch seconds `secs`.
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// The time by which `ceil(frac * expected)` of the expected agents had the property; `None`
/// if fewer ever had it.
pub fn pct_time(times: &[f64], expected: usize, frac: f64) -> Option<f64> {
    let k = ((frac * expected as f64 - 1e-9).ceil() as usize).max(1);
    let mut s = times.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(k - 1).copied()
}

/// first / 50 % / 99 % / 100 % of `expected` agents, relative to `t0`, keys prefixed.
pub fn spread(prefix: &str, times: &[f64], expected: usize, t0: f64) -> Map<String, Value> {
    let rel: Vec<f64> = times.iter().map(|t| t - t0).collect();
    let r = |x: Option<f64>| json!(x.map(|x| round(x, 4)));
    let mut m = Map::new();
    m.insert(format!("{prefix}expected"), json!(expected));
    m.insert(format!("{prefix}observed"), json!(rel.len()));
    m.insert(
        format!("{prefix}t_first_s"),
        r(rel.iter().copied().reduce(f64::min)),
    );
    m.insert(format!("{prefix}t50_s"), r(pct_time(&rel, expected, 0.5)));
    m.insert(format!("{prefix}t99_s"), r(pct_time(&rel, expected, 0.99)));
    m.insert(format!("{prefix}t100_s"), r(pct_time(&rel, expected, 1.0)));
    m
}

/// Where records go: stdout, and appended to `--out` if given.
pub struct Sink {
    file: Option<File>,
}

impl Sink {
    pub fn open(path: Option<&Path>) -> Result<Sink, String> {
        let file = match path {
            None => None,
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("opening {}: {e}", p.display()))?,
            ),
        };
        Ok(Sink { file })
    }

    pub fn emit(&mut self, rec: &Map<String, Value>) {
        let line = Value::Object(rec.clone()).to_string();
        println!("{line}");
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
                eprintln!("cluster-bench: writing the results file: {e}");
            }
        }
    }
}

/// One row of the summary: a figure read from one scenario's records.
struct Figure {
    label: &'static str,
    scenario: &'static str,
    field: &'static str,
}

const FIGURES: &[Figure] = &[
    Figure {
        label: "private memory (USS) per agent, MiB",
        scenario: "resources",
        field: "uss_mib_median",
    },
    Figure {
        label: "PSS per agent, MiB",
        scenario: "resources",
        field: "pss_mib_median",
    },
    Figure {
        label: "RSS per agent, MiB",
        scenario: "resources",
        field: "rss_mib_median",
    },
    Figure {
        label: "idle CPU per agent, % of a core",
        scenario: "resources",
        field: "cpu_pct_mean",
    },
    Figure {
        label: "idle lo rx per agent, bytes/s",
        scenario: "resources",
        field: "lo_bytes_per_s_per_agent",
    },
    Figure {
        label: "convergence t50, s",
        scenario: "convergence",
        field: "t50_s",
    },
    Figure {
        label: "convergence t100, s",
        scenario: "convergence",
        field: "t100_s",
    },
    Figure {
        label: "PSS of all agents, MiB",
        scenario: "resources",
        field: "pss_mib_total",
    },
    Figure {
        label: "false `member-failed` handled before the kill",
        scenario: "failure",
        field: "false_failed_before",
    },
    Figure {
        label: "failure seen by all observers (t100), s",
        scenario: "failure",
        field: "t100_s",
    },
    Figure {
        label: "leave seen by all observers (t100), s",
        scenario: "leave",
        field: "t100_s",
    },
    Figure {
        label: "user event handled by all (t100), s",
        scenario: "event",
        field: "t100_s",
    },
    Figure {
        label: "query responses from all (t100), s",
        scenario: "query",
        field: "resp_t100_s",
    },
    Figure {
        label: "machine CPU busy during idle window, %",
        scenario: "resources",
        field: "machine_cpu_busy_pct",
    },
];

/// (start mode, join mode, N) → kind → scenario → records.
type Groups = BTreeMap<(u8, String, u64), BTreeMap<String, BTreeMap<String, Vec<Value>>>>;

fn start_order(s: &str) -> u8 {
    match s {
        "sequential" => 0,
        "burst" => 1,
        _ => 2,
    }
}

/// Reads a results file; unreadable lines are counted, not fatal.
fn load(path: &Path) -> Result<(Groups, usize), String> {
    let f = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut groups = Groups::new();
    let mut bad = 0;
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| format!("reading {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            bad += 1;
            continue;
        };
        let (Some(scenario), Some(kind), Some(start), Some(n)) = (
            v.get("scenario").and_then(Value::as_str),
            v.get("kind").and_then(Value::as_str),
            v.get("start_mode").and_then(Value::as_str),
            v.get("n").and_then(Value::as_u64),
        ) else {
            continue; // the meta record, or someone else's
        };
        let join = v
            .get("join_mode")
            .and_then(Value::as_str)
            .unwrap_or("join")
            .to_owned();
        let key = (start_order(start), format!("{start}\u{0}{join}"), n);
        groups
            .entry(key)
            .or_default()
            .entry(kind.to_owned())
            .or_default()
            .entry(scenario.to_owned())
            .or_default()
            .push(v);
    }
    Ok((groups, bad))
}

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Values of a figure and how many records lacked it (the scenario did not complete).
fn values(
    by_kind: &BTreeMap<String, BTreeMap<String, Vec<Value>>>,
    kind: &str,
    f: &Figure,
) -> (Vec<f64>, usize) {
    let recs = by_kind
        .get(kind)
        .and_then(|s| s.get(f.scenario))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut vals = Vec::new();
    let mut missing = 0;
    for r in recs {
        match r.get(f.field).and_then(Value::as_f64) {
            Some(x) => vals.push(x),
            None => missing += 1,
        }
    }
    (vals, missing)
}

/// The Markdown summary of a results file.
pub fn summarize(path: &Path) -> Result<String, String> {
    let (groups, bad) = load(path)?;
    let mut out = String::new();
    out.push_str(&format!("# cluster-bench summary: {}\n\n", path.display()));
    out.push_str(
        "Medians over all records of a figure (events and queries: every event/query of every \
         rep). `max` is the largest single record; ⚠ marks a max over 2× its median (a tail: \
         often anti-entropy repair). `n` = records (`+k` = k records without the figure, e.g. \
         not every agent reached). Memory and CPU are per agent; CPU 100 = one core.\n",
    );
    if groups.is_empty() {
        out.push_str("\n(no scenario records)\n");
    }
    for ((_, start_join, n), by_kind) in &groups {
        let (start, join) = start_join.split_once('\u{0}').unwrap_or((start_join, ""));
        let mode = if start == "burst" {
            format!("burst start ({join})")
        } else {
            format!("{start} start")
        };
        let lifetimes = |k: &str| {
            by_kind
                .get(k)
                .and_then(|s| s.get("convergence"))
                .map_or(0, Vec::len)
        };
        let unconverged = |k: &str| {
            by_kind
                .get(k)
                .and_then(|s| s.get("convergence"))
                .map_or(0, |v| {
                    v.iter()
                        .filter(|r| r.get("converged").and_then(Value::as_bool) != Some(true))
                        .count()
                })
        };
        out.push_str(&format!(
            "\n## {mode}, N={n}\n\ncluster lifetimes: Go {} ({} not converged), Vassal {} ({} not converged)\n\n",
            lifetimes("go"),
            unconverged("go"),
            lifetimes("vassal"),
            unconverged("vassal"),
        ));
        out.push_str(
            "| figure | Go median | Vassal median | Vassal/Go | Go max | Vassal max | n (Go/Vassal) |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---|\n");
        for f in FIGURES {
            let (g, gm) = values(by_kind, "go", f);
            let (v, vm) = values(by_kind, "vassal", f);
            let (gmed, vmed) = (median(&g), median(&v));
            let cell = |m: Option<f64>| m.map_or("–".to_owned(), fmt_num);
            let ratio = match (gmed, vmed) {
                (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
                _ => "–".to_owned(),
            };
            let max_cell = |vals: &[f64], med: Option<f64>| {
                let Some(mx) = vals.iter().copied().reduce(f64::max) else {
                    return "–".to_owned();
                };
                let flag = med.is_some_and(|m| m > 0.0 && mx > 2.0 * m);
                format!("{}{}", fmt_num(mx), if flag { " ⚠" } else { "" })
            };
            let count = |vals: &[f64], missing: usize| {
                if missing > 0 {
                    format!("{}+{missing}", vals.len())
                } else {
                    vals.len().to_string()
                }
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {}/{} |\n",
                f.label,
                cell(gmed),
                cell(vmed),
                ratio,
                max_cell(&g, gmed),
                max_cell(&v, vmed),
                count(&g, gm),
                count(&v, vm),
            ));
        }
    }
    if bad > 0 {
        out.push_str(&format!("\n({bad} unreadable lines skipped)\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let t = [3.0, 1.0, 2.0];
        assert_eq!(pct_time(&t, 3, 1.0), Some(3.0));
        assert_eq!(pct_time(&t, 3, 0.5), Some(2.0));
        assert_eq!(pct_time(&t, 4, 1.0), None);
        assert_eq!(pct_time(&t, 100, 0.01), Some(1.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn summary_of_a_small_file() {
        let path = std::env::temp_dir().join(format!("cb-summary-{}.jsonl", std::process::id()));
        let mut lines = vec![r#"{"scenario":"meta"}"#.to_owned(), "not json".to_owned()];
        for (kind, uss, t100) in [
            ("go", 10.0, 1.0),
            ("go", 12.0, 5.0),
            ("vassal", 3.0, 1.0),
            ("vassal", 3.0, 1.0),
        ] {
            let base =
                format!(r#""kind":"{kind}","start_mode":"sequential","join_mode":"join","n":5"#);
            lines.push(format!(
                r#"{{{base},"scenario":"resources","uss_mib_median":{uss}}}"#
            ));
            lines.push(format!(
                r#"{{{base},"scenario":"convergence","converged":true,"t100_s":{t100}}}"#
            ));
        }
        std::fs::write(&path, lines.join("\n")).unwrap();
        let s = summarize(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(s.contains("## sequential start, N=5"), "{s}");
        assert!(
            s.contains("| private memory (USS) per agent, MiB | 11.00 | 3.00 | 0.27 | 12.00 | 3.00 | 2/2 |"),
            "{s}"
        );
        assert!(
            s.contains("| convergence t100, s | 3.00 | 1.00 | 0.33 | 5.00 | 1.00 | 2/2 |"),
            "{s}"
        );
        assert!(s.contains("1 unreadable lines"), "{s}");
    }
}
