//! Handler specs: `script` or `FILTERS=script`, split at the first `=` (spec §5.2).

use std::fmt;

use vassal_serf::Event;

/// One comma-separated filter of a handler spec: Serf's filter syntax, shared with the RPC
/// `stream` command.
pub use vassal_serf::filter::EventFilter as Filter;
use vassal_serf::filter::Subject;

/// A parsed `-event-handler` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    pub filters: Vec<Filter>,
    pub script: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    UnknownFilter(String),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::UnknownFilter(t) => write!(
                f,
                "Invalid event script: unknown event type {t:?} (valid: member-join, \
                 member-leave, member-failed, member-update, member-reap, user, user:NAME, \
                 query, query:NAME, *)"
            ),
        }
    }
}

impl std::error::Error for SpecError {}

impl HandlerSpec {
    pub fn parse(v: &str) -> Result<Self, SpecError> {
        let (filter, script) = match v.split_once('=') {
            Some((f, s)) => (f, s),
            None => ("", v),
        };
        let filters = Filter::parse_list(filter).map_err(|e| SpecError::UnknownFilter(e.0))?;
        Ok(HandlerSpec {
            filters,
            script: script.to_owned(),
        })
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.filters.iter().any(|f| f.matches(e))
    }

    /// Whether this handler runs for (and so answers) queries named `name`.
    pub fn handles_query(&self, name: &str) -> bool {
        self.filters.iter().any(|f| f.admits(Subject::Query(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vassal_serf::{MemberEvent, MemberEventKind, Query, UserEvent};

    fn user(name: &str) -> Event {
        Event::User(UserEvent {
            ltime: 1,
            name: name.into(),
            payload: vec![],
            cc: false,
        })
    }
    fn member(kind: MemberEventKind) -> Event {
        Event::Member(MemberEvent {
            kind,
            members: vec![],
        })
    }
    fn query(name: &str) -> Event {
        Event::Query(Query {
            ltime: 1,
            id: 1,
            name: name.into(),
            payload: vec![],
            source_node: "a".into(),
            deadline: std::time::Instant::now(),
        })
    }

    #[test]
    fn a_bare_script_handles_everything() {
        let s = HandlerSpec::parse("./h.sh arg").unwrap();
        assert_eq!(s.filters, [Filter::All]);
        assert_eq!(s.script, "./h.sh arg");
    }

    #[test]
    fn splits_at_the_first_equals_only() {
        let s = HandlerSpec::parse("user:deploy=FOO=bar ./h.sh x=y").unwrap();
        assert_eq!(s.filters, [Filter::User(Some("deploy".into()))]);
        assert_eq!(s.script, "FOO=bar ./h.sh x=y");
    }

    #[test]
    fn every_filter_form_parses() {
        let s = HandlerSpec::parse(
            "member-join,member-leave,member-failed,member-update,member-reap,user,user:a,query,query:b,*=x",
        )
        .unwrap();
        assert_eq!(
            s.filters,
            [
                Filter::Member(MemberEventKind::Join),
                Filter::Member(MemberEventKind::Leave),
                Filter::Member(MemberEventKind::Failed),
                Filter::Member(MemberEventKind::Update),
                Filter::Member(MemberEventKind::Reap),
                Filter::User(None),
                Filter::User(Some("a".into())),
                Filter::Query(None),
                Filter::Query(Some("b".into())),
                Filter::All,
            ]
        );
        assert_eq!(s.script, "x");
        assert_eq!(HandlerSpec::parse("=x").unwrap().filters, [Filter::All]);
        assert_eq!(
            HandlerSpec::parse("user:=x").unwrap().filters,
            [Filter::User(None)]
        );
    }

    #[test]
    fn unknown_types_are_refused_by_name() {
        let e = HandlerSpec::parse("member-join,member-explode=x").unwrap_err();
        assert_eq!(e, SpecError::UnknownFilter("member-explode".into()));
        assert!(e.to_string().contains("\"member-explode\""), "{e}");
        // A script with an `=` but no filter is read as FILTER=script, as in Serf.
        assert!(HandlerSpec::parse("FOO=bar ./h.sh").is_err());
    }

    #[test]
    fn filters_match_their_events() {
        let s = HandlerSpec::parse("member-join,user:deploy,query:uptime=x").unwrap();
        assert!(s.matches(&member(MemberEventKind::Join)));
        assert!(!s.matches(&member(MemberEventKind::Leave)));
        assert!(s.matches(&user("deploy")));
        assert!(!s.matches(&user("deployx")));
        assert!(s.matches(&query("uptime")));
        assert!(!s.matches(&query("load")));

        let all_user = HandlerSpec::parse("user=x").unwrap();
        assert!(all_user.matches(&user("anything")));
        assert!(!all_user.matches(&query("anything")));
        assert!(!all_user.matches(&member(MemberEventKind::Failed)));

        let all = HandlerSpec::parse("x").unwrap();
        for e in [user("a"), query("b"), member(MemberEventKind::Reap)] {
            assert!(all.matches(&e));
        }
    }
}
