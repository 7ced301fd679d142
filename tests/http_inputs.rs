//! Bad input, table-driven: malformed JSON, wrong content types, oversized bodies, unknown fields,
//! invalid ids, unknown sessions and VMs, arguments the domain refuses, unknown routes and methods.
//! Every answer is a problem with its stable code, and none of them appends to the log.

mod http_support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_support::{args, Harness, Roles, ALICE, GATEWAY, OPS};

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    token: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: &str,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        token: ALICE,
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        headers: &[],
        status,
        code,
    }
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let big = format!("{{\"game_id\": \"g\", \"requirements\": {{\"k\": \"{}\"}}}}", "x".repeat(64 * 1024));
    let long = "/v1/sessions/sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss/pause";
    vec![
        case("malformed JSON", "POST", "/v1/sessions", r#"{"game_id":"#, 400, "malformed_request"),
        case("not an object", "POST", "/v1/sessions", "[1, 2]", 400, "malformed_request"),
        case("missing field", "POST", "/v1/sessions", "{}", 400, "malformed_request"),
        case("wrong type", "POST", "/v1/sessions", r#"{"game_id": 5}"#, 400, "malformed_request"),
        case("unknown field", "POST", "/v1/sessions", r#"{"game_id": "g", "colour": "red"}"#, 400, "malformed_request"),
        case("trailing garbage", "POST", "/v1/sessions", r#"{"game_id": "g"} x"#, 400, "malformed_request"),
        case("invalid session id in body", "POST", "/v1/sessions", r#"{"game_id": "g", "session_id": "a.b"}"#, 400, "malformed_request"),
        case("invalid user id in body", "POST", "/v1/sessions", r#"{"game_id": "g", "user_id": "has space"}"#, 400, "malformed_request"),
        case("invalid label key", "POST", "/v1/sessions", r#"{"game_id": "g", "requirements": {"Region": "eu"}}"#, 400, "malformed_request"),
        case("unknown end reason", "POST", "/v1/sessions/s-1/end", r#"{"reason": "bored"}"#, 400, "malformed_request"),
        case("unknown field in pause", "POST", "/v1/sessions/s-1/pause", r#"{"why": 1}"#, 400, "malformed_request"),
        case("invalid session id in path", "GET", "/v1/sessions/a.b", "", 400, "malformed_request"),
        case("session id too long", "POST", long, "", 400, "malformed_request"),
        Case { token: OPS, ..case("invalid VM id in path", "GET", "/v1/vms/a*b", "", 400, "malformed_request") },
        Case { content_type: Some("text/plain"), ..case("text/plain", "POST", "/v1/sessions", r#"{"game_id": "g"}"#, 415, "unsupported_content_type") },
        Case { content_type: None, ..case("no content type", "POST", "/v1/sessions", r#"{"game_id": "g"}"#, 415, "unsupported_content_type") },
        Case { content_type: None, ..case("no body where one is required", "POST", "/v1/sessions", "", 415, "unsupported_content_type") },
        Case { content_type: Some("application/x-www-form-urlencoded"), ..case("a form to pause", "POST", "/v1/sessions/s-1/pause", "a=b", 415, "unsupported_content_type") },
        case("oversized body", "POST", "/v1/sessions", &big, 413, "payload_too_large"),
        case("unknown session", "GET", "/v1/sessions/no-such", "", 404, "session_not_found"),
        case("pause an unknown session", "POST", "/v1/sessions/no-such/pause", "", 404, "session_not_found"),
        case("history of an unknown session", "GET", "/v1/sessions/no-such/history", "", 404, "session_not_found"),
        Case { token: OPS, ..case("unknown VM", "GET", "/v1/vms/no-such", "", 404, "vm_not_found") },
        Case { token: OPS, ..case("drain an unknown VM", "POST", "/v1/vms/no-such/drain", "", 404, "vm_not_found") },
        case("assign to an unknown VM", "POST", "/v1/sessions/s-1/assign", r#"{"vm_id": "no-such"}"#, 404, "vm_not_found"),
        case("both vm_id and policy", "POST", "/v1/sessions/s-1/assign", r#"{"vm_id": "vm-1", "policy": "spread"}"#, 422, "invalid_argument"),
        case("explicit policy", "POST", "/v1/sessions/s-1/assign", r#"{"policy": "explicit"}"#, 422, "invalid_argument"),
        Case { token: OPS, ..case("zero capacity", "POST", "/v1/vms", r#"{"vm_id": "vm-2", "capacity": 0}"#, 422, "invalid_argument") },
        Case { token: OPS, ..case("negative capacity", "POST", "/v1/vms", r#"{"vm_id": "vm-2", "capacity": -1}"#, 422, "invalid_argument") },
        Case { token: OPS, ..case("capacity over the maximum", "POST", "/v1/vms", r#"{"vm_id": "vm-2", "capacity": 1025}"#, 422, "invalid_argument") },
        Case { token: OPS, ..case("capacity over u32", "POST", "/v1/vms", r#"{"vm_id": "vm-2", "capacity": 4294967297}"#, 422, "invalid_argument") },
        Case { token: OPS, ..case("negative heartbeat", "POST", "/v1/vms", r#"{"vm_id": "vm-2", "capacity": 1, "heartbeat_ms": -1}"#, 422, "invalid_argument") },
        Case { token: OPS, ..case("heartbeat too short", "POST", "/v1/vms", r#"{"vm_id": "vm-2", "capacity": 1, "heartbeat_ms": 99}"#, 422, "invalid_argument") },
        case("negative wait", "POST", "/v1/sessions/s-1/assign", r#"{"wait_ms": -5}"#, 422, "invalid_argument"),
        case("a start whose wait is out of range starts nothing", "POST", "/v1/sessions", r#"{"game_id": "g", "assign": {"wait_ms": 0}}"#, 422, "invalid_argument"),
        Case { token: OPS, ..case("fractional capacity", "POST", "/v1/vms", r#"{"vm_id": "vm-2", "capacity": 1.5}"#, 400, "malformed_request") },
        Case { token: OPS, ..case("a VM twice", "POST", "/v1/vms", r#"{"vm_id": "vm-1", "capacity": 1}"#, 409, "already_exists") },
        Case { token: GATEWAY, ..case("a session id taken", "POST", "/v1/sessions", r#"{"user_id": "alice", "game_id": "g", "session_id": "s-1"}"#, 409, "already_exists") },
        case("a player's session id", "POST", "/v1/sessions", r#"{"game_id": "g", "session_id": "s-2"}"#, 422, "invalid_argument"),
        Case { headers: &[("idempotency-key", "has space")], ..case("bad Idempotency-Key", "POST", "/v1/sessions", r#"{"game_id": "g"}"#, 400, "malformed_request") },
        case("bad limit", "GET", "/v1/sessions?limit=abc", "", 400, "malformed_request"),
        case("unknown query parameter", "GET", "/v1/sessions?colour=red", "", 400, "malformed_request"),
        case("unknown event type", "GET", "/v1/events?type=SessionStarted,Nope", "", 400, "malformed_request"),
        Case { headers: &[("last-event-id", "yesterday")], ..case("bad Last-Event-ID", "GET", "/v1/events", "", 400, "malformed_request") },
        // Every POST route reads a JSON object only: serde would read a struct from an array.
        Case { token: OPS, ..case("an array to register a VM", "POST", "/v1/vms", r#"["vm-arr", 2, {}]"#, 400, "malformed_request") },
        Case { token: GATEWAY, ..case("an array to start", "POST", "/v1/sessions", r#"["alice", "g", "s-arr"]"#, 400, "malformed_request") },
        case("an array to pause", "POST", "/v1/sessions/s-1/pause", "[]", 400, "malformed_request"),
        case("an array to resume", "POST", "/v1/sessions/s-1/resume", "[]", 400, "malformed_request"),
        case("an array to end", "POST", "/v1/sessions/s-1/end", r#"["user"]"#, 400, "malformed_request"),
        case("an array to assign", "POST", "/v1/sessions/s-1/assign", r#"["vm-1"]"#, 400, "malformed_request"),
        Case { token: OPS, ..case("an array to drain", "POST", "/v1/vms/vm-1/drain", "[]", 400, "malformed_request") },
        Case { token: OPS, ..case("an array to retire", "POST", "/v1/vms/vm-1/retire", "[]", 400, "malformed_request") },
        case("null to pause", "POST", "/v1/sessions/s-1/pause", "null", 400, "malformed_request"),
        Case { token: OPS, ..case("a string to register a VM", "POST", "/v1/vms", r#""vm-arr""#, 400, "malformed_request") },
        case("unknown route", "GET", "/v1/nothing", "", 404, "not_found"),
        case("wrong method", "DELETE", "/v1/sessions", "", 405, "method_not_allowed"),
    ]
}

#[tokio::test]
async fn bad_input_gets_problems_and_appends_nothing() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 5).await;
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(GATEWAY),
            Some(serde_json::json!({"user_id": "alice", "game_id": "g", "session_id": "s-1"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let before = h.last_seq().await;
    let mut failures = Vec::new();
    for c in cases() {
        let mut req = Request::builder()
            .method(c.method)
            .uri(c.path)
            .header("authorization", format!("Bearer {}", c.token));
        if let Some(ct) = c
            .content_type
            .filter(|_| !c.body.is_empty() || c.name.contains("no body"))
        {
            req = req.header("content-type", ct);
        }
        for (k, v) in c.headers {
            req = req.header(*k, *v);
        }
        let a = h.send(req.body(Body::from(c.body)).unwrap()).await;
        if a.status.as_u16() != c.status || a.code() != c.code {
            failures.push(format!(
                "{}: {} {:?}, expected {} {:?} ({})",
                c.name,
                a.status,
                a.code(),
                c.status,
                c.code,
                a.text
            ));
            continue;
        }
        if a.header("content-type") != "application/problem+json" {
            failures.push(format!(
                "{}: content type {:?}",
                c.name,
                a.header("content-type")
            ));
        }
        let p = &a.json;
        if p["status"] != c.status
            || p["type"] != format!("urn:orchestrator:problem:{}", c.code)
            || !p["title"].is_string()
            || !p["detail"].is_string()
        {
            failures.push(format!("{}: not a full problem: {}", c.name, a.text));
        }
    }
    assert!(failures.is_empty(), "bad inputs:\n{}", failures.join("\n"));
    assert_eq!(
        h.last_seq().await,
        before,
        "a refused request appended to the log"
    );
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let mut a = args();
    a.body_limit = 1024;
    let h = Harness::start_with(
        a,
        Roles {
            writer: false,
            projector: false,
        },
    )
    .await;
    let body = format!("{{\"game_id\": \"{}\"}}", "g".repeat(2000));
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(serde_json::from_str(&body).unwrap()),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert_eq!(a.json["limit"], 1024);
}

#[tokio::test]
async fn problems_never_leak_internal_details() {
    // No writer runs: the command cannot be answered. The problem says what a caller can do and
    // nothing about NATS.
    let h = Harness::start_with(
        args(),
        Roles {
            writer: false,
            projector: true,
        },
    )
    .await;
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(serde_json::json!({"game_id": "g"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(!a.text.to_lowercase().contains("nats"), "{}", a.text);
    assert!(!a.text.contains("orch.default"), "{}", a.text);
    assert!(a.json["detail"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
}

#[tokio::test]
async fn capacity_bounds_are_the_documented_ones() {
    // The OpenAPI document states the rule the bridge applies: 1 to the domain's maximum.
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../schemas/openapi.json")).unwrap();
    let capacity = &doc["components"]["schemas"]["RegisterVmBody"]["properties"]["capacity"];
    let max = orchestrator::domain::DomainConfig::default().max_vm_capacity;
    assert_eq!(
        (capacity["minimum"].as_u64(), capacity["maximum"].as_u64()),
        (Some(1), Some(u64::from(max))),
        "{capacity}"
    );
    let h = Harness::start().await;
    for (vm, c) in [("vm-min", 1), ("vm-max", max)] {
        let a = h.register_vm(vm, c).await;
        assert_eq!(a.status, StatusCode::CREATED, "{vm}: {}", a.text);
    }
}
