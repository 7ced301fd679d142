//! The `orchestrator` binary end to end: `serve` against a real nats-server per test, driven
//! through the client subcommands, then read back with `history`, `state`, `tail` and `verify`; a
//! cell without a log; the completion scripts.

mod cli_support;
mod common;

use cli_support::*;

#[tokio::test]
async fn commands_then_history_state_tail_and_verify() {
    let server = TestServer::start_default().await;
    let url = server.url();
    let (serve, _) = serve_external(&server, &server.dir().join("data"), false);
    let http = serve.wait_for("HTTP:", Duration::ZERO);
    assert!(
        http.contains("off: no tokens"),
        "no tokens, no bridge: {http}"
    );

    let out = send(
        &url,
        &[
            "vm",
            "register",
            "vm-1",
            "--capacity",
            "2",
            "--label",
            "region=eu",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("VmRegistered at seq 1"), "{out:?}");

    let out = send(
        &url,
        &[
            "start",
            "--user",
            "u1",
            "--game",
            "g1",
            "--session",
            "s1",
            "--require",
            "region=eu",
            "--json",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let reply = json(out.stdout.trim());
    assert_eq!(reply["accepted"]["seq"], 2, "{out:?}");
    assert_eq!(
        reply["accepted"]["event"]["event"]["SessionStarted"]["session_id"],
        "s1"
    );

    let out = send(&url, &["assign", "s1", "--command-id", "assign-s1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("SessionAssigned at seq 3") && out.stdout.contains("vm-1"),
        "{out:?}"
    );
    let retry = send(&url, &["assign", "s1", "--command-id", "assign-s1"]);
    assert_eq!(retry.code, 0, "{retry:?}");
    assert!(
        retry.stdout.contains("at seq 3") && retry.stdout.contains("retry"),
        "{retry:?}"
    );

    assert_eq!(send(&url, &["pause", "s1"]).code, 0);
    let again = send(&url, &["pause", "s1"]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("invalid_transition"), "{again:?}");
    let rejected = send(&url, &["pause", "s1", "--json"]);
    assert_eq!(rejected.code, 2, "{rejected:?}");
    assert_eq!(
        json(rejected.stdout.trim())["rejected"]["code"],
        "invalid_transition"
    );
    assert_eq!(send(&url, &["resume", "s1"]).code, 0);
    let out = send(&url, &["end", "s1", "--reason", "user"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("SessionEnded at seq 6") && out.stdout.contains("reason user"),
        "{out:?}"
    );

    // Nothing listens there: unavailable, not rejected.
    let dead = format!("nats://127.0.0.1:{}", free_port().unwrap());
    let out = run(&dead, &["pause", "s1", "--timeout", "1s"]);
    assert_eq!(out.code, 3, "{out:?}");

    let out = run(&url, &["history", "s1"]);
    assert_eq!(out.code, 0, "{out:?}");
    for needle in [
        "SessionStarted",
        "SessionAssigned",
        "SessionPaused",
        "SessionResumed",
        "SessionEnded",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {out:?}");
    }
    assert!(out.stdout.contains("time in each state"), "{out:?}");
    assert!(
        out.stdout.contains("assign-s1"),
        "the command id shows: {out:?}"
    );
    assert!(
        out.stdout.contains("fullest VM with room"),
        "the placement shows: {out:?}"
    );
    let out = run(&url, &["history", "s1", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let h = json(out.stdout.trim());
    let at: Vec<i64> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(at.len(), 5);
    assert_eq!(h["status"], "ended");
    assert_eq!(h["time_in_state_ms"]["starting"], at[1] - at[0]);
    assert_eq!(
        h["time_in_state_ms"]["active"],
        (at[2] - at[1]) + (at[4] - at[3])
    );
    assert_eq!(h["time_in_state_ms"]["paused"], at[3] - at[2]);
    assert_eq!(run(&url, &["history", "nope"]).code, 1);

    let out = run(&url, &["state", "--at", "3", "--json", "--sessions"]);
    assert_eq!(out.code, 0, "{out:?}");
    let s = json(out.stdout.trim());
    assert_eq!(s["as_of_seq"], 3);
    assert_eq!(s["vms"][0]["used"], 1);
    assert_eq!(s["sessions_by_status"]["active"], 1);
    assert_eq!(s["sessions"][0]["status"], "active");
    let out = run(&url, &["state"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("as of seq 6"), "{out:?}");
    assert!(
        out.stdout.contains("vm-1") && out.stdout.contains("0/2"),
        "{out:?}"
    );
    assert!(out.stdout.contains("ended 1"), "{out:?}");
    let time = h["events"][1]["at"].as_str().unwrap();
    let out = run(&url, &["state", "--at", time, "--json"]);
    assert_eq!(json(out.stdout.trim())["as_of_seq"], 3, "{out:?}");
    assert_eq!(run(&url, &["state", "--at", "99"]).code, 1);
    // The same moment with an offset, `now`, a time before the first event, and one without a zone.
    let at_ms = h["events"][1]["at_ms"].as_i64().unwrap();
    let plus_one = orchestrator::log::point::format_time(at_ms + 3_600_000).replace('Z', "+01:00");
    let out = run(&url, &["state", "--at", &plus_one, "--json"]);
    assert_eq!(
        json(out.stdout.trim())["as_of_seq"],
        3,
        "{plus_one}: {out:?}"
    );
    let out = run(&url, &["state", "--at", "now", "--json"]);
    assert_eq!(json(out.stdout.trim())["as_of_seq"], 6, "{out:?}");
    let out = run(&url, &["state", "--at", "-3650d", "--json"]);
    assert_eq!(json(out.stdout.trim())["as_of_seq"], 0, "{out:?}");
    let zoneless = time.trim_end_matches('Z');
    let out = run(&url, &["state", "--at", zoneless]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("add Z or an offset"), "{out:?}");

    // The pool and the sessions, read from the log.
    let out = run(&url, &["vm", "list", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let vms = json(out.stdout.trim());
    assert_eq!(vms[0]["vm_id"], "vm-1", "{out:?}");
    assert_eq!(
        (vms[0]["used"].as_u64(), vms[0]["capacity"].as_u64()),
        (Some(0), Some(2))
    );
    let out = run(&url, &["vm", "list", "--status", "draining", "--json"]);
    assert_eq!(json(out.stdout.trim()), serde_json::json!([]), "{out:?}");
    let out = run(&url, &["vm", "ls"]);
    assert!(
        out.stdout.contains("vm-1") && out.stdout.contains("0/2"),
        "{out:?}"
    );
    let out = run(&url, &["vm", "get", "vm-1", "--json"]);
    assert_eq!(json(out.stdout.trim())["labels"]["region"], "eu", "{out:?}");
    let out = run(&url, &["vm", "get", "vm-9"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no VM vm-9"), "{out:?}");
    let out = run(&url, &["session", "get", "s1", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let got = json(out.stdout.trim());
    assert_eq!(
        (got["status"].as_str(), got["vm_id"].as_str()),
        (Some("ended"), Some("vm-1"))
    );
    let out = run(&url, &["session", "get", "s1"]);
    assert!(out.stdout.contains("ended since"), "{out:?}");
    assert_eq!(run(&url, &["session", "get", "s9"]).code, 1);
    assert_eq!(got["end_reason"], "user", "{out:?}");
    let out = run(&url, &["session", "list", "--user", "u1", "--json"]);
    assert_eq!(
        json(out.stdout.trim()),
        serde_json::json!([]),
        "s1 ended: {out:?}"
    );
    let out = run(&url, &["session", "list", "--status", "active", "--json"]);
    assert_eq!(json(out.stdout.trim()), serde_json::json!([]), "{out:?}");

    // End reasons are listed as the events spell them.
    let out = run(&url, &["end", "--help"]);
    assert!(
        out.stdout.contains("pause_timeout") && !out.stdout.contains("pause-timeout"),
        "{out:?}"
    );

    let out = run(&url, &["tail", "--from", "start", "--count", "4", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<Value> = out.stdout.lines().map(json).collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(lines[0]["type"], "VmRegistered");
    assert!(lines[1]["command_id"].is_string() && lines[1]["actor"]["kind"] == "operator");
    let out = run(
        &url,
        &[
            "tail",
            "--from",
            "start",
            "--type",
            "SessionEnded",
            "--count",
            "1",
            "--json",
        ],
    );
    assert_eq!(json(out.stdout.trim())["seq"], 6, "{out:?}");
    let out = run(
        &url,
        &[
            "tail",
            "--from",
            "start",
            "--session",
            "s1",
            "--vm",
            "vm-1",
            "--count",
            "2",
            "--json",
        ],
    );
    let seqs: Vec<u64> = out
        .stdout
        .lines()
        .map(|l| json(l)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        [3, 6],
        "the assignment and the end name vm-1: {out:?}"
    );
    let out = run(
        &url,
        &["tail", "--from", "-3650d", "--count", "1", "--json"],
    );
    assert_eq!(json(out.stdout.trim())["seq"], 1, "{out:?}");
    let out = run(&url, &["tail", "--from", "5", "--count", "2"]);
    assert!(
        out.stdout.contains("SessionResumed") && out.stdout.contains("SessionEnded"),
        "{out:?}"
    );

    let out = run(&url, &["verify"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("verify: clean"), "{out:?}");
}

#[tokio::test]
async fn a_cell_without_a_log_is_named_with_its_own_exit_status() {
    let server = TestServer::start_default().await;
    let url = server.url();
    for args in [
        &["verify", "--cell", "nope"][..],
        &["state", "--cell", "nope"],
        &["tail", "--cell", "nope", "--count", "1"],
        &["history", "s1", "--cell", "nope"],
        &[
            "usage", "--cell", "nope", "--from", "1", "--to", "2", "--by", "user",
        ],
        &[
            "whatif", "--cell", "nope", "--from", "1", "--to", "2", "--policy", "spread",
        ],
        &["vm", "list", "--cell", "nope"],
        &["session", "get", "s1", "--cell", "nope"],
    ] {
        let out = run(&url, args);
        assert_eq!(out.code, 4, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(
                "no log stream ORCH_NOPE for cell nope: is the cell name right, has a writer run?"
            ),
            "{args:?}: {out:?}"
        );
        assert!(!out.stdout.contains("DIVERGENCE"), "{args:?}: {out:?}");
    }
}

#[test]
fn completions_name_the_subcommands() {
    let out: Run = orchestrator()
        .args(["completions", "bash"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{out:?}");
    for sub in [
        "serve",
        "state",
        "tail",
        "verify",
        "vm",
        "session",
        "list",
        "get",
        "completions",
    ] {
        assert!(out.stdout.contains(sub), "{sub}: {out:?}");
    }
    let out: Run = orchestrator()
        .args(["completions", "zsh"])
        .output()
        .unwrap()
        .into();
    assert!(
        out.code == 0 && out.stdout.contains("#compdef orchestrator"),
        "{out:?}"
    );
    let out: Run = orchestrator()
        .args(["completions", "fish"])
        .output()
        .unwrap()
        .into();
    assert!(
        out.code == 0 && out.stdout.contains("complete -c orchestrator"),
        "{out:?}"
    );
}
