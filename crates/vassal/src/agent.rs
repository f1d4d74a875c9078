//! `vassal agent`: parse Serf's agent flags, start a node, join, log membership, and shut down on
//! signals the way Serf does (spec §5.1, §5.5, §5.6).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vassal_serf::coalesce::Coalescer;

use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, oneshot, watch, Notify};
use tracing::{error, info, warn};
use vassal_memberlist::wire::Keyring;
use vassal_node::addr::{resolve, DEFAULT_PORT};
use vassal_node::{Handle, NodeConfig};
use vassal_roles::backend;
use vassal_rpc::{LogHub, ServerConfig};

use crate::config::RawConfig;
use crate::flags::{parse_duration, FlagError, FlagSet, Kind};
use crate::handlers::{
    spawn_dispatcher, DispatchConfig, DispatchStats, HandlerEvent, HandlerSpec, SelfInfo,
};
use crate::logging::{self, LogLevel};

/// `-profile` / `profile`: one of memberlist's three timing profiles.
pub(crate) fn parse_profile(v: &str) -> Result<String, String> {
    match v {
        "lan" | "wan" | "local" => Ok(v.to_owned()),
        _ => Err("must be lan, wan or local".into()),
    }
}

/// `-protocol` / `protocol`: a Serf protocol version this build speaks.
pub(crate) fn parse_protocol(v: &str) -> Result<u8, String> {
    match v.parse::<u8>() {
        Ok(n) if (vassal_serf::PROTOCOL_MIN..=vassal_serf::PROTOCOL_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be {} to {}",
            vassal_serf::PROTOCOL_MIN,
            vassal_serf::PROTOCOL_MAX
        )),
    }
}

/// `-encrypt` / `encrypt_key`: base64 of a 16, 24 or 32-byte key, with Go's error texts.
pub(crate) fn parse_key(v: &str) -> Result<Keyring, String> {
    let key = vassal_serf::keys::decode_base64(v)?;
    Keyring::new(&key).map_err(|e| e.to_string())
}

