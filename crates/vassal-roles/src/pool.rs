//! The load balancer's backend pool: which members are in rotation, whose turn is next, and
//! what the health checks said. Pure: no IO and no clock (time comes in as an argument), so the
//! rotation and health rules are tested here without sockets.
//!
//! A backend is *in rotation* when its member is alive and its last health verdict is up. The
//! rules, HAProxy's in spirit:
//! - a member tagged `role=web` that joins is checked at once and enters rotation on its first
//!   passing check (so a node whose web server is not listening yet never takes traffic);
//! - `fall` failed checks in a row take it out, `rise` passing ones bring it back; a refused
//!   connection on a real request takes it out at once (passive check);
//! - a graceful leave puts it in `draining`: no new requests, in-flight ones finish;
//! - a failure (`member-failed`) takes it out at once.
//!
//! Which backend in rotation takes the next request is the [`Balance`]: round robin, the one
//! with the fewest requests in flight, or a smooth weighted round robin (nginx's) whose
//! weights come from the load each web node reports ([`load_weight`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How the next backend is chosen (`-lb-balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Each backend in rotation in turn (by name).
    #[default]
    RoundRobin,
    /// The backend with the fewest requests in flight (ties in turn).
    LeastConn,
    /// In turn, in proportion to weights from the load each backend reports (the `load` tag
    /// a web node keeps fresh); see [`load_weight`].
    LeastLoad,
}

impl std::str::FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "roundrobin" => Ok(Balance::RoundRobin),
            "leastconn" => Ok(Balance::LeastConn),
            "leastload" => Ok(Balance::LeastLoad),
            _ => Err(format!(
                "{s:?} is not a balancing method; use roundrobin, leastconn or leastload"
            )),
        }
    }
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "roundrobin",
            Balance::LeastConn => "leastconn",
            Balance::LeastLoad => "leastload",
        })
    }
}

/// The weight of a backend that reports no load (and of an idle one): HAProxy's largest.
pub const MAX_WEIGHT: u32 = 256;

/// The weight `leastload` gives a backend reporting `load` (its mean time to serve a request,
/// in milliseconds): [`MAX_WEIGHT`] / (1 + load)², at least 1. Squared, so that the balancer
/// is decisive: a node twice as slow gets a quarter of the share, and a node a hundred times
/// slower than its peers (a stalled disk, a CPU hog beside it) gets well under 1 % of the
/// requests, yet never none: it stays in rotation while it passes its checks. No figure (a
/// backend that is not a Vassal web node) counts as idle.
pub fn load_weight(load: Option<f64>) -> u32 {
    match load {
        Some(l) if l.is_finite() && l > 0.0 => {
            let w = f64::from(MAX_WEIGHT) / ((1.0 + l) * (1.0 + l));
            // In 1..=MAX_WEIGHT by the clamp, so the cast is exact.
            w.round().clamp(1.0, f64::from(MAX_WEIGHT)) as u32
        }
        _ => MAX_WEIGHT,
    }
}

/// Health-check settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Time between active checks of one backend.
    pub check_interval: Duration,
    /// Consecutive failed checks that take an up backend out of rotation.
    pub fall: u32,
    /// Consecutive passing checks that bring a down backend back.
    pub rise: u32,
    /// How the next backend is chosen.
    pub balance: Balance,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            check_interval: Duration::from_secs(1),
            fall: 2,
            rise: 1,
            balance: Balance::RoundRobin,
        }
    }
}

/// What the cluster says about a backend's member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    Alive,
    /// Left gracefully: drained, never picked again unless it rejoins.
    Left,
    /// Declared failed by gossip.
    Failed,
}

/// What the health checks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet since it joined (or changed address).
    Unknown,
    Up,
    Down,
}

/// The one word the stats page shows for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Joined; waiting for its first passing health check.
    Checking,
    /// In rotation.
    Up,
    /// Alive in the cluster but failing health checks.
    Down,
    /// Left gracefully; requests it was serving are finishing.
    Draining,
    Left,
    Failed,
}

impl State {
    /// The word shown, as in `/stats.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Checking => "checking",
            State::Up => "up",
            State::Down => "down",
            State::Draining => "draining",
            State::Left => "left",
            State::Failed => "failed",
        }
    }
}

