//! The VM routes and capacity through the bridge against a real cell: register, list, read,
//! drain (no new placements), retire (only when empty), and what capacity and metrics show.

mod http_support;

use axum::http::StatusCode;
use http_support::{Harness, ALICE, GATEWAY, OPS};
use serde_json::json;

#[tokio::test]
async fn a_vm_lives_through_every_route() {
    let h = Harness::start().await;
    let a = h
        .call(
            "POST",
            "/v1/vms",
            Some(OPS),
            Some(json!({"vm_id": "vm-b", "capacity": 2, "labels": {"gpu": "a10"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.header("location"), "/v1/vms/vm-b");
    assert_eq!(a.json["vm"]["status"], "available");
    assert_eq!(
        a.json["events"][0]["actor"],
        json!({"kind": "operator", "id": "ops"})
    );
    h.register_vm("vm-a", 1).await;

    let a = h.call("GET", "/v1/vms", Some(GATEWAY), None).await;
    assert_eq!(a.status, StatusCode::OK);
    let ids: Vec<_> = a.json["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vm_id"].clone())
        .collect();
    assert_eq!(ids, [json!("vm-a"), json!("vm-b")], "sorted by id");
    assert_eq!(a.json["as_of_seq"], 2);
    let a = h.call("GET", "/v1/vms/vm-b", Some(OPS), None).await;
    assert_eq!(
        (
            a.json["capacity"].as_u64(),
            a.json["labels"]["gpu"].as_str()
        ),
        (Some(2), Some("a10"))
    );

    // A session on vm-b, then drain it: it keeps its session but takes no new one.
    let s = h
        .call(
            "POST",
            "/v1/sessions",
            Some(ALICE),
            Some(json!({"game_id": "go", "assign": {"vm_id": "vm-b"}})),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{}", s.text);
    let id = s.json["session"]["session_id"].as_str().unwrap().to_owned();
    let a = h.call("POST", "/v1/vms/vm-b/drain", Some(OPS), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        (
            a.json["vm"]["status"].as_str(),
            a.json["vm"]["used"].as_u64()
        ),
        (Some("draining"), Some(1))
    );
    let a = h.call("POST", "/v1/vms/vm-b/drain", Some(OPS), None).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "invalid_transition")
    );
    let other = h.start_session(ALICE, None, false).await;
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{other}/assign"),
            Some(ALICE),
            Some(json!({"vm_id": "vm-b"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "vm_draining"));
    // The player is not told which VM; the gateway is.
    assert!(a.json.get("vm_id").is_none(), "{}", a.text);
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{other}/assign"),
            Some(GATEWAY),
            Some(json!({"vm_id": "vm-b"})),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "vm_draining"));
    assert_eq!(a.json["vm_id"], "vm-b");

    let cap = h.call("GET", "/v1/capacity", Some(GATEWAY), None).await;
    assert_eq!(cap.status, StatusCode::OK);
    assert_eq!(cap.json["vms_available"], 1);
    assert_eq!(cap.json["vms_draining"], 1);
    assert_eq!(cap.json["placeable"], 1, "only vm-a takes placements");
    assert_eq!(cap.json["used"], 1);
    assert_eq!(cap.json["sessions"]["starting"], 1);
    assert_eq!(cap.json["sessions"]["active"], 1);

    // Retiring needs it empty.
    let a = h
        .call("POST", "/v1/vms/vm-b/retire", Some(OPS), Some(json!({})))
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "vm_not_empty"));
    assert_eq!(a.json["sessions"], 1);
    h.call("POST", &format!("/v1/sessions/{id}/end"), Some(ALICE), None)
        .await;
    let a = h.call("POST", "/v1/vms/vm-b/retire", Some(OPS), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["vm"]["status"], "retired");
    let cap = h.call("GET", "/v1/capacity", Some(OPS), None).await;
    assert_eq!(
        (
            cap.json["vms_retired"].as_u64(),
            cap.json["capacity"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // Metrics: the refusals by code, per-VM gauges.
    let m = h.call("GET", "/metrics", Some(OPS), None).await;
    assert_eq!(m.status, StatusCode::OK);
    for line in [
        "orch_http_command_rejections_total{command=\"vm_retire\",code=\"vm_not_empty\"} 1",
        "orch_http_commands_total{command=\"vm_drain\",outcome=\"rejected\"} 1",
        "orch_vm_used_slots{vm_id=\"vm-b\",status=\"retired\"} 0",
        "orch_capacity_free_slots 1",
        "orch_sessions{status=\"starting\"} 1",
    ] {
        assert!(
            m.text.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            m.text
        );
    }
}
