//! Reading HAProxy's answers: `show servers state BACKEND` (each server's address and
//! administrative state) and `show stat BACKEND 4 -1` (each server's current sessions).
//! Columns are found by their header names, so added columns in later versions do not matter.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// One server line of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    /// `srv_addr:srv_port`; `None` when HAProxy has no address for it (an unresolved FQDN).
    pub addr: Option<SocketAddr>,
    /// `srv_admin_state`, a bit mask (see the `ADMIN_*` constants).
    pub admin: u32,
    /// `srv_uweight`, the weight set by the user (`set server … weight`), when listed.
    pub weight: Option<u32>,
}

/// Forced into maintenance (`disable server`, `state maint`, or a fresh `add server`).
pub const ADMIN_FMAINT: u32 = 0x01;
/// Maintenance inherited from a tracked server.
pub const ADMIN_IMAINT: u32 = 0x02;
/// Maintenance from the configuration (`disabled`).
pub const ADMIN_CMAINT: u32 = 0x04;
/// Forced into drain (`state drain`).
pub const ADMIN_FDRAIN: u32 = 0x08;
/// Drain inherited from a tracked server.
pub const ADMIN_IDRAIN: u32 = 0x10;
/// Maintenance because its address could not be resolved.
pub const ADMIN_RMAINT: u32 = 0x20;

impl ServerState {
    /// In some maintenance state: takes no traffic.
    pub fn in_maint(&self) -> bool {
        self.admin & (ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_CMAINT | ADMIN_RMAINT) != 0
    }

    /// Draining (and not in maintenance): finishes its sessions, takes no new ones.
    pub fn draining(&self) -> bool {
        !self.in_maint() && self.admin & (ADMIN_FDRAIN | ADMIN_IDRAIN) != 0
    }
}

/// Parses the reply to `show servers state BACKEND` (format version 1). HAProxy's own error
/// text ("Can't find backend.") comes back as `Err`.
pub fn parse_servers_state(reply: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = reply.lines();
    match lines.next().map(str::trim) {
        Some("1") => {}
        _ => return Err(reply.trim().to_owned()),
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or_else(|| format!("no header line in `show servers state` reply: {reply:?}"))?;
    let cols: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("`show servers state` has no {name} column"))
    };
    let (name_i, addr_i, admin_i, port_i) = (
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_admin_state")?,
        col("srv_port")?,
    );
    let weight_i = cols.iter().position(|c| *c == "srv_uweight");
    let mut servers = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| format!("short `show servers state` line: {line:?}"))
        };
        let admin = field(admin_i)?
            .parse()
            .map_err(|_| format!("bad srv_admin_state in {line:?}"))?;
        let addr = match (
            field(addr_i)?.parse::<IpAddr>(),
            field(port_i)?.parse::<u16>(),
        ) {
            (Ok(ip), Ok(port)) => Some(SocketAddr::new(ip, port)),
            _ => None,
        };
        servers.push(ServerState {
            name: field(name_i)?.to_owned(),
            addr,
            admin,
            weight: weight_i.and_then(|i| f.get(i)?.parse().ok()),
        });
    }
    Ok(servers)
}

/// Parses the CSV reply to `show stat BACKEND 4 -1` into each server's current plus queued
/// sessions (`scur + qcur`).
pub fn parse_sessions(reply: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut lines = reply.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| reply.trim().to_owned())?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("`show stat` has no {name} column"))
    };
    let (sv_i, scur_i, qcur_i) = (col("svname")?, col("scur")?, col("qcur")?);
    let mut sessions = BTreeMap::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let (Some(name), Some(scur), Some(qcur)) = (f.get(sv_i), f.get(scur_i), f.get(qcur_i))
        else {
            return Err(format!("short `show stat` line: {line:?}"));
        };
        if matches!(*name, "FRONTEND" | "BACKEND") {
            continue;
        }
        let n = |s: &str| s.parse::<u64>().unwrap_or(0);
        sessions.insert((*name).to_owned(), n(scur) + n(qcur));
    }
    Ok(sessions)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from haproxy 2.6.12: `n1` enabled and UP, `n2` just added (maintenance),
    // `n3` draining, `v6` on an IPv6 address.
    const SERVERS_STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
3 web 1 n1 127.9.9.9 2 0 1 1 0 1 0 2 6 0 0 0 - 28081 - 0 0 - - 0\n\
3 web 2 n2 127.9.9.9 0 1 1 1 0 1 0 0 2 0 0 0 - 28082 - 0 0 - - 0\n\
3 web 3 n3 127.9.9.9 2 8 1 1 0 1 0 2 6 0 0 0 - 28083 - 0 0 - - 0\n\
3 web 4 v6 ::1 0 1 1 1 0 1 0 0 0 0 0 0 - 28084 - 0 0 - - 0\n\n";

    #[test]
    fn servers_state_gives_names_addresses_and_admin_states() {
        let s = parse_servers_state(SERVERS_STATE).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "n1");
        assert_eq!(s[0].addr, Some("127.9.9.9:28081".parse().unwrap()));
        assert!(!s[0].in_maint() && !s[0].draining());
        assert!(s[1].in_maint() && !s[1].draining());
        assert!(!s[2].in_maint() && s[2].draining());
        assert_eq!(s[3].addr, Some("[::1]:28084".parse().unwrap()));
    }

    #[test]
    fn an_empty_backend_has_no_servers() {
        let reply = SERVERS_STATE.lines().take(2).collect::<Vec<_>>().join("\n") + "\n\n";
        assert_eq!(parse_servers_state(&reply).unwrap(), vec![]);
    }

    #[test]
    fn haproxys_refusal_is_the_error() {
        assert_eq!(
            parse_servers_state("Can't find backend.\n\n"),
            Err("Can't find backend.".into())
        );
        assert_eq!(
            parse_sessions("Permission denied\n"),
            Err("Permission denied".into())
        );
    }

    #[test]
    fn sessions_add_current_and_queued() {
        let reply = "# pxname,svname,qcur,qmax,scur,smax,slim,stot\n\
web,n1,0,0,3,9,,100\n\
web,n2,2,2,1,1,,5\n\
web,BACKEND,0,0,4,9,,105\n\n";
        let s = parse_sessions(reply).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s["n1"], 3);
        assert_eq!(s["n2"], 3);
    }
}
