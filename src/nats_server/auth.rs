//! NATS users and what each role may publish and subscribe to: the `authorization` block of a
//! server's configuration, rendered from a [`NatsAuth`].
//!
//! The rendered block goes to a file of its own (`auth.conf` beside `nats-server.conf`, which
//! includes it), so adding a user rewrites that file only and a SIGHUP reloads it. Every user is
//! in the server's one account: the roles differ by their subject permissions, listed as allow
//! lists (anything not allowed is refused).

use std::fmt::Write as _;

use orchestrator_events::subject::{feed_stream_name, stream_name};
use orchestrator_events::CellId;
use serde::{Deserialize, Serialize};

use crate::log::DEFAULT_LEASE_BUCKET;

/// The file, beside the server's config, holding the `authorization` block.
pub const AUTH_FILE: &str = "auth.conf";

/// What a NATS user is for; it decides the user's subject permissions (see [`permissions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NatsRole {
    /// The cell's writer: reads commands and heartbeats, appends to the log, holds the lease.
    Writer,
    /// A projector: reads the log, answers `verify`.
    Projector,
    /// The feed: reads the log, writes the feed stream.
    Feed,
    /// The HTTP bridge, or a trusted service: sends commands, reads the log and the feed.
    Bridge,
    /// An analytics consumer: reads the log and the feed (consumers, stream info); publishes nothing
    /// else.
    Reader,
    /// A VM agent: publishes heartbeats only.
    Agent,
    /// The operator's CLI: everything (commands, quarantine, rebuild, stream administration).
    Operator,
}

impl NatsRole {
    /// Every role, in the order a generated credentials file lists them.
    pub const ALL: [NatsRole; 7] = [
        NatsRole::Writer,
        NatsRole::Projector,
        NatsRole::Feed,
        NatsRole::Bridge,
        NatsRole::Reader,
        NatsRole::Agent,
        NatsRole::Operator,
    ];

    /// The role's name, as in the credentials file.
    pub fn name(self) -> &'static str {
        match self {
            NatsRole::Writer => "writer",
            NatsRole::Projector => "projector",
            NatsRole::Feed => "feed",
            NatsRole::Bridge => "bridge",
            NatsRole::Reader => "reader",
            NatsRole::Agent => "agent",
            NatsRole::Operator => "operator",
        }
    }
}

impl std::fmt::Display for NatsRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One NATS user: a name, its password and its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatsUser {
    /// The user name (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// What the user may do.
    pub role: NatsRole,
    /// The password (printable ASCII without quotes or backslashes).
    pub password: String,
}

/// The users of a server, for one cell's subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsAuth {
    /// The cell whose subjects the permissions name.
    pub cell: CellId,
    /// Every user; at least one.
    pub users: Vec<NatsUser>,
}

/// The subjects a role may publish to and subscribe to; `allow_responses` lets it answer a
/// request on the request's reply subject, whatever it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may reply to the requests it receives.
    pub allow_responses: bool,
}

/// What reading the log and the feed through JetStream needs: account and stream info, message
/// gets (direct or not), consumers (create, info, next, delete), acks and flow-control replies.
const JS_READ: [&str; 9] = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.>",
    "$JS.ACK.>",
    "$JS.FC.>",
];

/// Replies to this client's requests, JetStream's included, and ordered consumers' deliveries.
const INBOX: &str = "_INBOX.>";

