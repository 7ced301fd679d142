//! The routes the dashboard's time slider and charts read, against a real cell: `GET /v1/state?at=`
//! (the cell as of a sequence or a time, the same replay as `orchestrator state --at`) and
//! `GET /v1/stats/timeline` (sessions per status and utilisation over a window), operators only;
//! and the dashboard's page and assets.

mod http_support;

use axum::http::StatusCode;
use http_support::{Harness, ALICE, GATEWAY, OPS};
use serde_json::json;

#[tokio::test]
async fn the_state_as_of_a_sequence_or_a_time() {
    let h = Harness::start().await;
    h.register_vm("vm-a", 2).await;
    h.start_session(ALICE, None, true).await;
    let placed = h.last_seq().await;
    let a = h.call("POST", "/v1/vms/vm-a/drain", Some(OPS), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);

    let now = h.call("GET", "/v1/state", Some(OPS), None).await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.text);
    assert_eq!(now.json["vms"][0]["status"], "draining");
    assert_eq!(now.json["as_of_seq"], now.json["log_last_seq"]);

    let then = h
        .call("GET", &format!("/v1/state?at={placed}"), Some(OPS), None)
        .await;
    assert_eq!(then.json["as_of_seq"], placed);
    assert_eq!(
        (
            &then.json["vms"][0]["status"],
            &then.json["vms"][0]["used"],
            &then.json["sessions_by_status"]["active"]
        ),
        (&json!("available"), &json!(1), &json!(1))
    );
    assert_eq!(
        (&then.json["capacity"], &then.json["used"]),
        (&json!(2), &json!(1))
    );

    // A time: the state after the last event at or before it.
    let at = then.json["as_of_time"].as_str().unwrap().to_owned();
    let by_time = h
        .call("GET", &format!("/v1/state?at={at}"), Some(OPS), None)
        .await;
    assert!(by_time.json["as_of_seq"].as_u64().unwrap() >= placed);
    let before = h.call("GET", "/v1/state?at=0", Some(OPS), None).await;
    assert_eq!(
        (
            before.json["as_of_seq"].as_u64(),
            before.json["vms"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );

    let past = h.call("GET", "/v1/state?at=999", Some(OPS), None).await;
    assert_eq!(
        (past.status, past.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_argument"),
        "{}",
        past.text
    );
    let junk = h
        .call("GET", "/v1/state?at=yesterday", Some(OPS), None)
        .await;
    assert_eq!(
        junk.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        junk.text
    );
    for token in [ALICE, GATEWAY] {
        let a = h.call("GET", "/v1/state", Some(token), None).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        h.call("GET", "/v1/state", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_timeline_samples_the_window() {
    let h = Harness::start().await;
    h.register_vm("vm-a", 4).await;
    h.start_session(ALICE, None, true).await;
    h.start_session(ALICE, None, true).await;
    let last = h.last_seq().await;
    let a = h
        .call(
            "GET",
            &format!("/v1/stats/timeline?from=1&to={last}&step=1ms"),
            Some(OPS),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let points = a.json["points"].as_array().unwrap();
    assert!(!points.is_empty());
    assert_eq!(points[0]["capacity"], 0, "before the first event: nothing");
    assert_eq!(points[0]["at_ms"], a.json["from_ms"]);
    assert_eq!(points.last().unwrap()["at_ms"], a.json["to_ms"]);
    // The window's end is exclusive of its own event: one session placed, or two.
    let active = points.last().unwrap()["sessions_by_status"]["active"]
        .as_u64()
        .unwrap();
    assert!((1..=2).contains(&active), "{}", a.text);

    let now = chrono_now();
    let a = h
        .call(
            "GET",
            &format!("/v1/stats/timeline?from=1&to={now}&step=60000"),
            Some(OPS),
            None,
        )
        .await;
    let last_point = a.json["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            &last_point["used"],
            &last_point["capacity"],
            &last_point["utilisation"]
        ),
        (&json!(2), &json!(4), &json!(0.5))
    );
    let bad = h
        .call(
            "GET",
            &format!("/v1/stats/timeline?from=1&to={last}&step=0"),
            Some(OPS),
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    let a = h
        .call(
            "GET",
            "/v1/stats/timeline?from=1&to=2&step=1s",
            Some(GATEWAY),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

fn chrono_now() -> String {
    orchestrator_events::rfc3339(orchestrator::clock::now_ms() + 1000)
}

#[tokio::test]
async fn the_dashboard_page_and_its_assets_are_served() {
    let h = Harness::start().await;
    let page = h.call("GET", "/dashboard", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page
        .header("content-security-policy")
        .contains("default-src 'self'"));
    assert!(page.text.contains("/dashboard/app.js"));
    for asset in [
        "app.js",
        "api.js",
        "pool.js",
        "feed.js",
        "history.js",
        "travel.js",
        "charts.js",
        "dashboard.css",
    ] {
        let a = h
            .call("GET", &format!("/dashboard/{asset}"), None, None)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{asset}");
        assert!(!a.text.is_empty());
    }
    let js = h.call("GET", "/dashboard/app.js", None, None).await;
    assert!(js.header("content-type").starts_with("text/javascript"));
    let missing = h.call("GET", "/dashboard/secret.txt", None, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
