//! Roll-out tests against kube-apiserver **plus kube-controller-manager**, with this file
//! playing the kubelet: it binds every new pod to a fake node, reports it Running and Ready,
//! and finishes graceful deletions. So the StatefulSet and Deployment controllers really create,
//! replace and remove pods, and the garbage collector really follows owner references.
//!
//! `#[ignore]`d in a plain `cargo test`; tests/suites/60-operator.sh starts a second control
//! plane with `--with-controller-manager` and runs them with `FERROMQ_TEST_KCM_KUBECONFIG` set.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;

use ferromq_operator::admin::MemoryAdmin;
use ferromq_operator::controller::{self, Context};
use ferromq_operator::crd::{Broker, GroupReplicationStatus, Nameserver};
use ferromq_operator::metrics::Metrics;

async fn client() -> Result<Client> {
    support::client_from_env("FERROMQ_TEST_KCM_KUBECONFIG").await
}

/// What the fake kubelet did, in order: `("ready" | "deleted", pod name)`.
type Journal = Arc<Mutex<Vec<(String, String)>>>;

fn journal_push(j: &Journal, what: &str, pod: &str) {
    j.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((what.to_string(), pod.to_string()));
}

fn journal_of(j: &Journal, what: &str, prefix: &str) -> Vec<String> {
    j.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|(w, p)| w == what && p.starts_with(prefix))
        .map(|(_, p)| p.clone())
        .collect()
}

/// One pass of the fake kubelet over `ns`: bind, start and finish deleting pods.
async fn kubelet_pass(pods: &Api<Pod>, journal: &Journal, next_ip: &mut u32) -> Result<()> {
    for pod in pods.list(&ListParams::default()).await? {
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            // The kubelet would stop the containers, then confirm with a zero-grace delete.
            match pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => journal_push(journal, "deleted", &name),
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        if !bound {
            let binding = json!({ "apiVersion": "v1", "kind": "Binding", "metadata": { "name": name },
                "target": { "apiVersion": "v1", "kind": "Node", "name": "fake-node" } });
            if let Err(e) = pods
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                tracing_like(&format!("bind {name}: {e}"));
            }
            continue;
        }
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            *next_ip += 1;
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let containers: Vec<_> = pod
                .spec
                .as_ref()
                .map(|s| s.containers.clone())
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    json!({
                "name": c.name, "ready": true, "started": true, "restartCount": 0,
                "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "state": { "running": { "startedAt": now } } })
                })
                .collect();
            let status = json!({ "status": {
                "phase": "Running", "podIP": format!("10.244.{}.{}", *next_ip / 250, *next_ip % 250 + 1),
                "hostIP": "127.0.0.1", "startTime": now, "containerStatuses": containers,
                "conditions": [
                    { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
                    { "type": "Initialized", "status": "True", "lastTransitionTime": now },
                    { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
                    { "type": "Ready", "status": "True", "lastTransitionTime": now } ] } });
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await?;
            journal_push(journal, "ready", &name);
        }
    }
    Ok(())
}

fn tracing_like(msg: &str) {
    eprintln!("fake-kubelet: {msg}");
}

