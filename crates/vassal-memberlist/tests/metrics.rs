//! memberlist's metrics (issue 13), under a `DebuggingRecorder` installed for this thread only:
//! Go's `memberlist.msg.*` counters where Go counts them, Lifeguard's health gauge and the
//! dropped-input counter Vassal adds.

// `Instant::now()` is each test's epoch; only differences from it matter.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use support::{addr, advance, alive, node, packet, suspect};
use vassal_memberlist::limits::MAX_INCARNATION_JUMP;
use vassal_memberlist::wire::{Dead, Message};
use vassal_memberlist::NoDelegate;

/// The value of counter `name` with exactly these labels (0 if never emitted).
fn counter(s: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut total = 0;
    for (key, _, _, v) in s.snapshot().into_vec() {
        let theirs: Vec<(&str, &str)> = key.key().labels().map(|l| (l.key(), l.value())).collect();
        if key.kind() == MetricKind::Counter && key.key().name() == name && theirs == labels {
            if let DebugValue::Counter(n) = v {
                total += n;
            }
        }
    }
    total
}

/// The last value of gauge `name`, if it was ever set.
fn gauge(s: &Snapshotter, name: &str) -> Option<f64> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, v)| match v {
            DebugValue::Gauge(g) if key.key().name() == name => Some(g.into_inner()),
            _ => None,
        })
}

#[test]
fn alive_suspect_and_dead_messages_are_counted_when_applied() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        let ours = counter(&snap, "memberlist.msg.alive", &[]);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
        assert_eq!(counter(&snap, "memberlist.msg.alive", &[]), ours + 1);
        // Old news is not counted: the same alive again changes nothing.
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
        assert_eq!(counter(&snap, "memberlist.msg.alive", &[]), ours + 1);

        a.handle_packet(
            addr(3),
            &packet(&[suspect("b", "c", 1)]),
            now,
            &mut NoDelegate,
        );
        assert_eq!(counter(&snap, "memberlist.msg.suspect", &[]), 1);

        let dead = Message::Dead(Dead {
            incarnation: 1,
            node: "b".into(),
            from: "c".into(),
        });
        a.handle_packet(addr(3), &packet(&[dead]), now, &mut NoDelegate);
        assert_eq!(counter(&snap, "memberlist.msg.dead", &[]), 1);
    });
}

#[test]
fn refused_input_is_counted_by_reason() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let now = Instant::now();
        let mut a = node("a", 1, now);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
        let forged = suspect("b", "c", 2 + MAX_INCARNATION_JUMP);
        a.handle_packet(
            addr(3),
            &packet(std::slice::from_ref(&forged)),
            now,
            &mut NoDelegate,
        );
        a.handle_packet(addr(3), &packet(&[forged]), now, &mut NoDelegate);
        let reason = [("reason", "incredible incarnation")];
        assert_eq!(counter(&snap, "vassal.drops", &reason), 2);
        assert_eq!(counter(&snap, "memberlist.msg.suspect", &[]), 0);
        a.handle_packet(addr(3), b"\xffnot a packet", now, &mut NoDelegate);
        assert_eq!(
            counter(&snap, "vassal.drops", &[("reason", "malformed packet")]),
            1
        );
    });
}

#[test]
fn a_failed_probe_raises_the_health_score_gauge() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut now = Instant::now();
        let mut a = node("a", 1, now);
        a.handle_packet(addr(2), &packet(&[alive("b", 2, 1)]), now, &mut NoDelegate);
        // `b` never answers: the probe fails and we take the blame (no one to nack).
        advance(&mut a, &mut now, Duration::from_secs(3));
        assert!(gauge(&snap, "memberlist.health.score").is_some_and(|g| g >= 1.0));
        assert!(counter(&snap, "memberlist.msg.suspect", &[]) >= 1);
    });
}
