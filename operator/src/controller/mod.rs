//! Controllers: one reconcile function per kind, the shared [`Context`], and the one
//! server-side-apply step every reconcile uses.
//!
//! A reconcile reads what it needs, calls the pure builders in [`crate::builders`], applies the
//! result with [`apply_and_report`], derives status from what it observed (for a Broker in the
//! pure [`broker::status`]), then writes status with [`write_status`] only when it differs from
//! what is stored, so a second reconcile of an unchanged world writes nothing.

pub mod backoff;
pub mod broker;
pub mod internal_tls;
pub mod nameserver;
pub mod progress;
pub mod schema;
pub mod super_user;
pub mod topic;
pub mod user;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::ClusterAdmin;
use crate::builders::common::MANAGER;
use crate::metrics::Metrics;
use crate::Error;

/// Shared state handed to every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// The broker admin API.
    pub admin: Arc<dyn ClusterAdmin>,
    /// When set, every admin call goes to this `host:port` instead of the Broker's client
    /// Service: for running the operator outside the cluster (tests, development).
    pub admin_address_override: Option<String>,
    /// Retry delays of failing objects.
    pub backoff: backoff::Backoff,
    /// Whether the installed CRDs are new enough for this operator.
    pub schema: schema::SchemaGuard,
}

impl Context {
    /// Builds a context reporting Events as `ferromq-operator` (instance `instance`).
    pub fn new(
        client: Client,
        admin: Arc<dyn ClusterAdmin>,
        admin_address_override: Option<String>,
        instance: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            admin,
            admin_address_override,
            backoff: backoff::Backoff::default(),
            schema: schema::SchemaGuard::default(),
        }
    }

    /// Publishes an Event about `obj`. Failing to publish never fails the reconcile.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.event_related(obj, None, type_, reason, action, note)
            .await;
    }

    /// Publishes an Event about `obj` concerning the child `related`. The recorder folds
    /// Events with the same reason, action and objects into one series, so naming the child
    /// keeps "created StatefulSet a" and "created StatefulSet b" apart.
    pub async fn event_related<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// What an apply did, for Events and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The object did not exist.
    Created,
    /// The object existed and the apply changed it (spec drift repaired or spec changed).
    Updated,
    /// Nothing changed.
    Unchanged,
}

/// Server-side applies `obj` (force: the operator owns the fields it sets) and reports whether
/// anything changed, judged by `resourceVersion`.
pub async fn apply<K>(client: &Client, obj: &K) -> Result<(K, Applied), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let before = api.get_opt(&name).await?;
    let after = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
    let outcome = match before {
        None => Applied::Created,
        Some(b) if b.resource_version() != after.resource_version() => Applied::Updated,
        Some(_) => Applied::Unchanged,
    };
    if outcome != Applied::Unchanged {
        tracing::info!(kind = %K::kind(&()), %name, ?outcome, "applied");
    }
    Ok((after, outcome))
}

/// A reference to a child by kind, for Events about it (also after it is deleted).
pub fn child_ref<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..ObjectReference::default()
    }
}

/// Applies `child` (see [`apply`]) and, when that created or changed it, publishes a Normal
/// Event on `parent` naming the child: the step every child object of every kind goes through.
pub async fn apply_and_report<P, C>(ctx: &Context, parent: &P, child: &C) -> Result<C, Error>
where
    P: Resource<DynamicType = ()>,
    C: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let (applied, outcome) = apply(&ctx.client, child).await?;
    let (reason, verb) = match outcome {
        Applied::Created => ("Created", "created"),
        Applied::Updated => ("Updated", "updated"),
        Applied::Unchanged => return Ok(applied),
    };
    let name = applied.meta().name.clone().unwrap_or_default();
    let namespace = applied.meta().namespace.clone().unwrap_or_default();
    let note = format!("{verb} {} {name}", C::kind(&()));
    ctx.event_related(
        parent,
        Some(child_ref::<C>(&namespace, &name)),
        EventType::Normal,
        reason,
        "Reconcile",
        note,
    )
    .await;
    Ok(applied)
}

/// Writes `status` as the status of `obj` unless it equals `old` (what `obj` carries), so a
/// reconcile of an unchanged world writes nothing.
pub async fn write_status<K, S>(ctx: &Context, obj: &K, old: &S, status: &S) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
    S: Serialize + PartialEq,
{
    if status == old {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    api.patch_status(
        obj.meta().name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status_patch(old, status)? })),
    )
    .await?;
    Ok(())
}

