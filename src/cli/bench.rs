//! `orchestrator bench ...`: runs the benchmark, the `orchestrator-bench` binary built beside this
//! one (the workspace member `bench/`), with the same arguments.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use clap::Args;

use super::CliError;

/// The benchmark's binary, looked for in this binary's directory.
pub const BENCH_BINARY: &str = "orchestrator-bench";

/// `bench`: every argument goes to `orchestrator-bench` as it is (`bench --help` shows its flags).
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// The benchmark's flags: see `orchestrator bench --help`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Replaces this process with `orchestrator-bench` and `args`; returns only when that fails.
pub fn run(args: BenchArgs) -> Result<(), CliError> {
    let bin = binary()?;
    if !bin.is_file() {
        return Err(CliError::Failed(format!(
            "the benchmark's binary {} is missing: build it with `cargo build --release -p \
             orchestrator-bench` (or `cargo build --release` at the workspace root, which builds both)",
            bin.display()
        )));
    }
    // Its usage line then reads `orchestrator bench`, as typed.
    let e = std::process::Command::new(&bin)
        .arg0("orchestrator bench")
        .args(args.args)
        .exec();
    Err(CliError::Failed(format!(
        "cannot run {}: {e}",
        bin.display()
    )))
}

/// `orchestrator-bench` beside the running binary.
fn binary() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find this binary's path: {e}")))?;
    Ok(exe.with_file_name(BENCH_BINARY))
}
