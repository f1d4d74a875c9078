//! Value parsers shared by the agent's flags and its config files, so that both refuse the
//! same values with the same reasons: Go durations, timing profiles, protocol versions,
//! encryption keys and connection counts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use vassal_memberlist::wire::Keyring;

/// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, `0`; units ns, us, µs, ms, s, m, h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err("duration must not be negative".into());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        total += number * nanos;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// `-profile` / `profile`: which of memberlist's timing presets the agent runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// A local network (memberlist's `DefaultLANConfig`); Serf's default.
    #[default]
    Lan,
    /// Across the internet or between data centres: slower probes, longer timeouts.
    Wan,
    /// One host or a very fast network: quicker probes and suspicion.
    Local,
}

impl Profile {
    /// The memberlist preset for this profile, for the node called `name`.
    pub fn memberlist_config(self, name: &str) -> vassal_memberlist::Config {
        match self {
            Profile::Lan => vassal_memberlist::Config::lan(name),
            Profile::Wan => vassal_memberlist::Config::wan(name),
            Profile::Local => vassal_memberlist::Config::local(name),
        }
    }

    /// Parses a profile's name, with the reason Go's agent gives for an unknown one.
    pub fn parse(v: &str) -> Result<Profile, String> {
        v.parse()
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(v: &str) -> Result<Profile, String> {
        match v {
            "lan" => Ok(Profile::Lan),
            "wan" => Ok(Profile::Wan),
            "local" => Ok(Profile::Local),
            _ => Err(format!("Unknown profile: {v} (use lan, wan or local)")),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Lan => "lan",
            Profile::Wan => "wan",
            Profile::Local => "local",
        })
    }
}

/// `-protocol` / `protocol`: a Serf protocol version this build speaks.
pub fn parse_protocol(v: &str) -> Result<u8, String> {
    match v.parse::<u8>() {
        Ok(n) if (vassal_serf::PROTOCOL_MIN..=vassal_serf::PROTOCOL_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be {} to {}",
            vassal_serf::PROTOCOL_MIN,
            vassal_serf::PROTOCOL_MAX
        )),
    }
}

/// `-encrypt` / `encrypt_key`: base64 of a 16, 24 or 32-byte key, with Go's error texts.
pub fn parse_key(v: &str) -> Result<Keyring, String> {
    let key = vassal_serf::keys::decode_base64(v)?;
    Keyring::new(&key).map_err(|e| e.to_string())
}

/// `-lb-max-conns` / `lb_max_conns`: a connection count of at least 1.
pub fn parse_max_conns(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number of at least 1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn profiles_are_serfs_three_and_an_unknown_one_says_so() {
        for p in [Profile::Lan, Profile::Wan, Profile::Local] {
            assert_eq!(p.to_string().parse(), Ok(p));
        }
        assert_eq!(Profile::default(), Profile::Lan);
        let e = Profile::parse("moon").unwrap_err();
        assert!(
            e.contains("Unknown profile: moon") && e.contains("lan"),
            "{e}"
        );
    }
}
