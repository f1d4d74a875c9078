//! The agent's files against the real Go Serf agent: the snapshot (`-snapshot`, `-rejoin`, spec
//! §5.3), written by one implementation and restarted from by the other, the tags file and the
//! keyring file (spec §5.7). They run `target/release/vassal` (build it first:
//! `cargo build --release --bin vassal`).

use std::fs;
use std::path::Path;
use std::time::Duration;

use vassal_testkit::{hold_for, wait_until, GoSerf, Loopback, VassalAgent};

const JOIN: Duration = Duration::from_secs(10);
const EVENT: Duration = Duration::from_secs(10);
/// Long enough for a rejoin's push/pull (which carries the cluster's user events) and the
/// agent's user-event coalescing (at most 3 s) to have run a handler for an old event.
const NO_REPLAY: Duration = Duration::from_secs(4);

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the file at `path` satisfies `ok`.
#[track_caller]
fn wait_file(path: &Path, what: &str, ok: impl Fn(&str) -> bool) -> String {
    wait_until(EVENT, what, || {
        let s = read(path);
        if ok(&s) {
            Ok(s)
        } else {
            Err(format!("{} = {s:?}", path.display()))
        }
    })
}

/// `serf event -coalesce=false NAME PAYLOAD`: handlers get each event as it comes, so a
/// replayed old event could not hide behind a newer one of the same name.
#[track_caller]
fn event_uncoalesced(go: &GoSerf, name: &str, payload: &str) {
    let out = go
        .cli(&["event", "-coalesce=false", name, payload])
        .expect("serf event");
    assert!(out.contains("dispatched"), "{out}");
}

// Issue 3, snapshot: a Vassal agent with -snapshot that handled a user event is killed and
// restarted with no -join. It rejoins the cluster on its own from the members the snapshot
// recorded, and its handler does not run again for the old event; a new event does run it.
#[test]
fn vassal_restarted_from_its_snapshot_rejoins_alone_and_skips_handled_events() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("v1.snapshot");
    let log = dir.path().join("user.log");
    let go1 = GoSerf::start("go1", &Loopback::fresh());
    let go2 = GoSerf::builder("go2", &Loopback::fresh())
        .join(go1.addr())
        .spawn();
    let handler = format!(
        "-event-handler=user=echo \"$SERF_USER_EVENT $(cat)\" >> {}",
        log.display()
    );
    let lo = Loopback::fresh();
    let mut v = VassalAgent::builder("v1", &lo)
        .arg(&format!("-snapshot={}", snap.display()))
        .arg(&handler)
        .join(go1.addr())
        .spawn();
    let addr = v.addr();
    go1.wait_all_alive(&["go1", "go2", "v1"], JOIN);

    event_uncoalesced(&go1, "deploy", "v1");
    wait_file(&log, "the handler to run for deploy v1", |s| {
        s == "deploy v1\n"
    });
    let recorded = wait_file(&snap, "the snapshot to record the event clock", |s| {
        s.contains("event-clock: ") && s.contains(&format!("alive: go2 {}\n", go2.addr()))
    });
    assert!(
        recorded.contains(&format!("alive: go1 {}\n", go1.addr())),
        "{recorded}"
    );
    v.kill_9();

    // Same name, address, snapshot and handler, and no -join.
    let mut v = VassalAgent::builder("v1", &lo)
        .bind(addr)
        .arg(&format!("-snapshot={}", snap.display()))
        .arg(&handler)
        .spawn();
    v.wait_log_contains("Re-joined to previously known node", JOIN);
    v.wait_member_event("member-join", "go1", JOIN);
    v.wait_member_event("member-join", "go2", JOIN);
    hold_for(NO_REPLAY, "deploy v1 not to run again", || {
        v.assert_running();
        match read(&log).as_str() {
            "deploy v1\n" => Ok(()),
            other => Err(format!("handler log: {other:?}")),
        }
    });
    event_uncoalesced(&go2, "deploy", "v2");
    wait_file(&log, "the handler to run for deploy v2 only", |s| {
        s == "deploy v1\ndeploy v2\n"
    });
    go1.wait_member_status("v1", "alive", JOIN);
}

// Go's Serf restarts from a snapshot Vassal wrote: it rejoins the recorded members with no
// -join, and it takes the recorded event clock, so it does not replay the old user event.
#[test]
fn go_serf_restarts_from_a_snapshot_vassal_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("n1.snapshot");
    let log = dir.path().join("user.log");
    let go1 = GoSerf::start("go1", &Loopback::fresh());
    let lo = Loopback::fresh();
    let mut v = VassalAgent::builder("n1", &lo)
        .arg(&format!("-snapshot={}", snap.display()))
        .join(go1.addr())
        .spawn();
    go1.wait_all_alive(&["go1", "n1"], JOIN);
    event_uncoalesced(&go1, "deploy", "v1");
    wait_file(
        &snap,
        "Vassal's snapshot to record go1 and the event",
        |s| s.contains(&format!("alive: go1 {}\n", go1.addr())) && s.contains("event-clock: "),
    );
    v.kill_9();

    let restarted = GoSerf::builder("n1", &lo)
        .bind(v.addr())
        .arg("-snapshot")
        .arg(&snap.display().to_string())
        .event_handler(&format!(
            "user=echo \"$SERF_USER_EVENT $(cat)\" >> {}",
            log.display()
        ))
        .spawn();
    restarted.wait_all_alive(&["go1", "n1"], JOIN);
    assert!(
        restarted
            .log()
            .contains("Re-joined to previously known node"),
        "{}",
        restarted.log_tail(20)
    );
    hold_for(NO_REPLAY, "Go not to replay deploy v1", || {
        match read(&log).as_str() {
            "" => Ok(()),
            other => Err(format!("handler log: {other:?}")),
        }
    });
    event_uncoalesced(&go1, "deploy", "v2");
    wait_file(&log, "Go's handler to run for deploy v2 only", |s| {
        s == "deploy v2\n"
    });
}

