//! Integration tests against a real kube-apiserver backed by etcd.
//!
//! They are `#[ignore]`d in a plain `cargo test`; `tests/suites/60-operator.sh` starts the
//! control plane (tests/k8s/env.sh), applies `crds/`, sets `FERROMQ_TEST_KUBECONFIG` and runs
//! them with `--ignored`. No kubelet or controller-manager runs, so pods never exist: where
//! readiness matters, a test writes the StatefulSet/Deployment status itself, as the
//! controller-manager would. Each test works in its own namespace.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use ferromq_operator::admin::{ClusterAdmin, MemoryAdmin};
use ferromq_operator::controller::{self, Context};
use ferromq_operator::crd::{
    Broker, BrokerRef, BrokerSpec, ComputeSpec, ControllerSpec, ControllerVolume, FlushMode,
    GroupReplicationStatus, ImagePullPolicy, MessageType, Nameserver, NameserverRef,
    NameserverSpec, Permission, ReplicationMode, StorageSpec, Topic, TopicSpec, User, VolumeSpec,
};
use ferromq_operator::leader::LeaseLock;
use ferromq_operator::metrics::Metrics;

const ADMIN: &str = "admin.test:8081";

// ---------------------------------------------------------------- harness

struct Env {
    client: Client,
    ns: String,
    admin: Arc<MemoryAdmin>,
    ctx: Arc<Context>,
}

async fn client() -> Result<Client> {
    support::client_from_env("FERROMQ_TEST_KUBECONFIG").await
}

/// A fresh namespace (named after the test) and a Context whose admin API is in memory.
async fn env(test: &str) -> Result<Env> {
    let client = client().await?;
    let suffix = std::process::id() % 100_000;
    let ns = format!("{}-{suffix}", test.replace('_', "-"));
    let nss: Api<Namespace> = Api::all(client.clone());
    let obj: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } }))?;
    nss.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    let admin = Arc::new(MemoryAdmin::default());
    let ctx = Arc::new(Context::new(
        client.clone(),
        admin.clone(),
        Some(ADMIN.to_string()),
        Some("integration-test".to_string()),
        Arc::new(Metrics::default()),
    ));
    Ok(Env {
        client,
        ns,
        admin,
        ctx,
    })
}

impl Env {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn reconcile_nameserver(&self, name: &str) -> Result<()> {
        let obj = self.api::<Nameserver>().get(name).await?;
        controller::nameserver::reconcile(Arc::new(obj), self.ctx.clone()).await?;
        Ok(())
    }

    async fn reconcile_broker(&self, name: &str) -> Result<()> {
        let obj = self.api::<Broker>().get(name).await?;
        controller::broker::reconcile(Arc::new(obj), self.ctx.clone()).await?;
        Ok(())
    }

    async fn reconcile_user(&self, name: &str) -> Result<()> {
        let obj = self.api::<User>().get(name).await?;
        controller::user::reconcile(Arc::new(obj), self.ctx.clone()).await?;
        Ok(())
    }

    async fn reconcile_topic(&self, name: &str) -> Result<()> {
        let obj = self.api::<Topic>().get(name).await?;
        controller::topic::reconcile(Arc::new(obj), self.ctx.clone()).await?;
        Ok(())
    }

    /// Resource versions of every object in the namespace the operator could touch.
    async fn versions(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        macro_rules! collect {
            ($t:ty) => {
                for o in self.api::<$t>().list(&ListParams::default()).await? {
                    out.insert(
                        format!("{}/{}", <$t>::kind(&()), o.name_any()),
                        o.resource_version().unwrap_or_default(),
                    );
                }
            };
        }
        collect!(Nameserver);
        collect!(Broker);
        collect!(Topic);
        collect!(User);
        collect!(Secret);
        collect!(StatefulSet);
        collect!(Deployment);
        collect!(Service);
        collect!(ConfigMap);
        collect!(PodDisruptionBudget);
        collect!(HorizontalPodAutoscaler);
        collect!(PersistentVolumeClaim);
        Ok(out)
    }

    /// A Nameserver running the replication controller (the Brokers here have 2 replicas
    /// per group, which need it).
    async fn create_nameserver(&self, name: &str, replicas: i32) -> Result<Nameserver> {
        let ns = Nameserver::new(
            name,
            NameserverSpec {
                replicas,
                image: "ferromq:test".into(),
                image_pull_policy: ImagePullPolicy::IfNotPresent,
                resources: None,
                placement: None,
                controller: Some(ControllerSpec {
                    enabled: true,
                    volume: ControllerVolume::default(),
                }),
                pod_template: None,
                internal_tls: None,
            },
        );
        Ok(self
            .api::<Nameserver>()
            .create(&PostParams::default(), &ns)
            .await?)
    }

    async fn create_broker(
        &self,
        name: &str,
        groups: i32,
        proxies: i32,
        class: &str,
    ) -> Result<Broker> {
        let b = Broker::new(
            name,
            BrokerSpec {
                nameserver_ref: NameserverRef {
                    name: "names".into(),
                },
                image: "ferromq:test".into(),
                image_pull_policy: ImagePullPolicy::IfNotPresent,
                storage: StorageSpec {
                    groups,
                    replicas_per_group: 2,
                    volume: VolumeSpec {
                        size: "10Gi".into(),
                        storage_class_name: Some(class.into()),
                    },
                    flush_mode: FlushMode::Async,
                    replication_mode: ReplicationMode::Sync,
                    min_in_sync: 1,
                    retention: None,
                    retention_bytes: None,
                    disk_high_water: None,
                    resources: None,
                    placement: None,
                    pod_template: None,
                },
                compute: ComputeSpec {
                    replicas: proxies,
                    resources: None,
                    autoscaling: None,
                    placement: None,
                    tls: None,
                    pod_template: None,
                    service: None,
                },
                config: BTreeMap::new(),
                logging: None,
                auth: None,
            },
        );
        Ok(self
            .api::<Broker>()
            .create(&PostParams::default(), &b)
            .await?)
    }

