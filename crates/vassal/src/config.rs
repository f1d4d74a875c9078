//! Serf's JSON agent configuration (`-config-file`, `-config-dir`; spec §5.4).
//!
//! A [`RawConfig`] holds what one source said: each field is `None` (or empty) when the source
//! did not set it. Sources merge in order (files in the order given, a directory's `*.json`
//! files in name order, then the command-line flags) with Serf's rules: a later scalar wins
//! when it is set, tags merge key by key, and the handler and join lists concatenate.
//!
//! Decoding is strict, like Serf's: an unknown key, a value of the wrong type or a duration
//! Go cannot parse is an error naming the file, the key and the problem. Values are typed
//! here (durations, profiles, log levels, address ranges), and the agent lays its flags over
//! the merged result (`agent::options`), so a file's setting is never spelt as a flag.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use vassal_roles::backend::Cidr;

use crate::logging::LogLevel;
use crate::parse::{parse_duration, parse_key, parse_max_conns, parse_protocol, Profile};

/// One configuration source, before defaults are applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawConfig {
    pub node_name: Option<String>,
    pub role: Option<String>,
    pub disable_coordinates: Option<bool>,
    pub tags: BTreeMap<String, String>,
    pub tags_file: Option<String>,
    pub bind: Option<String>,
    pub advertise: Option<String>,
    pub encrypt_key: Option<String>,
    pub keyring_file: Option<String>,
    pub log_level: Option<LogLevel>,
    pub rpc_addr: Option<String>,
    pub rpc_auth: Option<String>,
    pub protocol: Option<u8>,
    pub replay_on_join: Option<bool>,
    pub query_response_size_limit: Option<usize>,
    pub query_size_limit: Option<usize>,
    pub user_event_size_limit: Option<usize>,
    pub start_join: Vec<String>,
    pub retry_join: Vec<String>,
    pub retry_max_attempts: Option<u32>,
    pub retry_interval: Option<Duration>,
    pub event_handlers: Vec<String>,
    pub profile: Option<Profile>,
    pub snapshot_path: Option<String>,
    pub leave_on_terminate: Option<bool>,
    pub skip_leave_on_interrupt: Option<bool>,
    pub discover: Option<String>,
    pub interface: Option<String>,
    pub mdns_interface: Option<String>,
    pub mdns_disable_ipv4: Option<bool>,
    pub mdns_disable_ipv6: Option<bool>,
    pub reconnect_interval: Option<Duration>,
    pub reconnect_timeout: Option<Duration>,
    pub tombstone_timeout: Option<Duration>,
    pub broadcast_timeout: Option<Duration>,
    pub disable_name_resolution: Option<bool>,
    pub enable_syslog: Option<bool>,
    pub syslog_facility: Option<String>,
    pub rejoin_after_leave: Option<bool>,
    pub enable_compression: Option<bool>,
    pub statsite_addr: Option<String>,
    pub statsd_addr: Option<String>,
    /// Vassal's Prometheus page (`-metrics-addr`); Serf has no such key.
    pub metrics_addr: Option<String>,
    pub validate_node_names: Option<bool>,
    /// Vassal's own keys (issue 11's limits); Serf has no such settings.
    pub handler_timeout: Option<Duration>,
    pub lb_header_timeout: Option<Duration>,
    pub lb_max_conns: Option<usize>,
    /// `-lb-threads` (HAProxy's `nbthread`).
    pub lb_threads: Option<usize>,
    pub lb_backend_cidr: Vec<Cidr>,
    /// The balancer's health check (`-lb-check-*`).
    pub lb_check_path: Option<String>,
    pub lb_check_interval: Option<Duration>,
    pub lb_check_timeout: Option<Duration>,
    pub lb_check_rise: Option<u32>,
    pub lb_check_fall: Option<u32>,
    pub lb_check_status: Option<vassal_roles::check::StatusSet>,
    /// `-lb-balance`.
    pub lb_balance: Option<vassal_roles::pool::Balance>,
    /// `-web-delay`.
    pub web_delay: Option<Duration>,
    /// `-lb-tls-cert`, `-lb-tls-key`.
    pub lb_tls_cert: Option<String>,
    pub lb_tls_key: Option<String>,
    /// Where the live cluster page is served (`-ui-addr`).
    pub ui_addr: Option<std::net::SocketAddr>,
    /// Template mode (`-template`): `"SRC:DEST[:COMMAND]"` strings or objects.
    pub templates: Vec<crate::template::TemplateSpec>,
    /// `-template-wait`.
    pub template_wait: Option<Duration>,
}

