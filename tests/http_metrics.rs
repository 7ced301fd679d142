//! The bridge counts every request it answers by route template, method and status, its own
//! refusals included (authentication, authorization, bad input, unknown routes), times them, and
//! shows the SSE clients connected now.

mod http_support;

use axum::http::StatusCode;
use http_support::{request, Harness, ALICE, OPS};
use tower::ServiceExt;

async fn scrape(h: &Harness) -> String {
    let a = h.call("GET", "/metrics", Some(OPS), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.text
}

#[tokio::test]
async fn every_answer_is_counted_by_route_method_and_status() {
    let h = Harness::start().await;
    let s = h.start_session(ALICE, None, false).await;

    let unauthorized = h.call("GET", "/v1/sessions", None, None).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let bad = h
        .call("GET", "/v1/sessions?limit=abc", Some(ALICE), None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let forbidden = h.call("GET", "/v1/vms", Some(ALICE), None).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let read = h
        .call("GET", &format!("/v1/sessions/{s}"), Some(ALICE), None)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let form = h
        .send(
            axum::http::Request::builder()
                .method("POST")
                .uri("/v1/sessions")
                .header("authorization", format!("Bearer {ALICE}"))
                .header("content-type", "text/plain")
                .body(axum::body::Body::from("game_id=g"))
                .unwrap(),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let unknown = h.call("GET", "/no/such/route/xyz", Some(ALICE), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // An SSE client stays connected while the bridge is scraped.
    let feed = h
        .router
        .clone()
        .oneshot(request("GET", "/v1/events", Some(ALICE), None, None))
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);

    let text = scrape(&h).await;
    for line in [
        "# TYPE orch_http_requests_total counter\n",
        "orch_http_requests_total{route=\"/v1/sessions\",method=\"POST\",status=\"201\"} 1\n",
        "orch_http_requests_total{route=\"/v1/sessions\",method=\"GET\",status=\"401\"} 1\n",
        "orch_http_requests_total{route=\"/v1/sessions\",method=\"GET\",status=\"400\"} 1\n",
        "orch_http_requests_total{route=\"/v1/vms\",method=\"GET\",status=\"403\"} 1\n",
        "orch_http_requests_total{route=\"/v1/sessions\",method=\"POST\",status=\"415\"} 1\n",
        "orch_http_requests_total{route=\"/v1/sessions/{id}\",method=\"GET\",status=\"200\"} 1\n",
        "orch_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1\n",
        "orch_http_requests_total{route=\"/v1/events\",method=\"GET\",status=\"200\"} 1\n",
        "# TYPE orch_http_request_duration_seconds histogram\n",
        "orch_http_request_duration_seconds_count{route=\"/v1/sessions\",method=\"GET\"} 2\n",
        "orch_http_request_duration_seconds_count{route=\"/v1/sessions/{id}\",method=\"GET\"} 1\n",
        "# TYPE orch_http_sse_clients gauge\n",
        "orch_http_sse_clients 1\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    assert!(!text.contains(&s), "a raw path in a label:\n{text}");

    drop(feed);
    let mut gone = false;
    for _ in 0..100 {
        if scrape(&h).await.contains("orch_http_sse_clients 0\n") {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "the SSE client is still counted after it left");
}
