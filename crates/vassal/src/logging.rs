//! Log lines as Serf writes them: `2024/05/01 12:00:00 [INFO] serf: EventMemberJoin: n1 127.0.0.1`.
//!
//! Every line has Go's component prefix (`agent:`, `agent.ipc:`, `serf:`, `memberlist:`). A
//! message may name its component itself (`info!("serf: EventMemberJoin: …")`, the way Go's
//! code writes it); otherwise the crate that logged it decides (`vassal_serf` and `vassal_node`
//! are `serf`, `vassal_memberlist` is `memberlist`, the rest of the agent is `agent`). Each line
//! Go logs at INFO and above is logged once, by the code that does what Go's logging code does.
//!
//! Three outputs: the console (stderr, at `-log-level`; one JSON object per line with
//! `-log-json`), the local syslog socket (`-syslog`, behind the same level, as Serf's
//! `SyslogWrapper`), and the [`LogHub`] that RPC `monitor` serves (every line at debug and above,
//! whatever `-log-level` says, as Serf's log writer keeps them, in the text shape Serf's clients
//! parse).

use std::fmt;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
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
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Err => "error",
        }
    }
}

/// How the agent logs: `-log-level`, `-log-json`, `-syslog` with `-syslog-facility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    pub level: LogLevel,
    /// One JSON object per console line instead of Serf's text.
    pub json: bool,
    /// Also send the console's lines to the local syslog, with this facility.
    pub syslog: Option<Facility>,
}

