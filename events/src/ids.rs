//! Validated identifiers.
//!
//! Session and VM ids become NATS subject tokens, so they are restricted to `[A-Za-z0-9_-]`, 1 to 64
//! characters. User and game ids come from other systems and accept any printable ASCII without spaces,
//! up to 128 characters. A command id (an `Idempotency-Key` over HTTP) accepts up to 255 such characters.
//! Every id is checked when it is parsed, including when it is decoded from bytes or JSON, so an invalid
//! id can never reach the domain or a subject.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The string is longer than allowed.
    #[error("{kind} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The string holds a character that is not allowed.
    #[error("{kind} holds {ch:?}, allowed: {allowed}")]
    BadChar {
        /// Which kind of id.
        kind: &'static str,
        /// The first offending character.
        ch: char,
        /// What is allowed.
        allowed: &'static str,
    },
}

fn subject_token(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn printable(c: char) -> bool {
    c.is_ascii_graphic()
}

fn label_key(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | '/')
}

fn check(
    kind: &'static str,
    s: &str,
    max: usize,
    ok: fn(char) -> bool,
    allowed: &'static str,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    if let Some(ch) = s.chars().find(|c| !ok(*c)) {
        return Err(IdError::BadChar { kind, ch, allowed });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $ok:expr, $allowed:literal, $pattern:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest accepted id, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Parses and validates an id.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check($kind, &s, $max, $ok, $allowed)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": $pattern,
                })
            }
        }
    };
}

id_type!(
    /// A play session's id; also a NATS subject token.
    SessionId, "session_id", 64, subject_token, "A-Z a-z 0-9 _ -", "^[A-Za-z0-9_-]+$"
);
id_type!(
    /// A VM's id; also a NATS subject token.
    VmId, "vm_id", 64, subject_token, "A-Z a-z 0-9 _ -", "^[A-Za-z0-9_-]+$"
);
id_type!(
    /// A cell's name: a pool of VMs with its own writer and stream.
    CellId, "cell", 32, subject_token, "A-Z a-z 0-9 _ -", "^[A-Za-z0-9_-]+$"
);
id_type!(
    /// A user's id, as the identity provider spells it.
    UserId, "user_id", 128, printable, "printable ASCII without spaces", "^[!-~]+$"
);
id_type!(
    /// A game's id, as the catalogue spells it.
    GameId, "game_id", 128, printable, "printable ASCII without spaces", "^[!-~]+$"
);
id_type!(
    /// A command's id: the idempotency key. A retry with the same id returns the first result.
    CommandId, "command_id", 255, printable, "printable ASCII without spaces", "^[!-~]+$"
);
id_type!(
    /// A label key, such as `region` or `gpu`.
    LabelKey, "label key", 63, label_key, "a-z 0-9 _ - . /", "^[a-z0-9_./-]+$"
);
id_type!(
    /// A label value, such as `eu-west` or `a10`.
    LabelValue, "label value", 128, printable, "printable ASCII without spaces", "^[!-~]+$"
);

id_type!(
    /// A host name or IP address a client connects to, such as `10.0.4.17` or `vm-42.eu.example.net`.
    Host, "address", 253, printable, "printable ASCII without spaces", "^[!-~]+$"
);

/// Labels of a VM, or the labels a session requires of its VM. Sorted, so encoding is deterministic.
pub type Labels = BTreeMap<LabelKey, LabelValue>;

/// The most labels a VM or a session's requirements may carry.
pub const MAX_LABELS: usize = 32;

impl CellId {
    /// The default cell's name.
    pub fn default_cell() -> Self {
        Self("default".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_ids_reject_subject_syntax() {
        for bad in ["a.b", "a*", ">", "a b", "", "é"] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?}");
            assert!(VmId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SessionId::parse("s_01-AB").is_ok());
        assert!(SessionId::parse("x".repeat(65)).is_err());
    }

    #[test]
    fn printable_ids_accept_provider_ids() {
        assert!(UserId::parse("auth0|abc@example.com").is_ok());
        assert!(UserId::parse("has space").is_err());
        assert!(CommandId::parse("k".repeat(255)).is_ok());
        assert!(CommandId::parse("k".repeat(256)).is_err());
    }

    #[test]
    fn deserialising_validates() {
        let err = serde_json::from_str::<SessionId>("\"a.b\"").unwrap_err();
        assert!(err.to_string().contains("session_id"), "{err}");
    }
}
