//! Damage met by reads under a running bridge, against a real nats-server: 503
//! `projections_rebuilding`, never wrong data, then the right data again while the writer goes on.
//!
//! Deterministic: fixed offsets and a seeded generator; "eventually" is polled with a deadline.

mod faults_support;
mod http_support;
mod projections_damage_support;

// One copy of the shared helpers: `faults_support` finds them at `crate::common`.
use http_support::common;

use projections_damage_support::*;

/// A value of the store that reads back wrong (garbage, a view under another session's key, a
/// counter of the wrong size) under a running bridge: the read answers 503 `projections_rebuilding`
/// with `Retry-After`, never the wrong data; the projector moves the store aside and rebuilds it;
/// reads answer the right data again; commands go on meanwhile; the rebuilds are counted.
#[tokio::test(flavor = "multi_thread")]
async fn damage_met_by_reads_answers_503_then_the_store_is_rebuilt() {
    use http_support::{Harness, OPS};
    faults_support::init_tracing();
    let h = Harness::start().await;
    for v in 0..3 {
        h.register_vm(&format!("vm-{v}"), 10).await;
    }
    let mut ids = Vec::new();
    for u in 0..12 {
        ids.push(
            h.start_session(OPS, Some(&format!("user-{u}")), u % 3 != 0)
                .await,
        );
    }
    let before: Vec<Value> = {
        let mut all = Vec::new();
        for id in &ids {
            let a = h
                .call("GET", &format!("/v1/sessions/{id}"), Some(OPS), None)
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            all.push(a.json);
        }
        all
    };
    let list = h
        .call("GET", "/v1/sessions?limit=500", Some(OPS), None)
        .await;
    let capacity = h.call("GET", "/v1/capacity", Some(OPS), None).await;
    let tree = h.store.raw_tree();
    let key = |id: &str| format!("s:{id}").into_bytes();

    type Wreck = Box<dyn Fn(&sled::Tree)>;
    let (a, b) = (ids[1].clone(), ids[2].clone());
    let (a2, a3) = (a.clone(), a.clone());
    let cases: Vec<(&str, String, Wreck)> = vec![
        (
            "garbage in a session view",
            format!("/v1/sessions/{a}"),
            Box::new(move |t: &sled::Tree| {
                t.insert(key(&a2), &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..])
                    .unwrap();
            }),
        ),
        (
            "a view under another session's key",
            format!("/v1/sessions/{b}"),
            Box::new(move |t: &sled::Tree| {
                let other = t.get(key(&a3)).unwrap().unwrap();
                t.insert(key(&b), other).unwrap();
            }),
        ),
        (
            "a counter of the wrong size",
            "/v1/capacity".to_owned(),
            Box::new(|t: &sled::Tree| {
                t.insert(b"c:active", &b"\x01\x02\x03"[..]).unwrap();
            }),
        ),
    ];
    for (n, (case, path, wreck)) in cases.into_iter().enumerate() {
        let tree = if n == 0 {
            tree.clone()
        } else {
            h.store.raw_tree()
        };
        wreck(&tree);
        let a = h.call("GET", &path, Some(OPS), None).await;
        assert_eq!(a.status, 503, "{case}: {}", a.text);
        assert_eq!(a.code(), "projections_rebuilding", "{case}");
        assert_eq!(a.header("retry-after"), "1", "{case}");
        // A command meanwhile: applied by the writer, whatever the projections are doing.
        let started = h
            .call(
                "POST",
                "/v1/sessions",
                Some(OPS),
                Some(json!({"game_id": "chess", "user_id": format!("late-{n}")})),
            )
            .await;
        assert!(
            [201, 202].contains(&started.status.as_u16()),
            "{case}: {}",
            started.text
        );
        // Every answer is an error or the right data, until the right data comes back.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = h.call("GET", &path, Some(OPS), None).await;
            if a.status == 200 {
                break;
            }
            assert_eq!(a.status, 503, "{case}: {}", a.text);
            assert_eq!(a.code(), "projections_rebuilding", "{case}");
            assert!(Instant::now() < deadline, "{case}: never rebuilt");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (id, was) in ids.iter().zip(&before) {
            let a = h
                .call("GET", &format!("/v1/sessions/{id}"), Some(OPS), None)
                .await;
            assert_eq!(a.status, 200, "{case}: {}", a.text);
            assert_eq!(&a.json, was, "{case}: the session reads as before");
        }
        let metrics = h.call("GET", "/metrics", Some(OPS), None).await;
        let line = format!(
            "orch_projection_rebuilds_total{{reason=\"corrupt\"}} {}",
            n + 1
        );
        assert!(
            metrics.text.contains(&line),
            "{case}: no {line} in\n{}",
            metrics.text
        );
    }
    let now = h.call("GET", "/v1/capacity", Some(OPS), None).await;
    assert_eq!(now.json["vms_available"], capacity.json["vms_available"]);
    let listed = h
        .call("GET", "/v1/sessions?limit=500", Some(OPS), None)
        .await;
    assert_eq!(
        listed.json["sessions"].as_array().unwrap().len(),
        list.json["sessions"].as_array().unwrap().len() + 3
    );
    assert!(
        h.server.dir().join("projections.damaged").is_dir(),
        "the damaged store is kept aside"
    );
}
