//! `orchestrator vm list|get` and `orchestrator session list|get`: the cell's VMs and sessions as of
//! now, replayed from the log as `state` does ([`crate::analytics::as_of`]), so they need neither
//! the projections' data dir (locked by `serve`) nor a bridge token, and always agree with `state`.

use clap::Args;
use futures::StreamExt;
use orchestrator_events::{EndReason, Endpoint, Event, Labels, SessionId, VmId};
use serde::Serialize;

use super::{format, table, CliError, NatsArgs};
use crate::analytics::as_of::{replay, snapshot, SessionRow, VmRow};
use crate::analytics::WindowError;
use crate::domain::{SessionStatus, State, VmStatus};

/// `vm list`.
#[derive(Debug, Clone, Args)]
pub struct VmListArgs {
    /// Only VMs in this status: available, draining, retired or lost.
    #[arg(long, value_parser = parse_vm_status)]
    pub status: Option<VmStatus>,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print one JSON array of VMs.
    #[arg(long)]
    pub json: bool,
}

/// `vm get`.
#[derive(Debug, Clone, Args)]
pub struct VmGetArgs {
    /// The VM's id.
    pub vm: VmId,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `session ...`: read one session or list them.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SessionCommand {
    /// One session: status, user, game, VM, since when (exit 1 when there is no such session).
    Get(SessionGetArgs),
    /// Sessions not ended, sorted by id (ended ones: `session get <id>` or `history <id>`).
    #[command(visible_alias = "ls")]
    List(SessionListArgs),
}

/// `session get`.
#[derive(Debug, Clone, Args)]
pub struct SessionGetArgs {
    /// The session's id.
    pub session: SessionId,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `session list`.
#[derive(Debug, Clone, Args)]
pub struct SessionListArgs {
    /// Only sessions in this status: starting, active or paused.
    #[arg(long, value_parser = parse_live_status)]
    pub status: Option<SessionStatus>,
    /// Only this user's sessions.
    #[arg(long)]
    pub user: Option<String>,
    /// Only sessions on this VM.
    #[arg(long)]
    pub vm: Option<VmId>,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print one JSON array of sessions.
    #[arg(long)]
    pub json: bool,
}

/// A VM in detail (`vm get`).
#[derive(Debug, Serialize)]
struct VmDetail {
    #[serde(flatten)]
    row: VmRow,
    heartbeat_ms: Option<u32>,
    endpoint: Option<Endpoint>,
    /// The sessions holding a slot on it (active or paused).
    sessions: Vec<SessionId>,
}

/// A session in detail (`session get`).
#[derive(Debug, Serialize)]
struct SessionDetail {
    #[serde(flatten)]
    row: SessionRow,
    /// Since when it is in its status, RFC 3339.
    status_since: String,
    /// Labels its VM must carry (emptied once placed).
    requirements: Labels,
    /// Why it ended, once ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    end_reason: Option<EndReason>,
}

/// An ended session, from its own events (the cell's state keeps only the ids of ended ones).
async fn ended(nats: &NatsArgs, id: &SessionId) -> Result<Option<SessionDetail>, CliError> {
    let (client, reader) = nats.reader("session get").await?;
    let mut stream = reader
        .session_history(id)
        .await
        .map_err(|e| nats.log_error(e))?;
    let mut detail: Option<SessionDetail> = None;
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| nats.log_error(e))?;
        let at = format::time(ev.envelope.occurred_at);
        match (&ev.envelope.event, detail.as_mut()) {
            (
                Event::SessionStarted {
                    user_id,
                    game_id,
                    requirements,
                    ..
                },
                _,
            ) => {
                detail = Some(SessionDetail {
                    row: SessionRow {
                        session_id: id.clone(),
                        user_id: user_id.to_string(),
                        game_id: game_id.to_string(),
                        status: SessionStatus::Starting,
                        vm_id: None,
                        started_at: at.clone(),
                        queued_until: None,
                    },
                    status_since: at,
                    requirements: requirements.clone(),
                    end_reason: None,
                })
            }
            (Event::SessionAssigned { vm_id, .. }, Some(d)) => d.row.vm_id = Some(vm_id.clone()),
            (Event::SessionEnded { reason, vm_id, .. }, Some(d)) => {
                d.row.status = SessionStatus::Ended;
                d.row.vm_id = vm_id.clone().or(d.row.vm_id.take());
                d.status_since = at;
                d.end_reason = Some(*reason);
            }
            _ => {}
        }
    }
    // Best effort: everything was read.
    let _ = client.drain().await;
    Ok(detail.filter(|d| d.row.status == SessionStatus::Ended))
}

fn parse_vm_status(s: &str) -> Result<VmStatus, String> {
    [
        VmStatus::Available,
        VmStatus::Draining,
        VmStatus::Retired,
        VmStatus::Lost,
    ]
    .into_iter()
    .find(|v| v.as_str() == s)
    .ok_or_else(|| format!("{s:?}: expected available, draining, retired or lost"))
}

fn parse_live_status(s: &str) -> Result<SessionStatus, String> {
    match SessionStatus::parse(s) {
        Some(SessionStatus::Ended) => Err("ended sessions are not listed (the cell keeps only \
             their ids): use `session get <id>` or `history <id>`"
            .to_owned()),
        Some(status) => Ok(status),
        None => Err(format!("{s:?}: expected starting, active or paused")),
    }
}

