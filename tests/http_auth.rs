//! The authorization matrix of the HTTP bridge, table-driven: every route against an anonymous
//! caller, the session's owner (alice), another player (bob), an operator and a service. A refused
//! command (401, 403, 404) must publish nothing: the stream's last sequence stays where it was.
//! Also: unknown tokens, the rate limit, and what a player's listing shows.

mod http_support;

use axum::http::StatusCode;
use http_support::{args, request, Harness, Roles, ALICE, BOB, GATEWAY, OPS};
use serde_json::{json, Value};

/// Who calls.
const WHO: [(&str, Option<&str>); 5] = [
    ("anonymous", None),
    ("owner", Some(ALICE)),
    ("another player", Some(BOB)),
    ("operator", Some(OPS)),
    ("service", Some(GATEWAY)),
];

/// What a case needs before the call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Setup {
    Nothing,
    /// An alice session, `starting`.
    Starting,
    /// An alice session, `active` on a VM.
    Active,
    /// An alice session, `paused`.
    Paused,
    /// A fresh, empty VM.
    Vm,
}

struct Row {
    method: &'static str,
    /// `{s}`: the session, `{vm}`: the VM.
    path: &'static str,
    body: Option<fn() -> Value>,
    setup: Setup,
    /// Expected status per caller, in the order of [`WHO`].
    expect: [u16; 5],
}

fn start_for_alice() -> Value {
    json!({"user_id": "alice", "game_id": "chess"})
}

fn register() -> Value {
    json!({"vm_id": "vm-new", "capacity": 2})
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row { method: "POST", path: "/v1/sessions", body: Some(start_for_alice), setup: Setup::Nothing, expect: [401, 201, 403, 201, 201] },
    Row { method: "GET", path: "/v1/sessions", body: None, setup: Setup::Starting, expect: [401, 200, 200, 200, 200] },
    Row { method: "GET", path: "/v1/sessions?user_id=alice", body: None, setup: Setup::Starting, expect: [401, 200, 403, 200, 200] },
    Row { method: "GET", path: "/v1/sessions/{s}", body: None, setup: Setup::Starting, expect: [401, 200, 404, 200, 200] },
    Row { method: "GET", path: "/v1/sessions/{s}/history", body: None, setup: Setup::Starting, expect: [401, 200, 404, 200, 200] },
    Row { method: "POST", path: "/v1/sessions/{s}/assign", body: None, setup: Setup::Starting, expect: [401, 200, 404, 200, 200] },
    Row { method: "POST", path: "/v1/sessions/{s}/pause", body: None, setup: Setup::Active, expect: [401, 200, 404, 200, 200] },
    Row { method: "POST", path: "/v1/sessions/{s}/resume", body: None, setup: Setup::Paused, expect: [401, 200, 404, 200, 200] },
    Row { method: "POST", path: "/v1/sessions/{s}/end", body: None, setup: Setup::Active, expect: [401, 200, 404, 200, 200] },
    Row { method: "POST", path: "/v1/vms", body: Some(register), setup: Setup::Nothing, expect: [401, 403, 403, 201, 403] },
    Row { method: "GET", path: "/v1/vms", body: None, setup: Setup::Nothing, expect: [401, 403, 403, 200, 200] },
    Row { method: "GET", path: "/v1/vms/{vm}", body: None, setup: Setup::Vm, expect: [401, 403, 403, 200, 200] },
    Row { method: "POST", path: "/v1/vms/{vm}/drain", body: None, setup: Setup::Vm, expect: [401, 403, 403, 200, 403] },
    Row { method: "POST", path: "/v1/vms/{vm}/retire", body: None, setup: Setup::Vm, expect: [401, 403, 403, 200, 403] },
    Row { method: "GET", path: "/v1/capacity", body: None, setup: Setup::Nothing, expect: [401, 403, 403, 200, 200] },
    Row { method: "GET", path: "/v1/events", body: None, setup: Setup::Nothing, expect: [401, 200, 200, 200, 200] },
    Row { method: "GET", path: "/v1/events?session_id={s}", body: None, setup: Setup::Starting, expect: [401, 200, 404, 200, 200] },
    Row { method: "GET", path: "/metrics", body: None, setup: Setup::Nothing, expect: [401, 403, 403, 200, 200] },
    Row { method: "GET", path: "/healthz", body: None, setup: Setup::Nothing, expect: [200, 200, 200, 200, 200] },
    Row { method: "GET", path: "/readyz", body: None, setup: Setup::Nothing, expect: [200, 200, 200, 200, 200] },
    Row { method: "GET", path: "/openapi.json", body: None, setup: Setup::Nothing, expect: [200, 200, 200, 200, 200] },
];

