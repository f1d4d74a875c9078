//! Event filters in Serf's syntax, as `-event-handler` specs and the RPC `stream` command write
//! them: `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`, `user`,
//! `user:NAME`, `query`, `query:NAME` and `*`, in comma-separated lists.
//!
//! Serf (`cmd/serf/command/agent/event_handler.go`, `ParseEventFilter` and `Valid`) splits a
//! list at every comma, reads a `user:`/`query:` prefix as a name (an empty name, as in `user:`,
//! matches every name), treats an empty list as `*`, and refuses a list with any unknown event
//! type. Here the parse and the check are one step, so an invalid filter cannot exist.

use std::fmt;

use crate::{Event, MemberEventKind};

/// One filter of a comma-separated list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    /// `*`: every event.
    All,
    /// `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`.
    Member(MemberEventKind),
    /// `user` (`None`, also written `user:`) or `user:NAME`.
    User(Option<String>),
    /// `query` (`None`, also written `query:`) or `query:NAME`.
    Query(Option<String>),
}

/// What a filter looks at in an event: its kind, and the name of a user event or query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A member event of this kind.
    Member(MemberEventKind),
    /// A user event with this name.
    User(&'a str),
    /// A query with this name.
    Query(&'a str),
}

impl<'a> Subject<'a> {
    /// The subject of a cluster event.
    pub fn of(e: &'a Event) -> Self {
        match e {
            Event::Member(m) => Subject::Member(m.kind),
            Event::User(u) => Subject::User(&u.name),
            Event::Query(q) => Subject::Query(&q.name),
        }
    }
}

/// A filter that names no event Serf knows. Nothing was parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?} (valid: member-join, member-leave, member-failed, member-update, member-reap, user, user:NAME, query, query:NAME, *)")]
pub struct UnknownEventType(pub String);

impl EventFilter {
    /// One filter (no commas).
    pub fn parse(s: &str) -> Result<Self, UnknownEventType> {
        let named = |n: &str| (!n.is_empty()).then(|| n.to_owned());
        if let Some(name) = s.strip_prefix("user:") {
            return Ok(EventFilter::User(named(name)));
        }
        if let Some(name) = s.strip_prefix("query:") {
            return Ok(EventFilter::Query(named(name)));
        }
        Ok(match s {
            "*" => EventFilter::All,
            "member-join" => EventFilter::Member(MemberEventKind::Join),
            "member-leave" => EventFilter::Member(MemberEventKind::Leave),
            "member-failed" => EventFilter::Member(MemberEventKind::Failed),
            "member-update" => EventFilter::Member(MemberEventKind::Update),
            "member-reap" => EventFilter::Member(MemberEventKind::Reap),
            "user" => EventFilter::User(None),
            "query" => EventFilter::Query(None),
            _ => return Err(UnknownEventType(s.to_owned())),
        })
    }

    /// A comma-separated list; empty means `*`. The first unknown type refuses the whole list.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, UnknownEventType> {
        let s = if s.is_empty() { "*" } else { s };
        s.split(',').map(EventFilter::parse).collect()
    }

    /// Whether an event with this subject passes.
    pub fn admits(&self, subject: Subject<'_>) -> bool {
        match (self, subject) {
            (EventFilter::All, _) => true,
            (EventFilter::Member(k), Subject::Member(kind)) => *k == kind,
            (EventFilter::User(name), Subject::User(n))
            | (EventFilter::Query(name), Subject::Query(n)) => {
                name.as_deref().is_none_or(|want| want == n)
            }
            _ => false,
        }
    }

    /// Whether a node event passes (only member, user and query events ever do).
    pub fn matches(&self, e: &Event) -> bool {
        self.admits(Subject::of(e))
    }

    /// Serf's `Event` field: `*`, `member-join`, …, `user`, `query`.
    pub fn event(&self) -> &'static str {
        match self {
            EventFilter::All => "*",
            EventFilter::Member(k) => k.as_str(),
            EventFilter::User(_) => "user",
            EventFilter::Query(_) => "query",
        }
    }

    /// Serf's `Name` field: the user event's or query's name, empty for any.
    pub fn name(&self) -> &str {
        match self {
            EventFilter::User(Some(n)) | EventFilter::Query(Some(n)) => n,
            _ => "",
        }
    }
}

/// The filter as written: `user:deploy`, `member-join`, `*`.
impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "" => f.write_str(self.event()),
            name => write!(f, "{}:{name}", self.event()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back() {
        let list = "member-join,member-leave,member-failed,member-update,member-reap,user,user:a,query,query:b,*";
        let parsed = EventFilter::parse_list(list).unwrap();
        assert_eq!(
            parsed,
            [
                EventFilter::Member(MemberEventKind::Join),
                EventFilter::Member(MemberEventKind::Leave),
                EventFilter::Member(MemberEventKind::Failed),
                EventFilter::Member(MemberEventKind::Update),
                EventFilter::Member(MemberEventKind::Reap),
                EventFilter::User(None),
                EventFilter::User(Some("a".into())),
                EventFilter::Query(None),
                EventFilter::Query(Some("b".into())),
                EventFilter::All,
            ]
        );
        let printed: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(printed.join(","), list);
    }

    #[test]
    fn an_empty_list_is_everything_and_an_empty_name_any_name() {
        // Serf's ParseEventFilter: "" → "*"; `user:` keeps an empty Name, which matches all.
        assert_eq!(EventFilter::parse_list("").unwrap(), [EventFilter::All]);
        assert_eq!(
            EventFilter::parse("user:").unwrap(),
            EventFilter::User(None)
        );
        assert_eq!(EventFilter::parse("query:").unwrap().name(), "");
    }

    #[test]
    fn one_unknown_type_refuses_the_list() {
        // Serf's Valid(): any invalid filter makes the stream "Invalid event filter".
        assert_eq!(
            EventFilter::parse_list("member-join,member-jion"),
            Err(UnknownEventType("member-jion".into()))
        );
        assert!(EventFilter::parse_list("user,bogus").is_err());
        assert!(EventFilter::parse_list("member-join,").is_err());
        assert!(EventFilter::parse("USER").is_err());
    }

    #[test]
    fn filters_admit_their_events_only() {
        let join = EventFilter::Member(MemberEventKind::Join);
        assert!(join.admits(Subject::Member(MemberEventKind::Join)));
        assert!(!join.admits(Subject::Member(MemberEventKind::Leave)));
        let deploy = EventFilter::parse("user:deploy").unwrap();
        assert!(deploy.admits(Subject::User("deploy")));
        assert!(!deploy.admits(Subject::User("deployx")));
        assert!(!deploy.admits(Subject::Query("deploy")));
        let any_query = EventFilter::Query(None);
        assert!(any_query.admits(Subject::Query("anything")));
        assert!(!any_query.admits(Subject::User("anything")));
        for s in [
            Subject::User("a"),
            Subject::Query("b"),
            Subject::Member(MemberEventKind::Reap),
        ] {
            assert!(EventFilter::All.admits(s));
        }
    }
}
