//! Template mode (issue 15) with a real proxy: Debian's nginx in front of web nodes, its
//! upstream block kept in step by `vassal agent -template` with the shipped template
//! (`deploy/templates/nginx-upstream.conf.j2`) and reloaded by `nginx -s reload`, never
//! restarted. Also the failure paths: a bad template refused at start, a failing reload command
//! logged and retried at the next change, a render error keeping the previous file. Every
//! agent is a real `target/release/vassal agent` on its own loopback address (build it first:
//! `cargo build --release --bin vassal`, or point `VASSAL_BIN` at a build).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vassal_testkit::{
    hold_for, http_get, wait_until, Loopback, Nginx, VassalAgent, VassalAgentBuilder, Wrk,
};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Joins and leaves show within a few seconds; a kill -9 takes the failure detector's time.
const CHANGE: Duration = Duration::from_secs(20);

fn shipped_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/templates/nginx-upstream.conf.j2")
}

/// A web node `name` (the built-in web role) on a loopback address of its own, retry-joining
/// `seed`; its HTTP address.
fn web(name: &str, seed: SocketAddr) -> (VassalAgentBuilder, SocketAddr) {
    let lo = Loopback::fresh();
    let http = lo.addr();
    let b = VassalAgent::builder(name, &lo)
        .tag("role", "web")
        .arg(&format!("-web-listen={http}"))
        .arg(&format!("-retry-join={seed}"))
        .arg("-retry-interval=500ms");
    (b, http)
}

/// The `server ADDR:PORT` entries of the upstream file, without the refusing placeholder.
fn upstream_servers(path: &Path) -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|rest| rest.split([' ', ';']).next())
        .filter(|a| *a != "127.0.0.1:1")
        .map(str::to_owned)
        .collect())
}

/// Waits until the upstream file lists exactly `want` (web nodes' HTTP addresses).
#[track_caller]
fn wait_upstream(path: &Path, want: &[SocketAddr], tpl: &mut VassalAgent, what: &str) {
    let want: BTreeSet<String> = want.iter().map(|a| a.to_string()).collect();
    wait_until(CHANGE, what, || {
        tpl.assert_running();
        let got = upstream_servers(path)?;
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "want {want:?}, file has {got:?}:\n{}\ntemplate agent log:\n{}",
                std::fs::read_to_string(path).unwrap_or_default(),
                tpl.log_tail(15)
            ))
        }
    })
}

