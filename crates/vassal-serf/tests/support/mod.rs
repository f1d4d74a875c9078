//! Test helpers shared by the integration tests (`mod support;`) and the core's unit tests
//! (`src/serf/tests.rs` includes this file by path; `lib.rs` names the crate `vassal_serf`
//! under `cfg(test)` so the paths below resolve in both). One node fed hand-made packets, or a
//! few nodes wired to each other with a fake clock and a perfect network.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vassal_memberlist::wire::{self, Message, WriteOptions};
use vassal_memberlist::{Config as MlConfig, Transmit};
use vassal_serf::messages;
use vassal_serf::{Config, Event, Outcome, Serf, SerfMessage, UserEvent};

/// The Serf protocol versions (min, max, current) and memberlist's, as a Go 0.9 agent sends.
pub const VSN: [u8; 6] = [1, 5, 2, 2, 5, 4];

/// The gossip address of node `i` (127.0.0.i:7946).
pub fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 7946))
}

/// The configuration of a node called `name` at [`addr(i)`](addr), LAN defaults.
pub fn config(name: &str, i: u8) -> Config {
    let mut ml = MlConfig::lan(name);
    ml.advertise = addr(i);
    ml.seed = u64::from(i) + 6;
    Config::new(ml)
}

/// A node called `name` at [`addr(i)`](addr) that knows only itself.
pub fn node(name: &str, i: u8, now: Instant) -> Serf {
    Serf::new(config(name, i), now).expect("valid config")
}

/// `msg` as one plain memberlist packet (no label, encryption, compression or CRC).
pub fn packet(msg: Message) -> Vec<u8> {
    let opts = WriteOptions {
        label: &[],
        keyring: None,
        compress: false,
        crc: false,
    };
    wire::encode_packet(&[wire::encode_message(&msg)], &opts, [0; 12])
}

/// A memberlist `alive` claiming `name` at incarnation `incarnation` from `addr(i)`, with no
/// tags: the forger's packet in the name-conflict tests.
pub fn forged_alive(name: &str, incarnation: u32, i: u8) -> Vec<u8> {
    packet(Message::Alive(wire::Alive {
        incarnation,
        node: name.into(),
        addr: addr(i).ip(),
        port: 7946,
        meta: vec![],
        vsn: VSN,
    }))
}

/// A Serf message gossiped in a memberlist user message.
pub fn serf_packet(msg: &SerfMessage) -> Vec<u8> {
    packet(Message::User(messages::encode(msg)))
}

/// A user event `name` (payload `p`) at Lamport time `ltime`, as gossip.
pub fn user_event(ltime: u64, name: &str) -> Vec<u8> {
    serf_packet(&SerfMessage::UserEvent(UserEvent {
        ltime,
        name: name.into(),
        payload: b"p".to_vec(),
        cc: false,
    }))
}

/// Everything `s` has to report.
pub fn events(s: &mut Serf) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The names of the user events among `evs`.
pub fn user_names(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            Event::User(u) => Some(u.name.clone()),
            _ => None,
        })
        .collect()
}

/// Every command outcome and notice `s` has to report.
pub fn outcomes(s: &mut Serf) -> Vec<Outcome> {
    std::iter::from_fn(|| s.poll_outcome()).collect()
}

/// Runs `s`'s timers for `d`, 10 ms at a time, dropping what it sends and its cluster events,
/// and returns the outcomes and notices it reported.
pub fn run_for(s: &mut Serf, now: &mut Instant, d: Duration) -> Vec<Outcome> {
    let end = *now + d;
    let mut out = Vec::new();
    while *now < end {
        *now += Duration::from_millis(10);
        s.handle_timeout(*now);
        while s.poll_transmit().is_some() {}
        events(s);
        out.extend(outcomes(s));
    }
    out
}

