//! Serf's snapshot file (spec §5.3) as pure logic: reading one back at start ([`replay`]) and
//! deciding what to append or rewrite as the node runs ([`Snapshotter`]). The shell owns the file
//! and only carries out the [`SnapshotWrite`]s; the format is Go Serf's, line for line, so either
//! agent can restart from a file the other wrote.
//!
//! ```text
//! alive: NAME IP:PORT     a member joined (IPv6 as [addr]:port)
//! not-alive: NAME         a member left or failed
//! clock: N                the member clock minus one, when it has grown
//! event-clock: N          the newest user event's Lamport time
//! query-clock: N          the newest query's Lamport time (Serf's own queries included)
//! leave                   we left gracefully; forget everything unless rejoining after leave
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::member::{Member, MemberEventKind};

/// How often the member clock is checked and recorded when it has grown (Go's
/// `clockUpdateInterval`).
pub const CLOCK_UPDATE_INTERVAL: Duration = Duration::from_millis(500);
/// Appended lines reach the file within this long (Go's `flushInterval`).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Never compact a file smaller than this (Go's `snapshotSizeLimit`, 128 KiB).
pub const MIN_COMPACT_SIZE: u64 = 128 * 1024;
/// The temporary file a compaction writes before it is renamed over the snapshot.
pub const COMPACT_SUFFIX: &str = ".compact";
/// Estimated bytes per alive node; the file is compacted at twice that per node.
const BYTES_PER_NODE: u64 = 128;
const COMPACTION_THRESHOLD: u64 = 2;

/// What a snapshot file said, after replaying it line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Members alive when the file was last written: name → address as written (`ip:port`).
    pub alive: BTreeMap<String, String>,
    /// The member clock's last recorded value.
    pub clock: u64,
    /// The newest user event's Lamport time: events at or before it are not delivered again.
    pub event_clock: u64,
    /// The newest query's Lamport time: queries at or before it are not processed again.
    pub query_clock: u64,
    /// One message per line that could not be read (the line was skipped).
    pub warnings: Vec<String>,
    /// A `leave` line was ignored because we rejoin after leaving.
    pub ignored_leave: bool,
}

impl Recovered {
    /// The recorded members other than `me` with readable addresses, in name order; a
    /// warning for each address that does not parse.
    pub fn previous_nodes(&self, me: &str) -> (Vec<(String, SocketAddr)>, Vec<String>) {
        let mut nodes = Vec::new();
        let mut warnings = Vec::new();
        for (name, addr) in &self.alive {
            if name == me {
                continue;
            }
            match addr.parse::<SocketAddr>() {
                Ok(a) => nodes.push((name.clone(), a)),
                Err(e) => warnings.push(format!(
                    "snapshot: cannot rejoin {name}: bad address {addr:?} ({e})"
                )),
            }
        }
        (nodes, warnings)
    }
}