    /// Plays the StatefulSet controller: marks every replica of `name` created, updated, ready.
    async fn mark_sts_ready(&self, name: &str) -> Result<()> {
        let api = self.api::<StatefulSet>();
        let sts = api.get(name).await?;
        let n = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = json!({ "status": {
            "observedGeneration": sts.metadata.generation, "replicas": n, "readyReplicas": n,
            "availableReplicas": n, "updatedReplicas": n, "currentReplicas": n,
            "currentRevision": format!("{name}-r1"), "updateRevision": format!("{name}-r1"),
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
        Ok(())
    }

    /// Plays the Deployment controller for `name`.
    async fn mark_deployment_ready(&self, name: &str) -> Result<()> {
        let api = self.api::<Deployment>();
        let d = api.get(name).await?;
        let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = json!({ "status": {
            "observedGeneration": d.metadata.generation, "replicas": n, "readyReplicas": n,
            "availableReplicas": n, "updatedReplicas": n,
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
        Ok(())
    }

    async fn events_for(&self, kind: &str, name: &str) -> Result<Vec<Event>> {
        let all = self.api::<Event>().list(&ListParams::default()).await?;
        Ok(all
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .collect())
    }

    async fn create_storage_class(&self, name: &str, expandable: bool) -> Result<()> {
        let api: Api<StorageClass> = Api::all(self.client.clone());
        let sc: StorageClass = serde_json::from_value(json!({
            "metadata": { "name": name }, "provisioner": "example.com/none", "allowVolumeExpansion": expandable,
            "volumeBindingMode": "Immediate",
        }))?;
        match api.create(&PostParams::default(), &sc).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn drop_namespace(&self) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let _ = nss.delete(&self.ns, &DeleteParams::default()).await;
    }
}

fn condition<'a>(conds: &'a [Condition], type_: &str) -> Result<&'a Condition> {
    conds
        .iter()
        .find(|c| c.type_ == type_)
        .ok_or_else(|| anyhow!("no {type_} condition in {conds:?}"))
}

fn assert_condition(conds: &[Condition], type_: &str, status: &str, reason: &str) -> Result<()> {
    let c = condition(conds, type_)?;
    if c.status != status || c.reason != reason {
        bail!(
            "{type_}: want {status}/{reason}, got {}/{} ({})",
            c.status,
            c.reason,
            c.message
        );
    }
    Ok(())
}

fn owned_by<K: Resource>(obj: &K, kind: &str, uid: &str) -> bool {
    obj.meta().owner_references.as_ref().is_some_and(|o| {
        o.iter()
            .any(|r| r.kind == kind && r.uid == uid && r.controller == Some(true))
    })
}

// ---------------------------------------------------------------- tests

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn nameserver_gets_statefulset_service_pdb_and_honest_status() -> Result<()> {
    let e = env("ns-basic").await?;
    let created = e.create_nameserver("names", 3).await?;
    let uid = created.uid().unwrap_or_default();
    e.reconcile_nameserver("names").await?;

    let sts = e.api::<StatefulSet>().get("names").await?;
    assert!(owned_by(&sts, "Nameserver", &uid));
    assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(
        sts.labels()
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("nameserver")
    );
    let svc = e.api::<Service>().get("names").await?;
    assert!(owned_by(&svc, "Nameserver", &uid));
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    assert!(owned_by(
        &e.api::<PodDisruptionBudget>().get("names").await?,
        "Nameserver",
        &uid
    ));

    let ns = e.api::<Nameserver>().get("names").await?;
    let st = ns.status.clone().context("status written")?;
    assert_eq!(st.observed_generation, ns.metadata.generation);
    assert_eq!(st.addresses.len(), 3);
    assert_condition(&st.conditions, "Ready", "False", "ReplicasNotReady")?;
    assert_condition(&st.conditions, "Progressing", "True", "RollingOut")?;
    assert!(
        !e.events_for("Nameserver", "names").await?.is_empty(),
        "creation must be reported as Events"
    );

    // Pods become ready (played by the test): status follows.
    e.mark_sts_ready("names").await?;
    e.reconcile_nameserver("names").await?;
    let st = e
        .api::<Nameserver>()
        .get("names")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Ready", "True", "AllReplicasReady")?;
    assert_condition(&st.conditions, "Degraded", "False", "AsExpected")?;
    assert_eq!(st.ready_replicas, 3);

    // Idempotent: another reconcile writes nothing.
    let before = e.versions().await?;
    e.reconcile_nameserver("names").await?;
    assert_eq!(
        before,
        e.versions().await?,
        "second reconcile changed something"
    );
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn broker_builds_both_tiers_and_second_reconcile_changes_nothing() -> Result<()> {
    let e = env("broker-tiers").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    let b = e.create_broker("demo", 2, 2, "ferromq-test-fixed").await?;
    let uid = b.uid().unwrap_or_default();
    e.reconcile_broker("demo").await?;

    for g in ["demo-group-0", "demo-group-1"] {
        let sts = e.api::<StatefulSet>().get(g).await?;
        assert!(owned_by(&sts, "Broker", &uid), "{g} owner");
        let spec = sts.spec.clone().context("spec")?;
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.service_name.as_deref(), Some(g));
        let vct = spec.volume_claim_templates.unwrap_or_default();
        assert_eq!(vct.len(), 1, "one claim template");
        let svc = e.api::<Service>().get(g).await?;
        assert_eq!(
            svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
            Some("None")
        );
        assert!(owned_by(
            &e.api::<PodDisruptionBudget>().get(g).await?,
            "Broker",
            &uid
        ));
    }
    let cm = e.api::<ConfigMap>().get("demo-config").await?;
    let toml = cm
        .data
        .unwrap_or_default()
        .get("broker.toml")
        .cloned()
        .unwrap_or_default();
    assert!(
        toml.contains(&format!("names-0.names.{}.svc:9876", e.ns)),
        "{toml}"
    );
    assert!(toml.contains("replication-mode = \"sync\""), "{toml}");
    let proxy = e.api::<Deployment>().get("demo-proxy").await?;
    assert_eq!(proxy.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let client_svc = e.api::<Service>().get("demo").await?;
    let port = client_svc
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .first()
        .map(|p| p.port);
    assert_eq!(port, Some(8081));
    assert!(owned_by(
        &e.api::<PodDisruptionBudget>().get("demo-proxy").await?,
        "Broker",
        &uid
    ));

    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Ready", "False", "StorageNotReady")?;
    assert_eq!(st.compute.selector, "app.kubernetes.io/component=proxy,app.kubernetes.io/instance=demo,app.kubernetes.io/name=ferromq");

    // Play the controllers: everything ready -> Ready/Stable.
    e.mark_sts_ready("demo-group-0").await?;
    e.mark_sts_ready("demo-group-1").await?;
    e.mark_deployment_ready("demo-proxy").await?;
    e.reconcile_broker("demo").await?;
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Ready", "True", "Ready")?;
    assert_condition(&st.conditions, "Progressing", "False", "Stable")?;
    assert_eq!(
        (
            st.storage.ready_groups,
            st.storage.ready_replicas,
            st.compute.ready_replicas
        ),
        (2, 4, 2)
    );

    let before = e.versions().await?;
    e.reconcile_broker("demo").await?;
    assert_eq!(
        before,
        e.versions().await?,
        "second reconcile changed something"
    );
    e.drop_namespace().await;
    Ok(())
}

/// Value (or downward-API field path) of `name` in the first container of `template`.
fn env_of(template: &Option<k8s_openapi::api::core::v1::PodSpec>, name: &str) -> Option<String> {
    let e = template.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .clone();
    e.value
        .or_else(|| e.value_from?.field_ref.map(|f| f.field_path))
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn pod_templates_merge_and_the_endpoint_follows_the_client_service() -> Result<()> {
    let e = env("endpoint-template").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    let template = json!({
        "labels": { "team": "payments" },
        "annotations": { "example.com/scrape": "true" },
        "imagePullSecrets": [{ "name": "regcred" }],
        "priorityClassName": "brokers",
        "topologySpreadConstraints": [{ "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": { "matchLabels": { "app.kubernetes.io/instance": "demo" } } }],
        "env": [{ "name": "TZ", "value": "UTC" }],
        "securityContext": { "runAsUser": 1000 },
        "containerSecurityContext": { "readOnlyRootFilesystem": true },
    });
    e.api::<Broker>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "storage": { "podTemplate": template },
                "compute": { "podTemplate": { "labels": { "tier": "compute" } } } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;

    // The pod template reaches the group StatefulSet as the API server stores it.
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    let t = sts.spec.context("spec")?.template;
    let meta = t.metadata.context("template metadata")?;
    let labels = meta.labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        labels
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("broker")
    );
    let annotations = meta.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("example.com/scrape").map(String::as_str),
        Some("true")
    );
    assert!(annotations.contains_key("ferromq.io/config-hash"));
    let pod = t.spec.clone().context("pod spec")?;
    assert_eq!(pod.priority_class_name.as_deref(), Some("brokers"));
    assert_eq!(
        pod.image_pull_secrets.unwrap_or_default()[0].name,
        "regcred"
    );
    assert_eq!(pod.topology_spread_constraints.unwrap_or_default().len(), 1);
    assert_eq!(env_of(&t.spec, "TZ").as_deref(), Some("UTC"));
    assert_eq!(
        env_of(&t.spec, "FERROMQ_GROUP").as_deref(),
        Some("demo-group-0")
    );
    let psc = pod.security_context.context("pod security context")?;
    assert_eq!(
        (psc.run_as_user, psc.run_as_non_root, psc.fs_group),
        (Some(1000), Some(true), Some(65532))
    );
    let csc = pod.containers[0]
        .security_context
        .clone()
        .context("container security context")?;
    assert_eq!(
        (
            csc.read_only_root_filesystem,
            csc.allow_privilege_escalation
        ),
        (Some(true), Some(false))
    );
    let proxy = e
        .api::<Deployment>()
        .get("demo-proxy")
        .await?
        .spec
        .context("spec")?
        .template;
    let plabels = proxy.metadata.and_then(|m| m.labels).unwrap_or_default();
    assert_eq!(plabels.get("tier").map(String::as_str), Some("compute"));
    assert!(
        !plabels.contains_key("team"),
        "each tier has its own template"
    );

    // ClusterIP: the Service's DNS name, which the proxies also advertise.
    let cluster = format!("demo.{}.svc:8081", e.ns);
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_eq!(st.endpoint.as_deref(), Some(cluster.as_str()));
    assert_eq!(
        env_of(&proxy.spec, "FERROMQ_ADVERTISE_ADDR").as_deref(),
        Some(cluster.as_str())
    );

    // LoadBalancer: no endpoint until the load balancer has an address, then that address.
    e.api::<Broker>()
        .patch("demo", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "compute": {
            "service": { "type": "LoadBalancer", "annotations": { "example.com/lb-scheme": "internet-facing" } } } } })))
        .await?;
    e.reconcile_broker("demo").await?;
    let svc = e.api::<Service>().get("demo").await?;
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.type_.as_deref()),
        Some("LoadBalancer")
    );
    assert_eq!(
        svc.metadata
            .annotations
            .unwrap_or_default()
            .get("example.com/lb-scheme")
            .map(String::as_str),
        Some("internet-facing")
    );
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_eq!(st.endpoint, None, "no load-balancer address yet");
    e.api::<Service>()
        .patch_status(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({
            "status": { "loadBalancer": { "ingress": [{ "ip": "203.0.113.9" }] } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_eq!(st.endpoint.as_deref(), Some("203.0.113.9:8081"));
    e.reconcile_broker("demo").await?;
    let proxy = e
        .api::<Deployment>()
        .get("demo-proxy")
        .await?
        .spec
        .context("spec")?
        .template;
    assert_eq!(
        env_of(&proxy.spec, "FERROMQ_ADVERTISE_ADDR").as_deref(),
        Some("203.0.113.9:8081")
    );

    // NodePort: each proxy advertises its node's address; the endpoint names a ready proxy's.
    e.api::<Broker>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "compute": {
            "service": { "type": "NodePort", "nodePort": 30981, "annotations": null } } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let svc = e.api::<Service>().get("demo").await?;
    let spec = svc.spec.context("svc spec")?;
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.ports.unwrap_or_default()[0].node_port, Some(30981));
    assert!(
        !svc.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("example.com/lb-scheme"),
        "annotations removed with the spec"
    );
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_eq!(st.endpoint, None, "no ready proxy yet");
    // A proxy pod as the kubelet would report it (none runs here).
    let pods = e.api::<k8s_openapi::api::core::v1::Pod>();
    pods.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": { "name": "demo-proxy-x", "labels": {
            "app.kubernetes.io/name": "ferromq", "app.kubernetes.io/instance": "demo", "app.kubernetes.io/component": "proxy" } },
        "spec": { "containers": [{ "name": "proxy", "image": "ferromq:test" }] } }))?).await?;
    pods.patch_status(
        "demo-proxy-x",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
        "phase": "Running", "hostIP": "192.0.2.4",
        "conditions": [{ "type": "Ready", "status": "True" }] } })),
    )
    .await?;
    e.reconcile_broker("demo").await?;
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_eq!(st.endpoint.as_deref(), Some("192.0.2.4:30981"));
    let proxy = e
        .api::<Deployment>()
        .get("demo-proxy")
        .await?
        .spec
        .context("spec")?
        .template;
    assert_eq!(
        env_of(&proxy.spec, "FERROMQ_ADVERTISE_ADDR").as_deref(),
        Some("$(FERROMQ_HOST_IP):30981")
    );
    assert_eq!(
        env_of(&proxy.spec, "FERROMQ_HOST_IP").as_deref(),
        Some("status.hostIP")
    );

    // An explicit address wins.
    e.api::<Broker>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "compute": {
            "service": { "advertisedAddress": "mq.example.com:443" } } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_eq!(st.endpoint.as_deref(), Some("mq.example.com:443"));
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn autoscaling_adds_and_removes_the_hpa_and_pause_freezes_children() -> Result<()> {
    let e = env("hpa-pause").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 1, 2, "ferromq-test-fixed").await?;
    e.reconcile_broker("demo").await?;
    assert!(e
        .api::<HorizontalPodAutoscaler>()
        .get_opt("demo-proxy")
        .await?
        .is_none());
    let brokers = e.api::<Broker>();
    brokers
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "compute": {
        "autoscaling": { "minReplicas": 2, "maxReplicas": 5 } } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let hpa = e.api::<HorizontalPodAutoscaler>().get("demo-proxy").await?;
    let target = hpa.spec.map(|s| (s.scale_target_ref.kind, s.max_replicas));
    assert_eq!(target, Some(("Broker".to_string(), 5)));
    brokers
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "compute": { "autoscaling": null } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    assert!(
        e.api::<HorizontalPodAutoscaler>()
            .get_opt("demo-proxy")
            .await?
            .is_none(),
        "HPA removed with autoscaling"
    );

    // Paused: spec changes are not applied, status says why; unpausing applies them.
    brokers.patch("demo", &PatchParams::default(), &Patch::Merge(json!({
        "metadata": { "annotations": { "ferromq.io/paused": "true" } }, "spec": { "compute": { "replicas": 4 } } }))).await?;
    e.reconcile_broker("demo").await?;
    assert_eq!(
        e.api::<Deployment>()
            .get("demo-proxy")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(2)
    );
    let st = brokers.get("demo").await?.status.context("status")?;
    assert_condition(&st.conditions, "Progressing", "False", "Paused")?;
    brokers
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({
        "metadata": { "annotations": { "ferromq.io/paused": null } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    assert_eq!(
        e.api::<Deployment>()
            .get("demo-proxy")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(4)
    );
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn drift_in_owned_objects_is_repaired() -> Result<()> {
    let e = env("drift").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 1, 2, "ferromq-test-fixed").await?;
    e.reconcile_broker("demo").await?;

    // Someone edits owned objects by hand and deletes one.
    e.api::<StatefulSet>()
        .patch("demo-group-0", &PatchParams::default(), &Patch::Strategic(json!({ "spec": { "replicas": 7,
            "template": { "spec": { "containers": [{ "name": "broker", "image": "evil:1" }] } } } })))
        .await?;
    e.api::<Service>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "selector": {
            "app.kubernetes.io/component": "broker" } } })),
        )
        .await?;
    e.api::<ConfigMap>()
        .delete("demo-config", &DeleteParams::default())
        .await?;

    e.reconcile_broker("demo").await?;
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    let spec = sts.spec.context("spec")?;
    assert_eq!(spec.replicas, Some(2), "replicas drift repaired");
    let image = spec
        .template
        .spec
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(
        image.as_deref(),
        Some("ferromq:test"),
        "image drift repaired"
    );
    let selector = e
        .api::<Service>()
        .get("demo")
        .await?
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default();
    assert_eq!(
        selector
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("proxy"),
        "selector drift repaired"
    );
    assert!(
        e.api::<ConfigMap>().get_opt("demo-config").await?.is_some(),
        "deleted ConfigMap re-created"
    );
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn scale_subresource_scales_compute_tier_alone() -> Result<()> {
    let e = env("scale").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 2, 1, "ferromq-test-fixed").await?;
    e.reconcile_broker("demo").await?;
    let storage_before: Vec<_> = e
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await?
        .iter()
        .map(|s| (s.name_any(), s.resource_version()))
        .collect();

    // What `kubectl scale broker demo --replicas=4` and an HPA do.
    let brokers = e.api::<Broker>();
    brokers
        .patch_scale(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 4 } })),
        )
        .await?;
    assert_eq!(
        brokers.get("demo").await?.spec.compute.replicas,
        4,
        "scale wrote spec.compute.replicas"
    );
    e.reconcile_broker("demo").await?;
    assert_eq!(
        e.api::<Deployment>()
            .get("demo-proxy")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(4)
    );
    let storage_after: Vec<_> = e
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await?
        .iter()
        .map(|s| (s.name_any(), s.resource_version()))
        .collect();
    assert_eq!(
        storage_before, storage_after,
        "storage tier untouched by compute scaling"
    );

    e.mark_deployment_ready("demo-proxy").await?;
    e.reconcile_broker("demo").await?;
    let scale = brokers.get_scale("demo").await?;
    let st = scale.status.context("scale status")?;
    assert_eq!(st.replicas, 4);
    assert_eq!(st.selector.as_deref(), Some("app.kubernetes.io/component=proxy,app.kubernetes.io/instance=demo,app.kubernetes.io/name=ferromq"));
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn storage_groups_grow_and_shrink_only_after_drain() -> Result<()> {
    let e = env("groups").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 2, 1, "ferromq-test-fixed").await?;
    e.reconcile_broker("demo").await?;
    let proxy_rv = e
        .api::<Deployment>()
        .get("demo-proxy")
        .await?
        .resource_version();

    let brokers = e.api::<Broker>();
    brokers
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "storage": { "groups": 3 } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    assert!(
        e.api::<StatefulSet>()
            .get_opt("demo-group-2")
            .await?
            .is_some(),
        "new group created"
    );
    assert_eq!(
        e.api::<Deployment>()
            .get("demo-proxy")
            .await?
            .resource_version(),
        proxy_rv,
        "compute untouched"
    );

    // Shrink to 1: group 2 needs two drain rounds, group 1 one.
    e.admin.set_drain_rounds("demo-group-1", 1);
    e.admin.set_drain_rounds("demo-group-2", 2);
    brokers
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "storage": { "groups": 1 } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let st = brokers.get("demo").await?.status.context("status")?;
    assert_eq!(
        st.storage.draining,
        vec!["demo-group-1".to_string(), "demo-group-2".to_string()]
    );
    assert_condition(&st.conditions, "Progressing", "True", "DrainingGroups")?;
    assert!(
        e.api::<StatefulSet>()
            .get_opt("demo-group-1")
            .await?
            .is_some(),
        "not removed before drained"
    );

    e.reconcile_broker("demo").await?;
    assert!(
        e.api::<StatefulSet>()
            .get_opt("demo-group-1")
            .await?
            .is_none(),
        "group 1 removed once drained"
    );
    assert!(e.api::<Service>().get_opt("demo-group-1").await?.is_none());
    assert!(
        e.api::<StatefulSet>()
            .get_opt("demo-group-2")
            .await?
            .is_some(),
        "group 2 still draining"
    );
    e.reconcile_broker("demo").await?;
    assert!(
        e.api::<StatefulSet>()
            .get_opt("demo-group-2")
            .await?
            .is_none(),
        "group 2 removed once drained"
    );
    let st = brokers.get("demo").await?.status.context("status")?;
    assert!(st.storage.draining.is_empty());
    assert_eq!(st.storage.groups, 1);
    let removed = e
        .events_for("Broker", "demo")
        .await?
        .into_iter()
        .filter(|ev| ev.reason.as_deref() == Some("GroupRemoved"))
        .count();
    assert_eq!(removed, 2, "one GroupRemoved event per group");
    e.drop_namespace().await;
    Ok(())
}

