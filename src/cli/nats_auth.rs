//! How the client subcommands authenticate to NATS: `--nats-user`/`--nats-password`, or a user of a
//! credentials file (`--nats-credentials`, the operator by default), and TLS (`--nats-tls-ca`).

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::log::connection::ClientAuth;
use crate::nats_server::{credentials, NatsRole};

/// The client side of a secured NATS server (`serve --nats-auth`).
#[derive(Debug, Clone, Default, Args)]
pub struct ClientAuthArgs {
    /// The NATS user (default with --nats-credentials: the file's operator user).
    #[arg(long, env = "ORCH_NATS_USER")]
    pub nats_user: Option<String>,
    /// The NATS user's password (prefer the environment variable: a flag shows in `ps`).
    #[arg(
        long,
        env = "ORCH_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// A credentials file (such as <data-dir>/nats/credentials.toml of `serve --nats-auth`) to take
    /// the user's password from.
    #[arg(long, env = "ORCH_NATS_CREDENTIALS", value_name = "FILE")]
    pub nats_credentials: Option<PathBuf>,
    /// Speak TLS, verifying the server with this CA certificate (PEM).
    #[arg(long, env = "ORCH_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
}

impl ClientAuthArgs {
    /// The user and TLS settings asked for; fails on a credentials file that cannot be read or
    /// that has no such user.
    pub fn client_auth(&self) -> Result<ClientAuth, CliError> {
        let mut auth =
            match (&self.nats_user, &self.nats_password, &self.nats_credentials) {
                (Some(user), Some(password), _) => ClientAuth::user(user.clone(), password.clone()),
                (user, None, Some(path)) => {
                    let users =
                        credentials::load(path).map_err(|e| CliError::Invalid(e.to_string()))?;
                    let found = match user {
                        Some(name) => users.users.iter().find(|u| &u.name == name),
                        None => users.user(NatsRole::Operator),
                    };
                    let found = found.ok_or_else(|| {
                        CliError::Invalid(format!(
                            "{}: no user {}",
                            path.display(),
                            user.as_deref().unwrap_or("of role operator")
                        ))
                    })?;
                    ClientAuth::user(found.name.clone(), found.password.clone())
                }
                (Some(_), None, None) => return Err(CliError::Invalid(
                    "--nats-user needs --nats-password ($ORCH_NATS_PASSWORD) or --nats-credentials"
                        .into(),
                )),
                (None, Some(_), Some(_)) => {
                    return Err(CliError::Invalid(
                        "--nats-password ($ORCH_NATS_PASSWORD) needs --nats-user".into(),
                    ))
                }
                (None, _, None) => ClientAuth::default(),
            };
        if let Some(ca) = &self.nats_tls_ca {
            auth = auth.with_tls(Some(ca.clone()));
        }
        Ok(auth)
    }
}
