//! The shell's socket metrics (issue 13): two nodes on loopback, on one thread with a
//! `DebuggingRecorder` as that thread's recorder, count Go's `memberlist.udp.*` and
//! `memberlist.tcp.*` as they join, beside the core's `serf.member.join`.

mod support;

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use support::node;
use tokio::time::Instant;
use vassal_serf::MemberStatus;

/// Every counter and its value, by name (labels summed).
fn counters(s: &Snapshotter) -> Vec<(String, u64)> {
    (s.snapshot().into_vec().into_iter())
        .filter_map(|(k, _, _, v)| match (k.kind(), v) {
            (MetricKind::Counter, DebugValue::Counter(n)) => Some((k.key().name().to_owned(), n)),
            _ => None,
        })
        .collect()
}

fn counter(seen: &[(String, u64)], name: &str) -> u64 {
    seen.iter().filter(|(n, _)| n == name).map(|(_, v)| v).sum()
}

// One thread: the nodes' tasks run where the thread-local recorder is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_join_over_loopback_counts_datagrams_connections_and_members() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let a = node("a", 1).await;
    let b = node("b", 2).await;
    b.join(vec![a.local_addr()], false)
        .await
        .expect("b joins a");

    // Wait until both see each other alive and a probe has gone each way over UDP.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = counters(&snap);
        let both = a
            .members()
            .await
            .unwrap()
            .iter()
            .any(|m| m.name == "b" && m.status == MemberStatus::Alive)
            && b.members()
                .await
                .unwrap()
                .iter()
                .any(|m| m.name == "a" && m.status == MemberStatus::Alive);
        if both
            && counter(&seen, "memberlist.udp.received") > 0
            && counter(&seen, "serf.member.join") >= 4
        {
            break;
        }
        assert!(Instant::now() < deadline, "counters after 10 s: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = counters(&snap);
    assert!(counter(&seen, "memberlist.udp.sent") > 0, "{seen:?}");
    assert!(
        counter(&seen, "memberlist.tcp.accept") >= 1,
        "a accepted b's push/pull: {seen:?}"
    );
    assert!(
        counter(&seen, "memberlist.tcp.connect") >= 1,
        "b opened it: {seen:?}"
    );
    assert!(counter(&seen, "memberlist.tcp.sent") > 0, "{seen:?}");
    b.shutdown().await;
    a.shutdown().await;
}
