//! The `orchestrator-bench` binary's command line: its help, and flags refused before any server
//! starts.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator-bench");

#[test]
fn help_lists_the_flags() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--quick",
        "--work-dir",
        "--json-out",
        "--modes",
        "--failover-rounds",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn invalid_flags_fail_before_any_server_starts() {
    let out = Command::new(BIN)
        .args(["--clients", "0", "--nats-server-bin", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--clients needs levels of at least 1"),
        "{stderr}"
    );
}
