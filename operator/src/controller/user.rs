//! Reconciles a `User` against the cluster's admin API, signed as the Broker's super user.
//!
//! Each reconcile: check the spec with the auth crate's parser (a bad entry changes nothing and
//! says which), keep the Secret (the secret key is generated once and kept; deleting the Secret
//! rotates it), create or update the user where the cluster lacks it or holds an older key, then
//! bring its policy to the spec one entry at a time ([`plan_policy`]). The finalizer
//! `ferromq.io/user-cleanup` deletes the user on the cluster before the resource goes, so its
//! credentials stop working; the Secret goes with the User by garbage collection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_auth::{PolicyEntry, Secret as SecretKey, UserKind as AuthKind};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;
use tracing::{field, instrument};

use super::super_user::{self, SuperUser};
use super::{admin_endpoint, apply_and_report, write_status, Context, RESYNC};
use crate::admin::AdminError;
use crate::builders::auth::{controlled_by, secret_key_of};
use crate::builders::common::GRPC_PORT;
use crate::builders::user::{self as b, plan_policy, PolicyStep};
use crate::conditions::{self, Desired, DEGRADED, PROGRESSING, READY};
use crate::crd::{Broker, User, UserStatus};
use crate::Error;

/// Kind label for metrics and logs.
pub const KIND: &str = "User";
/// Finalizer that deletes the user on the cluster before the resource goes.
pub const FINALIZER: &str = "ferromq.io/user-cleanup";
/// Retry period while the Broker, its super user or its admin API is unavailable.
const RETRY: Duration = Duration::from_secs(30);

/// The conditions of a User the operator cannot act on now; `needs_human` marks the ones only a
/// spec or Secret change can fix (Degraded), the rest are retried.
fn blocked(reason: &str, message: String, needs_human: bool) -> Vec<Desired> {
    vec![
        Desired::new(READY, false, reason, message.clone()),
        Desired::new(
            PROGRESSING,
            !needs_human,
            reason,
            if needs_human {
                "waiting for the spec or the Secret to change"
            } else {
                "retrying"
            },
        ),
        Desired::new(DEGRADED, true, reason, message),
    ]
}

/// Writes `status` (with `conds` merged in) unless nothing changed, and publishes one Warning
/// Event when the resource newly becomes Degraded.
async fn report(
    ctx: &Context,
    user: &User,
    mut status: UserStatus,
    conds: &[Desired],
) -> Result<(), Error> {
    let old = user.status.clone().unwrap_or_default();
    status.observed_generation = user.metadata.generation;
    status.conditions = conditions::merge(
        &old.conditions,
        conds,
        user.metadata.generation,
        &conditions::now(),
    );
    if let Some(c) = conditions::newly_true(&old.conditions, &status.conditions, DEGRADED) {
        ctx.event(
            user,
            EventType::Warning,
            &c.reason,
            "SyncUser",
            c.message.clone(),
        )
        .await;
    }
    write_status(ctx, user, &old, &status).await
}

/// The address clients of `broker` connect to: its reported endpoint, else its client Service.
fn client_endpoint(broker: &Broker, namespace: &str) -> String {
    broker
        .status
        .as_ref()
        .and_then(|s| s.endpoint.clone())
        .unwrap_or_else(|| format!("{}.{namespace}.svc:{GRPC_PORT}", broker.name_any()))
}

/// An admin failure as status: retried every [`RETRY`].
async fn admin_failed(
    ctx: &Context,
    user: &User,
    status: UserStatus,
    endpoint: &str,
    e: AdminError,
) -> Result<Action, Error> {
    ctx.metrics.error(KIND, e.reason());
    let msg = format!(
        "admin API at {endpoint}: {e}; retried every {}s",
        RETRY.as_secs()
    );
    report(ctx, user, status, &blocked(e.reason(), msg, false)).await?;
    Ok(Action::requeue(RETRY))
}

/// Runs the steps of a policy sync in order; the first failure stops it.
async fn sync_policy(
    ctx: &Context,
    endpoint: &str,
    user: &str,
    steps: &[PolicyStep],
) -> Result<(), AdminError> {
    for step in steps {
        match step {
            PolicyStep::Put(e) => ctx.admin.put_acl(endpoint, user, e).await?,
            PolicyStep::Remove { resource, effect } => {
                ctx.admin
                    .delete_acl(endpoint, user, resource, *effect)
                    .await?
            }
        }
    }
    Ok(())
}

