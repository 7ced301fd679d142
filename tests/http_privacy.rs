//! What a player may learn through the bridge, and no more: no session id of another player (a
//! player cannot choose ids), no operator's or service's id in the actors of their own sessions'
//! events (history, event feed, command responses), no VM details in a refusal, and only the status
//! of `/readyz`. Operators and services see all of it.

mod http_support;

use std::time::Duration;

use axum::http::StatusCode;
use http_support::{read_sse, request, Answer, Harness, ALICE, BOB, GATEWAY, OPS};
use orchestrator::domain::command::derive_session_id;
use orchestrator_events::Actor;
use serde_json::{json, Value};
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
    // Scoped by the sender, like the writer's idempotency table.
    let derived = derive_session_id(&Actor::user("alice"), &key.parse().unwrap()).to_string();
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

    // Keys are scoped by their sender: alice (or the gateway) resending the operator's key sends a
    // command of her own, decided now (the session has ended), and never gets the operator's event.
    for token in [ALICE, GATEWAY] {
        let a = h
            .call_key(
                "POST",
                &format!("/v1/sessions/{s}/resume"),
                token,
                json!({}),
                "ops-resume-1",
            )
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text);
        assert_eq!(a.code(), "invalid_transition");
        assert!(!a.text.contains("\"ops\""), "{}", a.text);
    }
}

/// The fields every problem has; a player's refusal about a VM has no others.
const PROBLEM_FIELDS: [&str; 5] = ["type", "title", "status", "detail", "code"];

fn fields(a: &Answer) -> Vec<String> {
    a.json
        .as_object()
        .expect("a problem")
        .keys()
        .cloned()
        .collect()
}

/// One refusal about a VM: the path and body of an assignment, and the code it gets.
struct VmRefusal {
    name: &'static str,
    /// `{any}`: a session without requirements; `{us}`: one requiring `region=us`.
    path: &'static str,
    body: fn() -> Value,
    status: StatusCode,
    code: &'static str,
    /// A field staff see and players do not.
    field: &'static str,
    /// The player's `detail`.
    detail: &'static str,
}

#[rustfmt::skip]
fn refusals() -> Vec<VmRefusal> {
    let r = |name, path, body, status, code, field, detail| VmRefusal { name, path, body, status, code, field, detail };
    vec![
        r("full", "/v1/sessions/{any}/assign", || json!({"vm_id": "vm-full"}), StatusCode::CONFLICT, "vm_full", "capacity", "the VM named has no free slot"),
        r("draining", "/v1/sessions/{any}/assign", || json!({"vm_id": "vm-draining"}), StatusCode::CONFLICT, "vm_draining", "vm_id", "the VM named takes no new sessions"),
        r("retired", "/v1/sessions/{any}/assign", || json!({"vm_id": "vm-retired"}), StatusCode::CONFLICT, "vm_retired", "vm_id", "the VM named is retired"),
        r("unknown", "/v1/sessions/{any}/assign", || json!({"vm_id": "vm-nope"}), StatusCode::NOT_FOUND, "vm_not_found", "vm_id", "the VM named does not exist"),
        r("labels", "/v1/sessions/{us}/assign", || json!({"vm_id": "vm-free"}), StatusCode::CONFLICT, "requirements_not_met", "missing", "the VM named lacks labels the session requires"),
        r("no room", "/v1/sessions/{us}/assign", || json!({}), StatusCode::CONFLICT, "no_capacity", "candidates", "no VM can take the session now"),
    ]
}

