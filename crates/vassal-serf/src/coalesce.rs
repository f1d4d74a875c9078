//! Event coalescing, as Serf's agent does it (spec §4.6, §4.14): member events, and user events
//! sent with `CC`, are held for a coalesce period (3 s) or until things have been quiet for a
//! quiescent period (1 s), whichever comes first, then flushed as fewer events.
//!
//! - Member events: per member only the latest kind survives; members sharing a kind are sent
//!   together in one event; a kind already sent for that member is not sent again (except
//!   updates).
//! - User events: per name only those with the highest Lamport time survive.
//!
//! Unlike Go Serf 0.9.4, whose member coalescer never forgets what it held (so an old update is
//! sent again with every later flush), what was flushed is cleared, as later Serf versions do.
//! Output order is deterministic: kinds in join, leave, failed, update, reap order, members and
//! event names sorted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vassal_memberlist::limits::later;

use crate::member::{Member, MemberEvent, MemberEventKind};
use crate::messages::UserEvent;
use crate::serf::Event;

/// One coalescing window: when it must flush.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// End of the coalesce period, set by the first event held.
    quantum: Option<Instant>,
    /// End of the quiet period, pushed back by every event held.
    quiescent: Option<Instant>,
}

impl Window {
    fn hold(&mut self, now: Instant, period: Duration, quiet: Duration) {
        self.quantum.get_or_insert(later(now, period));
        self.quiescent = Some(later(now, quiet));
    }

    fn deadline(&self) -> Option<Instant> {
        match (self.quantum, self.quiescent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }
}

/// The agent's coalescer; pure like the rest of this crate.
#[derive(Debug, Clone)]
pub struct Coalescer {
    period: Duration,
    quiet: Duration,
    members: BTreeMap<String, (MemberEventKind, Member)>,
    last_sent: BTreeMap<String, MemberEventKind>,
    member_window: Window,
    users: BTreeMap<String, (u64, Vec<UserEvent>)>,
    user_window: Window,
    out: Vec<Event>,
}

impl Coalescer {
    /// Serf's agent uses `period` 3 s and `quiet` 1 s for both kinds.
    pub fn new(period: Duration, quiet: Duration) -> Self {
        Coalescer {
            period,
            quiet,
            members: BTreeMap::new(),
            last_sent: BTreeMap::new(),
            member_window: Window::default(),
            users: BTreeMap::new(),
            user_window: Window::default(),
            out: Vec::new(),
        }
    }

    /// Takes an event: held if it coalesces, otherwise passed straight through.
    pub fn push(&mut self, event: Event, now: Instant) {
        match event {
            Event::Member(e) => {
                self.member_window.hold(now, self.period, self.quiet);
                for m in e.members {
                    self.members.insert(m.name.clone(), (e.kind, m));
                }
            }
            Event::User(u) if u.cc => {
                self.user_window.hold(now, self.period, self.quiet);
                match self.users.get_mut(&u.name) {
                    Some((ltime, events)) if *ltime == u.ltime => events.push(u),
                    Some((ltime, _)) if *ltime > u.ltime => {}
                    _ => {
                        self.users.insert(u.name.clone(), (u.ltime, vec![u]));
                    }
                }
            }
            other => self.out.push(other),
        }
    }

