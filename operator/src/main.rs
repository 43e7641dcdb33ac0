//! `ferromq-operator`: `run` starts the controllers; `crds` writes the CRD manifests.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferromq-operator", version, about = "Kubernetes operator for FerroMQ")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CRDs generated from the Rust types, or write `<kind>.yaml` files into a directory.
    Crds {
        /// Directory to write `nameserver.yaml`, `broker.yaml` and `topic.yaml` into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out } => write_crds(out),
    }
}

fn write_crds(out: Option<PathBuf>) -> anyhow::Result<()> {
    for (kind, crd) in ferromq_operator::crd::all() {
        let yaml = ferromq_operator::crd::render_yaml(&crd)?;
        match &out {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                let path = dir.join(format!("{kind}.yaml"));
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
