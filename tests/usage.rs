//! `usage` against a hand-built log whose totals were computed by hand, to the millisecond: the
//! pure fold, `orchestrator usage` against a real nats-server (table, CSV, JSON, sequences as
//! bounds, progress), and `GET /v1/usage` (operators only).

mod http_support;

use std::process::Command;

use axum::http::StatusCode;
use http_support::{Harness, Roles, ALICE, GATEWAY, OPS};
use orchestrator::analytics::{GroupBy, UsageFold, UsageReport, UsageRow, Window};
use orchestrator::domain::timeline::TimeInStatus;
use orchestrator::log::Appender;
use orchestrator_events::{
    Actor, CellId, EndReason, Envelope, Event, Placement, PlacementPolicy, PlacementReason,
    SessionId, Timestamp,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

/// 2026-01-01T00:00:00Z: the fixture's times are offsets from it.
const T0: Timestamp = 1_767_225_600_000;
/// The window: [T0 + 10 s, T0 + 20 s).
const FROM: &str = "2026-01-01T00:00:10Z";
const TO: &str = "2026-01-01T00:00:20Z";

fn sid(s: &str) -> SessionId {
    s.parse().unwrap()
}

fn started(s: &str, user: &str, game: &str) -> Event {
    Event::SessionStarted {
        session_id: sid(s),
        user_id: user.parse().unwrap(),
        game_id: game.parse().unwrap(),
        requirements: Default::default(),
    }
}

fn assigned(s: &str, vm: &str) -> Event {
    Event::SessionAssigned {
        session_id: sid(s),
        vm_id: vm.parse().unwrap(),
        placement: Placement {
            policy: PlacementPolicy::Packed,
            candidates: 2,
            eligible: 2,
            load_before: 0,
            capacity: 4,
            reason: PlacementReason::Requested,
            queued: None,
        },
    }
}

fn ended(s: &str, vm: Option<&str>) -> Event {
    Event::SessionEnded {
        session_id: sid(s),
        reason: EndReason::User,
        vm_id: vm.map(|v| v.parse().unwrap()),
    }
}

fn registered(vm: &str) -> Event {
    Event::VmRegistered {
        vm_id: vm.parse().unwrap(),
        capacity: 4,
        labels: Default::default(),
        heartbeat_ms: None,
        endpoint: None,
    }
}

/// The log, in order, as (milliseconds after T0, event); sequence n is the n-th.
///
/// - s1 (alice, chess) started before the window, on vm-a, paused and resumed inside it, ended.
/// - s2 (bob, chess) starts inside, goes to vm-b, is still paused at the window's end.
/// - s3 (alice, racing) waits in the queue, is placed on vm-a, ends after the window.
/// - s4 (carol, chess) lives and ends entirely before the window.
/// - s5 (carol, racing) starts 1 ms before the end and is never placed.
/// - s6 (dave, chess) starts exactly at the end: outside.
fn log() -> Vec<(Timestamp, Event)> {
    let s = |id: &str| sid(id);
    vec![
        (500, registered("vm-a")),                // 1
        (600, registered("vm-b")),                // 2
        (1_000, started("s4", "carol", "chess")), // 3
        (2_000, assigned("s4", "vm-b")),          // 4
        (5_000, started("s1", "alice", "chess")), // 5
        (8_000, assigned("s1", "vm-a")),          // 6
        (9_000, ended("s4", Some("vm-b"))),       // 7
        (11_000, started("s2", "bob", "chess")),  // 8
        (11_250, assigned("s2", "vm-b")),         // 9
        (
            12_000,
            Event::SessionPaused {
                session_id: s("s1"),
            },
        ), // 10
        (
            13_500,
            Event::SessionResumed {
                session_id: s("s1"),
            },
        ), // 11
        (14_000, started("s3", "alice", "racing")), // 12
        (
            14_100,
            Event::SessionQueued {
                session_id: s("s3"),
                policy: PlacementPolicy::Spread,
                deadline: T0 + 60_000,
            },
        ), // 13
        (
            15_000,
            Event::SessionPaused {
                session_id: s("s2"),
            },
        ), // 14
        (16_789, assigned("s3", "vm-a")),         // 15
        (18_000, ended("s1", Some("vm-a"))),      // 16
        (19_999, started("s5", "carol", "racing")), // 17
        (20_000, started("s6", "dave", "chess")), // 18
        (25_000, ended("s3", Some("vm-a"))),      // 19
    ]
}

fn row(key: &str, sessions: u64, starting: i64, active: i64, paused: i64) -> UsageRow {
    UsageRow {
        key: key.to_owned(),
        sessions,
        time_ms: TimeInStatus {
            starting,
            active,
            paused,
        },
    }
}

// The expected totals, by hand, in [10 000, 20 000):
//   s1: active [10000,12000) 2000 + [13500,18000) 4500 = 6500; paused [12000,13500) 1500
//   s2: starting [11000,11250) 250; active [11250,15000) 3750; paused [15000,20000) 5000 (open)
//   s3: starting [14000,16789) 2789 (queued included); active [16789,20000) 3211 (open at `to`)
//   s4: nothing (before the window); s5: starting [19999,20000) 1; s6: nothing (at `to`)
//   all: starting 250 + 2789 + 1 = 3040; active 6500 + 3750 + 3211 = 13461; paused 6500

fn by_user() -> Vec<UsageRow> {
    vec![
        row("alice", 2, 2_789, 9_711, 1_500),
        row("bob", 1, 250, 3_750, 5_000),
        row("carol", 1, 1, 0, 0),
    ]
}

fn by_game() -> Vec<UsageRow> {
    vec![
        row("chess", 2, 250, 10_250, 6_500),
        row("racing", 2, 2_790, 3_211, 0),
    ]
}

fn by_vm() -> Vec<UsageRow> {
    vec![
        row("vm-a", 2, 0, 9_711, 1_500),
        row("vm-b", 1, 0, 3_750, 5_000),
    ]
}

/// By VM, starting time is before any VM: s2 250, s3 2789, s5 1.
fn unattributed() -> UsageRow {
    row("", 3, 3_040, 0, 0)
}

fn total() -> UsageRow {
    row("total", 4, 3_040, 13_461, 6_500)
}

fn fold(by: GroupBy, events: &[(Timestamp, Event)]) -> UsageReport {
    let mut fold = UsageFold::new(Window::new(T0 + 10_000, T0 + 20_000).unwrap(), by);
    for (i, (at, event)) in events.iter().enumerate() {
        fold.apply(i as u64 + 1, T0 + at, event);
    }
    fold.finish()
}

#[test]
fn the_fold_matches_the_hand_computed_totals() {
    let r = fold(GroupBy::User, &log());
    assert_eq!(r.rows, by_user());
    assert_eq!(r.unattributed, None);
    assert_eq!(r.total, total());
    assert_eq!(
        (r.from.as_str(), r.to.as_str()),
        ("2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z")
    );
    assert_eq!((r.events_read, r.last_seq), (19, 19));

    let r = fold(GroupBy::Game, &log());
    assert_eq!(r.rows, by_game());
    assert_eq!(r.total, total());

    let r = fold(GroupBy::Vm, &log());
    assert_eq!(r.rows, by_vm());
    assert_eq!(r.unattributed, Some(unattributed()));
    assert_eq!(r.total, total());

    // A read that stops before the first event at or after `to` gives the same totals.
    let early: Vec<_> = log().into_iter().filter(|(at, _)| *at < 20_000).collect();
    let r = fold(GroupBy::User, &early);
    assert_eq!((r.rows, r.total), (by_user(), total()));
}

/// A bridge (no writer: the log is written by hand) with the fixture appended to its stream.
async fn recorded() -> Harness {
    let h = Harness::start_with(
        http_support::args(),
        Roles {
            writer: false,
            projector: false,
        },
    )
    .await;
    let appender = Appender::new(
        async_nats::jetstream::new(h.client.clone()),
        CellId::default_cell(),
    );
    for (i, (at, event)) in log().into_iter().enumerate() {
        let n = i as u64 + 1;
        let env = Envelope::new(
            format!("e{n}"),
            format!("c{n}"),
            n,
            T0 + at,
            Actor::operator("ops"),
            event,
        );
        appender.append(&env, n - 1).await.expect("appended");
    }
    h
}

fn usage(url: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .arg("usage")
        .args(args)
        .args(["--nats-url", url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[tokio::test]
async fn the_cli_reads_the_hand_computed_totals_from_the_log() {
    let h = recorded().await;
    let url = h.server.url();
    let url = url.as_str();

    let (csv, _) = usage(
        url,
        &[
            "--from", FROM, "--to", TO, "--by", "user", "--format", "csv",
        ],
    );
    assert_eq!(
        csv,
        "user,sessions,starting_ms,active_ms,paused_ms,starting_s,active_s,paused_s\n\
         alice,2,2789,9711,1500,2.789,9.711,1.500\n\
         bob,1,250,3750,5000,0.250,3.750,5.000\n\
         carol,1,1,0,0,0.001,0.000,0.000\n"
    );

    let (json, _) = usage(
        url,
        &["--from", FROM, "--to", TO, "--by", "vm", "--format", "json"],
    );
    let r: UsageReport = serde_json::from_str(&json).expect("one JSON document");
    assert_eq!(r.rows, by_vm());
    assert_eq!(r.unattributed, Some(unattributed()));
    assert_eq!(r.total, total());
    // The read stops at the first event at or after `to` (s6's start, sequence 18).
    assert_eq!((r.events_read, r.last_seq), (17, 17));

    let (table, progress) = usage(
        url,
        &["--from", FROM, "--to", TO, "--by", "game", "--progress"],
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[1],
        "GAME    SESSIONS        STARTING          ACTIVE          PAUSED"
    );
    assert_eq!(
        lines[2],
        "chess          2     0:00:00.250     0:00:10.250     0:00:06.500"
    );
    assert_eq!(
        lines[3],
        "racing         2     0:00:02.790     0:00:03.211     0:00:00.000"
    );
    assert_eq!(
        lines[4],
        "total          4     0:00:03.040     0:00:13.461     0:00:06.500"
    );
    assert!(
        progress.contains("usage: done, 17 events read up to seq 17"),
        "{progress}"
    );

    // Sequences as bounds: from s2's start (seq 8, T0 + 11 s) to s5's start (seq 17, T0 +
    // 19.999 s). s1 loses its first second active; s2 and s3, open at the end, 1 ms each; s5 has
    // nothing left.
    let (csv, _) = usage(
        url,
        &[
            "--from", "8", "--to", "17", "--by", "user", "--format", "csv",
        ],
    );
    assert_eq!(
        csv,
        "user,sessions,starting_ms,active_ms,paused_ms,starting_s,active_s,paused_s\n\
         alice,2,2789,8710,1500,2.789,8.710,1.500\n\
         bob,1,250,3750,4999,0.250,3.750,4.999\n"
    );
}

#[tokio::test]
async fn the_cli_refuses_a_window_outside_the_log() {
    let h = recorded().await;
    let out = Command::new(BIN)
        .args(["usage", "--from", "5", "--to", "99", "--by", "user"])
        .args(["--nats-url", &h.server.url()])
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sequence 99 is not in the log"));
}

#[tokio::test]
async fn operators_read_usage_over_http() {
    let h = recorded().await;
    let a = h
        .call(
            "GET",
            &format!("/v1/usage?from={FROM}&to={TO}&by=game"),
            Some(OPS),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let r: UsageReport = serde_json::from_value(a.json.clone()).expect("a report");
    assert_eq!(r.by, GroupBy::Game);
    assert_eq!(r.rows, by_game());
    assert_eq!(r.total, total());
    assert_eq!(a.json["from_ms"], Value::from(T0 + 10_000));
    assert_eq!(a.json["rows"][0]["time_ms"]["active"], Value::from(10_250));

    let a = h
        .call("GET", "/v1/usage?from=8&to=17&by=vm", Some(OPS), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["total"]["time_ms"]["active"], Value::from(12_460));

    for token in [ALICE, GATEWAY] {
        let a = h
            .call("GET", "/v1/usage?from=1&to=2&by=user", Some(token), None)
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    }
    let a = h
        .call("GET", "/v1/usage?from=1&to=2&by=user", None, None)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = h
        .call(
            "GET",
            "/v1/usage?from=yesterday&to=2&by=user",
            Some(OPS),
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_argument"),
        "{}",
        a.text
    );
    let a = h
        .call("GET", "/v1/usage?from=1&to=99&by=user", Some(OPS), None)
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    let a = h
        .call("GET", "/v1/usage?from=1&to=2&by=planet", Some(OPS), None)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
}
