//! The credentials file, `<data-dir>/nats/credentials.toml`: the NATS users of a secured server,
//! their roles and passwords, readable by its owner only (mode 0600).
//!
//! `serve --nats-auth` writes it at the embedded server's first start, one user per role named
//! after it; `orchestrator nats-user add` appends a user. The server's `auth.conf` is rendered
//! from it ([`NatsAuth::render`]).

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use orchestrator_events::CellId;
use serde::{Deserialize, Serialize};

use super::auth::{valid_name, AuthError, NatsAuth, NatsRole, NatsUser};

/// The credentials file's name, in the embedded server's directory (`<data-dir>/nats`).
pub const CREDENTIALS_FILE: &str = "credentials.toml";

/// Why the credentials file could not be read, written or changed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read or written: check the path and its permissions.
    #[error("{path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a credentials file: fix it by hand, or move it away to start afresh.
    #[error("{path:?}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file was written for another cell: its users' permissions name that cell's subjects.
    #[error("{path:?} is for cell {found}, not {wanted}")]
    OtherCell {
        /// The file.
        path: PathBuf,
        /// The cell it names.
        found: CellId,
        /// The cell asked for.
        wanted: CellId,
    },
    /// A user cannot be added (its name is taken or invalid) or removed (unknown, or one the
    /// orchestrator's own processes use).
    #[error(transparent)]
    User(#[from] AuthError),
}

/// The file's layout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    cell: CellId,
    #[serde(rename = "user", default)]
    users: Vec<NatsUser>,
}

/// A new random password: 64 hex digits (two v4 UUIDs, 244 random bits).
pub fn new_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// One user per role, each named after its role, with new passwords.
pub fn generate(cell: &CellId) -> NatsAuth {
    NatsAuth {
        cell: cell.clone(),
        users: NatsRole::ALL
            .iter()
            .map(|role| NatsUser {
                name: role.name().to_owned(),
                role: *role,
                password: new_password(),
            })
            .collect(),
    }
}

/// Reads and checks the credentials file at `path`.
pub fn load(path: &Path) -> Result<NatsAuth, CredentialsError> {
    let text = fs::read_to_string(path).map_err(|source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let file: File = toml::from_str(&text).map_err(|e| CredentialsError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let auth = NatsAuth {
        cell: file.cell,
        users: file.users,
    };
    auth.validate().map_err(|e| CredentialsError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(auth)
}

/// Writes `auth` to `path` with mode 0600 (through a temporary file renamed over it, so a reader
/// never sees half a file).
pub fn save(path: &Path, auth: &NatsAuth) -> Result<(), CredentialsError> {
    auth.validate()?;
    let file = File {
        cell: auth.cell.clone(),
        users: auth.users.clone(),
    };
    let body = toml::to_string(&file).map_err(|e| CredentialsError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let text = format!(
        "# NATS users of the orchestrator's server: keep this file secret (mode 0600).\n\
         # Add one with `orchestrator nats-user add --role reader NAME`.\n{body}"
    );
    write_private(path, &text)
}

/// Writes `text` to `path`, readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> Result<(), CredentialsError> {
    let io = |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    // The mode above applies to a new file only; an old temporary file gets it here.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// The credentials at `path` for `cell`: read if the file exists, else generated ([`generate`])
/// and written.
pub fn load_or_generate(path: &Path, cell: &CellId) -> Result<NatsAuth, CredentialsError> {
    if path.exists() {
        let auth = load(path)?;
        if &auth.cell != cell {
            return Err(CredentialsError::OtherCell {
                path: path.to_owned(),
                found: auth.cell,
                wanted: cell.clone(),
            });
        }
        return Ok(auth);
    }
    let auth = generate(cell);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| CredentialsError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    save(path, &auth)?;
    Ok(auth)
}

/// Adds a user named `name` with `role` and a new password to the file at `path`; returns it.
pub fn add_user(path: &Path, name: &str, role: NatsRole) -> Result<NatsUser, CredentialsError> {
    if !valid_name(name) {
        return Err(AuthError::BadName(name.to_owned()).into());
    }
    let mut auth = load(path)?;
    if auth.users.iter().any(|u| u.name == name) {
        return Err(AuthError::Duplicate(name.to_owned()).into());
    }
    let user = NatsUser {
        name: name.to_owned(),
        role,
        password: new_password(),
    };
    auth.users.push(user.clone());
    save(path, &auth)?;
    Ok(user)
}

/// Removes the user named `name` from the file at `path`; returns it. The users the orchestrator's
/// own processes connect as ([`NatsAuth::user`] of each role) are refused.
pub fn remove_user(path: &Path, name: &str) -> Result<NatsUser, CredentialsError> {
    let mut auth = load(path)?;
    let Some(at) = auth.users.iter().position(|u| u.name == name) else {
        return Err(AuthError::Unknown(name.to_owned()).into());
    };
    let role = auth.users[at].role;
    if auth.user(role).is_some_and(|u| u.name == name) {
        return Err(AuthError::InUse {
            name: name.to_owned(),
            role,
        }
        .into());
    }
    let user = auth.users.remove(at);
    save(path, &auth)?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_read_back_private() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("nats").join(CREDENTIALS_FILE);
        let cell = CellId::default_cell();
        let first = load_or_generate(&path, &cell).expect("generated");
        assert_eq!(first.users.len(), NatsRole::ALL.len());
        let mode = fs::metadata(&path).expect("written").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_generate(&path, &cell).expect("read");
        assert_eq!(again, first, "not regenerated");
        let other: CellId = "eu-1".parse().expect("a cell");
        assert!(matches!(
            load_or_generate(&path, &other),
            Err(CredentialsError::OtherCell { .. })
        ));
    }

    #[test]
    fn adds_a_user_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join(CREDENTIALS_FILE);
        load_or_generate(&path, &CellId::default_cell()).expect("generated");
        let added = add_user(&path, "analytics", NatsRole::Reader).expect("added");
        assert_eq!(
            load(&path)
                .expect("read")
                .user(NatsRole::Reader)
                .map(|u| &u.name),
            Some(&"reader".to_owned())
        );
        assert!(load(&path).expect("read").users.contains(&added));
        assert!(matches!(
            add_user(&path, "analytics", NatsRole::Reader),
            Err(CredentialsError::User(AuthError::Duplicate(_)))
        ));
        assert!(matches!(
            add_user(&path, "bad name", NatsRole::Reader),
            Err(CredentialsError::User(AuthError::BadName(_)))
        ));
    }

    #[test]
    fn removes_an_added_user_but_never_one_the_orchestrator_connects_as() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join(CREDENTIALS_FILE);
        let before = load_or_generate(&path, &CellId::default_cell()).expect("generated");
        let added = add_user(&path, "analytics", NatsRole::Reader).expect("added");
        assert!(matches!(
            remove_user(&path, "reader"),
            Err(CredentialsError::User(AuthError::InUse {
                role: NatsRole::Reader,
                ..
            }))
        ));
        assert!(matches!(
            remove_user(&path, "nobody"),
            Err(CredentialsError::User(AuthError::Unknown(_)))
        ));
        assert_eq!(remove_user(&path, "analytics").expect("removed"), added);
        let after = load(&path).expect("read");
        assert_eq!(after, before, "back to the generated users");
        assert_eq!(
            fs::metadata(&path).expect("written").permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            remove_user(&path, "analytics"),
            Err(CredentialsError::User(AuthError::Unknown(_)))
        ));
    }
}
