//! Reconciles a `Topic` against the cluster's admin API. The finalizer
//! `ferromq.io/topic-cleanup` keeps the resource until the topic is deleted on the cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;
use serde_json::json;
use tracing::{field, instrument};

use super::{admin_endpoint, Context, POLL, RESYNC};
use crate::conditions::{self, Desired, DEGRADED, PROGRESSING, READY};
use crate::crd::{Broker, Topic, TopicClusterState, TopicStatus};
use crate::Error;

/// Kind label for metrics and logs.
pub const KIND: &str = "Topic";
/// Finalizer that deletes the topic on the cluster before the resource goes.
pub const FINALIZER: &str = "ferromq.io/topic-cleanup";
/// Retry period while the broker or its admin API is unavailable.
const RETRY: Duration = Duration::from_secs(30);

/// The topic as the spec wants it on the cluster. A retention is written the way the cluster
/// reports it (`24h` as `1d`), so equal durations compare equal; one that does not parse is
/// left out here and refused by [`spec_problem`] before anything is sent.
pub fn desired_state(topic: &Topic) -> TopicClusterState {
    TopicClusterState {
        name: topic.spec.name.clone().unwrap_or_else(|| topic.name_any()),
        queues: topic.spec.queues,
        message_type: topic.spec.message_type,
        permission: topic.spec.permission,
        retention: topic
            .spec
            .retention
            .as_deref()
            .and_then(|r| ferromq_config::parse_retention_ms("retention", r).ok())
            .map(|ms| ferromq_config::format_duration(Duration::from_millis(ms))),
    }
}

/// What in the spec the cluster could not take, said for the Topic's conditions (the schema
/// cannot check a duration's syntax).
pub fn spec_problem(topic: &Topic) -> Option<String> {
    let r = topic.spec.retention.as_deref()?;
    ferromq_config::parse_retention_ms("retention", r)
        .err()
        .map(|e| {
            format!(
                "spec.retention: {}; give a duration such as 24h, 7d or 90m, or remove it for the Broker's retention",
                e.reason
            )
        })
}

/// Whether the cluster must be written: the topic is missing or differs from the spec (any
/// field, retention included: a retention removed from the spec goes back to the brokers'),
/// or broker groups added since hold none of it.
pub fn needs_write(
    current: Option<&TopicClusterState>,
    want: &TopicClusterState,
    joiners: &[String],
) -> bool {
    current != Some(want) || !joiners.is_empty()
}