/// The cell now, replayed from the log.
async fn now(nats: &NatsArgs, name: &str) -> Result<State, CliError> {
    let (client, reader) = nats.reader(name).await?;
    let (state, _) = replay(&reader, None).await.map_err(|e| match e {
        WindowError::Invalid(m) => CliError::Invalid(m),
        WindowError::Log(e) => nats.log_error(e),
    })?;
    // Best effort: everything was read.
    let _ = client.drain().await;
    Ok(state)
}

fn print_json(value: &impl Serialize) {
    // Plain data: JSON encoding cannot fail.
    outln!(
        "{}",
        serde_json::to_string(value).expect("rows always encode")
    );
}

/// `vm list`.
pub async fn vm_list(args: VmListArgs) -> Result<(), CliError> {
    let state = now(&args.nats, "vm list").await?;
    let vms: Vec<VmRow> = snapshot(&state, state.last_seq, false)
        .vms
        .into_iter()
        .filter(|v| args.status.is_none_or(|s| v.status == s))
        .collect();
    if args.json {
        print_json(&vms);
        return Ok(());
    }
    table::vms(&vms);
    Ok(())
}

/// `vm get`.
pub async fn vm_get(args: VmGetArgs) -> Result<(), CliError> {
    let state = now(&args.nats, "vm get").await?;
    let (Some(vm), Some(row)) = (
        state.vms.get(&args.vm),
        snapshot(&state, state.last_seq, false)
            .vms
            .into_iter()
            .find(|v| v.vm_id == args.vm),
    ) else {
        return Err(CliError::Invalid(format!(
            "no VM {} in cell {}",
            args.vm, args.nats.cell
        )));
    };
    let sessions = state
        .sessions
        .iter()
        .filter(|(_, s)| s.status.holds_slot() && s.vm_id.as_ref() == Some(&args.vm))
        .map(|(id, _)| id.clone())
        .collect();
    let detail = VmDetail {
        row,
        heartbeat_ms: vm.heartbeat_ms,
        endpoint: vm.endpoint.clone(),
        sessions,
    };
    if args.json {
        print_json(&detail);
        return Ok(());
    }
    let VmDetail { row, .. } = &detail;
    outln!("vm:        {}", row.vm_id);
    outln!("status:    {}", row.status.as_str());
    outln!("used:      {}/{}", row.used, row.capacity);
    outln!("labels:    {}", format::labels(&row.labels));
    outln!(
        "heartbeat: {}",
        detail
            .heartbeat_ms
            .map_or("none".to_owned(), |ms| format::duration(i64::from(ms)))
    );
    outln!(
        "endpoint:  {}",
        detail.endpoint.as_ref().map_or("-".to_owned(), |e| {
            // An endpoint is plain data: JSON encoding cannot fail.
            serde_json::to_string(e).expect("an endpoint always encodes")
        })
    );
    let ids: Vec<&str> = detail.sessions.iter().map(|s| s.as_str()).collect();
    outln!(
        "sessions:  {}",
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.join(",")
        }
    );
    Ok(())
}

/// `session get` and `session list`.
pub async fn session(command: SessionCommand) -> Result<(), CliError> {
    match command {
        SessionCommand::Get(args) => session_get(args).await,
        SessionCommand::List(args) => session_list(args).await,
    }
}

fn session_rows(state: &State) -> Vec<SessionRow> {
    snapshot(state, state.last_seq, true)
        .sessions
        .unwrap_or_default()
}

async fn session_get(args: SessionGetArgs) -> Result<(), CliError> {
    let state = now(&args.nats, "session get").await?;
    let found = state.sessions.get(&args.session).and_then(|s| {
        session_rows(&state)
            .into_iter()
            .find(|r| r.session_id == args.session)
            .map(|row| SessionDetail {
                row,
                status_since: format::time(s.since.at),
                requirements: s.requirements.clone(),
                end_reason: None,
            })
    });
    let found = match found {
        Some(d) => Some(d),
        None => ended(&args.nats, &args.session).await?,
    };
    let Some(detail) = found else {
        return Err(CliError::Invalid(format!(
            "no session {} in cell {}",
            args.session, args.nats.cell
        )));
    };
    if args.json {
        print_json(&detail);
        return Ok(());
    }
    let r = &detail.row;
    outln!("session:  {}", r.session_id);
    outln!(
        "status:   {} since {}",
        r.status.as_str(),
        detail.status_since
    );
    outln!("user:     {}", r.user_id);
    outln!("game:     {}", r.game_id);
    outln!("vm:       {}", r.vm_id.as_ref().map_or("-", |v| v.as_str()));
    outln!("started:  {}", r.started_at);
    if let Some(reason) = detail.end_reason {
        outln!("reason:   {}", reason.as_str());
    }
    if let Some(until) = &r.queued_until {
        outln!("queued until {until}");
    }
    if !detail.requirements.is_empty() {
        outln!("requires: {}", format::labels(&detail.requirements));
    }
    Ok(())
}

async fn session_list(args: SessionListArgs) -> Result<(), CliError> {
    let state = now(&args.nats, "session list").await?;
    let rows: Vec<SessionRow> = session_rows(&state)
        .into_iter()
        .filter(|r| args.status.is_none_or(|s| r.status == s))
        .filter(|r| args.user.as_ref().is_none_or(|u| &r.user_id == u))
        .filter(|r| args.vm.as_ref().is_none_or(|v| r.vm_id.as_ref() == Some(v)))
        .collect();
    if args.json {
        print_json(&rows);
        return Ok(());
    }
    table::sessions(&rows, false);
    Ok(())
}