/// The result of one active or passive check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub at: Instant,
    pub ok: bool,
    /// e.g. `HTTP 200` or `connection refused`.
    pub detail: String,
}

#[derive(Debug, Clone)]
struct Backend {
    addr: SocketAddr,
    membership: Membership,
    health: Health,
    /// Consecutive check results equal to the last one.
    streak: u32,
    in_flight: u32,
    served: u64,
    errors: u64,
    last_check: Option<Check>,
    next_check: Instant,
    /// A check was handed out and has not reported yet.
    checking: bool,
    /// `leastload`'s weight, from the member's reported load.
    weight: u32,
    /// The load the member reports, if any (milliseconds per request).
    load: Option<f64>,
    /// Smooth weighted round robin's running score.
    current: i64,
}

impl Backend {
    fn in_rotation(&self) -> bool {
        self.membership == Membership::Alive && self.health == Health::Up
    }

    fn state(&self) -> State {
        match (self.membership, self.health) {
            (Membership::Alive, Health::Unknown) => State::Checking,
            (Membership::Alive, Health::Up) => State::Up,
            (Membership::Alive, Health::Down) => State::Down,
            (Membership::Left, _) if self.in_flight > 0 => State::Draining,
            (Membership::Left, _) => State::Left,
            (Membership::Failed, _) => State::Failed,
        }
    }
}

/// A backend chosen for one request. Hand it back to [`Pool::finished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// Shared with the pool's own copy: a pick per request allocates nothing.
    pub name: Arc<str>,
    pub addr: SocketAddr,
}

/// How a proxied request ended, from the pool's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered (any status).
    Answered,
    /// No connection could be made: the backend is taken out of rotation at once.
    ConnectFailed,
    /// The connection broke before an answer.
    Broken,
}

/// One row of the stats page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendStats {
    pub name: String,
    pub addr: String,
    pub state: State,
    pub membership: Membership,
    pub health: Health,
    pub in_rotation: bool,
    pub in_flight: u32,
    pub served: u64,
    pub errors: u64,
    /// Milliseconds since the last check, if any.
    pub last_check_ms_ago: Option<u64>,
    pub last_check_ok: Option<bool>,
    pub last_check: Option<String>,
    /// The load the member reports (ms per request), if any.
    pub load: Option<f64>,
    /// Its `leastload` weight.
    pub weight: u32,
}

