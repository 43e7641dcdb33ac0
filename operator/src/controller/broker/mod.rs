//! Reconciles a `Broker`: storage tier (group StatefulSets, Services, PDBs, claim expansion,
//! drain-then-remove of surplus groups) and compute tier (proxy Deployment, client Service,
//! PDB, optional HPA), then reports each tier in status. With `spec.auth.enabled` it first
//! makes sure the super user's Secret exists and signs its admin calls with it
//! ([`super::super_user`]).
//!
//! This module holds the steps that talk to the API server and the admin API; what they saw
//! becomes status in the pure [`status::summarize`].

pub mod roll;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use tracing::{field, instrument};

use self::status::{Drain, DrainFailure, Expansion, Observed};
use super::internal_tls::{CaState, Refusal};
use super::progress::{deployment_progress, sts_progress};
use super::{
    admin_endpoint, apply_and_report, child_ref, delete_if_exists, write_status, Context, POLL,
    RESYNC,
};
use crate::admin::DrainState;
use crate::builders::broker as b;
use crate::builders::common::{selector_labels, selector_string, Parent};
use crate::builders::endpoint::{self, ServiceFacts};
use crate::builders::internal_tls as tls;
use crate::builders::quantity;
use crate::conditions::{self, DEGRADED};
use crate::crd::{Broker, BrokerStatus, GroupReplicationStatus, Nameserver, ServiceType};
use crate::Error;

/// Kind label for metrics and logs.
pub const KIND: &str = "Broker";
/// Annotation on a Broker: `"true"` removes surplus groups without draining them (emergencies
/// only: their unconsumed messages are lost with the group).
pub const SKIP_DRAIN_ANNOTATION: &str = "ferromq.io/skip-drain";

/// Status for a spec the operator will not act on: everything stays as it is, Degraded says why.
async fn refuse(
    ctx: &Context,
    broker: &Broker,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let old = broker.status.clone().unwrap_or_default();
    let status = BrokerStatus {
        observed_generation: broker.metadata.generation,
        conditions: conditions::merge(
            &old.conditions,
            &status::refused(reason, &message),
            broker.metadata.generation,
            &conditions::now(),
        ),
        ..old.clone()
    };
    if status != old {
        ctx.event(broker, EventType::Warning, reason, "Validate", message)
            .await;
    }
    write_status(ctx, broker, &old, &status).await?;
    Ok(Action::requeue(POLL))
}

fn claim_template_size(sts: &StatefulSet) -> Option<String> {
    let vcts = sts.spec.as_ref()?.volume_claim_templates.as_ref()?;
    let vct = vcts
        .iter()
        .find(|v| v.metadata.name.as_deref() == Some(b::DATA_VOLUME))?;
    Some(
        vct.spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")?
            .0
            .clone(),
    )
}

fn storage_of(pvc: &PersistentVolumeClaim) -> (Option<String>, Option<String>) {
    let req = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    let cap = pvc
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone());
    (req, cap)
}

fn smaller(a: Option<&str>, b: u128) -> bool {
    a.and_then(quantity::to_bytes).is_some_and(|x| x < b)
}

