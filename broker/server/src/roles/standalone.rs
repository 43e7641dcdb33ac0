//! `ferromq standalone`: name server, storage node and client-facing service in one process
//! with a local data directory: a storage node ([`super::node`]) that serves clients itself.

use crate::config::node::NodeConfig;

/// Runs the standalone server until SIGTERM or Ctrl-C.
pub async fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    super::node::run(cfg, None).await
}