/// Creates the claim a StatefulSet would create for `group` ordinal `i`, bound (as the PV
/// controller would) so that its request may grow.
async fn bound_claim(e: &Env, group: &str, i: i32, class: &str) -> Result<String> {
    let name = format!("data-{group}-{i}");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": {
            "app.kubernetes.io/name": "ferromq", "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/component": "broker", "ferromq.io/group": group } },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": class, "volumeName": format!("pv-{}-{name}", e.ns),
                  "resources": { "requests": { "storage": "10Gi" } } },
    }))?;
    let api = e.api::<PersistentVolumeClaim>();
    api.create(&PostParams::default(), &pvc).await?;
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
        "phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": { "storage": "10Gi" } } })),
    )
    .await?;
    Ok(name)
}

fn request_of(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn growing_the_volume_expands_claims_in_place() -> Result<()> {
    let e = env("grow").await?;
    e.create_storage_class("ferromq-test-expandable", true)
        .await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-expandable")
        .await?;
    e.reconcile_broker("demo").await?;
    let c0 = bound_claim(&e, "demo-group-0", 0, "ferromq-test-expandable").await?;
    let c1 = bound_claim(&e, "demo-group-0", 1, "ferromq-test-expandable").await?;

    let brokers = e.api::<Broker>();
    brokers
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "storage": { "volume": { "size": "20Gi" } } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    for c in [&c0, &c1] {
        let pvc = e.api::<PersistentVolumeClaim>().get(c).await?;
        assert_eq!(
            request_of(&pvc).as_deref(),
            Some("20Gi"),
            "{c} request raised"
        );
    }
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    let tmpl = sts
        .spec
        .and_then(|s| s.volume_claim_templates)
        .unwrap_or_default();
    assert_eq!(
        tmpl.first().and_then(request_of).as_deref(),
        Some("10Gi"),
        "immutable claim template kept"
    );
    let st = brokers.get("demo").await?.status.context("status")?;
    assert_eq!(
        st.storage.pending_volume_expansions,
        vec![c0.clone(), c1.clone()]
    );
    assert_condition(&st.conditions, "Progressing", "True", "ExpandingVolumes")?;
    assert_condition(&st.conditions, "Degraded", "False", "AsExpected")?;

    // Shrinking is refused by the schema's CEL rule.
    let err = brokers
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "storage": { "volume": { "size": "5Gi" } } } })),
        )
        .await
        .err()
        .context("shrinking must be refused")?;
    assert!(
        err.to_string().contains("storage size may only grow"),
        "{err}"
    );
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn expansion_on_a_fixed_storage_class_is_reported_not_forced() -> Result<()> {
    let e = env("fixed").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    e.reconcile_broker("demo").await?;
    let c0 = bound_claim(&e, "demo-group-0", 0, "ferromq-test-fixed").await?;
    e.api::<Broker>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "storage": { "volume": { "size": "20Gi" } } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let pvc = e.api::<PersistentVolumeClaim>().get(&c0).await?;
    assert_eq!(request_of(&pvc).as_deref(), Some("10Gi"), "claim untouched");
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_condition(
        &st.conditions,
        "Degraded",
        "True",
        "VolumeExpansionNotAllowed",
    )?;
    assert!(condition(&st.conditions, "Degraded")?
        .message
        .contains("ferromq-test-fixed"));
    let warned = e
        .events_for("Broker", "demo")
        .await?
        .iter()
        .any(|ev| ev.reason.as_deref() == Some("VolumeExpansionNotAllowed"));
    assert!(warned, "a Warning event names the problem");
    e.drop_namespace().await;
    Ok(())
}

