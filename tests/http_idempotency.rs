//! `Idempotency-Key`: a retry returns the first response, another body with the same key is 422, a
//! key still in flight in this bridge is 409, and 1,000 concurrent requests with one key append one
//! start and one assignment.

mod http_support;

use std::time::Duration;

use axum::http::StatusCode;
use futures::StreamExt;
use http_support::{args, request, Harness, Roles, ALICE, BOB};
use orchestrator::writer::Reply;
use serde_json::json;

#[tokio::test]
async fn a_retry_returns_the_first_response() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 2).await;
    let body = json!({"game_id": "chess"});
    let first = h
        .call_key("POST", "/v1/sessions", ALICE, body.clone(), "start-1")
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), "");
    let seq = h.last_seq().await;

    let again = h
        .call_key("POST", "/v1/sessions", ALICE, body.clone(), "start-1")
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.json["replayed"], true);
    assert_eq!(again.json["seq"], first.json["seq"]);
    assert_eq!(again.json["events"], first.json["events"]);
    assert_eq!(again.json["session"], first.json["session"]);
    assert_eq!(h.last_seq().await, seq, "a retry appends nothing");

    // The session id derives from the key: the same on every retry.
    let id = first.json["session"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/sessions/{id}/assign");
    let a = h
        .call_key("POST", &path, ALICE, json!({}), "assign-1")
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let pause = format!("/v1/sessions/{id}/pause");
    let p1 = h
        .call_key("POST", &pause, ALICE, json!({}), "pause-1")
        .await;
    assert_eq!(p1.status, StatusCode::OK, "{}", p1.text);
    let resumed = h
        .call(
            "POST",
            &format!("/v1/sessions/{id}/resume"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    // A late retry of the pause gets the pause's event, not a second pause nor a 409.
    let p2 = h
        .call_key("POST", &pause, ALICE, json!({}), "pause-1")
        .await;
    assert_eq!(p2.status, StatusCode::OK, "{}", p2.text);
    assert_eq!(p2.json["events"], p1.json["events"]);
    assert_eq!(p2.json["replayed"], true);
    assert_eq!(
        p2.json["session"]["status"], "active",
        "the state is read now"
    );
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let h = Harness::start().await;
    let a = h
        .call_key(
            "POST",
            "/v1/sessions",
            ALICE,
            json!({"game_id": "chess"}),
            "k-1",
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let seq = h.last_seq().await;
    let b = h
        .call_key(
            "POST",
            "/v1/sessions",
            ALICE,
            json!({"game_id": "go"}),
            "k-1",
        )
        .await;
    assert_eq!(
        (b.status, b.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "command_id_reused"),
        "{}",
        b.text
    );
    assert_eq!(b.json["command_id"], "k-1");
    // Another command with the key is another body too.
    let id = a.json["session"]["session_id"].as_str().unwrap();
    let c = h
        .call_key(
            "POST",
            &format!("/v1/sessions/{id}/end"),
            ALICE,
            json!({}),
            "k-1",
        )
        .await;
    assert_eq!(
        (c.status, c.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "command_id_reused")
    );
    assert_eq!(h.last_seq().await, seq);
}

#[tokio::test]
async fn a_key_in_flight_is_409() {
    // A stand-in writer that holds the first command until told to answer.
    let h = Harness::start_with(
        args(),
        Roles {
            writer: false,
            projector: false,
        },
    )
    .await;
    let mut commands = h.client.subscribe("orch.default.cmd.>").await.unwrap();
    h.client.flush().await.unwrap();
    let body = json!({"game_id": "chess"});
    let router = h.router.clone();
    let first = tokio::spawn({
        let req = request(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(body.clone()),
            Some("slow-1"),
        );
        async move { tower::ServiceExt::oneshot(router, req).await.unwrap() }
    });
    let held = tokio::time::timeout(Duration::from_secs(5), commands.next())
        .await
        .expect("the command reaches the writer")
        .unwrap();

    let second = h
        .call_key("POST", "/v1/sessions", ALICE, body.clone(), "slow-1")
        .await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::CONFLICT, "idempotency_key_in_use")
    );
    // Keys are scoped per principal: bob's request with the same key is not held back here.
    let (bob, _) = tokio::join!(
        h.call_key("POST", "/v1/sessions", BOB, body.clone(), "slow-1"),
        async {
            let msg = commands.next().await.unwrap();
            let reply = Reply::error("unavailable", "stand-in").encode(false);
            h.client
                .publish(msg.reply.unwrap(), reply.into())
                .await
                .unwrap();
        }
    );
    assert_eq!(bob.status, StatusCode::SERVICE_UNAVAILABLE);

    // The first answers: unavailable. It is no longer in flight; a retry goes through.
    let reply = Reply::error("unavailable", "stand-in").encode(false);
    h.client
        .publish(held.reply.unwrap(), reply.into())
        .await
        .unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(first.headers().contains_key("retry-after"));
    let (retry, _) = tokio::join!(
        h.call_key("POST", "/v1/sessions", ALICE, body, "slow-1"),
        async {
            let msg = commands.next().await.unwrap();
            let reply = Reply::error("unavailable", "stand-in").encode(false);
            h.client
                .publish(msg.reply.unwrap(), reply.into())
                .await
                .unwrap();
        }
    );
    assert_eq!(retry.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.state.store().checkpoint() == 0);
}

#[tokio::test]
async fn a_thousand_concurrent_requests_with_one_key_append_once() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 4).await;
    let before = h.last_seq().await;
    // Four bridges side by side, so that the writer sees concurrent retries too (one bridge
    // answers 409 to the requests it already has in flight); in waves, so that later requests
    // arrive after the first finished and are replays.
    let mut bridges = vec![h.router.clone()];
    for _ in 0..3 {
        bridges.push(h.another_bridge().await);
    }
    let body = json!({"game_id": "chess", "assign": {"policy": "spread"}});
    let mut tasks = Vec::new();
    for i in 0..1000 {
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let req = request(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(body.clone()),
            Some("storm-1"),
        );
        let router = bridges[i % bridges.len()].clone();
        tasks.push(tokio::spawn(async move {
            let r = tower::ServiceExt::oneshot(router, req).await.unwrap();
            let status = r.status();
            let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }));
    }
    let (mut created, mut replayed, mut in_flight) = (0, 0, 0);
    let mut sessions = std::collections::BTreeSet::new();
    let mut seqs = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, json) = t.await.unwrap();
        match status {
            StatusCode::CREATED => {
                created += 1;
                if json["replayed"] == true {
                    replayed += 1;
                }
                sessions.insert(json["session"]["session_id"].as_str().unwrap().to_owned());
                seqs.insert(json["seq"].as_u64().unwrap());
                assert_eq!(json["session"]["status"], "active");
            }
            StatusCode::CONFLICT => {
                assert_eq!(json["code"], "idempotency_key_in_use");
                in_flight += 1;
            }
            other => panic!("unexpected {other}: {json}"),
        }
    }
    println!("{created} created ({replayed} of them replays), {in_flight} refused while in flight");
    assert!(created >= 1);
    assert_eq!(created + in_flight, 1000);
    assert_eq!(sessions.len(), 1, "one session");
    assert_eq!(seqs.len(), 1, "one answer");
    assert_eq!(
        h.last_seq().await,
        before + 2,
        "one start and one assignment"
    );
    let id = sessions.into_iter().next().unwrap();
    let history = h
        .call(
            "GET",
            &format!("/v1/sessions/{id}/history"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(history.json["events"].as_array().unwrap().len(), 2);
    assert_eq!(history.json["events"][1]["command_id"], "storm-1:assign");
    assert_eq!(h.state.store().capacity().unwrap().used, 1);
}

#[tokio::test]
async fn a_start_whose_assignment_failed_completes_on_retry() {
    let h = Harness::start().await;
    let body = json!({"game_id": "chess", "assign": {}});
    let a = h
        .call_key("POST", "/v1/sessions", ALICE, body.clone(), "start-assign")
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "no_capacity"),
        "{}",
        a.text
    );
    let id = a.json["session_id"].as_str().unwrap().to_owned();
    h.register_vm("vm-1", 1).await;
    let b = h
        .call_key("POST", "/v1/sessions", ALICE, body, "start-assign")
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text);
    assert_eq!(b.json["session"]["session_id"], id.as_str());
    assert_eq!(b.json["session"]["status"], "active");
    assert_eq!(b.json["replayed"], false, "the assignment is new");
    assert_eq!(
        b.json["events"][0]["seq"], a.json["seq"],
        "the start is the first one"
    );
}