/// Strimzi-style growth: claim templates are immutable, so raise the request of each existing
/// claim of the broker's groups, provided its StorageClass allows expansion.
async fn expand_volumes(
    ctx: &Context,
    broker: &Broker,
    namespace: &str,
) -> Result<Expansion, Error> {
    let mut out = Expansion::default();
    let want_str = broker.spec.storage.volume.size.clone();
    let Some(want) = quantity::to_bytes(&want_str) else {
        return Ok(out);
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = selector_string(&selector_labels(&broker.name_any(), b::BROKER_COMPONENT));
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let mut allowed: BTreeMap<String, bool> = BTreeMap::new();
    for pvc in pvcs.list(&ListParams::default().labels(&selector)).await? {
        let name = pvc.name_any();
        let (req, cap) = storage_of(&pvc);
        if smaller(req.as_deref(), want) {
            let class = pvc
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let ok = match allowed.get(&class) {
                Some(ok) => *ok,
                None => {
                    let ok = if class.is_empty() {
                        false
                    } else {
                        classes
                            .get_opt(&class)
                            .await?
                            .and_then(|c| c.allow_volume_expansion)
                            .unwrap_or(false)
                    };
                    allowed.insert(class.clone(), ok);
                    ok
                }
            };
            if !ok {
                out.blocked.push((name, class));
                continue;
            }
            let patch = json!({ "spec": { "resources": { "requests": { "storage": want_str } } } });
            pvcs.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            ctx.event_related(
                broker,
                Some(child_ref::<PersistentVolumeClaim>(namespace, &name)),
                EventType::Normal,
                "VolumeExpansionRequested",
                "ExpandVolume",
                format!(
                    "raised claim {name} from {} to {want_str}",
                    req.unwrap_or_default()
                ),
            )
            .await;
            out.pending.push(name);
        } else if smaller(cap.as_deref(), want) {
            out.pending.push(name);
        }
    }
    Ok(out)
}

/// Drains, then removes, groups beyond `spec.storage.groups`. Returns the ones still there and
/// the last drain call that failed.
async fn remove_surplus_groups(
    ctx: &Context,
    broker: &Broker,
    namespace: &str,
    surplus: Vec<String>,
) -> Result<Drain, Error> {
    let skip = broker
        .annotations()
        .get(SKIP_DRAIN_ANNOTATION)
        .is_some_and(|v| v == "true");
    let endpoint = admin_endpoint(ctx, namespace, &broker.name_any());
    let mut drain = Drain::default();
    for group in surplus {
        let state = if skip {
            DrainState::Drained
        } else {
            match ctx.admin.drain_group(&endpoint, &group).await {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(%group, %endpoint, %error, reason = error.reason(), "drain call failed");
                    drain.failure = Some(DrainFailure {
                        group: group.clone(),
                        endpoint: endpoint.clone(),
                        error,
                    });
                    drain.draining.push(group);
                    continue;
                }
            }
        };
        match state {
            DrainState::InProgress { remaining_queues } => {
                tracing::info!(%group, remaining_queues, "group draining");
                drain.draining.push(group);
            }
            DrainState::Drained => {
                delete_if_exists::<StatefulSet>(&ctx.client, namespace, &group).await?;
                delete_if_exists::<Service>(&ctx.client, namespace, &group).await?;
                delete_if_exists::<PodDisruptionBudget>(&ctx.client, namespace, &group).await?;
                // Its certificate too: a leftover would keep an old cluster CA trusted.
                delete_if_exists::<Secret>(&ctx.client, namespace, &tls::group_secret(&group))
                    .await?;
                let how = if skip {
                    "without draining (skip-drain annotation)"
                } else {
                    "after draining"
                };
                ctx.event_related(
                    broker,
                    Some(child_ref::<StatefulSet>(namespace, &group)),
                    EventType::Normal,
                    "GroupRemoved",
                    "ScaleStorage",
                    format!("removed broker group {group} {how}; its claims are kept"),
                )
                .await;
            }
        }
    }
    Ok(drain)
}

/// Takes one step of a replicated group's roll ([`roll::next_step`]): deletes one outdated pod,
/// or asks the admin API to move the lead off an outdated leader.
async fn roll_group(
    ctx: &Context,
    broker: &Broker,
    namespace: &str,
    sts: &StatefulSet,
    replication: Option<&[GroupReplicationStatus]>,
) -> Result<(), Error> {
    let group = sts.name_any();
    let st = sts.status.clone().unwrap_or_default();
    let Some(revision) = st
        .update_revision
        .filter(|_| st.observed_generation == sts.metadata.generation)
    else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = selector_string(&b::group_selector(&broker.name_any(), &group));
    let found = pods.list(&ListParams::default().labels(&selector)).await?;
    let members = roll::members(&found.items, &revision);
    let view = replication.and_then(|r| r.iter().find(|g| g.group == group));
    let want = broker.spec.storage.replicas_per_group;
    match roll::next_step(&members, want, view) {
        roll::Step::Done => {}
        roll::Step::Wait(why) => tracing::debug!(%group, %why, "roll waits"),
        roll::Step::Restart { pod, leader } => {
            let why = if leader {
                "the leader, with no up-to-date in-sync member to hand the lead to"
            } else {
                "a follower"
            };
            pods.delete(&pod, &Default::default()).await?;
            ctx.event_related(
                broker,
                Some(child_ref::<Pod>(namespace, &pod)),
                EventType::Normal,
                "MemberRestarted",
                "RollStorage",
                format!("restarting {pod} ({why}) onto the new pod template"),
            )
            .await;
        }
        roll::Step::Switchover { from, to } => {
            let endpoint = admin_endpoint(ctx, namespace, &broker.name_any());
            let (kind, reason, message) = match ctx.admin.switchover(&endpoint, &group, to).await {
                Ok((leader, epoch)) => (
                    EventType::Normal,
                    "Switchover",
                    format!("moved the lead of {group} from replica {from} to {leader} (epoch {epoch}) before restarting the old leader"),
                ),
                Err(error) => (
                    EventType::Warning,
                    error.reason(),
                    format!("switchover of {group} from replica {from} to {to} through {endpoint} failed: {error}; the leader keeps its old pod until it succeeds"),
                ),
            };
            ctx.event_related(
                broker,
                Some(child_ref::<StatefulSet>(namespace, &group)),
                kind,
                reason,
                "RollStorage",
                message,
            )
            .await;
        }
    }
    Ok(())
}

