//! Two real nodes on loopback, driven through the public `Handle` API: they find each other
//! alive, and a graceful leave shows up as `left` on the other side (spec §4.5).

mod support;

use std::time::Duration;

use support::node;
use tokio::time::Instant;
use vassal_node::{spawn, Handle, NodeConfig};
use vassal_serf::MemberStatus;

/// Polls `handle.members()` until `name` has `status`, failing with what was seen instead.
async fn wait_for_status(handle: &Handle, name: &str, status: MemberStatus, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let members = handle.members().await.expect("node is running");
        if members.iter().any(|m| m.name == name && m.status == status) {
            return;
        }
        if Instant::now() >= deadline {
            let seen: Vec<_> = members
                .iter()
                .map(|m| format!("{}={}", m.name, m.status))
                .collect();
            panic!("{name} not {status} within {within:?}; members seen: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_see_each_other_alive_then_a_graceful_leave_as_left() {
    let a = node("a", 1).await;
    let b = node("b", 2).await;

    let joined = b
        .join(vec![a.local_addr()], false)
        .await
        .expect("b joins a");
    assert_eq!(joined, 1);

    let within = Duration::from_secs(10);
    wait_for_status(&a, "b", MemberStatus::Alive, within).await;
    wait_for_status(&b, "a", MemberStatus::Alive, within).await;

    tokio::time::timeout(Duration::from_secs(10), b.leave())
        .await
        .expect("leave completes")
        .expect("b is running");
    wait_for_status(&a, "b", MemberStatus::Left, within).await;

    b.shutdown().await;
    a.shutdown().await;
    assert!(
        a.members().await.is_err(),
        "a handle to a stopped node errors"
    );
}

#[tokio::test]
async fn joining_nobody_reports_every_address_that_failed() {
    let a = node("lonely", 3).await;
    // A port we just released: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = a
        .join(vec![closed], false)
        .await
        .expect_err("nothing to join");
    let text = err.to_string();
    assert!(
        text.contains("1 error occurred") && text.contains("Failed to join 127.0.0.1"),
        "{text}"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn binding_a_taken_port_says_what_to_do() {
    let a = node("first", 4).await;
    let ml = vassal_memberlist::Config::local("second");
    let err = spawn(NodeConfig::new(
        vassal_serf::Config::new(ml),
        a.local_addr(),
    ))
    .await
    .expect_err("port is taken");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot bind {}: address in use (is another agent running? pass -bind to choose another port)",
            a.local_addr()
        )
    );
    a.shutdown().await;
}