async fn create_raw(e: &Env, ar: &ApiResource, body: serde_json::Value) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(e.client.clone(), &e.ns, ar);
    let obj: DynamicObject = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &obj).await.map(|_| ())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn invalid_specs_are_refused_by_the_schema() -> Result<()> {
    let e = env("invalid").await?;
    let ar = ApiResource::erase::<Broker>(&());
    let valid = json!({
        "apiVersion": "ferromq.io/v1alpha1", "kind": "Broker", "metadata": { "name": "x" },
        "spec": { "nameserverRef": { "name": "names" }, "image": "ferromq:test",
                  "storage": { "groups": 1, "volume": { "size": "1Gi" } }, "compute": { "replicas": 1 } } });
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "zero groups",
            json!({ "spec": { "storage": { "groups": 0 } } }),
            "spec.storage.groups",
        ),
        (
            "too many per group",
            json!({ "spec": { "storage": { "replicasPerGroup": 9 } } }),
            "spec.storage.replicasPerGroup",
        ),
        (
            "negative proxies",
            json!({ "spec": { "compute": { "replicas": -1 } } }),
            "spec.compute.replicas",
        ),
        (
            "unknown flush mode",
            json!({ "spec": { "storage": { "flushMode": "Sometimes" } } }),
            "spec.storage.flushMode",
        ),
        (
            "bad size",
            json!({ "spec": { "storage": { "volume": { "size": "lots" } } } }),
            "positive quantity",
        ),
        (
            "min above max",
            json!({ "spec": { "compute": { "autoscaling": { "minReplicas": 5, "maxReplicas": 2 } } } }),
            "minReplicas must not exceed maxReplicas",
        ),
        ("no image", json!({ "spec": { "image": "" } }), "spec.image"),
        (
            "more in sync than replicas",
            json!({ "spec": { "storage": { "replicasPerGroup": 3, "minInSync": 4 } } }),
            "minInSync must not exceed replicasPerGroup",
        ),
    ];
    for (what, overlay, expect) in cases {
        let mut body = valid.clone();
        merge_json(&mut body, &overlay);
        let err = create_raw(&e, &ar, body)
            .await
            .err()
            .with_context(|| format!("{what}: accepted"))?;
        assert!(err.to_string().contains(expect), "{what}: {err}");
    }
    create_raw(&e, &ar, valid)
        .await
        .context("the valid spec is accepted")?;

    // The replication controller: a Raft majority needs 1, 3 or 5 peers, and its membership
    // and claims are fixed at creation.
    let nr = ApiResource::erase::<Nameserver>(&());
    let names = |name: &str, replicas: i32| {
        json!({ "apiVersion": "ferromq.io/v1alpha1", "kind": "Nameserver", "metadata": { "name": name },
            "spec": { "replicas": replicas, "image": "ferromq:test", "controller": { "enabled": true } } })
    };
    let err = create_raw(&e, &nr, names("even", 2))
        .await
        .err()
        .context("a controller of 2 accepted")?;
    assert!(
        err.to_string().contains("needs 1, 3 or 5 replicas"),
        "{err}"
    );
    create_raw(&e, &nr, names("three", 3)).await?;
    let created = e.api::<Nameserver>().get("three").await?;
    let volume = created.spec.controller.map(|c| c.volume);
    assert_eq!(
        volume.map(|v| v.size).as_deref(),
        Some("1Gi"),
        "volume defaulted"
    );
    for (what, patch, expect) in [
        (
            "replicas",
            json!({ "spec": { "replicas": 5 } }),
            "replicas cannot change while the replication controller runs",
        ),
        (
            "enabled",
            json!({ "spec": { "controller": { "enabled": false } } }),
            "controller.enabled cannot change",
        ),
        (
            "volume",
            json!({ "spec": { "controller": { "volume": { "size": "2Gi" } } } }),
            "the controller volume cannot change",
        ),
    ] {
        let err = e
            .api::<Nameserver>()
            .patch("three", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .err()
            .with_context(|| format!("changing the controller's {what} accepted"))?;
        assert!(err.to_string().contains(expect), "{what}: {err}");
    }

    let tr = ApiResource::erase::<Topic>(&());
    let topic = |name: &str, spec: serde_json::Value| {
        json!({
        "apiVersion": "ferromq.io/v1alpha1", "kind": "Topic", "metadata": { "name": name }, "spec": spec })
    };
    let err = create_raw(
        &e,
        &tr,
        topic(
            "t1",
            json!({ "brokerRef": { "name": "x" }, "name": "rmq_sys_trace" }),
        ),
    )
    .await
    .err()
    .context("system name accepted")?;
    assert!(
        err.to_string().contains("system topic names are reserved"),
        "{err}"
    );
    let err = create_raw(
        &e,
        &tr,
        topic(
            "t2",
            json!({ "brokerRef": { "name": "x" }, "messageType": "BULK" }),
        ),
    )
    .await
    .err()
    .context("bad type accepted")?;
    assert!(err.to_string().contains("spec.messageType"), "{err}");
    create_raw(
        &e,
        &tr,
        topic(
            "t3",
            json!({ "brokerRef": { "name": "x" }, "messageType": "FIFO" }),
        ),
    )
    .await?;
    let err = e
        .api::<Topic>()
        .patch(
            "t3",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "messageType": "NORMAL" } })),
        )
        .await
        .err()
        .context("type change accepted")?;
    assert!(
        err.to_string().contains("messageType is immutable"),
        "{err}"
    );
    e.drop_namespace().await;
    Ok(())
}