/// A syslog facility by Serf's (go-syslog's) names: `LOCAL0` (Serf's default) … `LOCAL7`,
/// `KERN`, `USER`, `MAIL`, `DAEMON`, `AUTH`, `SYSLOG`, `LPR`, `NEWS`, `UUCP`, `CRON`,
/// `AUTHPRIV`, `FTP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    /// Serf's default, `LOCAL0`.
    pub const LOCAL0: Facility = Facility(16);

    /// Parses a facility name, in any case.
    pub fn parse(s: &str) -> Result<Self, String> {
        const NAMED: [(&str, u8); 12] = [
            ("KERN", 0),
            ("USER", 1),
            ("MAIL", 2),
            ("DAEMON", 3),
            ("AUTH", 4),
            ("SYSLOG", 5),
            ("LPR", 6),
            ("NEWS", 7),
            ("UUCP", 8),
            ("CRON", 9),
            ("AUTHPRIV", 10),
            ("FTP", 11),
        ];
        let upper = s.to_ascii_uppercase();
        if let Some(n) = upper.strip_prefix("LOCAL") {
            if let Ok(n @ 0..=7) = n.parse::<u8>() {
                return Ok(Facility(16 + n));
            }
        }
        NAMED
            .iter()
            .find(|(name, _)| *name == upper)
            .map(|(_, code)| Facility(*code))
            .ok_or_else(|| {
                format!(
                    "invalid syslog facility {s:?}; use LOCAL0 to LOCAL7, KERN, USER, MAIL, \
                     DAEMON, AUTH, SYSLOG, LPR, NEWS, UUCP, CRON, AUTHPRIV or FTP"
                )
            })
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

/// What the monitor hub records whatever `-log-level` says: debug, as Serf's log writer, but
/// not the HTTP libraries' own debug lines. hyper-util logs one for every request the load
/// balancer proxies ("pooling idle connection"): formatting it cost the balancer's hot path a
/// line, a timestamp and the hub's lock per request, and 512 of them would push every agent
/// line out of the backlog `monitor` shows first.
const HUB_DIRECTIVE: &str = "debug,hyper=info,hyper_util=info";

/// Installs the agent's logger. Fails only if `-syslog` was asked for and no syslog socket
/// takes datagrams (Serf then refuses to start, saying `Syslog setup failed`).
pub fn init(settings: LogSettings, hub: LogHub) -> Result<LevelControl, String> {
    let syslog = match settings.syslog {
        Some(facility) => {
            Some(Syslog::connect(facility).map_err(|e| format!("Syslog setup failed: {e}"))?)
        }
        None => None,
    };
    let (filter, control) = reload::Layer::new(EnvFilter::new(settings.level.directive()));
    let console = Console {
        json: settings.json,
        syslog: syslog.map(Mutex::new),
    }
    .with_filter(filter);
    let monitor = HubLayer { hub }.with_filter(EnvFilter::new(HUB_DIRECTIVE));
    let ok = tracing_subscriber::registry()
        .with(console)
        .with(monitor)
        .try_init()
        .is_ok();
    Ok(LevelControl(ok.then_some(control)))
}

/// Components Go's log lines name; a message that starts with one of them (and `": "`) names
/// its own.
const COMPONENTS: [&str; 6] = [
    "agent.ipc",
    "agent.mdns",
    "agent",
    "serf",
    "memberlist",
    "haproxy",
];

/// One event, taken apart: what every output needs.
#[derive(Debug, Default)]
struct Line {
    /// Serf's level tag: `ERR`, `WARN`, `INFO`, `DEBUG`, `TRACE`.
    level: &'static str,
    component: &'static str,
    message: String,
    /// The event's other fields, in order.
    fields: Vec<(&'static str, serde_json::Value)>,
}

impl Line {
    fn of(event: &Event<'_>) -> Line {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "ERR",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let mut line = Line {
            level,
            component: default_component(meta.target()),
            ..Line::default()
        };
        event.record(&mut line);
        if let Some((c, rest)) = COMPONENTS.iter().find_map(|c| {
            let rest = line.message.strip_prefix(c)?.strip_prefix(": ")?;
            Some((*c, rest.to_owned()))
        }) {
            line.component = c;
            line.message = rest;
        }
        line
    }

    /// `[INFO] serf: message key=value …`: Serf's line after its timestamp.
    fn text(&self) -> String {
        let mut out = format!("[{}] {}: {}", self.level, self.component, self.message);
        for (k, v) in &self.fields {
            match v {
                serde_json::Value::String(s) => out.push_str(&format!(" {k}={s}")),
                other => out.push_str(&format!(" {k}={other}")),
            }
        }
        out
    }

    /// One JSON object: `@timestamp`, `@level`, `@module`, `@message`, then the fields.
    fn json(&self) -> String {
        let mut obj = serde_json::Map::new();
        obj.insert("@timestamp".into(), rfc3339_now().into());
        let level = match self.level {
            "ERR" => "error",
            "WARN" => "warn",
            "INFO" => "info",
            "DEBUG" => "debug",
            _ => "trace",
        };
        obj.insert("@level".into(), level.into());
        obj.insert("@module".into(), self.component.into());
        obj.insert("@message".into(), self.message.clone().into());
        for (k, v) in &self.fields {
            obj.insert((*k).to_owned(), v.clone());
        }
        serde_json::Value::Object(obj).to_string()
    }
}

/// The component of a line that does not name one, by the crate that logged it.
fn default_component(target: &str) -> &'static str {
    match target.split("::").next().unwrap_or("") {
        "vassal_node" | "vassal_serf" => "serf",
        "vassal_memberlist" => "memberlist",
        "vassal_rpc" => "agent.ipc",
        "vassal_roles" if target.starts_with("vassal_roles::haproxy") => "haproxy",
        _ => "agent",
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.push((field.name(), value.into()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.fields
                .push((field.name(), format!("{value:?}").into()));
        }
    }
}

/// The console (stderr) and syslog, at `-log-level`.
struct Console {
    json: bool,
    syslog: Option<Mutex<Syslog>>,
}

impl<S: Subscriber> Layer<S> for Console {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = Line::of(event);
        let out = if self.json {
            line.json()
        } else {
            format!("    {} {}", timestamp(), line.text())
        };
        let _ = writeln!(std::io::stderr().lock(), "{out}");
        if let Some(syslog) = &self.syslog {
            let mut s = syslog.lock().unwrap_or_else(|p| p.into_inner());
            s.send(&line);
        }
    }
}

/// Copies every event, as one Serf-style line, to the monitor hub.
struct HubLayer {
    hub: LogHub,
}

impl<S: Subscriber> Layer<S> for HubLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = Line::of(event);
        self.hub
            .publish(&format!("{} {}", timestamp(), line.text()));
    }
}

/// Sockets tried for the local syslog, in go-syslog's order. `VASSAL_SYSLOG_SOCKET` names
/// another (tests bind their own).
const SYSLOG_SOCKETS: [&str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];

