//! `orchestrator bench ...` runs the `orchestrator-bench` binary beside it with the same arguments,
//! and says how to build it when it is missing. A copy of the binary in a temporary directory stands
//! beside a stand-in script, or beside nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A copy of the `orchestrator` binary in `dir` (the bench is looked for beside the running binary).
fn orchestrator_in(dir: &Path) -> PathBuf {
    let bin = dir.join("orchestrator");
    std::fs::copy(env!("CARGO_BIN_EXE_orchestrator"), &bin).unwrap();
    bin
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn bench_runs_the_binary_beside_it_with_every_argument() {
    let dir = tempfile::tempdir().unwrap();
    let bin = orchestrator_in(dir.path());
    let stand_in = dir.path().join("orchestrator-bench");
    std::fs::write(
        &stand_in,
        "#!/bin/sh\necho \"$0\"\nprintf '%s\\n' \"$@\"\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = run(&bin, &["bench", "--quick", "--help", "--work-dir", "a b"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[1..],
        ["--quick", "--help", "--work-dir", "a b"],
        "{stdout}"
    );
}

#[test]
fn bench_without_its_binary_names_the_build_command() {
    let dir = tempfile::tempdir().unwrap();
    let bin = orchestrator_in(dir.path());
    let out = run(&bin, &["bench", "--quick"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("orchestrator-bench")
            && stderr.contains("cargo build --release -p orchestrator-bench"),
        "{stderr}"
    );
}