/// Prepares what a case needs; returns (session id, VM id).
async fn prepare(h: &Harness, setup: Setup, n: usize) -> (String, String) {
    let vm = format!("vm-{n}");
    if setup == Setup::Nothing {
        return (String::new(), vm);
    }
    h.register_vm(&vm, 1).await;
    if setup == Setup::Vm {
        return (String::new(), vm);
    }
    let mut body = json!({"user_id": "alice", "game_id": "chess"});
    if matches!(setup, Setup::Active | Setup::Paused) {
        body["assign"] = json!({"vm_id": vm});
    }
    let a = h
        .call("POST", "/v1/sessions", Some(GATEWAY), Some(body))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let s = a.json["session"]["session_id"].as_str().unwrap().to_owned();
    if setup == Setup::Paused {
        let a = h
            .call(
                "POST",
                &format!("/v1/sessions/{s}/pause"),
                Some(GATEWAY),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    (s, vm)
}

#[tokio::test]
async fn authorization_matrix() {
    let h = Harness::start().await;
    let mut n = 0;
    let mut failures = Vec::new();
    for row in ROWS {
        for (i, (who, token)) in WHO.iter().enumerate() {
            n += 1;
            let (s, vm) = prepare(&h, row.setup, n).await;
            let path = row.path.replace("{s}", &s).replace("{vm}", &vm);
            let mut body = row.body.map(|b| b());
            if let Some(b) = body.as_mut().filter(|b| b.get("vm_id").is_some()) {
                b["vm_id"] = json!(format!("vm-new-{n}"));
            }
            let before = h.last_seq().await;
            let req = request(row.method, &path, *token, body, None);
            let (status, headers) = h.head_only(req).await;
            let after = h.last_seq().await;
            let want = row.expect[i];
            if status.as_u16() != want {
                failures.push(format!(
                    "{} {path} as {who}: {status}, expected {want}",
                    row.method
                ));
            }
            if status.is_client_error() && after != before {
                failures.push(format!("{} {path} as {who}: refused ({status}) but the log moved from {before} to {after}", row.method));
            }
            if status == StatusCode::UNAUTHORIZED
                && headers
                    .get("www-authenticate")
                    .is_none_or(|v| v != "Bearer")
            {
                failures.push(format!(
                    "{} {path} as {who}: 401 without WWW-Authenticate: Bearer",
                    row.method
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn unknown_tokens_and_schemes_are_401_problems() {
    let h = Harness::start_with(
        args(),
        Roles {
            writer: false,
            projector: false,
        },
    )
    .await;
    for header in ["Bearer nope", "Basic YWxpY2U6eA==", "Bearer", "alice-token"] {
        let req = axum::http::Request::builder()
            .uri("/v1/sessions")
            .header("authorization", header)
            .body(axum::body::Body::empty())
            .unwrap();
        let a = h.send(req).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(a.code(), "unauthorized");
        assert_eq!(a.header("www-authenticate"), "Bearer");
        assert_eq!(a.header("content-type"), "application/problem+json");
    }
    // The scheme is case-insensitive.
    let req = axum::http::Request::builder()
        .uri("/v1/sessions")
        .header("authorization", format!("bearer {ALICE}"))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_player_sees_only_their_own_sessions() {
    let h = Harness::start().await;
    let alices = h.start_session(ALICE, None, false).await;
    let bobs = h.start_session(BOB, None, false).await;
    let a = h.call("GET", "/v1/sessions", Some(BOB), None).await;
    let ids: Vec<_> = a.json["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].clone())
        .collect();
    assert_eq!(ids, [json!(bobs)]);
    // Bob's 404 for alice's session looks exactly like one for a session that does not exist.
    let theirs = h
        .call("GET", &format!("/v1/sessions/{alices}"), Some(BOB), None)
        .await;
    let none = h
        .call("GET", "/v1/sessions/no-such-session", Some(BOB), None)
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.code(), none.code());
    assert_eq!(theirs.json["title"], none.json["title"]);
    // Bob may not start a session for alice.
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(BOB),
            Some(json!({"user_id": "alice", "game_id": "go"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test]
async fn the_rate_limit_is_per_principal() {
    let mut a = args();
    a.rate_limit = 0.5;
    a.rate_burst = 3;
    let h = Harness::start_with(
        a,
        Roles {
            writer: false,
            projector: false,
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            h.call("GET", "/v1/sessions", Some(ALICE), None)
                .await
                .status,
            StatusCode::OK
        );
    }
    let a = h.call("GET", "/v1/sessions", Some(ALICE), None).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let wait: u64 = a.header("retry-after").parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        h.call("GET", "/v1/sessions", Some(BOB), None).await.status,
        StatusCode::OK
    );
    // Health checks are not limited.
    assert_eq!(
        h.call("GET", "/healthz", None, None).await.status,
        StatusCode::OK
    );
}
