//! End to end through a real TCP listener: `run_bridge` (the entry point `orchestrator serve` uses)
//! on a free port, a real nats-server, writer and projector, and an HTTP client (reqwest). The
//! main flow of docs/http.md, the event feed over the wire, metrics, and a graceful shutdown with a
//! feed still open.

mod http_support;

use std::time::Duration;

use http_support::{args, Harness, Roles, ALICE, OPS};
use orchestrator::http::run_bridge;
use orchestrator::metrics::Metrics;
use orchestrator_events::CellId;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// The first answer of `GET /healthz`, tried every 10 ms while the bridge starts listening.
    async fn health(&self) -> reqwest::Response {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the bridge never listened on {}", self.base);
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("the bridge answers");
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// The cell (writer + projector) from the harness, and a bridge from `run_bridge` on a free port:
/// the bridge's address, its shutdown and its task.
async fn cell_and_bridge() -> (
    Harness,
    String,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), orchestrator::http::HttpError>>,
) {
    let h = Harness::start_with(
        args(),
        Roles {
            writer: true,
            projector: true,
        },
    )
    .await;
    let port = free_port();
    let mut bridge_args = args();
    bridge_args.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let bridge = tokio::spawn(run_bridge(
        bridge_args,
        h.client.clone(),
        h.server.client().await,
        CellId::default_cell(),
        h.store.clone(),
        stop.clone(),
        Metrics::new(),
    ));
    (h, format!("http://127.0.0.1:{port}"), stop, bridge)
}

/// The sequences of the next `n` events of an open event feed.
async fn feed_ids(feed: &mut reqwest::Response, n: usize) -> Vec<u64> {
    let mut buf = String::new();
    let mut got = Vec::new();
    while got.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), feed.chunk())
            .await
            .expect("events arrive")
            .unwrap()
            .expect("the feed stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        got.extend(http_support::parse_sse(&mut buf));
    }
    got.into_iter().map(|(id, _)| id).collect()
}

/// Shutdown ends the open feeds and the server, without an error.
async fn stops_gracefully(
    stop: tokio_util::sync::CancellationToken,
    bridge: tokio::task::JoinHandle<Result<(), orchestrator::http::HttpError>>,
) {
    stop.cancel();
    let done = tokio::time::timeout(Duration::from_secs(10), bridge).await;
    assert!(
        matches!(done, Ok(Ok(Ok(())))),
        "the bridge stops gracefully: {done:?}"
    );
}

