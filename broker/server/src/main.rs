//! The `ferromq` binary: the broker roles, the admin client and (later) the benchmark.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on bad configuration (the
//! message names the field).

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use ferromq::admin::cli::AdminArgs;
use ferromq::config::{StandaloneArgs, StandaloneConfig};

#[derive(Debug, Parser)]
#[command(
    name = "ferromq",
    version,
    about = "FerroMQ: a message broker speaking the RocketMQ 5 gRPC protocol"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Nameserver, broker and proxy in one process with a local data directory.
    Standalone(StandaloneArgs),
    /// Manage topics and groups of a running server.
    Admin(AdminArgs),
    /// Drive load through the RocketMQ 5 protocol and report throughput and latency.
    Bench(ferromq::bench::BenchArgs),
    /// Route registry of a cluster: broker groups report here, proxies read routes here.
    Nameserver(ferromq::cluster::nameserver::NameserverArgs),
    /// Storage node of a cluster: one broker group, reporting to the name servers.
    Broker(ferromq::cluster::member::BrokerArgs),
    /// Stateless client-facing tier of a cluster: forwards clients to the broker groups.
    Proxy(ferromq::cluster::proxy::ProxyArgs),
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("FERROMQ_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.role {
        Role::Standalone(args) => {
            init_tracing();
            let cfg = match StandaloneConfig::resolve(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ferromq: {e}");
                    std::process::exit(2);
                }
            };
            run_async(ferromq::standalone::run(cfg))
        }
        Role::Admin(args) => run_async(ferromq::admin::cli::run(args)),
        Role::Bench(args) => run_async(ferromq::bench::run(args)),
        Role::Nameserver(args) => {
            init_tracing();
            run_async(ferromq::cluster::nameserver::run(args))
        }
        Role::Broker(args) => {
            init_tracing();
            let (cfg, member) = match args.resolve() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ferromq: {e}");
                    std::process::exit(2);
                }
            };
            run_async(ferromq::standalone::run_with(cfg, Some(member)))
        }
        Role::Proxy(args) => {
            init_tracing();
            let cfg = match args.resolve() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ferromq: {e}");
                    std::process::exit(2);
                }
            };
            run_async(ferromq::cluster::proxy::run(cfg))
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
        Err(e) if e.downcast_ref::<ferromq::config::ConfigError>().is_some() => {
            eprintln!("ferromq: {e:#}");
            2
        }
        Err(e) => {
            eprintln!("ferromq: error: {e:#}");
            1
        }
    }
}
