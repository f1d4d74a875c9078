//! The agent's metrics sinks, Serf's `setupTelemetry`: one recorder for the `metrics` facade
//! feeding go-metrics' in-memory sink (printed on SIGUSR1), the statsd and statsite sinks
//! (`statsd_addr`, `statsite_addr`, prefix `serf-agent`) and a Prometheus page
//! (`-metrics-addr`).
//!
//! With no sink configured no recorder is installed: the facade's macros in the core stay
//! no-ops, and SIGUSR1 prints only the agent's own figures read at that moment.

mod inmem;
mod prometheus;
mod registry;
mod stream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;
use vassal_node::{Handle, NodeError};

use crate::handlers::DispatchStats;
use registry::{go_name, Kind, Registry, Sinks, VassalRecorder};

/// go-metrics' service name as Serf's agent sets it (`metrics.DefaultConfig("serf-agent")`).
pub const PREFIX: &str = "serf-agent";

/// How often the agent's own figures are recorded as gauges while a recorder is installed.
const FIGURES_INTERVAL: Duration = inmem::INTERVAL;

/// Where the metrics go (`-metrics-addr`/`metrics_addr`, `statsd_addr`, `statsite_addr`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsOptions {
    /// The Prometheus page's listen address.
    pub metrics_addr: Option<String>,
    /// A statsd server (UDP).
    pub statsd_addr: Option<String>,
    /// A statsite server (TCP).
    pub statsite_addr: Option<String>,
}

impl MetricsOptions {
    /// Whether any sink is configured.
    pub fn any(&self) -> bool {
        self.metrics_addr.is_some() || self.statsd_addr.is_some() || self.statsite_addr.is_some()
    }
}

/// The installed sinks; held for as long as the agent runs.
pub struct Telemetry {
    registry: Option<Arc<Registry>>,
    host: String,
    _stop: watch::Sender<bool>,
}

impl Telemetry {
    /// Installs the recorder and starts the sinks `opts` name; with none, installs nothing.
    pub async fn start(opts: &MetricsOptions) -> Result<Telemetry, String> {
        // Serf's agent names gauges under the host only when it has a statsd or statsite
        // sink (`EnableHostname = false` otherwise).
        let host = if opts.statsd_addr.is_some() || opts.statsite_addr.is_some() {
            gethostname::gethostname().to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let (stop, stop_rx) = watch::channel(false);
        if !opts.any() {
            return Ok(Telemetry {
                registry: None,
                host,
                _stop: stop,
            });
        }
        let listener = match &opts.metrics_addr {
            Some(a) => Some(prometheus::bind(a).await?),
            None => None,
        };
        let mut streams = Vec::new();
        if let Some(a) = &opts.statsite_addr {
            streams.push(stream::spawn(stream::Proto::Statsite, a.clone()));
        }
        if let Some(a) = &opts.statsd_addr {
            streams.push(stream::spawn(stream::Proto::Statsd, a.clone()));
        }
        let registry = Arc::new(Registry::new(
            PREFIX,
            &host,
            Sinks {
                inmem: inmem::Inmem::new(),
                streams,
            },
        ));
        metrics::set_global_recorder(VassalRecorder(registry.clone()))
            .map_err(|e| format!("Failed to install the metrics recorder: {e}"))?;
        if let Some(l) = listener {
            if let Ok(a) = l.local_addr() {
                info!("agent: Prometheus metrics at http://{a}/metrics");
            }
            prometheus::spawn(l, registry.clone(), stop_rx);
        }
        Ok(Telemetry {
            registry: Some(registry),
            host,
            _stop: stop,
        })
    }

    /// Whether a recorder is installed.
    pub fn enabled(&self) -> bool {
        self.registry.is_some()
    }

    /// Records the agent's own figures every 10 s while a recorder is installed, until the
    /// node stops.
    pub fn spawn_figures(&self, handle: Handle, handlers: Arc<DispatchStats>) {
        if !self.enabled() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FIGURES_INTERVAL);
            loop {
                tick.tick().await;
                match Figures::read(&handle, &handlers).await {
                    Ok(f) => f.record(),
                    Err(_) => return,
                }
            }
        });
    }

    /// What SIGUSR1 prints (go-metrics' `InmemSignal`): the in-memory sink's finished
    /// intervals, then the agent's own `figures` as gauges of the interval open now.
    pub fn dump(&self, figures: &Figures) -> String {
        let mut out = match &self.registry {
            Some(r) => {
                figures.record();
                r.sinks().inmem.dump()
            }
            None => String::new(),
        };
        let lines: Vec<(String, f64)> = figures
            .0
            .iter()
            .map(|(name, labels, v)| (go_name(PREFIX, &self.host, Kind::Gauge, name, labels), *v))
            .collect();
        out.push_str(&inmem::gauge_lines(&lines));
        out
    }
}

