//! How `serve` secures NATS: the embedded server's users and TLS certificate, and which user each
//! role connects as.
//!
//! With `--nats-auth` the embedded server runs with the users of `<data-dir>/nats/credentials.toml`
//! (one per role, generated at the first start) and their subject permissions
//! ([`crate::nats_server::auth::permissions`]); each role then connects as the user of its role. With
//! an external server, `--nats-credentials FILE` names the users the roles connect as.

use std::path::{Path, PathBuf};

use orchestrator_events::CellId;

use super::ServeError;
use crate::log::connection::ClientAuth;
use crate::nats_server::credentials::{self, CREDENTIALS_FILE};
use crate::nats_server::{NatsAuth, NatsRole, NatsTls};

/// How `serve`'s NATS is secured. The default: not at all (any local client may do anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// Run the embedded server with users and per-role permissions.
    pub auth: bool,
    /// The credentials file the roles take their users from. With [`Self::auth`] its default is
    /// `<data-dir>/nats/credentials.toml`, generated if missing.
    pub credentials: Option<PathBuf>,
    /// The embedded server's TLS certificate and key (PEM), both or neither.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    /// The CA the roles verify the server with (PEM). With the embedded server its default is
    /// the certificate itself; given alone with an external server, it asks for TLS.
    pub tls_ca: Option<PathBuf>,
}

/// What the roles connect with, and what the embedded server runs with.
#[derive(Debug, Clone, Default)]
pub(super) struct Secured {
    /// The users, when the server has some.
    pub users: Option<NatsAuth>,
    /// The file they come from.
    pub credentials: Option<PathBuf>,
    /// The embedded server's certificate.
    pub tls: Option<NatsTls>,
    /// Whether the roles speak TLS, and the CA they trust.
    pub tls_root: Option<Option<PathBuf>>,
}

impl NatsSecurity {
    /// The users and TLS settings for `cell`, reading (or, for the embedded server with
    /// [`Self::auth`], generating) the credentials file.
    pub(super) fn resolve(
        &self,
        embedded: bool,
        data_dir: &Path,
        cell: &CellId,
    ) -> Result<Secured, ServeError> {
        let invalid = |m: &str| ServeError::Security(m.to_owned());
        if !embedded && self.auth {
            return Err(invalid(
                "--nats-auth secures the embedded server: with --nats-url, give the roles' users \
                 with --nats-credentials",
            ));
        }
        if !embedded && self.tls_cert.is_some() {
            return Err(invalid(
                "--nats-tls-cert and --nats-tls-key are the embedded server's: with --nats-url, \
                 give the CA with --nats-tls-ca",
            ));
        }
        let path = match (&self.credentials, self.auth) {
            (None, true) => Some(data_dir.join("nats").join(CREDENTIALS_FILE)),
            (path, _) => path.clone(),
        };
        let users = match (&path, self.auth) {
            (Some(path), true) => Some(credentials::load_or_generate(path, cell)?),
            (Some(path), false) => {
                let users = credentials::load(path)?;
                if &users.cell != cell {
                    return Err(credentials::CredentialsError::OtherCell {
                        path: path.clone(),
                        found: users.cell,
                        wanted: cell.clone(),
                    }
                    .into());
                }
                Some(users)
            }
            (None, _) => None,
        };
        let tls = self.tls_cert.as_ref().map(|(cert, key)| NatsTls {
            cert: cert.clone(),
            key: key.clone(),
            ca: self.tls_ca.clone(),
        });
        let tls_root = match (&tls, &self.tls_ca) {
            (Some(tls), _) => Some(Some(tls.client_root().to_owned())),
            (None, Some(ca)) => Some(Some(ca.clone())),
            (None, None) => None,
        };
        Ok(Secured {
            users,
            credentials: path,
            tls,
            tls_root,
        })
    }
}

impl Secured {
    /// One line for the start banner.
    pub fn describe(&self) -> String {
        let users = match (&self.users, &self.credentials) {
            (Some(users), Some(path)) => format!(
                "{} users with role permissions, the roles' own from {}",
                users.users.len(),
                path.display()
            ),
            _ => "no users: any client that reaches the server may do anything".to_owned(),
        };
        let tls = if self.tls_root.is_some() {
            "TLS"
        } else {
            "no TLS"
        };
        format!("{users}; {tls}")
    }

    /// How the connection of a role connecting as `role` authenticates: as the file's first user
    /// of that role. Fails when the file has none.
    pub fn client(&self, role: NatsRole) -> Result<ClientAuth, ServeError> {
        let mut auth = match &self.users {
            Some(users) => {
                let user = users.user(role).ok_or_else(|| {
                    ServeError::Security(format!(
                        "the credentials file has no user of role {role}: add one with \
                         `orchestrator nats-user add --role {role} NAME`"
                    ))
                })?;
                ClientAuth::user(user.name.clone(), user.password.clone())
            }
            None => ClientAuth::default(),
        };
        if let Some(root) = &self.tls_root {
            auth = auth.with_tls(root.clone());
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_server_gets_generated_users_and_each_role_its_own() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let security = NatsSecurity {
            auth: true,
            ..NatsSecurity::default()
        };
        let secured = security
            .resolve(true, dir.path(), &CellId::default_cell())
            .expect("generated");
        assert!(dir.path().join("nats").join(CREDENTIALS_FILE).is_file());
        let writer = secured.client(NatsRole::Writer).expect("a writer user");
        let reader = secured.client(NatsRole::Reader).expect("a reader user");
        assert_ne!(writer, reader);
        assert!(
            secured.describe().contains("7 users"),
            "{}",
            secured.describe()
        );
        let open = NatsSecurity::default()
            .resolve(true, dir.path(), &CellId::default_cell())
            .expect("nothing to read");
        assert_eq!(
            open.client(NatsRole::Writer).expect("anyone"),
            ClientAuth::default()
        );
    }

    #[test]
    fn embedded_only_settings_are_refused_with_an_external_server() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let cell = CellId::default_cell();
        let auth = NatsSecurity {
            auth: true,
            ..NatsSecurity::default()
        };
        assert!(matches!(
            auth.resolve(false, dir.path(), &cell),
            Err(ServeError::Security(_))
        ));
        let tls = NatsSecurity {
            tls_cert: Some(("cert.pem".into(), "key.pem".into())),
            ..NatsSecurity::default()
        };
        assert!(matches!(
            tls.resolve(false, dir.path(), &cell),
            Err(ServeError::Security(_))
        ));
        let ca = NatsSecurity {
            tls_ca: Some("ca.pem".into()),
            ..NatsSecurity::default()
        };
        let secured = ca
            .resolve(false, dir.path(), &cell)
            .expect("TLS to an external server");
        let client = secured.client(NatsRole::Bridge).expect("no users");
        assert!(client.tls_required && client.tls_root == Some("ca.pem".into()));
    }
}
