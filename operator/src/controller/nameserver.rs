//! Reconciles a `Nameserver`: applies its Service, StatefulSet and PDB; reports readiness and
//! the stable addresses brokers use.

use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::{field, instrument};

use kube::runtime::events::EventType;

use super::internal_tls::{self as it, CaState, Refusal};
use super::progress::{sts_progress, Progress};
use super::{apply_and_report, write_status, Context, POLL, RESYNC};
use crate::builders::internal_tls as tls;
use crate::builders::nameserver as b;
use crate::conditions::{self, Desired, PROGRESSING, READY};
use crate::crd::{Nameserver, NameserverStatus};
use crate::Error;

/// Kind label for metrics and logs.
pub const KIND: &str = "Nameserver";

/// Status for a spec the operator will not act on: nothing is applied, Ready and Degraded say why.
async fn refuse(ctx: &Context, ns: &Nameserver, r: Refusal) -> Result<Action, Error> {
    let old = ns.status.clone().unwrap_or_default();
    let status = NameserverStatus {
        observed_generation: ns.metadata.generation,
        conditions: conditions::merge(
            &old.conditions,
            &super::broker::status::refused(r.reason, &r.message),
            ns.metadata.generation,
            &conditions::now(),
        ),
        ..old.clone()
    };
    if status != old {
        ctx.event(ns, EventType::Warning, r.reason, "Validate", r.message)
            .await;
    }
    write_status(ctx, ns, &old, &status).await?;
    Ok(Action::requeue(POLL))
}

/// One reconcile of `ns`.
#[instrument(skip(ns, ctx), fields(kind = KIND, namespace = field::Empty, name = field::Empty))]
pub async fn reconcile(ns: Arc<Nameserver>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = super::enter(&*ns);
    if let Some(action) = super::hold(&ctx, &*ns, ns.status.as_ref()).await? {
        return Ok(action);
    }
    // Internal TLS: the cluster CA (generated, renewed, or the user's, checked) and the name
    // servers' certificate come before the pods that mount them.
    match it::cluster_ca(&ctx, &ns, true).await? {
        CaState::Off => {}
        CaState::Unusable(r) => return refuse(&ctx, &ns, r).await,
        CaState::Ready(ca) => {
            let parent = crate::builders::common::Parent::of(&*ns)?;
            let name = ns.name_any();
            if let Err(r) = it::ensure_leaf(
                &ctx,
                &*ns,
                &parent,
                b::COMPONENT,
                &name,
                &tls::nameserver_secret(&name),
                &tls::service_names(&name, &namespace, true),
                &ca,
            )
            .await?
            {
                return refuse(&ctx, &ns, r).await;
            }
        }
    }
    let secret_versions = it::secret_versions(&ctx, &namespace, &b::mounted_secrets(&ns)).await?;
    let children = b::build_with(&ns, &b::NameserverInputs { secret_versions })?;
    apply_and_report(&ctx, &*ns, &children.service).await?;
    apply_and_report(&ctx, &*ns, &children.pdb).await?;
    let sts = apply_and_report(&ctx, &*ns, &children.statefulset).await?;

    let Progress {
        replicas,
        ready,
        settled,
    } = sts_progress(&sts);
    let desired = ns.spec.replicas;
    let conds = if settled {
        conditions::not_degraded(
            Desired::new(
                READY,
                true,
                "AllReplicasReady",
                format!("{ready}/{desired} name servers ready"),
            ),
            Desired::new(
                PROGRESSING,
                false,
                "Stable",
                "the StatefulSet matches the spec",
            ),
        )
    } else {
        conditions::not_degraded(
            Desired::new(
                READY,
                false,
                "ReplicasNotReady",
                format!("{ready}/{desired} name servers ready; waiting for the StatefulSet"),
            ),
            Desired::new(
                PROGRESSING,
                true,
                "RollingOut",
                "pods are being created or updated",
            ),
        )
    };
    let old = ns.status.clone().unwrap_or_default();
    let status = NameserverStatus {
        observed_generation: ns.metadata.generation,
        replicas,
        ready_replicas: ready,
        addresses: b::addresses(&ns.name_any(), &namespace, desired),
        conditions: conditions::merge(
            &old.conditions,
            &conds,
            ns.metadata.generation,
            &conditions::now(),
        ),
    };
    write_status(&ctx, &*ns, &old, &status).await?;
    ctx.metrics.observe(KIND, started.elapsed());
    ctx.backoff.succeeded(&super::backoff::key(&*ns));
    Ok(Action::requeue(if settled { RESYNC } else { POLL }))
}

/// Error policy for the controller runtime.
pub fn error_policy(ns: Arc<Nameserver>, err: &Error, ctx: Arc<Context>) -> Action {
    super::on_error(KIND, &*ns, err, &ctx)
}
