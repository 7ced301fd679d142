//! Shared by the feed's process-level tests (`feed_python.rs`, `feed_load.rs`): the orchestrator
//! binary serving the writer and the feed, and a workload of whole session lifecycles sent in batch
//! requests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;

use futures::StreamExt;
use orchestrator::client::CommandClient;
use orchestrator::domain::command::{AssignVm, EndSession, RegisterVm, SessionRef, StartSession};
use orchestrator::domain::Command;
use orchestrator::writer::Reply;
use orchestrator_events::{Actor, CommandId, EndReason, GameId, SessionId, UserId, VmId};

/// Sessions per batch request (five commands each: 1,000 commands).
pub const PER_BATCH: usize = 200;

/// `orchestrator serve --role writer,feed` against `url`, its output in `<data_dir>/serve.log`.
pub fn serve(url: &str, data_dir: &Path, roles: &str) -> tokio::process::Child {
    std::fs::create_dir_all(data_dir).unwrap();
    let out = std::fs::File::create(data_dir.join("serve.log")).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["serve", "--nats-url", url, "--data-dir"])
        .arg(data_dir)
        .args(["--role", roles, "--max-sessions-per-user", "1000000"])
        .args(["--pause-timeout", "off", "--placement-timeout", "off"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("the orchestrator binary starts")
}

/// `vm-0` .. `vm-{n-1}`, 1,000 slots each, the first one alone until a writer accepts it.
pub async fn register_vms(commands: &CommandClient, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let first = register(0);
    while !matches!(
        commands.send(&first.0, &first.1, &first.2).await,
        Ok(Reply::Accepted { .. })
    ) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    send(commands, &(1..n).map(register).collect::<Vec<_>>()).await;
}

/// Sessions `from..to`, each started, placed, paused, resumed and ended (five events), sent in
/// batch requests of [`PER_BATCH`] sessions, 4 in flight.
pub async fn lifecycles(commands: &CommandClient, from: usize, to: usize) {
    futures::stream::iter((from..to).step_by(PER_BATCH))
        .map(|start| {
            let batch: Vec<_> = (start..(start + PER_BATCH).min(to))
                .flat_map(lifecycle)
                .collect();
            let commands = commands.clone();
            async move { send(&commands, &batch).await }
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}

fn id(s: String) -> CommandId {
    CommandId::parse(s).unwrap()
}

pub fn register(i: usize) -> (CommandId, Actor, Command) {
    let command = Command::RegisterVm(RegisterVm {
        vm_id: VmId::parse(format!("vm-{i}")).unwrap(),
        capacity: 1_000,
        labels: Default::default(),
        heartbeat_ms: None,
        endpoint: None,
    });
    (id(format!("register-{i}")), Actor::operator("ops"), command)
}

/// The five commands of session `i`.
pub fn lifecycle(i: usize) -> Vec<(CommandId, Actor, Command)> {
    let session_id = SessionId::parse(format!("p{i}")).unwrap();
    let r = || SessionRef {
        session_id: session_id.clone(),
    };
    let actor = Actor::service("gateway");
    vec![
        Command::StartSession(StartSession {
            session_id: Some(session_id.clone()),
            user_id: UserId::parse(format!("u{}", i % 500)).unwrap(),
            game_id: GameId::parse(format!("game-{}", i % 7)).unwrap(),
            requirements: Default::default(),
        }),
        Command::AssignVm(AssignVm {
            session_id: session_id.clone(),
            vm_id: None,
            policy: None,
            wait_ms: None,
        }),
        Command::PauseSession(r()),
        Command::ResumeSession(r()),
        Command::EndSession(EndSession {
            session_id: session_id.clone(),
            reason: EndReason::User,
        }),
    ]
    .into_iter()
    .enumerate()
    .map(|(k, c)| (id(format!("c-{i}-{k}")), actor.clone(), c))
    .collect()
}

pub async fn send(commands: &CommandClient, batch: &[(CommandId, Actor, Command)]) {
    let replies = commands
        .send_batch(batch)
        .await
        .expect("the writer answers");
    for reply in replies {
        assert!(
            matches!(
                reply,
                Reply::Accepted {
                    duplicate: false,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
}