/// `status.endpoint` from the client Service as applied; for a NodePort Service, the node
/// address of a ready proxy (the lowest, so it does not flap between reconciles).
async fn client_endpoint(
    ctx: &Context,
    broker: &Broker,
    namespace: &str,
    svc: &Service,
) -> Result<Option<String>, Error> {
    let facts = ServiceFacts::of(svc);
    let name = broker.name_any();
    let node_port = broker
        .spec
        .compute
        .service
        .as_ref()
        .is_some_and(|s| s.type_ == ServiceType::NodePort && s.advertised_address.is_none());
    let node_ip = if node_port {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let sel = selector_string(&selector_labels(&name, b::PROXY_COMPONENT));
        pods.list(&ListParams::default().labels(&sel))
            .await?
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.status.as_ref().and_then(|s| s.host_ip.clone()))
            .min()
    } else {
        None
    };
    Ok(endpoint::endpoint(
        broker,
        &name,
        namespace,
        &facts,
        node_ip.as_deref(),
    ))
}

/// With the Nameserver's internal TLS on: issues (or renews) every group's and the proxies'
/// certificates under its cluster CA and makes the operator's admin calls to this Broker dial
/// TLS, trusting that CA (and the `ca.crt` of `spec.compute.tls`'s Secret, when the proxies
/// serve the user's certificate). Off: admin calls dial plaintext.
async fn internal_certificates(
    ctx: &Context,
    broker: &Broker,
    namespace: &str,
    nameserver: &Nameserver,
) -> Result<Result<(), Refusal>, Error> {
    let name = broker.name_any();
    let endpoint = admin_endpoint(ctx, namespace, &name);
    let ca = match super::internal_tls::cluster_ca(ctx, nameserver, false).await? {
        CaState::Off => {
            ctx.admin.use_tls(&endpoint, None);
            return Ok(Ok(()));
        }
        CaState::Unusable(r) => return Ok(Err(r)),
        CaState::Ready(ca) => ca,
    };
    let parent = Parent::of(broker)?;
    let cluster = nameserver.name_any();
    for i in 0..broker.spec.storage.groups {
        let group = b::group_name(&name, i);
        let issued = super::internal_tls::ensure_leaf(
            ctx,
            broker,
            &parent,
            b::BROKER_COMPONENT,
            &cluster,
            &tls::group_secret(&group),
            &tls::service_names(&group, namespace, true),
            &ca,
        )
        .await?;
        if issued.is_err() {
            return Ok(issued);
        }
    }
    let issued = super::internal_tls::ensure_leaf(
        ctx,
        broker,
        &parent,
        b::PROXY_COMPONENT,
        &cluster,
        &tls::proxy_secret(&name),
        &tls::service_names(&name, namespace, false),
        &ca,
    )
    .await?;
    if issued.is_err() {
        return Ok(issued);
    }
    let mut trust = ca.bundle_pem();
    if let Some(client) = &broker.spec.compute.tls {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        if let Some(ca) = secrets
            .get_opt(&client.secret_name)
            .await?
            .and_then(|s| s.data)
            .and_then(|d| d.get(crate::pki::CA_CERT).cloned())
        {
            trust.push_str(&String::from_utf8_lossy(&ca.0));
        }
    }
    ctx.admin.use_tls(&endpoint, Some(trust));
    Ok(Ok(()))
}

