//! A Go `flag`-package-compatible parser, one [`FlagSet`] per subcommand, so every Serf spelling
//! works: `-node=n1`, `-node n1`, `--node=n1`, `--node n1`; bool flags take no separate value
//! (`-replay`, `-replay=false`); repeatable flags collect every value; parsing stops at the first
//! argument that is not a flag, or after `--`.
//!
//! Serf flags we do not implement yet are declared [`Kind::Unimplemented`]: they parse (so a
//! value is not mistaken for an argument) and are then refused by name.

use std::collections::BTreeMap;
use std::fmt;

/// Go's durations, for the commands that take one (`-timeout`); it lives with the other
/// value parsers.
pub use crate::parse::parse_duration;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `-x` means true; a value only with `=`.
    Bool,
    /// One value; the last one given wins.
    Value,
    /// Repeatable; every value is kept in order.
    Multi,
    /// A Serf flag we parse but refuse; `bool` says whether it takes a separate value. No
    /// agent flag is refused today (`-syslog` was the last); kept for the next one.
    #[cfg_attr(not(test), allow(dead_code))]
    Unimplemented { bool: bool },
}

#[derive(Debug, Clone)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    /// Placeholder shown in help (`-node=<name>`); empty for bools.
    pub value: &'static str,
    pub help: &'static str,
}

/// The flags of one subcommand.
#[derive(Debug, Clone)]
pub struct FlagSet {
    pub command: &'static str,
    pub flags: Vec<Flag>,
}

/// What a command line said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    values: BTreeMap<&'static str, Vec<String>>,
    /// Positional arguments after the flags.
    pub args: Vec<String>,
}

/// Why a command line was refused (or help was asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    Help,
    Unknown {
        flag: String,
        command: &'static str,
    },
    MissingValue {
        flag: String,
    },
    BadSyntax {
        arg: String,
    },
    BadBool {
        flag: String,
        value: String,
    },
    BadValue {
        flag: String,
        value: String,
        why: String,
    },
    /// A configuration file was unusable; the message names the file, the key and the fix.
    Config(String),
    Unimplemented {
        flag: String,
        command: &'static str,
    },
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Help => f.write_str("help requested"),
            FlagError::Unknown { flag, command } => {
                write!(f, "unknown flag -{flag} (see vassal {command} -h)")
            }
            FlagError::MissingValue { flag } => write!(f, "flag needs an argument: -{flag}"),
            FlagError::BadSyntax { arg } => write!(f, "bad flag syntax: {arg}"),
            FlagError::BadBool { flag, value } => {
                write!(f, "invalid boolean value {value:?} for -{flag}")
            }
            FlagError::BadValue { flag, value, why } => {
                write!(f, "invalid value {value:?} for -{flag}: {why}")
            }
            FlagError::Config(msg) => f.write_str(msg),
            FlagError::Unimplemented { flag, command } => write!(
                f,
                "flag -{flag} is not implemented yet in vassal {command}; run without it"
            ),
        }
    }
}

impl std::error::Error for FlagError {}

impl FlagSet {
    pub fn new(command: &'static str) -> Self {
        FlagSet {
            command,
            flags: Vec::new(),
        }
    }

    pub fn flag(
        mut self,
        name: &'static str,
        kind: Kind,
        value: &'static str,
        help: &'static str,
    ) -> Self {
        self.flags.push(Flag {
            name,
            kind,
            value,
            help,
        });
        self
    }