/// The backends, by member name.
#[derive(Debug, Clone)]
pub struct Pool {
    config: PoolConfig,
    backends: BTreeMap<Arc<str>, Backend>,
    /// The last backend picked; the next pick is the first in-rotation name after it.
    last: Option<Arc<str>>,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        Pool {
            config,
            backends: BTreeMap::new(),
            last: None,
        }
    }

    /// A member tagged for the web role is alive at `addr` (a join, or an update). A new
    /// backend, a rejoin or a changed address is checked at once and waits for that check.
    pub fn member_alive(&mut self, name: &str, addr: SocketAddr, now: Instant) {
        match self.backends.get_mut(name) {
            Some(b) if b.addr == addr && b.membership == Membership::Alive => {}
            Some(b) => {
                b.addr = addr;
                b.membership = Membership::Alive;
                b.health = Health::Unknown;
                b.streak = 0;
                b.next_check = now;
                b.checking = false;
            }
            None => {
                self.backends.insert(
                    Arc::from(name),
                    Backend {
                        addr,
                        membership: Membership::Alive,
                        health: Health::Unknown,
                        streak: 0,
                        in_flight: 0,
                        served: 0,
                        errors: 0,
                        last_check: None,
                        next_check: now,
                        checking: false,
                        weight: MAX_WEIGHT,
                        load: None,
                        current: 0,
                    },
                );
            }
        }
    }

    /// The load `name` reports (its `load` tag), which sets its `leastload` weight.
    pub fn set_load(&mut self, name: &str, load: Option<f64>) {
        if let Some(b) = self.backends.get_mut(name) {
            b.load = load;
            b.weight = load_weight(load);
        }
    }

    /// The member left gracefully (`member-leave`): it drains.
    pub fn member_left(&mut self, name: &str) {
        if let Some(b) = self.backends.get_mut(name) {
            b.membership = Membership::Left;
        }
    }

    /// The member failed (`member-failed`): out of rotation at once.
    pub fn member_failed(&mut self, name: &str) {
        if let Some(b) = self.backends.get_mut(name) {
            b.membership = Membership::Failed;
        }
    }

    /// The member is gone for good (reaped) or no longer has the web role.
    pub fn remove(&mut self, name: &str) {
        self.backends.remove(name);
    }

    /// Names of every backend known, in any state.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(|k| &**k)
    }

    /// Names in rotation, in pick order.
    pub fn in_rotation(&self) -> Vec<&str> {
        self.backends
            .iter()
            .filter(|(_, b)| b.in_rotation())
            .map(|(n, _)| &**n)
            .collect()
    }

    /// The checks due at `now`: each returned backend is marked as being checked and its next
    /// check is scheduled; report each with [`check_result`](Self::check_result).
    pub fn due_checks(&mut self, now: Instant) -> Vec<Pick> {
        let interval = self.config.check_interval;
        let mut due = Vec::new();
        for (name, b) in &mut self.backends {
            if b.membership == Membership::Alive && !b.checking && b.next_check <= now {
                b.checking = true;
                b.next_check = now.checked_add(interval).unwrap_or(now);
                due.push(Pick {
                    name: name.clone(),
                    addr: b.addr,
                });
            }
        }
        due
    }

    /// When the next check falls due, if any backend is to be checked.
    pub fn next_check_at(&self) -> Option<Instant> {
        self.backends
            .values()
            .filter(|b| b.membership == Membership::Alive && !b.checking)
            .map(|b| b.next_check)
            .min()
    }

    /// The result of an active check of `pick`. Ignored if the backend has since changed
    /// address (the check was of the old one).
    pub fn check_result(&mut self, pick: &Pick, ok: bool, detail: String, now: Instant) {
        let (fall, rise) = (self.config.fall, self.config.rise);
        let Some(b) = self.backends.get_mut(&pick.name) else {
            return;
        };
        if b.addr != pick.addr {
            return;
        }
        b.checking = false;
        let same = b.last_check.as_ref().is_some_and(|c| c.ok == ok);
        b.streak = if same { b.streak + 1 } else { 1 };
        b.last_check = Some(Check {
            at: now,
            ok,
            detail,
        });
        b.health = match (b.health, ok) {
            // The first verdict after a join is taken as it is.
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Up, false) if b.streak >= fall => Health::Down,
            (Health::Down, true) if b.streak >= rise => Health::Up,
            (h, _) => h,
        };
    }

    /// Picks the next backend in rotation by the [`Balance`], skipping `exclude` (the
    /// backends this request already tried), and counts the request as in flight on it.
    pub fn pick(&mut self, exclude: &[Arc<str>]) -> Option<Pick> {
        let name = match self.config.balance {
            Balance::RoundRobin => self.next_in_turn(exclude, |_| true)?,
            Balance::LeastConn => {
                let fewest = self
                    .backends
                    .iter()
                    .filter(|(n, b)| b.in_rotation() && !exclude.contains(n))
                    .map(|(_, b)| b.in_flight)
                    .min()?;
                self.next_in_turn(exclude, |b| b.in_flight == fewest)?
            }
            Balance::LeastLoad => self.smooth_weighted(exclude)?,
        };
        let b = self.backends.get_mut(&name)?;
        b.in_flight = b.in_flight.saturating_add(1);
        self.last = Some(name.clone());
        Some(Pick { name, addr: b.addr })
    }

    /// The first backend in rotation (and not excluded) that `also` accepts, after the last
    /// one picked.
    fn next_in_turn(
        &self,
        exclude: &[Arc<str>],
        also: impl Fn(&Backend) -> bool,
    ) -> Option<Arc<str>> {
        let usable =
            |(n, b): &(&Arc<str>, &Backend)| b.in_rotation() && !exclude.contains(n) && also(b);
        let after = self.last.as_deref().and_then(|last| {
            self.backends
                .range::<str, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
                .find(usable)
        });
        after
            .or_else(|| self.backends.iter().find(usable))
            .map(|(n, _)| n.clone())
    }

    /// nginx's smooth weighted round robin: every candidate's score grows by its weight, the
    /// highest score wins and drops by the sum of the weights. Over any run of picks each
    /// backend's share is its weight's, spread out rather than in bursts.
    fn smooth_weighted(&mut self, exclude: &[Arc<str>]) -> Option<Arc<str>> {
        let mut total: i64 = 0;
        let mut best: Option<(&Arc<str>, i64)> = None;
        for (n, b) in &mut self.backends {
            if !b.in_rotation() || exclude.contains(n) {
                continue;
            }
            let w = i64::from(b.weight.max(1));
            b.current = b.current.saturating_add(w);
            total = total.saturating_add(w);
            if best.is_none_or(|(_, c)| b.current > c) {
                best = Some((n, b.current));
            }
        }
        let name = best?.0.clone();
        if let Some(b) = self.backends.get_mut(&name) {
            b.current = b.current.saturating_sub(total);
        }
        Some(name)
    }

    /// A request picked with [`pick`](Self::pick) has ended.
    pub fn finished(&mut self, pick: &Pick, outcome: Outcome, now: Instant) {
        let Some(b) = self.backends.get_mut(&pick.name) else {
            return;
        };
        b.in_flight = b.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Answered => b.served += 1,
            Outcome::Broken => b.errors += 1,
            Outcome::ConnectFailed => {
                b.errors += 1;
                if b.addr == pick.addr && b.health != Health::Down {
                    b.health = Health::Down;
                    b.streak = 1;
                    b.last_check = Some(Check {
                        at: now,
                        ok: false,
                        detail: "connection failed on a request".into(),
                    });
                }
            }
        }
    }

    /// The stats page's rows, by name.
    pub fn stats(&self, now: Instant) -> Vec<BackendStats> {
        self.backends
            .iter()
            .map(|(name, b)| BackendStats {
                name: name.to_string(),
                addr: b.addr.to_string(),
                state: b.state(),
                membership: b.membership,
                health: b.health,
                in_rotation: b.in_rotation(),
                in_flight: b.in_flight,
                served: b.served,
                errors: b.errors,
                last_check_ms_ago: b.last_check.as_ref().map(|c| {
                    u64::try_from(now.saturating_duration_since(c.at).as_millis())
                        .unwrap_or(u64::MAX)
                }),
                last_check_ok: b.last_check.as_ref().map(|c| c.ok),
                last_check: b.last_check.as_ref().map(|c| c.detail.clone()),
                load: b.load,
                weight: b.weight,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 8000))
    }

    /// A pool with `names` joined and passing their first check.
    fn pool_up(names: &[&str], now: Instant) -> Pool {
        let mut p = Pool::new(PoolConfig::default());
        for (i, n) in names.iter().enumerate() {
            p.member_alive(n, addr(i as u8 + 2), now);
        }
        for c in p.due_checks(now) {
            p.check_result(&c, true, "HTTP 200".into(), now);
        }
        p
    }

    fn serve(p: &mut Pool, n: usize, now: Instant) -> Vec<String> {
        (0..n)
            .map(|_| {
                let pick = p.pick(&[]).expect("a backend in rotation");
                p.finished(&pick, Outcome::Answered, now);
                pick.name.to_string()
            })
            .collect()
    }

    #[test]
    fn round_robin_spreads_requests_evenly() {
        let now = Instant::now();
        let mut p = pool_up(&["web-1", "web-2", "web-3"], now);
        let got = serve(&mut p, 30, now);
        for n in ["web-1", "web-2", "web-3"] {
            assert_eq!(got.iter().filter(|g| *g == n).count(), 10, "{got:?}");
        }
        assert_eq!(&got[..3], ["web-1", "web-2", "web-3"]);
        assert!(p.stats(now).iter().all(|s| s.served == 10));
    }

    #[test]
    fn a_joined_member_waits_for_its_first_passing_check() {
        let now = Instant::now();
        let mut p = Pool::new(PoolConfig::default());
        p.member_alive("web-1", addr(2), now);
        assert_eq!(p.pick(&[]), None, "not checked yet");
        assert_eq!(p.stats(now)[0].state, State::Checking);
        let due = p.due_checks(now);
        assert_eq!(due.len(), 1, "checked at once on join");
        assert!(p.due_checks(now).is_empty(), "one check at a time");
        p.check_result(&due[0], false, "connection refused".into(), now);
        assert_eq!(p.stats(now)[0].state, State::Down);
        let later = now + Duration::from_secs(1);
        assert_eq!(p.next_check_at(), Some(later));
        let due = p.due_checks(later);
        p.check_result(&due[0], true, "HTTP 200".into(), later);
        assert_eq!(p.in_rotation(), ["web-1"]);
    }

    #[test]
    fn failing_checks_take_a_backend_out_after_fall_and_back_after_rise() {
        let t0 = Instant::now();
        let mut p = pool_up(&["web-1"], t0);
        let step = Duration::from_secs(1);
        let check = |p: &mut Pool, i: u32, ok: bool| {
            let now = t0 + step * i;
            let due = p.due_checks(now);
            assert_eq!(due.len(), 1, "check {i} due");
            p.check_result(&due[0], ok, String::new(), now);
        };
        check(&mut p, 1, false);
        assert_eq!(p.in_rotation(), ["web-1"], "one failure is below fall = 2");
        check(&mut p, 2, true);
        check(&mut p, 3, false);
        assert_eq!(p.in_rotation(), ["web-1"], "the streak restarted");
        check(&mut p, 4, false);
        assert!(p.in_rotation().is_empty(), "two failures in a row");
        check(&mut p, 5, true);
        assert_eq!(p.in_rotation(), ["web-1"], "rise = 1");
    }

    #[test]
    fn a_refused_connection_takes_a_backend_out_at_once_and_the_retry_goes_elsewhere() {
        let now = Instant::now();
        let mut p = pool_up(&["web-1", "web-2", "web-3"], now);
        let first = p.pick(&[]).unwrap();
        assert_eq!(&*first.name, "web-1");
        p.finished(&first, Outcome::ConnectFailed, now);
        let retry = p.pick(std::slice::from_ref(&first.name)).unwrap();
        assert_eq!(&*retry.name, "web-2");
        p.finished(&retry, Outcome::Answered, now);
        assert_eq!(p.in_rotation(), ["web-2", "web-3"]);
        assert_eq!(serve(&mut p, 4, now), ["web-3", "web-2", "web-3", "web-2"]);
    }

    #[test]
    fn exclusions_can_leave_nothing_to_pick() {
        let now = Instant::now();
        let mut p = pool_up(&["web-1"], now);
        assert_eq!(p.pick(&["web-1".into()]), None);
    }

    #[test]
    fn a_graceful_leave_drains_in_flight_requests_and_takes_no_new_ones() {
        let now = Instant::now();
        let mut p = pool_up(&["web-1", "web-2"], now);
        let busy = p.pick(&[]).unwrap();
        assert_eq!(&*busy.name, "web-1");
        p.member_left("web-1");
        assert_eq!(p.stats(now)[0].state, State::Draining);
        assert_eq!(serve(&mut p, 3, now), ["web-2", "web-2", "web-2"]);
        p.finished(&busy, Outcome::Answered, now);
        let s = &p.stats(now)[0];
        assert_eq!((s.state, s.served), (State::Left, 1));
        assert!(
            p.due_checks(now + Duration::from_secs(5))
                .iter()
                .all(|c| &*c.name != "web-1"),
            "left backends are not checked"
        );
    }

    #[test]
    fn a_failed_member_is_out_at_once_and_a_rejoin_is_checked_again() {
        let now = Instant::now();
        let mut p = pool_up(&["web-1", "web-2"], now);
        p.member_failed("web-2");
        assert_eq!(p.in_rotation(), ["web-1"]);
        assert_eq!(p.stats(now)[1].state, State::Failed);
        p.member_alive("web-2", addr(9), now);
        assert_eq!(p.in_rotation(), ["web-1"], "a rejoin waits for its check");
        let due = p.due_checks(now);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].addr, addr(9));
        p.check_result(&due[0], true, "HTTP 200".into(), now);
        assert_eq!(p.in_rotation(), ["web-1", "web-2"]);
    }

    #[test]
    fn a_check_of_an_old_address_is_ignored() {
        let now = Instant::now();
        let mut p = pool_up(&["web-1"], now);
        let later = now + Duration::from_secs(1);
        let stale = p.due_checks(later).pop().unwrap();
        p.member_alive("web-1", addr(7), later);
        p.check_result(&stale, true, "HTTP 200".into(), later);
        assert_eq!(p.stats(later)[0].state, State::Checking);
    }

    #[test]
    fn rotation_order_does_not_depend_on_join_order() {
        let now = Instant::now();
        let a = pool_up(&["web-3", "web-1", "web-2"], now);
        let b = pool_up(&["web-2", "web-3", "web-1"], now);
        assert_eq!(a.in_rotation(), b.in_rotation());
        let (mut a, mut b) = (a, b);
        assert_eq!(serve(&mut a, 6, now), serve(&mut b, 6, now));
    }

    #[test]
    fn round_robin_continues_after_a_backend_leaves_the_middle() {
        let now = Instant::now();
        let mut p = pool_up(&["web-1", "web-2", "web-3"], now);
        assert_eq!(serve(&mut p, 2, now), ["web-1", "web-2"]);
        p.member_failed("web-2");
        assert_eq!(serve(&mut p, 3, now), ["web-3", "web-1", "web-3"]);
    }

    fn pool_balanced(balance: Balance, names: &[&str], now: Instant) -> Pool {
        let mut p = Pool::new(PoolConfig {
            balance,
            ..PoolConfig::default()
        });
        for (i, n) in names.iter().enumerate() {
            p.member_alive(n, addr(i as u8 + 2), now);
        }
        for c in p.due_checks(now) {
            p.check_result(&c, true, "HTTP 200".into(), now);
        }
        p
    }

    #[test]
    fn leastconn_picks_the_backend_with_the_fewest_in_flight() {
        let now = Instant::now();
        let mut p = pool_balanced(Balance::LeastConn, &["web-1", "web-2", "web-3"], now);
        let a = p.pick(&[]).unwrap();
        let b = p.pick(&[]).unwrap();
        assert_eq!((&*a.name, &*b.name), ("web-1", "web-2"));
        p.finished(&a, Outcome::Answered, now);
        // web-2 is busy: web-3 and web-1 (both idle) in turn, never web-2.
        let got: Vec<String> = (0..2)
            .map(|_| {
                let k = p.pick(&[]).unwrap();
                p.finished(&k, Outcome::Answered, now);
                k.name.to_string()
            })
            .collect();
        assert_eq!(got, ["web-3", "web-1"]);
    }

    #[test]
    fn load_weights_fall_with_the_square_of_the_load_and_never_reach_zero() {
        assert_eq!(load_weight(None), MAX_WEIGHT);
        assert_eq!(load_weight(Some(0.0)), MAX_WEIGHT);
        assert_eq!(load_weight(Some(1.0)), 64);
        assert_eq!(load_weight(Some(3.0)), 16);
        assert_eq!(load_weight(Some(1e9)), 1, "overloaded: less, never none");
        for junk in [f64::NAN, f64::INFINITY, -5.0] {
            assert_eq!(load_weight(Some(junk)), MAX_WEIGHT, "{junk}");
        }
    }

    // Issue 15: a node reporting itself loaded receives less, never none.
    #[test]
    fn leastload_shares_requests_by_weight_and_the_loaded_one_still_gets_some() {
        let now = Instant::now();
        let mut p = pool_balanced(Balance::LeastLoad, &["web-1", "web-2", "web-3"], now);
        p.set_load("web-1", Some(0.0));
        p.set_load("web-2", Some(1.0));
        p.set_load("web-3", Some(1000.0));
        let got = serve(&mut p, (256 + 64 + 1) * 4, now);
        let count = |n: &str| got.iter().filter(|g| *g == n).count();
        assert_eq!(
            (count("web-1"), count("web-2"), count("web-3")),
            (256 * 4, 64 * 4, 4),
            "shares follow the weights"
        );
        // Smooth: web-2's requests are spread out, not in one burst.
        let first_web2 = got.iter().position(|g| g == "web-2").unwrap();
        assert!(first_web2 < 8, "{first_web2}");
        // Out of rotation means none, whatever the load.
        p.member_failed("web-3");
        assert!(serve(&mut p, 100, now).iter().all(|g| g != "web-3"));
    }
}
