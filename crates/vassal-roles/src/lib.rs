//! Built-in roles for the Serf load-balancer demo, run inside `vassal agent`:
//!
//! - [`lb`]: an HTTP reverse proxy over the members tagged `role=web`, driven by the node's
//!   events (Serf's demo edited haproxy.cfg from handler scripts), with health checks, draining
//!   on graceful leave, and retries on another backend; [`stats`] is its live stats page;
//! - [`web`]: a page naming this node with the cluster's load table from a periodic `load`
//!   query, every response marked `X-Served-By`;
//! - [`load`]: the answer to the `load` query (`uptime`'s line);
//! - [`haproxy`]: keeps a real HAProxy's backend in step with the same members through its
//!   runtime API (`vassal agent -haproxy-socket`), instead of the built-in balancer;
//! - [`ui`]: the live cluster page (`-ui-addr`): members, a map of the Vivaldi coordinates,
//!   the node's health and queues, and events as they happen.
//!
//! [`pool`] is the pure rotation and health state machine under the balancer; [`backend`] says
//! which members are backends, and where; [`upstream`] holds the balancer's kept-alive
//! connections to them, [`timer`] the cheap deadlines its requests wait under, and [`cork`]
//! holds its writes to the end of each worker thread's turn.
//!
//! ```no_run
//! # async fn demo(handle: vassal_node::Handle) -> Result<(), vassal_roles::RolesError> {
//! let config = vassal_roles::RolesConfig {
//!     web_listen: Some("127.0.0.2:8000".parse().unwrap()),
//!     answer_load: true,
//!     ..vassal_roles::RolesConfig::new("web-1")
//! };
//! let roles = vassal_roles::start(&handle, config).await?;
//! // … until the agent leaves:
//! roles.stop().await;
//! # Ok(()) }
//! ```

pub mod backend;
pub mod check;
pub mod cork;
pub mod haproxy;
pub mod http;
pub mod lb;
pub mod load;
pub mod pool;
pub mod relay;
pub mod stats;
pub mod timer;
pub mod tls;
pub mod ui;
pub mod upstream;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;
use vassal_node::Handle;

/// The most threads the balancer serves its connections on (HAProxy 2.6's `MAX_THREADS`):
/// past that, a many-core host gains nothing from more, and each one costs a runtime.
pub const MAX_LB_THREADS: usize = 64;

/// Which roles to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesConfig {
    /// This node's name (the web page's host, `X-Served-By`).
    pub node: String,
    /// Where the balancer proxies from (`-lb-listen`).
    pub lb_listen: Option<SocketAddr>,
    /// Where the balancer's stats page is served (`-lb-stats`); needs `lb_listen`.
    pub lb_stats: Option<SocketAddr>,
    /// Where the web role serves its page (`-web-listen`).
    pub web_listen: Option<SocketAddr>,
    /// Answer `load` queries (when no handler script does).
    pub answer_load: bool,
    /// `-lb-backend-cidr`: the balancer's backends must be inside one of these (when any are
    /// given); see [`backend::BackendPolicy`].
    pub lb_backend_cidrs: Vec<backend::Cidr>,
    /// `-lb-header-timeout`, `-lb-max-conns`: the limits of every built-in HTTP server (the
    /// balancer, its stats page, the web role).
    pub http_limits: http::ServeLimits,
    /// Where the live cluster page is served (`-ui-addr`).
    pub ui_listen: Option<SocketAddr>,
    /// `-lb-check-*`: the balancer's health checks.
    pub lb_check: check::CheckConfig,
    /// `-lb-balance`: how the balancer picks a backend.
    pub lb_balance: pool::Balance,
    /// `-lb-tls-cert`, `-lb-tls-key`: the balancer serves HTTPS (HTTP/2 and HTTP/1.1).
    pub lb_tls: Option<tls::TlsFiles>,
    /// `-web-delay`: the web role holds every answer this long first (to stand in for a
    /// slow node in benchmarks and demos of `leastload`).
    pub web_delay: Option<std::time::Duration>,
    /// `-lb-threads`: how many threads serve the balancer's connections (HAProxy's
    /// `nbthread`); `None`: one per CPU the agent may use, at most [`MAX_LB_THREADS`].
    pub lb_threads: Option<usize>,
}

/// `-lb-threads` / `lb_threads`: a thread count from 1 to [`MAX_LB_THREADS`].
pub fn parse_lb_threads(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_LB_THREADS).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number from 1 to {MAX_LB_THREADS} (HAProxy's nbthread limit)"
        )),
    }
}

impl RolesConfig {
    /// No roles at all.
    pub fn new(node: &str) -> Self {
        RolesConfig {
            node: node.to_owned(),
            lb_listen: None,
            lb_stats: None,
            web_listen: None,
            answer_load: false,
            lb_backend_cidrs: Vec::new(),
            http_limits: http::ServeLimits::default(),
            ui_listen: None,
            lb_check: check::CheckConfig::default(),
            lb_balance: pool::Balance::RoundRobin,
            web_delay: None,
            lb_threads: None,
            lb_tls: None,
        }
    }
}

/// A role could not start; nothing of the roles is running.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("cannot listen on {addr} for {flag}: {source} (is another program using it? pass {flag} with another address)")]
    Listen {
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("-lb-stats needs -lb-listen: the stats page belongs to the load balancer")]
    StatsWithoutLb,
    #[error("{0}")]
    BadCheck(String),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot start the load balancer's threads: {0}")]
    Threads(std::io::Error),
}