/// `n` requests through nginx; `X-Served-By` counts (failures counted under `error`).
fn served_by(proxy: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let key = match http_get(proxy, "/", HTTP_TIMEOUT) {
            Ok(r) if r.status == 200 => r.header("x-served-by").unwrap_or("?").to_owned(),
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => format!("error: {e}"),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Waits until requests through nginx land on exactly `names` (nginx has reloaded).
#[track_caller]
fn wait_served_only_by(proxy: SocketAddr, names: &[&str], nginx: &mut Nginx) {
    let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let what = format!("requests through nginx to land on {want:?} only");
    wait_until(CHANGE, &what, || {
        nginx.assert_running();
        let counts = served_by(proxy, 3 * names.len());
        let got: BTreeSet<String> = counts.keys().cloned().collect();
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "{counts:?}\nnginx error.log tail:\n{}",
                tail(&nginx.error_log(), 10)
            ))
        }
    });
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// Issue 15, "Must show": nginx kept in step through template mode. Round robin across three
// web nodes; under bounded wrk load a kill -9 and a graceful leave each leave the upstream
// block, new nodes enter it; nginx is reloaded each time, its master never restarted.
#[test]
fn nginx_follows_joins_kill_9_and_graceful_leaves_without_a_restart() {
    let lo = Loopback::fresh();
    let proxy = lo.addr();
    let dir = Nginx::temp_dir("template");
    let upstream = dir.path().join("upstreams.conf");
    // Until the agent has rendered, nginx starts on the same refusing placeholder the
    // template writes when no web node is alive.
    std::fs::write(
        &upstream,
        "upstream vassal_web {\n    server 127.0.0.1:1 down;\n}\n",
    )
    .unwrap();
    let mut nginx = Nginx::start_in(
        "template",
        dir,
        proxy,
        &format!(
            "    include {};\n\
             \x20   server {{\n\
             \x20       listen {proxy};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://vassal_web;\n\
             \x20           proxy_connect_timeout 1s;\n\
             \x20           proxy_next_upstream error timeout http_502;\n\
             \x20       }}\n\
             \x20   }}",
            upstream.display()
        ),
    );
    let master = nginx.pid();

    let mut tpl = VassalAgent::builder("tpl", &lo)
        .tag("role", "lb")
        .arg(&format!(
            "-template={}:{}:{}",
            shipped_template().display(),
            upstream.display(),
            nginx.reload_command()
        ))
        .arg("-template-wait=300ms")
        .spawn_ready();

    let (b1, h1) = web("web-1", tpl.addr());
    let (b2, h2) = web("web-2", tpl.addr());
    let (b3, h3) = web("web-3", tpl.addr());
    let mut w1 = b1.spawn();
    let mut w2 = b2.spawn();
    let _w3 = b3.spawn();
    wait_upstream(
        &upstream,
        &[h1, h2, h3],
        &mut tpl,
        "three web nodes in the upstream",
    );
    wait_served_only_by(proxy, &["web-1", "web-2", "web-3"], &mut nginx);
    // Round robin: nginx's one worker takes the three in turn.
    let counts = served_by(proxy, 30);
    let expected: BTreeMap<String, usize> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|n| (n.to_string(), 10))
        .collect();
    assert_eq!(counts, expected, "30 requests through nginx");

    // Bounded load through nginx while nodes fail, leave and join. A connection per request:
    // a reload's old workers close their idle keep-alive connections, which a client racing
    // a request onto one sees as a read error whatever the upstream block says.
    let load = Wrk::spawn_with(
        &format!("http://{proxy}/"),
        1,
        8,
        Duration::from_secs(12),
        &["-H", "Connection: close"],
    );

    w1.kill_9();
    wait_upstream(
        &upstream,
        &[h2, h3],
        &mut tpl,
        "web-1 (kill -9) out of the upstream",
    );
    wait_served_only_by(proxy, &["web-2", "web-3"], &mut nginx);

    w2.stop();
    wait_upstream(
        &upstream,
        &[h3],
        &mut tpl,
        "web-2 (graceful leave) out of the upstream",
    );
    wait_served_only_by(proxy, &["web-3"], &mut nginx);

    let (b4, h4) = web("web-4", tpl.addr());
    let (b5, h5) = web("web-5", tpl.addr());
    let _w4 = b4.spawn();
    let _w5 = b5.spawn();
    wait_upstream(
        &upstream,
        &[h3, h4, h5],
        &mut tpl,
        "web-4 and web-5 in the upstream",
    );
    wait_served_only_by(proxy, &["web-3", "web-4", "web-5"], &mut nginx);

    let report = load.wait();
    assert!(report.requests > 0, "{}", report.raw);
    // nginx retries a refused connection on the next server, so a node that vanished
    // before the reload costs no request.
    assert_eq!(
        report.failed(),
        0,
        "requests failed through nginx:\n{}\nerror.log tail:\n{}",
        report.raw,
        tail(&nginx.error_log(), 20)
    );

    // Reloaded (at least once per change above), never restarted.
    nginx.assert_running();
    assert_eq!(nginx.pidfile_pid(), Some(master), "nginx's master changed");
    let reloads = nginx.reloads();
    assert!(
        reloads >= 4,
        "nginx reloaded {reloads} times; error.log:\n{}",
        nginx.error_log()
    );
    let log = tpl.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("agent: template") && l.contains("fail"))
        .collect();
    assert!(
        failures.is_empty(),
        "template mode failed:\n{}",
        failures.join("\n")
    );
}

/// A template agent alone on a fresh address with `templates` (`SRC:DEST[:COMMAND]`).
fn template_agent(name: &str, templates: &[String], extra: &[&str]) -> VassalAgent {
    let lo = Loopback::fresh();
    let mut b = VassalAgent::builder(name, &lo);
    for t in templates {
        b = b.arg(&format!("-template={t}"));
    }
    for a in extra {
        b = b.arg(a);
    }
    b.spawn()
}

