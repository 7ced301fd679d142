//! The VM subcommands: `vm register`, `vm drain`, `vm retire`, each one command sent to the cell's
//! writer.

use clap::{Args, Subcommand};
use orchestrator_events::ids::{LabelKey, LabelValue};
use orchestrator_events::VmId;

use super::{format, send, CliError, CommandOpts};
use crate::domain::command::{RegisterVm, VmRef};
use crate::domain::Command;

/// `vm ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum VmCommand {
    /// Add a VM to the pool.
    Register(RegisterArgs),
    /// Stop placing sessions on a VM; its sessions keep running.
    Drain(VmArgs),
    /// Remove an empty VM for good.
    Retire(VmArgs),
}

/// `vm register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// The VM's id.
    pub vm: VmId,
    /// How many sessions (active + paused) it holds.
    #[arg(long)]
    pub capacity: u32,
    /// A label, as key=value (repeatable), matched against sessions' requirements.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = format::parse_label)]
    pub labels: Vec<(LabelKey, LabelValue)>,
    #[command(flatten)]
    pub opts: CommandOpts,
}

/// `vm drain` and `vm retire`.
#[derive(Debug, Clone, Args)]
pub struct VmArgs {
    /// The VM's id.
    pub vm: VmId,
    #[command(flatten)]
    pub opts: CommandOpts,
}

/// Sends the VM command.
pub async fn run(command: VmCommand) -> Result<(), CliError> {
    match command {
        VmCommand::Register(args) => {
            let command = Command::RegisterVm(RegisterVm {
                vm_id: args.vm,
                capacity: args.capacity,
                labels: args.labels.into_iter().collect(),
            });
            send(args.opts, command).await
        }
        VmCommand::Drain(args) => send(args.opts, Command::DrainVm(VmRef { vm_id: args.vm })).await,
        VmCommand::Retire(args) => {
            send(args.opts, Command::RetireVm(VmRef { vm_id: args.vm })).await
        }
    }
}
