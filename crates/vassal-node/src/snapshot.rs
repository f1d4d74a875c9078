//! The snapshot file's IO (spec §5.3): read and replayed at start, then written by a thread of its
//! own so that a slow disk never stalls the driver. What to write is decided by the pure
//! [`vassal_serf::snapshot`] module; this only appends, flushes (within 500 ms), syncs and renames.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{error, info, warn};
use vassal_serf::snapshot::{self, SnapshotConfig, SnapshotWrite, COMPACT_SUFFIX, FLUSH_INTERVAL};

use crate::transport::StartError;

enum Msg {
    Write(SnapshotWrite),
    Close(oneshot::Sender<()>),
}

/// The writer thread's mailbox.
pub(crate) struct SnapshotWriter {
    tx: mpsc::Sender<Msg>,
}

/// Opens (creating if needed) the snapshot at `path`, replays it, and starts the writer that
/// appends to it.
pub(crate) fn open(
    path: &Path,
    rejoin_after_leave: bool,
) -> Result<(SnapshotConfig, SnapshotWriter), StartError> {
    let failed = |source: io::Error| StartError::Snapshot {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(failed)?;
    let mut contents = Vec::new();
    file.read_to_end(&mut contents).map_err(failed)?;
    let recovered = snapshot::replay(&contents, rejoin_after_leave);
    for w in &recovered.warnings {
        warn!("{w}");
    }
    if recovered.ignored_leave {
        info!("serf: Ignoring previous leave in snapshot");
    }
    info!(
        path = %path.display(),
        alive = recovered.alive.len(),
        clock = recovered.clock,
        event_clock = recovered.event_clock,
        query_clock = recovered.query_clock,
        "serf: snapshot restored"
    );
    let config = SnapshotConfig::new(recovered, contents.len() as u64, rejoin_after_leave);
    let (tx, rx) = mpsc::channel();
    let path = path.to_owned();
    std::thread::Builder::new()
        .name("snapshot".into())
        .spawn(move || write_loop(path, BufWriter::new(file), rx))
        .map_err(failed)?;
    Ok((config, SnapshotWriter { tx }))
}

impl SnapshotWriter {
    pub(crate) fn write(&self, w: SnapshotWrite) {
        // The thread only stops after Close, so a send cannot fail before that.
        let _ = self.tx.send(Msg::Write(w));
    }

    /// Flushes and syncs everything written so far, then stops the writer.
    pub(crate) async fn close(self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            let _ = finished.await;
        }
    }
}

fn write_loop(path: PathBuf, mut out: BufWriter<File>, rx: mpsc::Receiver<Msg>) {
    // Appended but not yet flushed since then.
    let mut flush_due: Option<Instant> = None;
    loop {
        let msg = match flush_due {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        let result = match msg {
            Ok(Msg::Write(SnapshotWrite::Append(lines))) => {
                let start = Instant::now();
                flush_due.get_or_insert_with(|| start + FLUSH_INTERVAL);
                let r = out.write_all(lines.as_bytes());
                // Go's `appendLine` timer (here one append may carry several lines).
                measure_since("serf.snapshot.appendLine", start);
                r
            }
            Ok(Msg::Write(SnapshotWrite::Sync)) => {
                flush_due = None;
                out.flush().and_then(|()| out.get_ref().sync_all())
            }
            Ok(Msg::Write(SnapshotWrite::Replace(contents))) => {
                flush_due = None;
                let start = Instant::now();
                let compacted = compact(&path, &contents);
                // Go's `compact` timer: writing, syncing and renaming the new file.
                measure_since("serf.snapshot.compact", start);
                match compacted {
                    Ok(file) => {
                        // The old file is gone; what was buffered for it is in `contents`.
                        let old = std::mem::replace(&mut out, BufWriter::new(file));
                        drop(old.into_parts());
                        Ok(())
                    }
                    Err(e) => Err(io::Error::new(e.kind(), format!("compaction failed: {e}"))),
                }
            }
            Ok(Msg::Close(done)) => {
                if let Err(e) = out.flush().and_then(|()| out.get_ref().sync_all()) {
                    error!("serf: failed to flush snapshot: {e} ({})", path.display());
                }
                let _ = done.send(());
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                flush_due = None;
                out.flush()
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        };
        if let Err(e) = result {
            error!("serf: Failed to update snapshot: {e} ({})", path.display());
        }
    }
}

/// Records the time since `start` in milliseconds under the timer `key`.
fn measure_since(key: &'static str, start: Instant) {
    metrics::histogram!(key).record(start.elapsed().as_secs_f64() * 1e3);
}

/// Writes `contents` to `PATH.compact`, syncs it, renames it over `PATH` and reopens that for
/// appending.
fn compact(path: &Path, contents: &str) -> io::Result<File> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(COMPACT_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    OpenOptions::new().append(true).create(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_reach_the_file_and_compaction_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        std::fs::write(&path, "alive: a 127.0.0.1:1\nclock: 3\n").unwrap();
        let (config, writer) = open(&path, false).unwrap();
        assert_eq!(config.recovered.clock, 3);
        assert_eq!(config.file_len, 30);
        writer.write(SnapshotWrite::Append("event-clock: 4\n".into()));
        writer.write(SnapshotWrite::Sync);
        writer.write(SnapshotWrite::Replace("clock: 9\n".into()));
        writer.write(SnapshotWrite::Append("query-clock: 2\n".into()));
        writer.close().await;
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "clock: 9\nquery-clock: 2\n"
        );
        assert!(!dir.path().join("snap.compact").exists());
    }

    #[tokio::test]
    async fn appends_are_flushed_within_the_interval_without_a_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        let (_, writer) = open(&path, false).unwrap();
        writer.write(SnapshotWrite::Append("clock: 5\n".into()));
        // The writer is its own thread, so blocking this one while waiting is fine.
        vassal_testkit::wait_until(FLUSH_INTERVAL * 10, "the append to be flushed", || {
            match std::fs::read_to_string(&path).unwrap() {
                s if s == "clock: 5\n" => Ok(()),
                s => Err(format!("file holds {s:?}")),
            }
        });
        writer.close().await;
    }

    #[test]
    fn an_unopenable_snapshot_names_the_path() {
        let e = open(Path::new("/nonexistent-dir/snap"), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent-dir/snap"), "{e}");
    }
}