    /// Flushes what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.member_window.due(now) {
            self.flush_members();
        }
        if self.user_window.due(now) {
            self.user_window = Window::default();
            for (_, (_, events)) in std::mem::take(&mut self.users) {
                self.out.extend(events.into_iter().map(Event::User));
            }
        }
    }

    /// Flushes everything now (at shutdown).
    pub fn flush(&mut self) {
        self.flush_members();
        self.user_window = Window::default();
        for (_, (_, events)) in std::mem::take(&mut self.users) {
            self.out.extend(events.into_iter().map(Event::User));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to flush.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.member_window.deadline(), self.user_window.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Events ready for the handlers, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Event> {
        self.out.drain(..)
    }

    fn flush_members(&mut self) {
        self.member_window = Window::default();
        let mut by_kind: BTreeMap<u8, MemberEvent> = BTreeMap::new();
        for (name, (kind, member)) in std::mem::take(&mut self.members) {
            if self.last_sent.get(&name) == Some(&kind) && kind != MemberEventKind::Update {
                continue;
            }
            self.last_sent.insert(name, kind);
            by_kind
                .entry(kind as u8)
                .or_insert_with(|| MemberEvent {
                    kind,
                    members: Vec::new(),
                })
                .members
                .push(member);
        }
        self.out.extend(by_kind.into_values().map(Event::Member));
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's epoch: only differences from it matter
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::member::MemberStatus;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7946,
            tags: BTreeMap::new(),
            status: MemberStatus::Alive,
            vsn: [1, 5, 2, 2, 5, 5],
        }
    }

    fn member_event(kind: MemberEventKind, name: &str) -> Event {
        Event::Member(MemberEvent {
            kind,
            members: vec![member(name)],
        })
    }

    fn user(name: &str, ltime: u64, payload: &str, cc: bool) -> Event {
        Event::User(UserEvent {
            ltime,
            name: name.into(),
            payload: payload.into(),
            cc,
        })
    }

    fn names(e: &Event) -> (MemberEventKind, Vec<String>) {
        match e {
            Event::Member(m) => (m.kind, m.members.iter().map(|m| m.name.clone()).collect()),
            other => panic!("not a member event: {other:?}"),
        }
    }

    const PERIOD: Duration = Duration::from_secs(3);
    const QUIET: Duration = Duration::from_secs(1);

    #[test]
    fn joins_in_a_burst_become_one_event_after_a_quiet_second() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(PERIOD, QUIET);
        for (i, n) in ["web-2", "web-1", "web-3"].iter().enumerate() {
            c.push(
                member_event(MemberEventKind::Join, n),
                t0 + Duration::from_millis(200 * i as u64),
            );
        }
        c.handle_timeout(t0 + Duration::from_millis(1300));
        assert_eq!(c.drain().count(), 0, "still inside the quiet period");
        c.handle_timeout(t0 + Duration::from_millis(1400));
        let out: Vec<_> = c.drain().collect();
        assert_eq!(out.len(), 1);
        assert_eq!(
            names(&out[0]),
            (
                MemberEventKind::Join,
                vec!["web-1".into(), "web-2".into(), "web-3".into()]
            )
        );
    }

    #[test]
    fn a_steady_stream_still_flushes_at_the_coalesce_period() {
        // Events every 0.5 s never leave a quiet second, so only the 3 s period ends the window.
        let t0 = Instant::now();
        let mut c = Coalescer::new(PERIOD, QUIET);
        for i in 0..6 {
            let at = t0 + Duration::from_millis(500 * i);
            c.push(member_event(MemberEventKind::Join, &format!("n{i}")), at);
            c.handle_timeout(at);
        }
        c.handle_timeout(t0 + Duration::from_millis(2900));
        assert_eq!(c.drain().count(), 0, "nothing before the period ends");
        assert_eq!(c.poll_timeout(), Some(t0 + PERIOD));
        c.handle_timeout(t0 + PERIOD);
        let out: Vec<_> = c.drain().collect();
        assert_eq!(out.len(), 1, "one event for the whole window");
        assert_eq!(names(&out[0]).1.len(), 6);
    }

    #[test]
    fn only_the_latest_kind_per_member_survives_and_repeats_are_dropped() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(PERIOD, QUIET);
        c.push(member_event(MemberEventKind::Join, "a"), t0);
        c.push(member_event(MemberEventKind::Failed, "a"), t0);
        c.push(member_event(MemberEventKind::Join, "b"), t0);
        c.handle_timeout(t0 + QUIET);
        let out: Vec<_> = c.drain().map(|e| names(&e)).collect();
        assert_eq!(
            out,
            vec![
                (MemberEventKind::Join, vec!["b".into()]),
                (MemberEventKind::Failed, vec!["a".into()])
            ]
        );
        // b joins again (e.g. a refuted suspicion): not sent twice; a's update always is.
        c.push(member_event(MemberEventKind::Join, "b"), t0 + PERIOD);
        c.push(member_event(MemberEventKind::Update, "a"), t0 + PERIOD);
        c.handle_timeout(t0 + PERIOD + QUIET);
        let out: Vec<_> = c.drain().map(|e| names(&e)).collect();
        assert_eq!(out, vec![(MemberEventKind::Update, vec!["a".into()])]);
        c.push(member_event(MemberEventKind::Update, "a"), t0 + PERIOD * 2);
        c.handle_timeout(t0 + PERIOD * 2 + QUIET);
        assert_eq!(c.drain().count(), 1, "a second update is news too");
    }

    #[test]
    fn user_events_keep_only_the_newest_ltime_per_name_and_uncoalesced_pass_through() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(PERIOD, QUIET);
        c.push(user("deploy", 3, "v1", true), t0);
        c.push(user("deploy", 5, "v2", true), t0);
        c.push(user("deploy", 5, "v2b", true), t0);
        c.push(user("deploy", 4, "old", true), t0);
        c.push(user("restart", 9, "now", false), t0);
        let passed: Vec<_> = c.drain().collect();
        assert_eq!(
            passed,
            vec![user("restart", 9, "now", false)],
            "CC=false is not held"
        );
        c.handle_timeout(t0 + QUIET);
        let out: Vec<_> = c.drain().collect();
        assert_eq!(
            out,
            vec![
                user("deploy", 5, "v2", true),
                user("deploy", 5, "v2b", true)
            ]
        );
    }
}