// Issue 15: a bad template is refused at start with the file, the line and the fix, and the
// agent exits 1 before it joins anything.
#[test]
fn a_bad_template_is_refused_at_start_with_its_line_and_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "syntax.tmpl",
            "upstream web {\n{% for m in members %}\n    server {{ m.addr }:80;\n{% endfor %}\n}\n",
            "syntax.tmpl, line 3: syntax error",
            "hint: check the tags on that line",
        ),
        (
            "filter.tmpl",
            "upstream web {\n{% for m in members|with_tags(\"role\", \"web\") %}\n{% endfor %}\n}\n",
            "filter.tmpl, line 2: unknown filter \"with_tags\"",
            "did you mean \"with_tag\"?",
        ),
        (
            "variable.tmpl",
            "{% for m in memebers %}{{ m.name }}\n{% endfor %}\n",
            "variable.tmpl, line 1: unknown variable \"memebers\"",
            "did you mean \"members\"?",
        ),
    ];
    for (file, text, problem, hint) in cases {
        let src = dir.path().join(file);
        std::fs::write(&src, text).unwrap();
        let dest = dir.path().join("out.conf");
        let mut agent = template_agent(
            "bad",
            &[format!("{}:{}:true", src.display(), dest.display())],
            &[],
        );
        let status = wait_until(
            Duration::from_secs(10),
            &format!("the agent with {file} to exit"),
            || agent.exit_status().ok_or_else(|| agent.log_tail(10)),
        );
        let log = agent.log();
        assert_eq!(status.code(), Some(1), "{file}: {log}");
        assert!(log.contains(problem), "{file}: want {problem:?} in:\n{log}");
        assert!(log.contains(hint), "{file}: want {hint:?} in:\n{log}");
        assert!(
            !log.contains("Serf agent running"),
            "{file}: it started:\n{log}"
        );
        assert!(!dest.exists(), "{file}: something was rendered");
    }
}

// Issue 15: nothing renders while the agent is alone; a failing reload command is logged with
// its output, the agent keeps serving, and the next membership change runs it again; a
// render error at run time keeps the previous file.
#[test]
fn a_failing_command_is_logged_and_retried_at_the_next_change_while_the_agent_serves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("members.tmpl");
    std::fs::write(
        &src,
        "{% for m in members|alive %}{{ m.name }} {{ m.addr }}\n{% endfor %}",
    )
    .unwrap();
    let zones = d.join("zones.tmpl");
    // Printing a tag some member lacks is a render error (undefined values do not print).
    std::fs::write(
        &zones,
        "{% for m in members|alive %}{{ m.tags.zone }}\n{% endfor %}",
    )
    .unwrap();
    let (out, zones_out, runs, ok) = (
        d.join("members.txt"),
        d.join("zones.txt"),
        d.join("runs"),
        d.join("ok"),
    );
    // Fails (as a reload of a broken proxy config would) until the file `ok` exists.
    let command = format!(
        "echo run >> {runs}; test -e {ok} || {{ echo 'pretend: [emerg] bad config' >&2; exit 3; }}",
        runs = runs.display(),
        ok = ok.display()
    );
    let mut tpl = template_agent(
        "tpl",
        &[
            format!("{}:{}:{command}", src.display(), out.display()),
            format!("{}:{}", zones.display(), zones_out.display()),
        ],
        &["-template-wait=200ms", "-tag", "zone=a"],
    );
    tpl.wait_ready(Duration::from_secs(10));
    hold_for(
        Duration::from_secs(2),
        "nothing rendered while alone",
        || match out.exists() || zones_out.exists() {
            false => Ok(()),
            true => Err(std::fs::read_to_string(&out).unwrap_or_default()),
        },
    );

    let seed = tpl.addr();
    let peer = |name: &str, zone: Option<&str>| {
        let mut b = VassalAgent::builder(name, &Loopback::fresh()).join(seed);
        if let Some(z) = zone {
            b = b.tag("zone", z);
        }
        b.spawn_ready()
    };
    let _p1 = peer("p1", Some("b"));
    let line = tpl.wait_log_contains("failed: exit status 3", CHANGE);
    assert!(
        line.contains("pretend: [emerg] bad config") && line.contains("runs again at the next"),
        "{line}"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
    let members = std::fs::read_to_string(&out).unwrap();
    assert!(
        members.contains("p1 ") && members.contains("tpl "),
        "{members}"
    );
    // Templates render in turn: the zones file is written after the first one's command.
    wait_until(
        CHANGE,
        "zones.txt rendered",
        || match std::fs::read_to_string(&zones_out).map_err(|e| e.to_string())? {
            z if z == "b\na\n" => Ok(()),
            z => Err(z),
        },
    );
    // Still serving: RPC answers and both members are alive.
    tpl.wait_alive_count(2, Duration::from_secs(5));

    // The next change (a member without a zone tag) runs the command again, now working;
    // the zones template cannot render it and keeps its file.
    std::fs::write(&ok, "").unwrap();
    let _p2 = peer("p2", None);
    tpl.wait_log_contains("ran \"echo run", CHANGE);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\nrun\n");
    assert!(std::fs::read_to_string(&out).unwrap().contains("p2 "));
    let line = tpl.wait_log_contains("rendering failed at line 1", CHANGE);
    assert!(line.contains("is left as it was"), "{line}");
    assert_eq!(std::fs::read_to_string(&zones_out).unwrap(), "b\na\n");
    tpl.assert_running();
    tpl.wait_alive_count(3, Duration::from_secs(5));
}

