//! A real nginx (the Debian package's `/usr/sbin/nginx`) for one test: its own master process
//! in the foreground (`daemon off`), its config, pid file, logs and temp paths in a temp dir,
//! listening on one loopback address. Never the system's /etc/nginx or its service.
//!
//! A reload (`nginx -p DIR -c DIR/nginx.conf -s reload`, [`Nginx::reload_command`]) keeps the
//! master we spawned and replaces its workers; drop stops the master with SIGTERM (it stops its
//! workers), by PID, and SIGKILLs it only if it does not exit.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{bin_from_env, Proc};
use crate::wait::wait_until;

/// The nginx binary the tests run: `$NGINX_BIN` if set, else Debian's.
pub fn nginx_bin() -> PathBuf {
    bin_from_env("NGINX_BIN", "/usr/sbin/nginx")
}

/// A running nginx master. Dropping it stops it and removes its temp dir.
#[derive(Debug)]
pub struct Nginx {
    proc: Proc,
    dir: TempDir,
    listen: SocketAddr,
}

impl Nginx {
    /// A temp dir for [`Nginx::start_in`], for tests that lay out files (an included upstream
    /// file) before starting.
    pub fn temp_dir(label: &str) -> TempDir {
        tempfile::Builder::new()
            .prefix(&format!("vassal-test-nginx-{label}-"))
            .tempdir()
            .expect("creating the nginx temp dir")
    }

    /// Starts nginx in `dir` with `http_body` inside its `http { }` block (after the temp
    /// paths and logs, which stay in `dir`), and waits until `listen` accepts connections.
    /// `http_body` must `listen` on `listen` (127.0.0.0/8 only).
    #[track_caller]
    pub fn start_in(label: &str, dir: TempDir, listen: SocketAddr, http_body: &str) -> Nginx {
        assert!(
            listen.ip().is_loopback(),
            "{listen}: tests listen on 127.0.0.0/8 only"
        );
        let bin = nginx_bin();
        assert!(
            bin.exists(),
            "{} not found: run scripts/setup (installs the Debian nginx package)",
            bin.display()
        );
        let d = dir.path();
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(d.join("tmp").join(sub)).expect("creating nginx temp paths");
        }
        // A root master would run its workers as `nobody`, who cannot enter our 0700 temp
        // dir; a non-root master ignores `user`, so it is only written for root.
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let conf = format!(
            "{user}worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log notice;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/tmp/body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             {http_body}\n\
             }}\n",
            user = if root { "user root;\n" } else { "" },
            d = d.display(),
        );
        std::fs::write(d.join("nginx.conf"), conf).expect("writing nginx.conf");
        let mut args = Self::base_args(d);
        args.extend(["-g".to_owned(), "daemon off;".to_owned()]);
        let proc = Proc::spawn(&format!("nginx-{label}"), &bin, &args, &[]);
        let mut n = Nginx { proc, dir, listen };
        wait_until(
            Duration::from_secs(10),
            &format!("nginx to accept connections on {listen}"),
            || {
                n.assert_running();
                TcpStream::connect_timeout(&listen, Duration::from_secs(1))
                    .map(|_| ())
                    .map_err(|e| format!("{e}; error.log:\n{}", n.error_log()))
            },
        );
        n
    }

    /// `-p DIR -c DIR/nginx.conf -e DIR/error.log`: every invocation's first arguments.
    fn base_args(d: &Path) -> Vec<String> {
        vec![
            "-p".to_owned(),
            d.display().to_string(),
            "-c".to_owned(),
            d.join("nginx.conf").display().to_string(),
            "-e".to_owned(),
            d.join("error.log").display().to_string(),
        ]
    }

    /// The shell command that reloads this nginx (a SIGHUP to the master, via its pid file).
    pub fn reload_command(&self) -> String {
        let mut parts = vec![nginx_bin().display().to_string()];
        parts.extend(Self::base_args(self.dir.path()));
        parts.extend(["-s".to_owned(), "reload".to_owned()]);
        parts.join(" ")
    }

    /// The master's PID: the process we spawned.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The PID in nginx's pid file (the master's, unless it was restarted).
    pub fn pidfile_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// How many reloads the master has begun (`reconfiguring` in its error log).
    pub fn reloads(&self) -> usize {
        self.error_log().matches("reconfiguring").count()
    }

    /// Panics with the error log if the master has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if self.proc.try_exit().is_some() {
            panic!(
                "nginx exited; error.log:\n{}\noutput:\n{}",
                self.error_log(),
                self.proc.log()
            );
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(5));
    }
}
