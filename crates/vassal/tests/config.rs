//! Agent configuration as a Serf user meets it (spec §5.4, §5.6): JSON config files and
//! directories under flags, bad files refused with the file, key and problem named, SIGHUP
//! reloading tags, handlers and the log level, and Serf's SIGINT / SIGTERM leave rules, checked
//! from a Go `serf agent` in the same cluster.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vassal_testkit::{vassal_bin, wait_until, GoSerf, Loopback, VassalAgent};

const DEADLINE: Duration = Duration::from_secs(10);
const FAIL: Duration = Duration::from_secs(40);

fn signal(agent: &VassalAgent, sig: Signal) {
    kill(Pid::from_raw(agent.pid() as i32), sig).expect("the agent we started is ours to signal");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Runs `vassal agent ARGS` expecting it to exit by itself: (code, stdout + stderr); no code
/// if it had to be killed at the deadline.
fn agent_exit(args: &[String]) -> (Option<i32>, String) {
    let args: Vec<String> = std::iter::once("agent".to_owned())
        .chain(args.iter().cloned())
        .collect();
    let run = vassal_testkit::run_cli(&vassal_bin(), &args, &[], DEADLINE);
    ((run.code != -1).then_some(run.code), run.combined())
}

#[test]
fn bad_configuration_exits_non_zero_naming_file_key_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let lo = Loopback::fresh();
    let f = dir.path().join("agent.json");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "-node=bad".to_string(),
            format!("-bind={}", lo.addr()),
            format!("-rpc-addr={}", lo.addr()),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let cfg = format!("-config-file={}", f.display());
    for (text, key, problem) in [
        (r#"{"node_nme": "x"}"#, "node_nme", "unknown key"),
        (
            r#"{"retry_interval": "soon"}"#,
            "retry_interval",
            "bad duration",
        ),
        (r#"{"bind": "127.0.0.1:99999"}"#, "bind", "invalid port"),
        (r#"{"tags": ["web"]}"#, "tags", "expected an object"),
    ] {
        write(&f, text);
        let (code, out) = agent_exit(&base(&[&cfg]));
        assert_eq!(code, Some(1), "{text}: {out}");
        for needle in [f.to_str().unwrap(), &format!("\"{key}\""), problem] {
            assert!(out.contains(needle), "{text}: no {needle:?} in: {out}");
        }
    }

    // An unreadable file, and a directory holding a bad file.
    let missing = dir.path().join("missing.json");
    let (code, out) = agent_exit(&base(&[&format!("-config-file={}", missing.display())]));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("missing.json") && out.contains("cannot read it"),
        "{out}"
    );
    let sub = dir.path().join("conf.d");
    std::fs::create_dir(&sub).unwrap();
    write(&sub.join("10-ok.json"), r#"{"log_level": "debug"}"#);
    write(&sub.join("20-bad.json"), r#"{"protocol": 9}"#);
    let (code, out) = agent_exit(&base(&[&format!("-config-dir={}", sub.display())]));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("20-bad.json") && out.contains("\"protocol\""),
        "{out}"
    );

    // A port already in use: the gossip port, then the RPC port.
    let held = std::net::TcpListener::bind(lo.addr()).unwrap();
    let busy = held.local_addr().unwrap();
    let (code, out) = agent_exit(&[
        "-node=bad".into(),
        format!("-bind={busy}"),
        format!("-rpc-addr={}", lo.addr()),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&busy.to_string()), "{out}");
    let (code, out) = agent_exit(&[
        "-node=bad".into(),
        format!("-bind={}", lo.addr()),
        format!("-rpc-addr={busy}"),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&busy.to_string()) && out.contains("-rpc-addr"),
        "{out}"
    );
}

#[test]
fn files_then_flags_then_sighup_reload_tags_and_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    let marker = dir.path().join("handled");
    // Two files in name order, then flags: flags win for scalars, tags merge by key.
    write(
        &conf.join("a.json"),
        &format!(
            r#"{{"node_name": "from-file", "tags": {{"role": "db", "dc": "east"}},
                "start_join": ["{}"]}}"#,
            go.addr()
        ),
    );
    write(&conf.join("b.json"), r#"{"tags": {"role": "web"}}"#);
    let mut v = VassalAgent::builder("v1", &lo)
        .arg(&format!("-config-dir={}", conf.display()))
        .spawn_ready();
    let m = go.wait_member_status("v1", "alive", DEADLINE);
    assert_eq!(m.tags.get("role").map(String::as_str), Some("web"), "{m:?}");
    assert_eq!(m.tags.get("dc").map(String::as_str), Some("east"), "{m:?}");
    assert!(
        go.member_status("from-file").is_none(),
        "the -node flag must override node_name"
    );

    // Reload: new tags and a new handler, without a restart.
    write(
        &conf.join("b.json"),
        &format!(
            r#"{{"tags": {{"role": "lb"}}, "log_level": "debug",
                "event_handlers": ["user:deploy=cat >> {}"]}}"#,
            marker.display()
        ),
    );
    signal(&v, Signal::SIGHUP);
    wait_until(DEADLINE, "Go to see v1's reloaded tag role=lb", || {
        let m = go.wait_member_status("v1", "alive", DEADLINE);
        match m.tags.get("role").map(String::as_str) {
            Some("lb") => Ok(()),
            other => Err(format!("role={other:?}; log:\n{}", v.log_tail(20))),
        }
    });
    go.cli(&["event", "deploy", "v2"]).unwrap();
    wait_until(DEADLINE, "the reloaded handler to run", || {
        match std::fs::read_to_string(&marker) {
            // Serf ends a user event's payload with a newline on the handler's stdin.
            Ok(s) if s.trim_end() == "v2" => Ok(()),
            other => Err(format!("{other:?}; log:\n{}", v.log_tail(20))),
        }
    });
    // A broken file on reload keeps the agent running with what it had.
    write(&conf.join("b.json"), r#"{"tags": "#);
    signal(&v, Signal::SIGHUP);
    v.wait_log_contains("Failed to reload configs", DEADLINE);
    v.assert_running();
    assert_eq!(
        go.member_status("v1").as_deref(),
        Some("alive"),
        "a bad reload must not disturb the node"
    );
}

