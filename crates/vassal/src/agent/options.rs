//! The agent's options: Serf's agent flags (with config files spelt in front of them), checked
//! into [`AgentOptions`], the tags and keyring files read into them, and their translation into
//! the node's and Serf's config.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tracing::info;
use vassal_memberlist::wire::Keyring;
use vassal_node::addr::{resolve, DEFAULT_PORT};
use vassal_node::NodeConfig;
use vassal_roles::backend;

use crate::config::RawConfig;
use crate::flags::{FlagError, FlagSet, Kind, Parsed};
use crate::handlers::HandlerSpec;
use crate::logging::{Facility, LogLevel};
use crate::parse::{parse_duration, parse_key, parse_max_conns, parse_protocol, Profile};

pub fn flags() -> FlagSet {
    FlagSet::new("agent")
        .flag(
            "node",
            Kind::Value,
            "<name>",
            "Node name (default: hostname)",
        )
        .flag(
            "bind",
            Kind::Value,
            "<addr[:port]>",
            "Address to bind (default 0.0.0.0:7946)",
        )
        .flag(
            "advertise",
            Kind::Value,
            "<addr[:port]>",
            "Address to advertise to peers",
        )
        .flag(
            "join",
            Kind::Multi,
            "<addr[:port]>",
            "Join this agent at start; repeatable",
        )
        .flag(
            "retry-join",
            Kind::Multi,
            "<addr[:port]>",
            "Join this agent, retrying until it works; repeatable",
        )
        .flag(
            "retry-interval",
            Kind::Value,
            "<duration>",
            "Time between retry-join attempts (default 30s)",
        )
        .flag(
            "retry-max",
            Kind::Value,
            "<n>",
            "Retry-join attempts before exiting 1 (0: unlimited)",
        )
        .flag(
            "encrypt",
            Kind::Value,
            "<key>",
            "Base64 gossip encryption key (16, 24 or 32 bytes)",
        )
        .flag(
            "profile",
            Kind::Value,
            "<lan|wan|local>",
            "Timing profile (default lan)",
        )
        .flag(
            "tag",
            Kind::Multi,
            "<key=value>",
            "Tag for this node; repeatable",
        )
        .flag(
            "role",
            Kind::Value,
            "<role>",
            "Deprecated: same as -tag role=<role>",
        )
        .flag(
            "log-level",
            Kind::Value,
            "<level>",
            "trace, debug, info, warn or err (default info)",
        )
        .flag(
            "protocol",
            Kind::Value,
            "<n>",
            "Serf protocol version, 2 to 5 (default 5)",
        )
        .flag(
            "disable-compression",
            Kind::Bool,
            "",
            "Do not compress gossip",
        )
        .flag(
            "broadcast-timeout",
            Kind::Value,
            "<duration>",
            "How long a leave waits for its broadcast (default 5s)",
        )
        .flag(
            "event-handler",
            Kind::Multi,
            "<[filters=]script>",
            "Script to run on events, e.g. member-join,user:deploy=./h.sh; repeatable",
        )
        .flag(
            "replay",
            Kind::Bool,
            "",
            "Replay past user events when joining at start",
        )
        .flag(
            "snapshot",
            Kind::Value,
            "<path>",
            "Snapshot file: alive members and clocks, to rejoin and not replay events on restart",
        )
        .flag(
            "rejoin",
            Kind::Bool,
            "",
            "Rejoin the snapshot's members on restart even after a graceful leave",
        )
        .flag(
            "tags-file",
            Kind::Value,
            "<path>",
            "JSON file the tags are loaded from and saved to (not with -tag or -role)",
        )
        .flag(
            "keyring-file",
            Kind::Value,
            "<path>",
            "JSON array of base64 keys, primary first; kept up to date (not with -encrypt)",
        )
        .flag(
            "haproxy-socket",
            Kind::Value,
            "<path>",
            "Keep an HAProxy backend in step with role=web members via this admin socket",
        )
        .flag(
            "haproxy-backend",
            Kind::Value,
            "<name>",
            "The HAProxy backend to keep in step (default web)",
        )
        .flag(
            "haproxy-quiesce",
            Kind::Value,
            "<duration>",
            "Quiet time that batches membership changes for HAProxy (default 200ms)",
        )
        .flag(
            "lb-listen",
            Kind::Value,
            "<ip:port>",
            "Run the built-in load balancer over role=web members here",
        )
        .flag(
            "lb-stats",
            Kind::Value,
            "<ip:port>",
            "Serve the load balancer's live stats page here",
        )
        .flag(
            "web-listen",
            Kind::Value,
            "<ip:port>",
            "Run the built-in web role here (sets tag http_port)",
        )
        .flag(
            "ui-addr",
            Kind::Value,
            "<ip:port>",
            "Serve the live cluster page (members, coordinate map, events) here (default: off)",
        )
        .flag(
            "lb-backend-cidr",
            Kind::Multi,
            "<cidr>",
            "Only proxy to web members inside this range, e.g. 10.0.0.0/8; repeatable",
        )
        .flag(
            "lb-header-timeout",
            Kind::Value,
            "<duration>",
            "Drop an HTTP client that has not sent its request headers in this time (default \
             10s; 0: never)",
        )
        .flag(
            "lb-max-conns",
            Kind::Value,
            "<n>",
            "Most client connections at once per built-in HTTP server (default 4096, or half \
             the file-descriptor limit if lower)",
        )
        .flag(
            "template",
            Kind::Multi,
            "<src:dest[:command]>",
            "Render Jinja template SRC over the members into DEST when it changes, then run \
             COMMAND (e.g. nginx -s reload); repeatable",
        )
        .flag(
            "template-wait",
            Kind::Value,
            "<duration>",
            "Quiet time membership needs before templates render (default 1s)",
        )
        .flag(
            "lb-check-path",
            Kind::Value,
            "<path>",
            "Page the balancer's health check asks with GET (default /)",
        )
        .flag(
            "lb-check-interval",
            Kind::Value,
            "<duration>",
            "Time between two health checks of one backend (default 1s)",
        )
        .flag(
            "lb-check-timeout",
            Kind::Value,
            "<duration>",
            "A backend must answer a health check within this (default 2s)",
        )
        .flag(
            "lb-check-rise",
            Kind::Value,
            "<n>",
            "Passing checks in a row that bring a down backend back (default 1)",
        )
        .flag(
            "lb-check-fall",
            Kind::Value,
            "<n>",
            "Failing checks in a row that take a backend out of rotation (default 2)",
        )
        .flag(
            "lb-check-status",
            Kind::Value,
            "<codes>",
            "Statuses a health check accepts: codes, ranges, classes, e.g. 200,3xx (default \
             100-499)",
        )
        .flag(
            "lb-balance",
            Kind::Value,
            "<method>",
            "How the balancer picks a backend: roundrobin, leastconn or leastload (by the load \
             web nodes report; default roundrobin)",
        )
        .flag(
            "lb-tls-cert",
            Kind::Value,
            "<path>",
            "Serve the balancer over HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate \
             chain; needs -lb-tls-key; re-read on SIGHUP",
        )
        .flag(
            "lb-tls-key",
            Kind::Value,
            "<path>",
            "The PEM private key of -lb-tls-cert",
        )
        .flag(
            "lb-threads",
            Kind::Value,
            "<n>",
            "Threads serving the load balancer's connections, as HAProxy's nbthread (default \
             one per CPU, at most 64)",
        )
        .flag(
            "web-delay",
            Kind::Value,
            "<duration>",
            "Hold every web-role answer this long (stands in for a slow node in benchmarks; \
             default 0)",
        )
        .flag(
            "handler-timeout",
            Kind::Value,
            "<duration>",
            "Kill an event handler and its process group after this (default 60s; 0: never)",
        )
        .flag(
            "rpc-addr",
            Kind::Value,
            "<addr:port>",
            "Address for the RPC listener (default 127.0.0.1:7373)",
        )
        .flag(
            "metrics-addr",
            Kind::Value,
            "<addr:port>",
            "Serve Prometheus metrics at http://ADDR/metrics (default: off)",
        )
        .flag(
            "rpc-auth",
            Kind::Value,
            "<token>",
            "Token RPC clients must present (default: none)",
        )
        .flag(
            "config-file",
            Kind::Multi,
            "<path>",
            "JSON config file (Serf's keys); repeatable, later files and flags win",
        )
        .flag(
            "config-dir",
            Kind::Multi,
            "<dir>",
            "Directory whose *.json files are read in name order; repeatable",
        )
        .flag(
            "discover",
            Kind::Value,
            "<cluster>",
            "Find and join the cluster's agents by mDNS (service _serf_<cluster>._tcp)",
        )
        .flag("iface", Kind::Value, "<name>", "Network interface for mDNS")
        .flag(
            "mdns-iface",
            Kind::Value,
            "<name>",
            "Network interface for mDNS only",
        )
        .flag(
            "mdns-disable-ipv4",
            Kind::Bool,
            "",
            "Do not use IPv4 for mDNS",
        )
        .flag(
            "mdns-disable-ipv6",
            Kind::Bool,
            "",
            "Do not use IPv6 for mDNS",
        )
        .flag(
            "syslog",
            Kind::Bool,
            "",
            "Also send logs to the local syslog (facility: config key syslog_facility, \
             default LOCAL0)",
        )
        .flag(
            "log-json",
            Kind::Bool,
            "",
            "Log one JSON object per line (@timestamp, @level, @module, @message, fields) \
             instead of Serf's text; the monitor stream keeps Serf's text",
        )
}