/// The running roles. [`stop`](Self::stop) them after the node has left, so that requests in
/// flight finish; dropping them stops them too, without waiting.
#[derive(Debug)]
pub struct Roles {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The bound addresses (with the real port if 0 was asked).
    pub lb_addr: Option<SocketAddr>,
    pub stats_addr: Option<SocketAddr>,
    pub web_addr: Option<SocketAddr>,
    pub ui_addr: Option<SocketAddr>,
    /// The balancer's certificate, when it serves HTTPS.
    tls: Option<Arc<tls::CertStore>>,
}

impl Roles {
    /// Reads the balancer's certificate and key again (SIGHUP): new connections get the new
    /// pair, open ones keep theirs. `None` without TLS; an error keeps the old pair.
    pub fn reload_tls(&self) -> Option<Result<&tls::TlsFiles, tls::TlsError>> {
        let store = self.tls.as_ref()?;
        Some(store.reload().map(|()| store.files()))
    }

    /// Stops accepting, lets open requests finish (at most [`http::SHUTDOWN_GRACE`]).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn url(addr: Option<SocketAddr>) -> String {
    addr.map(|a| format!("http://{a}/")).unwrap_or_default()
}

async fn listen(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, RolesError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RolesError::Listen { flag, addr, source })
}

/// Binds every configured role's listener (so a taken port is reported before anything runs),
/// then starts the roles on `handle`'s node.
pub async fn start(handle: &Handle, config: RolesConfig) -> Result<Roles, RolesError> {
    if config.lb_stats.is_some() && config.lb_listen.is_none() {
        return Err(RolesError::StatsWithoutLb);
    }
    config.lb_check.validate().map_err(RolesError::BadCheck)?;
    // Read before anything listens, so a bad file stops the start with its own message.
    let tls_store = match (&config.lb_tls, config.lb_listen) {
        (Some(files), Some(_)) => Some(tls::CertStore::open(files.clone())?),
        _ => None,
    };
    let acceptor = tls_store.as_ref().map(|s| s.acceptor()).transpose()?;
    let lb_listener = match config.lb_listen {
        Some(a) => Some(listen("-lb-listen", a).await?),
        None => None,
    };
    let stats_listener = match config.lb_stats {
        Some(a) => Some(listen("-lb-stats", a).await?),
        None => None,
    };
    let web_listener = match config.web_listen {
        Some(a) => Some(listen("-web-listen", a).await?),
        None => None,
    };
    let ui_listener = match config.ui_listen {
        Some(a) => Some(listen("-ui-addr", a).await?),
        None => None,
    };
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let (lb_addr, stats_addr, web_addr, ui_addr) = (
        local(&lb_listener),
        local(&stats_listener),
        local(&web_listener),
        local(&ui_listener),
    );

    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    if config.answer_load {
        tasks.push(tokio::spawn(load::answer(
            handle.clone(),
            handle.events(),
            stopped.clone(),
        )));
    }
    let limits = config.http_limits;
    if let (Some(listener), Some(listen)) = (lb_listener, lb_addr) {
        let policy = backend::BackendPolicy::for_listener(listen.ip(), config.lb_backend_cidrs);
        // Unless told otherwise, one thread per core serves the balancer's connections, as
        // HAProxy's default `nbthread` does, and at most as many as HAProxy 2.6 allows.
        let threads = config
            .lb_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, MAX_LB_THREADS);
        let workers = http::Workers::start("vassal-lb", threads).map_err(RolesError::Threads)?;
        let lb = lb::Lb::new(
            &config.node,
            policy,
            config.lb_check.clone(),
            config.lb_balance,
            workers.len(),
        );
        tasks.push(tokio::spawn(lb::run_membership(
            lb.clone(),
            handle.clone(),
            handle.events(),
            stopped.clone(),
        )));
        let proxy = lb.clone();
        let https = acceptor.is_some();
        tasks.push(tokio::spawn(http::serve_with(
            "-lb-listen",
            listener,
            limits,
            acceptor,
            Some(workers),
            // Boxed: the proxying future is large, and hyper moves it into place (a copy of
            // all of it per request, unboxed).
            move |req, peer| Box::pin(proxy.clone().proxy(req, peer)),
            stopped.clone(),
        )));
        let lb_url = match lb_addr {
            Some(a) if https => format!("https://{a}/ (HTTP/2 and HTTP/1.1)"),
            a => url(a),
        };
        info!("load balancer listening on {lb_url}");
        if let Some(listener) = stats_listener {
            tasks.push(tokio::spawn(http::serve(
                "-lb-stats",
                listener,
                limits,
                move |req, _| stats::serve(lb.clone(), req),
                stopped.clone(),
            )));
            info!("load balancer stats page on {}", url(stats_addr));
        }
    }
    if let Some(listener) = web_listener {
        let web = web::Web::new(&config.node, config.web_delay);
        tasks.push(tokio::spawn(web::run_load_queries(
            web.clone(),
            handle.clone(),
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(web::run_load_tag(
            web.clone(),
            handle.clone(),
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(http::serve(
            "-web-listen",
            listener,
            limits,
            move |req, _| web.clone().serve(req),
            stopped.clone(),
        )));
        info!("web role listening on {}", url(web_addr));
    }
    if let Some(listener) = ui_listener {
        let ui = ui::Ui::new(&config.node, handle.clone(), stopped.clone());
        tasks.push(tokio::spawn(ui::run_events(
            ui.clone(),
            handle.events(),
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(http::serve(
            "-ui-addr",
            listener,
            limits,
            move |req, _| ui::serve(ui.clone(), req),
            stopped.clone(),
        )));
        info!("cluster page on {}", url(ui_addr));
    }
    Ok(Roles {
        stop,
        tasks,
        lb_addr,
        stats_addr,
        web_addr,
        ui_addr,
        tls: tls_store,
    })
}
