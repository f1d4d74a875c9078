//! Helpers for the metrics the core emits through the `metrics` facade.
//!
//! The core only counts: it calls `metrics::counter!`, `gauge!` and `histogram!` with Go's keys
//! (`memberlist.msg.suspect`, `serf.member.join`, …), which do nothing until the shell installs
//! a recorder. Nothing here reads a clock or touches the RNG, so a seeded run traces the same
//! with or without a recorder. `docs/metrics.md` lists every key.

use std::time::{Duration, Instant};

/// A duration in milliseconds, as Go's `metrics.MeasureSince` reports timers.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Records `now − since` in milliseconds under the timer `key` (Go's `MeasureSince`, with the
/// times the core was given instead of a clock read).
pub fn measure_since(key: &'static str, since: Instant, now: Instant) {
    metrics::histogram!(key).record(millis(now.saturating_duration_since(since)));
}
