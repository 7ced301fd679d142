//! `serve --config FILE`: a TOML file whose keys are `serve`'s flags (`nats-url = "…"`, `role =
//! ["writer"]`, `max-sessions-per-user = 4`; `_` or `-` alike). Its values become the flags'
//! defaults before the command line is parsed, so the precedence is flag > environment > file >
//! built-in default, and a file is checked as strictly as the flags (an unknown key is an error).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command, CommandFactory, FromArgMatches};

use super::Cli;

/// Parses the command line, applying `serve --config FILE` (or `$ORCH_CONFIG`) first.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = Cli::command();
    if let Some(file) = config_file(&args) {
        let serve = cmd
            .find_subcommand_mut("serve")
            // `serve` is a variant of `CliCommand`: always there.
            .expect("the serve subcommand exists");
        *serve = with_file(serve.clone(), &file)
            .map_err(|m| Cli::command().error(clap::error::ErrorKind::InvalidValue, m))?;
    }
    let matches = cmd.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// The config file `serve` is given: `--config FILE`, `--config=FILE`, else `$ORCH_CONFIG`.
fn config_file(args: &[OsString]) -> Option<PathBuf> {
    let serve = args.iter().skip(1).position(|a| a == "serve")? + 1;
    let mut rest = args[serve + 1..].iter();
    while let Some(a) = rest.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return rest.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("ORCH_CONFIG").map(PathBuf::from)
}

/// `serve` with the file's values as its flags' defaults.
fn with_file(mut serve: Command, file: &Path) -> Result<Command, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("--config {}: {e}", file.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("--config {}: {e}", file.display()))?;
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
            .ok_or_else(|| {
                format!(
                    "--config {}: unknown key {key:?}: use serve's flag names (see serve --help)",
                    file.display()
                )
            })?;
        let id = arg.get_id().clone();
        let many =
            arg.get_value_delimiter().is_some() || matches!(arg.get_action(), ArgAction::Append);
        let values: Vec<String> = match value {
            toml::Value::Array(items) => items.into_iter().map(scalar).collect::<Result<_, _>>(),
            other => scalar(other).map(|v| {
                if many {
                    v.split(',').map(str::to_owned).collect()
                } else {
                    vec![v]
                }
            }),
        }
        .map_err(|e| format!("--config {}: {key}: {e}", file.display()))?;
        serve = serve.mut_arg(id, |a| a.default_values(values));
    }
    Ok(serve)
}

/// A TOML scalar as the flag's text.
fn scalar(v: toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, number or boolean, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CliCommand;

    fn serve(file: &str, flags: &[&str]) -> Result<super::super::serve::ServeArgs, clap::Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv = vec!["orchestrator", "serve", "--config", path.to_str().unwrap()];
        argv.extend(flags);
        match parse_from(argv)?.command {
            CliCommand::Serve(args) => Ok(*args),
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn a_file_value_takes_effect_and_a_flag_overrides_it() {
        let file = "max-sessions-per-user = 4\ndata_dir = \"/srv/orch\"\nrole = [\"writer\", \"projector\"]\n";
        let args = serve(file, &[]).unwrap();
        assert_eq!(args.max_sessions_per_user, 4);
        assert_eq!(args.data_dir, PathBuf::from("/srv/orch"));
        assert_eq!(args.roles.len(), 2);
        let args = serve(file, &["--max-sessions-per-user", "7"]).unwrap();
        assert_eq!(args.max_sessions_per_user, 7, "the flag wins");
        assert_eq!(
            args.data_dir,
            PathBuf::from("/srv/orch"),
            "the file still counts"
        );
        let args = serve("", &[]).unwrap();
        assert_eq!(args.max_sessions_per_user, 2, "the built-in default");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = serve("max-session-per-user = 4\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key"), "{e}");
        assert!(serve("max-sessions-per-user = \"many\"\n", &[]).is_err());
        assert!(serve("not toml", &[]).is_err());
    }
}