/// Everything the flags said, checked.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node: String,
    pub bind: String,
    pub advertise: Option<String>,
    pub join: Vec<String>,
    pub retry_join: Vec<String>,
    pub retry_interval: Duration,
    pub retry_max: u32,
    pub keyring: Option<Keyring>,
    pub profile: Profile,
    pub tags: BTreeMap<String, String>,
    pub log_level: LogLevel,
    /// `-log-json`: the console logs JSON lines.
    pub log_json: bool,
    /// `-syslog` / `enable_syslog`: also log to the local syslog, with `syslog_facility`.
    pub syslog: Option<Facility>,
    pub protocol: u8,
    pub compression: bool,
    pub broadcast_timeout: Duration,
    pub event_handlers: Vec<HandlerSpec>,
    /// `-handler-timeout`; `None` for no limit.
    pub handler_timeout: Option<Duration>,
    /// `-template` and the config files' `templates`: template mode.
    pub templates: Vec<crate::template::TemplateSpec>,
    /// `-template-wait`, `template_wait`: quiet time before templates render.
    pub template_wait: Duration,
    pub replay: bool,
    pub snapshot: Option<PathBuf>,
    pub rejoin: bool,
    pub tags_file: Option<PathBuf>,
    pub keyring_file: Option<PathBuf>,
    /// `-haproxy-socket` and the sync's settings.
    pub haproxy: Option<(std::path::PathBuf, vassal_roles::haproxy::SyncConfig)>,
    /// The built-in demo roles (`-lb-listen`, `-lb-stats`, `-web-listen`) and the cluster page
    /// (`-ui-addr`).
    pub roles: vassal_roles::RolesConfig,
    pub rpc_addr: String,
    pub rpc_auth: String,
    /// The arguments these options came from, read again (with the files) on SIGHUP.
    pub args: Vec<String>,
    /// Settings only config files carry (Serf has no flags for them).
    pub file_only: FileOnly,
    /// `-discover`: mDNS discovery.
    pub discover: Option<DiscoverOptions>,
    /// The metrics sinks.
    pub metrics: crate::telemetry::MetricsOptions,
}

