//! The task that keeps each template's DEST in step with membership.
//!
//! It takes the node's raw member events (not the handlers' coalesced ones: it waits for quiet
//! itself) and re-reads the member list on each, and every [`RESYNC`] as well, since a
//! member's `leaving` has no event and a lagging subscriber misses some. When the context a
//! template would see has changed, it waits for [`Quiescence`], then renders every template:
//! a text that differs from DEST's is written atomically (a temp file in DEST's directory,
//! DEST's mode, then a rename) and the command run; a render error leaves DEST as it was. A
//! command that fails is logged with its output and run again at the next change.
//!
//! A SIGHUP hands the task the templates compiled again ([`Templates::reload`]): it renders
//! them at once over the membership it last saw (after the quiet wait), so an edited template
//! reaches DEST without a membership change; DESTs whose text is unchanged are left alone and
//! their commands not run.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tracing::{debug, error, info, warn};
use vassal_node::Handle;

use super::render::{self, Engine, View};
use super::{TemplateSpec, MAX_WAIT_FACTOR};
use crate::handlers::invocation::Invocation;
use crate::handlers::runner;

/// How often the member list is read even without an event.
pub const RESYNC: Duration = Duration::from_secs(1);

/// Waits for membership to be quiet: a render is due `wait` after the last change, or
/// `max` after the first change of a burst, whichever comes first.
#[derive(Debug, Clone)]
pub struct Quiescence {
    wait: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Quiescence {
    pub fn new(wait: Duration) -> Quiescence {
        Quiescence {
            wait,
            max: wait.saturating_mul(MAX_WAIT_FACTOR),
            first: None,
            last: None,
        }
    }

    /// Something changed at `now`.
    pub fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending change is due to render, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let quiet = self.last?.checked_add(self.wait);
        let cap = self.first?.checked_add(self.max);
        match (quiet, cap) {
            (Some(q), Some(c)) => Some(q.min(c)),
            (q, c) => q.or(c),
        }
    }

    /// Takes the pending change (after rendering it).
    pub fn take(&mut self) {
        self.first = None;
        self.last = None;
    }
}

/// One template and what the last attempt left to do.
struct Target {
    index: usize,
    spec: TemplateSpec,
    /// The last command run failed: run it at the next change even if DEST is unchanged.
    command_failed: bool,
}

/// What rendering one template did.
#[derive(Debug)]
enum Outcome {
    Unchanged,
    Written(usize),
    RenderFailed(render::RenderError),
    WriteFailed(std::io::Error),
}

/// The templates as the task runs them: compiled, with their specs and the quiet wait.
struct Loaded {
    engine: Engine,
    specs: Vec<TemplateSpec>,
    wait: Duration,
}

/// The running template task, held by the agent so that a SIGHUP can hand it new templates.
#[derive(Debug)]
pub struct Templates {
    tx: watch::Sender<Arc<Loaded>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("specs", &self.specs)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Replaces the running templates with `specs` (compiled in `engine`, so already checked)
    /// and the quiet wait with `wait`. The task renders them once membership has been quiet
    /// for `wait`; a failed command's retry is forgotten with the template it belonged to.
    pub fn reload(&self, engine: Engine, specs: Vec<TemplateSpec>, wait: Duration) {
        self.tx.send_replace(Arc::new(Loaded {
            engine,
            specs,
            wait,
        }));
    }
}

/// Starts keeping `specs` (compiled in `engine`) in step with `handle`'s membership; `local` is
/// this node's name. The task ends when the node stops (or the returned handle is dropped).
pub fn spawn(
    handle: Handle,
    engine: Engine,
    specs: Vec<TemplateSpec>,
    local: String,
    wait: Duration,
) -> Templates {
    let events = handle.events();
    let (tx, rx) = watch::channel(Arc::new(Loaded {
        engine,
        specs,
        wait,
    }));
    tokio::spawn(run(handle, events, rx, local));
    Templates { tx }
}

fn targets_for(specs: &[TemplateSpec]) -> Vec<Target> {
    specs
        .iter()
        .enumerate()
        .map(|(index, spec)| Target {
            index,
            spec: spec.clone(),
            command_failed: false,
        })
        .collect()
}

