//! Running handlers: the only code here that starts a process (STYLE item 5). Handlers run one
//! at a time, in event order, on their own task, so a slow script delays later handlers but
//! never the node's driver (spec §5.1).
//!
//! Three bounds keep one bad script from stopping the handlers for good (issue 11):
//! - a run is killed, with its whole process group, after `-handler-timeout`
//!   ([`DEFAULT_TIMEOUT`]); the next handler then runs;
//! - once the script has exited, its output is read for at most [`OUTPUT_GRACE`] more, so a
//!   background child left holding the pipe (`sleep 1000 &`) does not hold up later handlers
//!   (the child is left running: a script may mean to start something; only its output is no
//!   longer read, and writing to it then fails with EPIPE);
//! - at most [`QUEUE_LIMIT`] events wait for their handlers; past that the oldest is dropped,
//!   counted, and a warning logged at most once a minute.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};
use vassal_node::Throttle;

use vassal_serf::Event;

use super::invocation::{invocation, Invocation, SelfInfo};
use super::spec::HandlerSpec;

/// Only the last this-many bytes of a run's stdout and stderr are kept (Go Serf keeps 8 KiB
/// of a query answer's output too).
pub const OUTPUT_LIMIT: usize = 8 * 1024;
/// A run taking longer than this is logged as slow.
pub const SLOW: Duration = Duration::from_secs(1);
/// A run still going after this is killed with its process group (`-handler-timeout`,
/// `handler_timeout`; 0 for no limit).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long output is still read after the script has exited: long enough for what it wrote
/// just before exiting, short enough that a background child holding the pipe is not waited
/// for.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// Events waiting for their handlers at most; past this the oldest waiting one is dropped (a
/// stale event is the least useful: a query's asker has likely given up on it, and a member's
/// newer state is queued behind it).
pub const QUEUE_LIMIT: usize = 1024;
/// How often the queue-full warning may be logged.
const QUEUE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    /// stdout and stderr interleaved, the last [`OUTPUT_LIMIT`] bytes only.
    pub output: Vec<u8>,
    /// How many bytes the script wrote in all.
    pub total: usize,
    /// The script's process ID, which is also its process group's.
    pub pid: Option<u32>,
    /// It ran past its timeout and was killed with its process group.
    pub timed_out: bool,
    /// It exited, but something it started still held its output after [`OUTPUT_GRACE`].
    pub output_abandoned: bool,
}

impl Output {
    pub fn truncated(&self) -> bool {
        self.total > self.output.len()
    }
}

/// Keeps the last `cap` bytes written.
struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
    total: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Ring {
            buf: VecDeque::with_capacity(cap),
            cap,
            total: 0,
        }
    }
    fn push(&mut self, b: &[u8]) {
        self.total = self.total.saturating_add(b.len());
        let b = b
            .get(b.len().saturating_sub(self.cap)..)
            .unwrap_or_default();
        let overflow = (self.buf.len() + b.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(b);
    }
}

/// SIGKILL to the process group `pgid` (the script and everything it started that stayed in
/// its group).
fn kill_group(pgid: u32) -> io::Result<()> {
    let pgid = i32::try_from(pgid).map_err(|_| io::Error::other("process id out of range"))?;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(io::Error::from)
}