/// Runs the fake kubelet until the returned handle is aborted.
fn spawn_kubelet(client: Client, ns: &str, journal: Journal) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        let mut ip = 0;
        loop {
            if let Err(e) = kubelet_pass(&pods, &journal, &mut ip).await {
                tracing_like(&format!("pass failed: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Polls `check` every 200ms until it yields `Some`, failing after `secs` with `what`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last_err = None;
    while tokio::time::Instant::now() < deadline {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("timed out after {secs}s waiting for {what} (last error: {last_err:?})")
}

async fn broker_ready(brokers: &Api<Broker>, name: &str) -> Result<Option<()>> {
    let b = brokers.get(name).await?;
    let ready = b.status.as_ref().is_some_and(|s| {
        s.observed_generation == b.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    Ok(ready.then_some(()))
}

#[tokio::test]
#[ignore = "needs kube-apiserver + kube-controller-manager: run tests/suites/60-operator.sh"]
async fn broker_pods_start_in_order_and_roll_followers_before_the_leader() -> Result<()> {
    let client = client().await?;
    let ns = format!("rollout-{}", std::process::id() % 100_000);
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({ "metadata": { "name": ns } }))?,
    )
    .await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({ "metadata": { "name": "fake-node" } }))?;
    if let Err(kube::Error::Api(s)) = nodes.create(&PostParams::default(), &node).await {
        if s.code != 409 {
            bail!("creating the fake node: {s:?}");
        }
    }
    let classes: Api<StorageClass> = Api::all(client.clone());
    let sc: StorageClass = serde_json::from_value(
        json!({ "metadata": { "name": "rollout-fixed" }, "provisioner": "example.com/none" }),
    )?;
    let _ = classes.create(&PostParams::default(), &sc).await;

    let journal: Journal = Arc::default();
    let kubelet = spawn_kubelet(client.clone(), &ns, journal.clone());
    let admin = Arc::new(MemoryAdmin::default());
    let ctx = Arc::new(Context::new(
        client.clone(),
        admin.clone(),
        Some("admin.test:8081".into()),
        None,
        Arc::new(Metrics::default()),
    ));
    let owned = watcher::Config::default();
    let nameservers = Controller::new(
        Api::<Nameserver>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )
    .owns(
        Api::<StatefulSet>::namespaced(client.clone(), &ns),
        owned.clone(),
    )
    .run(
        controller::nameserver::reconcile,
        controller::nameserver::error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});
    let brokers_ctrl = Controller::new(
        Api::<Broker>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )
    .owns(
        Api::<StatefulSet>::namespaced(client.clone(), &ns),
        owned.clone(),
    )
    .owns(
        Api::<Deployment>::namespaced(client.clone(), &ns),
        owned.clone(),
    )
    .run(
        controller::broker::reconcile,
        controller::broker::error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});
    let controllers = tokio::spawn(async move {
        futures::join!(nameservers, brokers_ctrl);
    });

    let result = async {
        let nsapi: Api<Nameserver> = Api::namespaced(client.clone(), &ns);
        nsapi.create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "ferromq.io/v1alpha1", "kind": "Nameserver", "metadata": { "name": "names" },
            "spec": { "replicas": 1, "image": "ferromq:v1", "controller": { "enabled": true } } }))?).await?;
        let brokers: Api<Broker> = Api::namespaced(client.clone(), &ns);
        brokers.create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "ferromq.io/v1alpha1", "kind": "Broker", "metadata": { "name": "demo" },
            "spec": { "nameserverRef": { "name": "names" }, "image": "ferromq:v1",
                      "storage": { "groups": 1, "replicasPerGroup": 3, "volume": { "size": "1Gi", "storageClassName": "rollout-fixed" } },
                      "compute": { "replicas": 2 } } }))?).await?;

        eventually(240, "Broker Ready after first start (includes controller-manager start-up)", || broker_ready(&brokers, "demo")).await?;
        let started = journal_of(&journal, "ready", "demo-group-0-");
        assert_eq!(started, vec!["demo-group-0-0", "demo-group-0-1", "demo-group-0-2"], "OrderedReady start order");
        let st = brokers.get("demo").await?.status.context("status")?;
        assert_eq!((st.storage.ready_replicas, st.compute.ready_replicas), (3, 2));

        // Image change: the operator replaces one pod at a time (OnDelete), each after the
        // previous one is Ready again: the followers first (highest replica id first), then it
        // moves the lead off the leader (replica 2, ordinal 1) and replaces the old leader.
        admin.set_replication(vec![GroupReplicationStatus {
            group: "demo-group-0".into(),
            leader: Some(2),
            epoch: 1,
            in_sync: 3,
            in_sync_replicas: vec![1, 2, 3],
        }]);
        brokers.patch("demo", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "image": "ferromq:v2" } }))).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        eventually(120, "all broker pods on ferromq:v2", || async {
            let all = pods.list(&ListParams::default().labels("ferromq.io/group=demo-group-0")).await?;
            let done = all.items.len() == 3 && all.iter().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref() == Some("ferromq:v2"))
                    && p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            Ok(done.then_some(()))
        }).await?;
        let deleted = journal_of(&journal, "deleted", "demo-group-0-");
        let mut order: Vec<String> = Vec::new();
        for d in deleted {
            if order.last() != Some(&d) {
                order.push(d);
            }
        }
        eprintln!("fake kubelet journal: {:?}", journal.lock().map(|j| j.clone()).unwrap_or_default());
        assert_eq!(order, vec!["demo-group-0-2", "demo-group-0-0", "demo-group-0-1"], "followers roll before the leader");
        assert_eq!(admin.switchovers(), vec![("demo-group-0".to_string(), 3)], "the lead moved to an updated member first");
        eventually(60, "Broker Ready after the roll", || broker_ready(&brokers, "demo")).await?;

        // A configuration change rolls the pods too (the template carries the config hash).
        let before: Vec<String> = pods.list(&ListParams::default().labels("ferromq.io/group=demo-group-0")).await?
            .iter().filter_map(|p| p.uid()).collect();
        brokers.patch("demo", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "config": { "max-body-size": "8MiB" } } }))).await?;
        eventually(120, "every broker pod replaced after a config change", || async {
            let now = pods.list(&ListParams::default().labels("ferromq.io/group=demo-group-0")).await?;
            let replaced = now.items.len() == 3 && now.iter().all(|p| p.uid().is_some_and(|u| !before.contains(&u))
                && p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")));
            Ok(replaced.then_some(()))
        }).await?;
        eventually(60, "Broker Ready after the config roll", || broker_ready(&brokers, "demo")).await?;

        // Ordered scale-down of the storage tier: the highest ordinal goes.
        brokers.patch("demo", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "storage": { "replicasPerGroup": 2 } } }))).await?;
        eventually(60, "group scaled to 2 pods", || async {
            let names: Vec<String> = pods.list(&ListParams::default().labels("ferromq.io/group=demo-group-0")).await?
                .iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| p.name_any()).collect();
            Ok((names.len() == 2 && !names.contains(&"demo-group-0-2".to_string())).then_some(()))
        }).await?;
        let proxies = pods.list(&ListParams::default().labels("app.kubernetes.io/component=proxy")).await?;
        assert_eq!(proxies.items.len(), 2, "compute tier untouched by storage scaling");

        // Deleting the Broker: the garbage collector follows the owner references.
        brokers.delete("demo", &DeleteParams::default()).await?;
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        eventually(60, "children garbage-collected", || async {
            Ok(sts.get_opt("demo-group-0").await?.is_none().then_some(()))
        }).await?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    controllers.abort();
    kubelet.abort();
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
    result
}