    /// A Serf flag we refuse for now.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn unimplemented(self, name: &'static str, bool: bool) -> Self {
        self.flag(name, Kind::Unimplemented { bool }, "", "")
    }

    fn find(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// Parses `args` (without the program and subcommand names) like Go's `FlagSet.Parse`.
    pub fn parse<S: AsRef<str>>(&self, args: &[S]) -> Result<Parsed, FlagError> {
        let mut parsed = Parsed::default();
        let mut i = 0;
        while i < args.len() {
            let arg = args[i].as_ref();
            i += 1;
            if arg.len() < 2 || !arg.starts_with('-') {
                parsed.args.push(arg.to_owned());
                break;
            }
            if arg == "--" {
                break;
            }
            let body = arg
                .strip_prefix("--")
                .unwrap_or_else(|| arg.strip_prefix('-').expect("checked above"));
            if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
                return Err(FlagError::BadSyntax { arg: arg.into() });
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (body, None),
            };
            if name == "h" || name == "help" {
                return Err(FlagError::Help);
            }
            let Some(flag) = self.find(name) else {
                return Err(FlagError::Unknown {
                    flag: name.into(),
                    command: self.command,
                });
            };
            let takes_value = !matches!(flag.kind, Kind::Bool | Kind::Unimplemented { bool: true });
            let value = match (inline, takes_value) {
                (Some(v), _) => v,
                (None, false) => "true".into(),
                (None, true) => {
                    let Some(v) = args.get(i) else {
                        return Err(FlagError::MissingValue { flag: name.into() });
                    };
                    i += 1;
                    v.as_ref().to_owned()
                }
            };
            if !takes_value {
                parse_bool(&value).ok_or_else(|| FlagError::BadBool {
                    flag: name.into(),
                    value: value.clone(),
                })?;
            }
            if let Kind::Unimplemented { .. } = flag.kind {
                return Err(FlagError::Unimplemented {
                    flag: name.into(),
                    command: self.command,
                });
            }
            parsed.values.entry(flag.name).or_default().push(value);
        }
        parsed
            .args
            .extend(args[i..].iter().map(|a| a.as_ref().to_owned()));
        Ok(parsed)
    }

    /// `Usage: vassal agent [options]` and one line per implemented flag.
    pub fn usage(&self, summary: &str) -> String {
        let mut out = format!(
            "Usage: vassal {} [options]\n\n  {summary}\n\nOptions:\n\n",
            self.command
        );
        for f in &self.flags {
            if matches!(f.kind, Kind::Unimplemented { .. }) {
                continue;
            }
            let left = if f.value.is_empty() {
                format!("-{}", f.name)
            } else {
                format!("-{}={}", f.name, f.value)
            };
            out.push_str(&format!("  {left:<28} {}\n", f.help));
        }
        out
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl Parsed {
    /// The last value given for a single-valued flag.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value given for a repeatable flag, in order.
    pub fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn bool(&self, name: &str) -> bool {
        self.bool_or(name, false)
    }

    /// A bool flag's last value, or `default` if it was not given (a config file's setting,
    /// which a flag overrides either way).
    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        self.value(name).and_then(parse_bool).unwrap_or(default)
    }

    /// A value parsed by `parse`, or `default` if the flag was not given.
    pub fn parse_or<T>(
        &self,
        name: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, FlagError> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => parse(v).map_err(|why| FlagError::BadValue {
                flag: name.into(),
                value: v.into(),
                why,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> FlagSet {
        FlagSet::new("agent")
            .flag("node", Kind::Value, "name", "")
            .flag("join", Kind::Multi, "addr", "")
            .flag("replay", Kind::Bool, "", "")
            .unimplemented("rpc-addr", false)
            .unimplemented("syslog", true)
    }

    #[test]
    fn every_go_spelling_of_a_value_flag_works() {
        for args in [
            &["-node=n1"][..],
            &["-node", "n1"],
            &["--node=n1"],
            &["--node", "n1"],
        ] {
            let p = set().parse(args).unwrap();
            assert_eq!(p.value("node"), Some("n1"), "{args:?}");
        }
    }

    #[test]
    fn last_value_wins_and_multi_flags_collect_in_order() {
        let p = set()
            .parse(&["-node=a", "-join", "x", "--join=y", "-node", "b"])
            .unwrap();
        assert_eq!(p.value("node"), Some("b"));
        assert_eq!(p.values("join"), ["x", "y"]);
    }

    #[test]
    fn a_value_may_start_with_a_dash() {
        // Go's flag package takes the next argument whatever it looks like.
        let p = set().parse(&["-node", "-weird"]).unwrap();
        assert_eq!(p.value("node"), Some("-weird"));
    }

    #[test]
    fn bool_flags_take_no_separate_value() {
        let p = set().parse(&["-replay", "false"]).unwrap();
        assert!(p.bool("replay"));
        assert_eq!(p.args, ["false"]);
        let p = set().parse(&["--replay=false"]).unwrap();
        assert!(!p.bool("replay"));
        assert_eq!(
            set().parse(&["-replay=maybe"]),
            Err(FlagError::BadBool {
                flag: "replay".into(),
                value: "maybe".into()
            })
        );
    }

    #[test]
    fn parsing_stops_at_the_first_argument_or_double_dash() {
        let p = set().parse(&["-node=a", "arg", "-node=b"]).unwrap();
        assert_eq!(p.value("node"), Some("a"));
        assert_eq!(p.args, ["arg", "-node=b"]);
        let p = set().parse(&["--", "-node=b"]).unwrap();
        assert_eq!(p.args, ["-node=b"]);
        let p = set().parse(&["-", "x"]).unwrap();
        assert_eq!(p.args, ["-", "x"]);
    }

    #[test]
    fn unknown_flag_names_itself_and_the_help_command() {
        let e = set().parse(&["-foo"]).unwrap_err();
        assert_eq!(e.to_string(), "unknown flag -foo (see vassal agent -h)");
        let e = set().parse(&["--foo=1"]).unwrap_err();
        assert_eq!(e.to_string(), "unknown flag -foo (see vassal agent -h)");
    }

    #[test]
    fn missing_value_and_bad_syntax_are_errors() {
        assert_eq!(
            set().parse(&["-node"]),
            Err(FlagError::MissingValue {
                flag: "node".into()
            })
        );
        for arg in ["---node", "-=x", "--=x"] {
            assert_eq!(
                set().parse(&[arg]),
                Err(FlagError::BadSyntax { arg: arg.into() })
            );
        }
    }

    #[test]
    fn unimplemented_flags_are_refused_by_name() {
        let e = set().parse(&["-rpc-addr", "127.0.0.1:7373"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "flag -rpc-addr is not implemented yet in vassal agent; run without it"
        );
        assert!(matches!(
            set().parse(&["--syslog"]),
            Err(FlagError::Unimplemented { .. })
        ));
    }

    #[test]
    fn help_is_its_own_outcome() {
        assert_eq!(set().parse(&["-h"]), Err(FlagError::Help));
        assert_eq!(set().parse(&["--help"]), Err(FlagError::Help));
    }
}