#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    pub cluster: String,
    pub iface: Option<String>,
    pub disable_ipv4: bool,
    pub disable_ipv6: bool,
}

/// Config-file keys with no flag (spec §5.4).
#[derive(Debug, Clone, Default)]
pub struct FileOnly {
    pub leave_on_terminate: bool,
    pub skip_leave_on_interrupt: bool,
    pub reconnect_interval: Option<Duration>,
    pub reconnect_timeout: Option<Duration>,
    pub tombstone_timeout: Option<Duration>,
    pub user_event_size_limit: Option<usize>,
    pub query_size_limit: Option<usize>,
    pub query_response_size_limit: Option<usize>,
    pub disable_coordinates: bool,
    pub disable_name_resolution: bool,
    /// Keys we read but do not act on, to warn about at start.
    pub ignored: Vec<&'static str>,
}

impl FileOnly {
    fn from_raw(c: &RawConfig) -> Result<FileOnly, FlagError> {
        let mut ignored = Vec::new();
        for (key, set) in [("validate_node_names", c.validate_node_names.is_some())] {
            if set {
                ignored.push(key);
            }
        }
        if let Some(n) = c.user_event_size_limit {
            if n > vassal_serf::USER_EVENT_SIZE_HARD_LIMIT {
                return Err(FlagError::Config(format!(
                    "config key \"user_event_size_limit\": {n} is over the {} byte limit Serf's \
                     wire format allows; use at most that",
                    vassal_serf::USER_EVENT_SIZE_HARD_LIMIT
                )));
            }
        }
        Ok(FileOnly {
            leave_on_terminate: c.leave_on_terminate == Some(true),
            skip_leave_on_interrupt: c.skip_leave_on_interrupt == Some(true),
            reconnect_interval: c.reconnect_interval,
            reconnect_timeout: c.reconnect_timeout,
            tombstone_timeout: c.tombstone_timeout,
            user_event_size_limit: c.user_event_size_limit,
            query_size_limit: c.query_size_limit,
            query_response_size_limit: c.query_response_size_limit,
            disable_coordinates: c.disable_coordinates == Some(true),
            disable_name_resolution: c.disable_name_resolution == Some(true),
            ignored,
        })
    }
}

