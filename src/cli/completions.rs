//! `orchestrator completions bash|zsh|fish`: a completion script for the shell, generated from the
//! command line's definition ([`clap_complete`]), so it never lags behind a new flag.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, CliError};

/// `completions`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
bash: `source <(orchestrator completions bash)` (or write it to \
/etc/bash_completion.d/orchestrator); zsh: `orchestrator completions zsh > \"${fpath[1]}/_orchestrator\"`; \
fish: `orchestrator completions fish > ~/.config/fish/completions/orchestrator.fish`.")]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// Writes the script to stdout.
pub fn run(args: &CompletionsArgs) -> Result<(), CliError> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "orchestrator", &mut out);
    outln!("{}", String::from_utf8_lossy(&out).trim_end());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bash_script_names_the_subcommands() {
        let mut out = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Cli::command(), "orchestrator", &mut out);
        let script = String::from_utf8(out).unwrap();
        for sub in [
            "serve",
            "state",
            "tail",
            "vm",
            "session",
            "completions",
            "list",
            "get",
        ] {
            assert!(script.contains(sub), "{sub}");
        }
    }
}