/// The permissions of `role` on `cell`'s subjects.
pub fn permissions(role: NatsRole, cell: &CellId) -> Permissions {
    let owned = |subjects: &[&str]| subjects.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let log = stream_name(cell);
    let feed = feed_stream_name(cell);
    let lease = DEFAULT_LEASE_BUCKET;
    let mut publish = owned(&JS_READ);
    let mut subscribe = vec![INBOX.to_owned()];
    let mut allow_responses = false;
    match role {
        NatsRole::Operator => {
            return Permissions {
                publish: vec![">".to_owned()],
                subscribe: vec![">".to_owned()],
                allow_responses: true,
            }
        }
        NatsRole::Writer => {
            publish.extend([
                format!("orch.{cell}.evt.>"),
                format!("$KV.{lease}.>"),
                format!("$JS.API.STREAM.CREATE.{log}"),
                format!("$JS.API.STREAM.UPDATE.{log}"),
                format!("$JS.API.STREAM.CREATE.KV_{lease}"),
                format!("$JS.API.STREAM.UPDATE.KV_{lease}"),
            ]);
            subscribe.extend([
                format!("orch.{cell}.cmd.>"),
                format!("orch.{cell}.heartbeat.*"),
                crate::admin::writer_subject(cell),
            ]);
            allow_responses = true;
        }
        NatsRole::Projector => {
            subscribe.push(crate::admin::projections_subject(cell));
            allow_responses = true;
        }
        NatsRole::Feed => publish.extend([
            format!("orch.{cell}.feed.>"),
            format!("$JS.API.STREAM.CREATE.{feed}"),
            format!("$JS.API.STREAM.UPDATE.{feed}"),
        ]),
        NatsRole::Bridge => publish.extend([
            format!("orch.{cell}.cmd.>"),
            crate::admin::projections_subject(cell),
            crate::admin::writer_subject(cell),
        ]),
        NatsRole::Reader => {}
        NatsRole::Agent => {
            publish = vec![format!("orch.{cell}.heartbeat.*")];
        }
    }
    Permissions {
        publish,
        subscribe,
        allow_responses,
    }
}

/// Why a user cannot be written into a server's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A user name holds a character the config language or a connect URL would misread: use
    /// letters, digits, `_`, `-` and `.`.
    #[error("user name {0:?}: use letters, digits, _, - and . (1 to 64 of them)")]
    BadName(String),
    /// A password holds a quote, a backslash, a space or a control character, or is empty.
    #[error("the password of {0:?} must be 1 to 128 printable ASCII characters, no quote, backslash or space")]
    BadPassword(String),
    /// Two users have the same name.
    #[error("user {0:?} appears twice")]
    Duplicate(String),
    /// There is no user at all: a server with an empty user list would refuse everyone.
    #[error("no users")]
    NoUsers,
    /// No user has this name: `orchestrator nats-user list` shows them.
    #[error("no user {0:?}")]
    Unknown(String),
    /// The user is the one the orchestrator's own processes of its role connect as (the first of
    /// the role in the file); removing it would lock them out.
    #[error("user {name:?} is the one the orchestrator's {role} processes connect as: it cannot be removed")]
    InUse {
        /// The user.
        name: String,
        /// Its role.
        role: NatsRole,
    },
}

/// Whether `name` is a valid user name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn valid_password(password: &str) -> bool {
    (1..=128).contains(&password.len())
        && password
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\'))
}

impl NatsAuth {
    /// Checks every user (names, passwords, no duplicates, at least one).
    pub fn validate(&self) -> Result<(), AuthError> {
        if self.users.is_empty() {
            return Err(AuthError::NoUsers);
        }
        let mut seen = std::collections::HashSet::new();
        for user in &self.users {
            if !valid_name(&user.name) {
                return Err(AuthError::BadName(user.name.clone()));
            }
            if !valid_password(&user.password) {
                return Err(AuthError::BadPassword(user.name.clone()));
            }
            if !seen.insert(user.name.as_str()) {
                return Err(AuthError::Duplicate(user.name.clone()));
            }
        }
        Ok(())
    }

    /// The first user of `role`, if any.
    pub fn user(&self, role: NatsRole) -> Option<&NatsUser> {
        self.users.iter().find(|u| u.role == role)
    }