/// Runs the Broker controller (and the Nameserver one) for namespace `ns` until aborted.
fn spawn_controllers(client: Client, ns: &str, ctx: Arc<Context>) -> tokio::task::JoinHandle<()> {
    let owned = watcher::Config::default();
    let nameservers = Controller::new(
        Api::<Nameserver>::namespaced(client.clone(), ns),
        watcher::Config::default(),
    )
    .owns(
        Api::<StatefulSet>::namespaced(client.clone(), ns),
        owned.clone(),
    )
    .run(
        controller::nameserver::reconcile,
        controller::nameserver::error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});
    let brokers = Controller::new(
        Api::<Broker>::namespaced(client.clone(), ns),
        watcher::Config::default(),
    )
    .owns(
        Api::<StatefulSet>::namespaced(client.clone(), ns),
        owned.clone(),
    )
    .owns(Api::<Deployment>::namespaced(client.clone(), ns), owned)
    .run(
        controller::broker::reconcile,
        controller::broker::error_policy,
        ctx,
    )
    .for_each(|_| async {});
    tokio::spawn(async move {
        futures::join!(nameservers, brokers);
    })
}

/// Position of the first journal entry `(what, pod)` at or after `from`.
fn journal_find(j: &Journal, what: &str, pod: &str, from: usize) -> Option<usize> {
    let j = j.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    j.iter()
        .enumerate()
        .skip(from)
        .find(|(_, (w, p))| w == what && p == pod)
        .map(|(i, _)| i)
}