#[tokio::test]
async fn a_players_refusals_name_no_vm() {
    let h = Harness::start().await;
    h.register_vm("vm-full", 1).await;
    h.start_session(GATEWAY, Some("carol"), true).await;
    for (vm, then) in [("vm-draining", "drain"), ("vm-retired", "retire")] {
        h.register_vm(vm, 2).await;
        let a = h
            .call("POST", &format!("/v1/vms/{vm}/{then}"), Some(OPS), None)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    h.register_vm("vm-free", 2).await; // region=eu
    let any = h.start_session(ALICE, None, false).await;
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(json!({"game_id": "chess", "requirements": {"region": "us"}})),
        )
        .await;
    let us = a.json["session"]["session_id"].as_str().unwrap().to_owned();
    let before = h.last_seq().await;

    let mut failures = Vec::new();
    for c in refusals() {
        let path = c.path.replace("{any}", &any).replace("{us}", &us);
        let player = h.call("POST", &path, Some(ALICE), Some((c.body)())).await;
        if (player.status, player.code()) != (c.status, c.code) {
            failures.push(format!(
                "{}: player got {} {}",
                c.name, player.status, player.text
            ));
            continue;
        }
        if !fields(&player)
            .iter()
            .all(|f| PROBLEM_FIELDS.contains(&f.as_str()))
        {
            failures.push(format!("{}: player sees {}", c.name, player.text));
        }
        if player.json["detail"] != c.detail || player.text.contains("vm-") {
            failures.push(format!("{}: player's detail {}", c.name, player.text));
        }
        for token in [OPS, GATEWAY] {
            let staff = h.call("POST", &path, Some(token), Some((c.body)())).await;
            if (staff.status, staff.code()) != (c.status, c.code)
                || staff.json.get(c.field).is_none()
                || !staff.json["detail"]
                    .as_str()
                    .unwrap()
                    .contains(match c.code {
                        "no_capacity" => "VMs",
                        _ => "VM vm-",
                    })
            {
                failures.push(format!("{} as {token}: {}", c.name, staff.text));
            }
        }
    }
    assert!(failures.is_empty(), "refusals:\n{}", failures.join("\n"));
    assert_eq!(h.last_seq().await, before, "every assignment was refused");

    // A start whose assignment is refused keeps the player's own fields (the session and the
    // start's seq) and drops the VM's.
    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(json!({"game_id": "chess", "requirements": {"region": "us"}, "assign": {}})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "no_capacity"),
        "{}",
        a.text
    );
    let mut own = fields(&a);
    own.retain(|f| !PROBLEM_FIELDS.contains(&f.as_str()));
    own.sort();
    assert_eq!(own, ["seq", "session_id"], "{}", a.text);
    let detail = a.json["detail"].as_str().unwrap();
    assert!(
        detail.ends_with("but not assigned: no VM can take the session now"),
        "{detail}"
    );
    // Bob's refusal is the same: his sessions tell him nothing about VMs either.
    let bobs = h.start_session(BOB, None, false).await;
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{bobs}/assign"),
            Some(BOB),
            Some(json!({"vm_id": "vm-full"})),
        )
        .await;
    assert_eq!(a.json["detail"], "the VM named has no free slot");
    assert!(a.json.get("vm_id").is_none() && a.json.get("capacity").is_none());
}

#[tokio::test]
async fn readiness_tells_anyone_the_status_and_staff_the_details() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 1).await;
    let status_only = json!({"ready": true});
    for (who, auth) in [
        ("anonymous", None),
        ("a player", Some(format!("Bearer {ALICE}"))),
        ("an unknown token", Some("Bearer expired-token".to_owned())),
        ("another scheme", Some("Basic YWxpY2U6eA==".to_owned())),
    ] {
        let mut req = request("GET", "/readyz", None, None, None);
        if let Some(v) = auth {
            req.headers_mut()
                .insert("authorization", v.parse().unwrap());
        }
        let a = h.send(req).await;
        assert_eq!((a.status, &a.json), (StatusCode::OK, &status_only), "{who}");
        assert_eq!(a.header("cache-control"), "no-store", "{who}");
        assert_eq!(a.header("vary"), "authorization", "{who}");
    }
    for token in [OPS, GATEWAY] {
        let a = h.call("GET", "/readyz", Some(token), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.json["ready"], true);
        assert_eq!(a.json["nats"], "connected");
        assert_eq!(a.json["stream_last_seq"], 1, "{token}");
        assert!(a.json["projection_checkpoint"].is_u64());
        assert!(a.json["projection_lag"].is_u64());
    }
}