/// A configuration file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or the directory when it could not be listed.
    pub path: PathBuf,
    /// The key at fault, when one is.
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(
                f,
                "config file {}: key \"{key}\": {}",
                self.path.display(),
                self.problem
            ),
            None => write!(f, "config file {}: {}", self.path.display(), self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every key Serf's agent accepts, for the "did you mean" hint.
const KEYS: &[&str] = &[
    "node_name",
    "role",
    "disable_coordinates",
    "tags",
    "tags_file",
    "bind",
    "advertise",
    "encrypt_key",
    "keyring_file",
    "log_level",
    "rpc_addr",
    "rpc_auth",
    "protocol",
    "replay_on_join",
    "query_response_size_limit",
    "query_size_limit",
    "user_event_size_limit",
    "start_join",
    "retry_join",
    "retry_max_attempts",
    "retry_interval",
    "event_handlers",
    "profile",
    "snapshot_path",
    "leave_on_terminate",
    "skip_leave_on_interrupt",
    "discover",
    "interface",
    "mdns",
    "reconnect_interval",
    "reconnect_timeout",
    "tombstone_timeout",
    "broadcast_timeout",
    "disable_name_resolution",
    "enable_syslog",
    "syslog_facility",
    "rejoin_after_leave",
    "enable_compression",
    "statsite_addr",
    "statsd_addr",
    "metrics_addr",
    "validate_node_names",
    "handler_timeout",
    "lb_header_timeout",
    "lb_max_conns",
    "lb_threads",
    "lb_backend_cidr",
    "lb_check_path",
    "lb_check_interval",
    "lb_check_timeout",
    "lb_check_rise",
    "lb_check_fall",
    "lb_check_status",
    "lb_balance",
    "web_delay",
    "lb_tls_cert",
    "lb_tls_key",
    "ui_addr",
    "templates",
    "template_wait",
];

impl RawConfig {
    /// Decodes one file's text. `path` only names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        let err = |key: Option<&str>, problem: String| ConfigError {
            path: path.to_owned(),
            key: key.map(str::to_owned),
            problem,
        };
        let value: Value =
            serde_json::from_str(text).map_err(|e| err(None, format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            // Not `kind`: a file holding a bare string may hold a key, which is not repeated.
            let found = match value {
                Value::String(_) => "a string".to_owned(),
                other => kind(&other),
            };
            return Err(err(
                None,
                format!("expected a JSON object ({{\"key\": value, ...}}), found {found}"),
            ));
        };
        let mut d = Decoder {
            map: &map,
            path,
            out: RawConfig::default(),
        };
        for key in map.keys() {
            if !KEYS.contains(&key.as_str()) {
                let hint = closest(key)
                    .map(|k| format!("; did you mean \"{k}\"?"))
                    .unwrap_or_default();
                return Err(err(
                    Some(key),
                    format!("unknown key (Serf's keys are listed in `vassal agent -h`){hint}"),
                ));
            }
        }
        d.decode()?;
        Ok(d.out)
    }

    /// Reads files and directories in order, as `-config-file` / `-config-dir` do: a
    /// directory contributes its `*.json` files (not subdirectories) in name order.
    pub fn read_paths(paths: &[PathBuf]) -> Result<RawConfig, ConfigError> {
        let mut result = RawConfig::default();
        for path in paths {
            let unreadable = |e: std::io::Error| ConfigError {
                path: path.clone(),
                key: None,
                problem: format!("cannot read it: {e}"),
            };
            let meta = std::fs::metadata(path).map_err(unreadable)?;
            if !meta.is_dir() {
                let text = std::fs::read_to_string(path).map_err(unreadable)?;
                result.merge(RawConfig::from_json(&text, path)?.validated(path)?);
                continue;
            }
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(unreadable)? {
                let entry = entry.map_err(unreadable)?;
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "json") && !p.is_dir() {
                    files.push(p);
                }
            }
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).map_err(|e| ConfigError {
                    path: file.clone(),
                    key: None,
                    problem: format!("cannot read it: {e}"),
                })?;
                result.merge(RawConfig::from_json(&text, &file)?.validated(&file)?);
            }
        }
        Ok(result)
    }

    /// Checks the values a flag would check, so that a bad one is reported with its file and
    /// key rather than as a flag the user never typed.
    pub fn validated(self, path: &Path) -> Result<RawConfig, ConfigError> {
        let err = |key: &str, problem: String| ConfigError {
            path: path.to_owned(),
            key: Some(key.to_owned()),
            problem,
        };
        for (key, addr, port) in [
            ("bind", &self.bind, 7946),
            ("advertise", &self.advertise, 7946),
            ("rpc_addr", &self.rpc_addr, 7373),
        ] {
            if let Some(a) = addr {
                let (host, _) =
                    vassal_node::addr::split_host_port(a, port).map_err(|e| err(key, e))?;
                if host.is_empty() && key != "bind" {
                    return Err(err(key, format!("{a:?} has no host; use IP:PORT")));
                }
                if key == "rpc_addr" && host.parse::<std::net::IpAddr>().is_err() {
                    return Err(err(
                        key,
                        format!("{a:?} is not an IP address; use IP:PORT, e.g. 127.0.0.1:7373"),
                    ));
                }
            }
        }
        // A flag's `-tag =v` is refused the same way.
        if let Some(v) = self.tags.get("") {
            return Err(err(
                "tags",
                format!("a tag's name is empty (its value is {v:?}); give it a name"),
            ));
        }
        if let Some(p) = self.protocol {
            parse_protocol(&p.to_string()).map_err(|e| err("protocol", format!("{p}: {e}")))?;
        }
        if let Some(k) = &self.encrypt_key {
            parse_key(k)
                .map_err(|e| err("encrypt_key", format!("{e}; make one with `vassal keygen`")))?;
        }
        for h in &self.event_handlers {
            crate::handlers::HandlerSpec::parse(h)
                .map_err(|e| err("event_handlers", format!("{h:?}: {e}")))?;
        }
        if let Some(n) = self.lb_max_conns {
            parse_max_conns(&n.to_string())
                .map_err(|e| err("lb_max_conns", format!("{n}: {e}")))?;
        }
        if let Some(n) = self.lb_threads {
            vassal_roles::parse_lb_threads(&n.to_string())
                .map_err(|e| err("lb_threads", format!("{n}: {e}")))?;
        }
        Ok(self)
    }

    /// Lays `later` over `self` with Serf's merge rules.
    pub fn merge(&mut self, later: RawConfig) {
        macro_rules! scalars {
            ($($f:ident),* $(,)?) => { $( if later.$f.is_some() { self.$f = later.$f; } )* };
        }
        scalars!(
            node_name,
            role,
            disable_coordinates,
            tags_file,
            bind,
            advertise,
            encrypt_key,
            keyring_file,
            log_level,
            rpc_addr,
            rpc_auth,
            protocol,
            replay_on_join,
            query_response_size_limit,
            query_size_limit,
            user_event_size_limit,
            retry_max_attempts,
            retry_interval,
            profile,
            snapshot_path,
            leave_on_terminate,
            skip_leave_on_interrupt,
            discover,
            interface,
            mdns_interface,
            mdns_disable_ipv4,
            mdns_disable_ipv6,
            reconnect_interval,
            reconnect_timeout,
            tombstone_timeout,
            broadcast_timeout,
            disable_name_resolution,
            enable_syslog,
            syslog_facility,
            rejoin_after_leave,
            enable_compression,
            statsite_addr,
            statsd_addr,
            metrics_addr,
            validate_node_names,
            handler_timeout,
            lb_header_timeout,
            lb_max_conns,
            lb_threads,
            lb_check_path,
            lb_check_interval,
            lb_check_timeout,
            lb_check_rise,
            lb_check_fall,
            lb_check_status,
            lb_balance,
            web_delay,
            lb_tls_cert,
            lb_tls_key,
            ui_addr,
            template_wait,
        );
        self.templates.extend(later.templates);
        self.tags.extend(later.tags);
        self.lb_backend_cidr.extend(later.lb_backend_cidr);
        self.start_join.extend(later.start_join);
        self.retry_join.extend(later.retry_join);
        self.event_handlers.extend(later.event_handlers);
    }
}

