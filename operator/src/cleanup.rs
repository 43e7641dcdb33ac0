//! `ferromq-operator cleanup`: deletes FerroMQ resources in dependency order and waits until
//! they are gone.
//!
//! The Helm chart runs it as a `pre-delete` hook for its example cluster. Without it,
//! `helm uninstall` would delete the operator and its RBAC while Topics still carry the
//! operator's finalizer, and they (and their namespace) would hang in Terminating. Topics and
//! Users go first, while their Broker still exists, so the running operator can delete them
//! from the cluster; then Brokers, then Nameservers.

use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::crd::{Broker, Nameserver, Topic, User};

/// Why a cleanup did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The API server refused or failed a call.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// Objects were still there when time ran out.
    #[error("{kind} still present after {waited:?}: {names}; see their status conditions and the operator's log")]
    Timeout {
        kind: &'static str,
        waited: Duration,
        names: String,
    },
}

/// Deletes every Topic, User, Broker and Nameserver in `namespace` matching `selector` (kind by
/// kind) and waits for each kind to disappear, within `timeout` overall.
pub async fn run(
    client: &Client,
    namespace: &str,
    selector: &str,
    timeout: Duration,
) -> Result<(), CleanupError> {
    let deadline = Instant::now() + timeout;
    delete_and_wait::<Topic>(client, namespace, selector, "Topics", deadline).await?;
    delete_and_wait::<User>(client, namespace, selector, "Users", deadline).await?;
    delete_and_wait::<Broker>(client, namespace, selector, "Brokers", deadline).await?;
    delete_and_wait::<Nameserver>(client, namespace, selector, "Nameservers", deadline).await?;
    Ok(())
}

async fn delete_and_wait<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    kind: &'static str,
    deadline: Instant,
) -> Result<(), CleanupError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(selector);
    let started = Instant::now();
    let mut announced = false;
    loop {
        let left: Vec<K> = api.list(&lp).await?.items;
        if left.is_empty() {
            if announced {
                tracing::info!(kind, waited_s = started.elapsed().as_secs(), "all deleted");
            }
            return Ok(());
        }
        for obj in left
            .iter()
            .filter(|o| o.meta().deletion_timestamp.is_none())
        {
            let name = obj.name_any();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(kind, %name, "deleting"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        announced = true;
        if Instant::now() >= deadline {
            let names = left
                .iter()
                .map(|o| o.name_any())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CleanupError::Timeout {
                kind,
                waited: started.elapsed(),
                names,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
