//! Shared helpers of the operator's integration tests.

use anyhow::{Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the control plane whose kubeconfig path is in the environment variable `var`
/// (set by tests/suites/60-operator.sh; deliberately not KUBECONFIG, so these tests never
/// touch a cluster by accident).
pub async fn client_from_env(var: &str) -> Result<Client> {
    let path = std::env::var(var)
        .with_context(|| format!("{var} is not set: run tests/suites/60-operator.sh"))?;
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| format!("reading {path}"))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}