// Vassal restarts from a snapshot Go's Serf wrote, here across a graceful leave with -rejoin on
// both sides (Go writes `leave`, and -rejoin keeps the members anyway): it rejoins with no
// -join and does not replay the user event Go had seen.
#[test]
fn vassal_restarts_from_a_snapshot_go_serf_wrote_with_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("n2.snapshot");
    let log = dir.path().join("user.log");
    let go1 = GoSerf::start("go1", &Loopback::fresh());
    let lo = Loopback::fresh();
    let mut n2 = GoSerf::builder("n2", &lo)
        .arg("-snapshot")
        .arg(&snap.display().to_string())
        .arg("-rejoin")
        .join(go1.addr())
        .spawn();
    go1.wait_all_alive(&["go1", "n2"], JOIN);
    event_uncoalesced(&go1, "deploy", "v1");
    wait_until(EVENT, "Go's n2 to see deploy", || {
        let log = n2.log();
        if log.contains("deploy") {
            Ok(())
        } else {
            Err(n2.log_tail(10))
        }
    });
    let status = n2.stop();
    assert!(status.success(), "Go's n2 exited with {status}");
    let written = read(&snap);
    assert!(
        written.contains(&format!("alive: go1 {}\n", go1.addr()))
            && written.contains("event-clock: ")
            && written.contains("\nleave\n"),
        "Go's snapshot:\n{written}"
    );
    go1.wait_member_status("n2", "left", JOIN);

    let mut v = VassalAgent::builder("n2", &lo)
        .bind(n2.addr())
        .arg(&format!("-snapshot={}", snap.display()))
        .arg("-rejoin")
        .arg(&format!(
            "-event-handler=user=echo \"$SERF_USER_EVENT $(cat)\" >> {}",
            log.display()
        ))
        .spawn();
    v.wait_member_event("member-join", "go1", JOIN);
    go1.wait_member_status("n2", "alive", JOIN);
    hold_for(NO_REPLAY, "Vassal not to replay deploy v1", || {
        v.assert_running();
        match read(&log).as_str() {
            "" => Ok(()),
            other => Err(format!("handler log: {other:?}")),
        }
    });
    event_uncoalesced(&go1, "deploy", "v2");
    wait_file(&log, "the handler to run for deploy v2 only", |s| {
        s == "deploy v2\n"
    });
}

// spec §5.3: without -rejoin, a graceful leave clears the snapshot's members, so a restarted
// agent stays on its own.
#[test]
fn after_a_graceful_leave_vassal_does_not_rejoin_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("v1.snapshot");
    let go1 = GoSerf::start("go1", &Loopback::fresh());
    let lo = Loopback::fresh();
    let mut v = VassalAgent::builder("v1", &lo)
        .arg(&format!("-snapshot={}", snap.display()))
        .join(go1.addr())
        .spawn();
    go1.wait_all_alive(&["go1", "v1"], JOIN);
    let status = v.stop();
    assert!(status.success(), "{status}");
    assert!(read(&snap).contains("\nleave\n"), "{}", read(&snap));
    go1.wait_member_status("v1", "left", JOIN);

    let mut v = VassalAgent::builder("v1", &lo)
        .bind(v.addr())
        .arg(&format!("-snapshot={}", snap.display()))
        .spawn();
    v.wait_log_contains("serf: snapshot restored", JOIN);
    hold_for(Duration::from_secs(3), "v1 to stay on its own", || {
        v.assert_running();
        if v.saw_member_event("member-join", "go1") {
            return Err(v.log_tail(20));
        }
        match go1.member_status("v1").as_deref() {
            Some("left") => Ok(()),
            other => Err(format!("go1 lists v1 as {other:?}")),
        }
    });
}

