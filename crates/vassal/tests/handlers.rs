//! Event handlers (spec §5.2) against the real Go Serf agent: a Vassal agent started with
//! `-event-handler` runs its scripts for a Go node's join and for `serf event` on the Go side.
//! They run `target/release/vassal` (build it first: `cargo build --release --bin vassal`).

use std::fs;
use std::path::Path;
use std::time::Duration;

use vassal_testkit::{wait_until, GoSerf, Loopback, VassalAgent};

const JOIN: Duration = Duration::from_secs(10);
const EVENT: Duration = Duration::from_secs(10);

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `path` satisfies `ok`, failing fast (with its log) if `v` dies.
#[track_caller]
fn wait_file(v: &mut VassalAgent, path: &Path, what: &str, ok: impl Fn(&str) -> bool) -> String {
    wait_until(EVENT, what, || {
        v.assert_running();
        let s = read(path);
        if ok(&s) {
            Ok(s)
        } else {
            Err(format!(
                "{} = {s:?}\nvassal log:\n{}",
                path.display(),
                v.log_tail(30)
            ))
        }
    })
}

// A catch-all handler records env and stdin per event type; a Go node's join and a
// `serf event deploy v1` on the Go side both reach it with Serf's environment and stdin.
#[test]
fn vassal_handlers_see_go_joins_and_go_user_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = dir.path().join("record.sh");
    fs::write(
        &script,
        format!(
            "env | grep ^SERF_ | sort >> {d}/$SERF_EVENT.env\n\
             cat >> {d}/$SERF_EVENT.stdin\n"
        ),
    )
    .unwrap();

    let lo = Loopback::fresh();
    let go = GoSerf::builder("go1", &lo)
        .tag("role", "web")
        .tag("dc", "eu")
        .spawn();
    let mut v = VassalAgent::builder("v1", &lo)
        .tag("role", "db")
        .tag("rack-id", "r1")
        .arg(&format!("-event-handler=/bin/sh {}", script.display()))
        .join(go.addr())
        .spawn();

    let go_line = format!("go1\t{}\tweb\tdc=eu,role=web\n", go.addr().ip());
    wait_file(
        &mut v,
        &dir.path().join("member-join.stdin"),
        "the member-join handler to get go1's line on stdin",
        |s| s.contains(&go_line),
    );
    let env = read(&dir.path().join("member-join.env"));
    for line in [
        "SERF_EVENT=member-join\n",
        "SERF_SELF_NAME=v1\n",
        "SERF_SELF_ROLE=db\n",
        "SERF_TAG_RACK_ID=r1\n",
        "SERF_TAG_ROLE=db\n",
    ] {
        assert!(
            env.contains(line),
            "{line:?} not in member-join env:\n{env}"
        );
    }

    go.event("deploy", "v1");
    wait_file(
        &mut v,
        &dir.path().join("user.stdin"),
        "the user handler to get `v1\\n` on stdin",
        |s| s == "v1\n",
    );
    let env = read(&dir.path().join("user.env"));
    for line in [
        "SERF_EVENT=user\n",
        "SERF_USER_EVENT=deploy\n",
        "SERF_SELF_NAME=v1\n",
    ] {
        assert!(env.contains(line), "{line:?} not in user env:\n{env}");
    }
    assert!(env.contains("SERF_USER_LTIME="), "user env:\n{env}");
}

// The original Serf demo's load-balancer pattern: on member-join, a node tagged `lb` reads the
// stdin lines and adds every `web` member to its haproxy config.
#[test]
fn load_balancer_handler_adds_the_go_web_node() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    let script = dir.path().join("lb.sh");
    fs::write(
        &script,
        format!(
            r#"if [ "x${{SERF_TAG_ROLE}}" != "xlb" ]; then
    echo "Not an lb. Ignoring member join."
    exit 0
fi
while read line; do
    NAME=$(echo $line | awk '{{print $1}}')
    ADDR=$(echo $line | awk '{{print $2}}')
    ROLE=$(echo $line | awk '{{print $3}}')
    if [ "x${{ROLE}}" != "xweb" ]; then
        continue
    fi
    echo "server $NAME $ADDR:80 check" >> {}
done
"#,
            cfg.display()
        ),
    )
    .unwrap();

    let lo = Loopback::fresh();
    let go = GoSerf::builder("web1", &lo).tag("role", "web").spawn();
    let mut v = VassalAgent::builder("lb1", &lo)
        .tag("role", "lb")
        .arg(&format!(
            "-event-handler=member-join=/bin/sh {}",
            script.display()
        ))
        .join(go.addr())
        .spawn();

    let want = format!("server web1 {}:80 check\n", go.addr().ip());
    let got = wait_file(&mut v, &cfg, "the lb handler to add web1", |s| {
        !s.is_empty()
    });
    assert_eq!(got, want);
}

// A bad filter stops the agent at start with exit 1, naming the filter and the flag.
#[test]
fn an_unknown_event_type_fails_agent_start() {
    let lo = Loopback::fresh();
    let mut v = VassalAgent::builder("v1", &lo)
        .arg("-event-handler=member-jion=true")
        .spawn();
    let status = wait_until(JOIN, "the agent to exit", || {
        v.exit_status().ok_or_else(|| v.log_tail(10))
    });
    assert_eq!(status.code(), Some(1));
    let log = v.log();
    assert!(
        log.contains("-event-handler") && log.contains("\"member-jion\""),
        "{log}"
    );
}