/// Checks the flags, with the config files they name laid under them (Serf's precedence: a
/// flag that is given wins over a file's setting; tags, joins, handlers and address ranges
/// add to the files').
pub fn options(args: &[String]) -> Result<AgentOptions, FlagError> {
    let p = flags().parse(args)?;
    let paths: Vec<PathBuf> = p
        .values("config-file")
        .iter()
        .chain(p.values("config-dir"))
        .map(PathBuf::from)
        .collect();
    let file = RawConfig::read_paths(&paths).map_err(|e| FlagError::Config(e.to_string()))?;
    if let Some(extra) = p.args.first() {
        return Err(FlagError::BadValue {
            flag: "agent".into(),
            value: extra.clone(),
            why: "vassal agent takes no arguments".into(),
        });
    }
    let bad = |flag: &str, value: &str, why: String| FlagError::BadValue {
        flag: flag.into(),
        value: value.into(),
        why,
    };
    // A single-valued setting: the flag's value if given, else the files'.
    fn given<'a>(p: &'a Parsed, flag: &str, file: &'a Option<String>) -> Option<&'a str> {
        p.value(flag).or(file.as_deref())
    }
    let value = |flag: &str, file| given(&p, flag, file);
    let mut tags = BTreeMap::new();
    if let Some(role) = value("role", &file.role) {
        tags.insert(backend::ROLE_TAG.to_owned(), role.to_owned());
    }
    tags.extend(file.tags.clone());
    for t in p.values("tag") {
        let (k, v) = crate::cli::parse_tag(t)
            .map_err(|_| bad("tag", t, "expected key=value, the key not empty".into()))?;
        tags.insert(k, v);
    }
    // The key itself is never repeated in the message: it is secret.
    let keyring = value("encrypt", &file.encrypt_key)
        .map(|k| {
            parse_key(k).map_err(|e| {
                bad(
                    "encrypt",
                    "<key not shown>",
                    format!("{e} (try `vassal keygen`)"),
                )
            })
        })
        .transpose()?;
    let event_handlers: Vec<HandlerSpec> = file
        .event_handlers
        .iter()
        .chain(p.values("event-handler"))
        .map(|h| HandlerSpec::parse(h).map_err(|e| bad("event-handler", h, e.to_string())))
        .collect::<Result<_, _>>()?;
    let mut templates = file.templates.clone();
    for t in p.values("template") {
        templates.push(crate::template::TemplateSpec::parse(t).map_err(|e| bad("template", t, e))?);
    }
    let role_addr = |flag: &str| -> Result<Option<SocketAddr>, FlagError> {
        p.value(flag)
            .map(|v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| bad(flag, v, "expected IP:PORT, e.g. 127.0.0.1:8080".into()))
            })
            .transpose()
    };
    let (lb_listen, lb_stats, web_listen) = (
        role_addr("lb-listen")?,
        role_addr("lb-stats")?,
        role_addr("web-listen")?,
    );
    let ui_listen = role_addr("ui-addr")?.or(file.ui_addr);
    if let (Some(s), None) = (lb_stats, lb_listen) {
        return Err(bad(
            "lb-stats",
            &s.to_string(),
            "needs -lb-listen: the stats page belongs to the load balancer".into(),
        ));
    }
    if let Some(w) = web_listen {
        // The balancer finds a web node's server at its member address and this port.
        tags.entry(backend::HTTP_PORT_TAG.to_owned())
            .or_insert_with(|| w.port().to_string());
    }
    let has_role = matches!(
        tags.get(backend::ROLE_TAG).map(String::as_str),
        Some(backend::WEB_ROLE | backend::LB_ROLE)
    ) || lb_listen.is_some()
        || web_listen.is_some();
    let handler_answers_load = event_handlers
        .iter()
        .any(|h| h.handles_query(vassal_roles::load::QUERY));
    let profile = p.parse_or("profile", file.profile.unwrap_or_default(), Profile::parse)?;
    let node = value("node", &file.node_name)
        .map(str::to_owned)
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let mut lb_backend_cidrs = file.lb_backend_cidr.clone();
    for c in p.values("lb-backend-cidr") {
        lb_backend_cidrs.push(c.parse().map_err(|why| bad("lb-backend-cidr", c, why))?);
    }
    let http_limits = vassal_roles::http::ServeLimits {
        header_timeout: Some(
            p.parse_or(
                "lb-header-timeout",
                file.lb_header_timeout
                    .unwrap_or(vassal_roles::http::DEFAULT_HEADER_TIMEOUT),
                parse_duration,
            )?,
        )
        .filter(|d| !d.is_zero()),
        max_conns: p.parse_or(
            "lb-max-conns",
            file.lb_max_conns.unwrap_or_else(default_max_conns),
            parse_max_conns,
        )?,
        ..vassal_roles::http::ServeLimits::default()
    };
    let defaults = vassal_roles::check::CheckConfig::default();
    let lb_check = vassal_roles::check::CheckConfig {
        path: p.parse_or(
            "lb-check-path",
            file.lb_check_path.clone().unwrap_or(defaults.path),
            vassal_roles::check::parse_path,
        )?,
        interval: p.parse_or(
            "lb-check-interval",
            file.lb_check_interval.unwrap_or(defaults.interval),
            |v| parse_duration(v).and_then(vassal_roles::check::check_period),
        )?,
        timeout: p.parse_or(
            "lb-check-timeout",
            file.lb_check_timeout.unwrap_or(defaults.timeout),
            |v| parse_duration(v).and_then(vassal_roles::check::check_period),
        )?,
        rise: p.parse_or(
            "lb-check-rise",
            file.lb_check_rise.unwrap_or(defaults.rise),
            vassal_roles::check::parse_count,
        )?,
        fall: p.parse_or(
            "lb-check-fall",
            file.lb_check_fall.unwrap_or(defaults.fall),
            vassal_roles::check::parse_count,
        )?,
        status: p.parse_or(
            "lb-check-status",
            file.lb_check_status.clone().unwrap_or(defaults.status),
            str::parse,
        )?,
    };
    let roles = vassal_roles::RolesConfig {
        lb_listen,
        lb_stats,
        web_listen,
        answer_load: has_role && !handler_answers_load,
        lb_backend_cidrs,
        http_limits,
        ui_listen,
        lb_check,
        lb_tls: match (
            value("lb-tls-cert", &file.lb_tls_cert),
            value("lb-tls-key", &file.lb_tls_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                if lb_listen.is_none() {
                    return Err(bad(
                        "lb-tls-cert",
                        cert,
                        "needs -lb-listen: the certificate is the load balancer's".into(),
                    ));
                }
                Some(vassal_roles::tls::TlsFiles {
                    cert: cert.into(),
                    key: key.into(),
                })
            }
            (Some(cert), None) => {
                return Err(bad(
                    "lb-tls-cert",
                    cert,
                    "needs -lb-tls-key, the certificate's private key".into(),
                ))
            }
            (None, Some(key)) => {
                return Err(bad(
                    "lb-tls-key",
                    key,
                    "needs -lb-tls-cert, the certificate it is the key of".into(),
                ))
            }
        },
        lb_balance: p.parse_or(
            "lb-balance",
            file.lb_balance.unwrap_or_default(),
            str::parse,
        )?,
        lb_threads: match p.value("lb-threads") {
            Some(v) => {
                Some(vassal_roles::parse_lb_threads(v).map_err(|why| bad("lb-threads", v, why))?)
            }
            None => file.lb_threads,
        },
        web_delay: Some(p.parse_or(
            "web-delay",
            file.web_delay.unwrap_or(Duration::ZERO),
            |v| {
                parse_duration(v).and_then(|d| {
                    if d > Duration::from_secs(60) {
                        Err(format!("{d:?} is more than a minute; a benchmark's slow node wants milliseconds, e.g. 20ms"))
                    } else {
                        Ok(d)
                    }
                })
            },
        )?)
        .filter(|d| !d.is_zero()),
        ..vassal_roles::RolesConfig::new(&node)
    };
    let list = |flag: &str, file: &[String]| -> Vec<String> {
        file.iter().chain(p.values(flag)).cloned().collect()
    };
    Ok(AgentOptions {
        node,
        bind: value("bind", &file.bind)
            .unwrap_or("0.0.0.0:7946")
            .to_owned(),
        advertise: value("advertise", &file.advertise).map(str::to_owned),
        join: list("join", &file.start_join),
        retry_join: list("retry-join", &file.retry_join),
        retry_interval: p.parse_or(
            "retry-interval",
            file.retry_interval.unwrap_or(Duration::from_secs(30)),
            parse_duration,
        )?,
        retry_max: p.parse_or("retry-max", file.retry_max_attempts.unwrap_or(0), |v| {
            v.parse().map_err(|e| format!("{e}"))
        })?,
        keyring,
        profile,
        tags,
        log_level: p.parse_or(
            "log-level",
            file.log_level.unwrap_or(LogLevel::Info),
            LogLevel::parse,
        )?,
        log_json: p.bool("log-json"),
        syslog: if p.bool_or("syslog", file.enable_syslog == Some(true)) {
            Some(match &file.syslog_facility {
                Some(f) => Facility::parse(f).map_err(FlagError::Config)?,
                None => Facility::LOCAL0,
            })
        } else {
            None
        },
        protocol: p.parse_or(
            "protocol",
            file.protocol.unwrap_or(vassal_serf::PROTOCOL_DEFAULT),
            parse_protocol,
        )?,
        compression: !p.bool_or(
            "disable-compression",
            file.enable_compression == Some(false),
        ),
        broadcast_timeout: p.parse_or(
            "broadcast-timeout",
            file.broadcast_timeout.unwrap_or(Duration::from_secs(5)),
            parse_duration,
        )?,
        event_handlers,
        handler_timeout: Some(
            p.parse_or(
                "handler-timeout",
                file.handler_timeout
                    .unwrap_or(crate::handlers::runner::DEFAULT_TIMEOUT),
                parse_duration,
            )?,
        )
        .filter(|d| !d.is_zero()),
        templates,
        template_wait: p.parse_or(
            "template-wait",
            file.template_wait.unwrap_or(crate::template::DEFAULT_WAIT),
            parse_duration,
        )?,
        replay: p.bool_or("replay", file.replay_on_join == Some(true)),
        snapshot: value("snapshot", &file.snapshot_path).map(PathBuf::from),
        rejoin: p.bool_or("rejoin", file.rejoin_after_leave == Some(true)),
        tags_file: value("tags-file", &file.tags_file).map(PathBuf::from),
        keyring_file: value("keyring-file", &file.keyring_file).map(PathBuf::from),
        haproxy: haproxy_options(&p, roles.lb_balance)?,
        roles,
        rpc_addr: value("rpc-addr", &file.rpc_addr)
            .unwrap_or(crate::cli::DEFAULT_RPC_ADDR)
            .to_owned(),
        rpc_auth: value("rpc-auth", &file.rpc_auth).unwrap_or("").to_owned(),
        metrics: crate::telemetry::MetricsOptions {
            metrics_addr: value("metrics-addr", &file.metrics_addr).map(str::to_owned),
            statsd_addr: file.statsd_addr.clone(),
            statsite_addr: file.statsite_addr.clone(),
        },
        args: args.to_vec(),
        file_only: FileOnly::from_raw(&file)?,
        discover: value("discover", &file.discover).map(|cluster| DiscoverOptions {
            cluster: cluster.to_owned(),
            iface: value("mdns-iface", &file.mdns_interface)
                .or(value("iface", &file.interface))
                .map(str::to_owned),
            disable_ipv4: p.bool_or("mdns-disable-ipv4", file.mdns_disable_ipv4 == Some(true)),
            disable_ipv6: p.bool_or("mdns-disable-ipv6", file.mdns_disable_ipv6 == Some(true)),
        }),
    })
}