    /// The `authorization { users = [...] }` block, after [`Self::validate`].
    pub fn render(&self) -> Result<String, AuthError> {
        self.validate()?;
        let mut text = String::new();
        // Writing into a String cannot fail, hence the ignored fmt::Results below.
        let _ = writeln!(
            text,
            "# Written by the orchestrator from credentials.toml; edits are overwritten."
        );
        let _ = writeln!(text, "authorization {{");
        let _ = writeln!(text, "  users = [");
        for user in &self.users {
            let p = permissions(user.role, &self.cell);
            let _ = writeln!(
                text,
                "    {{ user: \"{}\", password: \"{}\", permissions: {{",
                user.name, user.password
            );
            let _ = writeln!(text, "      # role: {}", user.role);
            let _ = writeln!(text, "      publish: {{ allow: {} }}", list(&p.publish));
            let _ = writeln!(text, "      subscribe: {{ allow: {} }}", list(&p.subscribe));
            if p.allow_responses {
                let _ = writeln!(text, "      allow_responses: true");
            }
            let _ = writeln!(text, "    }} }}");
        }
        let _ = writeln!(text, "  ]");
        let _ = writeln!(text, "}}");
        Ok(text)
    }
}

/// Subjects as a config-language list of quoted strings (`$` and `>` need the quotes).
fn list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: NatsRole) -> NatsUser {
        NatsUser {
            name: name.into(),
            role,
            password: format!("pw-{name}"),
        }
    }

    #[test]
    fn only_the_writer_appends_and_holds_the_lease() {
        let cell = CellId::default_cell();
        for role in NatsRole::ALL {
            let p = permissions(role, &cell);
            let appends = p
                .publish
                .iter()
                .any(|s| s == "orch.default.evt.>" || s == ">");
            let lease = p.publish.iter().any(|s| s.starts_with("$KV.") || s == ">");
            let expected = matches!(role, NatsRole::Writer | NatsRole::Operator);
            assert_eq!(appends, expected, "{role}: {p:?}");
            assert_eq!(lease, expected, "{role}: {p:?}");
        }
    }

    #[test]
    fn commands_come_from_the_bridge_and_the_operator_only() {
        let cell = CellId::default_cell();
        for role in NatsRole::ALL {
            let p = permissions(role, &cell);
            let commands = p
                .publish
                .iter()
                .any(|s| s == "orch.default.cmd.>" || s == ">");
            let expected = matches!(role, NatsRole::Bridge | NatsRole::Operator);
            assert_eq!(commands, expected, "{role}: {p:?}");
        }
    }

    #[test]
    fn renders_each_user_with_its_permissions() {
        let auth = NatsAuth {
            cell: CellId::default_cell(),
            users: vec![user("w", NatsRole::Writer), user("r", NatsRole::Reader)],
        };
        let text = auth.render().expect("valid users");
        assert!(text.contains("user: \"w\", password: \"pw-w\""), "{text}");
        assert!(text.contains("\"orch.default.evt.>\""), "{text}");
        assert_eq!(text.matches("allow_responses: true").count(), 1, "{text}");
    }

    #[test]
    fn refuses_names_and_passwords_the_config_would_misread() {
        let cell = CellId::default_cell();
        let bad_name = NatsAuth {
            cell: cell.clone(),
            users: vec![user("a b", NatsRole::Reader)],
        };
        assert_eq!(bad_name.render(), Err(AuthError::BadName("a b".into())));
        let mut quote = user("q", NatsRole::Reader);
        quote.password = "x\"y".into();
        let bad_password = NatsAuth {
            cell: cell.clone(),
            users: vec![quote],
        };
        assert_eq!(
            bad_password.render(),
            Err(AuthError::BadPassword("q".into()))
        );
        let twice = NatsAuth {
            cell: cell.clone(),
            users: vec![user("a", NatsRole::Reader), user("a", NatsRole::Writer)],
        };
        assert_eq!(twice.render(), Err(AuthError::Duplicate("a".into())));
        let none = NatsAuth {
            cell,
            users: vec![],
        };
        assert_eq!(none.render(), Err(AuthError::NoUsers));
    }
}