async fn set_status(
    ctx: &Context,
    topic: &Topic,
    cluster: Option<TopicClusterState>,
    conds: &[Desired],
) -> Result<(), Error> {
    let old = topic.status.clone().unwrap_or_default();
    let status = TopicStatus {
        observed_generation: topic.metadata.generation,
        cluster,
        conditions: conditions::merge(
            &old.conditions,
            conds,
            topic.metadata.generation,
            &conditions::now(),
        ),
    };
    if status != old {
        let api: Api<Topic> =
            Api::namespaced(ctx.client.clone(), &topic.namespace().unwrap_or_default());
        api.patch_status(
            &topic.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    Ok(())
}

/// Conditions while the admin API cannot do what the Topic asks; `reason` is the admin error's
/// ([`crate::admin::AdminError::reason`]) or `BrokerNotFound`.
fn unavailable(reason: &str, message: String) -> Vec<Desired> {
    vec![
        Desired::new(READY, false, reason, message.clone()),
        Desired::new(PROGRESSING, true, reason, "retrying"),
        Desired::new(DEGRADED, true, reason, message),
    ]
}

async fn apply_topic(topic: Arc<Topic>, ctx: &Context) -> Result<Action, Error> {
    let old = topic.status.clone().unwrap_or_default();
    if let Some((conds, action)) = super::held(ctx, &*topic, &old.conditions).await? {
        // Held: no admin calls for changes (deletion still goes through the finalizer).
        set_status(ctx, &topic, old.cluster.clone(), &conds).await?;
        return Ok(action);
    }
    let namespace = topic.namespace().unwrap_or_default();
    let broker_name = &topic.spec.broker_ref.name;
    let brokers: Api<Broker> = Api::namespaced(ctx.client.clone(), &namespace);
    if brokers.get_opt(broker_name).await?.is_none() {
        let msg = format!("Broker {broker_name} does not exist in namespace {namespace}; create it or fix spec.brokerRef.name");
        set_status(ctx, &topic, None, &unavailable("BrokerNotFound", msg)).await?;
        return Ok(Action::requeue(RETRY));
    }
    if let Some(msg) = spec_problem(&topic) {
        ctx.metrics.error(KIND, "InvalidRetention");
        let conds = [
            Desired::new(READY, false, "InvalidRetention", msg.clone()),
            Desired::new(
                PROGRESSING,
                false,
                "InvalidRetention",
                "waiting for a fixed spec",
            ),
            Desired::new(DEGRADED, true, "InvalidRetention", msg),
        ];
        set_status(ctx, &topic, old.cluster.clone(), &conds).await?;
        return Ok(Action::await_change());
    }
    let endpoint = admin_endpoint(ctx, &namespace, broker_name);
    let want = desired_state(&topic);
    let current = match ctx.admin.describe_topic(&endpoint, &want.name).await {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics.error(KIND, e.reason());
            let msg = format!(
                "admin API at {endpoint}: {e}; the topic is retried every {}s",
                RETRY.as_secs()
            );
            set_status(
                ctx,
                &topic,
                topic.status.as_ref().and_then(|s| s.cluster.clone()),
                &unavailable(e.reason(), msg),
            )
            .await?;
            return Ok(Action::requeue(RETRY));
        }
    };
    if let Some(cur) = &current {
        if cur.message_type != want.message_type {
            let msg = format!(
                "the cluster already holds topic {} with message type {}, not {}; a topic's type cannot change: delete the topic on the cluster or rename it",
                want.name, cur.message_type.as_str(), want.message_type.as_str());
            let conds = [
                Desired::new(READY, false, "MessageTypeConflict", msg.clone()),
                Desired::new(
                    PROGRESSING,
                    false,
                    "MessageTypeConflict",
                    "waiting for a human",
                ),
                Desired::new(DEGRADED, true, "MessageTypeConflict", msg),
            ];
            set_status(ctx, &topic, current.clone(), &conds).await?;
            return Ok(Action::requeue(RESYNC));
        }
    }
    // Broker groups added after the topic was made hold none of its queues until the topic is
    // updated (the proxy then creates it there too); a failed look-up only delays that.
    let joiners = match &current {
        Some(_) => ctx
            .admin
            .groups_without_topic(&endpoint, &want.name)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot tell which broker groups lack the topic");
                Vec::new()
            }),
        None => Vec::new(),
    };
    let mut held = current.clone();
    if needs_write(current.as_ref(), &want, &joiners) {
        if let Err(e) = ctx.admin.upsert_topic(&endpoint, &want).await {
            ctx.metrics.error(KIND, e.reason());
            let msg = format!(
                "admin API at {endpoint} did not take the topic: {e}; retried every {}s",
                RETRY.as_secs()
            );
            set_status(ctx, &topic, current, &unavailable(e.reason(), msg)).await?;
            return Ok(Action::requeue(RETRY));
        }
        let settings = format!(
            "{} queues, {}, {}, retention {}",
            want.queues,
            want.message_type.as_str(),
            want.permission.as_str(),
            want.retention.as_deref().unwrap_or("of the Broker")
        );
        let (reason, note) = match (&current, joiners.is_empty()) {
            (None, _) => (
                "TopicCreated",
                format!("created topic {} on {endpoint}: {settings}", want.name),
            ),
            (Some(_), true) => (
                "TopicUpdated",
                format!("updated topic {} on {endpoint}: {settings}", want.name),
            ),
            (Some(_), false) => (
                "TopicExtended",
                format!(
                    "extended topic {} on {endpoint} to broker groups {}: {settings}",
                    want.name,
                    joiners.join(", ")
                ),
            ),
        };
        ctx.event(&*topic, EventType::Normal, reason, "SyncTopic", note)
            .await;
        held = match ctx.admin.describe_topic(&endpoint, &want.name).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "topic written but describe failed");
                Some(want.clone())
            }
        };
    }
    let in_sync = held.as_ref() == Some(&want);
    let conds = if in_sync {
        conditions::not_degraded(
            Desired::new(
                READY,
                true,
                "Synced",
                format!("the cluster holds topic {} as specified", want.name),
            ),
            Desired::new(PROGRESSING, false, "Synced", ""),
        )
    } else {
        conditions::not_degraded(
            Desired::new(
                READY,
                false,
                "NotYetVisible",
                "the cluster does not report the topic as specified yet",
            ),
            Desired::new(PROGRESSING, true, "Syncing", ""),
        )
    };
    set_status(ctx, &topic, held, &conds).await?;
    // After an extension, look again soon: a proxy that did not know the new group yet
    // extended nothing, and the next round asks again.
    Ok(Action::requeue(if !in_sync {
        RETRY
    } else if !joiners.is_empty() {
        POLL
    } else {
        RESYNC
    }))
}

