//! go-metrics' `InmemSink` as Serf's agent sets it up (10 s intervals, the last minute kept)
//! and the text its `InmemSignal` writes on SIGUSR1.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::registry::lock;
use crate::logging::civil_from_days;

/// Serf's agent: `NewInmemSink(10*time.Second, time.Minute)`.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How many intervals a minute holds.
const KEPT: usize = 6;

/// go-metrics' `AggregateSample`.
#[derive(Debug, Clone, Copy)]
struct Aggregate {
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    /// When the last value came: wall clock and time since the sink started (Go prints both).
    last: (SystemTime, Duration),
}

impl Aggregate {
    fn new(at: (SystemTime, Duration)) -> Aggregate {
        Aggregate {
            count: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: 0.0,
            max: 0.0,
            last: at,
        }
    }

    fn ingest(&mut self, v: f64, at: (SystemTime, Duration)) {
        self.count = self.count.saturating_add(1);
        self.sum += v;
        self.sum_sq += v * v;
        if v < self.min || self.count == 1 {
            self.min = v;
        }
        if v > self.max || self.count == 1 {
            self.max = v;
        }
        self.last = at;
    }

    #[allow(clippy::cast_precision_loss)]
    fn stddev(&self) -> f64 {
        let n = self.count as f64;
        let num = n * self.sum_sq - self.sum * self.sum;
        let div = n * (n - 1.0);
        if div == 0.0 {
            0.0
        } else {
            (num / div).sqrt()
        }
    }

    /// go-metrics' `AggregateSample.String`.
    #[allow(clippy::cast_precision_loss)]
    fn render(&self) -> String {
        let last = go_time(self.last.0, Some(self.last.1));
        if self.count == 0 {
            "Count: 0".to_owned()
        } else if self.stddev() == 0.0 {
            format!(
                "Count: {} Sum: {:.3} LastUpdated: {last}",
                self.count, self.sum
            )
        } else {
            format!(
                "Count: {} Min: {:.3} Mean: {:.3} Max: {:.3} Stddev: {:.3} Sum: {:.3} \
                 LastUpdated: {last}",
                self.count,
                self.min,
                self.sum / self.count as f64,
                self.max,
                self.stddev(),
                self.sum
            )
        }
    }
}

/// One interval's figures, by go-metrics name.
#[derive(Debug, Default)]
struct Interval {
    /// Unix seconds the interval starts at.
    start: u64,
    gauges: BTreeMap<String, f64>,
    counters: BTreeMap<String, Aggregate>,
    samples: BTreeMap<String, Aggregate>,
}

/// Adds `v` to `name`'s aggregate in `all`, new if need be (its name copied only then: every
/// update of a busy series, such as the balancer's per-request counters, comes here).
fn ingest(all: &mut BTreeMap<String, Aggregate>, name: &str, v: f64, at: (SystemTime, Duration)) {
    match all.get_mut(name) {
        Some(a) => a.ingest(v, at),
        None => {
            let mut a = Aggregate::new(at);
            a.ingest(v, at);
            all.insert(name.to_owned(), a);
        }
    }
}

/// The in-memory sink.
#[derive(Debug)]
pub struct Inmem {
    started: Instant,
    intervals: Mutex<VecDeque<Interval>>,
}

impl Default for Inmem {
    fn default() -> Self {
        Inmem::new()
    }
}

impl Inmem {
    /// An empty sink.
    pub fn new() -> Inmem {
        Inmem {
            started: Instant::now(),
            intervals: Mutex::new(VecDeque::with_capacity(KEPT + 1)),
        }
    }

    fn now(&self) -> (SystemTime, Duration) {
        (SystemTime::now(), self.started.elapsed())
    }

    /// Runs `f` on the interval `at` falls in, opening it (and forgetting the oldest past a
    /// minute) when it is new: go-metrics' `getInterval`.
    fn with_interval<R>(&self, at: SystemTime, f: impl FnOnce(&mut Interval) -> R) -> R {
        let start = interval_start(at);
        let mut all = lock(&self.intervals);
        if all.back().map(|i| i.start) != Some(start) {
            all.push_back(Interval {
                start,
                ..Interval::default()
            });
            while all.len() > KEPT {
                all.pop_front();
            }
        }
        match all.back_mut() {
            Some(i) => f(i),
            None => f(&mut Interval::default()),
        }
    }

    /// A gauge's new value.
    pub fn gauge(&self, name: &str, v: f64) {
        let (wall, _) = self.now();
        self.with_interval(wall, |i| match i.gauges.get_mut(name) {
            Some(g) => *g = v,
            None => {
                i.gauges.insert(name.to_owned(), v);
            }
        });
    }

