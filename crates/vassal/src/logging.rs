//! Log lines in Serf's shape: `2024/05/01 12:00:00 [INFO] serf: member-join: n1 127.0.0.1`,
//! written to stderr through `tracing`, and copied (at debug level and above, whatever
//! `-log-level` says, as Serf's log writer does) to the [`LogHub`] that RPC `monitor` serves.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};
use vassal_rpc::LogHub;

/// Serf's `-log-level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Err,
}

impl LogLevel {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "err" | "error" => Ok(LogLevel::Err),
            _ => Err("valid log levels are trace, debug, info, warn, err".into()),
        }
    }

    fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            // The pure crates narrate at info too (`EventMemberJoin …`); the shell's
            // `member-join: …` lines say the same, so they stay quiet unless debugging. What
            // only they know (a snapshot rejoin, a flapping member) is logged under its own
            // target.
            LogLevel::Info => {
                "info,vassal_serf=warn,vassal_serf::snapshot=info,vassal_serf::stats=info,\
                 vassal_memberlist=warn"
            }
            LogLevel::Warn => "warn",
            LogLevel::Err => "error",
        }
    }
}

/// Changes the console's level after start-up (SIGHUP reloads `log_level`).
#[derive(Clone)]
pub struct LevelControl(Option<reload::Handle<EnvFilter, Registry>>);

impl LevelControl {
    pub fn set(&self, level: LogLevel) {
        if let Some(h) = &self.0 {
            let _ = h.reload(EnvFilter::new(level.directive()));
        }
    }
}

pub fn init(level: LogLevel, hub: LogHub) -> LevelControl {
    let (filter, control) = reload::Layer::new(EnvFilter::new(level.directive()));
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(SerfFormat)
        .with_filter(filter);
    let monitor = HubLayer { hub }.with_filter(EnvFilter::new("debug"));
    let ok = tracing_subscriber::registry()
        .with(console)
        .with(monitor)
        .try_init()
        .is_ok();
    LevelControl(ok.then_some(control))
}

/// Serf's level tag and component for an event: `("INFO", "agent")`.
fn level_and_component(meta: &Metadata<'_>) -> (&'static str, &'static str) {
    let level = match *meta.level() {
        Level::ERROR => "ERR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    };
    let target = meta.target();
    let crate_name = target.split("::").next().unwrap_or("");
    let component = match crate_name {
        "vassal_node" | "vassal_serf" => "serf",
        "vassal_memberlist" => "memberlist",
        "vassal_roles" if target.starts_with("vassal_roles::haproxy") => "haproxy",
        // The RPC server names its own component (`agent.ipc: …`, `agent: …`), as Serf does.
        "vassal_rpc" => "",
        _ => "agent",
    };
    (level, component)
}

struct SerfFormat;

impl<S, N> FormatEvent<S, N> for SerfFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let (level, component) = level_and_component(event.metadata());
        write!(w, "    {} [{level}] ", timestamp())?;
        if !component.is_empty() {
            write!(w, "{component}: ")?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Copies every event, as one Serf-style line, to the monitor hub.
struct HubLayer {
    hub: LogHub,
}

impl<S: Subscriber> Layer<S> for HubLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let (level, component) = level_and_component(event.metadata());
        let mut fields = LineFields::default();
        event.record(&mut fields);
        let component = if component.is_empty() {
            String::new()
        } else {
            format!("{component}: ")
        };
        self.hub.publish(&format!(
            "{} [{level}] {component}{}{}",
            timestamp(),
            fields.message,
            fields.rest
        ));
    }
}

/// The message, then ` key=value` for every other field (as the console shows them).
#[derive(Default)]
struct LineFields {
    message: String,
    rest: String,
}

impl Visit for LineFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.rest.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

/// `YYYY/MM/DD HH:MM:SS` in UTC, like Go's `log` with `LstdFlags`.
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}/{month:02}/{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
