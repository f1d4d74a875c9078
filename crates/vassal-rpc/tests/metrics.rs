//! The RPC server's metrics (issue 13): Go's `agent.ipc.accept` and `agent.ipc.command`, and
//! the `vassal.rpc.connections` gauge rising with a client and falling when it leaves. One
//! thread, with a `DebuggingRecorder` as that thread's recorder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use vassal_node::{spawn, NodeConfig};
use vassal_rpc::{serve, Client, LogHub, ServerConfig};

/// The value of the counter or gauge `name`, if emitted.
fn value(s: &Snapshotter, name: &str) -> Option<f64> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(k, _, _, v)| {
            if k.key().name() != name {
                return None;
            }
            match v {
                DebugValue::Counter(n) => Some(n as f64),
                DebugValue::Gauge(g) => Some(g.into_inner()),
                DebugValue::Histogram(_) => None,
            }
        })
}

#[tokio::test(flavor = "current_thread")]
async fn clients_and_commands_are_counted_and_open_connections_gauged() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let ml = vassal_memberlist::Config::local("a");
    let config = NodeConfig::new(vassal_serf::Config::new(ml), "127.0.0.1:0".parse().unwrap());
    let (handle, _task) = spawn(config).await.expect("binds a free loopback port");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = ServerConfig {
        auth_key: String::new(),
        logs: LogHub::new(),
        events: broadcast::channel(16).0,
        event_handlers: BTreeMap::new(),
        left: Arc::new(Notify::new()),
    };
    tokio::spawn(serve(listener, handle.clone(), server));

    let client = Client::connect(&addr, "").await.expect("handshake");
    let members = client.members().await.expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(value(&snap, "agent.ipc.accept"), Some(1.0));
    assert_eq!(value(&snap, "vassal.rpc.connections"), Some(1.0));
    // The handshake and `members`.
    assert_eq!(value(&snap, "agent.ipc.command"), Some(2.0));

    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(&snap, "vassal.rpc.connections") != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the gauge still shows {:?} open connections 10 s after the client left",
            value(&snap, "vassal.rpc.connections")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await;
}