#[tokio::test]
#[ignore = "needs kube-apiserver + kube-controller-manager: run tests/suites/60-operator.sh"]
async fn broker_groups_roll_one_at_a_time_each_ready_before_the_next() -> Result<()> {
    let client = client().await?;
    let ns = format!("groups-{}", std::process::id() % 100_000);
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({ "metadata": { "name": ns } }))?,
    )
    .await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({ "metadata": { "name": "fake-node" } }))?;
    if let Err(kube::Error::Api(s)) = nodes.create(&PostParams::default(), &node).await {
        if s.code != 409 {
            bail!("creating the fake node: {s:?}");
        }
    }
    let journal: Journal = Arc::default();
    let kubelet = spawn_kubelet(client.clone(), &ns, journal.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(MemoryAdmin::default()),
        Some("admin.test:8081".into()),
        None,
        Arc::new(Metrics::default()),
    ));
    let controllers = spawn_controllers(client.clone(), &ns, ctx);

    let result = async {
        let nsapi: Api<Nameserver> = Api::namespaced(client.clone(), &ns);
        nsapi.create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "ferromq.io/v1alpha1", "kind": "Nameserver", "metadata": { "name": "names" },
            "spec": { "replicas": 1, "image": "ferromq:v1" } }))?).await?;
        let brokers: Api<Broker> = Api::namespaced(client.clone(), &ns);
        brokers.create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "ferromq.io/v1alpha1", "kind": "Broker", "metadata": { "name": "demo" },
            "spec": { "nameserverRef": { "name": "names" }, "image": "ferromq:v1",
                      "storage": { "groups": 3, "volume": { "size": "1Gi" } },
                      "compute": { "replicas": 1 } } }))?).await?;
        eventually(240, "Broker Ready after first start", || broker_ready(&brokers, "demo")).await?;
        let mark = journal.lock().map(|j| j.len()).unwrap_or_default();

        brokers.patch("demo", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "image": "ferromq:v2" } }))).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        eventually(180, "every group's pod on ferromq:v2 and ready", || async {
            let all = pods.list(&ListParams::default().labels("app.kubernetes.io/component=broker")).await?;
            let done = all.items.len() == 3 && all.iter().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref() == Some("ferromq:v2"))
                    && p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            Ok(done.then_some(()))
        }).await?;
        eprintln!("fake kubelet journal: {:?}", journal.lock().map(|j| j.clone()).unwrap_or_default());
        // Each group's pod is replaced and ready again before the next group's pod goes.
        let mut from = mark;
        for g in 0..3 {
            let pod = format!("demo-group-{g}-0");
            let deleted = journal_find(&journal, "deleted", &pod, from)
                .with_context(|| format!("{pod} was never replaced after position {from}"))?;
            let ready = journal_find(&journal, "ready", &pod, deleted)
                .with_context(|| format!("{pod} never came back ready"))?;
            if g > 0 {
                let prev = format!("demo-group-{}-0", g - 1);
                assert!(journal_find(&journal, "deleted", &prev, ready).is_none(), "{prev} went again after {pod}");
            }
            if g < 2 {
                let next = format!("demo-group-{}-0", g + 1);
                let next_deleted = journal_find(&journal, "deleted", &next, mark).context("next group rolled")?;
                assert!(next_deleted > ready, "{next} went (journal position {next_deleted}) before {pod} was ready again ({ready})");
            }
            from = ready;
        }
        eventually(60, "Broker Ready after the roll", || broker_ready(&brokers, "demo")).await?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    controllers.abort();
    kubelet.abort();
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
    result
}
