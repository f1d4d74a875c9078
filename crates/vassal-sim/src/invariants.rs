//! Safety invariants checked after every simulated step, on the node that just acted.
//!
//! - A node's incarnation, as any observer sees it, only rises while the observer remembers it,
//!   except when a node that left comes back at another address (a new process: memberlist
//!   takes it at any incarnation, as Go's does).
//! - A node an observer saw leave never comes back alive without a newer incarnation.
//! - A node's own incarnation stays below `u32::MAX` (at the top it could never refute again),
//!   and its three Lamport clocks (member, event, query) only rise and stay below `u64::MAX`
//!   (at the top every later event would look old).
//! - Its own Vivaldi coordinate stays finite.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use vassal_memberlist::NodeStateKind;
use vassal_serf::Serf;

/// What an observer last knew of a subject.
#[derive(Debug, Clone, Copy)]
struct Seen {
    incarnation: u32,
    state: NodeStateKind,
    addr: SocketAddr,
}

/// Per-observer memory of what it saw.
#[derive(Debug, Clone)]
pub struct Invariants {
    seen: Vec<BTreeMap<String, Seen>>,
    /// Each observer's member, event and query clocks when last checked.
    clocks: Vec<[u64; 3]>,
}

/// The names of the clocks in [`Invariants`]' order.
const CLOCKS: [&str; 3] = ["member", "event", "query"];

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    IncarnationFell {
        subject: String,
        was: u32,
        now: u32,
    },
    LeftCameBack {
        subject: String,
        incarnation: u32,
    },
    OwnIncarnationAtTop,
    ClockFell {
        clock: &'static str,
        was: u64,
        now: u64,
    },
    ClockAtTop {
        clock: &'static str,
    },
    CoordinateNotFinite,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::IncarnationFell { subject, was, now } => {
                write!(f, "incarnation of {subject} fell from {was} to {now}")
            }
            Violation::LeftCameBack {
                subject,
                incarnation,
            } => {
                write!(
                    f,
                    "{subject} left and came back alive at the same incarnation {incarnation}"
                )
            }
            Violation::OwnIncarnationAtTop => {
                write!(
                    f,
                    "own incarnation reached u32::MAX: no refutation is possible"
                )
            }
            Violation::ClockFell { clock, was, now } => {
                write!(f, "{clock} clock fell from {was} to {now}")
            }
            Violation::ClockAtTop { clock } => write!(f, "{clock} clock reached u64::MAX"),
            Violation::CoordinateNotFinite => write!(f, "own coordinate is not finite"),
        }
    }
}

impl Invariants {
    pub fn new(n: usize) -> Self {
        Invariants {
            seen: vec![BTreeMap::new(); n],
            clocks: vec![[0; 3]; n],
        }
    }

    /// `observer` restarted: it remembers nothing, so neither do we on its behalf.
    pub fn forget_observer(&mut self, observer: usize) {
        self.seen[observer].clear();
        self.clocks[observer] = [0; 3];
    }

    /// Checks what `observer` (running `serf`) now believes against what it believed before.
    pub fn check(
        &mut self,
        observer: usize,
        serf: &Serf,
        _names: &[&str],
    ) -> Result<(), Violation> {
        let clocks = [serf.member_clock(), serf.event_clock(), serf.query_clock()];
        for ((clock, was), now) in CLOCKS.into_iter().zip(self.clocks[observer]).zip(clocks) {
            if now < was {
                return Err(Violation::ClockFell { clock, was, now });
            }
            if now == u64::MAX {
                return Err(Violation::ClockAtTop { clock });
            }
        }
        self.clocks[observer] = clocks;
        let ml = serf.memberlist();
        if ml.incarnation_of(ml.local_name()) == Some(u32::MAX) {
            return Err(Violation::OwnIncarnationAtTop);
        }
        if let Some(c) = serf.coordinate(ml.local_name()) {
            let mut parts = c.vec.iter().chain([&c.error, &c.adjustment, &c.height]);
            if !parts.all(|v| v.is_finite()) {
                return Err(Violation::CoordinateNotFinite);
            }
        }
        let seen = &mut self.seen[observer];
        // Forget subjects the observer forgot (reaped dead nodes may return as new).
        seen.retain(|name, _| ml.node(name).is_some());
        for node in ml.members() {
            let incarnation = ml
                .incarnation_of(&node.name)
                .expect("listed members are known");
            if let Some(before) = seen.get(&node.name) {
                // memberlist moves a node to another address only once it has left (maybe
                // within this very step): a new process, which starts its incarnations anew.
                let rejoined_elsewhere = before.addr != node.socket_addr();
                if incarnation < before.incarnation && !rejoined_elsewhere {
                    return Err(Violation::IncarnationFell {
                        subject: node.name.clone(),
                        was: before.incarnation,
                        now: incarnation,
                    });
                }
                if before.state == NodeStateKind::Left
                    && node.state == NodeStateKind::Alive
                    && incarnation <= before.incarnation
                    && !rejoined_elsewhere
                {
                    return Err(Violation::LeftCameBack {
                        subject: node.name.clone(),
                        incarnation,
                    });
                }
            }
            seen.insert(
                node.name.clone(),
                Seen {
                    incarnation,
                    state: node.state,
                    addr: node.socket_addr(),
                },
            );
        }
        Ok(())
    }
}
