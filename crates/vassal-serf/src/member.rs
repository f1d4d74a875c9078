//! Serf's view of a member: memberlist's node plus decoded tags and a status that tells a
//! graceful leave from a failure (spec §4.5).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use vassal_memberlist::wire::Vsn;

/// Serf member status; the numbers are Serf's (`Status` in conflict responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    None = 0,
    Alive = 1,
    Leaving = 2,
    Left = 3,
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
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub tags: BTreeMap<String, String>,
    pub status: MemberStatus,
    /// memberlist and Serf protocol versions: `[pmin, pmax, pcur, dmin, dmax, dcur]`.
    pub vsn: Vsn,
}

/// The kinds of member event handlers and streams see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberEventKind {
    Join,
    Leave,
    Failed,
    Update,
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
    pub kind: MemberEventKind,
    pub members: Vec<Member>,
}
