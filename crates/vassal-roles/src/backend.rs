//! Which members are web backends, and at what address: the demo's convention, shared by the
//! built-in balancer ([`crate::lb`]) and the HAProxy sync ([`crate::haproxy`]).
//!
//! A member is a backend when its tag `role` is `web`; its web server is at its member address
//! and the port in its tag `http_port`, 80 without one (Apache, in Serf's demo).
//!
//! The address comes from the network (any member, or a forger, can advertise any address), so
//! a [`BackendPolicy`] says which addresses the operator lets the balancer connect to: never a
//! link-local address (169.254.0.0/16 holds cloud metadata services; fe80::/10), an unspecified
//! one (0.0.0.0/8, `::`: Linux connects them to this host), multicast or broadcast; loopback
//! only when the balancer itself listens on loopback (the demo) or the operator names a
//! loopback range with `-lb-backend-cidr`; and, when `-lb-backend-cidr` is given, only inside
//! one of its ranges.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

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

/// The tag a web node keeps fresh with its load: its mean time to serve a request over the
/// last second, in milliseconds (`load=0.12`). `-lb-balance leastload` and the HAProxy
/// sync's weights read it.
pub const LOAD_TAG: &str = "load";
/// The most a `load` tag may say (an hour per request); anything past it, or not a number,
/// is read as no figure.
pub const MAX_LOAD: f64 = 3_600_000.0;

/// The load `m` reports in its `load` tag, if it is a number from 0 to [`MAX_LOAD`] (the tag
/// comes from the network: anything else counts as no figure).
pub fn reported_load(m: &Member) -> Option<f64> {
    let v: f64 = m.tags.get(LOAD_TAG)?.trim().parse().ok()?;
    (v.is_finite() && (0.0..=MAX_LOAD).contains(&v)).then_some(v)
}

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `fd00::/8`). A bare address
/// is a /32 (/128). Bits past the prefix must be zero, so a typo like `10.0.0.1/8` is refused
/// rather than read as something the operator did not mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_bits(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_bits(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    /// Whether the whole range is loopback (inside 127.0.0.0/8, or `::1`): naming one allows
    /// loopback backends. A wider range such as 0.0.0.0/0 does not.
    fn is_loopback_range(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => self.prefix >= 8 && a.is_loopback(),
            IpAddr::V6(a) => self.prefix == 128 && a.is_loopback(),
        }
    }
}

