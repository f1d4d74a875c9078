//! Self-tests of the harness against the real Go agent only: if these fail, the interop tests'
//! verdicts about Vassal cannot be trusted either.

use std::time::Duration;

use vassal_testkit::{hold_for, GoSerf, Loopback};

#[test]
fn two_go_agents_join_and_list_each_other_alive() {
    let lo = Loopback::fresh();
    let a = GoSerf::builder("a", &lo).tag("role", "web").spawn();
    let b = GoSerf::builder("b", &lo).join(a.addr()).spawn();

    for agent in [&a, &b] {
        let members = agent.wait_all_alive(&["a", "b"], Duration::from_secs(5));
        assert_eq!(members.len(), 2, "{} lists {members:#?}", agent.name());
    }
    let seen_a = b
        .members()
        .into_iter()
        .find(|m| m.name == "a")
        .expect("b lists a");
    assert_eq!(seen_a.addr, a.addr(), "b's view of a's address");
    assert_eq!(
        seen_a.tags.get("role").map(String::as_str),
        Some("web"),
        "b's view of a's tags"
    );
}

#[test]
fn killed_go_agent_is_listed_failed() {
    let lo = Loopback::fresh();
    let a = GoSerf::start("a", &lo);
    let mut b = GoSerf::builder("b", &lo).join(a.addr()).spawn();
    a.wait_member_status("b", "alive", Duration::from_secs(5));

    b.kill_9();
    // LAN profile: 1 s probes, suspicion ≥ 5 s with two nodes (spec §3.5); ~6 s observed.
    a.wait_member_status("b", "failed", Duration::from_secs(15));
    assert_eq!(a.member_status("a").as_deref(), Some("alive"));
}

#[test]
fn interrupted_go_agent_leaves_gracefully() {
    let lo = Loopback::fresh();
    let a = GoSerf::start("a", &lo);
    let mut b = GoSerf::builder("b", &lo).join(a.addr()).spawn();
    a.wait_member_status("b", "alive", Duration::from_secs(5));

    let status = b.stop();
    assert!(
        status.success(),
        "serf agent exited with {status} after SIGINT; log:\n{}",
        b.log_tail(20)
    );
    a.wait_member_status("b", "left", Duration::from_secs(10));
    assert!(
        b.log().contains("Graceful leave complete") || b.log().contains("shutdown complete"),
        "{}",
        b.log_tail(20)
    );
}

#[test]
fn go_join_via_cli_and_restart_under_same_name() {
    let lo = Loopback::fresh();
    let a = GoSerf::start("a", &lo);
    let mut b = GoSerf::start("b", &lo);
    assert_eq!(a.member_status("b"), None, "a lists b before any join");

    b.join(a.addr());
    a.wait_member_status("b", "alive", Duration::from_secs(5));

    b.kill_9();
    a.wait_member_status("b", "failed", Duration::from_secs(15));
    let b2 = b.builder_again().join(a.addr()).spawn();
    a.wait_member_status("b", "alive", Duration::from_secs(10));
    b2.wait_all_alive(&["a", "b"], Duration::from_secs(5));
}

#[test]
fn go_agents_with_different_keys_do_not_join() {
    let lo = Loopback::fresh();
    let a = GoSerf::builder("a", &lo).encrypt(&GoSerf::keygen()).spawn();
    let b = GoSerf::builder("b", &lo).encrypt(&GoSerf::keygen()).spawn();

    let err = b
        .try_join(a.addr())
        .expect_err("join with a different key must fail");
    assert!(!err.is_empty());
    hold_for(Duration::from_secs(2), "a to list only itself", || {
        let m = a.members();
        if m.len() == 1 {
            Ok(())
        } else {
            Err(format!("{m:#?}"))
        }
    });

    let c = GoSerf::builder("c", &lo).encrypt(&GoSerf::keygen()).spawn();
    assert_eq!(c.members().len(), 1);
}

#[test]
fn go_agents_with_the_same_key_join() {
    let lo = Loopback::fresh();
    let key = GoSerf::keygen();
    let a = GoSerf::builder("a", &lo).encrypt(&key).spawn();
    let b = GoSerf::builder("b", &lo)
        .encrypt(&key)
        .join(a.addr())
        .spawn();
    a.wait_all_alive(&["a", "b"], Duration::from_secs(5));
    b.wait_all_alive(&["a", "b"], Duration::from_secs(5));
}