/// [`vassal_roles::http::DEFAULT_MAX_CONNS`], or half the process's file-descriptor limit if
/// that is lower: the other half stays for gossip, RPC, backends and handlers.
fn default_max_conns() -> usize {
    let default = vassal_roles::http::DEFAULT_MAX_CONNS;
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => usize::try_from(soft / 2)
            .unwrap_or(default)
            .clamp(1, default),
        Err(_) => default,
    }
}

/// Serf's agent `Create`: tags from the tags file and the keyring from the keyring file, with
/// Serf's refusals when flags say otherwise.
pub(super) fn load_files(opts: &mut AgentOptions) -> Result<(), String> {
    let setup = |e: &dyn std::fmt::Display| format!("Failed to setup the Serf agent: {e}");
    if let Some(path) = &opts.tags_file {
        if !opts.tags.is_empty() {
            return Err(setup(
                &"Tags config not allowed while using tag files (drop -tag and -role, or -tags-file)",
            ));
        }
        if let Some(tags) = vassal_node::files::load_tags(path).map_err(|e| setup(&e))? {
            info!(
                "agent: Restored {} tag(s) from {}",
                tags.len(),
                path.display()
            );
            opts.tags = tags;
        }
    }
    if let Some(path) = &opts.keyring_file {
        if opts.keyring.is_some() {
            return Err(setup(
                &"Encryption key not allowed while using a keyring (drop -encrypt, or -keyring-file)",
            ));
        }
        let ring = vassal_node::files::load_keyring(path).map_err(|e| setup(&e))?;
        info!(
            "agent: Restored keyring with {} keys from {}",
            ring.keys().len(),
            path.display()
        );
        opts.keyring = Some(ring);
    }
    Ok(())
}

