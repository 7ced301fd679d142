//! The VM subcommands: `vm register`, `vm drain`, `vm retire`, each one command sent to the cell's
//! writer; `vm list` and `vm get` read the pool ([`super::get`]).

use clap::{Args, Subcommand};
use orchestrator_events::ids::{LabelKey, LabelValue};
use orchestrator_events::{Endpoint, Host, VmId};

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
    /// The VMs now, sorted by id, replayed from the log (`--status` filters).
    #[command(visible_alias = "ls")]
    List(super::get::VmListArgs),
    /// One VM: status, load, labels, heartbeat, endpoint, the sessions on it (exit 1 if unknown).
    Get(super::get::VmGetArgs),
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
    /// The VM sends heartbeats at this interval (e.g. `5s`); it is declared lost when it misses the
    /// cell's deadline. Absent: no heartbeats, never declared lost.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat: Option<std::time::Duration>,
    /// Where clients connect: a host name or IP address.
    #[arg(long)]
    pub address: Option<Host>,
    /// A named port clients connect to, as name=port (repeatable; needs --address).
    #[arg(long = "port", value_name = "NAME=PORT", requires = "address")]
    pub ports: Vec<String>,
    #[command(flatten)]
    pub opts: CommandOpts,
}

impl RegisterArgs {
    /// The endpoint the flags describe, if any.
    fn endpoint(&self) -> Result<Option<Endpoint>, CliError> {
        let Some(address) = self.address.clone() else {
            return Ok(None);
        };
        let mut ports = std::collections::BTreeMap::new();
        for p in &self.ports {
            let bad = || {
                CliError::Invalid(format!(
                    "--port {p:?}: expected name=port, e.g. stream=47998"
                ))
            };
            let (name, port) = p.split_once('=').ok_or_else(bad)?;
            let name: LabelKey = name.parse().map_err(|_| bad())?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            ports.insert(name, port);
        }
        Ok(Some(Endpoint { address, ports }))
    }
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
            let endpoint = args.endpoint()?;
            let command = Command::RegisterVm(RegisterVm {
                vm_id: args.vm,
                capacity: args.capacity,
                labels: args.labels.into_iter().collect(),
                heartbeat_ms: args
                    .heartbeat
                    .map(|h| u32::try_from(h.as_millis()).unwrap_or(u32::MAX)),
                endpoint,
            });
            send(args.opts, command).await
        }
        VmCommand::Drain(args) => send(args.opts, Command::DrainVm(VmRef { vm_id: args.vm })).await,
        VmCommand::Retire(args) => {
            send(args.opts, Command::RetireVm(VmRef { vm_id: args.vm })).await
        }
        VmCommand::List(args) => super::get::vm_list(args).await,
        VmCommand::Get(args) => super::get::vm_get(args).await,
    }
}
