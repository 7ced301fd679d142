//! Shared by the HTTP bridge tests (`tests/http_*.rs`): per test, a real `nats-server`, the cell's
//! writer, a projector, and the bridge's router with a fixed set of tokens; requests go through
//! `Router::oneshot`. Each test file uses a subset, hence `allow(dead_code)`.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
pub mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use common::TestServer;
use futures::StreamExt;
use orchestrator::http::{router, AppState, BridgeArgs};
use orchestrator::log::Reader;
use orchestrator::projections::{projector, Projections};
use orchestrator::writer::{self, WriterConfig};
use orchestrator_events::CellId;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Players alice and bob, operator ops, service gateway.
pub const TOKENS: &str =
    "alice-token=player:alice,bob-token=player:bob,ops-token=operator:ops,gw-token=service:gateway";
pub const ALICE: &str = "alice-token";
pub const BOB: &str = "bob-token";
pub const OPS: &str = "ops-token";
pub const GATEWAY: &str = "gw-token";

/// What to run beside the bridge.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub writer: bool,
    pub projector: bool,
}

/// A bridge over a real cell.
pub struct Harness {
    pub server: TestServer,
    pub client: async_nats::Client,
    pub state: AppState,
    pub router: Router,
    pub store: Projections,
    pub stop: CancellationToken,
}

/// An answer: status, headers, and the body as JSON (`Value::Null` when empty or not JSON) and
/// as text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Answer {
    /// The header as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The problem's `code` ("" when it is not a problem).
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
}

/// The bridge's default test configuration: tokens above, no rate limit.
pub fn args() -> BridgeArgs {
    BridgeArgs {
        tokens: Some(TOKENS.into()),
        rate_limit: 0.0,
        ..BridgeArgs::default()
    }
}

impl Harness {
    /// Writer, projector and bridge with [`args`].
    pub async fn start() -> Harness {
        Harness::start_with(
            args(),
            Roles {
                writer: true,
                projector: true,
            },
        )
        .await
    }

    /// Writer and bridge with [`args`], and no projector: the store moves only when a test moves it.
    pub async fn start_without_projector() -> Harness {
        Harness::start_with(
            args(),
            Roles {
                writer: true,
                projector: false,
            },
        )
        .await
    }

    /// The bridge configured by `args`, with the roles asked for.
    pub async fn start_with(args: BridgeArgs, roles: Roles) -> Harness {
        let server = TestServer::start_default().await;
        let client = server.client().await;
        let stop = CancellationToken::new();
        let cell = CellId::default_cell();
        let js = async_nats::jetstream::new(client.clone());
        orchestrator::log::ensure_stream(&js, &orchestrator::log::LogConfig::new(cell.clone()))
            .await
            .expect("the stream");
        if roles.writer {
            let mut config = WriterConfig::new(cell.clone());
            config.lease_ttl = Duration::from_secs(2);
            // The matrices start many sessions for one user.
            config.domain.max_sessions_per_user = 10_000;
            tokio::spawn(writer::run(client.clone(), config, stop.clone()));
            wait_for_writer(&client).await;
        }
        let (store, _) = Projections::open(&server.dir().join("projections")).expect("a store");
        if roles.projector {
            let reader = Reader::new(js, cell.clone()).await.expect("a reader");
            tokio::spawn(projector::run(reader, store.clone(), stop.clone()));
        }
        let state = AppState::new(&args, client.clone(), cell, store.clone(), stop.clone())
            .await
            .expect("the bridge's state");
        Harness {
            router: router(state.clone()),
            server,
            client,
            state,
            store,
            stop,
        }
    }

    /// Another bridge over the same NATS and projections: its own in-flight keys, rate buckets
    /// and metrics, as when many run side by side.
    pub async fn another_bridge(&self) -> Router {
        let state = AppState::new(
            &args(),
            self.client.clone(),
            CellId::default_cell(),
            self.store.clone(),
            self.stop.clone(),
        )
        .await
        .expect("the bridge's state");
        router(state)
    }

    /// Sends a request through the router.
    pub async fn send(&self, req: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
            text,
        }
    }

    /// Sends a request and returns only the status and headers, dropping the body (for endless
    /// event feeds).
    pub async fn head_only(&self, req: Request<Body>) -> (StatusCode, HeaderMap) {
        let response = self.router.clone().oneshot(req).await.expect("infallible");
        (response.status(), response.headers().clone())
    }

    /// `method path` with a token and a JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.send(request(method, path, token, body, None)).await
    }

    /// `method path` with a token, a JSON body and an `Idempotency-Key`.
    pub async fn call_key(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
        key: &str,
    ) -> Answer {
        self.send(request(method, path, Some(token), Some(body), Some(key)))
            .await
    }

    /// The stream's last sequence.
    pub async fn last_seq(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        Reader::new(js, CellId::default_cell())
            .await
            .expect("a reader")
            .last_seq()
            .await
            .expect("the last sequence")
    }

    /// Registers a VM as the operator; panics unless 201.
    pub async fn register_vm(&self, vm_id: &str, capacity: u32) -> Answer {
        let a = self
            .call(
                "POST",
                "/v1/vms",
                Some(OPS),
                Some(json!({"vm_id": vm_id, "capacity": capacity, "labels": {"region": "eu"}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a
    }

    /// Starts a session as `token` (for `user` when not a player), assigning it at once when
    /// `assign`; panics unless 201. Returns the session id.
    pub async fn start_session(&self, token: &str, user: Option<&str>, assign: bool) -> String {
        let mut body = json!({"game_id": "chess"});
        if let Some(u) = user {
            body["user_id"] = json!(u);
        }
        if assign {
            body["assign"] = json!({});
        }
        let a = self
            .call("POST", "/v1/sessions", Some(token), Some(body))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.json["session"]["session_id"]
            .as_str()
            .expect("a session id")
            .to_owned()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A request with JSON content type when it has a body.
pub fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    key: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&v).expect("JSON")))
            .expect("a request"),
        None => b.body(Body::empty()).expect("a request"),
    }
}

/// Waits until the cell's writer answers commands.
pub async fn wait_for_writer(client: &async_nats::Client) {
    for _ in 0..200 {
        let req = async_nats::Request::new()
            .payload("{}".into())
            .timeout(Some(Duration::from_millis(500)));
        if client
            .send_request("orch.default.cmd.ping", req)
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no writer answered");
}

/// Reads SSE frames from a response body until `n` events (`id:` lines) came, or `within` passed.
pub async fn read_sse(body: Body, n: usize, within: Duration) -> Vec<(u64, Value)> {
    let mut stream = body.into_data_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while events.len() < n {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        events.extend(parse_sse(&mut buf));
    }
    events
}

/// Takes the complete SSE events out of `buf`: (id, data as JSON).
pub fn parse_sse(buf: &mut String) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let frame: String = buf.drain(..end + 2).collect();
        let mut id = None;
        let mut data = String::new();
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if let Some(id) = id {
            out.push((id, serde_json::from_str(&data).unwrap_or(Value::Null)));
        }
    }
    out
}
