//! Bearer tokens and the principals they stand for, loaded once at start from a tokens file (TOML or
//! JSON) and/or the `ORCH_TOKENS` variable.
//!
//! A tokens file maps each token to a principal:
//!
//! ```json
//! { "tok-alice": { "id": "alice", "role": "player" }, "tok-ops": { "id": "ops", "role": "operator" } }
//! ```
//!
//! ```toml
//! tok-alice = { id = "alice", role = "player" }
//! tok-ops = { id = "ops", role = "operator" }
//! ```
//!
//! `ORCH_TOKENS` holds the same as `token=role:id` pairs separated by commas:
//! `tok1=player:alice,tok2=operator:ops,tok3=service:gateway` (such tokens cannot hold `=` or `,`).
//! Tokens are kept as SHA-256 digests, so a lookup's time does not depend on how much of a guess
//! matches.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use orchestrator_events::{Actor, UserId};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A player: acts only on their own sessions.
    Player,
    /// An operator: everything, VM operations included.
    Operator,
    /// A service (the gateway): acts for any user; reads VMs, does not change them.
    Service,
}

impl Role {
    /// The role as written in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Player => "player",
            Role::Operator => "operator",
            Role::Service => "service",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Player, Role::Operator, Role::Service]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// Its role.
    pub role: Role,
    /// Its id: a user id for a player, a login for an operator, a name for a service.
    pub id: String,
}

impl Principal {
    /// The actor the writer records for this principal's commands.
    pub fn actor(&self) -> Actor {
        match self.role {
            Role::Player => Actor::user(&self.id),
            Role::Operator => Actor::operator(&self.id),
            Role::Service => Actor::service(&self.id),
        }
    }

    /// A player's user id; `None` for operators and services.
    pub fn player(&self) -> Option<UserId> {
        match self.role {
            // Checked when the tokens were loaded.
            Role::Player => UserId::parse(self.id.clone()).ok(),
            _ => None,
        }
    }

    /// A stable key for per-principal maps (rate limits, in-flight keys).
    pub fn key(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.id)
    }
}

/// Why tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("reading tokens file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is neither JSON nor TOML of the expected shape.
    #[error("tokens file {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// An entry is invalid (empty token, unknown role, a player id that is no user id...).
    #[error("invalid token entry {entry}: {reason}")]
    Entry {
        /// Which entry (never the token itself).
        entry: String,
        /// What was wrong.
        reason: String,
    },
    /// The same token is given twice.
    #[error("a token is defined twice (for {first} and {second})")]
    Duplicate {
        /// The first principal.
        first: String,
        /// The second.
        second: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    role: String,
}

/// The known tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Adds a token for `role:id`.
    pub fn insert(&mut self, token: &str, role: &str, id: &str) -> Result<(), TokenError> {
        let entry = format!("{role}:{id}");
        let bad = |reason: &str| TokenError::Entry {
            entry: entry.clone(),
            reason: reason.to_owned(),
        };
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("a token must be non-empty, without spaces"));
        }
        let role =
            Role::parse(role).ok_or_else(|| bad("the role must be player, operator or service"))?;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("the id must be printable ASCII without spaces"));
        }
        if role == Role::Player {
            UserId::parse(id).map_err(|e| bad(&e.to_string()))?;
        }
        let principal = Principal {
            role,
            id: id.to_owned(),
        };
        if let Some(first) = self.by_digest.get(&digest(token)) {
            return Err(TokenError::Duplicate {
                first: first.key(),
                second: principal.key(),
            });
        }
        self.by_digest.insert(digest(token), principal);
        Ok(())
    }

    /// Adds the `token=role:id,...` pairs of `ORCH_TOKENS`.
    pub fn add_inline(&mut self, spec: &str) -> Result<(), TokenError> {
        for (i, pair) in spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let parsed = pair
                .split_once('=')
                .and_then(|(token, who)| who.split_once(':').map(|(role, id)| (token, role, id)));
            let Some((token, role, id)) = parsed else {
                return Err(TokenError::Entry {
                    entry: format!("#{} of ORCH_TOKENS", i + 1),
                    reason: "expected token=role:id".into(),
                });
            };
            self.insert(token.trim(), role.trim(), id.trim())?;
        }
        Ok(())
    }

    /// Adds the tokens of a file: JSON when it ends in `.json` or starts with `{`, else TOML.
    pub fn add_file(&mut self, path: &Path) -> Result<(), TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        let json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        let entries: BTreeMap<String, Entry> = if json {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        }
        .map_err(|reason| TokenError::Parse {
            path: shown,
            reason,
        })?;
        for (token, entry) in &entries {
            self.insert(token, &entry.role, &entry.id)?;
        }
        Ok(())
    }

    /// The principal a token stands for.
    pub fn lookup(&self, token: &str) -> Option<&Principal> {
        self.by_digest.get(&digest(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inline_tokens() {
        let mut t = Tokens::new();
        t.add_inline("tok1=player:alice, tok2=operator:ops,tok3=service:gateway")
            .unwrap();
        assert_eq!(t.len(), 3);
        let p = t.lookup("tok1").unwrap();
        assert_eq!((p.role, p.id.as_str()), (Role::Player, "alice"));
        assert!(t.lookup("tok4").is_none());
        assert!(Tokens::new().add_inline("tok1=king:alice").is_err());
        assert!(Tokens::new().add_inline("tok1").is_err());
        assert!(Tokens::new().add_inline("a=player:x,a=player:y").is_err());
        assert!(Tokens::new().add_inline("a=player:has space").is_err());
    }

    #[test]
    fn parses_files() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("t.json");
        std::fs::write(&json, r#"{"j1": {"id": "alice", "role": "player"}}"#).unwrap();
        let toml = dir.path().join("t.toml");
        std::fs::write(&toml, "t1 = { id = \"ops\", role = \"operator\" }\n").unwrap();
        let mut t = Tokens::new();
        t.add_file(&json).unwrap();
        t.add_file(&toml).unwrap();
        assert_eq!(t.lookup("t1").unwrap().role, Role::Operator);
        assert_eq!(t.lookup("j1").unwrap().id, "alice");
        std::fs::write(&toml, "t1 = { id = \"ops\" }\n").unwrap();
        assert!(Tokens::new().add_file(&toml).is_err());
    }
}