/// The merge patch from `old` to `new`: `new` itself, plus an explicit null for every field
/// `old` had and `new` leaves out (fields that are `None` are not serialized, and a merge patch
/// keeps what it does not mention, so a field that went away would otherwise stay forever).
fn status_patch<S: Serialize>(old: &S, new: &S) -> Result<serde_json::Value, serde_json::Error> {
    let mut patch = serde_json::to_value(new)?;
    if let (serde_json::Value::Object(was), serde_json::Value::Object(now)) =
        (serde_json::to_value(old)?, &mut patch)
    {
        for key in was.keys() {
            if !now.contains_key(key) {
                now.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
    Ok(patch)
}

/// Deletes `name` if it exists; true when something was deleted.
pub async fn delete_if_exists<K>(client: &Client, ns: &str, name: &str) -> Result<bool, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Records a failed reconcile of `obj` in metrics and logs and schedules its retry with
/// per-object exponential back-off; used by every kind's error policy.
pub fn on_error<K: Resource<DynamicType = ()>>(
    kind: &str,
    obj: &K,
    err: &Error,
    ctx: &Context,
) -> Action {
    let delay = ctx.backoff.failed(&backoff::key(obj));
    tracing::warn!(kind, name = %obj.meta().name.as_deref().unwrap_or_default(), error = %err,
        reason = err.reason(), retry_in_s = delay.as_secs(), "reconcile failed");
    ctx.metrics.error(kind, err.reason());
    Action::requeue(delay)
}

/// Annotation on any FerroMQ resource: `"true"` stops the operator from changing anything for
/// it (children, cluster state) until removed; status says so. For manual interventions.
pub const PAUSED_ANNOTATION: &str = "ferromq.io/paused";

/// True when `obj` carries `ferromq.io/paused: "true"`.
pub fn is_paused<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSED_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The conditions of a paused resource.
pub fn paused_conditions(existing: &[Condition]) -> Vec<crate::conditions::Desired> {
    use crate::conditions::{Desired, DEGRADED, PROGRESSING, READY};
    let ready = existing.iter().find(|c| c.type_ == READY);
    let degraded = existing.iter().find(|c| c.type_ == DEGRADED);
    vec![
        // Readiness of what runs is unchanged by pausing; keep the last observation.
        match ready {
            Some(c) => Desired::new(READY, c.status == "True", c.reason.clone(), c.message.clone()),
            None => Desired::new(READY, false, "Paused", "never reconciled"),
        },
        Desired::new(PROGRESSING, false, "Paused", format!("annotation {PAUSED_ANNOTATION}=true: the operator changes nothing until it is removed")),
        match degraded {
            Some(c) => Desired::new(DEGRADED, c.status == "True", c.reason.clone(), c.message.clone()),
            None => Desired::new(DEGRADED, false, "AsExpected", ""),
        },
    ]
}

/// Why the operator must leave `obj` alone right now, as the conditions to report, and when to
/// look again: installed CRDs older than this operator (re-checked every
/// [`schema::SchemaGuard::REFRESH`]), or the pause annotation (until the object changes).
pub async fn held<K: Resource>(
    ctx: &Context,
    obj: &K,
    existing: &[Condition],
) -> Result<Option<(Vec<crate::conditions::Desired>, Action)>, Error> {
    use crate::conditions::{Desired, DEGRADED, PROGRESSING, READY};
    if let Some(msg) = ctx.schema.outdated(&ctx.client).await? {
        let conds = vec![
            Desired::new(READY, false, "CRDsOutdated", msg.clone()),
            Desired::new(
                PROGRESSING,
                false,
                "CRDsOutdated",
                "waiting for the CRDs to be upgraded",
            ),
            Desired::new(DEGRADED, true, "CRDsOutdated", msg),
        ];
        return Ok(Some((conds, Action::requeue(schema::SchemaGuard::REFRESH))));
    }
    if is_paused(obj) {
        return Ok(Some((paused_conditions(existing), Action::await_change())));
    }
    Ok(None)
}

/// A status holding the standard conditions, so that [`hold`] can record them for any kind.
pub trait ConditionedStatus: Clone + Default + PartialEq + Serialize {
    /// `Ready`, `Progressing`, `Degraded`.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// The generation the status was last computed from.
    fn observed_generation(&self) -> Option<i64>;
}

impl ConditionedStatus for crate::crd::BrokerStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
}

impl ConditionedStatus for crate::crd::UserStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
}

impl ConditionedStatus for crate::crd::NameserverStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
}

/// When the operator must leave `obj` alone ([`held`]), records why in its conditions (the rest
/// of `status`, the last observation, stays) and returns when to look again.
pub async fn hold<K, S>(ctx: &Context, obj: &K, status: Option<&S>) -> Result<Option<Action>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
    S: ConditionedStatus,
{
    let old = status.cloned().unwrap_or_default();
    let mut new = old.clone();
    let existing = std::mem::take(new.conditions_mut());
    let Some((conds, action)) = held(ctx, obj, &existing).await? else {
        return Ok(None);
    };
    *new.conditions_mut() = crate::conditions::merge(
        &existing,
        &conds,
        old.observed_generation(),
        &crate::conditions::now(),
    );
    write_status(ctx, obj, &old, &new).await?;
    Ok(Some(action))
}

/// Records `obj`'s namespace and name on the current reconcile span (declared empty by each
/// kind's `#[instrument]`) and returns the namespace.
pub fn enter<K: Resource>(obj: &K) -> String {
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    tracing::Span::current()
        .record("namespace", namespace.as_str())
        .record("name", obj.meta().name.as_deref().unwrap_or_default());
    namespace
}

/// Re-check period when nothing is pending (catches drift the watches missed).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Re-check period while something is in progress (roll-out, drain, expansion).
pub const POLL: Duration = Duration::from_secs(10);

/// Where admin calls for Broker `name` in `namespace` go: the operator's override when set,
/// else the Broker's client Service.
pub fn admin_endpoint(ctx: &Context, namespace: &str, name: &str) -> String {
    match &ctx.admin_address_override {
        Some(addr) => addr.clone(),
        None => format!(
            "{name}.{namespace}.svc:{}",
            crate::builders::common::GRPC_PORT
        ),
    }
}

#[cfg(test)]
mod status_patch_tests {
    use super::status_patch;
    use serde::Serialize;

    #[derive(Serialize)]
    struct St {
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        ready: bool,
    }

    #[test]
    fn a_field_that_went_away_is_nulled_and_the_rest_is_kept() {
        let old = St {
            endpoint: Some("demo.ns.svc:8081".into()),
            ready: true,
        };
        let new = St {
            endpoint: None,
            ready: false,
        };
        let p = status_patch(&old, &new).expect("patch");
        assert_eq!(p, serde_json::json!({ "endpoint": null, "ready": false }));
        let p = status_patch(&new, &old).expect("patch");
        assert_eq!(
            p,
            serde_json::json!({ "endpoint": "demo.ns.svc:8081", "ready": true })
        );
    }
}
