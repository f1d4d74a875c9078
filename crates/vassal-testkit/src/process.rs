//! One spawned agent process: output to a log file in its own temp dir, signalled by PID only,
//! killed and reaped on drop. On a failing test, drop prints the tail of the log.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Set to keep every agent's temp dir (and log) after the test; the path is printed.
pub(crate) const KEEP_LOGS_ENV: &str = "VASSAL_TEST_KEEP_LOGS";

/// How long a graceful stop may take before we SIGKILL. Serf allows 3 s for a leave (§5.6).
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A tool's binary: `$VAR` if set, else the `default` path (where its Debian package puts it).
pub(crate) fn bin_from_env(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

#[derive(Debug)]
pub(crate) struct Proc {
    label: String,
    child: Child,
    exit: Option<ExitStatus>,
    log_path: PathBuf,
    dir: Option<TempDir>,
}

impl Proc {
    /// Spawns `program args…` with stdin closed and stdout+stderr appended to `<tmp>/agent.log`.
    pub(crate) fn spawn(
        label: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vassal-test-{label}-"))
            .tempdir()
            .expect("creating temp dir for agent log");
        let log_path = dir.path().join("agent.log");
        let log = File::create(&log_path).expect("creating agent log");
        let log2 = log.try_clone().expect("cloning log file handle");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} {args:?}: {e}", program.display()));
        Proc {
            label: label.to_string(),
            child,
            exit: None,
            log_path,
            dir: Some(dir),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn dir(&self) -> &Path {
        self.log_path.parent().expect("log has a parent dir")
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("waitpid on agent");
        }
        self.exit
    }

    /// Panics with the log tail if the process has exited.
    #[track_caller]
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!(
                "{} (pid {}) exited unexpectedly with {status}; log tail:\n{}",
                self.label,
                self.pid(),
                self.log_tail(40)
            );
        }
    }

    fn signal(&self, sig: Signal) {
        // Only ever our own child, by its PID, and only while it has not been reaped.
        if self.exit.is_none() {
            let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pid fits in i32"));
            // ESRCH is impossible before reaping; any other error is a harness bug.
            kill(pid, sig).unwrap_or_else(|e| panic!("kill({pid}, {sig}) on {}: {e}", self.label));
        }
    }

    /// SIGKILL and reap. Idempotent.
    pub(crate) fn kill_9(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        self.signal(Signal::SIGKILL);
        let status = self.child.wait().expect("waitpid after SIGKILL");
        self.exit = Some(status);
        status
    }

    /// Waits up to `deadline` for the process to exit on its own; its status, or `None`.
    pub(crate) fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if start.elapsed() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait up to `deadline` for the exit, then SIGKILL: for a server whose
    /// master must stop its own workers (nginx), which SIGKILL would leave behind.
    pub(crate) fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        self.signal(Signal::SIGTERM);
        match self.wait_exit(deadline) {
            Some(status) => status,
            None => self.kill_9(),
        }
    }

    /// SIGINT (graceful leave, §5.6), then wait up to `deadline`; SIGKILL and panic if it
    /// does not exit in time.
    #[track_caller]
    pub(crate) fn interrupt(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            panic!(
                "{} had already exited with {status} before SIGINT; log tail:\n{}",
                self.label,
                self.log_tail(40)
            );
        }
        self.signal(Signal::SIGINT);
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if start.elapsed() > deadline {
                self.kill_9();
                panic!(
                    "{} did not exit within {deadline:?} of SIGINT; killed it. log tail:\n{}",
                    self.label,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_9();
        let keep = std::env::var_os(KEEP_LOGS_ENV).is_some();
        if std::thread::panicking() {
            eprintln!(
                "---- {} (pid {}) log tail, {} ----\n{}\n---- end {} ----",
                self.label,
                self.pid(),
                self.log_path.display(),
                self.log_tail(60),
                self.label
            );
        }
        if keep {
            if let Some(dir) = self.dir.take() {
                eprintln!("{KEEP_LOGS_ENV}: kept {}", dir.keep().display());
            }
        }
    }
}

/// Runs a short-lived command (a `serf` CLI call) with a deadline; returns stdout on exit 0,
/// or an error naming the command, status and stderr. On timeout the command is SIGKILLed by PID.
pub fn run_with_timeout(
    program: &Path,
    args: &[String],
    deadline: Duration,
) -> Result<String, String> {
    let run = run_cli(program, args, &[], deadline);
    match run.code {
        0 => Ok(run.stdout),
        // Not started, killed at the deadline, or by a signal: stderr says which.
        -1 => Err(run.stderr),
        code => Err(format!(
            "`{} {}` exited with {code}\nstdout: {}\nstderr: {}",
            program.display(),
            args.join(" "),
            run.stdout.trim(),
            run.stderr.trim()
        )),
    }
}

/// What a finished CLI call printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliRun {
    /// The exit code; -1 if killed by a signal (or by the deadline).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// stdout then stderr, for comparing what a user sees on a terminal.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a short-lived command with extra environment and a deadline, whatever its exit status.
/// On timeout it is SIGKILLed by PID and reported with code -1 and a note on stderr.
pub fn run_cli(
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    deadline: Duration,
) -> CliRun {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CliRun {
                code: -1,
                stdout: String::new(),
                stderr: format!("spawning {} {args:?}: {e}", program.display()),
            }
        }
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(deadline) {
        Ok(out) => out,
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waiter.join();
            return CliRun {
                code: -1,
                stdout: String::new(),
                stderr: format!(
                    "`{} {}` did not finish within {deadline:?}",
                    program.display(),
                    args.join(" ")
                ),
            };
        }
    };
    let _ = waiter.join();
    match out {
        Ok(out) => CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => CliRun {
            code: -1,
            stdout: String::new(),
            stderr: format!("waiting for {}: {e}", program.display()),
        },
    }
}
