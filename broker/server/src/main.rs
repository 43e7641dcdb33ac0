//! The `ferromq` binary: the roles, the admin client, the console producer and consumer, and the
//! benchmark. The command line itself is [`ferromq::cli`].
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on bad configuration or
//! arguments (the message names the field).

use clap::Parser;
use tracing_subscriber::EnvFilter;

use ferromq::cli::{Cli, LogFormat, Role, Telemetry};
use ferromq::config::ConfigError;

/// mimalloc instead of glibc's malloc: a message's path allocates and frees a few small buffers
/// per request on whichever worker thread runs it, and glibc's `malloc`, `free` and chunk
/// coalescing were about a seventh of the server's samples under batched sends. Built without
/// transparent huge pages (`no_thp`): with them an idle process held 9 MiB more.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Role::Send(args) => run_async(ferromq::console::send(args)),
        Role::Consume(args) => run_async(ferromq::console::consume(args)),
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
        Role::Config(args) => ferromq::config::check::run(&args),
        Role::Completions { shell } => exit_code(ferromq::cli::completions(shell)),
        Role::Man { out_dir } => exit_code(ferromq::cli::man(out_dir)),
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
    exit_code(rt.block_on(f))
}

/// 0, or the error on one line and 2 (configuration) or 1 (anything else).
fn exit_code(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("ferromq: {}", ferromq::dial::one_line(&e));
            2
        }
        Err(e) => {
            eprintln!("ferromq: error: {}", ferromq::dial::one_line(&e));
            1
        }
    }
}