/// Reads a snapshot file's contents the way Serf does: later lines override earlier ones, an
/// unfinished last line is ignored, and `leave` forgets everything unless `rejoin_after_leave`.
pub fn replay(contents: &[u8], rejoin_after_leave: bool) -> Recovered {
    let mut r = Recovered::default();
    let mut lines = contents.split(|&b| b == b'\n');
    // The piece after the last newline is empty for a complete file, or an unfinished line.
    lines.next_back();
    for raw in lines {
        let line = String::from_utf8_lossy(raw);
        let clock =
            |field: &str, value: &str, warnings: &mut Vec<String>| match value.parse::<u64>() {
                Ok(t) => Some(t),
                Err(e) => {
                    warnings.push(format!(
                        "snapshot: failed to convert {field} time {value:?}: {e}"
                    ));
                    None
                }
            };
        if let Some(info) = line.strip_prefix("alive: ") {
            match info.rsplit_once(' ') {
                Some((name, addr)) => {
                    r.alive.insert(name.to_owned(), addr.to_owned());
                }
                None => r
                    .warnings
                    .push(format!("snapshot: failed to parse address: {line}")),
            }
        } else if let Some(name) = line.strip_prefix("not-alive: ") {
            r.alive.remove(name);
        } else if let Some(v) = line.strip_prefix("clock: ") {
            if let Some(t) = clock("clock", v, &mut r.warnings) {
                r.clock = t;
            }
        } else if let Some(v) = line.strip_prefix("event-clock: ") {
            if let Some(t) = clock("event clock", v, &mut r.warnings) {
                r.event_clock = t;
            }
        } else if let Some(v) = line.strip_prefix("query-clock: ") {
            if let Some(t) = clock("query clock", v, &mut r.warnings) {
                r.query_clock = t;
            }
        } else if line.starts_with("coordinate: ") || line.starts_with('#') {
            // Old versions persisted coordinates; they re-converge instead. `#` is a comment.
        } else if line == "leave" {
            if rejoin_after_leave {
                r.ignored_leave = true;
                continue;
            }
            r.alive.clear();
            r.clock = 0;
            r.event_clock = 0;
            r.query_clock = 0;
        } else {
            r.warnings
                .push(format!("snapshot: unrecognized line: {line}"));
        }
    }
    r
}

/// `ip:port` as Go's `net.TCPAddr` prints it: IPv6 in brackets, IPv4-mapped IPv6 as IPv4.
pub fn format_addr(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip.to_canonical(), port).to_string()
}

/// How a node restores from, and keeps recording to, its snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// What the file held at start ([`replay`]).
    pub recovered: Recovered,
    /// The file's length at start: appends continue from there.
    pub file_len: u64,
    /// Serf's `RejoinAfterLeave` (agent `-rejoin`): a graceful leave keeps the alive members.
    pub rejoin_after_leave: bool,
    /// Compaction never happens below this size ([`MIN_COMPACT_SIZE`]).
    pub min_compact_size: u64,
}

impl SnapshotConfig {
    /// Continues the file of `file_len` bytes whose contents replayed to `recovered`.
    pub fn new(recovered: Recovered, file_len: u64, rejoin_after_leave: bool) -> Self {
        SnapshotConfig {
            recovered,
            file_len,
            rejoin_after_leave,
            min_compact_size: MIN_COMPACT_SIZE,
        }
    }
}

/// One thing for the shell to do to the snapshot file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotWrite {
    /// Append these lines (each ends in `\n`); they must reach the file within
    /// [`FLUSH_INTERVAL`].
    Append(String),
    /// Flush and sync to disk now (after a `leave` line).
    Sync,
    /// Compaction: write this as `PATH.compact`, sync it, and rename it over `PATH`; appends
    /// continue on the new file. Earlier pending appends are already folded in.
    Replace(String),
}

/// Serf's snapshotter, minus the file: it keeps what a compaction needs (the alive members and
/// the last clocks written) and turns events into [`SnapshotWrite`]s.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    alive: BTreeMap<String, String>,
    last_clock: u64,
    last_event_clock: u64,
    last_query_clock: u64,
    /// After a graceful leave nothing but clocks is recorded.
    leaving: bool,
    rejoin_after_leave: bool,
    /// Bytes in the file so far.
    offset: u64,
    min_compact_size: u64,
    writes: Vec<SnapshotWrite>,
}

impl Snapshotter {
    /// Continues the file `config` describes.
    pub fn new(config: &SnapshotConfig) -> Self {
        let r = &config.recovered;
        Snapshotter {
            alive: r.alive.clone(),
            last_clock: r.clock,
            last_event_clock: r.event_clock,
            last_query_clock: r.query_clock,
            leaving: false,
            rejoin_after_leave: config.rejoin_after_leave,
            offset: config.file_len,
            min_compact_size: config.min_compact_size,
            writes: Vec::new(),
        }
    }