/// How long a graceful leave may take before we exit anyway (Serf's `gracefulTimeout`).
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(3);

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
        .unimplemented("syslog", true)
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
    pub profile: String,
    pub tags: BTreeMap<String, String>,
    pub log_level: LogLevel,
    pub protocol: u8,
    pub compression: bool,
    pub broadcast_timeout: Duration,
    pub event_handlers: Vec<HandlerSpec>,
    /// `-handler-timeout`; `None` for no limit.
    pub handler_timeout: Option<Duration>,
    pub replay: bool,
    pub snapshot: Option<PathBuf>,
    pub rejoin: bool,
    pub tags_file: Option<PathBuf>,
    pub keyring_file: Option<PathBuf>,
    /// `-haproxy-socket` and the sync's settings.
    pub haproxy: Option<(std::path::PathBuf, vassal_haproxy::SyncConfig)>,
    /// The built-in demo roles (`-lb-listen`, `-lb-stats`, `-web-listen`).
    pub roles: vassal_roles::RolesConfig,
    pub rpc_addr: String,
    pub rpc_auth: String,
    /// The arguments these options came from, read again (with the files) on SIGHUP.
    pub args: Vec<String>,
    /// Settings only config files carry (Serf has no flags for them).
    pub file_only: FileOnly,
    /// `-discover`: mDNS discovery.
    pub discover: Option<DiscoverOptions>,
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
        for (key, set) in [
            ("statsite_addr", c.statsite_addr.is_some()),
            ("statsd_addr", c.statsd_addr.is_some()),
            ("enable_syslog", c.enable_syslog == Some(true)),
            ("syslog_facility", c.syslog_facility.is_some()),
            ("validate_node_names", c.validate_node_names.is_some()),
        ] {
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

pub fn options(args: &[String]) -> Result<AgentOptions, FlagError> {
    // Config files first, spelt as flags in front of the real ones: Serf's precedence.
    let first = flags().parse(args)?;
    let paths: Vec<PathBuf> = first
        .values("config-file")
        .iter()
        .chain(first.values("config-dir"))
        .map(PathBuf::from)
        .collect();
    let raw = RawConfig::read_paths(&paths).map_err(|e| FlagError::Config(e.to_string()))?;
    let mut all = raw.to_flag_args();
    all.extend(args.iter().cloned());
    let p = flags().parse(&all)?;
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
    let mut tags = BTreeMap::new();
    if let Some(role) = p.value("role") {
        tags.insert(backend::ROLE_TAG.to_owned(), role.to_owned());
    }
    for t in p.values("tag") {
        let (k, v) = crate::cli::parse_tag(t)
            .map_err(|_| bad("tag", t, "expected key=value, the key not empty".into()))?;
        tags.insert(k, v);
    }
    // The key itself is never repeated in the message: it is secret.
    let keyring = p
        .value("encrypt")
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
    let event_handlers: Vec<HandlerSpec> = p
        .values("event-handler")
        .iter()
        .map(|h| HandlerSpec::parse(h).map_err(|e| bad("event-handler", h, e.to_string())))
        .collect::<Result<_, _>>()?;
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
    let profile = p.parse_or("profile", "lan".to_owned(), parse_profile)?;
    let node = p
        .value("node")
        .map(str::to_owned)
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let lb_backend_cidrs = p
        .values("lb-backend-cidr")
        .iter()
        .map(|c| c.parse().map_err(|why| bad("lb-backend-cidr", c, why)))
        .collect::<Result<Vec<_>, _>>()?;
    let http_limits = vassal_roles::http::ServeLimits {
        header_timeout: Some(p.parse_or(
            "lb-header-timeout",
            vassal_roles::http::DEFAULT_HEADER_TIMEOUT,
            parse_duration,
        )?)
        .filter(|d| !d.is_zero()),
        max_conns: p.parse_or("lb-max-conns", default_max_conns(), parse_max_conns)?,
    };
    let roles = vassal_roles::RolesConfig {
        lb_listen,
        lb_stats,
        web_listen,
        answer_load: has_role && !handler_answers_load,
        lb_backend_cidrs,
        http_limits,
        ..vassal_roles::RolesConfig::new(&node)
    };
    Ok(AgentOptions {
        node,
        bind: p.value("bind").unwrap_or("0.0.0.0:7946").to_owned(),
        advertise: p.value("advertise").map(str::to_owned),
        join: p.values("join").to_vec(),
        retry_join: p.values("retry-join").to_vec(),
        retry_interval: p.parse_or("retry-interval", Duration::from_secs(30), parse_duration)?,
        retry_max: p.parse_or("retry-max", 0, |v| v.parse().map_err(|e| format!("{e}")))?,
        keyring,
        profile,
        tags,
        log_level: p.parse_or("log-level", LogLevel::Info, LogLevel::parse)?,
        protocol: p.parse_or("protocol", vassal_serf::PROTOCOL_DEFAULT, parse_protocol)?,
        compression: !p.bool("disable-compression"),
        broadcast_timeout: p.parse_or(
            "broadcast-timeout",
            Duration::from_secs(5),
            parse_duration,
        )?,
        event_handlers,
        handler_timeout: Some(p.parse_or(
            "handler-timeout",
            crate::handlers::runner::DEFAULT_TIMEOUT,
            parse_duration,
        )?)
        .filter(|d| !d.is_zero()),
        replay: p.bool("replay"),
        snapshot: p.value("snapshot").map(PathBuf::from),
        rejoin: p.bool("rejoin"),
        tags_file: p.value("tags-file").map(PathBuf::from),
        keyring_file: p.value("keyring-file").map(PathBuf::from),
        haproxy: haproxy_options(&p)?,
        roles,
        rpc_addr: p
            .value("rpc-addr")
            .unwrap_or(crate::cli::DEFAULT_RPC_ADDR)
            .to_owned(),
        rpc_auth: p.value("rpc-auth").unwrap_or("").to_owned(),
        args: args.to_vec(),
        file_only: FileOnly::from_raw(&raw)?,
        discover: p.value("discover").map(|cluster| DiscoverOptions {
            cluster: cluster.to_owned(),
            iface: p
                .value("mdns-iface")
                .or(p.value("iface"))
                .map(str::to_owned),
            disable_ipv4: p.bool("mdns-disable-ipv4"),
            disable_ipv6: p.bool("mdns-disable-ipv6"),
        }),
    })
}

/// `-lb-max-conns` / `lb_max_conns`: a connection count of at least 1.
pub(crate) fn parse_max_conns(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number of at least 1".into()),
    }
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
fn load_files(opts: &mut AgentOptions) -> Result<(), String> {
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
) -> Result<Option<(std::path::PathBuf, vassal_haproxy::SyncConfig)>, FlagError> {
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
    if !vassal_haproxy::command::valid_server_name(backend) {
        return Err(FlagError::BadValue {
            flag: "haproxy-backend".into(),
            value: backend.into(),
            why: "HAProxy names allow only letters, digits, '.', '_', '-' and ':'".into(),
        });
    }
    let mut config = vassal_haproxy::SyncConfig::new(backend);
    config.quiesce = p.parse_or("haproxy-quiesce", config.quiesce, parse_duration)?;
    Ok(Some((socket.into(), config)))
}

/// Resolves a join list: the addresses, warning about entries that did not resolve, or every
/// entry's error when none did (Serf's join error).
async fn resolve_all(list: &[String]) -> Result<Vec<SocketAddr>, Vec<String>> {
    let (addrs, errors) = vassal_node::addr::resolve_all(list).await;
    if addrs.is_empty() && !errors.is_empty() {
        return Err(errors);
    }
    for e in errors {
        warn!("{e}");
    }
    Ok(addrs)
}

/// Joins `list`; the number of nodes synced with, or Serf's multi-error text.
async fn join(handle: &Handle, list: &[String], replay: bool) -> Result<usize, String> {
    let addrs = resolve_all(list)
        .await
        .map_err(|errors| vassal_node::JoinError { errors }.to_string())?;
    handle.join(addrs, replay).await.map_err(|e| e.to_string())
}

pub async fn run(opts: AgentOptions) -> ExitCode {
    let logs = LogHub::new();
    let level = logging::init(opts.log_level, logs.clone());
    match start(opts, logs, level).await {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn start(
    mut opts: AgentOptions,
    logs: LogHub,
    level: logging::LevelControl,
) -> Result<ExitCode, String> {
    for key in &opts.file_only.ignored {
        warn!("agent: config key {key:?} is not supported by vassal and is ignored");
    }
    if opts.rejoin && opts.snapshot.is_none() {
        println!("Warning: 'RejoinAfterLeave' enabled without snapshot file");
    }
    load_files(&mut opts)?;
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
    let mut ml = match opts.profile.as_str() {
        "wan" => vassal_memberlist::Config::wan(&opts.node),
        "local" => vassal_memberlist::Config::local(&opts.node),
        _ => vassal_memberlist::Config::lan(&opts.node),
    };
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
    let config = NodeConfig {
        advertise,
        snapshot_path: opts.snapshot.clone(),
        rejoin_after_leave: opts.rejoin,
        tags_file: opts.tags_file.clone(),
        keyring_file: opts.keyring_file.clone(),
        ..NodeConfig::new(serf, bind)
    };

    println!("==> Starting Serf agent...");
    // Events from the very start, so handlers see our own member-join too.
    let (handle, events, mut task) = vassal_node::spawn_with_events(config)
        .await
        .map_err(|e| e.to_string())?;
    // Serf's agent event channel: coalesced, shared by handlers and RPC streams.
    let agent_events = coalesced_events(events);
    let handler_events = agent_events.subscribe();
    let rpc_listener = match tokio::net::TcpListener::bind(&opts.rpc_addr).await {
        Ok(l) => l,
        Err(e) => {
            handle.shutdown().await;
            return Err(format!(
                "Error starting RPC listener: listen tcp {}: bind: {} \
                 (is another agent running? pass -rpc-addr to choose another address)",
                opts.rpc_addr,
                vassal_node::io_reason(&e)
            ));
        }
    };
    println!("==> Starting Serf agent RPC...");
    let left = Arc::new(Notify::new());
    tokio::spawn(vassal_rpc::serve(
        rpc_listener,
        handle.clone(),
        ServerConfig {
            auth_key: opts.rpc_auth.clone(),
            logs,
            events: agent_events.clone(),
            event_handlers: handler_stats(&opts.event_handlers),
            left: left.clone(),
        },
    ));
    println!("==> Serf agent running!");
    println!("         Node name: '{}'", opts.node);
    println!("         Bind addr: '{}'", handle.local_addr());
    println!("    Advertise addr: '{}'", handle.advertise_addr());
    println!("          RPC addr: '{}'", opts.rpc_addr);
    println!("         Encrypted: {}", opts.keyring.is_some());
    println!("          Snapshot: {}", opts.snapshot.is_some());
    println!("           Profile: {}", opts.profile);
    println!();
    println!("==> Log data will now stream in as it occurs:");
    println!();

    // Always fed, even with no handlers yet: a SIGHUP may add some.
    let me = SelfInfo {
        name: opts.node.clone(),
        tags: opts.tags.clone(),
    };
    let (scripts_tx, scripts) = watch::channel((opts.event_handlers.clone(), me));
    let dispatch = DispatchConfig {
        timeout: opts.handler_timeout,
        ..DispatchConfig::default()
    };
    let handler_stats = Arc::new(DispatchStats::default());
    tokio::spawn(feed_handlers(
        handler_events,
        scripts_tx.clone(),
        scripts,
        handle.clone(),
        dispatch,
        handler_stats.clone(),
    ));

    let _discovery = match &opts.discover {
        None => None,
        Some(d) => Some(crate::discover::start(
            crate::discover::Settings {
                cluster: d.cluster.clone(),
                node: opts.node.clone(),
                addr: handle.advertise_addr(),
                iface: d.iface.clone(),
                disable_ipv4: d.disable_ipv4,
                disable_ipv6: d.disable_ipv6,
                replay: opts.replay,
            },
            handle.clone(),
        )?),
    };

    // Built-in demo roles: listening before the first join, so the balancer sees the web nodes
    // that are already there and a web node can be checked as soon as it is known.
    let roles = match vassal_roles::start(&handle, opts.roles.clone()).await {
        Ok(r) => r,
        Err(e) => {
            handle.shutdown().await;
            return Err(e.to_string());
        }
    };

    if !opts.join.is_empty() {
        info!("Joining cluster...(replay: {})", opts.replay);
        match join(&handle, &opts.join, opts.replay).await {
            Ok(n) => info!("Join completed. Synced with {n} initial agents"),
            Err(e) => {
                roles.stop().await;
                handle.shutdown().await;
                return Err(e);
            }
        }
    }

    // After the initial join, so that the start-up reconcile already knows the web members.
    if let Some((socket, config)) = &opts.haproxy {
        let mut config = config.clone();
        // HAProxy's own listener is unknown to us: loopback servers are allowed when this
        // cluster lives on loopback (one host, as in the tests), or when named by a range.
        config.backends = backend::BackendPolicy {
            allow_loopback: handle.advertise_addr().ip().to_canonical().is_loopback(),
            cidrs: opts.roles.lb_backend_cidrs.clone(),
        };
        tokio::spawn(vassal_haproxy::run(handle.clone(), socket.clone(), config));
    }

    let (gave_up_tx, mut gave_up) = oneshot::channel();
    if !opts.retry_join.is_empty() {
        tokio::spawn(retry_join(
            handle.clone(),
            opts.retry_join.clone(),
            opts.retry_interval,
            opts.retry_max,
            opts.replay,
            gave_up_tx,
        ));
    }

    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    // Serf dumps its metrics on SIGUSR1; without a handler the signal would kill us.
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    let mut retry_running = true;
    let mut tags = opts.tags.clone();
    let code = loop {
        tokio::select! {
            // Serf's handleSignals: SIGINT leaves unless skip_leave_on_interrupt, SIGTERM
            // only with leave_on_terminate; not leaving is exit status 1.
            _ = sigint.recv() => {
                println!("==> Caught signal: interrupt");
                if opts.file_only.skip_leave_on_interrupt {
                    break ExitCode::FAILURE;
                }
                break graceful_leave(&handle, &mut sigint).await;
            }
            _ = sigterm.recv() => {
                println!("==> Caught signal: terminated");
                if !opts.file_only.leave_on_terminate {
                    break ExitCode::FAILURE;
                }
                break graceful_leave(&handle, &mut sigterm).await;
            }
            _ = sighup.recv() => {
                println!("==> Caught signal: hangup");
                reload(&opts, &level, &scripts_tx, &handle, &mut tags).await;
            }
            _ = sigusr1.recv() => telemetry_dump(&handle, &handler_stats).await,
            r = &mut gave_up, if retry_running => match r {
                Ok(()) => break ExitCode::FAILURE,
                Err(_) => retry_running = false,
            },
            // An RPC client's `leave` finished: Serf's agent then shuts down, status 0.
            () = left.notified() => break ExitCode::SUCCESS,
            _ = &mut task => {
                error!("serf driver stopped unexpectedly");
                break ExitCode::FAILURE;
            }
        }
    };
    // After the leave: the balancer has stopped sending here, so open requests can finish.
    roles.stop().await;
    handle.shutdown().await;
    Ok(code)
}

/// Serf's `handleReload`: read the same flags and files again, then apply what Serf applies
/// while running (the log level, the event handlers, the tags). A bad file keeps the old
/// settings and says why.
async fn reload(
    opts: &AgentOptions,
    level: &logging::LevelControl,
    scripts: &watch::Sender<(Vec<HandlerSpec>, SelfInfo)>,
    handle: &Handle,
    tags: &mut BTreeMap<String, String>,
) {
    println!("==> Reloading configuration...");
    let new = match options(&opts.args) {
        Ok(new) => new,
        Err(e) => {
            error!("agent: Failed to reload configs: {e}");
            return;
        }
    };
    level.set(new.log_level);
    scripts.send_modify(|(handlers, _)| *handlers = new.event_handlers.clone());
    info!(
        "agent: Reloaded configuration: {} event handler(s)",
        new.event_handlers.len()
    );
    // With a tags file, the file (kept by the agent) is the source of truth, as in Serf.
    if opts.tags_file.is_none() && new.tags != *tags {
        match handle.set_tags(new.tags.clone()).await {
            Ok(()) => *tags = new.tags,
            Err(e) => error!("agent: Failed to update tags: {e}"),
        }
    }
}

/// What SIGUSR1 logs (Serf's go-metrics `InmemSignal` dump): the figures the node and the
/// handler dispatcher keep, one `telemetry:` line each. The metrics issue fills in more.
async fn telemetry_dump(handle: &Handle, handlers: &DispatchStats) {
    use std::sync::atomic::Ordering;
    let (stats, members) = match (handle.stats().await, handle.members().await) {
        (Ok(s), Ok(m)) => (s, m),
        (Err(e), _) | (_, Err(e)) => {
            warn!("telemetry: the node did not answer: {e}");
            return;
        }
    };
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for m in &members {
        *by_status.entry(m.status.to_string()).or_insert(0) += 1;
    }
    let counts: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}={n}")).collect();
    info!(
        "telemetry: members {} ({})",
        members.len(),
        counts.join(" ")
    );
    info!(
        "telemetry: health_score={} encrypted={} coordinate_resets={}",
        stats.health_score,
        stats.encrypted,
        stats
            .coordinate_resets
            .map(|n| n.to_string())
            .unwrap_or_else(|| "disabled".into())
    );
    info!(
        "telemetry: queues intent={} event={} query={} handlers={} (handler events dropped={}, \
         handlers killed at timeout={})",
        stats.intent_queue,
        stats.event_queue,
        stats.query_queue,
        handlers.queued.load(Ordering::Relaxed),
        handlers.dropped.load(Ordering::Relaxed),
        handlers.killed.load(Ordering::Relaxed)
    );
    info!(
        "telemetry: clocks member={} event={} query={}",
        stats.member_time, stats.event_time, stats.query_time
    );
    let drops: Vec<String> = stats
        .drops
        .iter()
        .map(|(reason, n)| format!("{}={n}", reason.replace(' ', "_")))
        .collect();
    info!(
        "telemetry: network malformed_packets={} malformed_streams={} dropped: {}",
        stats.malformed_packets,
        stats.malformed_streams,
        if drops.is_empty() {
            "none".to_owned()
        } else {
            drops.join(" ")
        }
    );
}

/// Serf's `handleSignals` for a graceful leave: 0 once it completes; 1 on timeout or a second
/// signal.
async fn graceful_leave(handle: &Handle, sigint: &mut tokio::signal::unix::Signal) -> ExitCode {
    println!("==> Gracefully shutting down agent...");
    tokio::select! {
        r = handle.leave() => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::time::sleep(GRACEFUL_TIMEOUT) => {
            warn!("graceful leave did not finish in {GRACEFUL_TIMEOUT:?}; exiting");
            ExitCode::FAILURE
        }
        _ = sigint.recv() => ExitCode::FAILURE,
    }
}

/// Serf's `retryJoin`: try every `interval` until a join works or `max` attempts failed.
async fn retry_join(
    handle: Handle,
    list: Vec<String>,
    interval: Duration,
    max: u32,
    replay: bool,
    gave_up: oneshot::Sender<()>,
) {
    info!("Joining cluster...(replay: {replay})");
    let mut attempt = 0u32;
    loop {
        match join(&handle, &list, replay).await {
            Ok(n) => {
                info!("Join completed. Synced with {n} initial agents");
                return;
            }
            Err(e) => {
                attempt += 1;
                // As in Serf: `-retry-max N` allows N retries after the first attempt.
                if max > 0 && attempt > max {
                    error!("maximum retry join attempts made, exiting");
                    let _ = gave_up.send(());
                    return;
                }
                warn!("Join failed: {e}, retrying in {interval:?}");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Serf's agent event channel: the node's events with member events, and user events sent
/// with coalescing, held for up to 3 s (or 1 s of quiet) and passed on as fewer events. Event
/// handlers and RPC streams subscribe to the returned sender.
fn coalesced_events(
    mut events: broadcast::Receiver<vassal_serf::Event>,
) -> broadcast::Sender<vassal_serf::Event> {
    let (tx, _) = broadcast::channel(1024);
    let out = tx.clone();
    tokio::spawn(async move {
        let mut coalescer = Coalescer::new(Duration::from_secs(3), Duration::from_secs(1));
        let mut closed = false;
        loop {
            let flush_due = vassal_node::sleep_until(coalescer.poll_timeout());
            tokio::select! {
                e = events.recv() => match e {
                    Ok(e) => coalescer.push(e, Instant::now()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!("agent: event subscribers missed {n} events");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        coalescer.flush();
                        closed = true;
                    }
                },
                () = flush_due => coalescer.handle_timeout(Instant::now()),
            }
            for e in coalescer.drain() {
                // No subscriber is fine.
                let _ = out.send(e);
            }
            if closed {
                return;
            }
        }
    });
    tx
}

/// Forwards the agent's (coalesced) events to the handler dispatcher. This only queues (the
/// dispatcher bounds its own queue, dropping the oldest), so it keeps up and never blocks the
/// node.
async fn feed_handlers(
    mut events: broadcast::Receiver<vassal_serf::Event>,
    scripts_tx: watch::Sender<(Vec<HandlerSpec>, SelfInfo)>,
    scripts: watch::Receiver<(Vec<HandlerSpec>, SelfInfo)>,
    node: Handle,
    config: DispatchConfig,
    stats: Arc<DispatchStats>,
) {
    let (tx, _task) = spawn_dispatcher(scripts, Some(node), config, stats);
    loop {
        match events.recv().await {
            Ok(e) => {
                // Our own tags as they are now (`SERF_TAG_*`), after `vassal tags` or a reload.
                if let vassal_serf::Event::Member(m) = &e {
                    scripts_tx.send_if_modified(|(_, me)| {
                        match m.members.iter().find(|x| x.name == me.name) {
                            Some(x) if x.tags != me.tags => {
                                me.tags = x.tags.clone();
                                true
                            }
                            _ => false,
                        }
                    });
                }
                if let Some(e) = HandlerEvent::from_serf(&e) {
                    if tx.send(e).is_err() {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("agent: event handlers missed {n} events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Serf's `event_handlers` statistics: `"<event>:<name>"` → script, one per filter.
fn handler_stats(handlers: &[HandlerSpec]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for h in handlers {
        for f in &h.filters {
            let key = match f {
                crate::handlers::spec::Filter::All => "*:".to_owned(),
                crate::handlers::spec::Filter::Member(k) => format!("{k}:"),
                crate::handlers::spec::Filter::User(n) => {
                    format!("user:{}", n.as_deref().unwrap_or(""))
                }
                crate::handlers::spec::Filter::Query(n) => {
                    format!("query:{}", n.as_deref().unwrap_or(""))
                }
            };
            out.insert(key, h.script.clone());
        }
    }
    out
}

/// A seed for the state machine's generator from the OS.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_match_serf() {
        let o = options(&[]).unwrap();
        assert_eq!(o.bind, "0.0.0.0:7946");
        assert_eq!(o.retry_interval, Duration::from_secs(30));
        assert_eq!(o.retry_max, 0);
        assert_eq!(o.profile, "lan");
        assert_eq!(o.protocol, 5);
        assert_eq!(o.rpc_addr, "127.0.0.1:7373");
        assert_eq!(o.rpc_auth, "");
        assert!(!o.node.is_empty(), "node defaults to the hostname");
    }

    #[test]
    fn tags_and_joins_repeat() {
        let o = options(&args(&[
            "-tag",
            "role=web",
            "--tag=dc=eu",
            "-join",
            "a",
            "-join=b:7000",
        ]))
        .unwrap();
        assert_eq!(o.tags["role"], "web");
        assert_eq!(o.tags["dc"], "eu");
        assert_eq!(o.join, ["a", "b:7000"]);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (a, flag) in [
            (&["-tag", "novalue"][..], "-tag"),
            (&["-profile=moon"], "-profile"),
            (&["-encrypt=aGVsbG8="], "-encrypt"),
            (&["-protocol=9"], "-protocol"),
            (&["-retry-interval=5"], "-retry-interval"),
            (&["-log-level=loud"], "-log-level"),
        ] {
            let e = options(&args(a)).unwrap_err().to_string();
            assert!(e.contains(flag), "{a:?}: {e}");
        }
    }

    #[test]
    fn issue_11_limits_have_defaults_and_zero_means_none() {
        let o = options(&[]).unwrap();
        assert_eq!(o.handler_timeout, Some(Duration::from_secs(60)));
        let l = o.roles.http_limits;
        assert_eq!(l.header_timeout, Some(Duration::from_secs(10)));
        assert!((1..=4096).contains(&l.max_conns), "{}", l.max_conns);
        assert!(o.roles.lb_backend_cidrs.is_empty());

        let o = options(&args(&[
            "-handler-timeout=0",
            "-lb-header-timeout=0",
            "-lb-max-conns=7",
            "-lb-backend-cidr=10.0.0.0/8",
            "-lb-backend-cidr",
            "127.0.0.2",
        ]))
        .unwrap();
        assert_eq!(o.handler_timeout, None);
        assert_eq!(o.roles.http_limits.header_timeout, None);
        assert_eq!(o.roles.http_limits.max_conns, 7);
        let cidrs: Vec<String> = o
            .roles
            .lb_backend_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(cidrs, ["10.0.0.0/8", "127.0.0.2/32"]);

        for (a, says) in [
            (&["-lb-max-conns=0"][..], "-lb-max-conns"),
            (&["-lb-backend-cidr=10.0.0.1/8"], "did you mean 10.0.0.0/8"),
            (&["-handler-timeout=soon"], "-handler-timeout"),
        ] {
            let e = options(&args(a)).unwrap_err().to_string();
            assert!(e.contains(says), "{a:?}: {e}");
        }
    }

    #[test]
    fn a_bad_encrypt_key_is_not_repeated_in_the_error() {
        let e = options(&args(&["-encrypt=SECRETSECRETSECRET!"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("-encrypt") && e.contains("illegal base64") && !e.contains("SECRET"),
            "{e}"
        );
    }

    #[test]
    fn a_16_byte_key_makes_a_keyring() {
        let o = options(&args(&["-encrypt", "AAAAAAAAAAAAAAAAAAAAAA=="])).unwrap();
        assert!(o.keyring.is_some());
    }

    #[test]
    fn unimplemented_serf_flags_are_refused_by_name() {
        let e = options(&args(&["-node=a", "-syslog"])).unwrap_err();
        assert!(e.to_string().contains("-syslog"), "{e}");
    }

    #[test]
    fn event_handlers_repeat_and_replay_is_a_bool() {
        let o = options(&args(&[
            "-event-handler",
            "x.sh",
            "-event-handler=member-join,user:deploy=y.sh a=b",
            "-replay",
        ]))
        .unwrap();
        assert_eq!(o.event_handlers.len(), 2);
        assert_eq!(o.event_handlers[1].script, "y.sh a=b");
        assert!(o.replay);
        assert!(!options(&[]).unwrap().replay);
    }

    #[test]
    fn a_bad_handler_filter_names_the_filter_and_the_flag() {
        let e = options(&args(&["-event-handler=member-jion=x.sh"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("-event-handler") && e.contains("\"member-jion\""),
            "{e}"
        );
    }

    // spec §5.7, Go's agent.go: tags come from flags or from the tags file, never both.
    #[test]
    fn a_tags_file_replaces_tag_flags_and_refuses_to_combine_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.json");
        let file = format!("-tags-file={}", path.display());
        let e = load_files(&mut options(&args(&["-tag=role=web", &file])).unwrap()).unwrap_err();
        assert!(
            e.contains("Tags config not allowed while using tag files"),
            "{e}"
        );
        let e = load_files(&mut options(&args(&["-role=web", &file])).unwrap()).unwrap_err();
        assert!(e.contains("Tags config not allowed"), "{e}");

        let mut o = options(&args(&[&file])).unwrap();
        load_files(&mut o).unwrap();
        assert!(o.tags.is_empty(), "no file yet: no tags");
        std::fs::write(&path, r#"{"role": "lb", "dc": "eu"}"#).unwrap();
        let mut o = options(&args(&[&file])).unwrap();
        load_files(&mut o).unwrap();
        assert_eq!(o.tags["role"], "lb");
        assert_eq!(o.tags["dc"], "eu");
    }

    #[test]
    fn a_keyring_file_must_hold_keys_and_excludes_encrypt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let file = format!("-keyring-file={}", path.display());
        let e = load_files(&mut options(&args(&[&file])).unwrap()).unwrap_err();
        assert!(
            e.contains("does not exist") && e.contains("keyring.json"),
            "{e}"
        );
        std::fs::write(&path, "[]").unwrap();
        let e = load_files(&mut options(&args(&[&file])).unwrap()).unwrap_err();
        assert!(e.contains("Keyring file contains no keys"), "{e}");

        std::fs::write(
            &path,
            r#"["AQEBAQEBAQEBAQEBAQEBAQ==", "AgICAgICAgICAgICAgICAg=="]"#,
        )
        .unwrap();
        let e =
            load_files(&mut options(&args(&["-encrypt=AAAAAAAAAAAAAAAAAAAAAA==", &file])).unwrap())
                .unwrap_err();
        assert!(
            e.contains("Encryption key not allowed while using a keyring"),
            "{e}"
        );
        let mut o = options(&args(&[&file])).unwrap();
        load_files(&mut o).unwrap();
        let ring = o.keyring.expect("keyring from the file");
        assert_eq!(ring.primary(), &[1u8; 16][..]);
        assert_eq!(ring.keys().len(), 2);
    }

    #[test]
    fn snapshot_and_rejoin_are_serf_flags() {
        let o = options(&args(&["-snapshot=/tmp/x.snap", "-rejoin"])).unwrap();
        assert_eq!(o.snapshot, Some(PathBuf::from("/tmp/x.snap")));
        assert!(o.rejoin);
        let o = options(&[]).unwrap();
        assert_eq!((o.snapshot, o.rejoin), (None, false));
    }

    #[test]
    fn haproxy_flags_need_the_socket_and_default_to_backend_web() {
        assert!(options(&[]).unwrap().haproxy.is_none());
        let o = options(&args(&["-haproxy-socket=/run/h.sock"])).unwrap();
        let (socket, config) = o.haproxy.unwrap();
        assert_eq!(socket, std::path::Path::new("/run/h.sock"));
        assert_eq!(config.backend, "web");
        assert_eq!(config.quiesce, Duration::from_millis(200));
        let o = options(&args(&[
            "-haproxy-socket=/s",
            "-haproxy-backend=pool",
            "-haproxy-quiesce=1s",
        ]))
        .unwrap();
        let (_, config) = o.haproxy.unwrap();
        assert_eq!(
            (config.backend.as_str(), config.quiesce),
            ("pool", Duration::from_secs(1))
        );
        for (a, flag) in [
            (&["-haproxy-backend=web"][..], "-haproxy-socket"),
            (
                &["-haproxy-socket=/s", "-haproxy-backend=a b"],
                "-haproxy-backend",
            ),
            (
                &["-haproxy-socket=/s", "-haproxy-quiesce=5"],
                "-haproxy-quiesce",
            ),
        ] {
            let e = options(&args(a)).unwrap_err().to_string();
            assert!(e.contains(flag), "{a:?}: {e}");
        }
    }

    #[test]
    fn web_listen_advertises_its_port_in_the_http_port_tag() {
        let o = options(&args(&["-tag=role=web", "-web-listen=127.0.0.2:8001"])).unwrap();
        assert_eq!(o.tags["http_port"], "8001");
        assert_eq!(o.roles.web_listen, Some("127.0.0.2:8001".parse().unwrap()));
        assert!(o.roles.answer_load);
        let o = options(&args(&["-web-listen=127.0.0.2:8001", "-tag=http_port=80"])).unwrap();
        assert_eq!(o.tags["http_port"], "80", "an explicit tag wins");
    }

    #[test]
    fn role_flags_need_ip_port_and_stats_needs_the_balancer() {
        let e = options(&args(&["-lb-listen=localhost"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("-lb-listen") && e.contains("IP:PORT"), "{e}");
        let e = options(&args(&["-lb-stats=127.0.0.1:9999"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("-lb-stats") && e.contains("-lb-listen"), "{e}");
        let o = options(&args(&[
            "-lb-listen=127.0.0.1:8080",
            "-lb-stats=127.0.0.1:9999",
        ]))
        .unwrap();
        assert_eq!(o.roles.lb_stats, Some("127.0.0.1:9999".parse().unwrap()));
    }

    #[test]
    fn load_is_answered_by_roles_unless_a_handler_answers_it() {
        let answers = |a: &[&str]| options(&args(a)).unwrap().roles.answer_load;
        assert!(answers(&["-tag=role=lb"]));
        assert!(answers(&["-tag=role=web"]));
        assert!(!answers(&["-tag=role=db"]), "no demo role");
        assert!(!answers(&[
            "-tag=role=web",
            "-event-handler=query:load=uptime"
        ]));
        assert!(
            !answers(&["-tag=role=web", "-event-handler=uptime"]),
            "a catch-all handler"
        );
        assert!(answers(&[
            "-tag=role=web",
            "-event-handler=query:other=x.sh"
        ]));
    }
}
