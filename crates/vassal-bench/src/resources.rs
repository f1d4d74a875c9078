//! What `/proc` says about the agents and the machine: memory (RSS, PSS, USS), threads, CPU
//! time, loopback traffic, machine CPU busy % and load average.
//!
//! Every reader returns `None` (or zeros) when a file is missing or unreadable, so an agent
//! that exited meanwhile only drops out of the figures.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Map, Value};

/// Clock ticks per second of `/proc/PID/stat`'s utime and stime.
pub fn clock_ticks() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// utime + stime of a process, in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is the state (field 3); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Drops `binary`'s pages from the page cache before a cluster starts (no process maps it
/// then), so every lifetime's agents read it as they would after a reboot.
///
/// How the pages got into the cache decides how many of them each agent maps: a file the
/// linker (or `dpkg`) has just written sits in large folios, and the kernel maps a whole
/// folio at a fault, so an agent's RSS counted about 0.7 MiB more of the binary's text than
/// after the same file was read back from disk (5.0 against 4.3 MiB, one idle Vassal agent).
/// Go's binary gets the same treatment.
pub fn evict_from_page_cache(binary: &Path) -> Result<(), String> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    let file = fs::File::open(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    posix_fadvise(
        file.as_raw_fd(),
        0,
        0,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(|e| format!("{}: posix_fadvise: {e}", binary.display()))
}

/// Memory and threads of one process, in KiB (threads as a count).
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub pss_kib: u64,
    /// Unique set size: private clean + private dirty pages.
    pub uss_kib: u64,
    pub threads: u64,
}

fn kib_field(line: &str, key: &str) -> Option<u64> {
    let v = line.strip_prefix(key)?.strip_prefix(':')?;
    v.split_whitespace().next()?.parse().ok()
}

/// `/proc/PID/status` (VmRSS, VmHWM, Threads) and `/proc/PID/smaps_rollup` (Pss, Private_*).
pub fn memory(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut m = Memory::default();
    for line in status.lines() {
        if let Some(v) = kib_field(line, "VmRSS") {
            m.rss_kib = v;
        } else if let Some(v) = kib_field(line, "VmHWM") {
            m.hwm_kib = v;
        } else if let Some(v) = kib_field(line, "Threads") {
            m.threads = v;
        }
    }
    if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        for line in rollup.lines() {
            if let Some(v) = kib_field(line, "Pss") {
                m.pss_kib = v;
            } else if let Some(v) = kib_field(line, "Private_Clean") {
                m.uss_kib += v;
            } else if let Some(v) = kib_field(line, "Private_Dirty") {
                m.uss_kib += v;
            }
        }
    }
    Some(m)
}

/// Received bytes and packets on `lo` (on loopback every packet sent is also received).
pub fn loopback_rx() -> (u64, u64) {
    let Ok(dev) = fs::read_to_string("/proc/net/dev") else {
        return (0, 0);
    };
    for line in dev.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            let mut f = rest
                .split_whitespace()
                .map(|x| x.parse::<u64>().unwrap_or(0));
            let bytes = f.next().unwrap_or(0);
            let packets = f.next().unwrap_or(0);
            return (bytes, packets);
        }
    }
    (0, 0)
}

/// Busy and total jiffies of all CPUs together (first line of `/proc/stat`).
fn machine_cpu() -> (u64, u64) {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The 1-minute load average.
pub fn loadavg1() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Machine CPU busy % (100 = every core busy) and this process's own CPU % over a window.
pub struct LoadMeter {
    busy: u64,
    total: u64,
    own: Option<u64>,
    start: Instant,
}

impl LoadMeter {
    pub fn start() -> LoadMeter {
        let (busy, total) = machine_cpu();
        LoadMeter {
            busy,
            total,
            own: cpu_ticks(std::process::id()),
            start: Instant::now(),
        }
    }

    /// `machine_cpu_busy_pct`, `harness_cpu_pct` and `loadavg1`, for a scenario record.
    pub fn result(&self) -> Map<String, Value> {
        let (busy, total) = machine_cpu();
        let dt = self.start.elapsed().as_secs_f64().max(1e-6);
        let machine = 100.0 * busy.saturating_sub(self.busy) as f64
            / (total.saturating_sub(self.total)).max(1) as f64;
        let own = match (self.own, cpu_ticks(std::process::id())) {
            (Some(a), Some(b)) => Some(100.0 * b.saturating_sub(a) as f64 / clock_ticks() / dt),
            _ => None,
        };
        let mut m = Map::new();
        m.insert("machine_cpu_busy_pct".into(), json!(round(machine, 1)));
        m.insert("harness_cpu_pct".into(), json!(own.map(|x| round(x, 1))));
        m.insert("loadavg1".into(), json!(loadavg1()));
        m
    }
}

/// `x` rounded to `digits` decimals (for readable records).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        let m = memory(pid).unwrap();
        assert!(m.rss_kib > 0 && m.threads >= 1);
        assert!(memory(u32::MAX).is_none());
        assert!(clock_ticks() > 0.0);
    }

    #[test]
    fn field_parsing() {
        assert_eq!(kib_field("VmRSS:\t  1234 kB", "VmRSS"), Some(1234));
        assert_eq!(kib_field("VmRSSx: 1 kB", "VmRSS"), None);
        assert_eq!(kib_field("Pss_Anon: 5 kB", "Pss"), None);
    }
}
