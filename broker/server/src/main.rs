//! The `ferromq` binary: the roles, the admin client and the benchmark.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on bad configuration (the
//! message names the field).

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use ferromq::admin::cli::AdminArgs;
use ferromq::config::broker::BrokerArgs;
use ferromq::config::nameserver::NameserverArgs;
use ferromq::config::node::NodeArgs;
use ferromq::config::proxy::ProxyArgs;
use ferromq::config::ConfigError;

#[derive(Debug, Parser)]
#[command(
    name = "ferromq",
    version,
    about = "FerroMQ: a message broker speaking the RocketMQ 5 gRPC protocol"
)]
struct Cli {
    #[command(flatten)]
    telemetry: Telemetry,
    #[command(subcommand)]
    role: Role,
}

/// How a role logs and names itself in metrics; accepted before or after the role's name.
#[derive(Debug, clap::Args)]
struct Telemetry {
    /// Log line format: `text` for people, `json` (one object per line, with the span's
    /// fields) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FERROMQ_LOG_FORMAT")]
    log_format: LogFormat,
    /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or tracing directives
    /// such as `info,ferromq_store=debug` [default: info].
    #[arg(long, global = true, env = "FERROMQ_LOG")]
    log_level: Option<String>,
    /// Cluster name in the `cluster` label of the RocketMQ-named metrics.
    #[arg(long, global = true, env = "FERROMQ_CLUSTER_NAME", default_value = ferromq::metrics::DEFAULT_CLUSTER)]
    cluster_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Nameserver, broker and proxy in one process with a local data directory.
    Standalone(NodeArgs),
    /// Manage topics and groups of a running server.
    Admin(AdminArgs),
    /// Drive load through the RocketMQ 5 protocol and report throughput and latency.
    Bench(ferromq::bench::BenchArgs),
    /// Route registry of a cluster: broker groups report here, proxies read routes here.
    Nameserver(NameserverArgs),
    /// Storage node of a cluster: one broker group, reporting to the name servers.
    Broker(Box<BrokerArgs>),
    /// Stateless client-facing tier of a cluster: forwards clients to the broker groups.
    Proxy(ProxyArgs),
}

/// Starts logging to stderr; a bad `--log-level` exits with code 2 naming it.
fn init_tracing(t: &Telemetry) {
    let filter = match &t.log_level {
        Some(directives) => match EnvFilter::try_new(directives) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("ferromq: log-level: {e}");
                std::process::exit(2);
            }
        },
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    ferromq::metrics::set_cluster(&t.cluster_name);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match t.log_format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
}

/// A role's configuration, or exit code 2 with the message naming the bad field.
fn configured<T>(r: Result<T, ConfigError>) -> T {
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferromq: {e}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.role {
        Role::Standalone(args) => {
            init_tracing(&cli.telemetry);
            let cfg = configured(args.resolve());
            run_async(ferromq::roles::standalone::run(cfg))
        }
        Role::Admin(args) => run_async(ferromq::admin::cli::run(args)),
        Role::Bench(args) => run_async(ferromq::bench::run(args)),
        Role::Nameserver(args) => {
            init_tracing(&cli.telemetry);
            let cfg = configured(args.resolve());
            run_async(ferromq::roles::nameserver::run(cfg))
        }
        Role::Broker(args) => {
            init_tracing(&cli.telemetry);
            let (cfg, member) = configured(args.resolve());
            run_async(ferromq::roles::broker::run(cfg, member))
        }
        Role::Proxy(args) => {
            init_tracing(&cli.telemetry);
            let cfg = configured(args.resolve());
            run_async(ferromq::roles::proxy::run(cfg))
        }
    };
    std::process::exit(code);
}

fn run_async(f: impl std::future::Future<Output = anyhow::Result<()>>) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferromq: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(f) {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("ferromq: {e:#}");
            2
        }
        Err(e) => {
            eprintln!("ferromq: error: {e:#}");
            1
        }
    }
}