// `-replay`: a user event the cluster saw before we joined runs our handler; without it, not.
#[test]
fn replay_runs_handlers_for_past_user_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    go.event("before", "x");

    let handler = |who: &str| {
        format!(
            "-event-handler=member-join,user=echo $SERF_EVENT $SERF_USER_EVENT >> {d}/{who}.log"
        )
    };
    let mut replayed = VassalAgent::builder("r1", &lo)
        .arg(&handler("r1"))
        .arg("-replay")
        .join(go.addr())
        .spawn();
    let mut plain = VassalAgent::builder("p1", &lo)
        .arg(&handler("p1"))
        .join(go.addr())
        .spawn();

    wait_file(
        &mut replayed,
        &dir.path().join("r1.log"),
        "r1 (-replay) to run its handler for `before`",
        |s| s.contains("user before\n"),
    );
    // p1 has joined (its member-join handler ran) and, without -replay, ignores `before`.
    let log = wait_file(
        &mut plain,
        &dir.path().join("p1.log"),
        "p1 to run its member-join handler",
        |s| s.contains("member-join"),
    );
    assert!(
        !log.contains("before"),
        "p1 replayed without -replay:\n{log}"
    );
    vassal_testkit::hold_for(Duration::from_secs(2), "p1 not to replay `before`", || {
        let s = read(&dir.path().join("p1.log"));
        if s.contains("before") {
            Err(s)
        } else {
            Ok(())
        }
    });
}

// Issue 3, queries: `serf query load` on a Go node is answered by `query:load` handlers on
// Vassal nodes (their stdout, newline included), and `-tag role=web` and `-node` pick exactly
// the matching responders.
#[test]
fn go_serf_query_is_answered_by_vassal_query_handlers_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("load.sh");
    fs::write(
        &script,
        "echo \"load-of-$SERF_SELF_NAME $SERF_QUERY_NAME $(cat)\"\n",
    )
    .unwrap();
    let handler = format!("-event-handler=query:load=/bin/sh {}", script.display());

    let go = GoSerf::start("go1", &Loopback::fresh());
    let mut agents: Vec<VassalAgent> = [("web-1", "web"), ("web-2", "web"), ("lb", "lb")]
        .iter()
        .map(|(name, role)| {
            VassalAgent::builder(name, &Loopback::fresh())
                .tag("role", role)
                .arg(&handler)
                .join(go.addr())
                .spawn()
        })
        .collect();
    go.wait_all_alive(&["go1", "web-1", "web-2", "lb"], JOIN);

    let query = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["query", "-format=json", "-timeout=3s"];
        a.extend_from_slice(args);
        let out = go.cli(&a).unwrap_or_else(|e| panic!("serf {a:?}: {e}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let by_tag = query(&["-tag", "role=web", "load", "p1"]);
    assert_eq!(
        by_tag["Responses"],
        serde_json::json!({"web-1": "load-of-web-1 load p1\n", "web-2": "load-of-web-2 load p1\n"}),
        "{by_tag}"
    );
    let mut acks: Vec<String> = serde_json::from_value(by_tag["Acks"].clone()).unwrap();
    acks.sort();
    assert_eq!(acks, ["web-1", "web-2"], "{by_tag}");

    let by_node = query(&["-node", "lb", "load", "p2"]);
    assert_eq!(
        by_node["Responses"],
        serde_json::json!({"lb": "load-of-lb load p2\n"}),
        "{by_node}"
    );
    for a in &mut agents {
        a.assert_running();
    }
}

// Coalescing (spec §4.6, §5.1): joining a two-node Go cluster brings both members at once, and
// like Serf's agent the join handler runs once with one stdin line per member.
#[test]
fn joins_learned_together_reach_the_handler_in_one_coalesced_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = dir.path().join("join.sh");
    // Each run writes its stdin to a file of its own.
    fs::write(&script, format!("cat > {d}/run-$$.stdin\n")).unwrap();

    let go1 = GoSerf::start("go1", &Loopback::fresh());
    let go2 = GoSerf::builder("go2", &Loopback::fresh())
        .join(go1.addr())
        .spawn();
    go1.wait_all_alive(&["go1", "go2"], JOIN);
    let mut v = VassalAgent::builder("v1", &Loopback::fresh())
        .arg(&format!(
            "-event-handler=member-join=/bin/sh {}",
            script.display()
        ))
        .join(go1.addr())
        .spawn();
    let runs = wait_until(EVENT, "a join handler run naming go1 and go2", || {
        v.assert_running();
        let runs: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".stdin"))
            .map(|e| read(&e.path()))
            .collect();
        let together = runs
            .iter()
            .any(|r| r.contains("go1\t") && r.contains("go2\t"));
        if together {
            Ok(runs)
        } else {
            Err(format!("runs so far: {runs:?}\n{}", v.log_tail(20)))
        }
    });
    let joins_of = |n: &str| {
        runs.iter()
            .filter(|r| r.lines().any(|l| l.starts_with(&format!("{n}\t"))))
            .count()
    };
    assert_eq!(
        (joins_of("go1"), joins_of("go2")),
        (1, 1),
        "each join delivered once: {runs:?}"
    );
    drop(go2);
}
