//! The metrics of a process without a bridge: `serve --role writer --metrics-addr` (in process)
//! against a real nats-server, scraped after a few commands: the writer's counters, its append
//! latency and its lease move; OpenMetrics when asked for; a projector alone shows its gauges.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::TestServer;
use orchestrator::client::CommandClient;
use orchestrator::domain::command::RegisterVm;
use orchestrator::domain::Command;
use orchestrator::http::BridgeArgs;
use orchestrator::nats_server::free_port;
use orchestrator::serve::{self, NatsMode, Roles, ServeConfig};
use orchestrator::writer::Reply;
use orchestrator_events::{Actor, CellId, CommandId, VmId};
use tokio_util::sync::CancellationToken;

fn config(server: &TestServer, data: &std::path::Path, roles: Roles) -> (ServeConfig, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port().expect("a free port"))
        .parse()
        .unwrap();
    let config = ServeConfig {
        nats: NatsMode::External { url: server.url() },
        data_dir: data.to_path_buf(),
        cell: CellId::default_cell(),
        replicas: 1,
        roles,
        roles_explicit: true,
        domain: Default::default(),
        lease_ttl: Duration::from_secs(2),
        group_commit: orchestrator::serve::GroupCommit::Auto,
        timers: Default::default(),
        bridge: BridgeArgs::default(),
        metrics_addr: Some(addr),
        feed: Default::default(),
        nats_security: Default::default(),
    };
    (config, addr)
}

const WRITER: Roles = Roles {
    writer: true,
    projector: false,
    bridge: false,
    feed: false,
};

fn register(vm: &str, capacity: u32) -> Command {
    Command::RegisterVm(RegisterVm {
        endpoint: None,
        heartbeat_ms: None,
        vm_id: VmId::parse(vm).unwrap(),
        capacity,
        labels: Default::default(),
    })
}

/// Sends `command` as `id` until a writer answers (it may still be taking the lease).
async fn send(commands: &CommandClient, id: &str, command: &Command) -> Reply {
    let id = CommandId::parse(id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match commands.send(&id, &Actor::operator("ops"), command).await {
            Ok(reply) => return reply,
            Err(e) => assert!(Instant::now() < deadline, "no writer answers: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /metrics` on `addr`, with `accept` if given, retried until the listener is up.
async fn scrape(addr: SocketAddr, accept: Option<&str>) -> (String, String) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut req = http.get(format!("http://{addr}/metrics"));
        if let Some(accept) = accept {
            req = req.header("Accept", accept);
        }
        match req.send().await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
                return (content_type, r.text().await.unwrap());
            }
            Err(e) => assert!(Instant::now() < deadline, "no metrics listener: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `series` (name and labels, exactly as exposed).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_writer_alone_exports_its_metrics() {
    let server = TestServer::start_default().await;
    let data = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (config, addr) = config(&server, data.path(), WRITER);
    let serving = tokio::spawn(serve::run(config, stop.clone()));
    let commands = CommandClient::new(
        server.client().await,
        CellId::default_cell(),
        Duration::from_secs(5),
    );

    let accepted = send(&commands, "reg-1", &register("vm-1", 4)).await;
    assert!(
        matches!(
            accepted,
            Reply::Accepted {
                duplicate: false,
                ..
            }
        ),
        "{accepted:?}"
    );
    let again = send(&commands, "reg-1", &register("vm-1", 4)).await;
    assert!(
        matches!(
            again,
            Reply::Accepted {
                duplicate: true,
                ..
            }
        ),
        "{again:?}"
    );
    let taken = send(&commands, "reg-2", &register("vm-1", 8)).await;
    assert!(
        matches!(
            &taken,
            Reply::Rejected {
                rejection: Some(_),
                ..
            }
        ),
        "{taken:?}"
    );
    let Reply::Rejected { code, .. } = taken else {
        unreachable!()
    };
    send(&commands, "reg-3", &register("vm-2", 2)).await;

    let (content_type, text) = scrape(addr, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_eq!(
        value(&text, "orch_writer_commands_total{outcome=\"accepted\"}"),
        2.0
    );
    assert_eq!(
        value(&text, "orch_writer_commands_total{outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "orch_writer_commands_total{outcome=\"rejected\"}"),
        1.0
    );
    let rejections =
        format!("orch_writer_command_rejections_total{{outcome=\"rejected\",code=\"{code}\"}}");
    assert_eq!(value(&text, &rejections), 1.0);
    assert_eq!(
        value(&text, "orch_writer_append_duration_seconds_count"),
        2.0
    );
    assert!(value(&text, "orch_writer_append_duration_seconds_sum") > 0.0);
    assert_eq!(value(&text, "orch_writer_append_batch_events_sum"), 2.0);
    assert_eq!(value(&text, "orch_writer_appends_in_flight"), 0.0);
    assert_eq!(value(&text, "orch_writer_lease_held"), 1.0);
    assert_eq!(value(&text, "orch_writer_takeovers_total"), 1.0);
    assert_eq!(value(&text, "orch_writer_recoveries_total"), 0.0);
    assert_eq!(value(&text, "orch_nats_connected"), 1.0);
    assert!(
        text.contains("# TYPE orch_nats_disconnects_total counter\n"),
        "{text}"
    );
    for absent in ["orch_http_", "orch_projection_checkpoint", "# EOF"] {
        assert!(
            !text.contains(absent),
            "{absent} in a writer's metrics:\n{text}"
        );
    }

    let openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (content_type, text) = scrape(addr, Some(openmetrics)).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(
        text.contains("# TYPE orch_writer_takeovers counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT orch_writer_append_duration_seconds seconds\n"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    stop.cancel();
    serving.await.unwrap().expect("serve stops cleanly");
}

#[tokio::test]
async fn a_projector_alone_exports_the_projections() {
    let server = TestServer::start_default().await;
    let data = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let roles = Roles {
        writer: false,
        projector: true,
        bridge: false,
        feed: false,
    };
    let (config, addr) = config(&server, data.path(), roles);
    let serving = tokio::spawn(serve::run(config, stop.clone()));

    let (_, text) = scrape(addr, None).await;
    assert_eq!(value(&text, "orch_projection_checkpoint"), 0.0);
    assert_eq!(value(&text, "orch_sessions{status=\"active\"}"), 0.0);
    assert!(!text.contains("orch_writer_"), "no writer here:\n{text}");

    stop.cancel();
    serving.await.unwrap().expect("serve stops cleanly");
}
