//! Safety invariants checked after every simulated step, on the node that just acted.
//!
//! - A node's incarnation, as any observer sees it, only rises while the observer remembers it.
//! - A node an observer saw leave never comes back alive without a newer incarnation.

use std::collections::BTreeMap;
use std::fmt;

use vassal_memberlist::NodeStateKind;
use vassal_serf::Serf;

/// What an observer last knew of a subject.
#[derive(Debug, Clone, Copy)]
struct Seen {
    incarnation: u32,
    state: NodeStateKind,
}

/// Per-observer memory of what it saw.
#[derive(Debug, Clone)]
pub struct Invariants {
    seen: Vec<BTreeMap<String, Seen>>,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    IncarnationFell { subject: String, was: u32, now: u32 },
    LeftCameBack { subject: String, incarnation: u32 },
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
        }
    }
}

impl Invariants {
    pub fn new(n: usize) -> Self {
        Invariants {
            seen: vec![BTreeMap::new(); n],
        }
    }

    /// `observer` restarted: it remembers nothing, so neither do we on its behalf.
    pub fn forget_observer(&mut self, observer: usize) {
        self.seen[observer].clear();
    }

    /// Checks what `observer` (running `serf`) now believes against what it believed before.
    pub fn check(
        &mut self,
        observer: usize,
        serf: &Serf,
        _names: &[&str],
    ) -> Result<(), Violation> {
        let ml = serf.memberlist();
        let seen = &mut self.seen[observer];
        // Forget subjects the observer forgot (reaped dead nodes may return as new).
        seen.retain(|name, _| ml.node(name).is_some());
        for node in ml.members() {
            let incarnation = ml
                .incarnation_of(&node.name)
                .expect("listed members are known");
            if let Some(before) = seen.get(&node.name) {
                if incarnation < before.incarnation {
                    return Err(Violation::IncarnationFell {
                        subject: node.name.clone(),
                        was: before.incarnation,
                        now: incarnation,
                    });
                }
                if before.state == NodeStateKind::Left
                    && node.state == NodeStateKind::Alive
                    && incarnation <= before.incarnation
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
                },
            );
        }
        Ok(())
    }
}
