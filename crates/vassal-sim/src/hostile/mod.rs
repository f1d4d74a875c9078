//! A hostile node beside a simulated cluster: it joins like any node, then forges well-formed
//! memberlist and Serf messages (any name, incarnation, Lamport time, coordinate, timeout), answers
//! probes with whatever ack payload it likes, and sees the queries gossiped to it.
//!
//! It is not a simulated [`Serf`](vassal_serf::Serf): it is an outsider address
//! ([`Sim::add_outsider`]) whose traffic a test reads and answers. Messages are built with
//! memberlist's public encoders; Serf's message encoder is private to `vassal-serf`, so
//! [`forge`] writes Serf's bodies itself with memberlist's msgpack writer, key for key as Go does.
//!
//! [`fuzz`] drives it from fuzzer input (`fuzz/fuzz_targets/serf_cluster.rs`, and the corpus
//! replay in `tests/fuzz_corpus.rs`).

pub mod forge;
pub mod fuzz;
pub mod scenario;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use vassal_memberlist::wire::{
    self, Ack, ErrResp, Message, NodeStateKind, PushNodeState, PushPull, ReadOptions,
    StreamMessage, Vsn,
};

use crate::{Captured, Sim};

/// A query the adversary saw gossiped (Serf type 4), enough to answer or forge answers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenQuery {
    pub ltime: u64,
    pub id: u32,
    pub name: String,
    pub payload: Vec<u8>,
    /// Where its responses go (the asker's address and port).
    pub reply_to: SocketAddr,
}

/// How many gossiped queries the adversary remembers (newest last).
const SEEN_QUERIES: usize = 16;

/// The hostile node.
#[derive(Debug, Clone)]
pub struct Adversary {
    pub name: String,
    pub addr: SocketAddr,
    /// Protocol versions it advertises (copied from an honest node, so it is accepted).
    pub vsn: Vsn,
    pub incarnation: u32,
    /// Answer direct probes (pings) at all; off, it looks crashed to the failure detector.
    pub answer_pings: bool,
    /// The payload of its acks, where Serf expects a Vivaldi coordinate.
    pub ack_payload: Option<Vec<u8>>,
    /// The Serf state (memberlist's `user_state`) it hands over in push/pulls, as encoded by
    /// [`forge::serf_push_pull`]; empty: none.
    pub push_pull_state: Vec<u8>,
    /// Everything it sent: packets, and streams it opened.
    pub forged: u64,
    seen_queries: Vec<SeenQuery>,
}

const READ: ReadOptions<'static> = ReadOptions {
    label: &[],
    keyring: None,
    verify_incoming: false,
};

impl Adversary {
    /// An adversary called `name` at `addr` (registered as an outsider of `sim`), not yet known
    /// to anyone. Its coordinate is the origin, valid, until a test says otherwise.
    pub fn new(sim: &mut Sim, name: &str, addr: SocketAddr) -> Self {
        sim.add_outsider(addr);
        let vsn = sim.serf(0).memberlist().local_node().vsn;
        Adversary {
            name: name.to_owned(),
            addr,
            vsn,
            incarnation: 1,
            answer_pings: true,
            ack_payload: Some(vassal_serf::coordinate::Coordinate::default().to_ack_payload()),
            push_pull_state: Vec::new(),
            forged: 0,
            seen_queries: Vec::new(),
        }
    }

    /// Joins through node `via` with a push/pull, as `serf join` does, and merges its answer
    /// (nothing to merge: the adversary keeps no table).
    pub fn join(&mut self, sim: &mut Sim, via: usize) {
        let pp = PushPull {
            join: true,
            nodes: vec![self.own_entry()],
            user_state: self.push_pull_state.clone(),
        };
        self.open_stream(sim, via, &StreamMessage::PushPull(pp));
    }

    /// Its own entry, as it puts it in a push/pull.
    pub fn own_entry(&self) -> PushNodeState {
        PushNodeState {
            name: self.name.clone(),
            addr: self.addr.ip(),
            port: self.addr.port(),
            meta: forge::empty_tags(),
            incarnation: self.incarnation,
            state: NodeStateKind::Alive,
            vsn: self.vsn.to_vec(),
        }
    }