fn merge_json(base: &mut serde_json::Value, overlay: &serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge_json(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn missing_nameserver_is_reported_without_touching_workloads() -> Result<()> {
    let e = env("no-ns").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    e.reconcile_broker("demo").await?;
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Degraded", "True", "NameserverNotFound")?;
    assert!(condition(&st.conditions, "Degraded")?
        .message
        .contains("names"));
    assert!(
        e.api::<StatefulSet>()
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "nothing created"
    );
    assert!(
        e.api::<Deployment>()
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "nothing created"
    );
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn replicated_group_of_three_gets_replica_ids_spread_pdb_and_leader_status() -> Result<()> {
    let e = env("replicated").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 3).await?;
    e.reconcile_nameserver("names").await?;
    let ns_sts = e.api::<StatefulSet>().get("names").await?;
    let ns_spec = ns_sts.spec.clone().context("spec")?;
    let script = ns_spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers[0].command.clone())
        .unwrap_or_default()
        .join(" ");
    let peers = (0..3)
        .map(|i| format!("names-{i}.names.{}.svc:9876", e.ns))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        script.contains(&format!("--controller-peers {peers} ")),
        "{script}"
    );
    assert!(script.contains("--data-dir /var/lib/ferromq"), "{script}");
    let claims = ns_spec.volume_claim_templates.unwrap_or_default();
    assert_eq!(
        claims.first().and_then(|c| c.metadata.name.as_deref()),
        Some("controller-data")
    );

    // A Broker whose Nameserver has no controller is refused, not crash-looped.
    e.api::<Nameserver>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "apiVersion": "ferromq.io/v1alpha1", "kind": "Nameserver",
                "metadata": { "name": "plain" }, "spec": { "replicas": 1, "image": "ferromq:test" } }))?,
        )
        .await?;
    e.create_broker("lonely", 1, 1, "ferromq-test-fixed")
        .await?;
    e.api::<Broker>()
        .patch(
            "lonely",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "nameserverRef": { "name": "plain" } } })),
        )
        .await?;
    e.reconcile_broker("lonely").await?;
    let st = e
        .api::<Broker>()
        .get("lonely")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Degraded", "True", "ControllerRequired")?;
    assert!(
        e.api::<StatefulSet>()
            .get_opt("lonely-group-0")
            .await?
            .is_none(),
        "no pods that would crash-loop"
    );

    let b = e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    e.api::<Broker>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "spec": { "storage": { "replicasPerGroup": 3, "minInSync": 2 } } }),
            ),
        )
        .await?;
    assert_eq!(b.spec.storage.replication_mode, ReplicationMode::Sync);
    e.reconcile_broker("demo").await?;
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    let spec = sts.spec.clone().context("spec")?;
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.clone().context("pod")?;
    let cmd = pod.containers[0].command.clone().unwrap_or_default();
    assert_eq!(cmd.first().map(String::as_str), Some("/bin/sh"));
    assert!(
        cmd.iter()
            .any(|c| c.contains(r#"--replica-id "$((ordinal + 1))""#) && !c.contains("--role")),
        "{cmd:?}"
    );
    let spread = pod
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
        .unwrap_or_default();
    assert_eq!(spread.len(), 1);
    assert_eq!(
        spread[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(
        spread[0]
            .pod_affinity_term
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get("ferromq.io/group"))
            .map(String::as_str),
        Some("demo-group-0")
    );
    let pdb = e.api::<PodDisruptionBudget>().get("demo-group-0").await?;
    assert_eq!(
        pdb.spec.and_then(|s| s.max_unavailable),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let toml = e
        .api::<ConfigMap>()
        .get("demo-config")
        .await?
        .data
        .unwrap_or_default()
        .remove("broker.toml")
        .unwrap_or_default();
    assert!(
        toml.contains("replication-mode = \"sync\"\nmin-in-sync = 2\n"),
        "{toml}"
    );

    // The controller's view, read through the admin API, lands in status.storage.
    e.admin.set_replication(vec![GroupReplicationStatus {
        group: "demo-group-0".into(),
        leader: Some(2),
        epoch: 5,
        in_sync: 2,
        in_sync_replicas: vec![2, 3],
    }]);
    e.mark_sts_ready("demo-group-0").await?;
    e.mark_deployment_ready("demo-proxy").await?;
    e.reconcile_broker("demo").await?;
    // Read back from the API server: the schema kept every field the operator wrote.
    let got = e.api::<Broker>().get("demo").await?;
    let st = got.status.clone().context("status")?;
    assert_condition(&st.conditions, "Ready", "True", "Ready")?;
    assert_eq!(
        st.storage.under_replicated_groups,
        Some(1),
        "2 of 3 in sync"
    );
    assert_eq!(st.storage.replication.len(), 1);
    let g = &st.storage.replication[0];
    assert_eq!(
        (g.leader, g.epoch, g.in_sync, g.in_sync_replicas.clone()),
        (Some(2), 5, 2, vec![2, 3])
    );
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn topic_is_created_updated_and_deleted_through_its_finalizer() -> Result<()> {
    let e = env("topic").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    let t = Topic::new(
        "orders",
        TopicSpec {
            broker_ref: BrokerRef {
                name: "demo".into(),
            },
            name: Some("Orders_EU".into()),
            queues: 8,
            message_type: MessageType::Fifo,
            permission: Permission::ReadWrite,
            retention: None,
        },
    );
    let topics = e.api::<Topic>();
    topics.create(&PostParams::default(), &t).await?;
    e.reconcile_topic("orders").await?; // adds the finalizer
    assert!(topics
        .get("orders")
        .await?
        .finalizers()
        .iter()
        .any(|f| f == controller::topic::FINALIZER));
    e.reconcile_topic("orders").await?;
    let held = e.admin.topics(ADMIN);
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].name.as_str(), held[0].queues, held[0].message_type),
        ("Orders_EU", 8, MessageType::Fifo)
    );
    let st = topics.get("orders").await?.status.context("status")?;
    assert_condition(&st.conditions, "Ready", "True", "Synced")?;
    assert_eq!(st.cluster.as_ref().map(|c| c.queues), Some(8));

    topics
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "queues": 16, "permission": "ReadOnly" } })),
        )
        .await?;
    e.reconcile_topic("orders").await?;
    let held = e.admin.topics(ADMIN);
    assert_eq!(
        (held[0].queues, held[0].permission),
        (16, Permission::ReadOnly)
    );
    let before = e.versions().await?;
    e.reconcile_topic("orders").await?;
    assert_eq!(
        before,
        e.versions().await?,
        "second reconcile changed something"
    );

    // A retention of its own is applied on change, shown in its largest unit, and removing
    // it goes back to the Broker's; one that does not parse is reported and not sent.
    let patch_retention = |r: serde_json::Value| {
        let topics = topics.clone();
        async move {
            topics
                .patch(
                    "orders",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "retention": r } })),
                )
                .await
        }
    };
    patch_retention(json!("24h")).await?;
    e.reconcile_topic("orders").await?;
    assert_eq!(e.admin.topics(ADMIN)[0].retention.as_deref(), Some("1d"));
    let st = topics.get("orders").await?.status.context("status")?;
    assert_condition(&st.conditions, "Ready", "True", "Synced")?;
    assert_eq!(
        st.cluster.as_ref().and_then(|c| c.retention.as_deref()),
        Some("1d")
    );
    patch_retention(json!("soon")).await?;
    e.reconcile_topic("orders").await?;
    let st = topics.get("orders").await?.status.context("status")?;
    assert_condition(&st.conditions, "Degraded", "True", "InvalidRetention")?;
    assert_eq!(
        e.admin.topics(ADMIN)[0].retention.as_deref(),
        Some("1d"),
        "a refused spec changes nothing on the cluster"
    );
    patch_retention(serde_json::Value::Null).await?;
    e.reconcile_topic("orders").await?;
    assert_eq!(e.admin.topics(ADMIN)[0].retention, None);
    let st = topics.get("orders").await?.status.context("status")?;
    assert_condition(&st.conditions, "Ready", "True", "Synced")?;

    // A broker group added later holds none of the topic until it is updated: the next
    // reconcile extends the topic to it (the spec did not change) and says so.
    e.admin.join_groups(ADMIN, &["demo-group-1"]);
    assert_eq!(
        e.admin.groups_without_topic(ADMIN, "Orders_EU").await?,
        vec!["demo-group-1".to_string()]
    );
    e.reconcile_topic("orders").await?;
    assert!(
        e.admin
            .groups_without_topic(ADMIN, "Orders_EU")
            .await?
            .is_empty(),
        "the topic was not extended to the new group"
    );
    assert!(e
        .events_for("Topic", "orders")
        .await?
        .iter()
        .any(|ev| ev.reason.as_deref() == Some("TopicExtended")
            && ev
                .note
                .as_deref()
                .is_some_and(|n| n.contains("demo-group-1"))));

    // Deleting while the cluster is unreachable keeps the resource (and the topic).
    e.admin.set_unreachable(true);
    topics.delete("orders", &DeleteParams::default()).await?;
    assert!(
        e.reconcile_topic("orders").await.is_err(),
        "cleanup must fail while the admin API is down"
    );
    assert!(
        topics.get_opt("orders").await?.is_some(),
        "finalizer holds the resource"
    );
    e.admin.set_unreachable(false);
    e.reconcile_topic("orders").await?;
    assert!(
        e.admin.topics(ADMIN).is_empty(),
        "topic deleted on the cluster"
    );
    assert!(
        topics.get_opt("orders").await?.is_none(),
        "resource gone after cleanup"
    );
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn topic_of_a_missing_broker_is_reported() -> Result<()> {
    let e = env("topic-nobroker").await?;
    let t = Topic::new(
        "t",
        TopicSpec {
            broker_ref: BrokerRef {
                name: "ghost".into(),
            },
            name: None,
            queues: 4,
            message_type: MessageType::Normal,
            permission: Permission::ReadWrite,
            retention: None,
        },
    );
    e.api::<Topic>().create(&PostParams::default(), &t).await?;
    e.reconcile_topic("t").await?;
    e.reconcile_topic("t").await?;
    let st = e.api::<Topic>().get("t").await?.status.context("status")?;
    assert_condition(&st.conditions, "Ready", "False", "BrokerNotFound")?;
    assert!(e.admin.topics(ADMIN).is_empty());
    // With the broker gone, deletion does not hang on the finalizer.
    e.api::<Topic>()
        .delete("t", &DeleteParams::default())
        .await?;
    e.reconcile_topic("t").await?;
    assert!(e.api::<Topic>().get_opt("t").await?.is_none());
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn only_one_replica_holds_the_lease() -> Result<()> {
    let e = env("lease").await?;
    let a = LeaseLock::new(
        e.client.clone(),
        &e.ns,
        "ferromq-operator",
        "replica-a",
        Duration::from_secs(2),
    );
    let b = LeaseLock::new(
        e.client.clone(),
        &e.ns,
        "ferromq-operator",
        "replica-b",
        Duration::from_secs(2),
    );
    assert!(a.try_acquire_or_renew().await?, "first candidate acquires");
    assert!(
        !b.try_acquire_or_renew().await?,
        "second candidate refused while the lease is live"
    );
    assert!(a.try_acquire_or_renew().await?, "holder renews");
    // The holder stops renewing: after the lease duration the standby takes over.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        b.try_acquire_or_renew().await?,
        "standby takes over an expired lease"
    );
    assert!(
        !a.try_acquire_or_renew().await?,
        "old holder cannot renew a lease it lost"
    );
    b.release().await?;
    assert!(
        a.try_acquire_or_renew().await?,
        "released lease is free at once"
    );
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn running_controller_reacts_to_watch_events() -> Result<()> {
    use futures::StreamExt;
    use kube::runtime::{watcher, Controller};
    let e = env("watch").await?;
    let ctx = e.ctx.clone();
    let ctrl = Controller::new(e.api::<Nameserver>(), watcher::Config::default())
        .owns(e.api::<StatefulSet>(), watcher::Config::default())
        .run(
            controller::nameserver::reconcile,
            controller::nameserver::error_policy,
            ctx,
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(ctrl);
    e.create_nameserver("names", 1).await?;
    let sts = e.api::<StatefulSet>();
    let mut found = false;
    for _ in 0..100 {
        if sts.get_opt("names").await?.is_some() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "controller created the StatefulSet within 10s");
    // Drift through the watch: a deleted child comes back without a manual reconcile.
    sts.delete("names", &DeleteParams::default()).await?;
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sts
            .get_opt("names")
            .await?
            .is_some_and(|s| s.metadata.deletion_timestamp.is_none())
        {
            back = true;
            break;
        }
    }
    handle.abort();
    assert!(back, "deleted StatefulSet re-created within 10s");
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn topic_with_a_conflicting_type_on_the_cluster_is_reported_not_changed() -> Result<()> {
    use ferromq_operator::crd::TopicClusterState;
    let e = env("topic-conflict").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    let existing = TopicClusterState {
        name: "payments".into(),
        queues: 4,
        message_type: MessageType::Normal,
        permission: Permission::ReadWrite,
        retention: None,
    };
    e.admin.upsert_topic(ADMIN, &existing).await?;
    let t = Topic::new(
        "payments",
        TopicSpec {
            broker_ref: BrokerRef {
                name: "demo".into(),
            },
            name: None,
            queues: 8,
            message_type: MessageType::Transaction,
            permission: Permission::ReadWrite,
            retention: None,
        },
    );
    e.api::<Topic>().create(&PostParams::default(), &t).await?;
    e.reconcile_topic("payments").await?;
    e.reconcile_topic("payments").await?;
    let st = e
        .api::<Topic>()
        .get("payments")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Degraded", "True", "MessageTypeConflict")?;
    assert_eq!(
        st.cluster.as_ref().map(|c| c.message_type),
        Some(MessageType::Normal),
        "status shows what the cluster holds"
    );
    assert_eq!(
        e.admin.topics(ADMIN),
        vec![existing],
        "the cluster's topic is left alone"
    );
    e.drop_namespace().await;
    Ok(())
}

// ---------------------------------------------------------------- users

/// A key of a Secret's data, as text.
fn secret_text(s: &Secret, key: &str) -> Result<String> {
    let bytes = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {:?} has no {key}", s.metadata.name))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

fn user_status(u: &User) -> Result<ferromq_operator::crd::UserStatus> {
    u.status.clone().context("user status")
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn user_gets_a_secret_and_its_policy_and_goes_through_its_finalizer() -> Result<()> {
    let e = env("user").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    let users = e.api::<User>();
    let secrets = e.api::<Secret>();
    let user: User = serde_json::from_value(json!({
        "apiVersion": "ferromq.io/v1alpha1", "kind": "User", "metadata": { "name": "orders-app" },
        "spec": { "brokerRef": { "name": "demo" }, "policies": [
            { "resource": "topic:orders-*", "actions": ["publish"] },
            { "resource": "topic:orders-secret", "actions": ["publish"], "effect": "deny" },
        ] } }))?;
    users.create(&PostParams::default(), &user).await?;
    e.reconcile_user("orders-app").await?; // adds the finalizer
    assert!(users
        .get("orders-app")
        .await?
        .finalizers()
        .iter()
        .any(|f| f == controller::user::FINALIZER));

    // A Broker without authentication: the User says so and nothing is made.
    e.reconcile_user("orders-app").await?;
    let st = user_status(&users.get("orders-app").await?)?;
    assert_condition(&st.conditions, "Ready", "False", "AuthDisabled")?;
    assert!(secrets.get_opt("orders-app").await?.is_none());
    assert!(e.admin.users(ADMIN).is_empty());

    // Authentication on: the Broker gets a generated super-user Secret it owns, its pods
    // bootstrap that user, and the operator signs its admin calls with it.
    e.api::<Broker>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "auth": { "enabled": true } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let broker = e.api::<Broker>().get("demo").await?;
    let su = secrets.get("demo-superuser").await?;
    assert!(owned_by(&su, "Broker", &broker.uid().unwrap_or_default()));
    assert_eq!(secret_text(&su, "accessKey")?, "admin");
    let su_key = secret_text(&su, "secretKey")?;
    assert_eq!(su_key.len(), 48, "192 random bits as hex");
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    let pod = sts.spec.and_then(|s| s.template.spec);
    let env_from = pod
        .as_ref()
        .and_then(|p| p.containers[0].env.clone())
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "FERROMQ_AUTH_SUPER_USER")
        .and_then(|v| v.value_from)
        .and_then(|v| v.secret_key_ref)
        .map(|r| (r.name, r.key));
    assert_eq!(
        env_from,
        Some(("demo-superuser".to_string(), "accessKey".to_string()))
    );
    let toml = e
        .api::<ConfigMap>()
        .get("demo-config")
        .await?
        .data
        .unwrap_or_default()
        .remove("broker.toml")
        .unwrap_or_default();
    assert!(toml.contains("auth = true"), "{toml}");
    assert_eq!(e.admin.signed_as(ADMIN).as_deref(), Some("admin"));
    e.admin.require_credentials(ADMIN, "admin", &su_key);

    e.reconcile_user("orders-app").await?;
    let u = users.get("orders-app").await?;
    let st = user_status(&u)?;
    assert_condition(&st.conditions, "Ready", "True", "Synced")?;
    assert_eq!(st.observed_generation, u.metadata.generation);
    assert_eq!(st.access_key.as_deref(), Some("orders-app"));
    assert_eq!(st.secret_name.as_deref(), Some("orders-app"));
    let secret = secrets.get("orders-app").await?;
    assert!(owned_by(&secret, "User", &u.uid().unwrap_or_default()));
    let key = secret_text(&secret, "secretKey")?;
    assert_eq!(secret_text(&secret, "accessKey")?, "orders-app");
    assert_eq!(
        secret_text(&secret, "endpoint")?,
        format!("demo.{}.svc:8081", e.ns)
    );
    let held = e.admin.users(ADMIN);
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].0.as_str(), held[0].1.as_str()),
        ("orders-app", key.as_str())
    );
    let mut acl = e.admin.acl(ADMIN, "orders-app");
    acl.sort();
    assert_eq!(
        acl,
        [
            "allow publish topic:orders-*",
            "deny publish topic:orders-secret"
        ]
    );
    let before = e.versions().await?;
    e.reconcile_user("orders-app").await?;
    e.reconcile_broker("demo").await?;
    assert_eq!(
        before,
        e.versions().await?,
        "second reconcile changed something"
    );

    // A spec change brings the cluster's policy along; the entry no longer listed goes.
    users
        .patch(
            "orders-app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "policies": [
                { "resource": "topic:orders-*", "actions": ["publish", "subscribe"] },
                { "resource": "group:billing", "actions": ["subscribe"], "sources": ["10.0.0.0/8"] },
            ] } })),
        )
        .await?;
    e.reconcile_user("orders-app").await?;
    let mut acl = e.admin.acl(ADMIN, "orders-app");
    acl.sort();
    assert_eq!(
        acl,
        [
            "allow publish,subscribe topic:orders-*",
            "allow subscribe group:billing from 10.0.0.0/8"
        ]
    );

    // What the schema lets through but the broker would refuse changes nothing and says why.
    for (policies, words) in [
        (
            json!([{ "resource": "topic:orders-*", "actions": ["publish"], "sources": ["10.0.0.0/33"] }]),
            "spec.policies[0]: source range \"10.0.0.0/33\"",
        ),
        (
            json!([{ "resource": "topic:a", "actions": ["publish"] }, { "resource": "topic:a", "actions": ["subscribe"] }]),
            "spec.policies[1] and spec.policies[0] are both allow entries for topic:a",
        ),
    ] {
        users
            .patch(
                "orders-app",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "policies": policies } })),
            )
            .await?;
        e.reconcile_user("orders-app").await?;
        let st = user_status(&users.get("orders-app").await?)?;
        assert_condition(&st.conditions, "Ready", "False", "InvalidPolicy")?;
        let msg = &condition(&st.conditions, "Ready")?.message;
        assert!(msg.contains(words), "{msg}");
        let mut acl = e.admin.acl(ADMIN, "orders-app");
        acl.sort();
        assert_eq!(acl.len(), 2, "a refused spec changed the cluster: {acl:?}");
    }
    users
        .patch(
            "orders-app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "policies": [
                { "resource": "topic:orders-*", "actions": ["publish"] },
            ] } })),
        )
        .await?;
    e.reconcile_user("orders-app").await?;
    assert_eq!(
        e.admin.acl(ADMIN, "orders-app"),
        ["allow publish topic:orders-*"]
    );

    // Deleting the Secret rotates the key: a new one is generated and given to the cluster.
    secrets
        .delete("orders-app", &DeleteParams::default())
        .await?;
    e.reconcile_user("orders-app").await?;
    let rotated = secret_text(&secrets.get("orders-app").await?, "secretKey")?;
    assert_ne!(rotated, key);
    assert_eq!(e.admin.users(ADMIN)[0].1, rotated);

    // The schema refuses unknown actions and effects and malformed resources outright.
    let ar = ApiResource::erase::<User>(&());
    for (policy, field) in [
        (
            json!({ "resource": "topic:a", "actions": ["send"] }),
            "actions",
        ),
        (
            json!({ "resource": "topic:a", "actions": ["publish"], "effect": "maybe" }),
            "effect",
        ),
        (
            json!({ "resource": "queue:a", "actions": ["publish"] }),
            "resource",
        ),
        (
            json!({ "resource": "topic:a*b", "actions": ["publish"] }),
            "resource",
        ),
    ] {
        let body = json!({
            "apiVersion": "ferromq.io/v1alpha1", "kind": "User", "metadata": { "name": "bad" },
            "spec": { "brokerRef": { "name": "demo" }, "policies": [policy] } });
        match create_raw(&e, &ar, body).await {
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains(field) => {}
            other => bail!("schema let a bad {field} through: {other:?}"),
        }
    }

    // A Secret of the same name the User does not own is never taken over.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": { "name": "other-app" }, "stringData": { "note": "not the operator's" } }))?;
    secrets.create(&PostParams::default(), &foreign).await?;
    let other: User = serde_json::from_value(json!({
        "apiVersion": "ferromq.io/v1alpha1", "kind": "User", "metadata": { "name": "other-app" },
        "spec": { "brokerRef": { "name": "demo" } } }))?;
    users.create(&PostParams::default(), &other).await?;
    e.reconcile_user("other-app").await?;
    e.reconcile_user("other-app").await?;
    let st = user_status(&users.get("other-app").await?)?;
    assert_condition(&st.conditions, "Ready", "False", "SecretConflict")?;
    assert!(secret_text(&secrets.get("other-app").await?, "secretKey").is_err());
    assert!(e.admin.users(ADMIN).iter().all(|u| u.0 != "other-app"));

    // Deletion removes the user from the cluster before the resource goes; while the admin
    // API is down the finalizer holds the resource.
    e.admin.set_unreachable(true);
    users.delete("orders-app", &DeleteParams::default()).await?;
    assert!(
        e.reconcile_user("orders-app").await.is_err(),
        "cleanup must fail while the admin API is down"
    );
    assert!(users.get_opt("orders-app").await?.is_some());
    e.admin.set_unreachable(false);
    e.reconcile_user("orders-app").await?;
    assert!(
        e.admin.users(ADMIN).iter().all(|u| u.0 != "orders-app"),
        "user deleted on the cluster"
    );
    assert!(e.admin.acl(ADMIN, "orders-app").is_empty());
    assert!(users.get_opt("orders-app").await?.is_none());
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn a_named_super_user_secret_must_exist_and_be_usable() -> Result<()> {
    let e = env("superuser").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    e.reconcile_broker("demo").await?;
    let sts_before = e.api::<StatefulSet>().get("demo-group-0").await?;
    e.api::<Broker>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "auth": { "enabled": true, "superUserSecretRef": { "name": "ops-admin" } } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Ready", "False", "SuperUserSecretNotFound")?;
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    assert_eq!(
        sts.resource_version(),
        sts_before.resource_version(),
        "a missing Secret must not roll the pods"
    );
    let secrets = e.api::<Secret>();
    let bad: Secret = serde_json::from_value(json!({
        "metadata": { "name": "ops-admin" },
        "stringData": { "accessKey": "ops", "secretKey": "short" } }))?;
    secrets.create(&PostParams::default(), &bad).await?;
    e.reconcile_broker("demo").await?;
    let st = e
        .api::<Broker>()
        .get("demo")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Ready", "False", "InvalidSuperUserSecret")?;
    let msg = &condition(&st.conditions, "Ready")?.message;
    assert!(
        msg.contains("key secretKey") && !msg.contains("short\""),
        "{msg}"
    );
    secrets
        .patch(
            "ops-admin",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "secretKey": "a-long-enough-secret" } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    assert_eq!(e.admin.signed_as(ADMIN).as_deref(), Some("ops"));
    assert!(
        secrets.get_opt("demo-superuser").await?.is_none(),
        "nothing generated when a Secret is named"
    );
    // A User may not take over the super user's access key.
    let u: User = serde_json::from_value(json!({
        "apiVersion": "ferromq.io/v1alpha1", "kind": "User", "metadata": { "name": "ops" },
        "spec": { "brokerRef": { "name": "demo" } } }))?;
    e.api::<User>().create(&PostParams::default(), &u).await?;
    e.reconcile_user("ops").await?;
    e.reconcile_user("ops").await?;
    let st = user_status(&e.api::<User>().get("ops").await?)?;
    assert_condition(&st.conditions, "Ready", "False", "InvalidAccessKey")?;
    assert!(e.admin.users(ADMIN).is_empty());
    e.drop_namespace().await;
    Ok(())
}

