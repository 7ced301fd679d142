//! What a player may learn through the bridge, and no more: no session id of another player (a
//! player cannot choose ids; operators and services may).

mod http_support;

use axum::http::StatusCode;
use http_support::{Harness, ALICE, GATEWAY, OPS};
use serde_json::json;
use sha2::{Digest, Sha256};

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