/// The local syslog, as go-syslog writes to it: one datagram per line,
/// `<PRI>Mmm dd hh:mm:ss serf[PID]: agent: message`.
struct Syslog {
    facility: Facility,
    path: String,
    socket: UnixDatagram,
}

impl Syslog {
    fn connect(facility: Facility) -> Result<Syslog, String> {
        let paths: Vec<String> = match std::env::var("VASSAL_SYSLOG_SOCKET") {
            Ok(p) if !p.is_empty() => vec![p],
            _ => SYSLOG_SOCKETS.iter().map(|p| (*p).to_owned()).collect(),
        };
        let mut errors = Vec::new();
        for path in paths {
            match Self::open(&path) {
                Ok(socket) => {
                    return Ok(Syslog {
                        facility,
                        path,
                        socket,
                    })
                }
                Err(e) => errors.push(format!("{path}: {e}")),
            }
        }
        Err(format!(
            "no local syslog socket takes datagrams ({}); is a syslog daemon running?",
            errors.join("; ")
        ))
    }

    fn open(path: &str) -> std::io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(socket)
    }

    /// Sends one line; a failed send reconnects once (the daemon may have restarted), and a
    /// line syslog still refuses is lost rather than holding up the agent.
    fn send(&mut self, line: &Line) {
        let datagram = syslog_datagram(self.facility, line, std::process::id());
        if self.socket.send(datagram.as_bytes()).is_err() {
            if let Ok(s) = Self::open(&self.path) {
                self.socket = s;
                let _ = self.socket.send(datagram.as_bytes());
            }
        }
    }
}

/// go-syslog's datagram for a line: Serf's `levelPriority` (INFO is `NOTICE`, DEBUG is `INFO`)
/// with the facility, the time, the tag `serf` and our PID, then the line after its level.
fn syslog_datagram(facility: Facility, line: &Line, pid: u32) -> String {
    let severity: u8 = match line.level {
        "ERR" => 3,
        "WARN" => 4,
        "INFO" => 5,
        "DEBUG" => 6,
        _ => 7,
    };
    let priority = u16::from(facility.0) * 8 + u16::from(severity);
    let text = line.text();
    let after_level = text
        .split_once("] ")
        .map_or(text.as_str(), |(_, rest)| rest);
    format!(
        "<{priority}>{} serf[{pid}]: {after_level}\n",
        syslog_stamp()
    )
}

/// Seconds since the epoch and the microseconds past them.
fn now() -> (u64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_secs(), d.subsec_micros()))
        .unwrap_or((0, 0))
}

