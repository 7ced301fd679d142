//! The NATS server's version and the JetStream features it really supports.
//!
//! Servers older than a feature do not always refuse it: 2.9 silently ignores multi-filter
//! consumers, per-message TTLs and atomic batch headers. So code that wants one asks [`Features`]
//! first instead of trusting the server to complain.

use std::fmt;

use crate::log::LogError;

/// A NATS server's version, `major.minor.patch` (a pre-release suffix such as `-RC.1` is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ServerVersion {
    /// The oldest server the log works with: 2.9 brought direct get and the KV layout used here.
    pub const MINIMUM: ServerVersion = ServerVersion::new(2, 9, 0);

    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `2.9.10`, `v2.15.1` or `2.11.0-RC.1`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self::new(major, minor, patch))
    }

    /// The version of the server `client` is connected to, as it said in its `INFO`.
    ///
    /// Fails with [`LogError::Unsupported`] when the version cannot be parsed or is older than
    /// [`ServerVersion::MINIMUM`].
    pub fn of(client: &async_nats::Client) -> Result<Self, LogError> {
        let raw = client.server_info().version;
        let version = Self::parse(&raw)
            .ok_or_else(|| LogError::Unsupported(format!("unrecognised server version {raw:?}")))?;
        if version < Self::MINIMUM {
            return Err(LogError::Unsupported(format!(
                "NATS server {version} is older than {}",
                Self::MINIMUM
            )));
        }
        Ok(version)
    }

    /// Whether this version is `major.minor` or newer.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= Self::new(major, minor, 0)
    }

    /// The JetStream features this version supports.
    pub fn features(self) -> Features {
        Features::of(self)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// JetStream features that depend on the server's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `jetstream { sync_interval: always }`: fsync every message (2.10+; 2.9 refuses the key).
    pub sync_always: bool,
    /// Atomic batch publish with `Nats-Batch-*` headers (2.12+; 2.9 stores them as plain messages).
    pub atomic_batch: bool,
    /// Consumers with several filter subjects (2.10+; 2.9 ignores `filter_subjects`).
    pub multi_filter: bool,
    /// Per-message TTL with the `Nats-TTL` header (2.11+; 2.9 ignores the header).
    pub msg_ttl: bool,
}

impl Features {
    /// The features of a server version.
    pub fn of(version: ServerVersion) -> Self {
        Self {
            sync_always: version.at_least(2, 10),
            atomic_batch: version.at_least(2, 12),
            multi_filter: version.at_least(2, 10),
            msg_ttl: version.at_least(2, 11),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            ServerVersion::parse("2.9.10"),
            Some(ServerVersion::new(2, 9, 10))
        );
        assert_eq!(
            ServerVersion::parse("v2.15.1"),
            Some(ServerVersion::new(2, 15, 1))
        );
        assert_eq!(
            ServerVersion::parse("2.11.0-RC.1"),
            Some(ServerVersion::new(2, 11, 0))
        );
        assert_eq!(
            ServerVersion::parse("2.10"),
            Some(ServerVersion::new(2, 10, 0))
        );
        assert_eq!(ServerVersion::parse(""), None);
        assert_eq!(ServerVersion::parse("2.x.1"), None);
        assert_eq!(ServerVersion::parse("1.2.3.4"), None);
    }

    #[test]
    fn orders_numerically() {
        assert!(ServerVersion::new(2, 10, 0) > ServerVersion::new(2, 9, 10));
        assert!(ServerVersion::new(2, 9, 10) >= ServerVersion::MINIMUM);
    }

    #[test]
    fn features_by_version() {
        let old = ServerVersion::new(2, 9, 10).features();
        assert_eq!(
            old,
            Features {
                sync_always: false,
                atomic_batch: false,
                multi_filter: false,
                msg_ttl: false
            }
        );
        let v211 = ServerVersion::new(2, 11, 4).features();
        assert!(v211.sync_always && v211.multi_filter && v211.msg_ttl && !v211.atomic_batch);
        let new = ServerVersion::new(2, 15, 1).features();
        assert!(new.sync_always && new.atomic_batch && new.multi_filter && new.msg_ttl);
    }
}
