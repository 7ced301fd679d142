//! What a player may learn through the bridge, and no more: no session id of another player (a
//! player cannot choose ids), no operator's or service's id in the actors of their own sessions'
//! events (history, event feed, command responses). Operators and services see all of it.

mod http_support;

use std::time::Duration;

use axum::http::StatusCode;
use http_support::{read_sse, request, Harness, ALICE, GATEWAY, OPS};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

#[tokio::test]
async fn a_player_cannot_choose_a_session_id() {
    let h = Harness::start().await;
    // The gateway chooses bob's session id; it may.
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(GATEWAY),
            Some(json!({"user_id": "bob", "game_id": "chess", "session_id": "s-bob"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let before = h.last_seq().await;

    // Alice naming bob's id and alice naming a free one get the same answer: nothing to tell apart.
    let mut answers = Vec::new();
    for id in ["s-bob", "s-free"] {
        let a = h
            .call_key(
                "POST",
                "/v1/sessions",
                ALICE,
                json!({"game_id": "chess", "session_id": id}),
                &format!("alice-{id}"),
            )
            .await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_argument"),
            "{}",
            a.text
        );
        assert_eq!(a.json["field"], "session_id");
        assert!(
            a.json["reason"]
                .as_str()
                .unwrap()
                .contains("derives it from the Idempotency-Key"),
            "{}",
            a.text
        );
        answers.push((a.json["detail"].clone(), a.json["reason"].clone()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(h.last_seq().await, before, "nothing was sent to the writer");

    // Without it, the id is derived from the key, so a retry names the same session.
    let key = "alice-start-1";
    let derived = format!("s{}", &hex(&Sha256::digest(key.as_bytes()))[..24]);
    for replayed in [false, true] {
        let a = h
            .call_key(
                "POST",
                "/v1/sessions",
                ALICE,
                json!({"game_id": "chess"}),
                key,
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert_eq!(a.json["session"]["session_id"], derived.as_str());
        assert_eq!(a.json["replayed"], replayed);
    }

    // Operators and services still choose, and learn when an id is taken.
    for (token, id) in [(OPS, "s-ops"), (GATEWAY, "s-gw")] {
        let body = json!({"user_id": "alice", "game_id": "chess", "session_id": id});
        let a = h
            .call("POST", "/v1/sessions", Some(token), Some(body))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert_eq!(a.json["session"]["session_id"], id);
    }
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(OPS),
            Some(json!({"user_id": "alice", "game_id": "chess", "session_id": "s-bob"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "already_exists")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The actors of `events` (each with an `actor`).
fn actors(events: &Value) -> Vec<Value> {
    events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["actor"].clone())
        .collect()
}

#[tokio::test]
async fn a_player_sees_other_actors_kinds_but_not_their_ids() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 2).await;
    // The gateway starts and assigns alice's session; she pauses; an operator resumes and ends it.
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(GATEWAY),
            Some(json!({"user_id": "alice", "game_id": "chess", "assign": {}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let s = a.json["session"]["session_id"].as_str().unwrap().to_owned();
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{s}/pause"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(
        actors(&a.json["events"]),
        [json!({"kind": "user", "id": "alice"})],
        "her own id she sees"
    );
    let a = h
        .call_key(
            "POST",
            &format!("/v1/sessions/{s}/resume"),
            OPS,
            json!({}),
            "ops-resume-1",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    h.call("POST", &format!("/v1/sessions/{s}/end"), Some(OPS), None)
        .await;

    let service = json!({"kind": "service", "id": "gateway"});
    let operator = json!({"kind": "operator", "id": "ops"});
    let alice = json!({"kind": "user", "id": "alice"});
    let full = vec![
        service.clone(),
        service,
        alice.clone(),
        operator.clone(),
        operator,
    ];
    let hidden = vec![
        json!({"kind": "service"}),
        json!({"kind": "service"}),
        alice,
        json!({"kind": "operator"}),
        json!({"kind": "operator"}),
    ];

    // The history.
    let path = format!("/v1/sessions/{s}/history");
    let a = h.call("GET", &path, Some(ALICE), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(actors(&a.json["events"]), hidden);
    assert!(
        !a.text.contains("gateway") && !a.text.contains("\"ops\""),
        "{}",
        a.text
    );
    for token in [OPS, GATEWAY] {
        let a = h.call("GET", &path, Some(token), None).await;
        assert_eq!(actors(&a.json["events"]), full, "{token}");
    }

    // The event feed: staff also get the VM's registration, first.
    for (token, want, n) in [(ALICE, &hidden, 5), (OPS, &full, 6), (GATEWAY, &full, 6)] {
        let req = request("GET", "/v1/events?from=1", Some(token), None, None);
        let response = h.router.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let got = read_sse(response.into_body(), n, Duration::from_secs(5)).await;
        assert_eq!(got.len(), n, "the feed as {token}");
        let got: Vec<Value> = got
            .into_iter()
            .filter(|(_, d)| d["event"].to_string().contains(&s))
            .map(|(_, d)| d["actor"].clone())
            .collect();
        assert_eq!(&got, want, "the feed as {token}");
    }

    // A command response carrying another actor's event: alice retries with the operator's key
    // (keys are command ids, shared by all callers) and gets the operator's event back.
    let a = h
        .call_key(
            "POST",
            &format!("/v1/sessions/{s}/resume"),
            ALICE,
            json!({}),
            "ops-resume-1",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["replayed"], true);
    assert_eq!(actors(&a.json["events"]), [json!({"kind": "operator"})]);
    let a = h
        .call_key(
            "POST",
            &format!("/v1/sessions/{s}/resume"),
            GATEWAY,
            json!({}),
            "ops-resume-1",
        )
        .await;
    assert_eq!(
        actors(&a.json["events"]),
        [json!({"kind": "operator", "id": "ops"})]
    );
}
