//! The placement queue and VM endpoints through the bridge: a start that finds no room and may
//! wait answers 202 with the session's place in the queue; when room frees, the writer places it
//! and the owner's event feed shows the assignment, by the system, with where to connect; the
//! metrics show the queue.

mod http_support;

use std::time::Duration;

use axum::http::StatusCode;
use http_support::{read_sse, request, Harness, ALICE, BOB, OPS};
use serde_json::json;
use tower::ServiceExt;

#[tokio::test]
async fn a_queued_start_is_placed_when_room_frees_and_its_owner_learns_where_to_connect() {
    let h = Harness::start().await;
    let endpoint = json!({"address": "10.0.0.7", "ports": {"stream": 47998, "control": 47999}});
    let vm = h
        .call(
            "POST",
            "/v1/vms",
            Some(OPS),
            Some(json!({"vm_id": "vm-1", "capacity": 1, "endpoint": endpoint})),
        )
        .await;
    assert_eq!(vm.status, StatusCode::CREATED, "{}", vm.text);

    let alice = h
        .call_key(
            "POST",
            "/v1/sessions",
            ALICE,
            json!({"game_id": "chess", "assign": {}}),
            "a-1",
        )
        .await;
    assert_eq!(alice.status, StatusCode::CREATED, "{}", alice.text);
    assert_eq!(
        alice.json["session"]["endpoint"], endpoint,
        "the owner learns where to connect"
    );
    let alice_id = alice.json["session"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // No room: without wait_ms, 409 no_capacity; with it, 202 and a place in the queue.
    let refused = h
        .call_key(
            "POST",
            "/v1/sessions",
            BOB,
            json!({"game_id": "chess", "assign": {}}),
            "b-0",
        )
        .await;
    assert_eq!(refused.code(), "no_capacity", "{}", refused.text);
    let bob = h
        .call_key(
            "POST",
            "/v1/sessions",
            BOB,
            json!({"game_id": "chess", "assign": {"wait_ms": 60000}}),
            "b-1",
        )
        .await;
    assert_eq!(bob.status, StatusCode::ACCEPTED, "{}", bob.text);
    let session = &bob.json["session"];
    assert_eq!(session["status"], "starting");
    assert_eq!(session["queue_position"], 1);
    assert!(
        session["queued"]["deadline"].as_i64().unwrap()
            > session["queued"]["since"].as_i64().unwrap()
    );
    let bob_id = session["session_id"].as_str().unwrap().to_owned();
    let read = h
        .call("GET", &format!("/v1/sessions/{bob_id}"), Some(BOB), None)
        .await;
    assert_eq!(read.json["queue_position"], 1, "{}", read.text);
    let metrics = h.call("GET", "/metrics", Some(OPS), None).await;
    assert!(
        metrics.text.contains("orch_queue_sessions 1"),
        "{}",
        metrics.text
    );

    // Bob's feed, from now on; Alice's session ends and frees the slot.
    let feed = request("GET", "/v1/events", Some(BOB), None, None);
    let response = h.router.clone().oneshot(feed).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reading = tokio::spawn(read_sse(response.into_body(), 1, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let end = h
        .call(
            "POST",
            &format!("/v1/sessions/{alice_id}/end"),
            Some(ALICE),
            Some(json!({})),
        )
        .await;
    assert_eq!(end.status, StatusCode::OK, "{}", end.text);
    let events = reading.await.unwrap();
    let (_, placed) = &events[0];
    assert_eq!(placed["type"], "SessionAssigned", "{placed}");
    assert_eq!(
        placed["event"]["SessionAssigned"]["session_id"],
        bob_id.as_str()
    );
    assert_eq!(placed["actor"]["kind"], "system");
    assert!(placed["event"]["SessionAssigned"]["placement"]["queued"]["waited_ms"].is_u64());
    assert_eq!(placed["endpoint"], endpoint, "{placed}");

    // The feed reads the log; the session resource is a projection, which may be a moment behind
    // an assignment the caller did not send: wait for it to reach the event, as the bridge does
    // for a caller's own command.
    let placed_seq = events[0].0;
    h.store
        .wait_for(placed_seq, Duration::from_secs(5))
        .await
        .expect("the projections reach the assignment");
    let read = h
        .call("GET", &format!("/v1/sessions/{bob_id}"), Some(BOB), None)
        .await;
    assert_eq!(read.json["status"], "active", "{}", read.text);
    assert_eq!(read.json["endpoint"], endpoint);
    assert!(read.json["queue_position"].is_null());
    let metrics = h.call("GET", "/metrics", Some(OPS), None).await;
    assert!(
        metrics.text.contains("orch_queue_sessions 0"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("orch_sessions_ended_total{reason=\"user\"} 1"),
        "{}",
        metrics.text
    );
}