/// The policy steps of one reconcile. When the Broker's group count changed since the last
/// write, every desired entry is put again: a group added since holds none of them, and reads
/// come from one group only.
fn steps_for(current: &[PolicyEntry], desired: &[PolicyEntry], regroup: bool) -> Vec<PolicyStep> {
    let mut steps = plan_policy(current, desired);
    if regroup {
        let mut again: Vec<&PolicyEntry> = desired
            .iter()
            .filter(|e| !steps.iter().any(|s| s == &PolicyStep::Put((*e).clone())))
            .collect();
        // Denies before allows, as in every sync.
        again.sort_by_key(|e| e.effect != ferromq_auth::Effect::Deny);
        steps.extend(again.into_iter().cloned().map(PolicyStep::Put));
    }
    steps
}

async fn apply_user(user: Arc<User>, ctx: &Context) -> Result<Action, Error> {
    let old = user.status.clone().unwrap_or_default();
    if let Some((conds, action)) = super::held(ctx, &*user, &old.conditions).await? {
        report(ctx, &user, old, &conds).await?;
        return Ok(action);
    }
    // A spec the broker would refuse changes nothing, on the cluster or in the Secret.
    let (access_key, desired) = match b::desired(&user) {
        Ok(d) => d,
        Err(invalid) => {
            report(
                ctx,
                &user,
                old,
                &blocked(invalid.reason, invalid.message, true),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let namespace = user.namespace().unwrap_or_default();
    let broker_name = &user.spec.broker_ref.name;
    let Some(broker) = Api::<Broker>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(broker_name)
        .await?
    else {
        let msg = format!("Broker {broker_name} does not exist in namespace {namespace}; create it or fix spec.brokerRef.name");
        report(ctx, &user, old, &blocked("BrokerNotFound", msg, false)).await?;
        return Ok(Action::requeue(RETRY));
    };
    match super_user::resolve(ctx, &broker, false).await? {
        SuperUser::Ready(su) if su.access_key == access_key => {
            let msg = format!("access key {access_key} is the super user of Broker {broker_name}; a User may not take it over: set spec.accessKey to another name");
            report(ctx, &user, old, &blocked("InvalidAccessKey", msg, true)).await?;
            return Ok(Action::await_change());
        }
        SuperUser::Ready(_) => {}
        SuperUser::Off => {
            let msg = format!("Broker {broker_name} runs without authentication (spec.auth.enabled is not true): its clients need no credentials and its admin API refuses users; enable spec.auth on the Broker");
            report(ctx, &user, old, &blocked("AuthDisabled", msg, true)).await?;
            return Ok(Action::requeue(RESYNC));
        }
        SuperUser::Unusable { reason, message } => {
            let msg = format!("Broker {broker_name}: {message}");
            report(ctx, &user, old, &blocked(reason, msg, false)).await?;
            return Ok(Action::requeue(RETRY));
        }
    }
    let endpoint = admin_endpoint(ctx, &namespace, broker_name);

    // The Secret: its key is kept across reconciles, generated when absent or unusable.
    let secret_name = b::secret_name(&user);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets.get_opt(&secret_name).await?;
    let uid = user.metadata.uid.clone().unwrap_or_default();
    if let Some(s) = &existing {
        if !controlled_by(s, &uid) {
            let msg = format!("Secret {secret_name} already exists and does not belong to this User; delete or rename it (the operator never takes over a Secret it did not make)");
            report(ctx, &user, old, &blocked("SecretConflict", msg, true)).await?;
            return Ok(Action::requeue(RETRY));
        }
    }
    let kept = existing.as_ref().and_then(|s| secret_key_of(s).ok());
    let regenerated = existing.is_some() && kept.is_none();
    let key = match kept {
        Some(k) => k,
        None => match SecretKey::generate() {
            Ok(k) => k,
            Err(e) => {
                report(
                    ctx,
                    &user,
                    old,
                    &blocked("SecretGenerationFailed", e.to_string(), false),
                )
                .await?;
                return Ok(Action::requeue(RETRY));
            }
        },
    };
    if regenerated {
        ctx.event(
            &*user,
            EventType::Warning,
            "SecretRegenerated",
            "SyncUser",
            format!("Secret {secret_name} held no usable secretKey; generated a new one"),
        )
        .await;
    }
    let wanted = b::user_secret(
        &user,
        &access_key,
        &key,
        &client_endpoint(&broker, &namespace),
    )?;
    let applied = apply_and_report(ctx, &*user, &wanted).await?;
    let secret_version = applied.resource_version();

    let mut status = UserStatus {
        access_key: old.access_key.clone(),
        secret_name: Some(secret_name.clone()),
        secret_version: old.secret_version.clone(),
        broker_groups: old.broker_groups,
        ..UserStatus::default()
    };

    // A changed access key (set or unset after creation) leaves the old user behind: remove it.
    if let Some(previous) = old.access_key.as_ref().filter(|p| **p != access_key) {
        if let Err(e) = ctx.admin.delete_user(&endpoint, previous).await {
            return admin_failed(ctx, &user, status, &endpoint, e).await;
        }
        ctx.event(
            &*user,
            EventType::Normal,
            "UserDeleted",
            "SyncUser",
            format!("deleted user {previous} on {endpoint}: the access key is now {access_key}"),
        )
        .await;
        status.access_key = None;
    }

    let groups = broker.spec.storage.groups;
    let regroup = status.broker_groups != Some(groups);
    let on_cluster = match ctx.admin.describe_user(&endpoint, &access_key).await {
        Ok(k) => k,
        Err(e) => return admin_failed(ctx, &user, status, &endpoint, e).await,
    };
    if on_cluster == Some(AuthKind::Super) {
        let msg = format!("the cluster already holds {access_key} as a super user; the operator never changes a super user: set spec.accessKey to another name or delete that user with `ferromq admin user delete`");
        report(ctx, &user, status, &blocked("UserConflict", msg, true)).await?;
        return Ok(Action::requeue(RETRY));
    }
    let push = on_cluster != Some(AuthKind::Normal)
        || status.access_key.as_deref() != Some(access_key.as_str())
        || status.secret_version != secret_version
        || regroup;
    if push {
        if let Err(e) = ctx
            .admin
            .upsert_user(&endpoint, &access_key, &key, user.spec.kind.as_auth())
            .await
        {
            return admin_failed(ctx, &user, status, &endpoint, e).await;
        }
        let what = match on_cluster {
            None => "created",
            Some(_) => "updated",
        };
        ctx.event(
            &*user,
            EventType::Normal,
            if on_cluster.is_none() {
                "UserCreated"
            } else {
                "UserUpdated"
            },
            "SyncUser",
            format!("{what} user {access_key} on {endpoint}; its credentials are in Secret {secret_name}"),
        )
        .await;
        status.access_key = Some(access_key.clone());
        status.secret_version = secret_version;
    }

    let current = match ctx.admin.describe_acl(&endpoint, &access_key).await {
        Ok(c) => c,
        Err(e) => return admin_failed(ctx, &user, status, &endpoint, e).await,
    };
    let steps = steps_for(&current, &desired, regroup);
    if let Err(e) = sync_policy(ctx, &endpoint, &access_key, &steps).await {
        return admin_failed(ctx, &user, status, &endpoint, e).await;
    }
    status.broker_groups = Some(groups);
    if !steps.is_empty() {
        ctx.event(
            &*user,
            EventType::Normal,
            "PolicySynced",
            "SyncUser",
            format!(
                "brought the policy of {access_key} to {} entries on {endpoint} ({} calls)",
                desired.len(),
                steps.len()
            ),
        )
        .await;
    }
    let conds = conditions::not_degraded(
        Desired::new(
            READY,
            true,
            "Synced",
            format!(
                "user {access_key} exists on the cluster with the {} policy entries of the spec; credentials in Secret {secret_name}",
                desired.len()
            ),
        ),
        Desired::new(PROGRESSING, false, "Synced", ""),
    );
    report(ctx, &user, status, &conds).await?;
    Ok(Action::requeue(RESYNC))
}

async fn cleanup_user(user: Arc<User>, ctx: &Context) -> Result<Action, Error> {
    let namespace = user.namespace().unwrap_or_default();
    let broker_name = &user.spec.broker_ref.name;
    let Some(broker) = Api::<Broker>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(broker_name)
        .await?
    else {
        // The cluster the user lived on is gone, so is the user.
        tracing::info!(broker = %broker_name, "broker gone; releasing finalizer");
        return Ok(Action::await_change());
    };
    let names: Vec<String> = user
        .status
        .as_ref()
        .and_then(|s| s.access_key.clone())
        .into_iter()
        .chain(std::iter::once(b::access_key(&user)))
        .collect();
    match super_user::resolve(ctx, &broker, false).await? {
        SuperUser::Ready(_) => {}
        SuperUser::Off => {
            // The broker refuses user calls while authentication is off; its store keeps the
            // user, which would work again if authentication came back on.
            ctx.event(
                &*user,
                EventType::Warning,
                "UserNotDeleted",
                "DeleteUser",
                format!("Broker {broker_name} runs without authentication, so user {} could not be deleted on the cluster; delete it with `ferromq admin user delete` before turning authentication back on", names.join(", ")),
            )
            .await;
            return Ok(Action::await_change());
        }
        SuperUser::Unusable { reason, message } => {
            return Err(Error::Admin {
                endpoint: admin_endpoint(ctx, &namespace, broker_name),
                source: AdminError::Unsendable {
                    detail: format!("user deletion without the super user ({reason}): {message}"),
                },
            });
        }
    }
    let endpoint = admin_endpoint(ctx, &namespace, broker_name);
    let mut deleted: Vec<&str> = Vec::new();
    let admin_error = |source| Error::Admin {
        endpoint: endpoint.clone(),
        source,
    };
    for name in &names {
        if deleted.contains(&name.as_str()) {
            continue;
        }
        // Never a super user (the Broker's own, or one made by hand under this name): the
        // operator made only normal users.
        let kind = ctx
            .admin
            .describe_user(&endpoint, name)
            .await
            .map_err(admin_error)?;
        // A user missing from the group that answered may still be on another: delete anyway
        // (a missing user is no error).
        if kind == Some(AuthKind::Super) {
            continue;
        }
        ctx.admin
            .delete_user(&endpoint, name)
            .await
            .map_err(admin_error)?;
        deleted.push(name);
    }
    ctx.event(
        &*user,
        EventType::Normal,
        "UserDeleted",
        "DeleteUser",
        format!(
            "deleted user {} on {endpoint}; its credentials no longer work",
            deleted.join(", ")
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// One reconcile of `user`: adds the finalizer, syncs the user, or deletes it on removal.
#[instrument(skip(user, ctx), fields(kind = KIND, namespace = field::Empty, name = field::Empty))]
pub async fn reconcile(user: Arc<User>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = super::enter(&*user);
    let api: Api<User> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = super::backoff::key(&*user);
    let result = finalizer(&api, FINALIZER, user, |event| async {
        match event {
            Finalizer::Apply(u) => apply_user(u, &ctx).await,
            Finalizer::Cleanup(u) => cleanup_user(u, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe(KIND, started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Error policy for the controller runtime.
pub fn error_policy(u: Arc<User>, err: &Error, ctx: Arc<Context>) -> Action {
    super::on_error(KIND, &*u, err, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(resource: &str, actions: &str, effect: &str) -> PolicyEntry {
        PolicyEntry::parse(resource, actions, effect, &[]).unwrap()
    }

    #[test]
    fn a_new_broker_group_gets_every_entry_again_denies_first() {
        let desired = vec![
            entry("topic:a", "publish", "allow"),
            entry("topic:a-secret", "publish", "deny"),
        ];
        assert_eq!(steps_for(&desired, &desired, false), vec![]);
        assert_eq!(
            steps_for(&desired, &desired, true),
            vec![
                PolicyStep::Put(desired[1].clone()),
                PolicyStep::Put(desired[0].clone())
            ]
        );
        // An entry the plan already puts is not put twice.
        let steps = steps_for(&desired[..1], &desired, true);
        assert_eq!(
            steps,
            vec![
                PolicyStep::Put(desired[1].clone()),
                PolicyStep::Put(desired[0].clone())
            ]
        );
    }

    #[test]
    fn blocked_conditions_say_whether_a_human_is_needed() {
        let human = blocked("InvalidPolicy", "spec.policies[0]: ...".into(), true);
        assert!(!human[1].status);
        assert!(human[2].status);
        let retry = blocked("AdminApiUnavailable", "down".into(), false);
        assert!(retry[1].status);
    }
}
