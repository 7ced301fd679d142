//! The `orchestrator` binary's command line: one subcommand per file, dispatched by [`run`].
//!
//! - [`serve`]: run the system (every role, or one), with an embedded `nats-server` by default.
//! - [`history`], [`state`], [`tail`]: read the log (a session's timeline, the state at a moment,
//!   events as they come).
//! - [`usage`]: time in each state per user, game or VM, for billing; [`whatif`]: the recorded
//!   demand against another placement policy or pool; [`progress`]: progress of long reads.
//! - [`rebuild`], [`verify`]: operate the projections; [`quarantine`]: skip an undecodable message.
//! - [`session`], [`vm`]: send commands to the cell's writer; [`agent`]: send a VM's heartbeats.
//! - [`get`]: `vm list|get`, `session list|get`, read from the log as `state` is.
//! - `completions`: shell completion scripts ([`completions`]); [`config`]: `serve --config FILE`.
//! - [`nats_user`]: `nats-user add|list`, the users of a secured NATS ([`nats_auth`]: the client
//!   side's flags).
//! - [`bench`]: runs the benchmark, the `orchestrator-bench` binary beside this one.
//! - [`format`]: how times, labels, actors and events are shown and parsed; [`table`]: the VM and
//!   session tables.

/// `println!` for the command line's output: when the reader goes away (`orchestrator tail | head`)
/// the process ends quietly, as a Unix tool does, instead of panicking on the closed pipe.
macro_rules! outln {
    () => {
        $crate::cli::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

pub mod agent;
pub mod bench;
pub mod completions;
pub mod config;
pub mod format;
pub mod get;
pub mod history;
pub mod nats_auth;
pub mod nats_user;
pub mod progress;
pub mod quarantine;
pub mod rebuild;
pub mod serve;
pub mod session;
pub mod state;
pub mod table;
pub mod tail;
pub mod usage;
pub mod verify;
pub mod vm;
pub mod whatif;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use orchestrator_events::{Actor, CellId, CommandId};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, CommandClient};
use crate::domain::Command;
use crate::log::{LogError, Reader};
use crate::writer::Reply;

/// The URL client subcommands use by default: the embedded server of `orchestrator serve`.
pub const DEFAULT_CLIENT_URL: &str = "nats://127.0.0.1:4333";

/// Exit status: the writer rejected the command.
pub const EXIT_REJECTED: u8 = 2;
/// Exit status: NATS or the writer could not be reached, or did not answer in time.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit status: the cell's log stream does not exist (a wrong `--cell`, or no writer has run).
pub const EXIT_NO_STREAM: u8 = 4;
/// Exit status: the command line is wrong.
pub const EXIT_USAGE: u8 = 64;

const EXIT_CODES: &str = "\
Exit status: 0 done; 1 failed (or `verify` found a divergence); 2 the writer rejected the command; \
3 unavailable (NATS unreachable, no writer, no answer in time: retry with the same --command-id); \
4 no log stream for the cell (a wrong --cell, or no writer has run yet); 64 bad command line.

`orchestrator serve` with no --nats-url starts its own nats-server on 127.0.0.1:4333, and the other \
subcommands connect to nats://127.0.0.1:4333 by default, so `orchestrator serve` in one shell and \
`orchestrator vm register vm-1 --capacity 4` in another just work.";

/// The event-sourced session orchestrator of a cloud-gaming platform, on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the orchestrator: writer, projector and HTTP bridge (every role by default).
    Serve(Box<serve::ServeArgs>),
    /// A session's timeline from the log, with the time it spent in each state.
    History(history::HistoryArgs),
    /// Sessions and VM capacity as of a moment (a sequence or a time), replayed from the log.
    State(state::StateArgs),
    /// Print events as they are appended, until Ctrl-C.
    Tail(tail::TailArgs),
    /// Time each user's, game's or VM's sessions spent in each state within a window, for billing.
    Usage(usage::UsageArgs),
    /// Replay the recorded demand against another placement policy or pool, and compare.
    Whatif(whatif::WhatIfArgs),
    /// Rebuild the projections of a data dir from the log (stop `serve` first).
    Rebuild(rebuild::RebuildArgs),
    /// Compare the live projections and the writer's state with a replay of the log.
    Verify(verify::VerifyArgs),
    /// Record that an undecodable message is skipped by every reader (or list those that are).
    Quarantine(quarantine::QuarantineArgs),
    /// Start a session (it waits in `starting` until a VM is assigned).
    Start(session::StartArgs),
    /// Place a starting session on a VM: the one named, or one picked by a policy.
    Assign(session::AssignArgs),
    /// Pause an active session (it keeps its VM slot).
    Pause(session::SessionArgs),
    /// Resume a paused session.
    Resume(session::SessionArgs),
    /// End a session.
    End(session::EndArgs),
    /// VMs: register, drain, retire; list, get.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Sessions: get one, list them (start, assign, pause, resume and end are top-level).
    #[command(subcommand)]
    Session(get::SessionCommand),
    /// Send a VM's heartbeats (the reference of the VM side, for demos and tests).
    Agent(agent::AgentArgs),
    /// Measure the orchestrator against the raw NATS limit, on servers of its own.
    Bench(bench::BenchArgs),
    /// Print a shell completion script: `source <(orchestrator completions bash)`.
    Completions(completions::CompletionsArgs),
    /// The users of a secured NATS (`serve --nats-auth`): add one (an analytics consumer...), remove one, list them.
    #[command(subcommand)]
    NatsUser(nats_user::NatsUserCommand),
}

