//! `ferromq config check [--role ROLE] FILE [-- FLAGS]`: resolves a role's configuration the
//! way its start-up does (the same parse of the command line, the same `FERROMQ_*` variables,
//! the same checks), then stops instead of serving. Operators run it on a file before rolling
//! it out; a bad file exits with code 2 and the message start-up would print.

use std::path::PathBuf;

use clap::Parser;

use super::ConfigError;

/// `ferromq config ...`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file exactly as the role's start-up would (keys of the role
    /// only, values with their units, cross-field checks, certificate and secret files
    /// readable); print OK, or the error naming the field and exit with code 2.
    Check(CheckArgs),
}

/// Arguments of `ferromq config check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The role whose start-up the file is checked for.
    #[arg(long, value_enum, default_value_t = CheckRole::Standalone)]
    pub role: CheckRole,
    /// The TOML file (the role's `--config`).
    pub file: PathBuf,
    /// Further flags of the role, as start-up gets them, after `--` (e.g. `-- --group g1`
    /// for a broker whose group comes from its command line).
    #[arg(last = true, allow_hyphen_values = true)]
    pub flags: Vec<String>,
}

/// A role that reads a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckRole {
    Standalone,
    Broker,
    Proxy,
    Nameserver,
}

impl CheckRole {
    fn command(self) -> &'static str {
        match self {
            CheckRole::Standalone => "standalone",
            CheckRole::Broker => "broker",
            CheckRole::Proxy => "proxy",
            CheckRole::Nameserver => "nameserver",
        }
    }
}

/// What went wrong: the command line of the role (clap's message) or the configuration.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Flags(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Resolves the role's configuration from `args` as its start-up would.
pub fn check(args: &CheckArgs) -> Result<(), CheckError> {
    let mut argv: Vec<std::ffi::OsString> = vec!["ferromq".into(), args.role.command().into()];
    argv.push("--config".into());
    argv.push(args.file.clone().into_os_string());
    argv.extend(args.flags.iter().map(Into::into));
    let cli =
        crate::cli::Cli::try_parse_from(argv).map_err(|e| CheckError::Flags(e.to_string()))?;
    use crate::cli::Role;
    match cli.role {
        Role::Standalone(a) => a.resolve().map(drop)?,
        Role::Broker(a) => a.resolve().map(drop)?,
        Role::Proxy(a) => a.resolve().map(drop)?,
        Role::Nameserver(a) => a.resolve().map(drop)?,
        other => {
            return Err(CheckError::Flags(format!(
                "{other:?} reads no configuration"
            )))
        }
    }
    Ok(())
}

/// `ferromq config ...` as the binary runs it: the exit code.
pub fn run(args: &ConfigArgs) -> i32 {
    match &args.command {
        ConfigCommand::Check(c) => match check(c) {
            Ok(()) => {
                println!(
                    "OK: {} is a valid {} configuration",
                    c.file.display(),
                    c.role.command()
                );
                0
            }
            Err(e) => {
                eprintln!("ferromq: {}", e.to_string().trim_end());
                2
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(role: CheckRole, text: &str, flags: &[&str]) -> Result<(), CheckError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).expect("write");
        check(&CheckArgs {
            role,
            file,
            flags: flags.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn field(r: Result<(), CheckError>) -> &'static str {
        match r {
            Err(CheckError::Config(e)) => e.field,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_file_passes_and_bad_ones_name_the_field() {
        check_text(
            CheckRole::Standalone,
            "max-delay = \"1d\"\ntls = \"off\"\n",
            &[],
        )
        .expect("valid");
        assert_eq!(
            field(check_text(
                CheckRole::Standalone,
                "max-delay = \"soon\"\n",
                &[]
            )),
            "max-delay"
        );
        // A cross-field check only start-up can make: segments too small for the bodies.
        assert_eq!(
            field(check_text(
                CheckRole::Standalone,
                "segment-size = \"1MiB\"\nmax-body-size = \"4MiB\"\ntls = \"off\"\n",
                &[]
            )),
            "segment-size"
        );
        assert_eq!(
            field(check_text(CheckRole::Proxy, "data-dir = \"/x\"\n", &[])),
            "config"
        );
    }

    #[test]
    fn flags_after_the_file_complete_it_as_at_start_up() {
        let text = "nameservers = [\"ns:9876\"]\ntls = \"off\"\n";
        assert_eq!(field(check_text(CheckRole::Broker, text, &[])), "group");
        check_text(CheckRole::Broker, text, &["--group", "g1"]).expect("valid with its group");
        assert!(matches!(
            check_text(CheckRole::Broker, text, &["--no-such-flag"]),
            Err(CheckError::Flags(_))
        ));
    }
}
