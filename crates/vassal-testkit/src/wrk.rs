//! Bounded HTTP load with `wrk` (the Debian package): a fixed number of connections for a fixed
//! time against a loopback URL, and its report parsed (requests, failures, latency).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::process::{bin_from_env, Proc};

/// The wrk binary: `$WRK_BIN` if set, else Debian's.
pub fn wrk_bin() -> PathBuf {
    bin_from_env("WRK_BIN", "/usr/bin/wrk")
}

/// What one wrk run reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkReport {
    /// Responses received (any status).
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Responses with a status of 400 or more (wrk's "Non-2xx or 3xx responses").
    pub bad_status: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// wrk's whole output, for failure messages.
    pub raw: String,
}

impl WrkReport {
    /// Requests that did not get a good response: bad statuses plus socket errors.
    pub fn failed(&self) -> u64 {
        self.bad_status + self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }

    /// Parses wrk 4's output (run with `--latency`).
    pub fn parse(raw: &str) -> Result<WrkReport, String> {
        let mut r = WrkReport {
            raw: raw.to_owned(),
            ..WrkReport::default()
        };
        let mut saw_requests = false;
        for line in raw.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["50%", v] => r.p50_ms = latency_ms(v)?,
                ["99%", v] => r.p99_ms = latency_ms(v)?,
                [n, "requests", "in", ..] => {
                    r.requests = n.parse().map_err(|_| format!("bad count in {line:?}"))?;
                    saw_requests = true;
                }
                ["Requests/sec:", v] => {
                    r.requests_per_sec = v.parse().map_err(|_| format!("bad rate in {line:?}"))?
                }
                ["Non-2xx", "or", "3xx", "responses:", n] => {
                    r.bad_status = n.parse().map_err(|_| format!("bad count in {line:?}"))?
                }
                ["Socket", "errors:", ..] => {
                    // Socket errors: connect 0, read 3, write 0, timeout 0
                    let rest = line.trim_start_matches("Socket errors:");
                    for part in rest.split(',') {
                        let kv: Vec<&str> = part.split_whitespace().collect();
                        let [k, v] = kv.as_slice() else {
                            return Err(format!("bad socket errors line {line:?}"));
                        };
                        let v: u64 = v.parse().map_err(|_| format!("bad count in {line:?}"))?;
                        match *k {
                            "connect" => r.connect_errors = v,
                            "read" => r.read_errors = v,
                            "write" => r.write_errors = v,
                            "timeout" => r.timeouts = v,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if !saw_requests {
            return Err(format!("no request count in wrk's output:\n{raw}"));
        }
        Ok(r)
    }
}

fn latency_ms(v: &str) -> Result<f64, String> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("latency {v:?} has no unit"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("bad latency {v:?}"))?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return Err(format!("unknown latency unit in {v:?}")),
    })
}

/// A wrk run in the background. Dropping it kills wrk.
#[derive(Debug)]
pub struct Wrk {
    proc: Proc,
    duration: Duration,
    started: Instant,
}

impl Wrk {
    /// Starts `wrk --latency -tTHREADS -cCONNECTIONS -dDURATION URL` (loopback URLs only).
    #[track_caller]
    pub fn spawn(url: &str, threads: u32, connections: u32, duration: Duration) -> Wrk {
        Wrk::spawn_with(url, threads, connections, duration, &[])
    }

    /// [`Wrk::spawn`] with more wrk arguments before the URL, e.g.
    /// `["-H", "Connection: close"]` for a connection per request.
    #[track_caller]
    pub fn spawn_with(
        url: &str,
        threads: u32,
        connections: u32,
        duration: Duration,
        extra: &[&str],
    ) -> Wrk {
        assert!(
            url.starts_with("http://127.") || url.starts_with("https://127."),
            "{url}: load goes only to 127.0.0.0/8"
        );
        let bin = wrk_bin();
        assert!(
            bin.exists(),
            "{} not found: run scripts/setup (installs the Debian wrk package)",
            bin.display()
        );
        let args = vec![
            "--latency".to_owned(),
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{}s", duration.as_secs().max(1)),
            "--timeout".to_owned(),
            "2s".to_owned(),
        ];
        let mut args = args;
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(url.to_owned());
        Wrk {
            proc: Proc::spawn("wrk", &bin, &args, &[]),
            duration,
            started: Instant::now(),
        }
    }

    /// Runs wrk to the end and returns its report.
    #[track_caller]
    pub fn run(url: &str, threads: u32, connections: u32, duration: Duration) -> WrkReport {
        Wrk::spawn(url, threads, connections, duration).wait()
    }

    /// How long since wrk started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for wrk to finish (its duration plus 15 s at most) and parses its report.
    #[track_caller]
    pub fn wait(mut self) -> WrkReport {
        let deadline = self.duration + Duration::from_secs(15);
        let status = self.proc.wait_exit(deadline).unwrap_or_else(|| {
            panic!(
                "wrk did not finish within {deadline:?}; output so far:\n{}",
                self.proc.log()
            )
        });
        let out = self.proc.log();
        assert!(status.success(), "wrk exited with {status}:\n{out}");
        WrkReport::parse(&out).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 5s test @ http://127.0.0.1:8080/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   410.25us  120.11us   5.02ms   90.10%
    Req/Sec    19.10k     1.20k   21.00k    70.00%
  Latency Distribution
     50%  390.00us
     75%  450.00us
     90%  520.00us
     99%    1.21ms
  95000 requests in 5.00s, 7.43MB read
  Socket errors: connect 1, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 12
Requests/sec:  19000.55
Transfer/sec:      1.49MB
";

    #[test]
    fn parses_wrks_report() {
        let r = WrkReport::parse(OUTPUT).unwrap();
        assert_eq!(r.requests, 95000);
        assert_eq!(r.requests_per_sec, 19000.55);
        assert_eq!(r.p50_ms, 0.39);
        assert_eq!(r.p99_ms, 1.21);
        assert_eq!(
            (r.connect_errors, r.read_errors, r.write_errors, r.timeouts),
            (1, 3, 0, 2)
        );
        assert_eq!(r.bad_status, 12);
        assert_eq!(r.failed(), 18);
    }

    #[test]
    fn a_clean_run_has_no_failures() {
        let clean: String = OUTPUT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(WrkReport::parse(&clean).unwrap().failed(), 0);
    }

    #[test]
    fn output_without_a_count_is_an_error() {
        assert!(WrkReport::parse("unable to connect to 127.0.0.1:1").is_err());
    }
}
