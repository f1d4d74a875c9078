//! Which members are web backends, and at what address: the demo's convention, shared by the
//! built-in balancer ([`crate::lb`]) and the HAProxy sync (`vassal-haproxy`).
//!
//! A member is a backend when its tag `role` is `web`; its web server is at its member address
//! and the port in its tag `http_port`, 80 without one (Apache, in Serf's demo).

use std::net::SocketAddr;

use vassal_serf::Member;

/// The tag naming a member's role, and the values the roles look for.
pub const ROLE_TAG: &str = "role";
pub const WEB_ROLE: &str = "web";
pub const LB_ROLE: &str = "lb";
/// The tag a web node advertises its HTTP port in.
pub const HTTP_PORT_TAG: &str = "http_port";
pub const DEFAULT_HTTP_PORT: u16 = 80;

/// Whether `m` is tagged `role=web`.
pub fn is_web(m: &Member) -> bool {
    m.tags.get(ROLE_TAG).map(String::as_str) == Some(WEB_ROLE)
}

/// Where `m`'s web server is: `Ok(None)` if `m` is not a web member, `Err` saying what to fix
/// if its `http_port` tag is not a port.
pub fn web_backend(m: &Member) -> Result<Option<SocketAddr>, String> {
    if !is_web(m) {
        return Ok(None);
    }
    let port = match m.tags.get(HTTP_PORT_TAG) {
        None => DEFAULT_HTTP_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(format!(
                    "member {}: tag {HTTP_PORT_TAG}={p:?} is not a port (1-65535); fix the tag \
                     on that node",
                    m.name
                ))
            }
        },
    };
    Ok(Some(SocketAddr::new(m.addr, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vassal_serf::MemberStatus;

    fn member(tags: &[(&str, &str)]) -> Member {
        Member {
            name: "w".into(),
            addr: [127, 0, 0, 2].into(),
            port: 7946,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            status: MemberStatus::Alive,
            vsn: Default::default(),
        }
    }

    #[test]
    fn backends_are_members_tagged_role_web_at_their_http_port_or_80() {
        let b = |tags: &[(&str, &str)]| web_backend(&member(tags));
        assert_eq!(
            b(&[("role", "web"), ("http_port", "8001")]),
            Ok(Some("127.0.0.2:8001".parse().unwrap()))
        );
        assert_eq!(
            b(&[("role", "web")]),
            Ok(Some("127.0.0.2:80".parse().unwrap()))
        );
        assert_eq!(b(&[("role", "lb"), ("http_port", "8001")]), Ok(None));
        assert_eq!(b(&[]), Ok(None));
    }

    #[test]
    fn a_bad_http_port_is_an_error_naming_the_tag() {
        for bad in ["eighty", "0", "70000", ""] {
            let err = web_backend(&member(&[("role", "web"), ("http_port", bad)])).unwrap_err();
            assert!(
                err.contains(&format!("http_port={bad:?}")) && err.contains("fix the tag"),
                "{err}"
            );
        }
    }
}
