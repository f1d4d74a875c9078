//! The sync's decisions, as a pure state machine: membership in, runtime-API commands out.
//!
//! It keeps what each web member should be in HAProxy (serving at an address, leaving
//! gracefully, or failed) and works in *rounds*: read the backend's servers (`show servers
//! state`), compare, and send the commands that close the gap. A graceful leave puts its server
//! in `drain`, a failure puts it in `maint`: either way no new request goes there, and the
//! requests in flight may finish. Later rounds read its sessions (`show stat`) until they reach
//! zero and then delete it; sessions still open after `drain_timeout` (leave) or `fail_grace`
//! (failure) are shut down first. Because every round starts from what HAProxy says, a failed
//! command, an HAProxy restart or servers left over from an earlier agent are all put right by
//! the next round; a failed round is retried with backoff.
//!
//! A failure is not cut at once because Serf may report a graceful leave as `member-failed`
//! followed by `member-leave` (when the leave intent reaches this node after the leaving node's
//! memberlist leave; Go Serf calls the second one "EventMemberLeave (forced)"). The later
//! leave turns the failure back into a drain.
//!
//! Membership changes start a round only after `quiesce` without further changes (but at the
//! latest `max_delay` after the first), so a burst of joins becomes one batch of commands.
//!
//! Inputs are `handle_*` with `now`; outputs are [`Output`]s from [`BackendSync::poll_output`],
//! each of which (but [`Output::Warn`]) the shell answers with the matching `handle_*` call.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::backend::{is_web, reported_load, web_backend, BackendPolicy, RefusedOnce};
use crate::pool::load_weight;
use vassal_serf::{Member, MemberEvent, MemberEventKind, MemberStatus};

use super::command::{valid_server_name, Command, Op};
use super::state::ServerState;

/// Settings for the sync. [`SyncConfig::new`] gives the defaults the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// The HAProxy backend whose servers the sync owns. It must use a load-balancing algorithm
    /// that allows dynamic servers (`roundrobin`, `leastconn`, `first`, `random`). Servers
    /// in it that are not web members are drained and removed.
    pub backend: String,
    /// A round starts once membership has been quiet this long…
    pub quiesce: Duration,
    /// …or at the latest this long after the first unsynced change.
    pub max_delay: Duration,
    /// How often a draining server's sessions are read.
    pub drain_poll: Duration,
    /// How long a graceful leave may drain before its remaining sessions are cut.
    pub drain_timeout: Duration,
    /// How long a failed member's sessions may still finish (in `maint`, so without new
    /// requests) before they are cut. A failed node's sessions mostly end on their own; this
    /// keeps a leave first reported as a failure from losing its requests in flight.
    pub fail_grace: Duration,
    /// First retry delay after a failed round; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// A round at least this often even without changes, to repair what others did to the
    /// backend (a reload forgets dynamic servers).
    pub resync: Duration,
    /// Which member addresses may become servers (the built-in balancer's rule). The agent
    /// allows loopback only when it advertises a loopback address itself (a one-host cluster)
    /// or `-lb-backend-cidr` names a loopback range.
    pub backends: BackendPolicy,
    /// Set each server's weight from its member's `load` tag, as `-lb-balance leastload`
    /// weighs the built-in balancer's backends ([`load_weight`]); off by default.
    pub weights: bool,
}

impl SyncConfig {
    /// The defaults: 200 ms quiescence. Which members are servers, at what port, is
    /// [`crate::backend`]'s rule (tag `role=web`, port from `http_port`, else 80).
    pub fn new(backend: &str) -> Self {
        SyncConfig {
            backend: backend.to_owned(),
            quiesce: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            drain_poll: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(30),
            fail_grace: Duration::from_secs(2),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            resync: Duration::from_secs(10),
            backends: BackendPolicy::default(),
            weights: false,
        }
    }
}

/// What the shell should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `show servers state BACKEND`; answer with [`BackendSync::handle_servers`].
    ReadServers,
    /// Send `show stat BACKEND 4 -1`; answer with [`BackendSync::handle_sessions`].
    ReadSessions,
    /// Send these commands in order, stopping at the first refusal; answer with
    /// [`BackendSync::handle_ran`].
    Run(Vec<Command>),
    /// Something the operator should hear about; needs no answer.
    Warn(String),
}

/// Why a [`Output::Run`] stopped: the refused command and HAProxy's words (or the IO error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    pub command: Command,
    pub message: String,
}

/// A server's weight until its member reports a load: HAProxy's largest, as the built-in
/// balancer gives a backend without a figure.
const MAX_WEIGHT_DEFAULT: u32 = crate::pool::MAX_WEIGHT;

/// What a server should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// In the backend at this address, taking traffic.
    Serve(SocketAddr),
    /// Out of the backend once its sessions have finished (a graceful leave).
    Drain,
    /// Out of the backend now: in maintenance at once, deleted once its sessions end or
    /// `fail_grace` has passed (a failure).
    Remove,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    want: Want,
    /// The weight it should have (with [`SyncConfig::weights`]).
    weight: u32,
    /// When we first saw it leaving (draining or in maintenance) in HAProxy.
    leaving_since: Option<Instant>,
}