/// (year, month, day, hour, minute, second) in UTC.
fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's `civil_from_days`: the date `days` after 1970-01-01 as (year, month, day).
/// The log's timestamps and the in-memory metrics dump share it.
#[allow(clippy::cast_possible_wrap)]
pub(crate) fn civil_from_days(days: u64) -> (i64, i64, i64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY/MM/DD HH:MM:SS` in UTC, like Go's `log` with `LstdFlags`.
fn timestamp() -> String {
    let (y, mo, d, h, mi, s) = civil(now().0);
    format!("{y:04}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02}")
}

/// `2024-05-01T12:00:00.123456Z`, as hclog's JSON `@timestamp` (in UTC).
fn rfc3339_now() -> String {
    let (secs, micros) = now();
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}Z")
}

/// `Jan _2 15:04:05` (Go's `time.Stamp`, which syslog lines carry), in UTC.
fn syslog_stamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, mo, d, h, mi, s) = civil(now().0);
    let month = usize::try_from(mo - 1)
        .ok()
        .and_then(|i| MONTHS.get(i))
        .copied()
        .unwrap_or("Jan");
    format!("{month} {d:>2} {h:02}:{mi:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Captures what the layers make of events logged inside `f`.
    fn lines(f: impl FnOnce()) -> Vec<String> {
        let hub = LogHub::new();
        let sub = tracing_subscriber::registry().with(HubLayer { hub: hub.clone() });
        tracing::subscriber::with_default(sub, f);
        let mut sub = hub.subscribe(1);
        std::mem::take(&mut sub.backlog)
            .into_iter()
            // Drop the timestamp: `YYYY/MM/DD HH:MM:SS `.
            .map(|l| l.get(20..).unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn a_message_naming_its_component_gets_it_once() {
        let got = lines(|| {
            tracing::info!("serf: EventMemberJoin: a 127.0.0.1");
            tracing::warn!(target: "vassal_serf::serf", "memberlist: Refuting a suspect message (from: b)");
            tracing::error!(target: "vassal::agent", "agent: Error invoking script 'x': exit status: 1");
        });
        assert_eq!(
            got,
            [
                "[INFO] serf: EventMemberJoin: a 127.0.0.1",
                "[WARN] memberlist: Refuting a suspect message (from: b)",
                "[ERR] agent: Error invoking script 'x': exit status: 1",
            ]
        );
    }

    #[test]
    fn a_message_without_a_component_gets_its_crates() {
        let got = lines(|| {
            tracing::info!(target: "vassal_memberlist::memberlist", n = 3, "probe");
            tracing::info!(target: "vassal_node::driver", "x");
            tracing::info!(target: "vassal_rpc::server", "y");
            tracing::info!(target: "vassal::agent", who = "me", "z");
        });
        assert_eq!(
            got,
            [
                "[INFO] memberlist: probe n=3",
                "[INFO] serf: x",
                "[INFO] agent.ipc: y",
                "[INFO] agent: z who=me",
            ]
        );
    }

    #[test]
    fn json_lines_carry_module_level_message_and_fields() {
        let out = Arc::new(Mutex::new(String::new()));
        struct Json(Arc<Mutex<String>>);
        impl<S: Subscriber> Layer<S> for Json {
            fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
                self.0.lock().unwrap().push_str(&Line::of(event).json());
            }
        }
        let sub = tracing_subscriber::registry().with(Json(out.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(node = "n1", count = 2u64, "serf: something happened");
        });
        let v: serde_json::Value = serde_json::from_str(&out.lock().unwrap()).unwrap();
        assert_eq!(v["@level"], "warn");
        assert_eq!(v["@module"], "serf");
        assert_eq!(v["@message"], "something happened");
        assert_eq!(v["node"], "n1");
        assert_eq!(v["count"], 2);
        let ts = v["@timestamp"].as_str().unwrap();
        assert!(
            ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
    }

    #[test]
    fn facilities_parse_by_go_syslog_names() {
        assert_eq!(Facility::parse("local0"), Ok(Facility::LOCAL0));
        assert_eq!(Facility::parse("LOCAL7"), Ok(Facility(23)));
        assert_eq!(Facility::parse("daemon"), Ok(Facility(3)));
        assert!(Facility::parse("LOCAL8").is_err());
        assert!(Facility::parse("nope").unwrap_err().contains("LOCAL0"));
    }

    #[test]
    fn syslog_datagrams_are_go_syslogs() {
        let line = Line {
            level: "INFO",
            component: "agent",
            message: "Serf agent starting".into(),
            fields: Vec::new(),
        };
        let d = syslog_datagram(Facility::LOCAL0, &line, 42);
        // LOCAL0 (16) * 8 + NOTICE (5): Serf logs INFO at NOTICE.
        assert!(d.starts_with("<133>"), "{d}");
        assert!(
            d.ends_with(" serf[42]: agent: Serf agent starting\n"),
            "{d}"
        );
        // `<133>Jan  2 15:04:05 serf…`: the stamp is Go's time.Stamp.
        let stamp = &d[5..20];
        assert_eq!(stamp.as_bytes()[3], b' ', "{d}");
        assert_eq!(&stamp[9..10], ":", "{d}");
        let err = Line {
            level: "ERR",
            ..line
        };
        assert!(syslog_datagram(Facility(3), &err, 1).starts_with("<27>"));
    }

    #[test]
    fn syslog_sends_to_the_socket_it_was_given() {
        let dir = std::env::temp_dir().join(format!("vassal-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog {
            facility: Facility::LOCAL0,
            path: path.to_string_lossy().into_owned(),
            socket: Syslog::open(&path.to_string_lossy()).unwrap(),
        };
        s.send(&Line {
            level: "WARN",
            component: "memberlist",
            message: "Refuting a suspect message (from: b)".into(),
            fields: Vec::new(),
        });
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.starts_with("<132>"), "{got}");
        assert!(
            got.ends_with("]: memberlist: Refuting a suspect message (from: b)\n"),
            "{got}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