/// The top `prefix` bits of `x` (all of them for a prefix at or past the width).
fn prefix_bits<T>(x: T, prefix: u8) -> T
where
    T: Copy + std::ops::Shr<u32, Output = T> + std::ops::Shl<u32, Output = T> + Default,
{
    let width = (std::mem::size_of::<T>() * 8) as u32;
    let keep = u32::from(prefix).min(width);
    if keep == 0 {
        T::default()
    } else {
        (x >> (width - keep)) << (width - keep)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address; use e.g. 10.0.0.0/8"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= width => n,
                _ => return Err(format!("prefix /{p} is not 0 to {width}")),
            },
        };
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4(prefix_bits(u32::from(a), prefix).into()),
            IpAddr::V6(a) => IpAddr::V6(prefix_bits(u128::from(a), prefix).into()),
        };
        if masked != addr {
            return Err(format!(
                "{addr} has bits set past the /{prefix} prefix; did you mean {masked}/{prefix}?"
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which backend addresses the balancer (and the HAProxy sync) may connect to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendPolicy {
    /// Loopback backends are allowed: the balancer itself listens on loopback, so its clients
    /// are on this host already (the demo). Otherwise a member advertising 127.0.0.1 could
    /// point outside clients at this host's private services.
    pub allow_loopback: bool,
    /// `-lb-backend-cidr`: when not empty, only backends inside one of these ranges. A range
    /// holding loopback addresses allows them whatever `allow_loopback` says.
    pub cidrs: Vec<Cidr>,
}

impl BackendPolicy {
    /// The policy for a balancer listening on `listen`: loopback allowed only if `listen` is a
    /// loopback address.
    pub fn for_listener(listen: IpAddr, cidrs: Vec<Cidr>) -> Self {
        BackendPolicy {
            allow_loopback: listen.to_canonical().is_loopback(),
            cidrs,
        }
    }

    /// Why `ip` may not be a backend, if it may not; the reason ends with what to do.
    pub fn refuse(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        let never = match ip {
            IpAddr::V4(v4) => {
                if v4.is_link_local() {
                    Some("link-local (169.254.0.0/16, where cloud metadata services live)")
                } else if v4.octets()[0] == 0 {
                    Some("unspecified (0.0.0.0/8 reaches this host)")
                } else if v4.is_multicast() {
                    Some("multicast")
                } else if v4.is_broadcast() {
                    Some("broadcast")
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    Some("link-local (fe80::/10)")
                } else if v6.is_unspecified() {
                    Some("unspecified (:: reaches this host)")
                } else if v6.is_multicast() {
                    Some("multicast")
                } else {
                    None
                }
            }
        };
        if let Some(why) = never {
            return Some(format!(
                "{ip} is {why}, never a backend (the node must advertise a routable address: \
                 pass -advertise on it)"
            ));
        }
        let named = self.cidrs.iter().any(|c| c.contains(ip));
        let loopback_named = self
            .cidrs
            .iter()
            .any(|c| c.is_loopback_range() && c.contains(ip));
        if ip.is_loopback() && !self.allow_loopback && !loopback_named {
            return Some(format!(
                "{ip} is loopback and this balancer does not listen on loopback (loopback \
                 backends would expose this host's own services; if they are meant, pass \
                 -lb-backend-cidr 127.0.0.0/8 or a narrower loopback range)"
            ));
        }
        if !self.cidrs.is_empty() && !named {
            let list: Vec<String> = self.cidrs.iter().map(Cidr::to_string).collect();
            return Some(format!(
                "{ip} is outside -lb-backend-cidr {} (pass -lb-backend-cidr with a range \
                 holding it, or have the node advertise an address inside one)",
                list.join(", ")
            ));
        }
        None
    }
}

/// Remembers what was already logged, so a refused backend is logged once per member and
/// address rather than on every event and resync. Forgets everything past
/// [`RefusedOnce::LIMIT`] entries, so that a flood of made-up members cannot grow it without
/// bound (they are then logged again, once each).
#[derive(Debug, Default)]
pub struct RefusedOnce {
    seen: BTreeSet<String>,
}

impl RefusedOnce {
    /// Distinct refusals remembered.
    pub const LIMIT: usize = 4096;

    /// Whether `why` (which names the member and the address) is new.
    pub fn first(&mut self, why: &str) -> bool {
        if self.seen.contains(why) {
            return false;
        }
        if self.seen.len() >= Self::LIMIT {
            self.seen.clear();
        }
        self.seen.insert(why.to_owned());
        true
    }
}

/// Where `m`'s web server is: `Ok(None)` if `m` is not a web member, `Err` saying what to fix
/// if its `http_port` tag is not a port or `policy` refuses its address.
pub fn web_backend(m: &Member, policy: &BackendPolicy) -> Result<Option<SocketAddr>, String> {
    if !is_web(m) {
        return Ok(None);
    }
    if let Some(why) = policy.refuse(m.addr) {
        return Err(format!("member {} refused as a backend: {why}", m.name));
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

    /// A balancer listening on loopback, as in the demo.
    const LOOPBACK_LB: BackendPolicy = BackendPolicy {
        allow_loopback: true,
        cidrs: Vec::new(),
    };

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

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
        let b = |tags: &[(&str, &str)]| web_backend(&member(tags), &LOOPBACK_LB);
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
            let err = web_backend(
                &member(&[("role", "web"), ("http_port", bad)]),
                &LOOPBACK_LB,
            )
            .unwrap_err();
            assert!(
                err.contains(&format!("http_port={bad:?}")) && err.contains("fix the tag"),
                "{err}"
            );
        }
    }

    #[test]
    fn cidrs_parse_strictly_and_match_by_prefix() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert_eq!(c.to_string(), "10.1.0.0/16");
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.3".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        for (bad, says) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "prefix /33"),
            ("10.0.0.0/x", "prefix /x"),
            ("web-1/24", "not an IP address"),
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn link_local_unspecified_multicast_and_broadcast_are_never_backends() {
        // Issue 11: a joined node must not point the balancer at a metadata service.
        let open = BackendPolicy {
            allow_loopback: true,
            cidrs: cidrs(&["0.0.0.0/0", "::/0"]),
        };
        for ip in [
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:169.254.169.254",
        ] {
            let why = open
                .refuse(ip.parse().unwrap())
                .unwrap_or_else(|| panic!("{ip} accepted"));
            assert!(
                why.contains("never a backend") && why.contains("-advertise"),
                "{why}"
            );
        }
        assert_eq!(open.refuse("10.0.0.5".parse().unwrap()), None);
        assert_eq!(open.refuse("2001:db8::5".parse().unwrap()), None);
    }

    #[test]
    fn loopback_backends_only_for_a_loopback_balancer_or_a_named_loopback_range() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let public = BackendPolicy::for_listener("0.0.0.0".parse().unwrap(), Vec::new());
        let why = public.refuse(lo).unwrap();
        assert!(
            why.contains("loopback") && why.contains("-lb-backend-cidr"),
            "{why}"
        );
        assert!(public.refuse("::1".parse().unwrap()).is_some());
        assert!(public.refuse("::ffff:127.0.0.1".parse().unwrap()).is_some());
        assert_eq!(public.refuse("192.0.2.7".parse().unwrap()), None);
        let demo = BackendPolicy::for_listener("127.0.0.1".parse().unwrap(), Vec::new());
        assert_eq!(demo.refuse(lo), None);
        // Naming loopback allows it; a range merely containing it (0.0.0.0/0) does not.
        let named =
            BackendPolicy::for_listener("0.0.0.0".parse().unwrap(), cidrs(&["127.0.0.0/8"]));
        assert_eq!(named.refuse(lo), None);
        let wide = BackendPolicy::for_listener("0.0.0.0".parse().unwrap(), cidrs(&["0.0.0.0/0"]));
        assert!(wide.refuse(lo).is_some());
    }

    #[test]
    fn lb_backend_cidr_narrows_to_its_ranges() {
        let p = BackendPolicy::for_listener(
            "127.0.0.1".parse().unwrap(),
            cidrs(&["127.0.0.2/32", "10.0.0.0/8"]),
        );
        assert_eq!(p.refuse("127.0.0.2".parse().unwrap()), None);
        assert_eq!(p.refuse("10.9.8.7".parse().unwrap()), None);
        let why = p.refuse("127.0.0.3".parse().unwrap()).unwrap();
        assert!(
            why.contains("outside -lb-backend-cidr 127.0.0.2/32, 10.0.0.0/8"),
            "{why}"
        );
        let m = member(&[("role", "web"), ("http_port", "8000")]);
        let mut outside = m.clone();
        outside.addr = "127.0.0.3".parse().unwrap();
        assert_eq!(
            web_backend(&m, &p),
            Ok(Some("127.0.0.2:8000".parse().unwrap()))
        );
        let e = web_backend(&outside, &p).unwrap_err();
        assert!(
            e.starts_with("member w refused as a backend: 127.0.0.3"),
            "{e}"
        );
        // Not a web member: no opinion about its address.
        let mut lb = outside;
        lb.tags.insert("role".into(), "lb".into());
        assert_eq!(web_backend(&lb, &p), Ok(None));
    }

    #[test]
    fn a_refusal_is_reported_once_and_the_memory_is_bounded() {
        let mut once = RefusedOnce::default();
        assert!(once.first("member a refused: 169.254.0.1"));
        assert!(!once.first("member a refused: 169.254.0.1"));
        assert!(once.first("member a refused: 169.254.0.2"));
        for i in 0..RefusedOnce::LIMIT * 2 {
            once.first(&format!("m{i}"));
        }
        assert!(once.seen.len() <= RefusedOnce::LIMIT);
    }
}
