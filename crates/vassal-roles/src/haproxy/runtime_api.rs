//! An async client for HAProxy's runtime API over its stats socket (`stats socket PATH level
//! admin` in the `global` section). One connection per command: HAProxy answers and closes it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::command::Command;
use super::state::{parse_servers_state, parse_sessions, ServerState};

/// How long one command may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Replies larger than this are cut off (a `show stat` of a few thousand servers fits).
const MAX_REPLY: u64 = 16 << 20;

/// Why a runtime-API call failed. Nothing is known to have changed in HAProxy, except for
/// [`ApiError::Timeout`], after which the command may or may not have been applied.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error(
        "cannot connect to HAProxy's admin socket {path}: {source} (is haproxy running with \
         `stats socket {path} level admin` in its global section?)"
    )]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to HAProxy's admin socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("HAProxy's admin socket {path} did not answer `{command}` within {TIMEOUT:?}")]
    Timeout { path: PathBuf, command: String },
    /// HAProxy understood and refused; `message` is its own text.
    #[error("HAProxy refused `{command}`: {message}{hint}")]
    Refused {
        command: String,
        message: String,
        hint: &'static str,
    },
}

/// A client for one HAProxy's admin socket.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    path: PathBuf,
}

impl RuntimeApi {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RuntimeApi { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one command line and returns HAProxy's whole reply.
    pub async fn execute(&self, line: &str) -> Result<String, ApiError> {
        tokio::time::timeout(TIMEOUT, self.exchange(line))
            .await
            .map_err(|_| ApiError::Timeout {
                path: self.path.clone(),
                command: line.to_owned(),
            })?
    }

    async fn exchange(&self, line: &str) -> Result<String, ApiError> {
        let mut s = UnixStream::connect(&self.path)
            .await
            .map_err(|source| ApiError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let io = |source| ApiError::Io {
            path: self.path.clone(),
            source,
        };
        s.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io)?;
        let mut reply = Vec::new();
        s.take(MAX_REPLY)
            .read_to_end(&mut reply)
            .await
            .map_err(io)?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Runs `command` and checks HAProxy's reply.
    pub async fn run(&self, command: &Command) -> Result<(), ApiError> {
        let line = command.to_string();
        let reply = self.execute(&line).await?;
        command
            .check_reply(&reply)
            .map_err(|message| refused(line, message))
    }

    /// `show servers state BACKEND`.
    pub async fn servers_state(&self, backend: &str) -> Result<Vec<ServerState>, ApiError> {
        let line = format!("show servers state {backend}");
        let reply = self.execute(&line).await?;
        parse_servers_state(&reply).map_err(|message| refused(line, message))
    }

    /// `show stat BACKEND 4 -1`: current plus queued sessions per server.
    pub async fn sessions(&self, backend: &str) -> Result<BTreeMap<String, u64>, ApiError> {
        let line = format!("show stat {backend} 4 -1");
        let reply = self.execute(&line).await?;
        parse_sessions(&reply).map_err(|message| refused(line, message))
    }
}

fn refused(command: String, message: String) -> ApiError {
    let hint = if message.contains("dynamic load balancing") {
        " (give the backend `balance roundrobin`, `leastconn`, `first` or `random`)"
    } else if message.contains("Permission denied") {
        " (the stats socket needs `level admin`)"
    } else if message.contains("Can't find backend") || message.contains("No such backend") {
        " (add the backend to haproxy.cfg, or pass -haproxy-backend)"
    } else {
        ""
    };
    ApiError::Refused {
        command,
        message,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_names_the_path_and_the_fix() {
        let api = RuntimeApi::new("/nonexistent/vassal-test/admin.sock");
        let e = api.servers_state("web").await.unwrap_err().to_string();
        assert!(e.contains("/nonexistent/vassal-test/admin.sock"), "{e}");
        assert!(e.contains("level admin"), "{e}");
    }

    #[test]
    fn refusals_carry_haproxys_words_and_a_hint() {
        let e = refused(
            "add server web/a 127.0.0.1:80 check".into(),
            "Backend must use a dynamic load balancing to support dynamic servers.".into(),
        )
        .to_string();
        assert!(e.contains("`add server web/a"), "{e}");
        assert!(e.contains("balance roundrobin"), "{e}");
        let e = refused(
            "show servers state web".into(),
            "Can't find backend.".into(),
        );
        assert!(e.to_string().contains("-haproxy-backend"), "{e}");
    }
}
