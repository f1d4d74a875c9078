//! A real HAProxy (the Debian package's `/usr/sbin/haproxy`) for one test: its own config and
//! admin socket in a temp dir, in the foreground (`-db`), killed by PID on drop. Never the
//! system's /etc/haproxy or its service.
//!
//! Reloads in the Debian init script's way (`haproxy -D -p PIDFILE -sf OLD`) replace the
//! process with a daemon we did not spawn; [`Haproxy::pidfile`] holds its PID (the first
//! process's PID is written there at start), and drop kills that one too, by PID, after
//! checking that its command line names this pidfile.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{bin_from_env, Proc};
use crate::wait::wait_until;

/// The HAProxy binary the tests run: `$HAPROXY_BIN` if set, else Debian's.
pub fn haproxy_bin() -> PathBuf {
    bin_from_env("HAPROXY_BIN", "/usr/sbin/haproxy")
}

/// One server line of `show servers state`, as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyServer {
    pub name: String,
    /// `ip:port`
    pub addr: String,
    /// `srv_admin_state`: 0 ready, bit 0x01 maintenance, bit 0x08 drain.
    pub admin: u32,
}

/// A running HAProxy. Dropping it kills it (SIGKILL, by PID) and removes its temp dir.
#[derive(Debug)]
pub struct Haproxy {
    proc: Proc,
    dir: TempDir,
    socket: PathBuf,
    config: PathBuf,
    pidfile: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy with `global` holding only an admin-level stats socket, followed by
    /// `sections` (defaults, frontends, backends), and waits until the socket answers.
    #[track_caller]
    pub fn start(label: &str, sections: &str) -> Haproxy {
        Self::start_with(label, |socket| {
            format!(
                "global\n    stats socket {} mode 600 level admin\n    stats timeout 30s\n\n{sections}",
                socket.display()
            )
        })
    }

    /// Starts HAProxy with the whole config from `config(socket_path)`; the config must
    /// declare `stats socket <socket_path> level admin` so that readiness can be checked.
    #[track_caller]
    pub fn start_with(label: &str, config: impl FnOnce(&Path) -> String) -> Haproxy {
        Self::start_in(
            label,
            Self::temp_dir(label),
            Path::new("haproxy.cfg"),
            config,
        )
    }

    /// A temp dir for [`Haproxy::start_in`], for tests that lay out files before starting.
    pub fn temp_dir(label: &str) -> TempDir {
        tempfile::Builder::new()
            .prefix(&format!("vassal-test-haproxy-{label}-"))
            .tempdir()
            .expect("creating HAProxy temp dir")
    }

    /// Like [`Haproxy::start_with`], with the config at `dir/config_rel` (which may be in a
    /// subdirectory the test bind-mounts elsewhere) and the socket at `dir/admin.sock`.
    #[track_caller]
    pub fn start_in(
        label: &str,
        dir: TempDir,
        config_rel: &Path,
        config: impl FnOnce(&Path) -> String,
    ) -> Haproxy {
        let socket = dir.path().join("admin.sock");
        let config_path = dir.path().join(config_rel);
        if let Some(parent) = config_path.parent() {
            std::fs::create_dir_all(parent).expect("creating the config's directory");
        }
        std::fs::write(&config_path, config(&socket)).expect("writing haproxy.cfg");
        Self::spawn(label, dir, socket, config_path)
    }

    #[track_caller]
    fn spawn(label: &str, dir: TempDir, socket: PathBuf, config: PathBuf) -> Haproxy {
        let bin = haproxy_bin();
        assert!(
            bin.exists(),
            "{} not found: run scripts/setup (installs the Debian haproxy package)",
            bin.display()
        );
        let args = vec![
            "-db".to_owned(),
            "-f".to_owned(),
            config.display().to_string(),
        ];
        let proc = Proc::spawn(&format!("haproxy-{label}"), &bin, &args, &[]);
        let pidfile = dir.path().join("haproxy.pid");
        std::fs::write(&pidfile, format!("{}\n", proc.pid())).expect("writing the pidfile");
        let mut h = Haproxy {
            proc,
            dir,
            socket,
            config,
            pidfile,
        };
        wait_until(
            Duration::from_secs(10),
            "HAProxy's admin socket to answer `show info`",
            || {
                h.proc.assert_running();
                h.cmd("show info").map(|_| ())
            },
        );
        h
    }

    /// The PID of the process we spawned (see [`Haproxy::current_pid`] after reloads).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Where the serving process's PID is kept: a reload with `-p` rewrites it.
    pub fn pidfile(&self) -> &Path {
        &self.pidfile
    }

    /// The PID in [`Haproxy::pidfile`].
    pub fn current_pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The temp dir holding the config, the socket and anything else the test puts there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    #[track_caller]
    pub fn assert_running(&mut self) {
        self.proc.assert_running()
    }

    /// Whether the process we started has exited (after a reload's soft stop, for example).
    pub fn has_exited(&mut self) -> bool {
        self.proc.try_exit().is_some()
    }

    /// One runtime-API command over the admin socket; HAProxy's reply.
    pub fn cmd(&self, line: &str) -> Result<String, String> {
        admin_command(&self.socket, line)
    }

    /// `show servers state BACKEND`, parsed.
    pub fn servers(&self, backend: &str) -> Result<Vec<HaproxyServer>, String> {
        parse_servers(&self.cmd(&format!("show servers state {backend}"))?)
    }
}

/// One runtime-API command to the admin socket at `socket`; HAProxy's reply.
pub fn admin_command(socket: &Path, line: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("sending {line:?}: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("reading the reply to {line:?}: {e}"))?;
    Ok(reply)
}

fn parse_servers(reply: &str) -> Result<Vec<HaproxyServer>, String> {
    let mut lines = reply.lines();
    if lines.next() != Some("1") {
        return Err(format!("unexpected `show servers state` reply: {reply:?}"));
    }
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or_else(|| format!("no header in {reply:?}"))?
        .split_whitespace()
        .collect();
    let col = |n: &str| header.iter().position(|c| *c == n).expect("known column");
    let (name, addr, admin, port) = (
        col("srv_name"),
        col("srv_addr"),
        col("srv_admin_state"),
        col("srv_port"),
    );
    Ok(lines
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            HaproxyServer {
                name: f[name].to_owned(),
                addr: format!("{}:{}", f[addr], f[port]),
                admin: f[admin].parse().unwrap_or(u32::MAX),
            }
        })
        .collect())
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // A daemon started by a reload: ours only if its command line names our pidfile.
        let Some(pid) = self.current_pid() else {
            return;
        };
        if pid == self.proc.pid() {
            return; // the child itself; Proc's drop kills and reaps it
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = self.pidfile.display().to_string();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}