/// Runs `/bin/sh -c script` in a process group of its own, with the agent's environment plus
/// `inv.env`, feeding `inv.stdin`, and logs as Serf does: a warning when slow or when output
/// was truncated, the output at debug, an error on a non-zero exit. After `timeout` the whole
/// process group is killed (the caller logs it, naming the event).
pub async fn run(script: &str, inv: &Invocation, timeout: Option<Duration>) -> io::Result<Output> {
    // stdout and stderr share one pipe, so the output keeps the order the script wrote it in.
    let (reader, writer) = std::io::pipe()?;
    let mut child = {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .envs(inv.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .kill_on_drop(true)
            // Its own group, so that a timeout kills what it started too.
            .process_group(0);
        cmd.spawn()?
        // The builder (and with it our copies of the write end) is dropped here: EOF comes
        // when the script and anything it started have closed their output.
    };
    let pid = child.id();
    let mut output = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    let stdin = child.stdin.take();
    let mut ring = Ring::new(OUTPUT_LIMIT);

    let input = &inv.stdin;
    let write = async move {
        // A script that does not read its stdin is fine (EPIPE).
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(input).await;
        }
    };
    tokio::pin!(write);
    let start = tokio::time::Instant::now();
    // A timeout too long to add to the clock is no timeout.
    let deadline = timeout
        .filter(|t| !t.is_zero())
        .and_then(|t| start.checked_add(t));
    let mut written = false;
    let mut eof = false;
    let mut slow_logged = false;
    let mut status: Option<ExitStatus> = None;
    let mut grace_until: Option<tokio::time::Instant> = None;
    let mut timed_out = false;
    let mut output_abandoned = false;
    let mut buf = [0u8; 4096];
    let status = loop {
        if let (Some(s), true) = (status, eof) {
            break s;
        }
        tokio::select! {
            () = &mut write, if !written => written = true,
            r = output.read(&mut buf), if !eof => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => ring.push(buf.get(..n).unwrap_or_default()),
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s?);
                grace_until = Some(tokio::time::Instant::now() + OUTPUT_GRACE);
            }
            () = tokio::time::sleep_until(start + SLOW), if !slow_logged && status.is_none() => {
                slow_logged = true;
                warn!("agent: Script '{script}' slow, execution exceeding {SLOW:?}");
            }
            () = vassal_node::sleep_until(deadline), if !timed_out && status.is_none() => {
                timed_out = true;
                let killed = match pid {
                    Some(pid) => kill_group(pid),
                    None => child.start_kill(),
                };
                if let Err(e) = killed {
                    // It may have exited just now; wait() below tells.
                    debug!("agent: killing script '{script}': {e}");
                }
            }
            () = vassal_node::sleep_until(grace_until), if status.is_some() && !eof => {
                output_abandoned = true;
                if let Some(s) = status {
                    break s;
                }
            }
        }
    };

    let out = Output {
        status,
        output: ring.buf.into_iter().collect(),
        total: ring.total,
        pid,
        timed_out,
        output_abandoned,
    };
    if out.output_abandoned {
        warn!(
            "agent: Script '{script}' exited, but a process it started still holds its output; \
             not waiting for it (redirect a background command's output, e.g. `cmd >/dev/null \
             2>&1 &`)"
        );
    }
    if out.truncated() {
        warn!(
            "agent: Script '{script}' generated {} bytes of output, truncated to {}",
            out.total,
            out.output.len()
        );
    }
    let event = inv
        .env
        .iter()
        .find(|(k, _)| k == "SERF_EVENT")
        .map_or("", |(_, v)| v.as_str());
    debug!(
        "agent: Event '{event}' script output: {}",
        String::from_utf8_lossy(&out.output).trim_end()
    );
    if !out.status.success() && !out.timed_out {
        error!(
            "agent: Error invoking script '{script}': {}",
            go_exit_text(out.status)
        );
    }
    Ok(out)
}

/// How Go's `os/exec` words a failed run: `exit status 3`, `signal: killed`.
fn go_exit_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal: {}", signal_name(sig)),
        (None, None) => status.to_string(),
    }
}

/// Go's names for the signals a handler is likely to die of.
fn signal_name(sig: i32) -> String {
    match sig {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        6 => "aborted".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// How the dispatcher runs handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// `-handler-timeout`; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Events that may wait for their handlers ([`QUEUE_LIMIT`]).
    pub queue_limit: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            timeout: Some(DEFAULT_TIMEOUT),
            queue_limit: QUEUE_LIMIT,
        }
    }
}

/// The dispatcher's figures, for the SIGUSR1 dump.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Events waiting for their handlers now.
    pub queued: AtomicUsize,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Runs killed at their timeout.
    pub killed: AtomicU64,
}

