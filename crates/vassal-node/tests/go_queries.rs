//! Queries across Go Serf and Vassal, both ways (spec §4.7): Go's `serf query` with a tag filter
//! is acked and answered by a Vassal node, and a Vassal query is answered by a Go handler.

use std::time::Duration;

use tokio::time::Instant;
use vassal_node::{spawn, Handle, NodeConfig, QueryReply};
use vassal_serf::{Event, QueryParams};
use vassal_testkit::{GoSerf, Loopback};

async fn vassal(name: &str, lo: &Loopback, tags: &[(&str, &str)]) -> Handle {
    let mut ml = vassal_memberlist::Config::lan(name);
    ml.seed = 11;
    let mut config = vassal_serf::Config::new(ml);
    config.tags = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (handle, _task) = spawn(NodeConfig::new(config, lo.addr()))
        .await
        .expect("bind");
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_query_with_tag_filter_is_answered_by_vassal() {
    let lo = Loopback::fresh();
    let go = GoSerf::start("go1", &lo);
    let web = vassal("v-web", &lo, &[("role", "web")]).await;
    let lb = vassal("v-lb", &lo, &[("role", "lb")]).await;
    for v in [&web, &lb] {
        v.join(vec![go.addr()], false).await.expect("join Go");
        // Answer every query the way a `query:load` handler would.
        let (mut events, v2) = (v.events(), v.clone());
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                if let Event::Query(q) = &*e {
                    let answer = format!("load-of-{}", q.source_node);
                    let _ = v2.respond(q.ltime, q.id, answer.as_bytes()).await;
                }
            }
        });
    }
    let out = tokio::task::block_in_place(|| {
        vassal_testkit::wait_until(
            Duration::from_secs(10),
            "Go to see both Vassal nodes",
            || {
                let m = go.try_members()?;
                if m.iter().filter(|m| m.status == "alive").count() == 3 {
                    Ok(())
                } else {
                    Err(format!("{m:?}"))
                }
            },
        );
        go.cli(&[
            "query",
            "-format=json",
            "-timeout=2s",
            "-tag",
            "role=w.b",
            "load",
            "x",
        ])
    })
    .expect("serf query runs");
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(json["Acks"], serde_json::json!(["v-web"]), "acks: {out}");
    assert_eq!(
        json["Responses"],
        serde_json::json!({"v-web": "load-of-go1"}),
        "responses: {out}"
    );
    web.shutdown().await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vassal_query_is_answered_by_a_go_handler() {
    let lo = Loopback::fresh();
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("load.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"go-load $SERF_QUERY_NAME $(cat)\"\n",
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let go = GoSerf::builder("go1", &lo)
        .event_handler(&format!("query:load={}", script.display()))
        .spawn();
    let v = vassal("v1", &lo, &[]).await;
    v.join(vec![go.addr()], false).await.expect("join Go");
    let params = QueryParams {
        request_ack: true,
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let mut replies = v.query("load", b"p1", params).await.expect("query fits");

    let (mut acks, mut answers) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = tokio::time::timeout_at(deadline, replies.next()).await;
        match r.unwrap_or_else(|_| panic!("query never ended; acks {acks:?}, answers {answers:?}"))
        {
            Some(QueryReply::Ack { from }) => acks.push(from),
            Some(QueryReply::Response { from, payload }) => {
                answers.push((from, String::from_utf8_lossy(&payload).into_owned()))
            }
            None => break,
        }
    }
    acks.sort();
    assert_eq!(acks, ["go1", "v1"], "acks");
    // Go sends the handler's stdout, trailing newline included; v1 has no handler.
    assert_eq!(
        answers,
        [("go1".to_string(), "go-load load p1\n".to_string())],
        "answers"
    );
    v.shutdown().await;
}
