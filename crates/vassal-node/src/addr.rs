//! Serf-style peer addresses: `host[:port]` (IPv6 in brackets, or bare), the port defaulting to
//! 7946, resolved through DNS when not a literal IP.

use std::net::{IpAddr, SocketAddr};

/// Serf's default gossip port.
pub const DEFAULT_PORT: u16 = 7946;

/// Splits `host[:port]` (IPv6 in brackets, or bare) and fills in `default_port`.
pub fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in address {s:?}"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected {after:?} after address in {s:?}")),
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').expect("one colon");
        (h, Some(p))
    } else {
        (s, None)
    };
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse()
            .map_err(|_| format!("invalid port {p:?} in address {s:?}"))?,
    };
    Ok((host.to_owned(), port))
}

/// Resolves `host[:port]` to every address it names.
pub async fn resolve(s: &str, default_port: u16) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = split_host_port(s, default_port)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("Failed to resolve {s}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("Failed to resolve {s}: no addresses"));
    }
    Ok(addrs)
}

/// Resolves every entry of a join list; the addresses found, and one error per entry that
/// could not be resolved.
pub async fn resolve_all(list: &[String]) -> (Vec<SocketAddr>, Vec<String>) {
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for s in list {
        match resolve(s, DEFAULT_PORT).await {
            Ok(a) => addrs.extend(a),
            Err(e) => errors.push(e),
        }
    }
    (addrs, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_splitting_defaults_the_port() {
        let s = |a| split_host_port(a, 7946).unwrap();
        assert_eq!(s("127.0.0.1"), ("127.0.0.1".into(), 7946));
        assert_eq!(s("127.0.0.1:8000"), ("127.0.0.1".into(), 8000));
        assert_eq!(s("[::1]:8000"), ("::1".into(), 8000));
        assert_eq!(s("::1"), ("::1".into(), 7946));
        assert!(split_host_port("h:port", 7946).is_err());
    }
}
