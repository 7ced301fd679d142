//! No reconnect or caller stops a cell: event feeds are capped per caller and in all, a role that
//! fails is restarted while the others go on, and `serve` follows the log across a nats-server
//! restart (the projector resumes at its own checkpoint).

mod http_support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_support::common::TestServer;
use http_support::{args, request, Harness, Roles, ALICE, BOB, OPS};
use orchestrator::admin;
use orchestrator::client::CommandClient;
use orchestrator::domain::command::RegisterVm;
use orchestrator::domain::Command;
use orchestrator::http::BridgeArgs;
use orchestrator::log::{Appender, Reader};
use orchestrator::serve::{self, NatsMode, ServeConfig};
use orchestrator::writer::Reply;
use orchestrator_events::{Actor, CellId, CommandId, Envelope, Event, SessionId, VmId};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn events_request(token: &str) -> Request<Body> {
    request("GET", "/v1/events?from=1", Some(token), None, None)
}

/// More feeds from one caller than the cap, replaying a log of a few thousand events: the extra
/// ones are refused with 429 `too_many_feeds` while commands and other callers go on; a closed
/// feed frees its place.
#[tokio::test]
async fn event_feeds_are_capped_per_caller_and_in_all() {
    let h = Harness::start_with(
        BridgeArgs {
            max_feeds_per_caller: 3,
            max_feeds: 5,
            ..args()
        },
        Roles {
            writer: true,
            projector: true,
        },
    )
    .await;
    let commands = CommandClient::new(
        h.client.clone(),
        CellId::default_cell(),
        Duration::from_secs(5),
    );
    let mut sent = Vec::new();
    for i in 0..2_000 {
        let commands = commands.clone();
        sent.push(tokio::spawn(async move {
            let command = Command::RegisterVm(RegisterVm {
                endpoint: None,
                heartbeat_ms: None,
                vm_id: VmId::parse(format!("vm-{i}")).unwrap(),
                capacity: 1,
                labels: Default::default(),
            });
            let id = CommandId::parse(format!("r-{i}")).unwrap();
            commands.send(&id, &Actor::operator("ops"), &command).await
        }));
    }
    for s in sent {
        assert!(matches!(s.await.unwrap(), Ok(Reply::Accepted { .. })));
    }

    let mut open = Vec::new();
    for _ in 0..3 {
        let r = h
            .router
            .clone()
            .oneshot(events_request(ALICE))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        open.push(r);
    }
    let refused = h.send(events_request(ALICE)).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert_eq!(refused.code(), "too_many_feeds");
    assert_eq!(refused.json["scope"], "caller");
    assert!(!refused.header("retry-after").is_empty());

    // Another caller still gets feeds, up to the bridge's cap.
    for _ in 0..2 {
        let r = h.router.clone().oneshot(events_request(BOB)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        open.push(r);
    }
    let refused = h.send(events_request(OPS)).await;
    assert_eq!(refused.code(), "too_many_feeds");
    assert_eq!(refused.json["scope"], "bridge");

    // Commands go on meanwhile.
    let a = h
        .call(
            "POST",
            "/v1/vms",
            Some(OPS),
            Some(json!({"vm_id": "vm-x", "capacity": 1})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);

    // A feed that ends gives its place back.
    drop(open.remove(0));
    let r = h
        .router
        .clone()
        .oneshot(events_request(ALICE))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let metrics = h.call("GET", "/metrics", Some(OPS), None).await;
    assert!(
        metrics.text.contains("orch_http_event_feeds_open 5"),
        "{}",
        metrics.text
    );
}

fn serve_config(url: String, data_dir: &std::path::Path) -> ServeConfig {
    let domain = orchestrator::domain::DomainConfig {
        max_sessions_per_user: 1_000,
        ..Default::default()
    };
    ServeConfig {
        nats: NatsMode::External { url },
        data_dir: data_dir.to_path_buf(),
        cell: CellId::default_cell(),
        replicas: 1,
        roles: serve::Roles {
            writer: true,
            projector: true,
            bridge: false,
            feed: false,
        },
        roles_explicit: true,
        domain,
        lease_ttl: Duration::from_secs(1),
        group_commit: orchestrator::serve::GroupCommit::Auto,
        timers: Default::default(),
        bridge: BridgeArgs::default(),
        metrics_addr: None,
        feed: Default::default(),
        nats_security: Default::default(),
    }
}

async fn register(commands: &CommandClient, vm: &str) -> Option<u64> {
    let command = Command::RegisterVm(RegisterVm {
        endpoint: None,
        heartbeat_ms: None,
        vm_id: VmId::parse(vm).unwrap(),
        capacity: 1,
        labels: Default::default(),
    });
    let id = CommandId::parse(format!("register-{vm}")).unwrap();
    match commands.send(&id, &Actor::operator("ops"), &command).await {
        Ok(Reply::Accepted { seq, .. }) => Some(seq),
        _ => None,
    }
}

/// Registers `vm`, retrying until a writer accepts it.
async fn register_until_accepted(commands: &CommandClient, vm: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(seq) = register(commands, vm).await {
            return seq;
        }
        assert!(Instant::now() < deadline, "{vm} never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the projector of `serve` reports `seq` and a clean comparison with the log.
async fn projected(client: &async_nats::Client, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = admin::verify(client, &CellId::default_cell(), Duration::from_secs(2)).await;
        if let Ok(r) = &report {
            let p = r.projections.as_ref();
            if p.is_some_and(|p| p.checkpoint == seq && p.differences == 0 && p.error.is_none()) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "projections never reached {seq}: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The projector meets an event that does not fit its read models and fails on it, again and
/// again: it is restarted with a backoff, and the writer keeps deciding all along.
#[tokio::test]
async fn a_failing_projector_never_stops_the_writer() {
    let server = TestServer::start_default().await;
    let client = server.client().await;
    let data = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve::run(
        serve_config(server.url(), data.path()),
        stop.clone(),
    ));
    let commands = CommandClient::new(
        client.clone(),
        CellId::default_cell(),
        Duration::from_secs(5),
    );
    let seq = register_until_accepted(&commands, "vm-0").await;
    projected(&client, seq).await;

    // A writer's event (it carries the expected sequence) that no projection can apply: a pause of
    // a session that never started.
    let js = async_nats::jetstream::new(client.clone());
    let appender = Appender::new(js.clone(), CellId::default_cell());
    let stray = Envelope::new(
        "stray".into(),
        "stray".into(),
        1,
        1_700_000_000_000,
        Actor::operator("ops"),
        Event::SessionPaused {
            session_id: SessionId::parse("never-started").unwrap(),
        },
    );
    appender.append(&stray, seq).await.unwrap();

    for i in 1..=5 {
        register_until_accepted(&commands, &format!("vm-{i}")).await;
    }
    assert!(!serving.is_finished(), "serve goes on");
    let reader = Reader::new(js, CellId::default_cell()).await.unwrap();
    assert_eq!(reader.last_seq().await.unwrap(), seq + 6);
    stop.cancel();
    serving.await.unwrap().unwrap();
}

/// `serve` restarted over its data dir sits idle at the end of its log (its projector's consumer
/// has delivered nothing yet) while the nats-server restarts, and async-nats recreates that idle
/// consumer from the start of the stream: the projector resumes at its own checkpoint, `serve`
/// goes on, and commands after the restart are projected exactly once.
#[tokio::test]
async fn serve_follows_the_log_across_a_nats_server_restart() {
    let mut server = TestServer::start_default().await;
    let client = server.client().await;
    let data = tempfile::tempdir().unwrap();
    let commands = CommandClient::new(
        client.clone(),
        CellId::default_cell(),
        Duration::from_secs(5),
    );
    let stop = CancellationToken::new();
    let first = tokio::spawn(serve::run(
        serve_config(server.url(), data.path()),
        stop.clone(),
    ));
    let mut last = 0;
    for i in 0..50 {
        last = register_until_accepted(&commands, &format!("vm-{i}")).await;
    }
    projected(&client, last).await;
    stop.cancel();
    first.await.unwrap().unwrap();

    // Started again: it resumes at its checkpoint, the end of the log, and waits there.
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve::run(
        serve_config(server.url(), data.path()),
        stop.clone(),
    ));
    projected(&client, last).await;
    let lost_before = orchestrator::log::connection::disconnects();
    server.restart().await.expect("the server restarts");
    for i in 50..60 {
        last = register_until_accepted(&commands, &format!("vm-{i}")).await;
    }
    assert_eq!(last, 60);
    projected(&client, last).await;
    assert!(!serving.is_finished(), "serve goes on");
    // Each role's connection lost the server once (and said so at WARN): they are counted for
    // `orch_nats_disconnects_total`.
    assert!(
        orchestrator::log::connection::disconnects() > lost_before,
        "the lost connections are counted"
    );
    stop.cancel();
    serving.await.unwrap().unwrap();
}
