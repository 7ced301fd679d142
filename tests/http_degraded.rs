//! The bridge when parts of the system are missing: projections that lag (202 with the event but
//! no state), no writer (503, retry with the same key), NATS gone (readiness 503, commands 503).
//! Readiness details (NATS, lag) are asked for with an operator's token; anyone gets the status.

mod http_support;

use std::time::Duration;

use axum::http::StatusCode;
use http_support::{args, Harness, Roles, ALICE, OPS};
use serde_json::json;

#[tokio::test]
async fn lagging_projections_answer_202_with_the_event() {
    let mut a = args();
    a.read_your_writes_timeout = Duration::from_millis(100);
    let h = Harness::start_with(
        a,
        Roles {
            writer: true,
            projector: false,
        },
    )
    .await;
    let a = h
        .call(
            "POST",
            "/v1/vms",
            Some(OPS),
            Some(json!({"vm_id": "vm-1", "capacity": 2})),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text);
    assert_eq!(a.json["seq"], 1);
    assert_eq!(a.json["events"][0]["type"], "VmRegistered");
    assert!(a.json.get("vm").is_none());
    assert!(a.json["pending"].as_str().unwrap().contains("/v1/vms/vm-1"));
    // The command is applied all the same: readiness shows an operator the projections behind
    // the stream, and anyone that the bridge is ready.
    let r = h.call("GET", "/readyz", Some(OPS), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["projection_lag"], 1);
    let r = h.call("GET", "/readyz", None, None).await;
    assert_eq!((r.status, r.json), (StatusCode::OK, json!({"ready": true})));
}

/// A rebuild of the projections shows in the details of readiness, and readiness itself stays:
/// commands are still taken (answered 202), only reads wait for the rebuild.
#[tokio::test]
async fn readiness_tells_an_operator_of_a_rebuild() {
    let h = Harness::start_without_projector().await;
    let r = h.call("GET", "/readyz", Some(OPS), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["projections_rebuilding"], false, "{}", r.text);

    h.store.replace_damaged("a test").unwrap();
    let r = h.call("GET", "/readyz", Some(OPS), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["projections_rebuilding"], true, "{}", r.text);
    let r = h.call("GET", "/readyz", None, None).await;
    assert_eq!((r.status, r.json), (StatusCode::OK, json!({"ready": true})));
    let read = h.call("GET", "/v1/vms", Some(OPS), None).await;
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(read.code(), "projections_rebuilding");

    // The rebuild reached the log's end (nothing was appended): reads are served again.
    h.store.rebuilding_to(0);
    let r = h.call("GET", "/readyz", Some(OPS), None).await;
    assert_eq!(r.json["projections_rebuilding"], false, "{}", r.text);
    let read = h.call("GET", "/v1/vms", Some(OPS), None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
}

#[tokio::test]
async fn no_writer_is_503_with_retry_after() {
    let h = Harness::start_with(
        args(),
        Roles {
            writer: false,
            projector: true,
        },
    )
    .await;
    let a = h
        .call_key(
            "POST",
            "/v1/vms",
            OPS,
            json!({"vm_id": "vm-1", "capacity": 2}),
            "vm-1-once",
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert_eq!(a.header("retry-after"), "1");
    assert_eq!(a.json["retryable"], true);
    assert!(a.json["detail"]
        .as_str()
        .unwrap()
        .contains("may or may not"));
    // The key is free again once the request finished.
    let b = h
        .call_key(
            "POST",
            "/v1/vms",
            OPS,
            json!({"vm_id": "vm-1", "capacity": 2}),
            "vm-1-once",
        )
        .await;
    assert_eq!(b.code(), "unavailable");
}

#[tokio::test]
async fn nats_gone_makes_the_bridge_unready() {
    let mut a = args();
    a.command_timeout = Duration::from_millis(300);
    let mut h = Harness::start_with(
        a,
        Roles {
            writer: true,
            projector: true,
        },
    )
    .await;
    let r = h.call("GET", "/readyz", Some(OPS), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["nats"], "connected");

    h.server.stop().await.expect("the server stops");
    let mut unready = None;
    for _ in 0..100 {
        let r = h.call("GET", "/readyz", Some(OPS), None).await;
        // A failed stream read can make it unready before the client notices the disconnection.
        if r.status == StatusCode::SERVICE_UNAVAILABLE && r.json["nats"] != "connected" {
            unready = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = unready.expect("readiness notices NATS is gone");
    assert_eq!(r.json["ready"], false);
    assert_ne!(r.json["nats"], "connected");
    assert!(r.json["stream_last_seq"].is_null());
    assert_eq!(r.header("retry-after"), "1");
    // Anyone else learns that it is not ready, and no more.
    let r = h.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.json),
        (StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false}))
    );
    assert_eq!(
        h.call("GET", "/healthz", None, None).await.status,
        StatusCode::OK,
        "still alive"
    );

    let a = h
        .call(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(json!({"game_id": "chess"})),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{}",
        a.text
    );
    assert!(!a.header("retry-after").is_empty());
}