    /// A counter's increment.
    pub fn counter(&self, name: &str, v: f64) {
        let at = self.now();
        self.with_interval(at.0, |i| ingest(&mut i.counters, name, v, at));
    }

    /// A sample (a timer, in milliseconds).
    pub fn sample(&self, name: &str, v: f64) {
        let at = self.now();
        self.with_interval(at.0, |i| ingest(&mut i.samples, name, v, at));
    }

    /// `InmemSignal.dumpStats`: every interval but the one still being aggregated, gauges,
    /// counters then samples, one line each (sorted by name; Go's map order is random).
    pub fn dump(&self) -> String {
        // Like go-metrics' `Data`, make sure the current interval exists, so the last one
        // skipped is the one still open.
        self.with_interval(SystemTime::now(), |_| ());
        let all = lock(&self.intervals);
        let mut out = String::new();
        let done = all.len().saturating_sub(1);
        for intv in all.iter().take(done) {
            let t = go_time(UNIX_EPOCH + Duration::from_secs(intv.start), None);
            for (name, v) in &intv.gauges {
                let _ = writeln!(out, "[{t}][G] '{name}': {v:.3}");
            }
            for (name, agg) in &intv.counters {
                let _ = writeln!(out, "[{t}][C] '{name}': {}", agg.render());
            }
            for (name, agg) in &intv.samples {
                let _ = writeln!(out, "[{t}][S] '{name}': {}", agg.render());
            }
        }
        out
    }
}

/// The Unix second the interval holding `at` starts at (Go's `time.Truncate`).
fn interval_start(at: SystemTime) -> u64 {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs - secs % INTERVAL.as_secs()
}

/// Lines giving gauge `values` (already go-metrics names) stamped with the interval open now,
/// in the dump's format: the agent's own figures, read when the signal came.
pub fn gauge_lines(values: &[(String, f64)]) -> String {
    let t = go_time(
        UNIX_EPOCH + Duration::from_secs(interval_start(SystemTime::now())),
        None,
    );
    let mut out = String::new();
    for (name, v) in values {
        let _ = writeln!(out, "[{t}][G] '{name}': {v:.3}");
    }
    out
}

/// Go's `time.Time.String` in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`, with the
/// monotonic reading (`m=+1.234567890`) when one is given.
pub fn go_time(t: SystemTime, mono: Option<Duration>) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    if let Some(m) = mono {
        let _ = write!(out, " m=+{}.{:09}", m.as_secs(), m.subsec_nanos());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_go_prints_them() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_661_650);
        assert_eq!(go_time(t, None), "2025-12-02 07:47:30 +0000 UTC");
        let t = t + Duration::from_millis(250);
        assert_eq!(
            go_time(t, Some(Duration::from_millis(1500))),
            "2025-12-02 07:47:30.25 +0000 UTC m=+1.500000000"
        );
    }

    #[test]
    fn aggregates_render_as_go_metrics_does() {
        let at = (UNIX_EPOCH, Duration::ZERO);
        let mut a = Aggregate::new(at);
        assert_eq!(a.render(), "Count: 0");
        a.ingest(1.0, at);
        a.ingest(1.0, at);
        assert!(a
            .render()
            .starts_with("Count: 2 Sum: 2.000 LastUpdated: 1970-01-01"));
        a.ingest(4.0, at);
        assert!(
            a.render()
                .starts_with("Count: 3 Min: 1.000 Mean: 2.000 Max: 4.000 Stddev: 1.732 Sum: 6.000"),
            "{}",
            a.render()
        );
    }

    #[test]
    fn the_open_interval_is_not_dumped_and_a_minute_is_kept() {
        let m = Inmem::new();
        m.counter("serf-agent.serf.member.join", 1.0);
        // Still the open interval: nothing to print yet.
        assert_eq!(m.dump(), "");
        // Make it a closed interval by pushing one more, as the clock would.
        {
            let mut all = lock(&m.intervals);
            for (n, i) in all.iter_mut().enumerate() {
                i.start -= 10 * (n as u64 + 1);
            }
        }
        let out = m.dump();
        assert!(
            out.contains("[C] 'serf-agent.serf.member.join': Count: 1 Sum: 1.000 LastUpdated: "),
            "{out}"
        );
        {
            let mut all = lock(&m.intervals);
            for _ in 0..10 {
                all.push_front(Interval::default());
            }
            // An old interval last, so the next value opens a new one and trims.
            if let Some(b) = all.back_mut() {
                b.start = 0;
            }
        }
        m.gauge("g", 1.0);
        assert!(lock(&m.intervals).len() <= KEPT);
    }
}
