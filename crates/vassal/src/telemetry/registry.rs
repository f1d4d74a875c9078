//! The one recorder the agent installs: every series the `metrics` facade registers, its
//! running total for the Prometheus page, and the fan-out of each update to the in-memory
//! sink and the statsd/statsite streams as it happens (go-metrics' `FanoutSink`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tokio::sync::mpsc;
use tracing::warn;

use super::inmem::Inmem;

/// At most this many distinct series (name and label values) are kept; later ones are not
/// recorded. Label values such as user event names come from the network, and each new one
/// would otherwise cost memory for as long as the agent runs.
pub const MAX_SERIES: usize = 4096;

/// What kind of metric a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Go's `IncrCounter`.
    Counter,
    /// Go's `SetGauge`.
    Gauge,
    /// Go's `AddSample` / `MeasureSince` (timers in milliseconds).
    Histogram,
}

/// Locks `m`, carrying on with the data if a panicking holder poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// go-metrics' name for a series as its statsd, statsite and in-memory sinks write it: the
/// service prefix, the host name for gauges (`EnableHostname`), the dotted key, then each
/// label value (`serf-agent.serf.events.deploy`). Characters that would break a statsd line
/// become `_` (Go replaces `:` and space; newlines and `|` are replaced here too, since label
/// values come from the network).
pub fn go_name(
    prefix: &str,
    host: &str,
    kind: Kind,
    name: &str,
    labels: &[(String, String)],
) -> String {
    let mut out = String::with_capacity(prefix.len() + name.len() + 16);
    for part in [prefix, if kind == Kind::Gauge { host } else { "" }, name] {
        if !part.is_empty() {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    for (_, v) in labels {
        out.push('.');
        out.push_str(v);
    }
    out.chars()
        .map(|c| match c {
            ':' | ' ' | '|' | '\'' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// Where every update goes besides the series' own total.
pub struct Sinks {
    /// The in-memory sink SIGUSR1 prints.
    pub inmem: Inmem,
    /// The statsd and statsite flushers' queues, fed a line per update.
    pub streams: Vec<mpsc::Sender<String>>,
}

impl Sinks {
    fn stream(&self, name: &str, value: f64, kind: &str) {
        if self.streams.is_empty() {
            return;
        }
        // Go formats the float32 value with `%f`.
        let line = format!("{name}:{value:.6}|{kind}\n");
        for s in &self.streams {
            // A full queue drops the line, as Go's `pushMetric` does.
            let _ = s.try_send(line.clone());
        }
    }
}

/// One series: a key with its label values.
pub struct Series {
    /// Which kind it is.
    pub kind: Kind,
    /// The facade's key name (`serf.member.join`).
    pub name: String,
    /// The facade's labels, in order.
    pub labels: Vec<(String, String)>,
    /// See [`go_name`].
    pub go_name: String,
    /// A counter's total, or a gauge's value as `f64` bits.
    value: AtomicU64,
    /// A histogram's count and sum.
    hist: Mutex<(u64, f64)>,
    sinks: Arc<Sinks>,
}

/// A series' current figure for the Prometheus page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value.
    Gauge(f64),
    /// A histogram's sample count and sum.
    Summary(u64, f64),
}

impl Series {
    /// The figure now.
    pub fn value(&self) -> Value {
        match self.kind {
            Kind::Counter => Value::Counter(self.value.load(Ordering::Relaxed)),
            Kind::Gauge => Value::Gauge(f64::from_bits(self.value.load(Ordering::Relaxed))),
            Kind::Histogram => {
                let (n, sum) = *lock(&self.hist);
                Value::Summary(n, sum)
            }
        }
    }

    fn gauge_update(&self, f: impl Fn(f64) -> f64) {
        let mut new = 0.0;
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                new = f(f64::from_bits(bits));
                Some(new.to_bits())
            });
        self.sinks.inmem.gauge(&self.go_name, new);
        self.sinks.stream(&self.go_name, new, "g");
    }
}

impl CounterFn for Series {
    fn increment(&self, value: u64) {
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(value))
            });
        #[allow(clippy::cast_precision_loss)]
        let v = value as f64;
        self.sinks.inmem.counter(&self.go_name, v);
        self.sinks.stream(&self.go_name, v, "c");
    }

    fn absolute(&self, value: u64) {
        let old = self.value.fetch_max(value, Ordering::Relaxed);
        let delta = value.saturating_sub(old);
        if delta > 0 {
            #[allow(clippy::cast_precision_loss)]
            let v = delta as f64;
            self.sinks.inmem.counter(&self.go_name, v);
            self.sinks.stream(&self.go_name, v, "c");
        }
    }
}

impl GaugeFn for Series {
    fn increment(&self, value: f64) {
        self.gauge_update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.gauge_update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.gauge_update(|_| value);
    }
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        {
            let mut h = lock(&self.hist);
            h.0 = h.0.saturating_add(1);
            h.1 += value;
        }
        self.sinks.inmem.sample(&self.go_name, value);
        self.sinks.stream(&self.go_name, value, "ms");
    }
}

