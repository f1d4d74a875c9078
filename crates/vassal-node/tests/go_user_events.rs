//! A user event sent by a Vassal node runs a real Go agent's event handler with Serf's contract:
//! `SERF_EVENT=user`, `SERF_USER_EVENT=<name>`, the payload on stdin (spec §4.6, §5.2).

use std::time::Duration;

use vassal_node::{spawn, NodeConfig};
use vassal_testkit::{wait_until, GoSerf, Loopback};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vassal_user_event_runs_a_go_handler() {
    let lo = Loopback::fresh();
    let out = tempfile::tempdir().expect("temp dir");
    let record = out.path().join("deploy.txt");
    let script = out.path().join("handler.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ echo \"$SERF_EVENT $SERF_USER_EVENT\"; cat; }} >> '{}'\n",
            record.display()
        ),
    )
    .expect("write handler");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let go = GoSerf::builder("go1", &lo)
        .event_handler(&format!("user:deploy={}", script.display()))
        .spawn();

    let mut ml = vassal_memberlist::Config::lan("v1");
    ml.seed = 7;
    let bind = lo.addr();
    let (v, _task) = spawn(NodeConfig::new(vassal_serf::Config::new(ml), bind))
        .await
        .expect("bind");
    v.join(vec![go.addr()], false)
        .await
        .expect("join the Go agent");
    v.user_event("deploy", b"v2", false)
        .await
        .expect("event fits");

    let seen = tokio::task::spawn_blocking(move || {
        wait_until(
            Duration::from_secs(10),
            "the Go handler to run for deploy",
            || {
                // The shell creates the file before it writes: wait for both lines.
                let text = std::fs::read_to_string(&record)
                    .map_err(|e| format!("{}: {e}", record.display()))?;
                if text.lines().count() >= 2 {
                    Ok(text)
                } else {
                    Err(format!("so far: {text:?}"))
                }
            },
        )
    })
    .await
    .expect("waiter");
    // Go appends a newline to a payload that lacks one.
    assert_eq!(seen, "user deploy\nv2\n", "what the Go handler saw");
    v.shutdown().await;
}
