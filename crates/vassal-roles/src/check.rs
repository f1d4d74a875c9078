//! The balancer's active health check as an operator sets it (`-lb-check-*`): which page is
//! asked, how often, how long an answer may take, which statuses pass, and how many results in
//! a row move a backend in or out of rotation. The defaults are what the balancer always did:
//! `GET /` every second, 2 s to answer, any status below 500 passes, out after 2 failures,
//! back after 1 pass.
//!
//! Every value comes from a flag or a config file, so each has a parser here that says what is
//! wrong and what would be right; [`CheckConfig::validate`] checks a whole set.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use hyper::http::uri::PathAndQuery;

/// The shortest check interval and timeout accepted: a check every millisecond would be a
/// flood, not a check.
pub const MIN_PERIOD: Duration = Duration::from_millis(10);
/// The longest check interval and timeout accepted (a day: past that it is a typo).
pub const MAX_PERIOD: Duration = Duration::from_secs(86_400);
/// The most results in a row `rise` and `fall` may ask for.
pub const MAX_COUNT: u32 = 1000;

/// How the balancer checks its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// `-lb-check-path`: the path (and query) asked with `GET`, e.g. `/healthz`. Change it when
    /// the backend has a dedicated health page.
    pub path: String,
    /// `-lb-check-interval`: time between two checks of one backend.
    pub interval: Duration,
    /// `-lb-check-timeout`: a backend must answer a check within this (a busy machine can take
    /// a while; a dead backend refuses the connection at once).
    pub timeout: Duration,
    /// `-lb-check-rise`: passing checks in a row that bring a down backend back.
    pub rise: u32,
    /// `-lb-check-fall`: failing checks in a row that take an up backend out.
    pub fall: u32,
    /// `-lb-check-status`: the statuses that pass.
    pub status: StatusSet,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            path: "/".to_owned(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            rise: 1,
            fall: 2,
            status: StatusSet::below_500(),
        }
    }
}

impl CheckConfig {
    /// Checks every field, naming the flag of the first one at fault.
    pub fn validate(&self) -> Result<(), String> {
        parse_path(&self.path).map_err(|e| format!("-lb-check-path: {e}"))?;
        check_period(self.interval).map_err(|e| format!("-lb-check-interval: {e}"))?;
        check_period(self.timeout).map_err(|e| format!("-lb-check-timeout: {e}"))?;
        check_count(self.rise).map_err(|e| format!("-lb-check-rise: {e}"))?;
        check_count(self.fall).map_err(|e| format!("-lb-check-fall: {e}"))?;
        Ok(())
    }
}

/// A check path: absolute, and a valid URI path and query.
pub fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "{s:?} is not an absolute path; it must start with /, e.g. /healthz"
        ));
    }
    if s.len() > 1024 {
        return Err(format!("the path is {} bytes; at most 1024", s.len()));
    }
    PathAndQuery::from_str(s)
        .map(|p| p.as_str().to_owned())
        .map_err(|e| format!("{s:?} is not a URI path: {e} (percent-encode spaces and the like)"))
}

/// A check interval or timeout: between [`MIN_PERIOD`] and [`MAX_PERIOD`].
pub fn check_period(d: Duration) -> Result<Duration, String> {
    if d < MIN_PERIOD || d > MAX_PERIOD {
        return Err(format!(
            "{d:?} is out of range; use {MIN_PERIOD:?} to {}h, e.g. 1s",
            MAX_PERIOD.as_secs() / 3600
        ));
    }
    Ok(d)
}

/// A rise or fall count: 1 to [`MAX_COUNT`].
pub fn check_count(n: u32) -> Result<u32, String> {
    if n == 0 || n > MAX_COUNT {
        return Err(format!("{n} is out of range; use 1 to {MAX_COUNT}"));
    }
    Ok(n)
}

/// A rise or fall count from text.
pub fn parse_count(s: &str) -> Result<u32, String> {
    let n = s
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{s:?} is not a whole number; use 1 to {MAX_COUNT}"))?;
    check_count(n)
}

/// The HTTP statuses a check accepts: a list of codes (`200`), ranges (`200-399`) and classes
/// (`2xx`), comma-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet {
    /// Inclusive ranges, as written.
    ranges: Vec<(u16, u16)>,
}

impl StatusSet {
    /// Any status below 500 (the default: a backend that answers at all, even 404, is up).
    pub fn below_500() -> Self {
        StatusSet {
            ranges: vec![(100, 499)],
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| lo <= status && status <= hi)
    }
}

impl FromStr for StatusSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let code = |t: &str| -> Result<u16, String> {
            match t.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{t:?} is not an HTTP status (100-599); write e.g. 200, 200-399 or 2xx"
                )),
            }
        };
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            let lower = item.to_ascii_lowercase();
            let range = if let Some(class) = lower.strip_suffix("xx") {
                let c = code(&format!("{class}00"))?;
                (c, c + 99)
            } else if let Some((lo, hi)) = item.split_once('-') {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(format!(
                        "{item:?} is an empty range; write the lower code first"
                    ));
                }
                (lo, hi)
            } else {
                let c = code(item)?;
                (c, c)
            };
            ranges.push(range);
        }
        Ok(StatusSet { ranges })
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_what_the_balancer_always_did() {
        let c = CheckConfig::default();
        assert_eq!(c.path, "/");
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!((c.rise, c.fall), (1, 2));
        assert!(c.status.contains(200) && c.status.contains(404) && !c.status.contains(500));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn statuses_are_codes_ranges_and_classes() {
        let s: StatusSet = "200, 204,300-302,4XX".parse().unwrap();
        for ok in [200, 204, 300, 301, 302, 400, 499] {
            assert!(s.contains(ok), "{ok}");
        }
        for no in [201, 303, 500, 100] {
            assert!(!s.contains(no), "{no}");
        }
        assert_eq!(s.to_string(), "200,204,300-302,400-499");
        for (bad, says) in [
            ("", "not an HTTP status"),
            ("ok", "not an HTTP status"),
            ("600", "not an HTTP status"),
            ("399-200", "empty range"),
            ("9xx", "not an HTTP status"),
            ("200,", "not an HTTP status"),
        ] {
            let e = bad.parse::<StatusSet>().unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bad_paths_periods_and_counts_are_refused_with_the_fix() {
        assert_eq!(parse_path("/healthz?full=1"), Ok("/healthz?full=1".into()));
        assert!(parse_path("healthz")
            .unwrap_err()
            .contains("must start with /"));
        assert!(parse_path("/a b").unwrap_err().contains("percent-encode"));
        assert!(check_period(Duration::ZERO)
            .unwrap_err()
            .contains("out of range"));
        assert!(check_period(Duration::from_secs(86_401)).is_err());
        assert_eq!(parse_count("3"), Ok(3));
        assert!(parse_count("0").unwrap_err().contains("1 to 1000"));
        assert!(parse_count("-1")
            .unwrap_err()
            .contains("not a whole number"));
        let c = CheckConfig {
            fall: 0,
            ..CheckConfig::default()
        };
        assert!(c.validate().unwrap_err().starts_with("-lb-check-fall"));
    }
}