    /// Sends memberlist messages (each as [`wire::encode_message`] writes it) in one packet.
    pub fn send(&mut self, sim: &mut Sim, to: usize, msgs: &[Vec<u8>]) {
        self.forged += 1;
        let bytes = forge::packet(msgs);
        sim.inject_packet(self.addr, to, bytes);
    }

    /// Sends one Serf message (type byte and body) in a memberlist user message.
    pub fn send_serf(&mut self, sim: &mut Sim, to: usize, serf_msg: Vec<u8>) {
        self.send(sim, to, &[wire::encode_message(&Message::User(serf_msg))]);
    }

    /// Opens a TCP exchange with node `to`; returns the node's reply, decoded.
    pub fn open_stream(
        &mut self,
        sim: &mut Sim,
        to: usize,
        msg: &StreamMessage,
    ) -> Option<StreamMessage> {
        self.forged += 1;
        let bytes = forge::stream(msg);
        let reply = sim.inject_stream(self.addr, to, &bytes)?;
        match wire::decode_stream(&reply, &READ) {
            Ok(Some((m, _))) => Some(m),
            _ => None,
        }
    }

    /// Queries gossiped to the adversary, oldest first (at most the last 16).
    pub fn seen_queries(&self) -> &[SeenQuery] {
        &self.seen_queries
    }

    /// Runs the cluster until virtual time `t`, answering what is sent to the adversary as it
    /// arrives: pings with its ack payload (if it answers pings), push/pulls with its own entry
    /// and state, and every other exchange with an error.
    pub fn run_until(&mut self, sim: &mut Sim, t: Duration) {
        while sim.run_until_captured(t) {
            for c in sim.take_captured() {
                self.handle(sim, c);
            }
        }
    }

    pub fn run_for(&mut self, sim: &mut Sim, d: Duration) {
        let t = sim.now() + d;
        self.run_until(sim, t);
    }

    /// Stops answering anything, as if crashed; it still drains what is sent to it.
    pub fn silence(&mut self) {
        self.answer_pings = false;
    }

    fn handle(&mut self, sim: &mut Sim, c: Captured) {
        match c {
            Captured::Packet { from, bytes, .. } => {
                let Ok(packet) = wire::decode_packet(&bytes, &READ) else {
                    return;
                };
                for msg in packet.messages {
                    match msg {
                        Message::Ping(p) if self.answer_pings => {
                            let to = match p.source_addr {
                                Some(ip) => sim
                                    .node_at(SocketAddr::new(ip, p.source_port))
                                    .unwrap_or(from),
                                None => from,
                            };
                            let ack = Ack {
                                seq_no: p.seq_no,
                                payload: self.ack_payload.clone(),
                            };
                            self.send(sim, to, &[wire::encode_message(&Message::Ack(ack))]);
                        }
                        Message::User(body) => self.note_serf_message(&body),
                        _ => {}
                    }
                }
            }
            Captured::Stream {
                from, id, bytes, ..
            } => {
                let reply = match wire::decode_stream(&bytes, &READ) {
                    Ok(Some((StreamMessage::PushPull(_), _))) if self.answer_pings => {
                        Ok(forge::stream(&StreamMessage::PushPull(PushPull {
                            join: false,
                            nodes: vec![self.own_entry()],
                            user_state: self.push_pull_state.clone(),
                        })))
                    }
                    Ok(Some((StreamMessage::Ping(p), _))) if self.answer_pings => {
                        Ok(forge::stream(&StreamMessage::Ack(Ack {
                            seq_no: p.seq_no,
                            payload: self.ack_payload.clone(),
                        })))
                    }
                    Ok(Some((StreamMessage::User(body), _))) => {
                        self.note_serf_message(&body);
                        Err("EOF".to_string())
                    }
                    _ if !self.answer_pings => Err("connection refused".to_string()),
                    _ => Ok(forge::stream(&StreamMessage::Err(ErrResp {
                        error: "unexpected message".into(),
                    }))),
                };
                sim.reply_to_stream(from, id, reply);
            }
        }
    }

    fn note_serf_message(&mut self, body: &[u8]) {
        if let Some(q) = forge::read_query(body) {
            if self.seen_queries.len() == SEEN_QUERIES {
                self.seen_queries.remove(0);
            }
            self.seen_queries.push(q);
        }
    }
}

/// An address in the simulated network that no node uses (for adversaries and ghosts).
pub fn outside_addr(last_octet: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 66, 0, last_octet]), port)
}