impl Cli {
    /// The tracing filter when `RUST_LOG` is not set: the server logs its progress, the one-shot
    /// subcommands only warnings, so their output stays readable.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            CliCommand::Serve(_) => "info,async_nats=warn",
            _ => "warn",
        }
    }
}

/// Why a subcommand failed; each maps to an exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The writer refused the command; the reply was printed already.
    #[error("rejected: {code}")]
    Rejected {
        /// The rejection's code.
        code: String,
    },
    /// NATS or the writer could not be reached or did not answer; retrying may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An argument names something that does not work (an unknown session, a sequence past the end).
    #[error("{0}")]
    Invalid(String),
    /// The cell's log stream does not exist: the cell's name is wrong, or no writer has run.
    #[error("no log stream {stream} for cell {cell}: is the cell name right, has a writer run?")]
    NoStream {
        /// The stream's name (`ORCH_<CELL>`).
        stream: String,
        /// The cell as given.
        cell: String,
    },
    /// Anything else.
    #[error("{0}")]
    Failed(String),
    /// Printed already (a failed `verify`, an unavailable writer in JSON); exit with this status.
    #[error("failed with status {0}")]
    Reported(u8),
}

impl CliError {
    /// The exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Rejected { .. } => EXIT_REJECTED,
            CliError::Unavailable(_) => EXIT_UNAVAILABLE,
            CliError::NoStream { .. } => EXIT_NO_STREAM,
            CliError::Invalid(_) | CliError::Failed(_) => 1,
            CliError::Reported(code) => *code,
        }
    }
}

impl From<LogError> for CliError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Unavailable(_) => CliError::Unavailable(e.to_string()),
            LogError::StreamNotFound(_) => CliError::Invalid(format!(
                "{e}: nothing was ever written to this cell (check --cell), or JetStream is off"
            )),
            other => CliError::Failed(other.to_string()),
        }
    }
}

/// Runs the subcommand until it is done or `shutdown` fires; returns the exit status.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> ExitCode {
    let result = match cli.command {
        CliCommand::Serve(args) => serve::run(*args, shutdown).await,
        CliCommand::History(args) => history::run(args).await,
        CliCommand::State(args) => state::run(args).await,
        CliCommand::Tail(args) => tail::run(args, shutdown).await,
        CliCommand::Usage(args) => usage::run(args).await,
        CliCommand::Whatif(args) => whatif::run(args).await,
        CliCommand::Rebuild(args) => rebuild::run(args).await,
        CliCommand::Verify(args) => verify::run(args).await,
        CliCommand::Quarantine(args) => quarantine::run(args).await,
        CliCommand::Start(args) => session::start(args).await,
        CliCommand::Assign(args) => session::assign(args).await,
        CliCommand::Pause(args) => session::pause(args).await,
        CliCommand::Resume(args) => session::resume(args).await,
        CliCommand::End(args) => session::end(args).await,
        CliCommand::Vm(command) => vm::run(command).await,
        CliCommand::Session(command) => get::session(command).await,
        CliCommand::Completions(args) => completions::run(&args),
        CliCommand::NatsUser(command) => nats_user::run(command),
        CliCommand::Agent(args) => agent::run(args, shutdown).await,
        CliCommand::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, CliError::Rejected { .. } | CliError::Reported(_)) {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Writes one line to stdout; exits with status 0 when stdout is a closed pipe (the reader has all it
/// wanted), and ignores other write errors as `println!` cannot report them either.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Where the cell's NATS is, for subcommands that talk to a running system.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// The NATS server. The default is the embedded server of `orchestrator serve`.
    #[arg(long, env = "ORCH_NATS_URL", default_value = DEFAULT_CLIENT_URL)]
    pub nats_url: String,
    /// The cell.
    #[arg(long, env = "ORCH_CELL", default_value = "default")]
    pub cell: CellId,
    /// How long to wait for NATS and for each answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Who to connect as, and TLS.
    #[command(flatten)]
    pub auth: nats_auth::ClientAuthArgs,
}

impl NatsArgs {
    /// Connects, failing fast when nothing answers.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, CliError> {
        connect(
            &self.nats_url,
            name,
            self.timeout,
            &self.auth.client_auth()?,
        )
        .await
    }

    /// A reader of the cell's log on a new connection, once the log's stream is known to exist
    /// ([`CliError::NoStream`] when it does not: every reading subcommand fails the same way).
    pub async fn reader(&self, name: &str) -> Result<(async_nats::Client, Reader), CliError> {
        let client = self.connect(name).await?;
        let reader = Reader::new(
            async_nats::jetstream::new(client.clone()),
            self.cell.clone(),
        )
        .await
        .map_err(|e| self.log_error(e))?;
        reader.identity().await.map_err(|e| self.log_error(e))?;
        Ok((client, reader))
    }

    /// A failed read of this cell's log as the command line reports it.
    pub fn log_error(&self, e: LogError) -> CliError {
        match e {
            LogError::StreamNotFound(stream) => CliError::NoStream {
                stream,
                cell: self.cell.to_string(),
            },
            other => other.into(),
        }
    }
}

