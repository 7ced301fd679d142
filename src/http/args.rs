//! The bridge's configuration: flags and environment, read once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the HTTP bridge runs (flattened into `orchestrator serve`).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct BridgeArgs {
    /// The address the bridge listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A tokens file (TOML or JSON): token → {id, role}, role one of player, operator, service.
    #[arg(long, env = "ORCH_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Tokens as `token=role:id` pairs separated by commas. Prefer the environment variable: a flag
    /// shows in the process list.
    #[arg(long, env = "ORCH_TOKENS", hide_env_values = true)]
    pub tokens: Option<String>,

    /// The largest request body accepted, in bytes (suffixes KiB, MiB, k, M accepted).
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    pub body_limit: usize,

    /// Requests per second allowed per principal (token bucket); 0 disables the limit.
    #[arg(long, default_value_t = 50.0)]
    pub rate_limit: f64,

    /// Requests a principal may send at once above the rate (the bucket's size).
    #[arg(long, default_value_t = 100)]
    pub rate_burst: u32,

    /// How long to wait for the writer's answer to a command, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,

    /// Command requests to the writer in flight at once: commands that arrive while all are busy
    /// leave together, as one batch request, with the next free one (1: one request at a time).
    #[arg(long, env = "ORCH_COMMAND_REQUESTS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub command_requests: u16,

    /// How long a command's response waits for the projections to show its effect, e.g. `2s`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub read_your_writes_timeout: Duration,
    /// Event feeds (`GET /v1/events`) one caller may have open at once.
    #[arg(long, env = "ORCH_MAX_FEEDS_PER_CALLER", default_value_t = 4)]
    pub max_feeds_per_caller: usize,
    /// Event feeds this bridge serves at once, all callers together.
    #[arg(long, env = "ORCH_MAX_FEEDS", default_value_t = 256)]
    pub max_feeds: usize,
}

impl Default for BridgeArgs {
    /// The same defaults as the flags, with no tokens.
    fn default() -> Self {
        Self {
            // A literal socket address always parses.
            listen: "127.0.0.1:8080".parse().expect("a valid address"),
            tokens_file: None,
            tokens: None,
            body_limit: 64 * 1024,
            rate_limit: 50.0,
            rate_burst: 100,
            command_timeout: Duration::from_secs(5),
            command_requests: 4,
            read_your_writes_timeout: Duration::from_secs(2),
            max_feeds_per_caller: 4,
            max_feeds: 256,
        }
    }
}

/// Parses a size such as `65536`, `64KiB`, `64k` or `1MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 65536 or 64KiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?}: use KiB or MiB")),
    };
    n.checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bridge: BridgeArgs,
    }

    #[test]
    fn flag_defaults_match_default() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        // The environment may carry tokens; they are not defaults.
        let expected = BridgeArgs {
            tokens_file: cli.bridge.tokens_file.clone(),
            tokens: cli.bridge.tokens.clone(),
            ..BridgeArgs::default()
        };
        assert_eq!(cli.bridge, expected);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }
}