// spec §5.7: the keyring file follows Go's `serf keys` rotation (primary first), and an agent
// restarted from it alone (old key gone) joins the rotated cluster.
#[test]
fn keyring_file_follows_go_key_rotation_and_restarts_the_agent() {
    let (old, new) = (GoSerf::keygen(), GoSerf::keygen());
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("keyring.json");
    fs::write(&ring, format!("[\"{old}\"]")).unwrap();
    let go1 = GoSerf::builder("go1", &Loopback::fresh())
        .encrypt(&old)
        .spawn();
    let mut v = VassalAgent::builder("v1", &Loopback::fresh())
        .arg(&format!("-keyring-file={}", ring.display()))
        .join(go1.addr())
        .spawn();
    go1.wait_all_alive(&["go1", "v1"], JOIN);

    let keys_in = |path: &Path| -> Vec<String> {
        serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{e}: {}", read(path)))
    };
    for (step, want) in [
        ("-install", vec![old.clone(), new.clone()]),
        ("-use", vec![new.clone(), old.clone()]),
        ("-remove", vec![new.clone()]),
    ] {
        let key = if step == "-remove" { &old } else { &new };
        let out = go1
            .cli(&["keys", step, key])
            .unwrap_or_else(|e| panic!("serf keys {step}: {e}"));
        assert!(out.contains("Successfully"), "serf keys {step}: {out}");
        wait_until(EVENT, &format!("the keyring file after {step}"), || {
            v.assert_running();
            if keys_in(&ring) == want {
                Ok(())
            } else {
                Err(read(&ring))
            }
        });
    }

    let again = v.builder_again();
    v.kill_9();
    let mut v = again.spawn();
    v.wait_member_event("member-join", "go1", JOIN);
}

// spec §5.7: tags set at run time are written to the tags file, and an agent started from that
// file gossips them (Go lists them).
#[test]
fn runtime_tags_go_to_the_tags_file_and_come_back_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let tags_file = dir.path().join("tags.json");
    let go1 = GoSerf::start("go1", &Loopback::fresh());
    let lo = Loopback::fresh();
    let addr = lo.addr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ml = vassal_memberlist::Config::lan("v1");
        let config = vassal_node::NodeConfig {
            tags_file: Some(tags_file.clone()),
            ..vassal_node::NodeConfig::new(vassal_serf::Config::new(ml), addr)
        };
        let (node, _task) = vassal_node::spawn(config).await.expect("bind");
        node.join(vec![go1.addr()], false).await.expect("join go1");
        let tags = [("role", "web"), ("dc", "eu")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        node.set_tags(tags).await.expect("tags fit");
        node.shutdown().await;
    });
    assert_eq!(
        read(&tags_file),
        "{\n  \"dc\": \"eu\",\n  \"role\": \"web\"\n}"
    );

    let mut v = VassalAgent::builder("v2", &Loopback::fresh())
        .arg(&format!("-tags-file={}", tags_file.display()))
        .join(go1.addr())
        .spawn();
    let web = wait_until(JOIN, "Go to list v2 with role=web", || {
        v.assert_running();
        let web = go1.try_members_filtered(&["-tag", "role=web", "-status", "alive"])?;
        match web.iter().find(|m| m.name == "v2") {
            Some(m) => Ok(m.clone()),
            None => Err(format!("{web:#?}")),
        }
    });
    assert_eq!(web.tags.get("dc").map(String::as_str), Some("eu"));
}

// Serf's refusals, word for word: tags from flags with a tags file, and -encrypt with a
// keyring file, stop both agents at start with exit 1; so does a missing keyring file.
#[test]
fn conflicting_tag_and_key_options_stop_vassal_as_they_stop_go() {
    let dir = tempfile::tempdir().unwrap();
    let tags_file = dir.path().join("tags.json");
    let ring = dir.path().join("keyring.json");
    fs::write(&ring, format!("[\"{}\"]", GoSerf::keygen())).unwrap();
    let cases: [(&[String], &str); 2] = [
        (
            &[
                "-tag".into(),
                "role=web".into(),
                format!("-tags-file={}", tags_file.display()),
            ],
            "Tags config not allowed while using tag files",
        ),
        (
            &[
                format!("-encrypt={}", GoSerf::keygen()),
                format!("-keyring-file={}", ring.display()),
            ],
            "Encryption key not allowed while using a keyring",
        ),
    ];
    for (args, words) in cases {
        let lo = Loopback::fresh();
        let mut go = GoSerf::builder("go1", &lo);
        let mut v = VassalAgent::builder("v1", &lo);
        for a in args {
            go = go.arg(a);
            v = v.arg(a);
        }
        let (code, out) = go.spawn_expecting_exit(JOIN);
        assert_eq!(code, Some(1), "Go: {out}");
        assert!(out.contains(words), "Go said: {out}");
        let mut v = v.spawn();
        let status = wait_until(JOIN, "Vassal to exit", || {
            v.exit_status().ok_or_else(|| v.log_tail(10))
        });
        assert_eq!(status.code(), Some(1), "{}", v.log());
        assert!(v.log().contains(words), "Vassal said: {}", v.log());
    }

    let mut v = VassalAgent::builder("v1", &Loopback::fresh())
        .arg(&format!(
            "-keyring-file={}",
            dir.path().join("missing.json").display()
        ))
        .spawn();
    let status = wait_until(JOIN, "Vassal to exit", || {
        v.exit_status().ok_or_else(|| v.log_tail(10))
    });
    assert_eq!(status.code(), Some(1));
    assert!(
        v.log().contains("missing.json") && v.log().contains("does not exist"),
        "{}",
        v.log()
    );
}