/// The pod-template annotation that follows the Secrets a workload's pods mount.
fn secrets_hash(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Option<String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("ferromq.io/secrets-hash").cloned())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn changing_the_super_user_secret_rolls_the_broker_pods() -> Result<()> {
    let e = env("superuser-roll").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.create_broker("demo", 1, 1, "ferromq-test-fixed").await?;
    e.api::<Broker>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "auth": { "enabled": true } } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    let before = secrets_hash(&sts.spec.clone().context("spec")?.template)
        .context("the broker pods mount the super user's Secret: a hash")?;
    let proxy_before = e.api::<Deployment>().get("demo-proxy").await?;
    // A second reconcile with nothing changed keeps the template.
    e.reconcile_broker("demo").await?;
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    assert_eq!(
        secrets_hash(&sts.spec.clone().context("spec")?.template).as_deref(),
        Some(before.as_str())
    );

    // The generated super user's secret key is rotated by hand.
    e.api::<Secret>()
        .patch(
            "demo-superuser",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "secretKey": "a-rotated-secret-key-0123" } })),
        )
        .await?;
    e.reconcile_broker("demo").await?;
    let sts = e.api::<StatefulSet>().get("demo-group-0").await?;
    let after = secrets_hash(&sts.spec.clone().context("spec")?.template).context("hash")?;
    assert_ne!(
        before, after,
        "a rotated super user must roll the broker pods"
    );
    let proxy = e.api::<Deployment>().get("demo-proxy").await?;
    assert_eq!(
        proxy.resource_version(),
        proxy_before.resource_version(),
        "the proxies mount no super user: they stay"
    );
    e.drop_namespace().await;
    Ok(())
}

