//! The schema guard: the operator acts only when the installed CRDs are at least as new as the
//! ones it was built with.
//!
//! Helm installs CRDs with a chart but never upgrades them, so after `helm upgrade` a newer
//! operator can meet older schemas. The API server would then prune every field the old schema
//! does not know from what the operator writes, and the operator would keep "repairing" it. The
//! guard reads each CRD's `ferromq.io/schema-revision` annotation (cached for
//! [`SchemaGuard::REFRESH`]) and, while one is older, every reconcile only reports the problem in
//! its conditions.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};

use crate::crd;
use crate::Error;

/// Caches the outcome of comparing the installed CRDs with this build's.
#[derive(Default)]
pub struct SchemaGuard {
    last: Mutex<Option<(Instant, Option<String>)>>,
}

impl SchemaGuard {
    /// How long a verdict is trusted; CRD upgrades are picked up within this time.
    pub const REFRESH: Duration = Duration::from_secs(30);

    /// `Some(message)` when the installed CRDs are older than this operator expects (or
    /// missing); `None` when they are fine.
    pub async fn outdated(&self, client: &Client) -> Result<Option<String>, Error> {
        if let Some((at, verdict)) = self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if at.elapsed() < Self::REFRESH {
                return Ok(verdict.clone());
            }
        }
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut installed = Vec::new();
        for name in crd::names() {
            let found = api.get_opt(&name).await?;
            installed.push((name, found));
        }
        let verdict = crd::outdated_schemas(&installed);
        if let Some(msg) = &verdict {
            tracing::error!(problem = %msg, "installed CRDs are older than this operator");
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), verdict.clone()));
        Ok(verdict)
    }
}
