//! Shared by the HAProxy tests and the `lb_vs_haproxy` benchmark: web nodes, load-balancer
//! agents (runtime API, or the original demo's handlers with reloads), and HAProxy configs.
#![allow(dead_code)] // each user takes what it needs

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vassal_testkit::{
    haproxy_bin, http_get_ok, wait_until, Haproxy, Loopback, VassalAgent, WebServer,
};

pub const SETTLE: Duration = Duration::from_secs(20);

/// `defaults`, a frontend on `fe` and an empty roundrobin backend `web`, as an operator would
/// write them for dynamic servers.
pub fn runtime_sections(fe: SocketAddr) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n\
         frontend fe\n    bind {fe}\n    default_backend web\n\n\
         backend web\n    balance roundrobin\n"
    )
}

/// One web node: a web server and a `vassal agent -tag role=web` beside it.
pub struct WebNode {
    pub web: WebServer,
    pub agent: VassalAgent,
}

/// A web node serving on `web_addr`, its agent on `lo`; with `http_port`, the agent carries
/// the `http_port` tag (the original demo has none: its servers listen on the frontend's port).
pub fn web_node(
    name: &str,
    lo: &Loopback,
    web_addr: SocketAddr,
    http_port_tag: bool,
    join: SocketAddr,
) -> WebNode {
    let web = WebServer::start(web_addr, name)
        .unwrap_or_else(|e| panic!("starting web server {name} on {web_addr}: {e}"));
    let mut b = VassalAgent::builder(name, lo)
        .tag("role", "web")
        .arg("-profile=local")
        .join(join);
    if http_port_tag {
        b = b.tag("http_port", &web.addr().port().to_string());
    }
    WebNode {
        web,
        agent: b.spawn(),
    }
}

/// A load balancer's agent with `extra` flags, started and listening (web nodes join it).
pub fn lb_agent(name: &str, lo: &Loopback, extra: &[String]) -> VassalAgent {
    lb_agent_from(None, name, lo, extra)
}

/// [`lb_agent`] run from `bin` instead of the build under test, if given.
pub fn lb_agent_from(
    bin: Option<&std::path::Path>,
    name: &str,
    lo: &Loopback,
    extra: &[String],
) -> VassalAgent {
    let mut b = VassalAgent::builder(name, lo)
        .tag("role", "lb")
        .arg("-profile=local");
    for a in extra {
        b = b.arg(a);
    }
    let mut lb = match bin {
        Some(bin) => b.spawn_bin(bin),
        None => b.spawn(),
    };
    lb.wait_log_contains("Serf agent running", SETTLE);
    lb
}

/// The runtime-API load balancer: `vassal agent -haproxy-socket=…`, its sync running.
pub fn runtime_lb(lo: &Loopback, haproxy: &Haproxy) -> VassalAgent {
    runtime_lb_with(lo, haproxy, &[])
}

/// [`runtime_lb`] with more agent arguments.
pub fn runtime_lb_with(lo: &Loopback, haproxy: &Haproxy, extra: &[String]) -> VassalAgent {
    let mut args = vec![format!("-haproxy-socket={}", haproxy.socket().display())];
    args.extend_from_slice(extra);
    let mut lb = lb_agent("lb", lo, &args);
    lb.wait_log_contains("syncing HAProxy backend \"web\"", SETTLE);
    lb
}

/// The servers in backend `web` as `name addr admin_state`, sorted.
pub fn servers(h: &Haproxy) -> Result<Vec<String>, String> {
    let mut v: Vec<String> = h
        .servers("web")?
        .into_iter()
        .map(|s| format!("{} {} {}", s.name, s.addr, s.admin))
        .collect();
    v.sort();
    Ok(v)
}

/// `name addr 0` for each node: ready servers.
pub fn ready(nodes: &[WebNode]) -> Vec<String> {
    let mut v: Vec<String> = nodes
        .iter()
        .map(|n| format!("{} {} 0", n.web.name(), n.web.addr()))
        .collect();
    v.sort();
    v
}

#[track_caller]
pub fn wait_servers(h: &Haproxy, lb: &mut VassalAgent, want: &[String], what: &str) {
    wait_until(SETTLE, what, || {
        lb.assert_running();
        let got = servers(h)?;
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "HAProxy has {got:?}, want {want:?}\nlb log:\n{}",
                lb.log_tail(30)
            ))
        }
    });
}

/// Names that answer through `fe` over `n` requests.
pub fn answering(fe: SocketAddr, n: usize) -> Result<BTreeSet<String>, String> {
    (0..n)
        .map(|_| http_get_ok(fe).map(|b| b.trim().to_owned()))
        .collect()
}

#[track_caller]
pub fn wait_answering(fe: SocketAddr, want: &[&str], lb: &mut VassalAgent) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    wait_until(SETTLE, &format!("{want:?} to answer through {fe}"), || {
        lb.assert_running();
        match answering(fe, 2 * want.len() + 2) {
            Ok(got) if got == want => Ok(()),
            got => Err(format!("answered by {got:?}\nlb log:\n{}", lb.log_tail(20))),
        }
    });
}

// ---- The original demo's parity path ----

pub fn demo_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../demo/original")
        .join(name)
        .canonicalize()
        .unwrap_or_else(|e| panic!("demo/original/{name}: {e}"))
}