/// Reconciles Nameserver `byo` and checks it is refused with `reason` and a message holding
/// `words`, with no StatefulSet made.
async fn refused(e: &Env, reason: &str, words: &str) -> Result<()> {
    e.reconcile_nameserver("byo").await?;
    let st = e
        .api::<Nameserver>()
        .get("byo")
        .await?
        .status
        .context("status")?;
    assert_condition(&st.conditions, "Ready", "False", reason)?;
    let msg = &condition(&st.conditions, "Ready")?.message;
    anyhow::ensure!(msg.contains(words), "{msg}");
    anyhow::ensure!(
        e.api::<StatefulSet>().get_opt("byo").await?.is_none(),
        "a refused Nameserver creates nothing"
    );
    Ok(())
}

/// Decoded `key` of Secret `name`.
async fn secret_data(e: &Env, name: &str, key: &str) -> Result<Vec<u8>> {
    let s = e.api::<Secret>().get(name).await?;
    s.data
        .and_then(|d| d.get(key).map(|b| b.0.clone()))
        .with_context(|| format!("Secret {name} has no {key}"))
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn internal_tls_issues_every_certificate_under_one_cluster_ca() -> Result<()> {
    use ferromq_operator::pki::{parse_pem_certs, unix_now, ClusterCa};
    let e = env("internal-tls").await?;
    e.create_storage_class("ferromq-test-fixed", false).await?;
    e.create_nameserver("names", 1).await?;
    e.api::<Nameserver>()
        .patch(
            "names",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "internalTls": { "enabled": true } } })),
        )
        .await?;
    e.reconcile_nameserver("names").await?;
    let ca_pem = secret_data(&e, "names-cluster-ca", "ca.crt").await?;
    let ca_key = secret_data(&e, "names-cluster-ca", "ca.key").await?;
    let ca = ClusterCa::from_pem("names-cluster-ca", &ca_pem, &ca_key, unix_now())?;
    let chains = |pem: &[u8], names: &[&str]| -> Result<()> {
        let leaf = parse_pem_certs(pem, "leaf")?.remove(0);
        anyhow::ensure!(
            leaf.signed_by(ca.signer_cert()),
            "not issued by the cluster CA"
        );
        for n in names {
            anyhow::ensure!(
                leaf.names.iter().any(|x| x == n),
                "{n} missing from {:?}",
                leaf.names
            );
        }
        Ok(())
    };
    chains(
        &secret_data(&e, "names-internal-tls", "tls.crt").await?,
        &["localhost", "127.0.0.1"],
    )?;
    let ns_leaf = parse_pem_certs(
        &secret_data(&e, "names-internal-tls", "tls.crt").await?,
        "l",
    )?;
    let wildcard = format!("*.names.{}.svc", e.ns);
    assert!(
        ns_leaf[0].names.contains(&wildcard),
        "{:?}",
        ns_leaf[0].names
    );
    assert_eq!(
        secret_data(&e, "names-internal-tls", "ca.crt").await?,
        ca_pem
    );
    let sts = e.api::<StatefulSet>().get("names").await?;
    let t = sts.spec.context("spec")?.template;
    assert!(secrets_hash(&t).is_some());
    let cmd = t.spec.context("pod")?.containers[0]
        .command
        .clone()
        .unwrap_or_default()
        .join(" ");
    assert!(
        cmd.contains("--tls required") && cmd.contains("--tls-ca"),
        "{cmd}"
    );

    // The Broker's groups and proxies get certificates from the same CA; the operator's admin
    // calls to it trust that CA.
    e.create_broker("demo", 2, 1, "ferromq-test-fixed").await?;
    e.reconcile_broker("demo").await?;
    for g in 0..2 {
        let name = format!("demo-group-{g}-internal-tls");
        chains(
            &secret_data(&e, &name, "tls.crt").await?,
            &[&format!("*.demo-group-{g}.{}.svc", e.ns), "127.0.0.1"],
        )?;
        let s = e.api::<Secret>().get(&name).await?;
        assert_eq!(
            s.labels().get("ferromq.io/cluster-ca").map(String::as_str),
            Some("names")
        );
    }
    chains(
        &secret_data(&e, "demo-proxy-tls", "tls.crt").await?,
        &[&format!("demo.{}.svc", e.ns), "127.0.0.1"],
    )?;
    assert_eq!(
        e.admin.trust(ADMIN).map(String::into_bytes),
        Some(ca_pem.clone()),
        "admin calls verify the proxies against the cluster CA"
    );
    // Nothing changes on a second round.
    let v1 = e.versions().await?;
    e.reconcile_nameserver("names").await?;
    e.reconcile_broker("demo").await?;
    assert_eq!(v1, e.versions().await?);

    // A user-provided CA: missing, without its key, not a CA: refused, nothing created.
    e.create_nameserver("byo", 1).await?;
    e.api::<Nameserver>()
        .patch(
            "byo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "internalTls": { "enabled": true, "caSecretRef": { "name": "my-ca" } } } })),
        )
        .await?;
    refused(&e, "CaSecretNotFound", "Secret my-ca").await?;
    let mine = ClusterCa::generate("my CA", unix_now())?;
    let s: Secret = serde_json::from_value(json!({
        "metadata": { "name": "my-ca" }, "stringData": { "ca.crt": mine.bundle_pem() } }))?;
    e.api::<Secret>().create(&PostParams::default(), &s).await?;
    refused(&e, "InvalidCaSecret", "has no key ca.key").await?;
    let (leaf, leaf_key) = mine.issue(&["x.example".to_string()], unix_now())?;
    e.api::<Secret>()
        .patch(
            "my-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "ca.crt": leaf, "ca.key": leaf_key } })),
        )
        .await?;
    refused(&e, "InvalidCaSecret", "is not a CA").await?;
    e.api::<Secret>()
        .patch(
            "my-ca",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "stringData": { "ca.crt": mine.bundle_pem(), "ca.key": mine.key_pem() } }),
            ),
        )
        .await?;
    e.reconcile_nameserver("byo").await?;
    let leaf = parse_pem_certs(&secret_data(&e, "byo-internal-tls", "tls.crt").await?, "l")?;
    assert!(leaf[0].signed_by(mine.signer_cert()));
    assert!(
        e.api::<Secret>().get_opt("byo-cluster-ca").await?.is_none(),
        "no CA generated when one is given"
    );
    assert!(e.api::<StatefulSet>().get_opt("byo").await?.is_some());
    e.drop_namespace().await;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run tests/suites/60-operator.sh"]