async fn cleanup_topic(topic: Arc<Topic>, ctx: &Context) -> Result<Action, Error> {
    let namespace = topic.namespace().unwrap_or_default();
    let broker_name = &topic.spec.broker_ref.name;
    let want = desired_state(&topic);
    let brokers: Api<Broker> = Api::namespaced(ctx.client.clone(), &namespace);
    if brokers.get_opt(broker_name).await?.is_none() {
        // The cluster the topic lived on is gone, so is the topic.
        tracing::info!(topic = %want.name, broker = %broker_name, "broker gone; releasing finalizer");
        return Ok(Action::await_change());
    }
    let endpoint = admin_endpoint(ctx, &namespace, broker_name);
    ctx.admin
        .delete_topic(&endpoint, &want.name)
        .await
        .map_err(|source| Error::Admin {
            endpoint: endpoint.clone(),
            source,
        })?;
    ctx.event(
        &*topic,
        EventType::Normal,
        "TopicDeleted",
        "DeleteTopic",
        format!("deleted topic {} on {endpoint}", want.name),
    )
    .await;
    Ok(Action::await_change())
}

/// One reconcile of `topic`: adds the finalizer, syncs the topic, or deletes it on removal.
#[instrument(skip(topic, ctx), fields(kind = KIND, namespace = field::Empty, name = field::Empty))]
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = super::enter(&*topic);
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = super::backoff::key(&*topic);
    let result = finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            Finalizer::Apply(t) => apply_topic(t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup_topic(t, &ctx).await,
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
pub fn error_policy(t: Arc<Topic>, err: &Error, ctx: Arc<Context>) -> Action {
    super::on_error(KIND, &*t, err, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BrokerRef, MessageType, Permission, TopicSpec};

    fn topic(retention: Option<&str>) -> Topic {
        Topic::new(
            "orders",
            TopicSpec {
                broker_ref: BrokerRef {
                    name: "demo".into(),
                },
                name: None,
                queues: 8,
                message_type: MessageType::Normal,
                permission: Permission::ReadWrite,
                retention: retention.map(str::to_string),
            },
        )
    }

    #[test]
    fn a_retention_change_is_written_and_an_equal_one_is_not() {
        let held = desired_state(&topic(Some("24h")));
        assert_eq!(held.retention.as_deref(), Some("1d"));
        // The same duration written another way changes nothing on the cluster.
        assert!(!needs_write(
            Some(&held),
            &desired_state(&topic(Some("1d"))),
            &[]
        ));
        assert!(!needs_write(
            Some(&held),
            &desired_state(&topic(Some("1440m"))),
            &[]
        ));
        // A shorter one, or none (back to the Broker's), is an update.
        assert!(needs_write(
            Some(&held),
            &desired_state(&topic(Some("12h"))),
            &[]
        ));
        let unset = desired_state(&topic(None));
        assert_eq!(unset.retention, None);
        assert!(needs_write(Some(&held), &unset, &[]));
        // A missing topic is created with it; a joined group is written even when equal.
        assert!(needs_write(None, &held, &[]));
        assert!(needs_write(Some(&held), &held, &["g1".to_string()]));
    }

    #[test]
    fn an_unreadable_retention_is_refused_before_any_admin_call() {
        for bad in ["soon", "0", "0s", "-1h", "500us"] {
            let msg = spec_problem(&topic(Some(bad))).expect(bad);
            assert!(msg.starts_with("spec.retention: "), "{msg}");
        }
        assert_eq!(spec_problem(&topic(Some("7d"))), None);
        assert_eq!(spec_problem(&topic(None)), None);
    }
}