/// Nodes on a perfect network: node `k` is at `addr(k + 1)`; packets and streams arrive at
/// once, in order, unless their sender or receiver is `down`.
pub struct Cluster {
    /// The nodes, by index.
    pub nodes: Vec<Serf>,
    /// The fake clock.
    pub now: Instant,
    /// What each node reported, until taken with [`Cluster::take_events`].
    pub events: Vec<Vec<Event>>,
    /// Each node's command outcomes and notices, until taken with [`Cluster::take_outcomes`].
    pub outcomes: Vec<Vec<Outcome>>,
    /// Nodes cut off the network (as if crashed): they neither send nor receive.
    pub down: Vec<bool>,
}

impl Cluster {
    /// Nodes with these names, default configuration.
    pub fn new(names: &[&str], now: Instant) -> Self {
        Self::with(names, now, |_| {})
    }

    /// Nodes with these names, each configuration changed by `tweak` first.
    pub fn with(names: &[&str], now: Instant, tweak: impl Fn(&mut Config)) -> Self {
        let nodes: Vec<Serf> = (names.iter().zip(1u8..))
            .map(|(name, i)| {
                let mut c = config(name, i);
                tweak(&mut c);
                Serf::new(c, now).expect("valid config")
            })
            .collect();
        let n = nodes.len();
        Cluster {
            nodes,
            now,
            events: vec![Vec::new(); n],
            outcomes: vec![Vec::new(); n],
            down: vec![false; n],
        }
    }

    /// Node `k` joins node `to`; the exchange is delivered at once.
    pub fn join(&mut self, k: usize, to: usize) {
        let target = addr(to as u8 + 1);
        self.nodes[k].join(&[target], true, self.now);
        self.deliver();
    }

    /// Delivers everything the nodes send until they fall silent, collecting their events.
    pub fn deliver(&mut self) {
        loop {
            let mut quiet = true;
            for k in 0..self.nodes.len() {
                while let Some(t) = self.nodes[k].poll_transmit() {
                    quiet = false;
                    if !self.down[k] {
                        self.send(k, t);
                    }
                }
            }
            for (k, n) in self.nodes.iter_mut().enumerate() {
                self.events[k].extend(events(n));
                self.outcomes[k].extend(outcomes(n));
            }
            if quiet {
                return;
            }
        }
    }

    fn index_of(&self, to: SocketAddr) -> Option<usize> {
        (0..self.nodes.len()).find(|&k| addr(k as u8 + 1) == to && !self.down[k])
    }

    fn send(&mut self, from: usize, t: Transmit) {
        let (now, src) = (self.now, addr(from as u8 + 1));
        match t {
            Transmit::Packet { to, bytes } => {
                if let Some(k) = self.index_of(to) {
                    self.nodes[k].handle_packet(src, &bytes, now);
                }
            }
            Transmit::Stream { id, to, bytes, .. } => {
                let reply = match self.index_of(to) {
                    None => Err("connection refused".to_string()),
                    Some(k) => {
                        let peer = &mut self.nodes[k];
                        let msg = match peer.decode_stream(&bytes) {
                            Ok(Some((m, _))) => Ok(m),
                            Ok(None) => Err(wire::DecodeError::Truncated),
                            Err(e) => Err(e),
                        };
                        peer.handle_stream(src, msg, now)
                            .ok_or_else(|| "EOF".to_string())
                    }
                };
                let origin = &mut self.nodes[from];
                let msg = reply.and_then(|bytes| match origin.decode_stream(&bytes) {
                    Ok(Some((m, _))) => Ok(m),
                    Ok(None) => Err("truncated reply".to_string()),
                    Err(e) => Err(e.to_string()),
                });
                origin.handle_stream_reply(id, msg, now);
            }
        }
    }

    /// Advances the clock by `d`, 10 ms at a time, running each node's timers when due and
    /// delivering what they send.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(10);
            for n in &mut self.nodes {
                if n.poll_timeout().is_some_and(|t| t <= self.now) {
                    n.handle_timeout(self.now);
                }
            }
            self.deliver();
        }
    }

    /// Takes what node `k` reported so far.
    pub fn take_events(&mut self, k: usize) -> Vec<Event> {
        std::mem::take(&mut self.events[k])
    }

    /// Takes node `k`'s command outcomes and notices so far.
    pub fn take_outcomes(&mut self, k: usize) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes[k])
    }
}
