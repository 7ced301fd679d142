//! The HTTP bridge phase: the lifecycle mix and session reads through the bridge ([`serve`] on a
//! loopback listener, a projector following the log for its read-your-writes), against the same
//! in-process writer as the NATS phase, each HTTP client on its own keep-alive HTTP/1.1 connection;
//! then the busiest level once more, its clients sharing [`HTTP2_CONNECTIONS`] HTTP/2 connections.
//!
//! A write through the bridge is a command over NATS plus HTTP plus the wait until the bridge's
//! projections show it (read-your-writes), so it is compared with the same command over NATS.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use orchestrator_events::CellId;
use serde::Serialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::orchestrator::{ClientOutcome, LevelFigures};
use super::{BenchError, Plan};
use orchestrator::http::{serve, AppState, BridgeArgs};
use orchestrator::log::Reader;
use orchestrator::projections::{projector, Projections};

/// The bridge's one token: a service acting for the benchmark's users.
const TOKEN: &str = "bench-gateway-token";

/// How long the bridge's projector may take to catch up with the log before the phase starts.
const CATCH_UP: Duration = Duration::from_secs(300);

/// Writes and reads through the bridge, per level of concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct HttpFigures {
    /// The lifecycle commands (start, assign, pause, resume, end) through the bridge.
    pub writes: Vec<LevelFigures>,
    /// `GET /v1/sessions/{id}` of sessions the writes created.
    pub reads: Vec<LevelFigures>,
    /// The busiest level again over a few shared HTTP/2 connections.
    pub http2: Http2Figures,
}

/// The most clients of the run sharing [`HTTP2_CONNECTIONS`] HTTP/2 connections (cleartext, prior
/// knowledge), as the clients behind a gateway that speaks HTTP/2 to the bridge do.
#[derive(Debug, Clone, Serialize)]
pub struct Http2Figures {
    /// The HTTP/2 connections the clients share.
    pub connections: usize,
    /// The lifecycle commands.
    pub writes: LevelFigures,
    /// `GET /v1/sessions/{id}`.
    pub reads: LevelFigures,
}

/// The HTTP/2 connections the busiest level's clients share.
pub const HTTP2_CONNECTIONS: usize = 4;

fn connecting(e: String) -> BenchError {
    BenchError::Setup(format!("connecting to the bridge: {e}"))
}

async fn run_writes(
    pool: &Pool,
    plan: &Plan,
    clients: usize,
    tag: &str,
    created: &Arc<Mutex<Vec<String>>>,
) -> Result<LevelFigures, BenchError> {
    let (pool, created, tag) = (pool.clone(), created.clone(), Arc::<str>::from(tag));
    super::orchestrator::run_clients(clients, plan, move |k, deadline, budget| {
        writer_client(
            pool.clone(),
            tag.clone(),
            k,
            deadline,
            budget,
            created.clone(),
        )
    })
    .await
}

async fn run_reads(
    pool: &Pool,
    plan: &Plan,
    clients: usize,
    sessions: &Arc<Vec<String>>,
) -> Result<LevelFigures, BenchError> {
    let (pool, sessions) = (pool.clone(), sessions.clone());
    super::orchestrator::run_clients(clients, plan, move |k, deadline, budget| {
        reader_client(pool.clone(), k, deadline, budget, sessions.clone())
    })
    .await
}