struct Decoder<'a> {
    map: &'a Map<String, Value>,
    path: &'a Path,
    out: RawConfig,
}

impl Decoder<'_> {
    fn err(&self, key: &str, problem: String) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            key: Some(key.to_owned()),
            problem,
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(
                key,
                format!("expected a string, found {}; quote it", kind(v)),
            )),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("expected true or false, found {}", kind(v)))),
        }
    }

    fn uint<T: TryFrom<u64>>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| T::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.err(
                        key,
                        format!("{n} is out of range (expected a non-negative whole number)"),
                    )
                }),
            Some(v) => Err(self.err(key, format!("expected a number, found {}", kind(v)))),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        parse_duration(&s).map(Some).map_err(|e| {
            self.err(
                key,
                format!("bad duration {s:?}: {e} (use Go's syntax, e.g. \"30s\", \"5m\", \"1h\")"),
            )
        })
    }

    /// A health-check interval or timeout.
    fn period(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.duration(key)?
            .map(|d| vassal_roles::check::check_period(d).map_err(|e| self.err(key, e)))
            .transpose()
    }

    /// A health-check rise or fall count.
    fn count(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.uint::<u32>(key)?
            .map(|n| vassal_roles::check::check_count(n).map_err(|e| self.err(key, e)))
            .transpose()
    }

    /// A string value read by `parse`, which says what is wrong with a bad one.
    fn parsed<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        parse(&s)
            .map(Some)
            .map_err(|e| self.err(key, format!("{s:?}: {e}")))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(
                        key,
                        format!("expected a list of strings, found {} in it", kind(other)),
                    )),
                })
                .collect(),
            Some(v) => Err(self.err(
                key,
                format!(
                    "expected a list of strings ([\"a\", \"b\"]), found {}",
                    kind(v)
                ),
            )),
        }
    }

    /// `templates`: a list of `"SRC:DEST[:COMMAND]"` strings or objects with `source`,
    /// `destination`, `command` and `command_timeout`.
    fn templates(&self) -> Result<Vec<crate::template::TemplateSpec>, ConfigError> {
        match self.map.get("templates") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    crate::template::TemplateSpec::from_json(v)
                        .map_err(|e| self.err("templates", e))
                })
                .collect(),
            Some(v) => Err(self.err(
                "templates",
                format!(
                    "expected a list ([\"src.tmpl:dest.conf:command\", {{\"source\": …}}]), \
                     found {}",
                    kind(v)
                ),
            )),
        }
    }

    fn decode(&mut self) -> Result<(), ConfigError> {
        let mut c = RawConfig {
            node_name: self.string("node_name")?,
            role: self.string("role")?,
            disable_coordinates: self.bool("disable_coordinates")?,
            tags_file: self.string("tags_file")?,
            bind: self.string("bind")?,
            advertise: self.string("advertise")?,
            encrypt_key: self.string("encrypt_key")?,
            keyring_file: self.string("keyring_file")?,
            log_level: self.parsed("log_level", LogLevel::parse)?,
            rpc_addr: self.string("rpc_addr")?,
            rpc_auth: self.string("rpc_auth")?,
            protocol: self.uint("protocol")?,
            replay_on_join: self.bool("replay_on_join")?,
            query_response_size_limit: self.uint("query_response_size_limit")?,
            query_size_limit: self.uint("query_size_limit")?,
            user_event_size_limit: self.uint("user_event_size_limit")?,
            start_join: self.strings("start_join")?,
            retry_join: self.strings("retry_join")?,
            retry_max_attempts: self.uint("retry_max_attempts")?,
            retry_interval: self.duration("retry_interval")?,
            event_handlers: self.strings("event_handlers")?,
            profile: self.parsed("profile", Profile::parse)?,
            snapshot_path: self.string("snapshot_path")?,
            leave_on_terminate: self.bool("leave_on_terminate")?,
            skip_leave_on_interrupt: self.bool("skip_leave_on_interrupt")?,
            discover: self.string("discover")?,
            interface: self.string("interface")?,
            reconnect_interval: self.duration("reconnect_interval")?,
            reconnect_timeout: self.duration("reconnect_timeout")?,
            tombstone_timeout: self.duration("tombstone_timeout")?,
            broadcast_timeout: self.duration("broadcast_timeout")?,
            disable_name_resolution: self.bool("disable_name_resolution")?,
            enable_syslog: self.bool("enable_syslog")?,
            syslog_facility: self.string("syslog_facility")?,
            rejoin_after_leave: self.bool("rejoin_after_leave")?,
            enable_compression: self.bool("enable_compression")?,
            statsite_addr: self.string("statsite_addr")?,
            statsd_addr: self.string("statsd_addr")?,
            metrics_addr: self.string("metrics_addr")?,
            validate_node_names: self.bool("validate_node_names")?,
            handler_timeout: self.duration("handler_timeout")?,
            template_wait: self.duration("template_wait")?,
            templates: self.templates()?,
            lb_header_timeout: self.duration("lb_header_timeout")?,
            lb_max_conns: self.uint("lb_max_conns")?,
            lb_threads: self.uint("lb_threads")?,
            lb_check_path: self.parsed("lb_check_path", vassal_roles::check::parse_path)?,
            lb_check_interval: self.period("lb_check_interval")?,
            lb_check_timeout: self.period("lb_check_timeout")?,
            lb_check_rise: self.count("lb_check_rise")?,
            lb_check_fall: self.count("lb_check_fall")?,
            lb_check_status: self.parsed("lb_check_status", str::parse)?,
            lb_balance: self.parsed("lb_balance", str::parse)?,
            web_delay: self.duration("web_delay")?,
            lb_tls_cert: self.string("lb_tls_cert")?,
            lb_tls_key: self.string("lb_tls_key")?,
            ui_addr: self.parsed("ui_addr", |v| {
                v.parse()
                    .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:9990".to_owned())
            })?,
            lb_backend_cidr: self
                .strings("lb_backend_cidr")?
                .iter()
                .map(|c| {
                    c.parse()
                        .map_err(|e| self.err("lb_backend_cidr", format!("{c:?}: {e}")))
                })
                .collect::<Result<_, _>>()?,
            ..RawConfig::default()
        };
        match self.map.get("tags") {
            None | Some(Value::Null) => {}
            Some(Value::Object(tags)) => {
                for (k, v) in tags {
                    let Value::String(v) = v else {
                        return Err(self.err(
                            "tags",
                            format!("tag {k:?} must be a string, found {}; quote it", kind(v)),
                        ));
                    };
                    c.tags.insert(k.clone(), v.clone());
                }
            }
            Some(v) => {
                return Err(self.err(
                    "tags",
                    format!(
                        "expected an object of strings ({{\"role\": \"web\"}}), found {}",
                        kind(v)
                    ),
                ))
            }
        }
        match self.map.get("mdns") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("interface", Value::String(s)) => c.mdns_interface = Some(s.clone()),
                        ("disable_ipv4", Value::Bool(b)) => c.mdns_disable_ipv4 = Some(*b),
                        ("disable_ipv6", Value::Bool(b)) => c.mdns_disable_ipv6 = Some(*b),
                        ("interface" | "disable_ipv4" | "disable_ipv6", v) => {
                            return Err(
                                self.err(&format!("mdns.{k}"), format!("wrong type: {}", kind(v)))
                            )
                        }
                        _ => {
                            return Err(self.err(
                                &format!("mdns.{k}"),
                                "unknown key (known: interface, disable_ipv4, disable_ipv6)".into(),
                            ))
                        }
                    }
                }
            }
            Some(v) => {
                return Err(self.err("mdns", format!("expected an object, found {}", kind(v))))
            }
        }
        self.out = c;
        Ok(())
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The known key nearest to a misspelt one, when it is near enough to be a typo.
fn closest(key: &str) -> Option<&'static str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let key = norm(key);
    KEYS.iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RawConfig, ConfigError> {
        RawConfig::from_json(text, Path::new("/etc/serf/a.json"))
    }

    #[test]
    fn issue_11_limit_keys_decode_typed() {
        let c = parse(
            r#"{"handler_timeout": "90s", "lb_header_timeout": "5s", "lb_max_conns": 100,
                "lb_backend_cidr": ["10.0.0.0/8", "192.168.0.0/16"]}"#,
        )
        .unwrap()
        .validated(Path::new("a.json"))
        .unwrap();
        assert_eq!(c.handler_timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.lb_header_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.lb_max_conns, Some(100));
        let cidrs: Vec<String> = c.lb_backend_cidr.iter().map(|c| c.to_string()).collect();
        assert_eq!(cidrs, ["10.0.0.0/8", "192.168.0.0/16"]);
        for (text, key) in [
            (r#"{"lb_backend_cidr": ["10.0.0.1/8"]}"#, "lb_backend_cidr"),
            (r#"{"lb_backend_cidr": "10.0.0.0/8"}"#, "lb_backend_cidr"),
            (r#"{"lb_max_conns": 0}"#, "lb_max_conns"),
            (r#"{"handler_timeout": "1 minute"}"#, "handler_timeout"),
        ] {
            let e = parse(text)
                .and_then(|c| c.validated(Path::new("a.json")))
                .unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
    }

    #[test]
    fn templates_take_strings_or_objects_and_concatenate_across_files() {
        let mut a =
            parse(r#"{"templates": ["a.tmpl:a.conf:nginx -s reload"], "template_wait": "2s"}"#)
                .unwrap();
        let b = parse(
            r#"{"templates": [{"source": "b.tmpl", "destination": "b.conf",
                               "command": "true", "command_timeout": "5s"}]}"#,
        )
        .unwrap();
        a.merge(b);
        assert_eq!(a.template_wait, Some(Duration::from_secs(2)));
        let got: Vec<(String, String, Option<Duration>)> = a
            .templates
            .iter()
            .map(|t| {
                (
                    t.source.display().to_string(),
                    t.command.clone().unwrap_or_default(),
                    t.command_timeout,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "a.tmpl".to_owned(),
                    "nginx -s reload".to_owned(),
                    Some(crate::template::DEFAULT_COMMAND_TIMEOUT)
                ),
                (
                    "b.tmpl".to_owned(),
                    "true".to_owned(),
                    Some(Duration::from_secs(5))
                ),
            ]
        );
        for text in [
            r#"{"templates": "a:b"}"#,
            r#"{"templates": [{"source": "a"}]}"#,
            r#"{"templates": ["nocolon"]}"#,
            r#"{"template_wait": "soon"}"#,
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.key.as_deref().is_some_and(|k| k.starts_with("template")),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn a_file_holding_a_bare_string_is_refused_without_quoting_it() {
        // It may be a key pasted into the wrong file.
        let e = parse(r#""SECRETKEY==""#).unwrap_err().to_string();
        assert!(e.contains("found a string") && !e.contains("SECRET"), "{e}");
    }

    #[test]
    fn every_kind_of_key_decodes() {
        let c = parse(
            r#"{"node_name": "n1", "tags": {"role": "web"}, "protocol": 4,
                "retry_interval": "5s", "start_join": ["127.0.0.1"], "leave_on_terminate": true,
                "mdns": {"interface": "lo"}}"#,
        )
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("n1"));
        assert_eq!(c.tags["role"], "web");
        assert_eq!(c.protocol, Some(4));
        assert_eq!(c.retry_interval, Some(Duration::from_secs(5)));
        assert_eq!(c.start_join, ["127.0.0.1"]);
        assert_eq!(c.leave_on_terminate, Some(true));
        assert_eq!(c.mdns_interface.as_deref(), Some("lo"));
    }

    #[test]
    fn an_unknown_key_names_the_file_the_key_and_a_likely_fix() {
        let e = parse(r#"{"node-name": "n1"}"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/etc/serf/a.json"), "{msg}");
        assert!(msg.contains("\"node-name\""), "{msg}");
        assert!(msg.contains("did you mean \"node_name\""), "{msg}");
    }

    #[test]
    fn a_bad_duration_or_type_names_the_key() {
        let msg = parse(r#"{"retry_interval": "5 seconds"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("\"retry_interval\"") && msg.contains("30s"),
            "{msg}"
        );
        let msg = parse(r#"{"protocol": "5"}"#).unwrap_err().to_string();
        assert!(
            msg.contains("\"protocol\"") && msg.contains("expected a number"),
            "{msg}"
        );
        let msg = parse(r#"{"tags": {"n": 1}}"#).unwrap_err().to_string();
        assert!(
            msg.contains("\"tags\"") && msg.contains("quote it"),
            "{msg}"
        );
        let msg = parse("{\"bind\": ").unwrap_err().to_string();
        assert!(msg.contains("not valid JSON"), "{msg}");
    }

    #[test]
    fn merge_follows_serf_later_scalars_win_lists_concatenate_tags_merge() {
        let mut a = parse(
            r#"{"node_name": "a", "tags": {"role": "web", "dc": "x"},
                "event_handlers": ["a.sh"], "retry_join": ["h1"]}"#,
        )
        .unwrap();
        let b = parse(
            r#"{"bind": "127.0.0.2", "tags": {"role": "lb"},
                "event_handlers": ["b.sh"], "retry_join": ["h2"]}"#,
        )
        .unwrap();
        a.merge(b);
        assert_eq!(a.node_name.as_deref(), Some("a"));
        assert_eq!(a.bind.as_deref(), Some("127.0.0.2"));
        assert_eq!(a.tags["role"], "lb");
        assert_eq!(a.tags["dc"], "x");
        assert_eq!(a.event_handlers, ["a.sh", "b.sh"]);
        assert_eq!(a.retry_join, ["h1", "h2"]);
    }

    #[test]
    fn a_directory_is_read_in_name_order_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.json"), r#"{"node_name": "b"}"#).unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"node_name": "a", "bind": "x"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("c.txt"), "not json").unwrap();
        let c = RawConfig::read_paths(&[dir.path().to_owned()]).unwrap();
        assert_eq!(c.node_name.as_deref(), Some("b"));
        assert_eq!(c.bind.as_deref(), Some("x"));
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("agent.json");
        for (text, key) in [
            (r#"{"bind": "127.0.0.1:70000"}"#, "bind"),
            (r#"{"profile": "fast"}"#, "profile"),
            (r#"{"encrypt_key": "c2hvcnQ="}"#, "encrypt_key"),
            (
                r#"{"event_handlers": ["bogus-event=x.sh"]}"#,
                "event_handlers",
            ),
            (r#"{"rpc_addr": "localhost:7373"}"#, "rpc_addr"),
        ] {
            std::fs::write(&f, text).unwrap();
            let msg = RawConfig::read_paths(std::slice::from_ref(&f))
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("agent.json") && msg.contains(&format!("\"{key}\"")),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_missing_file_names_itself() {
        let e = RawConfig::read_paths(&[PathBuf::from("/nonexistent/serf.json")]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/serf.json"), "{e}");
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }
}