/// `-haproxy-socket`, `-haproxy-backend`, `-haproxy-quiesce`: the HAProxy runtime-API sync.
fn haproxy_options(
    p: &crate::flags::Parsed,
    balance: vassal_roles::pool::Balance,
) -> Result<Option<(std::path::PathBuf, vassal_roles::haproxy::SyncConfig)>, FlagError> {
    let Some(socket) = p.value("haproxy-socket") else {
        for flag in ["haproxy-backend", "haproxy-quiesce"] {
            if let Some(v) = p.value(flag) {
                return Err(FlagError::BadValue {
                    flag: flag.into(),
                    value: v.into(),
                    why: "needs -haproxy-socket=<path of HAProxy's admin socket>".into(),
                });
            }
        }
        return Ok(None);
    };
    let backend = p.value("haproxy-backend").unwrap_or("web");
    if !vassal_roles::haproxy::command::valid_server_name(backend) {
        return Err(FlagError::BadValue {
            flag: "haproxy-backend".into(),
            value: backend.into(),
            why: "HAProxy names allow only letters, digits, '.', '_', '-' and ':'".into(),
        });
    }
    let mut config = vassal_roles::haproxy::SyncConfig::new(backend);
    config.quiesce = p.parse_or("haproxy-quiesce", config.quiesce, parse_duration)?;
    // The same figures as the built-in balancer's leastload, as HAProxy server weights.
    config.weights = balance == vassal_roles::pool::Balance::LeastLoad;
    Ok(Some((socket.into(), config)))
}