#[test]
fn sigterm_leaves_only_with_leave_on_terminate_and_sigint_honours_skip() {
    let dir = tempfile::tempdir().unwrap();
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    let start = |name: &str, file: &str| {
        let path = dir.path().join(format!("{name}.json"));
        write(&path, file);
        let v = VassalAgent::builder(name, &lo)
            .join(go.addr())
            .arg(&format!("-config-file={}", path.display()))
            .spawn_ready();
        go.wait_member_status(name, "alive", DEADLINE);
        v
    };
    let wait_exit = |v: &mut VassalAgent| -> i32 {
        let mut code = None;
        wait_until(DEADLINE, "the agent to exit after the signal", || {
            match v.exit_status() {
                Some(s) => {
                    code = s.code();
                    Ok(())
                }
                None => Err("running".into()),
            }
        });
        code.unwrap_or(-1)
    };

    // Serf's default: SIGTERM does not leave (exit 1, seen as failed); leave_on_terminate
    // makes it a graceful leave; skip_leave_on_interrupt makes SIGINT not leave.
    let mut plain = start("plain", "{}");
    let mut term = start("term", r#"{"leave_on_terminate": true}"#);
    let mut skip = start("skip", r#"{"skip_leave_on_interrupt": true}"#);
    signal(&plain, Signal::SIGTERM);
    signal(&term, Signal::SIGTERM);
    signal(&skip, Signal::SIGINT);
    assert_eq!(wait_exit(&mut plain), 1, "{}", plain.log_tail(10));
    assert_eq!(wait_exit(&mut term), 0, "{}", term.log_tail(10));
    assert_eq!(wait_exit(&mut skip), 1, "{}", skip.log_tail(10));
    go.wait_member_status("term", "left", DEADLINE);
    go.wait_member_status("plain", "failed", FAIL);
    go.wait_member_status("skip", "failed", FAIL);
}
