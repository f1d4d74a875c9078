//! Helpers shared by the node's integration tests.

use vassal_node::{spawn, Handle, NodeConfig};

/// A node named `name` with the `local` profile and RNG seed `seed`, on a free loopback port.
pub async fn node(name: &str, seed: u64) -> Handle {
    let mut ml = vassal_memberlist::Config::local(name);
    ml.seed = seed;
    let config = NodeConfig::new(vassal_serf::Config::new(ml), "127.0.0.1:0".parse().unwrap());
    let (handle, _task) = spawn(config).await.expect("binds a free loopback port");
    handle
}