/// Runs every matching handler for each event sent, one run at a time and in order, on a task
/// of its own. While a handler runs, newer events wait in a queue of at most
/// `config.queue_limit` (the oldest is dropped past it). The task ends once every sender is
/// dropped and the queue is drained.
///
/// `scripts` holds the handlers and the local node as they are now: a SIGHUP reload or a tag
/// change replaces them, and the next event uses the new ones.
pub fn spawn_dispatcher(
    scripts: watch::Receiver<(Vec<HandlerSpec>, SelfInfo)>,
    node: Option<vassal_node::Handle>,
    config: DispatchConfig,
    stats: Arc<DispatchStats>,
) -> (mpsc::UnboundedSender<Arc<Event>>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Event>>();
    let task = tokio::spawn(async move {
        let limit = config.queue_limit.max(1);
        let mut queue: VecDeque<Arc<Event>> = VecDeque::new();
        let mut open = true;
        let mut full = Throttle::new(QUEUE_LOG_INTERVAL);
        let mut enqueue = |queue: &mut VecDeque<Arc<Event>>, e: Arc<Event>| {
            if queue.len() >= limit {
                if let Some(old) = queue.pop_front() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("vassal.handler.dropped").increment(1);
                    if let Some(held) = full.ready(Instant::now()) {
                        warn!(
                            "agent: {limit} events are waiting for event handlers, the limit; \
                             dropped the oldest ({}) and will drop more while handlers lag \
                             ({held} more dropped since the last warning; {} in all). Make \
                             the handlers faster or lower -handler-timeout",
                            old.label(),
                            stats.dropped.load(Ordering::Relaxed)
                        );
                    }
                }
            }
            queue.push_back(e);
            stats.queued.store(queue.len(), Ordering::Relaxed);
            metrics::gauge!("vassal.handler.queue").set(queue.len() as f64);
        };
        loop {
            let event = match queue.pop_front() {
                Some(e) => e,
                None if open => match rx.recv().await {
                    Some(e) => e,
                    None => break,
                },
                None => break,
            };
            stats.queued.store(queue.len(), Ordering::Relaxed);
            metrics::gauge!("vassal.handler.queue").set(queue.len() as f64);
            let (handlers, me) = scripts.borrow().clone();
            for h in handlers.iter().filter(|h| h.matches(&event)) {
                let inv = invocation(&event, &me);
                let started = Instant::now();
                let run = run(&h.script, &inv, config.timeout);
                tokio::pin!(run);
                // Keep taking events in while it runs, so the queue bound applies.
                let result = loop {
                    tokio::select! {
                        r = &mut run => break r,
                        e = rx.recv(), if open => match e {
                            Some(e) => enqueue(&mut queue, e),
                            None => open = false,
                        },
                    }
                };
                // Go's `agent.invoke.<script>` timer, for every run however it ended.
                metrics::histogram!("agent.invoke", "name" => h.script.clone())
                    .record(started.elapsed().as_secs_f64() * 1e3);
                let out = match result {
                    Ok(out) => {
                        if !out.status.success() {
                            metrics::counter!("vassal.handler.failed").increment(1);
                        }
                        out
                    }
                    Err(e) => {
                        metrics::counter!("vassal.handler.failed").increment(1);
                        error!("agent: Error invoking script '{}': {e}", h.script);
                        continue;
                    }
                };
                if out.timed_out {
                    stats.killed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("vassal.handler.timeouts").increment(1);
                    error!(
                        "agent: Script '{}' for event {} ran longer than {:?} (-handler-timeout); \
                         killed it and its process group {}",
                        h.script,
                        event.label(),
                        config.timeout.unwrap_or_default(),
                        out.pid.map(|p| p.to_string()).unwrap_or_default()
                    );
                }
                // A query's answer is what the handler printed, if it succeeded (spec §5.2).
                if let (Event::Query(q), Some(node)) = (&*event, &node) {
                    if out.status.success() && !out.output.is_empty() {
                        if let Err(e) = node.respond(q.ltime, q.id, &out.output).await {
                            warn!("agent: Failed to respond to query 'query: {}': {e}", q.name);
                        }
                    }
                }
            }
        }
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vassal_serf::UserEvent;

    fn inv(stdin: &[u8]) -> Invocation {
        Invocation {
            env: vec![("SERF_EVENT".into(), "user".into())],
            stdin: stdin.to_vec(),
        }
    }

    fn user(name: &str) -> Event {
        Event::User(UserEvent {
            ltime: 1,
            name: name.into(),
            payload: b"p".to_vec(),
            cc: false,
        })
    }

    /// Log lines written while the returned guard lives (this thread only).
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl io::Write for W {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = W(buf.clone());
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        (buf, tracing::subscriber::set_default(sub))
    }

    fn text(b: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8_lossy(&b.lock().unwrap()).into_owned()
    }

    #[test]
    fn the_ring_keeps_the_last_bytes() {
        let mut r = Ring::new(4);
        r.push(b"ab");
        r.push(b"cde");
        assert_eq!(r.buf.iter().copied().collect::<Vec<_>>(), b"bcde");
        r.push(b"0123456789");
        assert_eq!(r.buf.iter().copied().collect::<Vec<_>>(), b"6789");
        assert_eq!(r.total, 15);
    }

    #[tokio::test]
    async fn env_and_stdin_reach_the_script_and_output_comes_back() {
        let out = run(
            "printf '%s:' \"$SERF_EVENT\"; cat; echo err >&2",
            &inv(b"v1\n"),
            None,
        )
        .await
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.output, b"user:v1\nerr\n");
        assert!(!out.truncated());
    }

    #[tokio::test]
    async fn output_beyond_8_kib_is_truncated_to_the_tail_with_a_warning() {
        let (logs, _g) = capture_logs();
        let out = run(
            "head -c 10000 /dev/zero | tr '\\0' a; printf END",
            &inv(b""),
            None,
        )
        .await
        .unwrap();
        assert_eq!(out.total, 10003);
        assert_eq!(out.output.len(), OUTPUT_LIMIT);
        assert!(out.output.ends_with(b"aaEND"));
        assert!(out.truncated());
        assert!(
            text(&logs).contains("generated 10003 bytes of output, truncated to 8192"),
            "{}",
            text(&logs)
        );
    }

    #[tokio::test]
    async fn a_script_ignoring_large_stdin_does_not_hang() {
        let out = run("true", &inv(&vec![b'x'; 1 << 20]), None).await.unwrap();
        assert!(out.status.success());
    }

    #[tokio::test]
    async fn handlers_run_one_at_a_time_in_event_order_and_survive_failures() {
        let (logs, _g) = capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("order");
        let f = f.display();
        let handlers = vec![
            // Slow, and first for event `a`: everything after must wait for it.
            HandlerSpec::parse(&format!("user:a=sleep 1.2; echo slow-a >> {f}")).unwrap(),
            HandlerSpec::parse("user:fail=echo boom >&2; exit 3").unwrap(),
            HandlerSpec::parse(&format!("user=echo $SERF_USER_EVENT >> {f}")).unwrap(),
        ];
        let (_keep, scripts) = watch::channel((handlers, SelfInfo::default()));
        let stats = Arc::new(DispatchStats::default());
        let (tx, task) = spawn_dispatcher(scripts, None, DispatchConfig::default(), stats);
        for name in ["a", "fail", "b", "c"] {
            tx.send(Arc::new(user(name))).unwrap();
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("order")).unwrap(),
            "slow-a\na\nfail\nb\nc\n"
        );
        let logs = text(&logs);
        assert!(
            logs.contains("Error invoking script 'echo boom >&2; exit 3': exit status 3"),
            "{logs}"
        );
        assert!(logs.contains("boom"), "{logs}");
        assert!(logs.contains("slow, execution exceeding"), "{logs}");
    }

    #[tokio::test]
    async fn runs_are_timed_and_failures_and_timeouts_counted() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        // A current-thread runtime: the dispatcher's task records into this thread's recorder.
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let handlers = vec![
            HandlerSpec::parse("user:ok=true").unwrap(),
            HandlerSpec::parse("user:fail=exit 3").unwrap(),
            HandlerSpec::parse("user:slow=sleep 1000").unwrap(),
        ];
        let (_keep, scripts) = watch::channel((handlers, SelfInfo::default()));
        let config = DispatchConfig {
            timeout: Some(Duration::from_millis(300)),
            ..DispatchConfig::default()
        };
        let stats = Arc::new(DispatchStats::default());
        let (tx, task) = spawn_dispatcher(scripts, None, config, stats);
        for name in ["ok", "fail", "slow"] {
            tx.send(Arc::new(user(name))).unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let mut runs = Vec::new();
        let (mut failed, mut timeouts) = (0, 0);
        for (k, _, _, v) in snap.snapshot().into_vec() {
            match (k.key().name(), v) {
                ("agent.invoke", DebugValue::Histogram(samples)) => {
                    let labels: Vec<String> =
                        k.key().labels().map(|l| l.value().to_owned()).collect();
                    runs.push((labels, samples.len()));
                }
                ("vassal.handler.failed", DebugValue::Counter(n)) => failed = n,
                ("vassal.handler.timeouts", DebugValue::Counter(n)) => timeouts = n,
                _ => {}
            }
        }
        runs.sort();
        let runs_by_script: Vec<(Vec<String>, usize)> = ["exit 3", "sleep 1000", "true"]
            .iter()
            .map(|s| (vec![s.to_string()], 1))
            .collect();
        assert_eq!(
            runs, runs_by_script,
            "one agent.invoke sample per run, by script"
        );
        assert_eq!(
            (failed, timeouts),
            (2, 1),
            "exit 3 and the killed run failed; one timed out"
        );
    }

    /// Whether a live (not zombie) process is left in process group `pgid`: a killed
    /// orphan stays a zombie until whoever adopted it reaps it.
    fn group_alive(pgid: u32) -> bool {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return false;
        };
        dir.flatten().any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp …; comm may hold spaces, so split after the ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
        })
    }

    #[tokio::test]
    async fn a_run_past_its_timeout_is_killed_with_its_process_group() {
        // Issue 11: a hanging handler, and the child it started, are killed.
        let started = std::time::Instant::now();
        let out = run(
            "sleep 1000 & echo started; sleep 1000",
            &inv(b""),
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap();
        assert!(out.timed_out, "{out:?}");
        assert!(!out.status.success());
        assert_eq!(out.output, b"started\n");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        let pgid = out.pid.unwrap();
        // SIGKILL is delivered at once but a loaded machine may schedule the dying
        // processes a little later: wait, with a deadline, for the group to empty.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while group_alive(pgid) {
            assert!(
                std::time::Instant::now() < deadline,
                "process group {pgid} still has live members 10 s after the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_background_child_holding_the_output_does_not_hold_up_the_run() {
        let started = std::time::Instant::now();
        let out = run("echo before; sleep 1000 &", &inv(b""), None)
            .await
            .unwrap();
        let took = started.elapsed();
        let pgid = out.pid.unwrap();
        // The child is left running (a script may mean to start something); clean it up.
        assert!(group_alive(pgid), "the background child was killed");
        kill_group(pgid).unwrap();
        assert!(out.status.success());
        assert!(out.output_abandoned, "{out:?}");
        assert_eq!(out.output, b"before\n");
        assert!(
            took < OUTPUT_GRACE + Duration::from_secs(2),
            "the run waited {took:?} for the background child"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_events_and_says_so_once() {
        let (logs, _g) = capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("gate");
        let seen = dir.path().join("seen");
        let handlers = vec![HandlerSpec::parse(&format!(
            "user=while [ ! -e {g} ]; do sleep 0.05; done; echo $SERF_USER_EVENT >> {s}",
            g = gate.display(),
            s = seen.display()
        ))
        .unwrap()];
        let (_keep, scripts) = watch::channel((handlers, SelfInfo::default()));
        let stats = Arc::new(DispatchStats::default());
        let config = DispatchConfig {
            timeout: None,
            queue_limit: 3,
        };
        let (tx, task) = spawn_dispatcher(scripts, None, config, stats.clone());
        // `first` is taken at once and blocks on the gate; eight more arrive behind it.
        for name in ["first", "a", "b", "c", "d", "e", "f", "g", "h"] {
            tx.send(Arc::new(user(name))).unwrap();
        }
        // The dispatcher runs on this thread (the logs are captured here): wait without
        // blocking it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stats.dropped.load(Ordering::Relaxed) < 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited 10 s for 5 dropped events; saw {} dropped, {} queued",
                stats.dropped.load(Ordering::Relaxed),
                stats.queued.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::write(&gate, "").unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            "first\nf\ng\nh\n",
            "the newest three wait; the oldest are dropped"
        );
        let logs = text(&logs);
        assert_eq!(
            logs.matches("events are waiting for event handlers, the limit")
                .count(),
            1,
            "{logs}"
        );
        assert!(logs.contains("dropped the oldest (user:\"a\")"), "{logs}");
    }
}
