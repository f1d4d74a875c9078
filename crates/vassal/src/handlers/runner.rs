//! Running handlers: the only code here that starts a process (STYLE item 5). Handlers run one
//! at a time, in event order, on their own task, so a slow script delays later handlers but
//! never the node's driver (spec §5.1).

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use super::invocation::{invocation, HandlerEvent, Invocation, SelfInfo};
use super::spec::HandlerSpec;

/// Only the last this-many bytes of a run's stdout and stderr are kept.
pub const OUTPUT_LIMIT: usize = 8 * 1024;
/// A run taking longer than this is logged as slow.
pub const SLOW: Duration = Duration::from_secs(1);

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    /// stdout and stderr interleaved, the last [`OUTPUT_LIMIT`] bytes only.
    pub output: Vec<u8>,
    /// How many bytes the script wrote in all.
    pub total: usize,
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
        self.total += b.len();
        let b = &b[b.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + b.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(b);
    }
}

/// Runs `/bin/sh -c script` with the agent's environment plus `inv.env`, feeding `inv.stdin`,
/// and logs as Serf does: a warning when slow or when output was truncated, the output at
/// debug, an error on a non-zero exit.
pub async fn run(script: &str, inv: &Invocation) -> io::Result<Output> {
    // stdout and stderr share one pipe, so the output keeps the order the script wrote it in.
    let (reader, writer) = std::io::pipe()?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .kill_on_drop(true)
        .spawn()?;
    // The builder (and with it our copies of the write end) is gone: EOF comes when the
    // script and anything it started have closed their output.
    let mut output = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut ring = Ring::new(OUTPUT_LIMIT);

    let input = &inv.stdin;
    let write = async move {
        // A script that does not read its stdin is fine (EPIPE).
        let _ = stdin.write_all(input).await;
        drop(stdin);
    };
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = output.read(&mut buf).await {
            if n == 0 {
                break;
            }
            ring.push(&buf[..n]);
        }
    };
    let status = {
        let work = async {
            tokio::join!(write, read);
            child.wait().await
        };
        tokio::pin!(work);
        tokio::select! {
            s = &mut work => s,
            _ = tokio::time::sleep(SLOW) => {
                warn!("agent: Script '{script}' slow, execution exceeding {SLOW:?}");
                work.await
            }
        }
    }?;

    let out = Output {
        status,
        output: ring.buf.into_iter().collect(),
        total: ring.total,
    };
    if out.truncated() {
        warn!(
            "agent: Script '{script}' generated {} bytes of output, truncated to {}",
            out.total,
            out.output.len()
        );
    }
    if !out.output.is_empty() {
        debug!(
            "agent: Script '{script}' output: {}",
            String::from_utf8_lossy(&out.output).trim_end()
        );
    }
    if !out.status.success() {
        error!("agent: Error invoking script '{script}': {}", out.status);
    }
    Ok(out)
}

/// Runs every matching handler for each event sent, one run at a time and in order, on a task
/// of its own. The channel is unbounded so that no event is lost however slow the scripts are.
/// The task ends once every sender is dropped and the queue is drained.
///
/// `scripts` holds the handlers and the local node as they are now: a SIGHUP reload or a tag
/// change replaces them, and the next event uses the new ones.
pub fn spawn_dispatcher(
    scripts: watch::Receiver<(Vec<HandlerSpec>, SelfInfo)>,
    node: Option<vassal_node::Handle>,
) -> (mpsc::UnboundedSender<HandlerEvent>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<HandlerEvent>();
    let task = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let (handlers, me) = scripts.borrow().clone();
            for h in handlers.iter().filter(|h| h.matches(&event)) {
                let inv = invocation(&event, &me);
                let out = match run(&h.script, &inv).await {
                    Ok(out) => out,
                    Err(e) => {
                        error!("agent: Error invoking script '{}': {e}", h.script);
                        continue;
                    }
                };
                // A query's answer is what the handler printed, if it succeeded (spec §5.2).
                if let (HandlerEvent::Query(q), Some(node)) = (&event, &node) {
                    if out.status.success() && !out.output.is_empty() {
                        if let Err(e) = node.respond(q.ltime, q.id, &out.output).await {
                            warn!("agent: failed to respond to query '{}': {e}", q.name);
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

    fn user(name: &str) -> HandlerEvent {
        HandlerEvent::User(UserEvent {
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
        let out = run("true", &inv(&vec![b'x'; 1 << 20])).await.unwrap();
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
        let (tx, task) = spawn_dispatcher(scripts, None);
        for name in ["a", "fail", "b", "c"] {
            tx.send(user(name)).unwrap();
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("order")).unwrap(),
            "slow-a\na\nfail\nb\nc\n"
        );
        let logs = text(&logs);
        assert!(
            logs.contains("Error invoking script 'echo boom >&2; exit 3': exit status: 3"),
            "{logs}"
        );
        assert!(logs.contains("boom"), "{logs}");
        assert!(logs.contains("slow, execution exceeding"), "{logs}");
    }
}