    /// Records a member event (`alive:` for joins, `not-alive:` for leaves and failures), then
    /// the member clock `clock_now` if it grew.
    pub fn member_event(&mut self, kind: MemberEventKind, members: &[Member], clock_now: u64) {
        if self.leaving {
            return;
        }
        for m in members {
            // One record per line: a name with a line break in it could write records of its
            // own (Go writes it as is). Memberlist refuses such names; this is the second lock.
            if m.name.contains(['\n', '\r']) {
                continue;
            }
            match kind {
                MemberEventKind::Join => {
                    let addr = format_addr(m.addr, m.port);
                    let line = format!("alive: {} {addr}\n", m.name);
                    self.alive.insert(m.name.clone(), addr);
                    self.append(line);
                }
                MemberEventKind::Leave | MemberEventKind::Failed => {
                    self.alive.remove(&m.name);
                    self.append(format!("not-alive: {}\n", m.name));
                }
                MemberEventKind::Update | MemberEventKind::Reap => {}
            }
        }
        self.update_clock(clock_now);
    }

    /// Records a user event's Lamport time if it is the newest seen.
    pub fn user_event(&mut self, ltime: u64) {
        if self.leaving || ltime <= self.last_event_clock {
            return;
        }
        self.last_event_clock = ltime;
        self.append(format!("event-clock: {ltime}\n"));
    }

    /// Records a query's Lamport time if it is the newest seen.
    pub fn query(&mut self, ltime: u64) {
        if self.leaving || ltime <= self.last_query_clock {
            return;
        }
        self.last_query_clock = ltime;
        self.append(format!("query-clock: {ltime}\n"));
    }

    /// Records `clock_now - 1` (the last member time actually used) if it grew. Called every
    /// [`CLOCK_UPDATE_INTERVAL`], after member events and at shutdown; also after a leave, as
    /// Go does.
    pub fn update_clock(&mut self, clock_now: u64) {
        let last_seen = clock_now.saturating_sub(1);
        if last_seen > self.last_clock {
            self.last_clock = last_seen;
            self.append(format!("clock: {last_seen}\n"));
        }
    }