/// The sync's state machine. See the module docs.
#[derive(Debug)]
pub struct BackendSync {
    config: SyncConfig,
    entries: BTreeMap<String, Entry>,
    /// Unsynced membership changes: (first, last) change times.
    changed: Option<(Instant, Instant)>,
    /// Answers the current round still waits for; no new round starts before they are in.
    outstanding: usize,
    round_failed: bool,
    /// Servers found leaving this round, whose sessions we asked for, and whether they are
    /// in maintenance already.
    awaiting_sessions: BTreeMap<String, bool>,
    retry_at: Option<Instant>,
    backoff: Duration,
    resync_at: Instant,
    drain_check_at: Option<Instant>,
    outputs: VecDeque<Output>,
    /// Refused members already warned about.
    refused: RefusedOnce,
}

impl BackendSync {
    /// A sync whose first round (the start-up reconcile) is due at once.
    pub fn new(config: SyncConfig, now: Instant) -> Self {
        BackendSync {
            backoff: config.retry_min,
            config,
            entries: BTreeMap::new(),
            changed: None,
            outstanding: 0,
            round_failed: false,
            awaiting_sessions: BTreeMap::new(),
            retry_at: None,
            resync_at: now,
            drain_check_at: None,
            outputs: VecDeque::new(),
            refused: RefusedOnce::default(),
        }
    }

    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// A member event from the node, as it happened (not coalesced).
    pub fn handle_member_event(&mut self, event: &MemberEvent, now: Instant) {
        for m in &event.members {
            match event.kind {
                MemberEventKind::Join | MemberEventKind::Update => self.observe_alive(m, now),
                MemberEventKind::Leave => self.observe_gone(m, Want::Drain, now),
                MemberEventKind::Failed => self.observe_gone(m, Want::Remove, now),
                MemberEventKind::Reap => {
                    if self.entries.contains_key(&m.name) {
                        self.observe_gone(m, Want::Remove, now);
                    }
                }
            }
        }
    }