/// Keys are scoped by their sender: two players using the README's own key `start-42` each get a
/// session of their own, neither learns the other used it, and the derived `<key>:assign` of a
/// create-and-assign cannot be pre-claimed by another caller.
#[tokio::test]
async fn keys_are_scoped_by_their_sender() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 3).await;
    let body = json!({"game_id": "chess"});
    let bob = h
        .call_key("POST", "/v1/sessions", BOB, body.clone(), "start-42")
        .await;
    assert_eq!(bob.status, StatusCode::CREATED, "{}", bob.text);
    // Bob also uses `start-43:assign` for a command of his own: the id Alice's create-and-assign
    // with key `start-43` will derive.
    let bob_id = bob.json["session"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let claimed = h
        .call_key(
            "POST",
            &format!("/v1/sessions/{bob_id}/assign"),
            BOB,
            json!({}),
            "start-43:assign",
        )
        .await;
    assert_eq!(claimed.status, StatusCode::OK, "{}", claimed.text);

    let alice = h
        .call_key("POST", "/v1/sessions", ALICE, body.clone(), "start-42")
        .await;
    assert_eq!(alice.status, StatusCode::CREATED, "{}", alice.text);
    assert_eq!(alice.header("idempotent-replayed"), "", "not Bob's result");
    assert_ne!(
        alice.json["session"]["session_id"],
        bob.json["session"]["session_id"]
    );
    assert_eq!(alice.json["session"]["user_id"], "alice");

    let with_assign = json!({"game_id": "chess", "assign": {}});
    let a2 = h
        .call_key("POST", "/v1/sessions", ALICE, with_assign, "start-43")
        .await;
    assert_eq!(a2.status, StatusCode::CREATED, "{}", a2.text);
    assert_eq!(a2.json["session"]["status"], "active", "{}", a2.text);

    // Each sender's retry still gets its own first result.
    let again = h
        .call_key("POST", "/v1/sessions", BOB, body, "start-42")
        .await;
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.json["seq"], bob.json["seq"]);
}
