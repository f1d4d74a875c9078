//! The core's metrics (issue 13): a small cluster on the fake clock, run under a
//! `DebuggingRecorder` installed for this thread only, emits Go Serf's keys at Go's places.
//! Counts are summed over every node of the cluster (they share the thread's recorder).

// `Instant::now()` is each test's epoch; only differences from it matter.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use support::Cluster;
use vassal_serf::{Event, QueryParams};

/// One snapshot of the recorder. Taking it empties the histograms (the recorder hands their
/// samples over), so each check takes one and reads everything it needs from it.
struct Seen(Vec<(CompositeKey, DebugValue)>);

impl Seen {
    fn take(s: &Snapshotter) -> Self {
        Seen(
            s.snapshot()
                .into_vec()
                .into_iter()
                .map(|(k, _, _, v)| (k, v))
                .collect(),
        )
    }

    /// A counter's value, or how many samples a histogram took; 0 when never emitted.
    fn value(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut total = 0;
        for (key, v) in &self.0 {
            let theirs: Vec<(&str, &str)> =
                key.key().labels().map(|l| (l.key(), l.value())).collect();
            if key.kind() != kind || key.key().name() != name || theirs != labels {
                continue;
            }
            total += match v {
                DebugValue::Counter(n) => *n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 1,
            };
        }
        total
    }

    fn counter(&self, name: &str) -> u64 {
        self.value(MetricKind::Counter, name, &[])
    }

    fn named(&self, name: &str, label: &str) -> u64 {
        self.value(MetricKind::Counter, name, &[("name", label)])
    }

    fn samples(&self, name: &str) -> u64 {
        self.value(MetricKind::Histogram, name, &[])
    }
}

/// Counter `name` (no labels) as it stands.
fn counter(s: &Snapshotter, name: &str) -> u64 {
    Seen::take(s).counter(name)
}

fn named(s: &Snapshotter, name: &str, label: &str) -> u64 {
    Seen::take(s).named(name, label)
}

/// Three nodes, `b` and `c` joined to `a`, run until gossip settles.
fn three(now: Instant) -> Cluster {
    let mut c = Cluster::new(&["a", "b", "c"], now);
    c.join(1, 0);
    c.join(2, 0);
    c.run_for(Duration::from_secs(5));
    c
}

#[test]
fn a_join_counts_each_member_once_on_each_node_and_a_crash_counts_failures() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut c = three(Instant::now());
        let seen = Seen::take(&snap);
        // Each node sees three members join (itself included, as Go's NotifyJoin reports).
        assert_eq!(seen.counter("serf.member.join"), 9);
        assert_eq!(seen.counter("serf.member.failed"), 0);
        assert!(
            seen.counter("memberlist.msg.alive") >= 6,
            "alive messages applied"
        );
        assert!(seen.samples("memberlist.gossip") > 0, "gossip rounds timed");
        assert!(seen.samples("memberlist.probeNode") > 0, "probes timed");
        assert!(
            seen.samples("memberlist.pushPullNode") >= 2,
            "the joins' push/pulls"
        );
        assert!(seen.samples("serf.msgs.sent") > 0 && seen.samples("serf.msgs.received") > 0);
        assert!(
            seen.samples("serf.queue.Intent") >= 3,
            "each node sampled its queues"
        );

        assert!(
            seen.samples("serf.coordinate.adjustment-ms") > 0,
            "acks carried coordinates"
        );

        // `c` is cut off: `a` and `b` suspect it, then declare it failed.
        c.down[2] = true;
        c.run_for(Duration::from_secs(30));
        // `a` and `b` each see `c` fail, and `c`, hearing nothing, sees both of them fail.
        assert_eq!(counter(&snap, "serf.member.failed"), 4);
        assert!(counter(&snap, "memberlist.msg.suspect") >= 1);
        assert!(counter(&snap, "memberlist.msg.dead") >= 2);
        assert_eq!(counter(&snap, "serf.member.left"), 0);

        // It comes back within the flap timeout (60 s).
        c.down[2] = false;
        c.join(2, 0);
        c.run_for(Duration::from_secs(5));
        // Both sides of the partition see the other come back: four joins, each a flap.
        assert_eq!(counter(&snap, "serf.member.join"), 13);
        assert_eq!(counter(&snap, "serf.member.flap"), 4);
    });
}

#[test]
fn a_graceful_leave_counts_left_not_failed() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut c = three(Instant::now());
        let now = c.now;
        c.nodes[2].leave(now);
        c.run_for(Duration::from_secs(10));
        // `a` and `b` see `c` leave (and `c` itself once its leave is done).
        assert!(counter(&snap, "serf.member.left") >= 2);
        assert_eq!(counter(&snap, "serf.member.failed"), 0);
    });
}

#[test]
fn user_events_and_queries_count_in_total_and_by_name() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut c = three(Instant::now());
        let now = c.now;
        c.nodes[0].user_event("deploy", b"v1", false, now).unwrap();
        c.run_for(Duration::from_secs(2));
        assert_eq!(
            counter(&snap, "serf.events"),
            3,
            "every node, the sender included"
        );
        assert_eq!(named(&snap, "serf.events", "deploy"), 3);

        let params = QueryParams {
            request_ack: true,
            ..QueryParams::default()
        };
        let before = counter(&snap, "serf.queries");
        let ltime = c.nodes[0].query("load", b"", &params, now).unwrap();
        c.run_for(Duration::from_secs(1));
        let now = c.now;
        assert_eq!(counter(&snap, "serf.queries") - before, 3);
        assert_eq!(named(&snap, "serf.queries", "load"), 3);
        assert_eq!(counter(&snap, "serf.query_acks"), 3, "each node acks once");
        // Node `b` answers its query event.
        let q = c
            .take_events(1)
            .into_iter()
            .find_map(|e| match e {
                Event::Query(q) if q.name == "load" => Some(q),
                _ => None,
            })
            .expect("b got the query");
        c.nodes[1].respond(ltime, q.id, b"0.5", now).unwrap();
        c.deliver();
        assert_eq!(counter(&snap, "serf.query_responses"), 1);
        assert_eq!(counter(&snap, "serf.query_duplicate_responses"), 0);
    });
}

#[test]
fn without_a_recorder_nothing_changes() {
    // The macros are no-ops without a recorder: the same seeded cluster gives the same events
    // whether metrics are recorded or not (the simulator runs without one).
    let start = Instant::now();
    let plain = {
        let mut c = three(start);
        format!("{:?}", c.take_events(0))
    };
    let recorder = DebuggingRecorder::new();
    let recorded = metrics::with_local_recorder(&recorder, || {
        let mut c = three(start);
        format!("{:?}", c.take_events(0))
    });
    assert_eq!(plain, recorded);
}