async fn a_generated_cluster_ca_is_renewed_and_its_predecessor_retired() -> Result<()> {
    use ferromq_operator::pki::{parse_pem_certs, unix_now, ClusterCa, CA_VALIDITY};
    let e = env("ca-rotation").await?;
    e.create_nameserver("names", 1).await?;
    e.api::<Nameserver>()
        .patch(
            "names",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "internalTls": { "enabled": true } } })),
        )
        .await?;
    // A generated CA four and a half years into its five: due for renewal.
    let old = ClusterCa::generate(
        "old CA",
        unix_now() - (CA_VALIDITY.as_secs() as i64) * 9 / 10,
    )?;
    let s: Secret = serde_json::from_value(json!({
        "metadata": { "name": "names-cluster-ca" },
        "stringData": { "ca.crt": old.bundle_pem(), "ca.key": old.key_pem() } }))?;
    e.api::<Secret>().create(&PostParams::default(), &s).await?;

    // Step 1: a new CA signs, the old one stays trusted; the leaf Secret carries both.
    e.reconcile_nameserver("names").await?;
    let bundle = parse_pem_certs(&secret_data(&e, "names-cluster-ca", "ca.crt").await?, "ca")?;
    assert_eq!(bundle.len(), 2);
    assert_eq!(&bundle[1], old.signer_cert());
    let ca = e.api::<Secret>().get("names-cluster-ca").await?;
    let renewed_at = ca
        .annotations()
        .get("ferromq.io/ca-renewed-at")
        .cloned()
        .context("renewed-at annotation")?;
    assert_eq!(
        secret_data(&e, "names-internal-tls", "ca.crt").await?,
        secret_data(&e, "names-cluster-ca", "ca.crt").await?
    );
    let leaf = parse_pem_certs(
        &secret_data(&e, "names-internal-tls", "tls.crt").await?,
        "l",
    )?;
    assert!(leaf[0].signed_by(&bundle[0]), "a new leaf is the new CA's");
    let hash_two = secrets_hash(
        &e.api::<StatefulSet>()
            .get("names")
            .await?
            .spec
            .context("spec")?
            .template,
    );
    // Within the grace period nothing more happens.
    e.reconcile_nameserver("names").await?;
    assert_eq!(
        parse_pem_certs(&secret_data(&e, "names-cluster-ca", "ca.crt").await?, "ca")?.len(),
        2
    );

    // Step 3 once two grace periods passed (the clock is moved by back-dating the renewal):
    // every leaf is the new CA's, so the old CA leaves the bundle, the leaf Secret follows and
    // the pods roll onto it.
    let earlier = renewed_at.parse::<i64>()? - 3 * 24 * 3600;
    e.api::<Secret>()
        .patch(
            "names-cluster-ca",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { "ferromq.io/ca-renewed-at": earlier.to_string() } } }),
            ),
        )
        .await?;
    e.reconcile_nameserver("names").await?;
    let bundle = parse_pem_certs(&secret_data(&e, "names-cluster-ca", "ca.crt").await?, "ca")?;
    assert_eq!(bundle.len(), 1, "the old CA is retired");
    assert_ne!(&bundle[0], old.signer_cert());
    assert_eq!(
        parse_pem_certs(
            &secret_data(&e, "names-internal-tls", "ca.crt").await?,
            "ca"
        )?
        .len(),
        1
    );
    e.reconcile_nameserver("names").await?;
    let hash_one = secrets_hash(
        &e.api::<StatefulSet>()
            .get("names")
            .await?
            .spec
            .context("spec")?
            .template,
    );
    assert_ne!(hash_two, hash_one, "the new bundle rolls the name servers");
    e.drop_namespace().await;
    Ok(())
}