    /// The whole member list (at start, or after missing events): servers of members no longer
    /// listed are removed.
    pub fn handle_members(&mut self, members: &[Member], now: Instant) {
        for m in members {
            match m.status {
                MemberStatus::Alive => self.observe_alive(m, now),
                MemberStatus::Leaving | MemberStatus::Left => {
                    self.observe_gone(m, Want::Drain, now)
                }
                MemberStatus::Failed => self.observe_gone(m, Want::Remove, now),
                MemberStatus::None => {}
            }
        }
        let listed: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let reaped: Vec<String> = self
            .entries
            .iter()
            .filter(|(name, e)| matches!(e.want, Want::Serve(_)) && !listed.contains(name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in reaped {
            self.set_want(&name, Want::Remove, now);
        }
    }

    fn observe_alive(&mut self, m: &Member, now: Instant) {
        let addr = match web_backend(m, &self.config.backends) {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                // A web member that changed its role leaves the pool gracefully.
                if matches!(self.want(&m.name), Some(Want::Serve(_))) {
                    self.set_want(&m.name, Want::Drain, now);
                }
                return;
            }
            Err(why) => {
                if self.refused.first(&why) {
                    self.outputs
                        .push_back(Output::Warn(format!("{why}; not adding it")));
                }
                // One that served from an allowed address before is taken out.
                if matches!(self.want(&m.name), Some(Want::Serve(_))) {
                    self.set_want(&m.name, Want::Drain, now);
                }
                return;
            }
        };
        if !valid_server_name(&m.name) {
            self.outputs.push_back(Output::Warn(format!(
                "member {:?} cannot be an HAProxy server: HAProxy allows only letters, digits, \
                 '.', '_', '-' and ':' in server names (rename the node); not adding it",
                m.name
            )));
            return;
        }
        self.set_want(&m.name, Want::Serve(addr), now);
        if self.config.weights {
            let weight = load_weight(reported_load(m));
            if let Some(e) = self.entries.get_mut(&m.name) {
                if e.weight != weight {
                    e.weight = weight;
                    self.changed = Some(match self.changed {
                        None => (now, now),
                        Some((first, _)) => (first, now),
                    });
                }
            }
        }
    }

    fn observe_gone(&mut self, m: &Member, want: Want, now: Instant) {
        if !(is_web(m) || self.entries.contains_key(&m.name)) {
            return;
        }
        // The latest word wins: a leave after a failure is Serf's forced leave event, saying
        // that the node left gracefully after all.
        self.set_want(&m.name, want, now);
    }

    fn want(&self, name: &str) -> Option<Want> {
        self.entries.get(name).map(|e| e.want)
    }

    fn set_want(&mut self, name: &str, want: Want, now: Instant) {
        match self.entries.get_mut(name) {
            Some(e) if e.want == want => return,
            Some(e) => {
                e.want = want;
                e.leaving_since = None;
            }
            None => {
                self.entries.insert(
                    name.to_owned(),
                    Entry {
                        want,
                        weight: MAX_WEIGHT_DEFAULT,
                        leaving_since: None,
                    },
                );
            }
        }
        self.changed = Some(match self.changed {
            None => (now, now),
            Some((first, _)) => (first, now),
        });
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called; `None` while a
    /// round waits for the shell's answers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outstanding > 0 {
            return None;
        }
        let batch = self
            .changed
            .map(|(first, last)| (last + self.config.quiesce).min(first + self.config.max_delay));
        [
            batch,
            self.retry_at,
            self.drain_check_at,
            Some(self.resync_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Starts a round if one is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outstanding > 0 {
            return;
        }
        if self.poll_timeout().is_some_and(|due| due <= now) {
            self.changed = None;
            self.retry_at = None;
            self.drain_check_at = None;
            self.round_failed = false;
            self.awaiting_sessions.clear();
            self.outstanding = 1;
            self.outputs.push_back(Output::ReadServers);
        }
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The answer to [`Output::ReadServers`]: the backend's servers, or why they could not be
    /// read (the round fails and is retried).
    pub fn handle_servers(&mut self, now: Instant, servers: Result<Vec<ServerState>, String>) {
        let servers = match servers {
            Ok(s) => s,
            Err(_) => return self.answered(now, false),
        };
        let actual: BTreeMap<&str, &ServerState> =
            servers.iter().map(|s| (s.name.as_str(), s)).collect();
        // Servers nobody asked for (left by an earlier agent, or by hand) leave gracefully.
        for s in &servers {
            if !self.entries.contains_key(&s.name) {
                self.entries.insert(
                    s.name.clone(),
                    Entry {
                        want: Want::Drain,
                        weight: MAX_WEIGHT_DEFAULT,
                        leaving_since: None,
                    },
                );
            }
        }
        let backend = self.config.backend.clone();
        let weights = self.config.weights;
        let cmd = |name: &str, op| Command::new(&backend, name, op);
        let mut runs = Vec::new();
        let mut forget = Vec::new();
        for (name, entry) in &mut self.entries {
            let have = actual.get(name.as_str()).copied();
            let run = match (entry.want, have) {
                (Want::Serve(addr), None) if weights => vec![
                    cmd(name, Op::Add(addr)),
                    cmd(name, Op::Weight(entry.weight)),
                    cmd(name, Op::EnableHealth),
                    cmd(name, Op::Enable),
                ],
                (Want::Serve(addr), None) => vec![
                    cmd(name, Op::Add(addr)),
                    cmd(name, Op::EnableHealth),
                    cmd(name, Op::Enable),
                ],
                (Want::Serve(addr), Some(s)) if s.addr != Some(addr) => vec![
                    // Moved (a new address or port): replace it.
                    cmd(name, Op::Maint),
                    cmd(name, Op::ShutdownSessions),
                    cmd(name, Op::Del),
                    cmd(name, Op::Add(addr)),
                    cmd(name, Op::EnableHealth),
                    cmd(name, Op::Enable),
                ],
                (Want::Serve(_), Some(s)) if s.in_maint() => {
                    vec![cmd(name, Op::EnableHealth), cmd(name, Op::Enable)]
                }
                (Want::Serve(_), Some(s)) if s.draining() => vec![cmd(name, Op::Ready)],
                (Want::Serve(_), Some(s)) if weights && s.weight != Some(entry.weight) => {
                    vec![cmd(name, Op::Weight(entry.weight))]
                }
                (Want::Serve(_), Some(_)) => vec![],
                (Want::Drain | Want::Remove, None) => {
                    forget.push(name.clone());
                    vec![]
                }
                // Taking no new requests already: wait for the ones in flight.
                (Want::Drain, Some(s)) if s.in_maint() || s.draining() => {
                    entry.leaving_since.get_or_insert(now);
                    self.awaiting_sessions.insert(name.clone(), s.in_maint());
                    vec![]
                }
                (Want::Remove, Some(s)) if s.in_maint() => {
                    entry.leaving_since.get_or_insert(now);
                    self.awaiting_sessions.insert(name.clone(), true);
                    vec![]
                }
                (Want::Drain, Some(_)) => {
                    entry.leaving_since = Some(now);
                    vec![cmd(name, Op::Drain)]
                }
                (Want::Remove, Some(_)) => {
                    entry.leaving_since = Some(now);
                    vec![cmd(name, Op::Maint)]
                }
            };
            if !run.is_empty() {
                runs.push(run);
            }
        }
        for name in forget {
            self.entries.remove(&name);
        }
        if !self.awaiting_sessions.is_empty() {
            self.outstanding += 1;
            self.outputs.push_back(Output::ReadSessions);
        }
        self.outstanding += runs.len();
        self.outputs.extend(runs.into_iter().map(Output::Run));
        self.answered(now, true);
    }

    /// The answer to [`Output::ReadSessions`]: sessions per server.
    pub fn handle_sessions(
        &mut self,
        now: Instant,
        sessions: Result<BTreeMap<String, u64>, String>,
    ) {
        let sessions = match sessions {
            Ok(s) => s,
            Err(_) => return self.answered(now, false),
        };
        let backend = self.config.backend.clone();
        let cmd = |name: &str, op| Command::new(&backend, name, op);
        for (name, in_maint) in std::mem::take(&mut self.awaiting_sessions) {
            let Some(entry) = self.entries.get(&name) else {
                continue;
            };
            let limit = match entry.want {
                Want::Drain => self.config.drain_timeout,
                Want::Remove => self.config.fail_grace,
                Want::Serve(_) => continue, // back meanwhile
            };
            let Some(&n) = sessions.get(&name) else {
                continue; // gone meanwhile; the next round forgets it
            };
            let since = entry.leaving_since.unwrap_or(now);
            let mut run = Vec::new();
            if !in_maint {
                run.push(cmd(&name, Op::Maint));
            }
            if n == 0 {
                run.push(cmd(&name, Op::Del));
            } else if now.saturating_duration_since(since) >= limit {
                if entry.want == Want::Drain {
                    self.outputs.push_back(Output::Warn(format!(
                        "server {backend}/{name} still has {n} sessions after draining for \
                         {limit:?}; cutting them"
                    )));
                }
                run.push(cmd(&name, Op::ShutdownSessions));
                run.push(cmd(&name, Op::Del));
            } else {
                continue;
            }
            self.outstanding += 1;
            self.outputs.push_back(Output::Run(run));
        }
        self.answered(now, true);
    }

    /// The answer to [`Output::Run`].
    pub fn handle_ran(&mut self, now: Instant, result: Result<(), RunError>) {
        self.answered(now, result.is_ok());
    }

    fn answered(&mut self, now: Instant, ok: bool) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.round_failed |= !ok;
        if self.outstanding > 0 {
            return;
        }
        // The round is over.
        if self.round_failed {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(self.config.retry_max);
        } else {
            self.backoff = self.config.retry_min;
        }
        self.resync_at = now + self.config.resync;
        // Anything still leaving is looked at again soon: drains finish, removals are retried.
        if self
            .entries
            .values()
            .any(|e| matches!(e.want, Want::Drain | Want::Remove))
        {
            self.drain_check_at = Some(now + self.config.drain_poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::state::{ADMIN_FDRAIN, ADMIN_FMAINT};
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use MemberEventKind::{Failed, Join, Leave, Update};

    fn member(name: &str, ip: &str, role: &str, port: Option<&str>) -> Member {
        let mut tags = BTreeMap::new();
        tags.insert("role".to_owned(), role.to_owned());
        if let Some(p) = port {
            tags.insert("http_port".to_owned(), p.to_owned());
        }
        Member {
            name: name.to_owned(),
            addr: ip.parse::<IpAddr>().unwrap(),
            port: 7946,
            tags,
            status: MemberStatus::Alive,
            vsn: Default::default(),
        }
    }

    fn web(name: &str, ip: &str) -> Member {
        member(name, ip, "web", None)
    }

    /// Tells `s` of a membership change at `at`.
    fn on(s: &mut BackendSync, at: Instant, kind: MemberEventKind, members: &[Member]) {
        let members = members.to_vec();
        s.handle_member_event(&MemberEvent { kind, members }, at);
    }

    fn server(name: &str, addr: &str, admin: u32) -> ServerState {
        ServerState {
            name: name.to_owned(),
            addr: Some(addr.parse().unwrap()),
            admin,
            weight: Some(1),
        }
    }

    /// A sync whose start-up round found an empty backend, at `t0`; loopback backends
    /// allowed, as for an agent advertising a loopback address.
    fn started() -> (BackendSync, Instant) {
        let mut config = SyncConfig::new("web");
        config.backends.allow_loopback = true;
        started_with(config)
    }

    fn started_with(config: SyncConfig) -> (BackendSync, Instant) {
        let t0 = Instant::now();
        let mut s = BackendSync::new(config, t0);
        s.handle_timeout(t0);
        assert_eq!(s.poll_output(), Some(Output::ReadServers));
        s.handle_servers(t0, Ok(vec![]));
        assert_eq!(s.poll_output(), None);
        (s, t0)
    }

    fn outputs(s: &mut BackendSync) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    /// The command lines of a Run, `add server`'s pool settings left out (command.rs checks
    /// those).
    fn lines(run: &Output) -> Vec<String> {
        match run {
            Output::Run(cmds) => cmds
                .iter()
                .map(|c| {
                    c.to_string()
                        .replace(" pool-max-conn -1 pool-purge-delay 5s", "")
                })
                .collect(),
            other => panic!("expected a Run, got {other:?}"),
        }
    }

    /// Answers every Run with success; returns their command lines.
    fn run_all(s: &mut BackendSync, now: Instant) -> Vec<String> {
        let mut all = Vec::new();
        for o in outputs(s) {
            all.extend(lines(&o));
            s.handle_ran(now, Ok(()));
        }
        all
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_of_joins_becomes_one_batch_after_the_quiet_window() {
        let (mut s, t0) = started();
        for (i, name) in ["w1", "w2", "w3"].iter().enumerate() {
            let at = t0 + ms(50 * i as u64);
            let ip = format!("127.0.0.{}", i + 1);
            on(&mut s, at, Join, &[member(name, &ip, "web", Some("8080"))]);
        }
        // Quiet window: 200 ms after the last join (at 100 ms).
        assert_eq!(s.poll_timeout(), Some(t0 + ms(300)));
        s.handle_timeout(t0 + ms(299));
        assert_eq!(s.poll_output(), None, "no round before the window closes");
        s.handle_timeout(t0 + ms(300));
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        s.handle_servers(t0 + ms(300), Ok(vec![]));
        let out = outputs(&mut s);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            lines(&out[0]),
            [
                "add server web/w1 127.0.0.1:8080 check",
                "enable health web/w1",
                "enable server web/w1"
            ]
        );
        assert_eq!(lines(&out[2])[0], "add server web/w3 127.0.0.3:8080 check");
    }

    #[test]
    fn steady_churn_cannot_postpone_a_batch_past_max_delay() {
        let (mut s, t0) = started();
        for i in 0..100u64 {
            let m = member(&format!("w{i}"), "127.0.0.1", "web", Some("8080"));
            on(&mut s, t0 + ms(100 * i), Join, &[m]);
            if s.poll_timeout().unwrap() <= t0 + ms(100 * i) {
                assert_eq!(i, 20, "max_delay is 2 s after the first change");
                return;
            }
        }
        panic!("the batch never came due");
    }

    #[test]
    fn members_without_the_web_role_are_not_backends() {
        let (mut s, t0) = started();
        on(&mut s, t0, Join, &[member("lb", "127.0.0.9", "lb", None)]);
        assert_eq!(s.poll_timeout(), Some(t0 + SyncConfig::new("web").resync));
    }

    #[test]
    fn the_port_comes_from_http_port_and_defaults_to_80() {
        let (mut s, t0) = started();
        on(&mut s, t0, Join, &[web("a", "10.0.0.1")]);
        s.handle_timeout(t0 + ms(200));
        s.poll_output();
        s.handle_servers(t0 + ms(200), Ok(vec![]));
        assert_eq!(
            lines(&outputs(&mut s)[0])[0],
            "add server web/a 10.0.0.1:80 check"
        );
    }

    #[test]
    fn a_bad_port_tag_or_name_is_reported_and_skipped() {
        let (mut s, t0) = started();
        on(
            &mut s,
            t0,
            Join,
            &[
                member("a", "10.0.0.1", "web", Some("eighty")),
                web("b c", "10.0.0.2"),
            ],
        );
        let out = outputs(&mut s);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[0], Output::Warn(w) if w.contains("http_port=\"eighty\"")),
            "{out:?}"
        );
        assert!(
            matches!(&out[1], Output::Warn(w) if w.contains("\"b c\"")),
            "{out:?}"
        );
        assert_eq!(s.poll_timeout(), Some(t0 + SyncConfig::new("web").resync));
    }

    #[test]
    fn refused_addresses_never_become_servers_and_are_reported_once() {
        // Issue 11: a joined node must not point HAProxy at a metadata service or at this
        // host's own services.
        let mut config = SyncConfig::new("web");
        config.backends.cidrs = vec!["10.0.0.0/8".parse().unwrap()];
        let (mut s, t0) = started_with(config);
        let bad = [
            web("meta", "169.254.169.254"),
            web("any", "0.0.0.0"),
            web("mcast", "224.0.0.1"),
            web("local", "127.0.0.1"),
            web("outside", "192.168.1.5"),
        ];
        on(&mut s, t0, Join, &bad);
        on(&mut s, t0 + ms(50), Update, &bad);
        s.handle_members(&bad, t0 + ms(60));
        let warns: Vec<String> = outputs(&mut s)
            .into_iter()
            .map(|o| match o {
                Output::Warn(w) => w,
                other => panic!("expected only warnings, got {other:?}"),
            })
            .collect();
        assert_eq!(
            warns.len(),
            bad.len(),
            "once per member and address: {warns:#?}"
        );
        assert!(
            warns[0].contains("169.254.169.254 is link-local"),
            "{}",
            warns[0]
        );
        assert!(warns[3].contains("loopback"), "{}", warns[3]);
        assert!(
            warns[4].contains("outside -lb-backend-cidr 10.0.0.0/8"),
            "{}",
            warns[4]
        );
        // Nothing to do for HAProxy: no round is due before the periodic resync.
        assert_eq!(s.poll_timeout(), Some(t0 + SyncConfig::new("web").resync));
        // A member moving to an allowed address is served.
        on(&mut s, t0 + ms(100), Update, &[web("outside", "10.1.2.3")]);
        let t = t0 + ms(300);
        s.handle_timeout(t);
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        s.handle_servers(t, Ok(vec![]));
        assert_eq!(
            lines(&outputs(&mut s)[0])[0],
            "add server web/outside 10.1.2.3:80 check"
        );
    }

    #[test]
    fn a_server_whose_member_moves_to_a_refused_address_is_drained() {
        let (mut s, t0) = started();
        let w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        on(&mut s, t0, Join, std::slice::from_ref(&w1));
        let t = t0 + ms(200);
        round(&mut s, t, vec![], &[]);
        on(
            &mut s,
            t,
            Update,
            &[member("w1", "169.254.0.1", "web", Some("8080"))],
        );
        let t = t + ms(200);
        s.handle_timeout(t);
        let out = outputs(&mut s);
        assert!(
            matches!(&out[0], Output::Warn(w) if w.contains("link-local")),
            "{out:?}"
        );
        assert_eq!(out[1], Output::ReadServers);
        s.handle_servers(t, Ok(vec![server("w1", "127.0.0.1:8080", 0)]));
        assert_eq!(run_all(&mut s, t), ["set server web/w1 state drain"]);
    }

    /// Walks a graceful leave: drain, wait for sessions to reach zero, then maint and del.
    #[test]
    fn a_graceful_leave_drains_until_sessions_reach_zero_then_deletes() {
        let (mut s, t0) = started();
        let w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        on(&mut s, t0, Join, std::slice::from_ref(&w1));
        let t = t0 + ms(200);
        round(&mut s, t, vec![], &[]);

        on(&mut s, t + ms(1000), Leave, &[w1]);
        let t = t + ms(1200);
        s.handle_timeout(t);
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        s.handle_servers(t, Ok(vec![server("w1", "127.0.0.1:8080", 0)]));
        assert_eq!(run_all(&mut s, t), ["set server web/w1 state drain"]);

        // Next check after drain_poll: two sessions still in flight.
        assert_eq!(s.poll_timeout(), Some(t + ms(100)));
        let t = t + ms(100);
        s.handle_timeout(t);
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        s.handle_servers(t, Ok(vec![server("w1", "127.0.0.1:8080", ADMIN_FDRAIN)]));
        assert_eq!(outputs(&mut s), vec![Output::ReadSessions]);
        s.handle_sessions(t, Ok([("w1".to_owned(), 2)].into()));
        assert_eq!(outputs(&mut s), vec![]);

        // Then none.
        let t = t + ms(100);
        s.handle_timeout(t);
        s.poll_output();
        s.handle_servers(t, Ok(vec![server("w1", "127.0.0.1:8080", ADMIN_FDRAIN)]));
        s.poll_output();
        s.handle_sessions(t, Ok([("w1".to_owned(), 0)].into()));
        assert_eq!(
            run_all(&mut s, t),
            ["set server web/w1 state maint", "del server web/w1"]
        );

        // Gone from HAProxy: forgotten, back to the slow resync.
        let t = t + ms(100);
        s.handle_timeout(t);
        s.poll_output();
        s.handle_servers(t, Ok(vec![]));
        assert_eq!(outputs(&mut s), vec![]);
        assert_eq!(s.poll_timeout(), Some(t + SyncConfig::new("web").resync));
    }

    #[test]
    fn a_drain_that_outlasts_its_timeout_has_its_sessions_cut() {
        let (mut s, t0) = started();
        let w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        on(&mut s, t0, Leave, &[w1]);
        let t = t0 + ms(200);
        assert_eq!(
            round(&mut s, t, vec![server("w1", "127.0.0.1:8080", 0)], &[]),
            ["set server web/w1 state drain"]
        );
        let t = t + SyncConfig::new("web").drain_timeout;
        s.handle_timeout(t);
        s.poll_output();
        s.handle_servers(t, Ok(vec![server("w1", "127.0.0.1:8080", ADMIN_FDRAIN)]));
        s.poll_output();
        s.handle_sessions(t, Ok([("w1".to_owned(), 5)].into()));
        let out = outputs(&mut s);
        assert!(
            matches!(&out[0], Output::Warn(w) if w.contains("5 sessions")),
            "{out:?}"
        );
        assert_eq!(
            lines(&out[1]),
            [
                "set server web/w1 state maint",
                "shutdown sessions server web/w1",
                "del server web/w1"
            ]
        );
    }

    /// One round: read the servers (answered with `servers`), then sessions if asked
    /// (answered with `sessions`); every Run succeeds. The command lines sent.
    fn round(
        s: &mut BackendSync,
        t: Instant,
        servers: Vec<ServerState>,
        sessions: &[(&str, u64)],
    ) -> Vec<String> {
        s.handle_timeout(t);
        assert_eq!(
            outputs(s),
            vec![Output::ReadServers],
            "a round is due at {t:?}"
        );
        s.handle_servers(t, Ok(servers));
        let mut sent = Vec::new();
        let mut pending: VecDeque<Output> = outputs(s).into();
        while let Some(o) = pending.pop_front() {
            match o {
                Output::ReadSessions => {
                    let map = sessions.iter().map(|(n, c)| (n.to_string(), *c)).collect();
                    s.handle_sessions(t, Ok(map));
                    pending.extend(outputs(s));
                }
                Output::Run(_) => {
                    sent.extend(lines(&o));
                    s.handle_ran(t, Ok(()));
                }
                Output::Warn(_) => {}
                Output::ReadServers => panic!("one read per round"),
            }
        }
        sent
    }

    #[test]
    fn a_failure_stops_new_requests_at_once_and_cuts_what_remains_after_the_grace() {
        let (mut s, t0) = started();
        let w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        on(&mut s, t0, Failed, &[w1]);
        let t = t0 + ms(200);
        let up = || vec![server("w1", "127.0.0.1:8080", 0)];
        let maint = || vec![server("w1", "127.0.0.1:8080", ADMIN_FMAINT)];
        assert_eq!(
            round(&mut s, t, up(), &[]),
            ["set server web/w1 state maint"]
        );
        // Requests in flight may finish…
        assert_eq!(
            round(&mut s, t + ms(100), maint(), &[("w1", 3)]),
            Vec::<String>::new()
        );
        // …for fail_grace; then they are cut.
        let grace = SyncConfig::new("web").fail_grace;
        assert_eq!(
            round(&mut s, t + grace, maint(), &[("w1", 3)]),
            ["shutdown sessions server web/w1", "del server web/w1"]
        );
    }

    #[test]
    fn a_failed_server_without_sessions_is_deleted_at_the_next_check() {
        let (mut s, t0) = started();
        let w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        on(&mut s, t0, Failed, &[w1]);
        let t = t0 + ms(200);
        round(&mut s, t, vec![server("w1", "127.0.0.1:8080", 0)], &[]);
        assert_eq!(s.poll_timeout(), Some(t + ms(100)));
        assert_eq!(
            round(
                &mut s,
                t + ms(100),
                vec![server("w1", "127.0.0.1:8080", ADMIN_FMAINT)],
                &[("w1", 0)]
            ),
            ["del server web/w1"]
        );
    }

    // Serf reports a graceful leave as failed-then-left when the leave intent arrives after
    // the node's memberlist leave (Go Serf's "EventMemberLeave (forced)").
    #[test]
    fn a_leave_reported_after_a_failure_turns_it_back_into_a_drain() {
        let (mut s, t0) = started();
        let w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        on(&mut s, t0, Failed, std::slice::from_ref(&w1));
        on(&mut s, t0 + ms(10), Leave, std::slice::from_ref(&w1));
        let t = t0 + ms(210);
        let up = vec![server("w1", "127.0.0.1:8080", 0)];
        assert_eq!(round(&mut s, t, up, &[]), ["set server web/w1 state drain"]);

        // Too late for the batch: the failure already put it in maintenance. The leave still
        // lets its requests finish, past fail_grace, without cutting them.
        let (mut s, t0) = started();
        on(&mut s, t0, Failed, std::slice::from_ref(&w1));
        let t = t0 + ms(200);
        round(&mut s, t, vec![server("w1", "127.0.0.1:8080", 0)], &[]);
        on(&mut s, t + ms(50), Leave, &[w1]);
        let maint = || vec![server("w1", "127.0.0.1:8080", ADMIN_FMAINT)];
        let grace = SyncConfig::new("web").fail_grace;
        assert_eq!(
            round(&mut s, t + grace + ms(300), maint(), &[("w1", 2)]),
            Vec::<String>::new(),
            "no session is cut while a leave drains"
        );
        assert_eq!(
            round(&mut s, t + grace + ms(400), maint(), &[("w1", 0)]),
            ["del server web/w1"]
        );
    }

    #[test]
    fn start_up_reconciles_with_what_haproxy_already_has() {
        let t0 = Instant::now();
        let mut config = SyncConfig::new("web");
        config.backends.allow_loopback = true;
        let mut s = BackendSync::new(config, t0);
        s.handle_members(
            &[
                member("keep", "127.0.0.1", "web", Some("8080")),
                member("moved", "127.0.0.2", "web", Some("9090")),
                member("new", "127.0.0.3", "web", Some("8080")),
                member("paused", "127.0.0.4", "web", Some("8080")),
                member("lb", "127.0.0.5", "lb", None),
            ],
            t0,
        );
        s.handle_timeout(t0);
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        s.handle_servers(
            t0,
            Ok(vec![
                server("keep", "127.0.0.1:8080", 0),
                server("moved", "127.0.0.2:8080", 0),
                server("paused", "127.0.0.4:8080", ADMIN_FMAINT),
                server("stranger", "127.0.0.6:8080", 0),
            ]),
        );
        let got: Vec<Vec<String>> = outputs(&mut s).iter().map(lines).collect();
        assert_eq!(
            got,
            vec![
                vec![
                    "set server web/moved state maint",
                    "shutdown sessions server web/moved",
                    "del server web/moved",
                    "add server web/moved 127.0.0.2:9090 check",
                    "enable health web/moved",
                    "enable server web/moved",
                ],
                vec![
                    "add server web/new 127.0.0.3:8080 check",
                    "enable health web/new",
                    "enable server web/new",
                ],
                vec!["enable health web/paused", "enable server web/paused"],
                // Not a member: it leaves gracefully.
                vec!["set server web/stranger state drain"],
            ]
        );
    }

    #[test]
    fn a_member_that_comes_back_while_draining_is_made_ready_again() {
        let (mut s, t0) = started();
        let w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        on(&mut s, t0, Join, &[w1]);
        let t = t0 + ms(200);
        assert_eq!(
            round(
                &mut s,
                t,
                vec![server("w1", "127.0.0.1:8080", ADMIN_FDRAIN)],
                &[]
            ),
            ["set server web/w1 state ready"]
        );
    }

    #[test]
    fn a_web_member_that_changes_role_is_drained() {
        let (mut s, t0) = started();
        on(&mut s, t0, Join, &[web("w1", "127.0.0.1")]);
        on(&mut s, t0, Update, &[member("w1", "127.0.0.1", "db", None)]);
        let t = t0 + ms(200);
        assert_eq!(
            round(&mut s, t, vec![server("w1", "127.0.0.1:80", 0)], &[]),
            ["set server web/w1 state drain"]
        );
    }

    #[test]
    fn a_member_missing_from_a_fresh_list_is_removed() {
        let (mut s, t0) = started();
        on(&mut s, t0, Join, &[web("w1", "127.0.0.1")]);
        s.handle_members(&[member("lb", "127.0.0.5", "lb", None)], t0);
        let t = t0 + ms(200);
        assert_eq!(
            round(&mut s, t, vec![server("w1", "127.0.0.1:80", 0)], &[])[0],
            "set server web/w1 state maint"
        );
    }

    #[test]
    fn a_failed_round_is_retried_with_doubling_backoff_and_reads_state_again() {
        let (mut s, t0) = started();
        on(&mut s, t0, Join, &[web("w1", "127.0.0.1")]);
        let mut t = t0 + ms(200);
        s.handle_timeout(t);
        s.poll_output();
        s.handle_servers(t, Err("connection refused".into()));
        assert_eq!(s.poll_timeout(), Some(t + ms(500)));
        t += ms(500);
        s.handle_timeout(t);
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        s.handle_servers(t, Ok(vec![]));
        let out = outputs(&mut s);
        assert_eq!(out.len(), 1);
        s.handle_ran(
            t,
            Err(RunError {
                command: Command::new("web", "w1", Op::Add("127.0.0.1:80".parse().unwrap())),
                message: "Backend must use a dynamic load balancing".into(),
            }),
        );
        assert_eq!(s.poll_timeout(), Some(t + ms(1000)), "backoff doubled");
        t += ms(1000);
        s.handle_timeout(t);
        s.poll_output();
        s.handle_servers(t, Ok(vec![]));
        assert_eq!(
            run_all(&mut s, t)[0],
            "add server web/w1 127.0.0.1:80 check",
            "the add is tried again"
        );
        assert_eq!(s.poll_timeout(), Some(t + SyncConfig::new("web").resync));
    }

    #[test]
    fn no_round_starts_while_answers_are_outstanding() {
        let (mut s, t0) = started();
        on(&mut s, t0, Join, &[web("w1", "127.0.0.1")]);
        let t = t0 + ms(200);
        s.handle_timeout(t);
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(t + ms(10_000));
        assert_eq!(outputs(&mut s), vec![], "one round at a time");
    }

    #[test]
    fn a_change_during_a_round_gets_its_own_batch() {
        let (mut s, t0) = started();
        on(&mut s, t0, Join, &[web("w1", "127.0.0.1")]);
        let t = t0 + ms(200);
        s.handle_timeout(t);
        s.poll_output();
        on(&mut s, t + ms(5), Join, &[web("w2", "127.0.0.2")]);
        s.handle_servers(t + ms(10), Ok(vec![]));
        // Both adds are sent now (w2 was wanted by the time the state arrived)…
        assert_eq!(run_all(&mut s, t + ms(10)).len(), 6);
        // …and w2's change still gets a round of its own, which finds nothing to do.
        assert_eq!(s.poll_timeout(), Some(t + ms(205)));
    }

    // Issue 15: with -lb-balance leastload the sync turns each member's `load` tag into
    // `set server … weight`, as the built-in balancer weighs its backends.
    #[test]
    fn load_tags_become_server_weights_when_asked() {
        let mut config = SyncConfig::new("web");
        config.backends.allow_loopback = true;
        config.weights = true;
        let (mut s, t0) = started_with(config);
        let mut w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        w1.tags.insert("load".into(), "3".into());
        on(&mut s, t0, Join, std::slice::from_ref(&w1));
        s.handle_timeout(t0 + ms(200));
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        s.handle_servers(t0 + ms(200), Ok(vec![]));
        let out = outputs(&mut s);
        assert_eq!(
            lines(&out[0]),
            [
                "add server web/w1 127.0.0.1:8080 check",
                "set server web/w1 weight 16",
                "enable health web/w1",
                "enable server web/w1"
            ]
        );
        s.handle_ran(t0 + ms(200), Ok(()));
        // The node reports itself overloaded: less, never none.
        w1.tags.insert("load".into(), "500".into());
        let t1 = t0 + ms(1000);
        on(&mut s, t1, Update, std::slice::from_ref(&w1));
        s.handle_timeout(t1 + ms(200));
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        let mut have = server("w1", "127.0.0.1:8080", 0);
        have.weight = Some(16);
        s.handle_servers(t1 + ms(200), Ok(vec![have]));
        assert_eq!(
            run_all(&mut s, t1 + ms(200)),
            ["set server web/w1 weight 1"]
        );
    }

    #[test]
    fn without_weights_a_load_tag_changes_nothing() {
        let (mut s, t0) = started();
        let mut w1 = member("w1", "127.0.0.1", "web", Some("8080"));
        w1.tags.insert("load".into(), "3".into());
        on(&mut s, t0, Join, std::slice::from_ref(&w1));
        s.handle_timeout(t0 + ms(200));
        assert_eq!(outputs(&mut s), vec![Output::ReadServers]);
        s.handle_servers(t0 + ms(200), Ok(vec![]));
        let sent = run_all(&mut s, t0 + ms(200));
        assert!(sent.iter().all(|l| !l.contains("weight")), "{sent:?}");
    }
}
