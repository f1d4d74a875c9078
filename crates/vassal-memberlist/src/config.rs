//! Protocol configuration: typed data with the LAN, WAN and local presets of memberlist
//! (spec §3.1), validated once in [`Memberlist::new`](crate::Memberlist::new).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

use crate::wire::{Keyring, Vsn};

/// The oldest memberlist protocol we can speak with.
pub const PROTOCOL_MIN: u8 = 1;
/// The newest memberlist protocol we understand (CRC needs 5, nacks 4, TCP pings 3).
pub const PROTOCOL_MAX: u8 = 5;
/// The memberlist protocol we speak. A Serf agent always speaks 2.
pub const PROTOCOL_VERSION: u8 = 2;

/// Everything the state machine needs to know about itself and its timing.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name; unique in the cluster.
    pub name: String,
    /// Address and port we tell peers to reach us at (`-advertise`, else the bind address).
    pub advertise: SocketAddr,
    /// Our bind port: peers that advertise port 0, and indirect probes without a port, use it.
    pub bind_port: u16,
    /// TCP exchange deadline (push/pull, fallback ping). Raise on slow links.
    pub tcp_timeout: Duration,
    /// Peers asked to probe a node indirectly after a direct probe fails.
    pub indirect_checks: usize,
    /// Broadcast retransmissions = `retransmit_mult × ceil(log10(n + 1))`.
    pub retransmit_mult: u32,
    /// How many alive members hear our own news straight from us, besides gossip: our `alive`
    /// once a join's push/pull is done and when we refute a suspicion, our `dead` when we
    /// leave, and (through
    /// [`Memberlist::send_user_to_some`](crate::Memberlist::send_user_to_some)) Serf's user
    /// events, queries and leave intent. Gossip misses a given node with a probability of
    /// about `e^-(retransmits)`, which is far from nothing in a small cluster; a missed node
    /// then waits for the next push/pull, tens of seconds. Telling up to this many members
    /// directly closes that tail where it is widest, in clusters of up to this size. Zero: gossip
    /// only, as Go's memberlist.
    pub direct_fanout: usize,
    /// Suspicion timeout multiplier (Lifeguard minimum).
    pub suspicion_mult: u32,
    /// Upper bound on the suspicion timeout, as a multiple of the minimum.
    pub suspicion_max_timeout_mult: u32,
    /// Anti-entropy full-state sync period (scaled up above 32 nodes). Zero disables it.
    pub push_pull_interval: Duration,
    /// Time between failure-detection probes.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking peers to probe indirectly.
    pub probe_timeout: Duration,
    /// Skip the TCP fallback ping.
    pub disable_tcp_pings: bool,
    /// Lifeguard local-health ceiling: probe deadlines scale by at most this factor.
    pub awareness_max_multiplier: u32,
    /// Peers gossiped to each gossip interval.
    pub gossip_nodes: usize,
    /// Time between gossip rounds. Zero disables gossip.
    pub gossip_interval: Duration,
    /// Keep gossiping to a dead node this long so it can refute.
    pub gossip_to_the_dead_time: Duration,
    /// LZW-compress packets (when smaller) and streams.
    pub enable_compression: bool,
    /// Byte budget for a gossip packet.
    pub udp_buffer_size: usize,
    /// Delegate (Serf) protocol range and current version: `[min, max, cur]`.
    pub delegate_protocol: [u8; 3],
    /// Packet/stream label (memberlist ≥ 0.3.0). Empty: none.
    pub label: Vec<u8>,
    /// Encryption keys; `None` disables encryption.
    pub keyring: Option<Keyring>,
    /// Refuse unencrypted input when a keyring is set.
    pub gossip_verify_incoming: bool,
    /// Encrypt output when a keyring is set.
    pub gossip_verify_outgoing: bool,
    /// Maximum decompressed size accepted from the wire.
    pub max_decompressed: usize,
    /// Seed of every random choice this node makes (same seed, same trace).
    pub seed: u64,
}

impl Config {
    /// memberlist's `DefaultLANConfig`: tuned for a local network.
    pub fn lan(name: impl Into<String>) -> Self {
        Config {
            name: name.into(),
            advertise: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7946),
            bind_port: 7946,
            tcp_timeout: Duration::from_secs(10),
            indirect_checks: 3,
            retransmit_mult: 4,
            direct_fanout: 64,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            push_pull_interval: Duration::from_secs(30),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            disable_tcp_pings: false,
            awareness_max_multiplier: 8,
            gossip_nodes: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_to_the_dead_time: Duration::from_secs(30),
            enable_compression: true,
            udp_buffer_size: 1400,
            delegate_protocol: [0, 0, 0],
            label: Vec::new(),
            keyring: None,
            gossip_verify_incoming: true,
            gossip_verify_outgoing: true,
            max_decompressed: 40 << 20,
            seed: 0,
        }
    }

    /// memberlist's `DefaultWANConfig`: slower timers for high-latency links.
    pub fn wan(name: impl Into<String>) -> Self {
        Config {
            tcp_timeout: Duration::from_secs(30),
            suspicion_mult: 6,
            push_pull_interval: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(5),
            gossip_nodes: 4,
            gossip_interval: Duration::from_millis(500),
            gossip_to_the_dead_time: Duration::from_secs(60),
            ..Config::lan(name)
        }
    }

    /// memberlist's `DefaultLocalConfig`: fast timers for loopback.
    pub fn local(name: impl Into<String>) -> Self {
        Config {
            tcp_timeout: Duration::from_secs(1),
            indirect_checks: 1,
            retransmit_mult: 2,
            suspicion_mult: 3,
            push_pull_interval: Duration::from_secs(15),
            probe_timeout: Duration::from_millis(200),
            gossip_interval: Duration::from_millis(100),
            gossip_to_the_dead_time: Duration::from_secs(15),
            ..Config::lan(name)
        }
    }

    /// The six version bytes we advertise.
    pub fn vsn(&self) -> Vsn {
        let [dmin, dmax, dcur] = self.delegate_protocol;
        [
            PROTOCOL_MIN,
            PROTOCOL_MAX,
            PROTOCOL_VERSION,
            dmin,
            dmax,
            dcur,
        ]
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if self.probe_interval.is_zero() {
            return Err(ConfigError::Zero("probe_interval"));
        }
        if self.probe_timeout > self.probe_interval {
            return Err(ConfigError::ProbeTimeout {
                timeout: self.probe_timeout,
                interval: self.probe_interval,
            });
        }
        if self.awareness_max_multiplier == 0 {
            return Err(ConfigError::Zero("awareness_max_multiplier"));
        }
        if self.label.len() > 255 {
            return Err(ConfigError::LabelTooLong(self.label.len()));
        }
        Ok(())
    }
}

/// A configuration the state machine refuses; nothing was started.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The node has no name.
    #[error("node name is empty; pass -node NAME")]
    EmptyName,
    /// A setting that must be positive (named) is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The probe timeout does not fit in the probe interval.
    #[error("probe timeout {timeout:?} is longer than the probe interval {interval:?}")]
    ProbeTimeout {
        /// The configured probe timeout.
        timeout: Duration,
        /// The configured probe interval.
        interval: Duration,
    },
    /// The label (its length given) does not fit its one-byte length prefix.
    #[error("label is {0} bytes; limit is 255")]
    LabelTooLong(usize),
}