/// A client's way to the bridge: a keep-alive HTTP/1.1 connection of its own, or a stream on an
/// HTTP/2 connection it shares with other clients (what a gateway in front of the bridge does).
enum Connection {
    Http1(SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(addr: std::net::SocketAddr) -> Result<TokioIo<TcpStream>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(TokioIo::new(stream))
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> Result<Self, String> {
        let (sender, connection) = hyper::client::conn::http1::handshake(connect(addr).await?)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            // The connection ends with the phase; an error then changes nothing measured.
            let _ = connection.await;
        });
        Ok(Self::Http1(sender))
    }

    /// An HTTP/2 connection (prior knowledge, no TLS), whose sender every client of it clones.
    async fn open_http2(addr: std::net::SocketAddr) -> Result<Self, String> {
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            connect(addr).await?,
        )
        .await
        .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self::Http2(sender))
    }

    fn share(&self) -> Option<Self> {
        match self {
            Self::Http1(_) => None,
            Self::Http2(s) => Some(Self::Http2(s.clone())),
        }
    }

    /// Sends one request and reads the whole answer; its status.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<StatusCode, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "127.0.0.1")
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match body {
            Some(b) => {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = match self {
            Self::Http1(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
            Self::Http2(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

fn record(out: &mut ClientOutcome, started: Instant, answer: Result<StatusCode, String>) {
    out.samples.push(started.elapsed());
    match answer {
        Ok(s) if s.is_success() => {}
        Ok(s) => {
            *out.rejected
                .entry(format!("http {}", s.as_u16()))
                .or_default() += 1
        }
        Err(_) => out.errors += 1,
    }
}

/// Connections opened before a level starts, so that its clock measures requests only; each
/// client takes one and gives it back when done.
type Pool = Arc<Mutex<Vec<Connection>>>;

fn take(pool: &Pool) -> Option<Connection> {
    pool.lock().ok()?.pop()
}

fn give_back(pool: &Pool, conn: Connection) {
    if let Ok(mut p) = pool.lock() {
        p.push(conn);
    }
}

async fn writer_client(
    pool: Pool,
    tag: Arc<str>,
    k: usize,
    deadline: Instant,
    budget: Arc<AtomicI64>,
    created: Arc<Mutex<Vec<String>>>,
) -> ClientOutcome {
    let mut out = ClientOutcome::new();
    let Some(mut conn) = take(&pool) else {
        out.errors += 1;
        return out;
    };
    let user = format!("user-{tag}-c{k}");
    'sessions: for n in 0.. {
        let session = format!("s-{tag}-c{k}-{n}");
        let base = format!("/v1/sessions/{session}");
        let steps = [
            (
                "/v1/sessions".to_owned(),
                json!({"user_id": user, "game_id": format!("game-{:03}", k % 200),
                       "session_id": session, "requirements": {"region": "eu-west"}}),
            ),
            (format!("{base}/assign"), json!({})),
            (format!("{base}/pause"), json!({})),
            (format!("{base}/resume"), json!({})),
            (format!("{base}/end"), json!({"reason": "user"})),
        ];
        for (i, (path, body)) in steps.into_iter().enumerate() {
            if Instant::now() >= deadline || budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
                break 'sessions;
            }
            let started = Instant::now();
            let answer = conn.call(Method::POST, &path, Some(body)).await;
            if i == 0 && matches!(answer, Ok(s) if s.is_success()) {
                if let Ok(mut c) = created.lock() {
                    c.push(session.clone());
                }
            }
            record(&mut out, started, answer);
        }
    }
    give_back(&pool, conn);
    out
}

async fn reader_client(
    pool: Pool,
    k: usize,
    deadline: Instant,
    budget: Arc<AtomicI64>,
    sessions: Arc<Vec<String>>,
) -> ClientOutcome {
    let mut out = ClientOutcome::new();
    let Some(mut conn) = take(&pool) else {
        out.errors += 1;
        return out;
    };
    let mut i = k.wrapping_mul(7919);
    while !sessions.is_empty()
        && Instant::now() < deadline
        && budget.fetch_sub(1, Ordering::Relaxed) > 0
    {
        i = i.wrapping_add(1);
        let path = format!("/v1/sessions/{}", sessions[i % sessions.len()]);
        let started = Instant::now();
        let answer = conn.call(Method::GET, &path, None).await;
        record(&mut out, started, answer);
    }
    give_back(&pool, conn);
    out
}

/// Runs the bridge against the writer already serving `cell` at `url`, and measures each level of
/// `plan`, writes first, then reads. `dir` holds the bridge's projections.
pub async fn measure(
    url: &str,
    plan: &Plan,
    dir: &Path,
    cell: &CellId,
) -> Result<HttpFigures, BenchError> {
    let nats = async_nats::connect(url)
        .await
        .map_err(|e| BenchError::Nats(format!("connect: {e}")))?;
    let js = async_nats::jetstream::new(nats.clone());
    let reader = Reader::new(js, cell.clone()).await?;
    let (store, _) = Projections::open(dir)?;
    let shutdown = CancellationToken::new();
    let projector_task = tokio::spawn(projector::run(
        reader.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let last = reader.last_seq().await?;
    store.wait_for(last, CATCH_UP).await?;
    let args = BridgeArgs {
        tokens: Some(format!("{TOKEN}=service:bench-gateway")),
        rate_limit: 0.0,
        ..BridgeArgs::default()
    };
    let state = AppState::new(
        &args,
        nats.clone(),
        cell.clone(),
        store.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| BenchError::Setup(format!("HTTP bridge: {e}")))?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| BenchError::Setup(format!("binding the bridge: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Setup(format!("the bridge's address: {e}")))?;
    let server = tokio::spawn(serve(listener, state, shutdown.clone()));

    let measured = async {
        let most = plan.clients.iter().copied().max().unwrap_or(1);
        let mut conns = Vec::with_capacity(most);
        for _ in 0..most {
            conns.push(Connection::open(addr).await.map_err(connecting)?);
        }
        let pool: Pool = Arc::new(Mutex::new(conns));
        let created = Arc::new(Mutex::new(Vec::new()));
        let mut writes = Vec::with_capacity(plan.clients.len());
        for &clients in &plan.clients {
            tracing::info!(clients, "HTTP: writes");
            writes.push(run_writes(&pool, plan, clients, &format!("h{clients}"), &created).await?);
        }
        let sessions =
            Arc::new(std::mem::take(&mut *created.lock().map_err(|_| {
                BenchError::Setup("a write client panicked".into())
            })?));
        let mut reads = Vec::with_capacity(plan.clients.len());
        for &clients in &plan.clients {
            tracing::info!(clients, "HTTP: reads");
            reads.push(run_reads(&pool, plan, clients, &sessions).await?);
        }
        // The busiest level again, its clients sharing a few HTTP/2 connections.
        let connections = HTTP2_CONNECTIONS.min(most);
        let mut shared = Vec::with_capacity(connections);
        for _ in 0..connections {
            shared.push(Connection::open_http2(addr).await.map_err(connecting)?);
        }
        let streams: Vec<Connection> = (0..most)
            .filter_map(|k| shared[k % connections].share())
            .collect();
        let pool: Pool = Arc::new(Mutex::new(streams));
        tracing::info!(clients = most, connections, "HTTP/2: writes");
        let h2_writes = run_writes(
            &pool,
            plan,
            most,
            &format!("h2x{most}"),
            &Arc::new(Mutex::new(Vec::new())),
        )
        .await?;
        tracing::info!(clients = most, connections, "HTTP/2: reads");
        let h2_reads = run_reads(&pool, plan, most, &sessions).await?;
        let http2 = Http2Figures {
            connections,
            writes: h2_writes,
            reads: h2_reads,
        };
        Ok::<_, BenchError>(HttpFigures {
            writes,
            reads,
            http2,
        })
    }
    .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), projector_task).await;
    let _ = nats.drain().await;
    measured
}
