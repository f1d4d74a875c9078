//! The runtime-API commands the sync sends, spelled as HAProxy 2.6's CLI spells them, and how to
//! tell a successful reply from a refusal: HAProxy answers both with plain text on the socket.

use std::fmt;
use std::net::SocketAddr;

/// What to do to one server (HAProxy's management guide, "add server" to "del server").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `add server B/S ADDR check pool-max-conn -1 pool-purge-delay 5s`: a new dynamic server,
    /// in maintenance and with its health check stopped until [`Op::EnableHealth`] and
    /// [`Op::Enable`]. The two pool settings are the defaults a server from the config file
    /// gets; HAProxy 2.6 leaves them out for dynamic servers, which then open a new
    /// connection for every request instead of reusing idle ones (measured: 8 of 8 requests
    /// connected anew, against 1 of 8 with them).
    Add(SocketAddr),
    /// `enable health B/S`: start the health check.
    EnableHealth,
    /// `enable server B/S`: leave maintenance; the server takes traffic.
    Enable,
    /// `set server B/S state ready`: leave drain (or maintenance).
    Ready,
    /// `set server B/S state drain`: no new requests; the ones in flight finish.
    Drain,
    /// `set server B/S state maint`: no traffic at all, no checks.
    Maint,
    /// `shutdown sessions server B/S`: cut every session still on the server.
    ShutdownSessions,
    /// `del server B/S`: remove a server that is in maintenance and has no connections.
    Del,
    /// `set server B/S weight N`: the server's share (`-lb-balance leastload`'s weight from
    /// the member's `load` tag; 1 to 256).
    Weight(u32),
}

/// One runtime-API command on one server of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub backend: String,
    pub server: String,
    pub op: Op,
}

impl Command {
    pub fn new(backend: &str, server: &str, op: Op) -> Self {
        Command {
            backend: backend.to_owned(),
            server: server.to_owned(),
            op,
        }
    }

    /// Whether HAProxy's `reply` to this command says it was done; `Err` carries HAProxy's
    /// own words otherwise ("No such server.", "Only servers in maintenance mode can be
    /// deleted.", …).
    pub fn check_reply(&self, reply: &str) -> Result<(), String> {
        let reply = reply.trim();
        let ok = match self.op {
            Op::Add(_) => reply.contains("New server registered"),
            Op::Del => reply.contains("Server deleted"),
            // The other commands answer an empty line when they succeed.
            _ => reply.is_empty(),
        };
        if ok {
            Ok(())
        } else if reply.is_empty() {
            Err("HAProxy gave an empty reply".to_owned())
        } else {
            Err(reply.to_owned())
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (b, s) = (&self.backend, &self.server);
        match self.op {
            // `[v6]:port` is accepted by HAProxy as well as `v4:port`.
            Op::Add(addr) => write!(
                f,
                "add server {b}/{s} {addr} check pool-max-conn -1 pool-purge-delay 5s"
            ),
            Op::EnableHealth => write!(f, "enable health {b}/{s}"),
            Op::Enable => write!(f, "enable server {b}/{s}"),
            Op::Ready => write!(f, "set server {b}/{s} state ready"),
            Op::Drain => write!(f, "set server {b}/{s} state drain"),
            Op::Maint => write!(f, "set server {b}/{s} state maint"),
            Op::ShutdownSessions => write!(f, "shutdown sessions server {b}/{s}"),
            Op::Del => write!(f, "del server {b}/{s}"),
            Op::Weight(w) => write!(f, "set server {b}/{s} weight {w}"),
        }
    }
}

/// Whether HAProxy accepts `name` as a server name: letters, digits, `.`, `_`, `-` and `:`
/// (HAProxy's `invalid_char`), and not empty.
pub fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(op: Op) -> Command {
        Command::new("web", "n1", op)
    }

    #[test]
    fn commands_are_spelled_as_haproxy_2_6_expects() {
        let v4: SocketAddr = "10.0.0.5:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(
            cmd(Op::Add(v4)).to_string(),
            "add server web/n1 10.0.0.5:80 check pool-max-conn -1 pool-purge-delay 5s"
        );
        assert!(cmd(Op::Add(v6))
            .to_string()
            .starts_with("add server web/n1 [::1]:8080 check"));
        assert_eq!(cmd(Op::EnableHealth).to_string(), "enable health web/n1");
        assert_eq!(cmd(Op::Enable).to_string(), "enable server web/n1");
        assert_eq!(cmd(Op::Ready).to_string(), "set server web/n1 state ready");
        assert_eq!(cmd(Op::Drain).to_string(), "set server web/n1 state drain");
        assert_eq!(cmd(Op::Maint).to_string(), "set server web/n1 state maint");
        assert_eq!(
            cmd(Op::ShutdownSessions).to_string(),
            "shutdown sessions server web/n1"
        );
        assert_eq!(cmd(Op::Del).to_string(), "del server web/n1");
    }

    // Replies captured from haproxy 2.6.12 (Debian bookworm).
    #[test]
    fn replies_are_read_as_haproxy_means_them() {
        let add = cmd(Op::Add("127.0.0.1:80".parse().unwrap()));
        assert_eq!(add.check_reply("New server registered.\n\n"), Ok(()));
        assert_eq!(
            add.check_reply("Already exists a server with the same name in backend.\n\n"),
            Err("Already exists a server with the same name in backend.".into())
        );
        assert_eq!(cmd(Op::Del).check_reply("Server deleted.\n"), Ok(()));
        assert_eq!(
            cmd(Op::Del).check_reply("Only servers in maintenance mode can be deleted.\n"),
            Err("Only servers in maintenance mode can be deleted.".into())
        );
        assert_eq!(cmd(Op::Drain).check_reply("\n"), Ok(()));
        assert_eq!(
            cmd(Op::Maint).check_reply("No such server.\n\n"),
            Err("No such server.".into())
        );
        assert!(cmd(Op::Add("127.0.0.1:80".parse().unwrap()))
            .check_reply("")
            .unwrap_err()
            .contains("empty reply"));
    }

    #[test]
    fn server_names_follow_haproxys_character_rules() {
        assert!(valid_server_name("web-1.example_a:b"));
        assert!(!valid_server_name(""));
        assert!(!valid_server_name("bad!"));
        assert!(!valid_server_name("with space"));
        assert!(!valid_server_name("web/1"));
        assert!(!valid_server_name("wéb"));
    }
}