/// One reconcile of `broker`.
#[instrument(skip(broker, ctx), fields(kind = KIND, namespace = field::Empty, name = field::Empty))]
pub async fn reconcile(broker: Arc<Broker>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = super::enter(&*broker);
    let name = broker.name_any();
    if broker.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    if let Some(action) = super::hold(&ctx, &*broker, broker.status.as_ref()).await? {
        return Ok(action);
    }

    // A key or value the broker would refuse stops here, before any pod rolls.
    if let Err(message) = b::check_config(&broker) {
        return refuse(&ctx, &broker, "InvalidConfig", message).await;
    }

    // With authentication the pods need the super user's Secret, and every admin call to the
    // cluster (replication state, drains, switchovers, and the Topics' and Users' calls) its
    // credential: registered first, so that a Broker refused for another reason below still
    // lets its Topics reach the cluster.
    if let super::super_user::SuperUser::Unusable { reason, message } =
        super::super_user::resolve(&ctx, &broker, true).await?
    {
        return refuse(&ctx, &broker, reason, message).await;
    }

    // What the schema cannot check: the referenced Nameserver and StorageClass must exist.
    let ns_ref = &broker.spec.nameserver_ref.name;
    let Some(nameserver) = Api::<Nameserver>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(ns_ref)
        .await?
    else {
        return refuse(&ctx, &broker, "NameserverNotFound",
            format!("Nameserver {ns_ref} does not exist in namespace {namespace}; create it or fix spec.nameserverRef.name")).await;
    };
    if broker.spec.storage.replicated() && !nameserver.spec.controller_enabled() {
        return refuse(&ctx, &broker, "ControllerRequired",
            format!("replicasPerGroup {} needs the replication controller, but Nameserver {ns_ref} does not run it; \
                     point spec.nameserverRef at a Nameserver with spec.controller.enabled: true (1, 3 or 5 replicas) or set replicasPerGroup to 1",
                broker.spec.storage.replicas_per_group)).await;
    }
    if let Some(class) = &broker.spec.storage.volume.storage_class_name {
        if Api::<StorageClass>::all(ctx.client.clone())
            .get_opt(class)
            .await?
            .is_none()
        {
            return refuse(&ctx, &broker, "StorageClassNotFound",
                format!("StorageClass {class} does not exist; create it or fix spec.storage.volume.storageClassName")).await;
        }
    }

    // Internal TLS follows the Nameserver: its CA issues each group's and the proxies'
    // certificates, and the operator's own admin calls verify the proxies against it.
    let internal_tls = nameserver.spec.internal_tls_enabled();
    if let Err(r) = internal_certificates(&ctx, &broker, &namespace, &nameserver).await? {
        return refuse(&ctx, &broker, r.reason, r.message).await;
    }
    let mut mounted = b::proxy_mounted_secrets(&broker, &name, internal_tls);
    for i in 0..broker.spec.storage.groups {
        mounted.extend(b::group_mounted_secrets(
            &broker,
            &name,
            &b::group_name(&name, i),
            internal_tls,
        ));
    }
    let secret_versions = super::internal_tls::secret_versions(&ctx, &namespace, &mounted).await?;

    let nameservers =
        crate::builders::nameserver::addresses(ns_ref, &namespace, nameserver.spec.replicas);
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let group_sel = selector_string(&selector_labels(&name, b::BROKER_COMPONENT));
    let existing = sts_api
        .list(&ListParams::default().labels(&group_sel))
        .await?;
    let mut existing_claim_sizes = BTreeMap::new();
    let mut surplus = BTreeSet::new();
    for sts in &existing {
        let sts_name = sts.name_any();
        match b::group_index(&name, &sts_name) {
            Some(i) if i < broker.spec.storage.groups => {
                if let Some(size) = claim_template_size(sts) {
                    existing_claim_sizes.insert(sts_name, size);
                }
            }
            Some(_) => {
                surplus.insert(sts_name);
            }
            None => {}
        }
    }

    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let service_facts = svc_api
        .get_opt(&name)
        .await?
        .map(|svc| ServiceFacts::of(&svc))
        .unwrap_or_default();
    let children = b::build(
        &broker,
        &b::BrokerInputs {
            nameservers,
            existing_claim_sizes,
            service: service_facts,
            internal_tls,
            secret_versions,
        },
    )?;
    let replication = if broker.spec.storage.replicated() {
        let endpoint = admin_endpoint(&ctx, &namespace, &name);
        match ctx.admin.replication(&endpoint).await {
            Ok(groups) => Some(groups),
            Err(error) => {
                // Pods still starting or no proxy yet: status says nothing rather than stale.
                tracing::debug!(%endpoint, %error, "replication state not readable");
                None
            }
        }
    } else {
        None
    };
    apply_and_report(&ctx, &*broker, &children.config).await?;
    // One group at a time: a group whose StatefulSet the spec would change is only touched
    // once every group before it is settled (all pods on the current template and ready), so
    // a bad image or config stops at the first group. New groups are created at once.
    let mut groups = Vec::with_capacity(children.groups.len());
    let mut waiting = Vec::new();
    let mut busy_group: Option<String> = None;
    for g in &children.groups {
        apply_and_report(&ctx, &*broker, &g.service).await?;
        apply_and_report(&ctx, &*broker, &g.pdb).await?;
        let current = existing.items.iter().find(|s| s.name_any() == g.name);
        let (sts, held) = match roll::turn(current, &g.statefulset, busy_group.as_deref()) {
            roll::Turn::Apply => (
                apply_and_report(&ctx, &*broker, &g.statefulset).await?,
                false,
            ),
            roll::Turn::Wait(current) => {
                tracing::debug!(group = %g.name, behind = ?busy_group, "group waits for its turn to roll");
                waiting.push(g.name.clone());
                (current.clone(), true)
            }
        };
        if broker.spec.storage.replicated() && !held {
            roll_group(&ctx, &broker, &namespace, &sts, replication.as_deref()).await?;
        }
        let mut progress = sts_progress(&sts);
        // A waiting group runs the previous template, which its status calls settled.
        progress.settled &= !held;
        if !progress.settled && busy_group.is_none() {
            busy_group = Some(g.name.clone());
        }
        groups.push(progress);
    }
    let deploy = apply_and_report(&ctx, &*broker, &children.proxy).await?;
    let client_service = apply_and_report(&ctx, &*broker, &children.client_service).await?;
    let endpoint = client_endpoint(&ctx, &broker, &namespace, &client_service).await?;
    apply_and_report(&ctx, &*broker, &children.proxy_pdb).await?;
    match &children.hpa {
        Some(hpa) => {
            apply_and_report(&ctx, &*broker, hpa).await?;
        }
        None => {
            let hpa_name = b::proxy_name(&name);
            if delete_if_exists::<HorizontalPodAutoscaler>(&ctx.client, &namespace, &hpa_name)
                .await?
            {
                ctx.event_related(
                    &*broker,
                    Some(child_ref::<HorizontalPodAutoscaler>(&namespace, &hpa_name)),
                    EventType::Normal,
                    "Deleted",
                    "Reconcile",
                    "deleted HorizontalPodAutoscaler (spec.compute.autoscaling unset)".into(),
                )
                .await;
            }
        }
    }
    let expansion = expand_volumes(&ctx, &broker, &namespace).await?;
    let drain =
        remove_surplus_groups(&ctx, &broker, &namespace, surplus.into_iter().collect()).await?;

    let summary = status::summarize(&Observed {
        broker: &broker,
        groups,
        proxies: deployment_progress(&deploy),
        expansion,
        drain,
        replication,
        waiting,
        endpoint,
    });
    let old = broker.status.clone().unwrap_or_default();
    let status = BrokerStatus {
        observed_generation: broker.metadata.generation,
        endpoint: summary.endpoint,
        storage: summary.storage,
        compute: summary.compute,
        conditions: conditions::merge(
            &old.conditions,
            &summary.conditions,
            broker.metadata.generation,
            &conditions::now(),
        ),
    };
    if let Some(c) = conditions::newly_true(&old.conditions, &status.conditions, DEGRADED) {
        ctx.event(
            &*broker,
            EventType::Warning,
            &c.reason,
            "Reconcile",
            c.message.clone(),
        )
        .await;
    }
    write_status(&ctx, &*broker, &old, &status).await?;
    ctx.metrics.observe(KIND, started.elapsed());
    ctx.backoff.succeeded(&super::backoff::key(&*broker));
    Ok(Action::requeue(if summary.busy { POLL } else { RESYNC }))
}

/// Error policy for the controller runtime.
pub fn error_policy(b: Arc<Broker>, err: &Error, ctx: Arc<Context>) -> Action {
    super::on_error(KIND, &*b, err, &ctx)
}
