//! Command-line arguments (clap derive) and the small value parsers they need.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Start N Serf agents (Go `serf` and/or Vassal) on loopback and measure them side by side.
#[derive(Debug, Parser)]
#[command(
    name = "cluster-bench",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print Markdown tables (per start mode and N) from a JSON-lines results file.
    Summarize {
        /// The file written with `--out`.
        file: PathBuf,
    },
}

/// Which implementation a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Kind {
    Go,
    Vassal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Go => "go",
            Kind::Vassal => "vassal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartMode {
    /// Each agent is spawned once the previous one's RPC answers.
    Sequential,
    /// The seed first, then all N-1 at once.
    Burst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JoinMode {
    /// `-join=SEED` (the agent gives up if the join fails).
    Join,
    /// `-retry-join=SEED -retry-interval=1s`.
    Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AddrMode {
    /// Every agent its own 127.x.y.z address, gossip on :7946 and RPC on :7373.
    Ip,
    /// All agents on one 127.x.y.z address, consecutive ports.
    Port,
}

impl StartMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StartMode::Sequential => "sequential",
            StartMode::Burst => "burst",
        }
    }
}

impl JoinMode {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinMode::Join => "join",
            JoinMode::Retry => "retry",
        }
    }
}

impl AddrMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AddrMode::Ip => "ip",
            AddrMode::Port => "port",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The Go agent binary.
    #[arg(long, default_value = "/usr/bin/serf")]
    pub go: PathBuf,
    /// The Vassal agent binary (`cargo build --release -p vassal`).
    #[arg(long, default_value = "target/release/vassal")]
    pub vassal: PathBuf,
    /// Which implementations to run, alternating within each rep.
    #[arg(long, value_delimiter = ',', default_value = "go,vassal")]
    pub kinds: Vec<Kind>,
    /// Cluster sizes N.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub sizes: Vec<usize>,
    /// Cluster lifetimes per size and kind.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    #[arg(long, value_enum, default_value = "sequential")]
    pub start: StartMode,
    /// How the non-seed agents join the seed.
    #[arg(long, value_enum, default_value = "join")]
    pub join_mode: JoinMode,
    #[arg(long, value_enum, default_value = "ip")]
    pub addr_mode: AddrMode,
    /// Agents polled over the RPC (default: all up to 100, else a random 100 plus the seed).
    #[arg(long)]
    pub observers: Option<usize>,
    /// Quiet time after convergence before the idle window: long enough for the join
    /// gossip (memberlist's alive and Serf's join intent of every node, each retransmitted by
    /// every node) and the first round of push/pulls to be over, so that the window measures
    /// an idle cluster and not the tail of its start.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub settle: Duration,
    /// The idle window over which CPU and loopback traffic are measured.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub idle: Duration,
    /// User events (-coalesce=false) per cluster lifetime.
    #[arg(long, default_value_t = 3)]
    pub events: usize,
    /// Queries per cluster lifetime.
    #[arg(long, default_value_t = 3)]
    pub queries: usize,
    /// The RPC poll interval of each observer.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub poll_interval: Duration,
    /// Run the handler for member events too (`false`: user events and queries only, for
    /// scale runs, where every member event is one handler process per agent).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub member_handlers: bool,
    /// Agents killed at once (kill -9) in the failure scenario.
    #[arg(long, default_value_t = 1)]
    pub kill: usize,
    /// Pause between scenarios.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub gap: Duration,
    /// Give up on convergence after this long (from the last spawn).
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub conv_timeout: Duration,
    /// Give up waiting for `failed` / `left` after this long.
    #[arg(long, value_parser = parse_duration, default_value = "90s")]
    pub status_timeout: Duration,
    /// Give up waiting for an event's or a query's handlers after this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub event_timeout: Duration,
    /// How long to wait for member-event handlers once the RPC view is complete (the Go agent
    /// coalesces member events for 1-3 s).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub handler_timeout: Duration,
    /// Random seed (addresses, observer sample, victims, event origins); random if not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Append every record to this JSON-lines file as well as printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// After the run, print the summary of `--out`.
    #[arg(long, requires = "out")]
    pub summary: bool,
    /// Keep the work directory (agent logs, handler scripts and logs) under /tmp.
    #[arg(long)]
    pub keep: bool,
}

/// `250ms`, `1.5s`, `2m`, or plain seconds (`30`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 500ms, 10s, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn parses_lists() {
        let cli = Cli::try_parse_from([
            "cluster-bench",
            "--sizes",
            "5,20",
            "--kinds",
            "vassal",
            "--start",
            "burst",
            "--join-mode",
            "retry",
        ])
        .unwrap();
        assert_eq!(cli.run.sizes, vec![5, 20]);
        assert_eq!(cli.run.kinds, vec![Kind::Vassal]);
        assert_eq!(cli.run.start, StartMode::Burst);
        assert_eq!(cli.run.join_mode, JoinMode::Retry);
        let cli = Cli::try_parse_from(["cluster-bench", "summarize", "x.jsonl"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Summarize { .. })));
    }
}