async fn run(
    handle: Handle,
    mut events: broadcast::Receiver<Arc<vassal_serf::Event>>,
    mut loaded: watch::Receiver<Arc<Loaded>>,
    local: String,
) {
    let mut current = loaded.borrow_and_update().clone();
    let mut targets = targets_for(&current.specs);
    info!(
        "agent: template: {} template(s) loaded; rendering once another member is alive",
        targets.len()
    );
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = Quiescence::new(current.wait);
    let mut last: Option<View> = None;
    let mut joined = false;
    loop {
        let due = vassal_node::sleep_until(quiet.deadline());
        tokio::select! {
            e = events.recv() => match e.as_deref() {
                Ok(vassal_serf::Event::Member(_)) => {}
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    debug!("agent: template: missed {n} events; reading the member list");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = resync.tick() => {}
            () = due => {
                quiet.take();
                if let Some(view) = &last {
                    for t in &mut targets {
                        render_one(&current, t, view).await;
                    }
                }
                continue;
            }
            changed = loaded.changed() => {
                // The agent dropped its end: it is shutting down.
                if changed.is_err() {
                    return;
                }
                current = loaded.borrow_and_update().clone();
                targets = targets_for(&current.specs);
                quiet = Quiescence::new(current.wait);
                info!("agent: template: reloaded {} template(s)", targets.len());
                if joined {
                    quiet.touch(Instant::now());
                }
                continue;
            }
        }
        let members = match handle.members().await {
            Ok(m) => m,
            // The node has stopped.
            Err(_) => return,
        };
        let view = View::new(&members, &local);
        if !joined {
            if !render::joined(&members, &local) {
                last = Some(view);
                continue;
            }
            joined = true;
            info!("agent: template: another member is alive; rendering from now on");
            quiet.touch(Instant::now());
        }
        if last.as_ref() != Some(&view) {
            last = Some(view);
            quiet.touch(Instant::now());
        }
    }
}

/// Renders one template over `view`, writes DEST if the text changed, and runs the command
/// if it did (or if the last run failed). `t` is one of `loaded`'s templates.
async fn render_one(loaded: &Arc<Loaded>, t: &mut Target, view: &View) {
    let (loaded2, view2, dest) = (loaded.clone(), view.clone(), t.spec.destination.clone());
    let index = t.index;
    let outcome = tokio::task::spawn_blocking(move || match loaded2.engine.render(index, &view2) {
        Err(e) => Outcome::RenderFailed(e),
        Ok(text) => match std::fs::read(&dest) {
            Ok(old) if old == text.as_bytes() => Outcome::Unchanged,
            _ => match write_atomically(&dest, text.as_bytes()) {
                Ok(()) => Outcome::Written(text.len()),
                Err(e) => Outcome::WriteFailed(e),
            },
        },
    })
    .await
    .unwrap_or_else(|e| Outcome::WriteFailed(std::io::Error::other(e.to_string())));
    let (src, dest) = (t.spec.source.display(), t.spec.destination.display());
    let changed = match outcome {
        Outcome::Unchanged => {
            debug!("agent: template {src}: {dest} is already up to date");
            false
        }
        Outcome::Written(n) => {
            info!("agent: template {src}: wrote {dest} ({n} bytes)");
            true
        }
        Outcome::RenderFailed(e) => {
            metrics::counter!("vassal.template.render_failed").increment(1);
            error!(
                "agent: template {src}: rendering failed at {e}; {dest} is left as it was \
                 (fix the template and send the agent SIGHUP)"
            );
            return;
        }
        Outcome::WriteFailed(e) => {
            error!(
                "agent: template {src}: cannot write {dest}: {e}; it is left as it was and \
                 the next change tries again"
            );
            return;
        }
    };
    let Some(command) = &t.spec.command else {
        return;
    };
    if !changed && !t.command_failed {
        return;
    }
    if !changed {
        info!("agent: template {src}: running {command:?} again, since it failed last time");
    }
    let inv = Invocation {
        env: vec![
            (
                "VASSAL_TEMPLATE_SOURCE".into(),
                t.spec.source.display().to_string(),
            ),
            ("VASSAL_TEMPLATE_DESTINATION".into(), dest.to_string()),
        ],
        stdin: Vec::new(),
    };
    let why = match runner::run(command, &inv, t.spec.command_timeout).await {
        Ok(out) if out.status.success() && !out.timed_out => {
            info!("agent: template {src}: ran {command:?} for {dest}");
            t.command_failed = false;
            return;
        }
        Ok(out) if out.timed_out => format!(
            "ran longer than {:?} (command_timeout); killed it and its process group",
            t.spec.command_timeout.unwrap_or_default()
        ),
        Ok(out) => format!(
            "{}; its output: {}",
            exit_text(out.status),
            String::from_utf8_lossy(&out.output).trim()
        ),
        Err(e) => format!("could not start it: {e}"),
    };
    t.command_failed = true;
    metrics::counter!("vassal.template.command_failed").increment(1);
    error!(
        "agent: template {src}: command {command:?} for {dest} failed: {why}; it runs again at \
         the next membership change"
    );
}

fn exit_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// Writes `bytes` to `dest` through a temp file in the same directory, renamed over it, so a
/// reader sees the old file or the new one, never half of one. DEST's mode is kept.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| std::io::Error::other("the destination has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.vassal-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mode = std::fs::metadata(dest).ok().map(|m| m.permissions());
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Some(mode) = mode {
            std::fs::set_permissions(&tmp, mode)?;
        }
        std::fs::rename(&tmp, dest)
    })();
    if written.is_err() {
        if let Err(e) = std::fs::remove_file(&tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!("agent: template: cannot remove {}: {e}", tmp.display());
            }
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn quiescence_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut q = Quiescence::new(s);
        assert_eq!(q.deadline(), None);
        q.touch(t0);
        assert_eq!(q.deadline(), Some(t0 + s));
        q.touch(t0 + Duration::from_millis(900));
        assert_eq!(q.deadline(), Some(t0 + Duration::from_millis(1900)));
        // Changes every 900 ms: the burst still renders 4 waits after it began.
        q.touch(t0 + Duration::from_millis(3800));
        assert_eq!(q.deadline(), Some(t0 + 4 * s));
        q.take();
        assert_eq!(q.deadline(), None);
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("up.conf");
        write_atomically(&dest, b"one\n").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"one\n");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&dest, b"two\n").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two\n");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["up.conf"], "no temp file is left behind");
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails.
        let dest = dir.path().join("d");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("x"), "").unwrap();
        assert!(write_atomically(&dest, b"x").is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["d"]);
    }
}