#[tokio::test]
async fn the_main_flow_over_tcp() {
    let (_h, base, stop, bridge) = cell_and_bridge().await;
    let c = Client {
        http: reqwest::Client::new(),
        base,
    };
    assert_eq!(c.health().await.status(), StatusCode::OK);
    use reqwest::Method as M;

    let (s, vm) = c
        .call(
            M::POST,
            "/v1/vms",
            OPS,
            Some(json!({"vm_id": "vm-1", "capacity": 4, "labels": {"region": "eu-west"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    assert_eq!(vm["vm"]["free"], 4);

    let start = c
        .http
        .post(format!("{}/v1/sessions", c.base))
        .bearer_auth(ALICE)
        .header("Idempotency-Key", "e2e-start-1")
        .json(&json!({"game_id": "chess", "requirements": {"region": "eu-west"}, "assign": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::CREATED);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let start: Value = start.json().await.unwrap();
    let id = start["session"]["session_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/sessions/{id}"));
    assert_eq!(start["session"]["status"], "active");

    for (action, status) in [("pause", "paused"), ("resume", "active"), ("end", "ended")] {
        let (s, body) = c
            .call(M::POST, &format!("/v1/sessions/{id}/{action}"), ALICE, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{action}: {body}");
        assert_eq!(body["session"]["status"], status);
    }
    let (s, history) = c
        .call(M::GET, &format!("/v1/sessions/{id}/history"), ALICE, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(history["events"].as_array().unwrap().len(), 5);
    let (s, cap) = c.call(M::GET, "/v1/capacity", OPS, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (cap["capacity"].as_u64(), cap["used"].as_u64()),
        (Some(4), Some(0))
    );

    // The event feed over the wire, resumed after the VM's registration.
    let mut feed = c
        .http
        .get(format!("{}/v1/events", c.base))
        .bearer_auth(OPS)
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    assert_eq!(feed_ids(&mut feed, 5).await, [2, 3, 4, 5, 6]);

    // Metrics count what this bridge sent.
    let metrics = c
        .http
        .get(format!("{}/metrics", c.base))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    for line in [
        "orch_http_commands_total{command=\"start\",outcome=\"accepted\"} 1",
        "orch_http_commands_total{command=\"pause\",outcome=\"accepted\"} 1",
        "orch_http_command_duration_seconds_count{command=\"end\"} 1",
        "orch_sessions{status=\"ended\"} 1",
        "orch_projection_lag_events 0",
        "orch_vm_capacity_slots{vm_id=\"vm-1\",status=\"available\"} 4",
        "orch_nats_connected 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let (s, ready) = c.call(M::GET, "/readyz", OPS, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ready["projection_lag"], 0);
    // A player learns the status only.
    let (s, ready) = c.call(M::GET, "/readyz", ALICE, None).await;
    assert_eq!((s, ready), (StatusCode::OK, json!({"ready": true})));
    let (s, doc) = c.call(M::GET, "/openapi.json", ALICE, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc, orchestrator::http::openapi::document());

    // Shutdown ends the open feed and the server.
    stops_gracefully(stop, bridge).await;
    drop(feed);
}

/// A gateway may speak HTTP/2 to the bridge (cleartext, prior knowledge) on the same port: the same
/// answers, many requests at once on one connection, the event feed as a stream of its own.
#[tokio::test]
async fn http2_with_prior_knowledge_on_the_same_port() {
    let (_h, base, stop, bridge) = cell_and_bridge().await;
    let c = Client {
        http: reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
        base,
    };
    let health = c.health().await;
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    assert_eq!(health.status(), StatusCode::OK);
    use reqwest::Method as M;

    let (s, vm) = c
        .call(
            M::POST,
            "/v1/vms",
            OPS,
            Some(json!({"vm_id": "vm-1", "capacity": 8})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    let mut feed = c
        .http
        .get(format!("{}/v1/events?from=1", c.base))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    assert_eq!(feed.version(), reqwest::Version::HTTP_2);

    // Eight starts at once, multiplexed on the client's one connection.
    let starts = (0..8).map(|_| {
        c.call(
            M::POST,
            "/v1/sessions",
            ALICE,
            Some(json!({"game_id": "chess", "assign": {}})),
        )
    });
    let mut ids = Vec::new();
    for (s, body) in futures::future::join_all(starts).await {
        assert_eq!(s, StatusCode::CREATED, "{body}");
        assert_eq!(body["session"]["status"], "active");
        ids.push(body["session"]["session_id"].as_str().unwrap().to_owned());
    }
    let (s, cap) = c.call(M::GET, "/v1/capacity", OPS, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cap["used"], 8, "{cap}");
    let (s, refused) = c
        .call(M::POST, "/v1/sessions/no-such-session/pause", ALICE, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{refused}");

    // The feed saw the VM and, for each start, its start and its assignment.
    assert_eq!(
        feed_ids(&mut feed, 17).await,
        (1..=17).collect::<Vec<u64>>()
    );

    stops_gracefully(stop, bridge).await;
    drop(feed);
}

#[tokio::test]
async fn run_bridge_refuses_to_start_without_tokens() {
    let h = Harness::start_with(
        args(),
        Roles {
            writer: false,
            projector: false,
        },
    )
    .await;
    let mut a = args();
    a.tokens = None;
    a.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let r = run_bridge(
        a,
        h.client.clone(),
        h.client.clone(),
        CellId::default_cell(),
        h.store.clone(),
        stop,
        Metrics::new(),
    )
    .await;
    let err = r.expect_err("no tokens, no bridge");
    assert!(err.to_string().contains("ORCH_TOKENS"), "{err}");
}