/// The node's config from the options: memberlist's profile, Serf's settings (with the
/// file-only keys), and the addresses and files the node keeps.
pub(super) async fn node_config(opts: &AgentOptions) -> Result<NodeConfig, String> {
    let bind_addrs = resolve(&opts.bind, DEFAULT_PORT)
        .await
        .map_err(|e| format!("invalid -bind: {e}"))?;
    let bind = bind_addrs[0];
    let advertise = match &opts.advertise {
        None => None,
        Some(a) => Some(
            resolve(a, 0)
                .await
                .map_err(|e| format!("invalid -advertise: {e}"))?[0],
        ),
    };
    let mut ml = opts.profile.memberlist_config(&opts.node);
    ml.seed = random_seed();
    ml.keyring = opts.keyring.clone();
    ml.enable_compression = opts.compression;
    let mut serf = vassal_serf::Config::new(ml);
    serf.tags = opts.tags.clone();
    serf.protocol_version = opts.protocol;
    serf.broadcast_timeout = opts.broadcast_timeout;
    let f = &opts.file_only;
    if let Some(d) = f.reconnect_interval {
        serf.reconnect_interval = d;
    }
    if let Some(d) = f.reconnect_timeout {
        serf.reconnect_timeout = d;
    }
    if let Some(d) = f.tombstone_timeout {
        serf.tombstone_timeout = d;
    }
    if let Some(n) = f.user_event_size_limit {
        serf.user_event_size_limit = n;
    }
    if let Some(n) = f.query_size_limit {
        serf.query_size_limit = n;
    }
    if let Some(n) = f.query_response_size_limit {
        serf.query_response_size_limit = n;
    }
    serf.disable_coordinates |= f.disable_coordinates;
    if f.disable_name_resolution {
        serf.enable_name_conflict_resolution = false;
    }
    Ok(NodeConfig {
        advertise,
        snapshot_path: opts.snapshot.clone(),
        rejoin_after_leave: opts.rejoin,
        tags_file: opts.tags_file.clone(),
        keyring_file: opts.keyring_file.clone(),
        ..NodeConfig::new(serf, bind)
    })
}

/// A seed for the state machine's generator from the OS.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests;
