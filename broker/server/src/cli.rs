//! The `ferromq` command line: every subcommand and flag (the binary's `main` only dispatches),
//! the value parsers shared by the client tools, and the generated documentation of it all:
//! shell completions (`clap_complete`) and man pages (`clap_mangen`).

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::admin::cli::AdminArgs;
use crate::config::broker::BrokerArgs;
use crate::config::nameserver::NameserverArgs;
use crate::config::node::NodeArgs;
use crate::config::proxy::ProxyArgs;

#[derive(Debug, Parser)]
#[command(
    name = "ferromq",
    version,
    about = "FerroMQ: a message broker speaking the RocketMQ 5 gRPC protocol"
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: Telemetry,
    #[command(subcommand)]
    pub role: Role,
}

/// How a role logs and names itself in metrics; accepted before or after the role's name.
#[derive(Debug, clap::Args)]
pub struct Telemetry {
    /// Log line format: `text` for people, `json` (one object per line, with the span's
    /// fields) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FERROMQ_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or tracing directives
    /// such as `info,ferromq_store=debug` [default: info].
    #[arg(long, global = true, env = "FERROMQ_LOG")]
    pub log_level: Option<String>,
    /// Cluster name in the `cluster` label of the RocketMQ-named metrics.
    #[arg(long, global = true, env = "FERROMQ_CLUSTER_NAME", default_value = crate::metrics::DEFAULT_CLUSTER)]
    pub cluster_name: String,
}

/// The log line formats of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// Nameserver, broker and proxy in one process with a local data directory.
    Standalone(Box<NodeArgs>),
    /// Manage topics, consumer groups, dead letters, users and the cluster of a running server.
    Admin(AdminArgs),
    /// Send messages: one per line of standard input, or `--body` (the console producer).
    Send(crate::console::SendArgs),
    /// Receive messages as a consumer group, print them and acknowledge what was printed.
    Consume(crate::console::ConsumeArgs),
    /// Drive load through the RocketMQ 5 protocol and report throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Route registry of a cluster: broker groups report here, proxies read routes here.
    Nameserver(NameserverArgs),
    /// Storage node of a cluster: one broker group, reporting to the name servers.
    Broker(Box<BrokerArgs>),
    /// Stateless client-facing tier of a cluster: forwards clients to the broker groups.
    Proxy(ProxyArgs),
    /// Check configuration files without starting anything (`config check FILE`).
    Config(crate::config::check::ConfigArgs),
    /// Print a shell completion script (e.g. `ferromq completions bash > /etc/bash_completion.d/ferromq`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page of `ferromq`, or write one page per command into a directory.
    Man {
        /// Write `ferromq.1`, `ferromq-admin.1`, `ferromq-admin-topic-create.1`, ... here
        /// instead of printing the top page.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

/// `ferromq completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ferromq", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(())
}

/// `ferromq man`: the top page on stdout, or every page into `out_dir`.
pub fn man(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    let cmd = Cli::command();
    match out_dir {
        None => {
            use std::io::Write;
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().write_all(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        }
    }
    Ok(())
}

/// A topic name as the server accepts it (letters, digits, `%`, `-`, `_`, `|`; 1 to 127).
pub fn topic_name(s: &str) -> Result<String, String> {
    ferromq_store::metadata::validate_name("topic", s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// A consumer group name as the server accepts it.
pub fn group_name(s: &str) -> Result<String, String> {
    ferromq_store::metadata::validate_name("group", s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command explains itself in `--help` (and so in the man pages).
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "ferromq", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