/// The agent's own figures (what `vassal info` and the old SIGUSR1 lines showed): gauges
/// named under `vassal.`, each with its labels (`serf-agent.vassal.members.alive`).
#[derive(Debug, Clone, Default)]
pub struct Figures(pub Vec<Figure>);

/// One figure: its name, labels and value.
pub type Figure = (String, Vec<(String, String)>, f64);

impl Figures {
    /// Reads them from the node and the handler dispatcher.
    #[allow(clippy::cast_precision_loss)]
    pub async fn read(handle: &Handle, handlers: &DispatchStats) -> Result<Figures, NodeError> {
        let stats = handle.stats().await?;
        let members = handle.members().await?;
        let mut f = Vec::new();
        let mut gauge = |name: &str, labels: &[(&str, &str)], v: f64| {
            f.push((
                name.to_owned(),
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                v,
            ));
        };
        let mut by_status = std::collections::BTreeMap::<String, usize>::new();
        for status in ["alive", "leaving", "left", "failed"] {
            by_status.insert(status.to_owned(), 0);
        }
        for m in &members {
            *by_status.entry(m.status.to_string()).or_insert(0) += 1;
        }
        gauge("vassal.members", &[], members.len() as f64);
        for (status, n) in &by_status {
            gauge("vassal.members", &[("status", status)], *n as f64);
        }
        gauge("vassal.health_score", &[], f64::from(stats.health_score));
        gauge(
            "vassal.encrypted",
            &[],
            if stats.encrypted { 1.0 } else { 0.0 },
        );
        if let Some(n) = stats.coordinate_resets {
            gauge("vassal.coordinate_resets", &[], n as f64);
        }
        for (name, n) in [
            ("intent", stats.intent_queue),
            ("event", stats.event_queue),
            ("query", stats.query_queue),
        ] {
            gauge("vassal.queue", &[("name", name)], n as f64);
        }
        gauge(
            "vassal.handlers.queued",
            &[],
            handlers.queued.load(Ordering::Relaxed) as f64,
        );
        gauge(
            "vassal.handlers.dropped",
            &[],
            handlers.dropped.load(Ordering::Relaxed) as f64,
        );
        gauge(
            "vassal.handlers.killed",
            &[],
            handlers.killed.load(Ordering::Relaxed) as f64,
        );
        for (name, t) in [
            ("member", stats.member_time),
            ("event", stats.event_time),
            ("query", stats.query_time),
        ] {
            gauge("vassal.clock", &[("name", name)], t as f64);
        }
        gauge(
            "vassal.malformed_packets",
            &[],
            stats.malformed_packets as f64,
        );
        gauge(
            "vassal.malformed_streams",
            &[],
            stats.malformed_streams as f64,
        );
        for (reason, n) in &stats.drops {
            gauge(
                "vassal.dropped",
                &[("reason", &reason.replace(' ', "_"))],
                *n as f64,
            );
        }
        Ok(Figures(f))
    }

    /// Sets them as gauges through the facade (a no-op without a recorder).
    fn record(&self) {
        for (name, labels, v) in &self.0 {
            let l: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(k.clone(), v.clone()))
                .collect();
            metrics::gauge!(name.clone(), l).set(*v);
        }
    }
}