/// Every series registered so far.
pub struct Registry {
    prefix: String,
    host: String,
    sinks: Arc<Sinks>,
    series: Mutex<ByKind>,
    full_warned: AtomicBool,
}

/// The series of each kind, by key (looked up without cloning the key).
#[derive(Default)]
struct ByKind {
    counters: HashMap<Key, Arc<Series>>,
    gauges: HashMap<Key, Arc<Series>>,
    histograms: HashMap<Key, Arc<Series>>,
}

impl ByKind {
    fn of(&mut self, kind: Kind) -> &mut HashMap<Key, Arc<Series>> {
        match kind {
            Kind::Counter => &mut self.counters,
            Kind::Gauge => &mut self.gauges,
            Kind::Histogram => &mut self.histograms,
        }
    }

    fn len(&self) -> usize {
        self.counters.len() + self.gauges.len() + self.histograms.len()
    }
}

impl Registry {
    /// A registry naming series with `prefix` (and `host` for gauges), feeding `sinks`.
    pub fn new(prefix: &str, host: &str, sinks: Sinks) -> Registry {
        Registry {
            prefix: prefix.to_owned(),
            host: host.to_owned(),
            sinks: Arc::new(sinks),
            series: Mutex::new(ByKind::default()),
            full_warned: AtomicBool::new(false),
        }
    }

    /// The sinks updates go to.
    pub fn sinks(&self) -> &Sinks {
        &self.sinks
    }

    /// The series for `key` as `kind`, registering it if new; `None` past [`MAX_SERIES`].
    fn get(&self, kind: Kind, key: &Key) -> Option<Arc<Series>> {
        let mut all = lock(&self.series);
        if let Some(s) = all.of(kind).get(key) {
            return Some(s.clone());
        }
        if all.len() >= MAX_SERIES {
            if !self.full_warned.swap(true, Ordering::Relaxed) {
                warn!(
                    "agent: {MAX_SERIES} metric series recorded; new ones (first {:?}) are not",
                    key.name()
                );
            }
            return None;
        }
        let name = key.name().to_owned();
        let labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let s = Arc::new(Series {
            kind,
            go_name: go_name(&self.prefix, &self.host, kind, &name, &labels),
            name,
            labels,
            value: AtomicU64::new(if kind == Kind::Gauge {
                0f64.to_bits()
            } else {
                0
            }),
            hist: Mutex::new((0, 0.0)),
            sinks: self.sinks.clone(),
        });
        all.of(kind).insert(key.clone(), s.clone());
        Some(s)
    }

    /// Every series, in no particular order.
    pub fn all(&self) -> Vec<Arc<Series>> {
        let all = lock(&self.series);
        all.counters
            .values()
            .chain(all.gauges.values())
            .chain(all.histograms.values())
            .cloned()
            .collect()
    }
}

/// The [`Recorder`] the agent installs; cheap to clone.
#[derive(Clone)]
pub struct VassalRecorder(pub Arc<Registry>);

impl Recorder for VassalRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get(Kind::Counter, key)
            .map_or_else(Counter::noop, Counter::from_arc)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get(Kind::Gauge, key)
            .map_or_else(Gauge::noop, Gauge::from_arc)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get(Kind::Histogram, key)
            .map_or_else(Histogram::noop, Histogram::from_arc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_carry_the_prefix_the_host_for_gauges_and_label_values() {
        let l = vec![("name".to_owned(), "deploy".to_owned())];
        assert_eq!(
            go_name("serf-agent", "h1", Kind::Counter, "serf.events", &l),
            "serf-agent.serf.events.deploy"
        );
        assert_eq!(
            go_name(
                "serf-agent",
                "h1",
                Kind::Gauge,
                "memberlist.health.score",
                &[]
            ),
            "serf-agent.h1.memberlist.health.score"
        );
        let hostile = vec![("name".to_owned(), "a:b c|d\ne".to_owned())];
        assert_eq!(
            go_name("p", "h", Kind::Histogram, "x", &hostile),
            "p.x.a_b_c_d_e"
        );
    }

    #[test]
    fn the_registry_stops_growing_at_its_bound() {
        let r = Registry::new(
            "p",
            "h",
            Sinks {
                inmem: Inmem::new(),
                streams: vec![],
            },
        );
        for i in 0..MAX_SERIES + 10 {
            let key = Key::from_parts(
                "serf.events",
                vec![metrics::Label::new("name", i.to_string())],
            );
            let _ = r.get(Kind::Counter, &key);
        }
        assert_eq!(r.all().len(), MAX_SERIES);
        // A known series still resolves.
        let key = Key::from_parts("serf.events", vec![metrics::Label::new("name", "1")]);
        assert!(r.get(Kind::Counter, &key).is_some());
    }
}