/// DEST's text, once it is exactly `want`.
#[track_caller]
fn wait_text(path: &Path, want: &str, tpl: &mut VassalAgent) {
    wait_until(
        CHANGE,
        &format!("{} to read {want:?}", path.display()),
        || {
            tpl.assert_running();
            match std::fs::read_to_string(path) {
                Ok(t) if t == want => Ok(()),
                got => Err(format!("{got:?}\nagent log:\n{}", tpl.log_tail(10))),
            }
        },
    );
}

// Issue 15: SIGHUP reloads the templates, as consul-template's does. An edited template
// reaches DEST without a membership change; a broken one is refused with the same message as
// at start, and the previous one keeps rendering the changes that follow.
#[test]
fn sighup_reloads_templates_and_a_broken_one_keeps_the_previous() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("names.tmpl"), dir.path().join("names.txt"));
    std::fs::write(
        &src,
        "{% for m in members|alive %}{{ m.name }}\n{% endfor %}",
    )
    .unwrap();
    let mut tpl = template_agent(
        "tpl",
        &[format!("{}:{}", src.display(), out.display())],
        &["-template-wait=200ms"],
    );
    tpl.wait_ready(Duration::from_secs(10));
    // The template rewritten, then SIGHUP.
    let edit_and_hup = |tpl: &VassalAgent, text: &str| {
        std::fs::write(&src, text).unwrap();
        kill(Pid::from_raw(tpl.pid() as i32), Signal::SIGHUP).expect("signalling our agent")
    };
    let _p1 = VassalAgent::builder("p1", &Loopback::fresh())
        .join(tpl.addr())
        .spawn_ready();
    wait_text(&out, "p1\ntpl\n", &mut tpl);

    // The edited template renders at once: no member joins or leaves meanwhile.
    edit_and_hup(
        &tpl,
        "{% for m in members|alive %}{{ m.name }} {{ m.status }}\n{% endfor %}",
    );
    tpl.wait_log_contains("reloaded 1 template(s)", CHANGE);
    wait_text(&out, "p1 alive\ntpl alive\n", &mut tpl);

    // A broken template is refused, with the line and the hint that start-up gives.
    edit_and_hup(
        &tpl,
        "{% for m in members|alive %}\n{{ m.name|upper_case }}\n{% endfor %}",
    );
    let line = tpl.wait_log_contains("not reloaded", CHANGE);
    assert!(
        line.contains("still rendering the previous templates")
            && line.contains("line 2")
            && line.contains("upper_case"),
        "{line}"
    );
    // The previous template still follows membership.
    let _p2 = VassalAgent::builder("p2", &Loopback::fresh())
        .join(tpl.addr())
        .spawn_ready();
    wait_text(&out, "p1 alive\np2 alive\ntpl alive\n", &mut tpl);
    tpl.assert_running();
}
