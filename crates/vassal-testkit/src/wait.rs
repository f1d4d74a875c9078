//! Deadline-bounded polling: the only way tests in this workspace wait for something.

use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`hold_for`] re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `f` every [`POLL_INTERVAL`] until it returns `Ok`, and returns that value.
///
/// `f` returns `Err(observation)` while the condition does not hold yet; the observation should
/// describe what was seen (e.g. the last `serf members` output). If `deadline` passes, this panics
/// with `what`, the elapsed time, the number of attempts and the last observation.
///
/// ```
/// use std::time::Duration;
/// let mut n = 0;
/// let got = vassal_testkit::wait_until(Duration::from_secs(5), "counter reaches 3", || {
///     n += 1;
///     if n >= 3 { Ok(n) } else { Err(format!("counter is {n}")) }
/// });
/// assert_eq!(got, 3);
/// ```
#[track_caller]
pub fn wait_until<T>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match f() {
            Ok(v) => return v,
            Err(observation) => observation,
        };
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            panic!(
                "timed out after {elapsed:.1?} (deadline {deadline:?}, {attempts} attempts) \
                 waiting for {what}\nlast observation:\n{last}"
            );
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - elapsed));
    }
}

/// Checks that `f` keeps returning `Ok` for the whole of `duration`, polling every
/// [`POLL_INTERVAL`]; panics with the observation the first time it returns `Err`.
///
/// Use it for negative properties ("no join happens"), which cannot be awaited.
#[track_caller]
pub fn hold_for(duration: Duration, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        if let Err(observation) = f() {
            panic!(
                "expected {what} to hold for {duration:?}, but after {:.1?} saw:\n{observation}",
                start.elapsed()
            );
        }
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return;
        }
        std::thread::sleep(POLL_INTERVAL.min(duration - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "last observation:\nstill 7")]
    fn wait_until_panics_with_the_last_observation() {
        wait_until(Duration::from_millis(250), "never", || -> Result<(), _> {
            Err("still 7".to_string())
        });
    }

    #[test]
    #[should_panic(expected = "after")]
    fn hold_for_panics_when_the_condition_breaks() {
        let mut n = 0;
        hold_for(Duration::from_secs(5), "n stays small", || {
            n += 1;
            if n < 3 {
                Ok(())
            } else {
                Err(format!("n = {n}"))
            }
        });
    }
}
