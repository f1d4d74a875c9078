//! Serf's view of a member: memberlist's node plus decoded tags and a status that tells a
//! graceful leave from a failure (spec §4.5).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use vassal_memberlist::wire::Vsn;

/// Serf member status; the numbers are Serf's (`Status` in conflict responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Unknown (never reported for a real member).
    None = 0,
    /// Alive in memberlist and not leaving.
    Alive = 1,
    /// Announced its leave (a leave intent); memberlist still sees it.
    Leaving = 2,
    /// Left gracefully: a leave intent, then memberlist's dead.
    Left = 3,
    /// Dead in memberlist without having announced a leave.
    Failed = 4,
}

impl MemberStatus {
    /// The name Serf's RPC and CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::None => "none",
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node name.
    pub name: String,
    /// Its gossip address.
    pub addr: IpAddr,
    /// Its gossip port.
    pub port: u16,
    /// Its tags, decoded from memberlist's node metadata.
    pub tags: BTreeMap<String, String>,
    /// What Serf knows of it.
    pub status: MemberStatus,
    /// memberlist and Serf protocol versions: `[pmin, pmax, pcur, dmin, dmax, dcur]`.
    pub vsn: Vsn,
}

/// The kinds of member event handlers and streams see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberEventKind {
    /// `member-join`: alive (new, or back from failed or left).
    Join,
    /// `member-leave`: left gracefully (or force-left).
    Leave,
    /// `member-failed`: dead without a leave.
    Failed,
    /// `member-update`: new tags or address.
    Update,
    /// `member-reap`: forgotten (reaped or pruned).
    Reap,
}

impl MemberEventKind {
    /// `member-join`, … as in `SERF_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberEventKind::Join => "member-join",
            MemberEventKind::Leave => "member-leave",
            MemberEventKind::Failed => "member-failed",
            MemberEventKind::Update => "member-update",
            MemberEventKind::Reap => "member-reap",
        }
    }
}

impl fmt::Display for MemberEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One or more members changed the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    /// How they changed.
    pub kind: MemberEventKind,
    /// The members, as they are now.
    pub members: Vec<Member>,
}
