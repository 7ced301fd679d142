//! The session routes of the HTTP bridge against a real cell (nats-server, writer, projector):
//! start (with and without assigning at once), list with filters and pages, read, pause, resume,
//! assign, end, history.

mod http_support;

use axum::http::StatusCode;
use http_support::{Harness, ALICE, GATEWAY, OPS};
use serde_json::json;

#[tokio::test]
async fn a_session_lives_through_every_route() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 2).await;

    // Start as a player (user_id left out: their own).
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(json!({"game_id": "chess", "requirements": {"region": "eu"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let id = a.json["session"]["session_id"].as_str().unwrap().to_owned();
    assert_eq!(a.header("location"), format!("/v1/sessions/{id}"));
    assert_eq!(a.json["session"]["status"], "starting");
    assert_eq!(a.json["session"]["user_id"], "alice");
    assert_eq!(a.json["replayed"], false);
    assert_eq!(a.json["events"][0]["type"], "SessionStarted");
    assert_eq!(
        a.json["events"][0]["actor"],
        json!({"kind": "user", "id": "alice"})
    );
    let start_seq = a.json["seq"].as_u64().unwrap();
    assert_eq!(a.json["events"][0]["seq"].as_u64(), Some(start_seq));

    let a = h
        .call("GET", &format!("/v1/sessions/{id}"), Some(ALICE), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["status"], "starting");

    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{id}/assign"),
            Some(ALICE),
            Some(json!({"policy": "spread"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["session"]["status"], "active");
    assert_eq!(a.json["session"]["vm_id"], "vm-1");
    assert_eq!(a.json["events"][0]["type"], "SessionAssigned");

    // Pause and resume with no body at all.
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{id}/pause"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["session"]["status"], "paused");
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{id}/resume"),
            Some(ALICE),
            Some(json!({})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["session"]["status"], "active");

    // Pausing twice is refused by the domain: 409 with the stable code and its fields.
    h.call(
        "POST",
        &format!("/v1/sessions/{id}/pause"),
        Some(ALICE),
        None,
    )
    .await;
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{id}/pause"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.header("content-type"), "application/problem+json");
    assert_eq!(a.code(), "invalid_transition");
    assert_eq!(a.json["current"], "paused");
    assert_eq!(
        a.json["type"],
        "urn:orchestrator:problem:invalid_transition"
    );

    let a = h
        .call("POST", &format!("/v1/sessions/{id}/end"), Some(ALICE), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["session"]["status"], "ended");
    assert_eq!(a.json["session"]["end_reason"], "user");
    assert_eq!(
        a.json["events"][0]["SessionEnded"],
        json!(null),
        "the event is inside `event`"
    );
    assert_eq!(
        a.json["events"][0]["event"]["SessionEnded"]["vm_id"],
        "vm-1"
    );

    let a = h
        .call(
            "GET",
            &format!("/v1/sessions/{id}/history"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let types: Vec<_> = a.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "SessionStarted",
            "SessionAssigned",
            "SessionPaused",
            "SessionResumed",
            "SessionPaused",
            "SessionEnded"
        ]
    );
    let statuses: Vec<_> = a.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        ["starting", "active", "paused", "active", "paused", "ended"]
    );
    assert_eq!(a.json["status"], "ended");
    assert_eq!(a.json["events"][0]["seq"].as_u64(), Some(start_seq));
    let t = &a.json["time_in_status_ms"];
    let (s, ac, p) = (
        t["starting"].as_i64().unwrap(),
        t["active"].as_i64().unwrap(),
        t["paused"].as_i64().unwrap(),
    );
    assert!(s >= 0 && ac >= 0 && p >= 0);
    let events = a.json["events"].as_array().unwrap();
    let first = events[0]["occurred_at"].as_i64().unwrap();
    let last = events[5]["occurred_at"].as_i64().unwrap();
    assert_eq!(
        s + ac + p,
        last - first,
        "an ended session's times add up to its life"
    );

    // The slot is free again.
    let a = h.call("GET", "/v1/capacity", Some(OPS), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["used"], 0);
    assert_eq!(a.json["sessions"]["ended"], 1);
}

#[tokio::test]
async fn start_with_assign_and_service_and_operator_ends() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 1).await;

    // The gateway starts for a user and assigns at once: two events.
    let a = h
        .call("POST", "/v1/sessions", Some(GATEWAY), Some(json!({"user_id": "carol", "game_id": "go", "session_id": "s-carol", "assign": {"vm_id": "vm-1"}})))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.json["events"].as_array().unwrap().len(), 2);
    assert_eq!(a.json["events"][1]["type"], "SessionAssigned");
    assert_eq!(a.json["session"]["session_id"], "s-carol");
    assert_eq!(a.json["session"]["status"], "active");
    assert_eq!(
        a.json["events"][0]["actor"],
        json!({"kind": "service", "id": "gateway"})
    );

    // A service must name the user.
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(GATEWAY),
            Some(json!({"game_id": "go"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_argument")
    );
    assert_eq!(a.json["field"], "user_id");

    // No room left: the start is applied, the assignment refused; the problem names the session.
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(json!({"game_id": "go", "assign": {}})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "no_capacity"),
        "{}",
        a.text
    );
    let waiting = a.json["session_id"].as_str().unwrap().to_owned();
    assert!(a.json["seq"].as_u64().is_some());
    let a = h
        .call("GET", &format!("/v1/sessions/{waiting}"), Some(ALICE), None)
        .await;
    assert_eq!(a.json["status"], "starting");

    // An operator ends carol's session: the reason defaults to operator.
    let a = h
        .call("POST", "/v1/sessions/s-carol/end", Some(OPS), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["session"]["end_reason"], "operator");
    // ...and may give another.
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{waiting}/end"),
            Some(OPS),
            Some(json!({"reason": "placement_timeout"})),
        )
        .await;
    assert_eq!(
        a.json["session"]["end_reason"], "placement_timeout",
        "{}",
        a.text
    );

    // A player may not give another reason.
    let mine = h.start_session(ALICE, None, false).await;
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{mine}/end"),
            Some(ALICE),
            Some(json!({"reason": "vm_lost"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test]
async fn lists_filter_and_paginate() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 10).await;
    let mut carol = Vec::new();
    for i in 0..4 {
        let body = json!({"user_id": format!("u{}", i % 2), "game_id": "go", "session_id": format!("s{i}"), "assign": {}});
        let a = h
            .call("POST", "/v1/sessions", Some(GATEWAY), Some(body))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        carol.push(format!("s{i}"));
    }
    h.call("POST", "/v1/sessions/s1/pause", Some(GATEWAY), None)
        .await;

    // Pages of 2 over everything.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/sessions?limit=2&after={a}"),
            None => "/v1/sessions?limit=2".to_owned(),
        };
        let a = h.call("GET", &path, Some(OPS), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        for s in a.json["sessions"].as_array().unwrap() {
            seen.push(s["session_id"].as_str().unwrap().to_owned());
        }
        match a.json["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, carol);

    let ids = |a: &http_support::Answer| -> Vec<String> {
        a.json["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let a = h
        .call("GET", "/v1/sessions?user_id=u1", Some(GATEWAY), None)
        .await;
    assert_eq!(ids(&a), ["s1", "s3"]);
    let a = h
        .call("GET", "/v1/sessions?status=paused", Some(OPS), None)
        .await;
    assert_eq!(ids(&a), ["s1"]);
    let a = h
        .call("GET", "/v1/sessions?vm_id=vm-1&user_id=u0", Some(OPS), None)
        .await;
    assert_eq!(ids(&a), ["s0", "s2"]);
    assert!(a.json["as_of_seq"].as_u64().unwrap() >= 10);
    let a = h.call("GET", "/v1/sessions?limit=0", Some(OPS), None).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_argument")
    );
    let a = h
        .call("GET", "/v1/sessions?status=sleeping", Some(OPS), None)
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "malformed_request")
    );

    // A player sees only their own, even without asking.
    let mine = h.start_session(ALICE, None, false).await;
    let a = h.call("GET", "/v1/sessions", Some(ALICE), None).await;
    assert_eq!(ids(&a), [mine]);
}