/// The demo's `setup_haproxy.sh` config on test addresses, with an admin socket to look
/// through, plus (when `port_fix`) the one line HAProxy 2.6 needs for the demo's server lines.
pub fn original_config(socket: &Path, lb: IpAddr, port: u16, stats: u16, port_fix: bool) -> String {
    let fix = if port_fix {
        format!("    default-server port {port}\n")
    } else {
        String::new()
    };
    format!(
        "global\n    daemon\n    maxconn 256\n    stats socket {} mode 600 level admin\n\n\
         defaults\n    mode http\n    timeout connect 5000ms\n    timeout client 50000ms\n    timeout server 50000ms\n\n\
         listen stats\n    bind {lb}:{stats}\n    mode http\n    stats enable\n    stats uri /\n    stats refresh 2s\n\n\
         listen http-in\n    bind {lb}:{port}\n    balance roundrobin\n    option http-server-close\n{fix}",
        socket.display()
    )
}

/// Debian's /etc/init.d/haproxy `reload`, for one test's HAProxy only.
pub fn init_script_stand_in(dir: &Path, pidfile: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # Stand-in for /etc/init.d/haproxy inside the test's mount namespace: `reload` does what\n\
         # Debian's script does (check the config, then a new haproxy takes over with -sf).\n\
         CONFIG=/etc/haproxy/haproxy.cfg\n\
         PIDFILE={pidfile}\n\
         case \"$1\" in\n\
         reload|force-reload)\n\
         \x20   echo reload >> {dir}/reloads\n\
         \x20   {bin} -c -f \"$CONFIG\" >/dev/null || exit 1\n\
         \x20   exec {bin} -f \"$CONFIG\" -p \"$PIDFILE\" -D -sf $(cat \"$PIDFILE\")\n\
         \x20   ;;\n\
         *)\n\
         \x20   echo \"test stand-in: only reload is supported\" >&2\n\
         \x20   exit 2\n\
         \x20   ;;\n\
         esac\n",
        pidfile = pidfile.display(),
        dir = dir.display(),
        bin = haproxy_bin().display(),
    )
}

/// The original demo's load balancer: HAProxy with the demo's config (no servers) on
/// `lb_lo:port`, and `vassal agent -tag role=lb` running the demo's handlers verbatim in a
/// private mount namespace where /etc/haproxy and /etc/init.d/haproxy are this test's.
pub struct OriginalLb {
    pub haproxy: Haproxy,
    pub agent: VassalAgent,
    pub fe: SocketAddr,
    /// One line per reload the handlers asked for.
    pub reloads: PathBuf,
}

impl OriginalLb {
    pub fn start(lb_lo: &Loopback, port: u16) -> OriginalLb {
        for p in ["/etc/haproxy", "/etc/init.d/haproxy"] {
            assert!(
                Path::new(p).exists(),
                "{p} is missing: run scripts/setup (Debian's haproxy package); the test mounts \
                 a temp dir and a stand-in over it, in a private mount namespace"
            );
        }
        let stats = lb_lo.free_port();
        let fe = SocketAddr::new(lb_lo.ip().into(), port);
        let dir = Haproxy::temp_dir("original");
        let etc = dir.path().join("etc-haproxy");
        let stand_in = dir.path().join("init.d-haproxy");
        let pidfile = dir.path().join("haproxy.pid");
        fs::write(&stand_in, init_script_stand_in(dir.path(), &pidfile)).unwrap();
        fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
        let reloads = dir.path().join("reloads");
        let haproxy =
            Haproxy::start_in("original", dir, Path::new("etc-haproxy/haproxy.cfg"), |s| {
                original_config(s, lb_lo.ip().into(), port, stats, true)
            });
        assert_eq!(haproxy.pidfile(), pidfile);
        // Serf's demo ran `serf agent -tag role=lb` with these two handlers.
        let namespace = format!(
            "mount --bind {} /etc/haproxy && mount --bind {} /etc/init.d/haproxy && \
             exec \"$0\" \"$@\"",
            etc.display(),
            stand_in.display()
        );
        let mut agent = VassalAgent::builder("lb", lb_lo)
            .tag("role", "lb")
            .arg("-profile=local")
            .arg(&format!(
                "-event-handler=member-join={}",
                demo_script("serf_member_join.sh").display()
            ))
            .arg(&format!(
                "-event-handler=member-leave,member-failed={}",
                demo_script("serf_member_left.sh").display()
            ))
            .spawn_via(
                Path::new("unshare"),
                &["-m".into(), "sh".into(), "-c".into(), namespace],
            );
        agent.wait_log_contains("Serf agent running", SETTLE);
        OriginalLb {
            haproxy,
            agent,
            fe,
            reloads,
        }
    }

    pub fn reload_count(&self) -> usize {
        fs::read_to_string(&self.reloads)
            .unwrap_or_default()
            .lines()
            .count()
    }

    pub fn config(&self) -> String {
        fs::read_to_string(self.haproxy.config_path()).unwrap_or_default()
    }
}

/// Runs `openssl args…` in `dir`, panicking with its output if it fails.
#[track_caller]
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A benchmark knob from the environment (`LB_BENCH_SECS` and the like), else `default`.
pub fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One Markdown table row of a wrk run: requests/s, p50 and p99 ms, failed requests.
pub fn row(what: &str, r: &vassal_testkit::WrkReport) -> String {
    format!(
        "| {what} | {:.0} | {:.2} | {:.2} | {} |",
        r.requests_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.failed()
    )
}
