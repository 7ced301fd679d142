//! The session subcommands: `start`, `assign`, `pause`, `resume`, `end`, each one command sent to the
//! cell's writer.

use clap::{Args, ValueEnum};
use orchestrator_events::ids::{LabelKey, LabelValue};
use orchestrator_events::{EndReason, GameId, PlacementPolicy, SessionId, UserId, VmId};

use super::{format, send, CliError, CommandOpts};
use crate::domain::command::{AssignVm, EndSession, SessionRef, StartSession};
use crate::domain::Command;

/// `start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Whose session.
    #[arg(long)]
    pub user: UserId,
    /// Which game.
    #[arg(long)]
    pub game: GameId,
    /// The session's id. Default: derived from the command id, so a retry names the same session.
    #[arg(long)]
    pub session: Option<SessionId>,
    /// A label the VM must carry, as key=value (repeatable).
    #[arg(long = "require", value_name = "KEY=VALUE", value_parser = format::parse_label)]
    pub requirements: Vec<(LabelKey, LabelValue)>,
    #[command(flatten)]
    pub opts: CommandOpts,
}

/// A placement policy, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Policy {
    /// Fill the fullest VM with room, so whole VMs stay free.
    Packed,
    /// Use the emptiest VM, so load spreads evenly.
    Spread,
}

/// `assign`.
#[derive(Debug, Clone, Args)]
pub struct AssignArgs {
    /// The session (it must be `starting`).
    pub session: SessionId,
    /// The VM to place it on. Default: the policy picks one.
    #[arg(long)]
    pub vm: Option<VmId>,
    /// How to pick the VM when none is named (default: packed).
    #[arg(long, value_enum, conflicts_with = "vm")]
    pub policy: Option<Policy>,
    /// When no VM has room, wait in the placement queue this long (e.g. `2m`, at most 1h) instead of
    /// being refused with `no_capacity`.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "vm")]
    pub wait: Option<std::time::Duration>,
    #[command(flatten)]
    pub opts: CommandOpts,
}

/// `pause` and `resume`.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// The session.
    pub session: SessionId,
    #[command(flatten)]
    pub opts: CommandOpts,
}

/// Why a session ends, spelt as in the events and over HTTP (`pause_timeout`); the kebab-case
/// spellings of earlier releases (`pause-timeout`) are still accepted, hidden from the help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Reason {
    /// The player ended it.
    User,
    /// An operator ended it.
    Operator,
    /// It stayed paused too long.
    #[value(alias = "pause-timeout")]
    PauseTimeout,
    /// No VM could take it in time.
    #[value(alias = "placement-timeout")]
    PlacementTimeout,
    /// Its VM is being retired.
    #[value(alias = "vm-retired")]
    VmRetired,
    /// Its VM stopped answering.
    #[value(alias = "vm-lost")]
    VmLost,
}

impl From<Reason> for EndReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::User => EndReason::User,
            Reason::Operator => EndReason::Operator,
            Reason::PauseTimeout => EndReason::PauseTimeout,
            Reason::PlacementTimeout => EndReason::PlacementTimeout,
            Reason::VmRetired => EndReason::VmRetired,
            Reason::VmLost => EndReason::VmLost,
        }
    }
}

/// `end`.
#[derive(Debug, Clone, Args)]
pub struct EndArgs {
    /// The session.
    pub session: SessionId,
    /// Why it ends.
    #[arg(long, value_enum, default_value = "operator")]
    pub reason: Reason,
    #[command(flatten)]
    pub opts: CommandOpts,
}

/// Sends `start`.
pub async fn start(args: StartArgs) -> Result<(), CliError> {
    let command = Command::StartSession(StartSession {
        session_id: args.session,
        user_id: args.user,
        game_id: args.game,
        requirements: args.requirements.into_iter().collect(),
    });
    send(args.opts, command).await
}

/// Sends `assign`.
pub async fn assign(args: AssignArgs) -> Result<(), CliError> {
    let command = Command::AssignVm(AssignVm {
        session_id: args.session,
        vm_id: args.vm,
        policy: args.policy.map(|p| match p {
            Policy::Packed => PlacementPolicy::Packed,
            Policy::Spread => PlacementPolicy::Spread,
        }),
        wait_ms: args
            .wait
            .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
    });
    send(args.opts, command).await
}

/// Sends `pause`.
pub async fn pause(args: SessionArgs) -> Result<(), CliError> {
    let command = Command::PauseSession(SessionRef {
        session_id: args.session,
    });
    send(args.opts, command).await
}

/// Sends `resume`.
pub async fn resume(args: SessionArgs) -> Result<(), CliError> {
    let command = Command::ResumeSession(SessionRef {
        session_id: args.session,
    });
    send(args.opts, command).await
}

/// Sends `end`.
pub async fn end(args: EndArgs) -> Result<(), CliError> {
    let command = Command::EndSession(EndSession {
        session_id: args.session,
        reason: args.reason.into(),
    });
    send(args.opts, command).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_snake_case_with_the_old_spellings_hidden() {
        for (spelt, reason) in [
            ("user", EndReason::User),
            ("operator", EndReason::Operator),
            ("pause_timeout", EndReason::PauseTimeout),
            ("pause-timeout", EndReason::PauseTimeout),
            ("placement_timeout", EndReason::PlacementTimeout),
            ("placement-timeout", EndReason::PlacementTimeout),
            ("vm_retired", EndReason::VmRetired),
            ("vm-retired", EndReason::VmRetired),
            ("vm_lost", EndReason::VmLost),
            ("vm-lost", EndReason::VmLost),
        ] {
            let parsed = Reason::from_str(spelt, false).map(EndReason::from);
            assert_eq!(parsed, Ok(reason), "{spelt}");
        }
        // What the help lists: the spelling of the events, each named as `EndReason::as_str` does.
        let listed: Vec<String> = Reason::value_variants()
            .iter()
            .filter_map(|r| r.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        let events: Vec<&str> = Reason::value_variants()
            .iter()
            .map(|r| EndReason::from(*r).as_str())
            .collect();
        assert_eq!(listed, events);
    }
}
