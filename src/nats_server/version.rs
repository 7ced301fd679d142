//! The `nats-server` binary's version and the durability modes it can run in.

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use super::NatsServerError;
pub use crate::log::ServerVersion;

/// How often JetStream fsyncs its file store: a stated choice, never an accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// JetStream's own fsync schedule: every 2 minutes on new servers, 60 s hard-coded on 2.9. An
    /// acknowledged append survives a crash of the server process, but not a power loss of a single node.
    /// Works on every server version. Written and parsed as `default`.
    #[default]
    Default,
    /// `jetstream { sync_interval: always }`: each message is fsynced before it is acknowledged, so an
    /// acknowledged append survives a power loss; about 20x fewer single publishes per second. Only on
    /// servers >= 2.10 (2.9 refuses the key and does not start). Written and parsed as `always`.
    SyncAlways,
}

impl Durability {
    /// The oldest server version that can run in this mode.
    pub fn min_version(self) -> ServerVersion {
        match self {
            Durability::Default => ServerVersion::new(0, 0, 0),
            Durability::SyncAlways => SYNC_ALWAYS_MIN_VERSION,
        }
    }

    /// Whether a server of `version` can run in this mode.
    pub fn supported_by(self, version: ServerVersion) -> bool {
        version >= self.min_version()
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Default => "default",
            Durability::SyncAlways => "always",
        })
    }
}

/// A durability name that is neither `default` nor `always`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability {0:?}: expected \"default\" or \"always\"")]
pub struct ParseDurabilityError(pub String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Durability::Default),
            "always" => Ok(Durability::SyncAlways),
            other => Err(ParseDurabilityError(other.to_owned())),
        }
    }
}

/// The first server version that knows `jetstream { sync_interval }`.
pub const SYNC_ALWAYS_MIN_VERSION: ServerVersion = ServerVersion::new(2, 10, 0);

/// Finds the version in what `nats-server --version` prints (`nats-server: v2.9.10`), or in a bare
/// `2.9.10` / `v2.9.10`. `None` when no word of `output` is a version.
pub fn parse_version_output(output: &str) -> Option<ServerVersion> {
    output.split_whitespace().find_map(ServerVersion::parse)
}

/// Runs `bin --version` and parses what it prints. Blocks for the few milliseconds the binary takes.
pub fn binary_version(bin: &Path) -> Result<ServerVersion, NatsServerError> {
    let output = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|source| NatsServerError::Binary {
            bin: bin.to_owned(),
            source,
        })?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push(' ');
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    parse_version_output(&text).ok_or_else(|| NatsServerError::UnparsableVersion {
        bin: bin.to_owned(),
        output: text.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_binaries_print() {
        assert_eq!(
            parse_version_output("nats-server: v2.9.10\n"),
            Some(ServerVersion::new(2, 9, 10))
        );
        assert_eq!(
            parse_version_output("nats-server: v2.15.1"),
            Some(ServerVersion::new(2, 15, 1))
        );
    }

    #[test]
    fn parses_bare_and_prerelease_versions() {
        assert_eq!(
            parse_version_output("2.10.0"),
            Some(ServerVersion::new(2, 10, 0))
        );
        assert_eq!(
            parse_version_output("nats-server: v2.11.0-RC.1"),
            Some(ServerVersion::new(2, 11, 0))
        );
        assert_eq!(
            parse_version_output("v2.10"),
            Some(ServerVersion::new(2, 10, 0))
        );
    }

    #[test]
    fn refuses_text_without_a_version() {
        assert_eq!(parse_version_output(""), None);
        assert_eq!(parse_version_output("nats-server: unknown"), None);
        assert_eq!(parse_version_output("v2.x.1"), None);
        assert_eq!(parse_version_output("1.2.3.4"), None);
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(ServerVersion::new(2, 9, 10) < ServerVersion::new(2, 10, 0));
        assert!(ServerVersion::new(2, 15, 1) > SYNC_ALWAYS_MIN_VERSION);
        assert_eq!(ServerVersion::new(2, 9, 10).to_string(), "2.9.10");
    }

    #[test]
    fn sync_always_needs_2_10() {
        assert!(!Durability::SyncAlways.supported_by(ServerVersion::new(2, 9, 10)));
        assert!(Durability::SyncAlways.supported_by(ServerVersion::new(2, 10, 0)));
        assert!(Durability::Default.supported_by(ServerVersion::new(2, 9, 10)));
    }

    #[test]
    fn durability_round_trips_through_its_name() {
        for durability in [Durability::Default, Durability::SyncAlways] {
            assert_eq!(durability.to_string().parse(), Ok(durability));
        }
        assert_eq!(
            "sometimes".parse::<Durability>(),
            Err(ParseDurabilityError("sometimes".into()))
        );
    }
}
