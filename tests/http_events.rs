//! The SSE event feed: `id:` = stream sequence, resuming with `Last-Event-ID` or `?from=`, the
//! `type` and `session_id` filters, live events, and a player seeing only their own sessions.

mod http_support;

use std::time::Duration;

use axum::http::StatusCode;
use http_support::{read_sse, request, Harness, ALICE, BOB, GATEWAY, OPS};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(5);

/// Opens the feed at `path` as `token`, with `Last-Event-ID` when given; reads `n` events.
async fn feed(
    h: &Harness,
    path: &str,
    token: &str,
    last_event_id: Option<u64>,
    n: usize,
) -> Vec<(u64, serde_json::Value)> {
    let mut req = request("GET", path, Some(token), None, None);
    if let Some(id) = last_event_id {
        req.headers_mut()
            .insert("last-event-id", id.to_string().parse().unwrap());
    }
    let response = h.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    read_sse(response.into_body(), n, WAIT).await
}

/// vm-1; alice's session (start, assign, pause); bob's session (start, assign, end). Sequences 1 to 7.
async fn story(h: &Harness) -> (String, String) {
    h.register_vm("vm-1", 4).await;
    let alice = h.start_session(ALICE, None, true).await;
    h.call(
        "POST",
        &format!("/v1/sessions/{alice}/pause"),
        Some(ALICE),
        None,
    )
    .await;
    let bob = h.start_session(BOB, None, true).await;
    let a = h
        .call("POST", &format!("/v1/sessions/{bob}/end"), Some(BOB), None)
        .await;
    assert_eq!(a.json["seq"], 7);
    (alice, bob)
}

#[tokio::test]
async fn resumes_with_last_event_id_or_from() {
    let h = Harness::start().await;
    story(&h).await;
    let all = feed(&h, "/v1/events?from=1", OPS, None, 7).await;
    let ids: Vec<u64> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
    for (id, data) in &all {
        assert_eq!(data["seq"], *id, "data carries the sequence");
        assert!(
            data["type"].is_string() && data["event_id"].is_string() && data["actor"].is_object()
        );
    }
    assert_eq!(all[0].1["type"], "VmRegistered");
    assert_eq!(all[0].1["event"]["VmRegistered"]["vm_id"], "vm-1");

    // A client that saw 3 reconnects with Last-Event-ID: 3 and gets 4 on.
    let resumed = feed(&h, "/v1/events", OPS, Some(3), 4).await;
    assert_eq!(
        resumed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    // Last-Event-ID wins over from.
    let resumed = feed(&h, "/v1/events?from=1", GATEWAY, Some(6), 1).await;
    assert_eq!(resumed[0].0, 7);
    let from = feed(&h, "/v1/events?from=5", OPS, None, 1).await;
    assert_eq!(from[0].0, 5);
}

#[tokio::test]
async fn without_a_start_only_new_events_come() {
    let h = Harness::start().await;
    h.register_vm("vm-1", 4).await;
    let req = request("GET", "/v1/events", Some(OPS), None, None);
    let response = h.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reading = tokio::spawn(read_sse(response.into_body(), 1, WAIT));
    // The feed is open once the handler answered; what is appended now arrives live.
    h.register_vm("vm-2", 4).await;
    let got = reading.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 2);
    assert_eq!(got[0].1["event"]["VmRegistered"]["vm_id"], "vm-2");
}

#[tokio::test]
async fn filters_by_type_and_session() {
    let h = Harness::start().await;
    let (alice, bob) = story(&h).await;
    let got = feed(
        &h,
        "/v1/events?from=1&type=SessionStarted,SessionEnded",
        OPS,
        None,
        3,
    )
    .await;
    let types: Vec<_> = got
        .iter()
        .map(|(_, d)| d["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["SessionStarted", "SessionStarted", "SessionEnded"]);
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 5, 7]);

    let got = feed(
        &h,
        &format!("/v1/events?from=1&session_id={bob}"),
        GATEWAY,
        None,
        3,
    )
    .await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 6, 7]);
    let got = feed(
        &h,
        &format!("/v1/events?from=1&session_id={alice}&type=SessionPaused"),
        ALICE,
        None,
        1,
    )
    .await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4]);
}

#[tokio::test]
async fn a_player_sees_only_their_own_sessions_events() {
    let h = Harness::start().await;
    let (alice, _) = story(&h).await;
    // Alice's next event comes after bob's: the feed must skip bob's and the VM's.
    let a = h
        .call(
            "POST",
            &format!("/v1/sessions/{alice}/resume"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(a.json["seq"], 8);
    let got = feed(&h, "/v1/events?from=1", ALICE, None, 4).await;
    assert_eq!(
        got.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [2, 3, 4, 8]
    );
    assert!(got
        .iter()
        .all(|(_, d)| d["event"].to_string().contains(&alice)));

    // Resumed after her start: her session is recognised from the projections.
    let got = feed(&h, "/v1/events", ALICE, Some(3), 2).await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4, 8]);

    // Bob's feed has none of alice's events.
    let got = feed(&h, "/v1/events?from=1", BOB, None, 3).await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 6, 7]);
    // ...and asking for her session by id is a 404.
    let a = h
        .call(
            "GET",
            &format!("/v1/events?session_id={alice}"),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::NOT_FOUND, "session_not_found")
    );
}
