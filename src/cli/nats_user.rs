//! `orchestrator nats-user add|remove|list`: the users of a secured NATS server (`serve
//! --nats-auth`), kept in `<data-dir>/nats/credentials.toml`. `add` and `remove` change the file
//! and the server's `auth.conf`, then make a running embedded server reload it (SIGHUP), so an
//! analytics consumer gets access, or loses it, without a restart.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::CliError;
use crate::nats_server::auth::AUTH_FILE;
use crate::nats_server::credentials::{self, CREDENTIALS_FILE};
use crate::nats_server::{NatsRole, CONFIG_FILE, PID_FILE};

/// `nats-user`.
#[derive(Debug, Subcommand)]
pub enum NatsUserCommand {
    /// Add a user with a new password, and reload the running embedded server's users.
    Add(AddArgs),
    /// Remove a user, and reload the running embedded server's users: the server closes the
    /// user's connections and refuses it from then on.
    Remove(RemoveArgs),
    /// List the users and their roles (no passwords).
    List(FileArgs),
}

/// Where the users are.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// The data dir of `serve --nats-auth`: its users are in <data-dir>/nats/credentials.toml.
    #[arg(long, env = "ORCH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

impl FileArgs {
    fn nats_dir(&self) -> PathBuf {
        self.data_dir.join("nats")
    }
}

/// `nats-user add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// The user's name (letters, digits, _, - and .).
    pub name: String,
    /// What the user may do: `reader` for an analytics consumer (reads the log and the feed),
    /// `bridge` for a trusted service that sends commands, `agent` for a VM's heartbeats.
    #[arg(long, value_enum)]
    pub role: NatsRole,
    /// Where the users are.
    #[command(flatten)]
    pub file: FileArgs,
}

/// `nats-user remove`.
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// The user's name. The first user of each role, which the orchestrator's own processes
    /// connect as, cannot be removed.
    pub name: String,
    /// Where the users are.
    #[command(flatten)]
    pub file: FileArgs,
}

/// Runs `nats-user`.
pub fn run(command: NatsUserCommand) -> Result<(), CliError> {
    match command {
        NatsUserCommand::Add(args) => add(&args),
        NatsUserCommand::Remove(args) => remove(&args),
        NatsUserCommand::List(args) => list(&args),
    }
}

/// The credentials file of `file`, which `serve --nats-auth` must have written.
fn credentials_file(file: &FileArgs) -> Result<PathBuf, CliError> {
    let path = file.nats_dir().join(CREDENTIALS_FILE);
    if !path.is_file() {
        return Err(CliError::Invalid(format!(
            "no {}: start `orchestrator serve --nats-auth --data-dir {}` once first",
            path.display(),
            file.data_dir.display()
        )));
    }
    Ok(path)
}

fn changing(e: credentials::CredentialsError) -> CliError {
    match e {
        credentials::CredentialsError::User(e) => CliError::Invalid(e.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}

/// Renders the users of `file` into every embedded server's `auth.conf` and makes the running
/// ones reload it; says which did.
fn apply_users(file: &FileArgs, what: &str) -> Result<(), CliError> {
    let dir = file.nats_dir();
    let failed = |e: credentials::CredentialsError| CliError::Failed(e.to_string());
    let users = credentials::load(&dir.join(CREDENTIALS_FILE)).map_err(failed)?;
    let rendered = users
        .render()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let mut reloaded = Vec::new();
    for server_dir in server_dirs(&dir) {
        credentials::write_private(&server_dir.join(AUTH_FILE), &rendered).map_err(failed)?;
        reloaded.extend(reload(&server_dir.join(PID_FILE)));
    }
    if reloaded.is_empty() {
        outln!("no embedded nats-server runs: {what} from its next start");
    }
    for pid in reloaded {
        outln!("the embedded nats-server (pid {pid}) reloaded its users");
    }
    Ok(())
}

fn add(args: &AddArgs) -> Result<(), CliError> {
    let path = credentials_file(&args.file)?;
    let user = credentials::add_user(&path, &args.name, args.role).map_err(changing)?;
    outln!("user:     {}", user.name);
    outln!("role:     {}", user.role);
    outln!("password: {}", user.password);
    apply_users(&args.file, "the user exists")
}

fn remove(args: &RemoveArgs) -> Result<(), CliError> {
    let path = credentials_file(&args.file)?;
    let user = credentials::remove_user(&path, &args.name).map_err(changing)?;
    outln!("removed:  {} ({})", user.name, user.role);
    apply_users(&args.file, "the user is refused")
}

/// The directories of the embedded servers under `dir`: `dir` itself for a lone server, each
/// `node-<i>` for the nodes of `serve --nats-nodes` (a lone server's dir when none exists yet).
fn server_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut nodes: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("node-"))
                && path.join(CONFIG_FILE).is_file()
        })
        .collect();
    nodes.sort();
    if nodes.is_empty() || dir.join(CONFIG_FILE).is_file() {
        nodes.insert(0, dir.to_owned());
    }
    nodes
}

/// Sends SIGHUP to the server whose pid the file holds, if it runs; its pid then.
fn reload(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // The pid file outlives a server that was killed, and its pid may be another process's by
    // now: only a process running this directory's config file gets the signal.
    let config = std::fs::canonicalize(pid_file.with_file_name(CONFIG_FILE)).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = cmdline.split(|b| *b == 0).any(|arg| {
        std::fs::canonicalize(std::ffi::OsStr::from_bytes(arg)).ok() == Some(config.clone())
    });
    if !ours {
        return None;
    }
    signal::kill(Pid::from_raw(pid), Signal::SIGHUP)
        .ok()
        .map(|()| pid)
}

fn list(args: &FileArgs) -> Result<(), CliError> {
    let path = args.nats_dir().join(CREDENTIALS_FILE);
    let users = credentials::load(&path).map_err(|e| CliError::Failed(e.to_string()))?;
    outln!("{:<24} role", "user");
    for user in &users.users {
        outln!("{:<24} {}", user.name, user.role);
    }
    Ok(())
}
