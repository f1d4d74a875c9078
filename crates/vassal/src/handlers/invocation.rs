//! What a handler run gets: environment variables and stdin, built from an event as pure data
//! (spec §5.2; STYLE item 5).

use std::collections::BTreeMap;
use std::net::IpAddr;

use vassal_serf::{Event, MemberEvent};

/// The local node, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelfInfo {
    pub name: String,
    pub tags: BTreeMap<String, String>,
}

/// One handler run's input; the agent's own environment is inherited on top of `env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

/// Builds the environment and stdin for `event` on node `me` (Serf's `invokeEventScript`).
pub fn invocation(event: &Event, me: &SelfInfo) -> Invocation {
    let mut env = vec![
        ("SERF_EVENT".to_owned(), event.kind().to_owned()),
        ("SERF_SELF_NAME".to_owned(), me.name.clone()),
        (
            "SERF_SELF_ROLE".to_owned(),
            me.tags.get("role").cloned().unwrap_or_default(),
        ),
    ];
    for (k, v) in &me.tags {
        env.push((format!("SERF_TAG_{}", tag_env_name(k)), v.clone()));
    }
    let stdin = match event {
        Event::Member(m) => member_stdin(m),
        Event::User(u) => {
            env.push(("SERF_USER_EVENT".to_owned(), u.name.clone()));
            env.push(("SERF_USER_LTIME".to_owned(), u.ltime.to_string()));
            payload_stdin(&u.payload)
        }
        Event::Query(q) => {
            env.push(("SERF_QUERY_NAME".to_owned(), q.name.clone()));
            env.push(("SERF_QUERY_LTIME".to_owned(), q.ltime.to_string()));
            payload_stdin(&q.payload)
        }
    };
    Invocation { env, stdin }
}

/// Upper-cased, then every char outside `[A-Z0-9_]` becomes `_`.
fn tag_env_name(tag: &str) -> String {
    tag.to_uppercase()
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// TAB → `\t`, newline → `\n` (two characters each).
fn clean(s: &str) -> String {
    s.replace('\t', "\\t").replace('\n', "\\n")
}

/// Go's `net.IP.String()`: IPv4-mapped IPv6 prints as a dotted quad.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn member_stdin(e: &MemberEvent) -> Vec<u8> {
    let mut out = String::new();
    for m in &e.members {
        let tags = m
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let role = m.tags.get("role").map(String::as_str).unwrap_or("");
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            clean(&m.name),
            ip_text(m.addr),
            clean(role),
            clean(&tags)
        ));
    }
    out.into_bytes()
}

fn payload_stdin(payload: &[u8]) -> Vec<u8> {
    let mut v = payload.to_vec();
    if v.last() != Some(&b'\n') {
        v.push(b'\n');
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use vassal_serf::{Member, MemberEventKind, MemberStatus, Query, UserEvent};

    fn me() -> SelfInfo {
        SelfInfo {
            name: "web-1".into(),
            tags: [("role", "web"), ("dc-name", "eu"), ("ver.2", "x")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    fn member(name: &str, addr: IpAddr, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.into(),
            addr,
            port: 7946,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status: MemberStatus::Alive,
            vsn: Default::default(),
        }
    }

    fn env(inv: &Invocation) -> Vec<(&str, &str)> {
        inv.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn member_event_env_and_one_stdin_line_per_member() {
        let e = Event::Member(MemberEvent {
            kind: MemberEventKind::Join,
            members: vec![
                member(
                    "a",
                    Ipv4Addr::new(127, 0, 0, 2).into(),
                    &[("role", "lb"), ("dc", "eu")],
                ),
                member("b", Ipv4Addr::new(10, 0, 0, 1).into(), &[]),
            ],
        });
        let inv = invocation(&e, &me());
        assert_eq!(
            env(&inv),
            [
                ("SERF_EVENT", "member-join"),
                ("SERF_SELF_NAME", "web-1"),
                ("SERF_SELF_ROLE", "web"),
                ("SERF_TAG_DC_NAME", "eu"),
                ("SERF_TAG_ROLE", "web"),
                ("SERF_TAG_VER_2", "x"),
            ]
        );
        assert_eq!(
            String::from_utf8(inv.stdin).unwrap(),
            "a\t127.0.0.2\tlb\tdc=eu,role=lb\nb\t10.0.0.1\t\t\n"
        );
    }

    #[test]
    fn tabs_and_newlines_are_escaped_in_name_role_and_tags() {
        let e = Event::Member(MemberEvent {
            kind: MemberEventKind::Update,
            members: vec![member(
                "n\t1\n",
                Ipv6Addr::LOCALHOST.into(),
                &[("role", "a\tb"), ("k\n", "v\tw")],
            )],
        });
        let inv = invocation(&e, &SelfInfo::default());
        assert_eq!(
            env(&inv),
            [
                ("SERF_EVENT", "member-update"),
                ("SERF_SELF_NAME", ""),
                ("SERF_SELF_ROLE", ""),
            ]
        );
        assert_eq!(
            String::from_utf8(inv.stdin).unwrap(),
            "n\\t1\\n\t::1\ta\\tb\tk\\n=v\\tw,role=a\\tb\n"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_print_as_dotted_quads() {
        let mapped = Ipv4Addr::new(127, 0, 0, 9).to_ipv6_mapped();
        let e = Event::Member(MemberEvent {
            kind: MemberEventKind::Failed,
            members: vec![member("m", mapped.into(), &[])],
        });
        assert_eq!(invocation(&e, &me()).stdin, b"m\t127.0.0.9\t\t\n");
    }

    #[test]
    fn tag_names_are_upper_cased_and_sanitised() {
        assert_eq!(tag_env_name("role"), "ROLE");
        assert_eq!(tag_env_name("a-b.c d_9"), "A_B_C_D_9");
        assert_eq!(tag_env_name("é"), "_");
    }

    #[test]
    fn user_event_env_and_payload_newline_rule() {
        let ev = |payload: &[u8]| {
            Event::User(UserEvent {
                ltime: 42,
                name: "deploy".into(),
                payload: payload.to_vec(),
                cc: true,
            })
        };
        let inv = invocation(&ev(b"v1"), &me());
        assert_eq!(inv.stdin, b"v1\n");
        let env = env(&inv);
        assert_eq!(env[0], ("SERF_EVENT", "user"));
        assert_eq!(
            env[env.len() - 2..],
            [("SERF_USER_EVENT", "deploy"), ("SERF_USER_LTIME", "42")]
        );
        assert_eq!(invocation(&ev(b"v1\n"), &me()).stdin, b"v1\n");
        assert_eq!(invocation(&ev(b""), &me()).stdin, b"\n");
        assert_eq!(invocation(&ev(b"a\n\n"), &me()).stdin, b"a\n\n");
    }

    #[test]
    fn query_env_and_stdin() {
        let q = Event::Query(Query {
            ltime: 7,
            id: 1,
            name: "uptime".into(),
            payload: b"x".to_vec(),
            source_node: "a".into(),
            deadline: std::time::Instant::now(),
        });
        let inv = invocation(&q, &SelfInfo::default());
        assert_eq!(
            env(&inv),
            [
                ("SERF_EVENT", "query"),
                ("SERF_SELF_NAME", ""),
                ("SERF_SELF_ROLE", ""),
                ("SERF_QUERY_NAME", "uptime"),
                ("SERF_QUERY_LTIME", "7"),
            ]
        );
        assert_eq!(inv.stdin, b"x\n");
    }
}