/// Connects to `url`, failing fast when nothing answers within `timeout`.
pub async fn connect(
    url: &str,
    name: &str,
    timeout: Duration,
    auth: &crate::log::connection::ClientAuth,
) -> Result<async_nats::Client, CliError> {
    auth.apply(crate::log::connection::options(&format!(
        "orchestrator {name}"
    )))
    .connection_timeout(timeout)
    .request_timeout(Some(timeout))
    .connect(crate::log::connection::addresses(url))
    .await
    .map_err(|e| {
        CliError::Unavailable(format!(
            "cannot connect to NATS at {url} ({e}); is `orchestrator serve` running?"
        ))
    })
}

/// What every command subcommand takes besides its own arguments.
#[derive(Debug, Clone, Args)]
pub struct CommandOpts {
    /// Where to send it.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The idempotency key: a retry with the same id returns the first result. Default: a new UUID.
    #[arg(long)]
    pub command_id: Option<CommandId>,
    /// Who issues it, as kind:id (kind: user, operator, service). Default: operator:$USER.
    #[arg(long, value_parser = format::parse_actor)]
    pub actor: Option<Actor>,
    /// Print the writer's reply as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `operator:$USER` (or `operator:cli`): who a CLI command comes from unless told.
pub fn default_operator() -> Actor {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty() && !u.contains(char::is_whitespace));
    Actor::operator(user.unwrap_or_else(|| "cli".to_owned()))
}

/// Sends `command` to the cell's writer and prints its reply.
pub async fn send(opts: CommandOpts, command: Command) -> Result<(), CliError> {
    let command_id = match opts.command_id {
        Some(id) => id,
        // A UUID is 36 printable ASCII characters: always a valid command id.
        None => CommandId::parse(uuid::Uuid::new_v4().to_string())
            .expect("a UUID is a valid command id"),
    };
    let actor = opts.actor.unwrap_or_else(default_operator);
    let client = match opts.nats.connect("cli").await {
        Ok(client) => client,
        Err(CliError::Unavailable(message)) => return unavailable(message, &command_id, opts.json),
        Err(e) => return Err(e),
    };
    let sender = CommandClient::new(client.clone(), opts.nats.cell.clone(), opts.nats.timeout);
    let reply = sender.send(&command_id, &actor, &command).await;
    // Best effort: the reply is in hand, a failed flush changes nothing.
    let _ = client.drain().await;
    match reply {
        Ok(reply) => print_reply(&reply, &command_id, opts.json),
        Err(e @ ClientError::NoWriter(_)) => {
            let message = format!(
                "{e} (none runs, or a standby is taking over): nothing was applied; retry with \
                 --command-id {command_id}"
            );
            unavailable(message, &command_id, opts.json)
        }
        Err(e) => {
            let message = format!(
                "{e}; the command may or may not have been applied: retry with --command-id {command_id}"
            );
            unavailable(message, &command_id, opts.json)
        }
    }
}

/// Reports an unavailable writer: as JSON on stdout with `--json`, else as an error.
fn unavailable(message: String, command_id: &CommandId, json: bool) -> Result<(), CliError> {
    if json {
        let body = serde_json::json!({
            "unavailable": { "message": message, "command_id": command_id.as_str() }
        });
        outln!("{body}");
        return Err(CliError::Reported(EXIT_UNAVAILABLE));
    }
    Err(CliError::Unavailable(message))
}

fn print_reply(reply: &Reply, command_id: &CommandId, json: bool) -> Result<(), CliError> {
    if json {
        // A reply is plain data: JSON encoding cannot fail.
        outln!(
            "{}",
            serde_json::to_string(reply).expect("a reply always encodes")
        );
    }
    match reply {
        Reply::Accepted {
            seq,
            duplicate,
            event,
        } => {
            if !json {
                let retry = if *duplicate {
                    " (a retry: this command was applied before)"
                } else {
                    ""
                };
                outln!(
                    "{} at seq {seq}: {}{retry}",
                    event.event.event_type(),
                    format::details(&event.event)
                );
                outln!(
                    "  command {} by {} at {}",
                    event.command_id,
                    event.actor,
                    format::time(event.occurred_at)
                );
            }
            Ok(())
        }
        Reply::Rejected { code, message, .. } => {
            if code == "unavailable" {
                if json {
                    return Err(CliError::Reported(EXIT_UNAVAILABLE));
                }
                return Err(CliError::Unavailable(format!(
                    "the writer cannot reach the log ({message}); the command may or may not have \
                     been applied: retry with --command-id {command_id}"
                )));
            }
            if !json {
                eprintln!("rejected ({code}): {message}");
            }
            Err(CliError::Rejected { code: code.clone() })
        }
    }
}