    /// A graceful leave: writes `leave` (synced at once) and stops recording members and
    /// events. Unless rejoining after leave, the alive set is forgotten too.
    pub fn leave(&mut self) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        if !self.rejoin_after_leave {
            self.alive.clear();
        }
        self.append("leave\n".to_owned());
        self.writes.push(SnapshotWrite::Sync);
    }

    /// The next thing to do to the file.
    pub fn poll_write(&mut self) -> Option<SnapshotWrite> {
        if self.writes.is_empty() {
            None
        } else {
            Some(self.writes.remove(0))
        }
    }

    /// What a compacted file holds: the alive members, then the three clocks.
    pub fn compacted(&self) -> String {
        let mut s = String::new();
        for (name, addr) in &self.alive {
            s.push_str(&format!("alive: {name} {addr}\n"));
        }
        s.push_str(&format!("clock: {}\n", self.last_clock));
        s.push_str(&format!("event-clock: {}\n", self.last_event_clock));
        s.push_str(&format!("query-clock: {}\n", self.last_query_clock));
        s
    }

    /// The size past which the file is compacted: twice 128 bytes per alive member, at least
    /// the minimum.
    pub fn max_size(&self) -> u64 {
        (self.alive.len() as u64)
            .saturating_mul(BYTES_PER_NODE)
            .saturating_mul(COMPACTION_THRESHOLD)
            .max(self.min_compact_size)
    }

    fn append(&mut self, line: String) {
        self.offset = self.offset.saturating_add(line.len() as u64);
        if self.offset > self.max_size() {
            // The rewrite comes from the state, which already includes this line's effect.
            let contents = self.compacted();
            self.offset = contents.len() as u64;
            self.writes.retain(|w| *w == SnapshotWrite::Sync);
            self.writes.push(SnapshotWrite::Replace(contents));
            return;
        }
        match self.writes.last_mut() {
            Some(SnapshotWrite::Append(s)) => s.push_str(&line),
            _ => self.writes.push(SnapshotWrite::Append(line)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberStatus;
    use std::net::Ipv4Addr;

    fn member(name: &str, ip: [u8; 4], port: u16) -> Member {
        Member {
            name: name.into(),
            addr: IpAddr::V4(Ipv4Addr::from(ip)),
            port,
            tags: BTreeMap::new(),
            status: MemberStatus::Alive,
            vsn: [1, 5, 2, 2, 5, 4],
        }
    }

    fn fresh(min_compact_size: u64) -> Snapshotter {
        Snapshotter::new(&SnapshotConfig {
            min_compact_size,
            ..SnapshotConfig::new(Recovered::default(), 0, false)
        })
    }

    fn appended(s: &mut Snapshotter) -> String {
        let mut out = String::new();
        while let Some(w) = s.poll_write() {
            match w {
                SnapshotWrite::Append(t) => out.push_str(&t),
                SnapshotWrite::Sync => {}
                SnapshotWrite::Replace(t) => out = t,
            }
        }
        out
    }

    // spec §5.3: later lines win, `not-alive` removes, an address is split at the last space.
    #[test]
    fn replay_keeps_the_last_word_on_each_member_and_clock() {
        let file = b"alive: a 127.0.0.1:7946\n\
                     alive: b c 10.0.0.2:7000\n\
                     clock: 4\n\
                     event-clock: 9\n\
                     query-clock: 2\n\
                     alive: d [::1]:7946\n\
                     not-alive: a\n\
                     clock: 7\n\
                     coordinate: {\"Vec\":[0]}\n\
                     # a comment\n";
        let r = replay(file, false);
        assert_eq!(
            r.alive,
            BTreeMap::from([
                ("b c".to_string(), "10.0.0.2:7000".to_string()),
                ("d".into(), "[::1]:7946".into()),
            ])
        );
        assert_eq!((r.clock, r.event_clock, r.query_clock), (7, 9, 2));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn replay_warns_about_unknown_and_broken_lines_and_skips_them() {
        let r = replay(
            b"alive: nospace\nclock: x\nhello\nevent-clock: 3\nunfinished",
            false,
        );
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        assert!(r.warnings[2].contains("hello"));
        assert_eq!(r.event_clock, 3);
        assert!(r.alive.is_empty());
        // An unfinished last line (a crash mid-write) is not read at all, as in Go.
        assert!(!r.warnings.iter().any(|w| w.contains("unfinished")));
    }

    // spec §5.3: `leave` clears the alive set and every clock, unless rejoin_after_leave.
    #[test]
    fn leave_forgets_everything_unless_rejoining_after_leave() {
        let file = b"alive: a 127.0.0.1:1\nclock: 3\nevent-clock: 5\nquery-clock: 6\nleave\n";
        let r = replay(file, false);
        assert!(r.alive.is_empty());
        assert_eq!((r.clock, r.event_clock, r.query_clock), (0, 0, 0));
        let r = replay(file, true);
        assert_eq!(r.alive.len(), 1);
        assert_eq!((r.clock, r.event_clock, r.query_clock), (3, 5, 6));
        assert!(r.ignored_leave);
    }

    #[test]
    fn previous_nodes_skip_ourselves_and_unreadable_addresses() {
        let r = replay(
            b"alive: me 127.0.0.1:1\nalive: a 127.0.0.2:2\nalive: b host:3\n",
            false,
        );
        let (nodes, warnings) = r.previous_nodes("me");
        assert_eq!(
            nodes,
            vec![("a".to_string(), "127.0.0.2:2".parse().unwrap())]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn events_append_serf_lines_and_replay_to_the_same_state() {
        let mut s = fresh(MIN_COMPACT_SIZE);
        s.member_event(
            MemberEventKind::Join,
            &[member("a", [127, 0, 0, 1], 7946)],
            3,
        );
        s.member_event(
            MemberEventKind::Join,
            &[member("b", [10, 1, 2, 3], 8000)],
            3,
        );
        s.user_event(5);
        s.user_event(4); // older: not recorded
        s.query(2);
        s.member_event(
            MemberEventKind::Failed,
            &[member("a", [127, 0, 0, 1], 7946)],
            4,
        );
        s.member_event(
            MemberEventKind::Update,
            &[member("b", [10, 1, 2, 3], 8000)],
            4,
        );
        s.update_clock(4); // unchanged: nothing
        let text = appended(&mut s);
        assert_eq!(
            text,
            "alive: a 127.0.0.1:7946\nclock: 2\nalive: b 10.1.2.3:8000\nevent-clock: 5\n\
             query-clock: 2\nnot-alive: a\nclock: 3\n"
        );
        let r = replay(text.as_bytes(), false);
        assert_eq!(
            r.alive,
            BTreeMap::from([("b".to_string(), "10.1.2.3:8000".to_string())])
        );
        assert_eq!((r.clock, r.event_clock, r.query_clock), (3, 5, 2));
    }

    #[test]
    fn addresses_print_like_go_tcp_addr() {
        assert_eq!(format_addr("::1".parse().unwrap(), 7946), "[::1]:7946");
        assert_eq!(
            format_addr("::ffff:10.0.0.1".parse().unwrap(), 7946),
            "10.0.0.1:7946"
        );
    }

    #[test]
    fn after_leave_only_clocks_are_recorded_and_leave_is_synced() {
        let mut s = fresh(MIN_COMPACT_SIZE);
        s.member_event(MemberEventKind::Join, &[member("a", [127, 0, 0, 1], 1)], 1);
        s.leave();
        s.member_event(MemberEventKind::Join, &[member("b", [127, 0, 0, 2], 1)], 1);
        s.user_event(9);
        s.update_clock(6);
        let mut writes = Vec::new();
        while let Some(w) = s.poll_write() {
            writes.push(w);
        }
        assert_eq!(
            writes,
            vec![
                SnapshotWrite::Append("alive: a 127.0.0.1:1\nleave\n".into()),
                SnapshotWrite::Sync,
                SnapshotWrite::Append("clock: 5\n".into()),
            ]
        );
        assert_eq!(s.compacted(), "clock: 5\nevent-clock: 0\nquery-clock: 0\n");
    }

    // spec §5.3: past max(min size, 2 × 128 B × alive) the file is rewritten from the state.
    #[test]
    fn a_file_past_its_limit_is_compacted_into_the_current_state() {
        let mut s = fresh(300);
        for i in 0..20u16 {
            let kind = if i % 2 == 0 {
                MemberEventKind::Join
            } else {
                MemberEventKind::Failed
            };
            s.member_event(
                kind,
                &[member("flappy", [127, 0, 0, 9], 7946)],
                u64::from(i),
            );
        }
        s.user_event(3);
        let mut writes = Vec::new();
        while let Some(w) = s.poll_write() {
            writes.push(w);
        }
        let last_replace = writes
            .iter()
            .rposition(|w| matches!(w, SnapshotWrite::Replace(_)))
            .expect("a compaction happened");
        let SnapshotWrite::Replace(compacted) = &writes[last_replace] else {
            unreachable!()
        };
        assert!(compacted.len() < 300, "{compacted}");
        // The compacted file plus what came after replays to the live state.
        let mut file = compacted.clone();
        for w in &writes[last_replace + 1..] {
            if let SnapshotWrite::Append(t) = w {
                file.push_str(t);
            }
        }
        let r = replay(file.as_bytes(), false);
        assert!(r.alive.is_empty(), "flappy ended failed: {file}");
        assert_eq!((r.clock, r.event_clock), (18, 3), "{file}");
        assert_eq!(s.max_size(), 300);
    }

    #[test]
    fn the_limit_grows_with_the_cluster() {
        let mut alive = BTreeMap::new();
        for i in 0..1000 {
            alive.insert(format!("n{i}"), "127.0.0.1:1".to_string());
        }
        let r = Recovered {
            alive,
            ..Recovered::default()
        };
        let s = Snapshotter::new(&SnapshotConfig::new(r, 0, false));
        assert_eq!(s.max_size(), 1000 * 256);
    }
}
