//! `Nameserver`: the route registry that brokers register to and proxies read routes from.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::broker::SecretRef;
use super::common::{ImagePullPolicy, PodPlacement, PodTemplate};

/// Desired state of a FerroMQ name server ensemble: a StatefulSet of `ferromq nameserver`
/// pods behind a headless Service, so every replica has a stable DNS name brokers can resolve.
/// With `controller.enabled` every pod also runs a peer of the replication controller (a Raft
/// group over all the ensemble's pods) that replicated broker groups need.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "ferromq.io",
    version = "v1alpha1",
    kind = "Nameserver",
    namespaced,
    status = "NameserverStatus",
    shortname = "fns",
    category = "ferromq",
    doc = "A FerroMQ name server ensemble (route registry).",
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired replicas"
    ),
    printcolumn(
        name = "Ready-Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready replicas"
    ),
    printcolumn(
        name = "Controller",
        type_ = "boolean",
        json_path = ".spec.controller.enabled",
        description = "Runs the replication controller"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Status of the Ready condition: True or False"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.controller) || !self.controller.enabled || self.replicas in [1, 3, 5]").message("the replication controller needs 1, 3 or 5 replicas (a Raft majority)"))]
#[x_kube(validation = Rule::new("(has(self.controller) && self.controller.enabled) == (has(oldSelf.controller) && oldSelf.controller.enabled)").message("controller.enabled cannot change once set; create a new Nameserver").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.controller) || !self.controller.enabled || self.replicas == oldSelf.replicas").message("replicas cannot change while the replication controller runs (its Raft membership is fixed at creation)").reason(Reason::FieldValueForbidden))]
pub struct NameserverSpec {
    /// Number of name server pods. Brokers register to every one of them. Fixed once the
    /// replication controller runs.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Container image that holds the `ferromq` binary.
    #[schemars(length(min = 1))]
    pub image: String,
    /// When to pull the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,
    /// CPU and memory requests and limits of each pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scheduling constraints: node selector, affinity, tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PodPlacement>,
    /// The replication controller, needed by Brokers with `replicasPerGroup` > 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerSpec>,
    /// Labels, annotations, pull secrets, priority, spread constraints, environment and
    /// security contexts added to the name server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
    /// TLS on every internal link of the cluster this Nameserver anchors: name servers and the
    /// Raft between them, and every Broker that references this Nameserver (broker to name
    /// server and controller, replication between group members, proxy to broker). Set here,
    /// not on the Broker, because all of them must trust one CA. Unset or `enabled: false`:
    /// internal links are plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls: Option<InternalTls>,
}

/// The cluster CA and the server certificates the operator issues under it.
///
/// With `enabled`, every name server, broker and proxy pod gets `--tls required` (internal
/// ports only: a proxy's client port keeps `spec.compute.tls` and accepts plaintext too),
/// `--tls-cert`/`--tls-key` (a certificate for every name its peers dial) and `--tls-ca` (the
/// CA bundle it verifies its peers against). The operator renews a certificate when a third of
/// its life is left (CA: 5 years, leaf: 1 year) and renews its own CA keeping the old one
/// trusted until every certificate moved; renewed certificates roll the pods through the usual
/// rolling logic. Turning it on or off rolls every pod of the cluster; internal links between
/// pods on either side of the change fail until the roll completes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InternalTls {
    /// Serve and dial TLS on every internal link. Off by default so that upgrading the
    /// operator restarts nothing.
    #[serde(default)]
    pub enabled: bool,
    /// Secret (same namespace) with the CA to issue from: `ca.crt` (PEM, a CA certificate,
    /// optionally followed by older CAs still trusted) and `ca.key` (its PEM private key), e.g.
    /// cert-manager's CA issuer Secret. The operator never renews a CA it was given. Unset:
    /// the operator generates `<nameserver>-cluster-ca`, owns it and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
}

impl NameserverSpec {
    /// True when the cluster's internal links use TLS.
    pub fn internal_tls_enabled(&self) -> bool {
        self.internal_tls.as_ref().is_some_and(|t| t.enabled)
    }
}

fn default_replicas() -> i32 {
    1
}

/// The replication controller: a Raft group formed by every name server pod (`ferromq
/// nameserver --controller-peers`, all pods' stable addresses in ordinal order) that holds,
/// per replicated broker group, its members, leader, leader epoch and in-sync set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerSpec {
    /// Run a controller peer in every name server pod. Chosen at creation: the Raft state
    /// lives on per-pod claims, so turning it on or off means a new Nameserver.
    pub enabled: bool,
    /// Each pod's volume for the Raft log and state (claim template `controller-data`), so
    /// the controller survives pod restarts.
    #[serde(default)]
    pub volume: ControllerVolume,
}

impl NameserverSpec {
    /// True when the pods run the replication controller.
    pub fn controller_enabled(&self) -> bool {
        self.controller.as_ref().is_some_and(|c| c.enabled)
    }
}

/// The claim each controller peer keeps its Raft state on. Immutable: claim templates of a
/// StatefulSet cannot change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('0'))").message("size must be a positive quantity such as 1Gi"))]
#[x_kube(validation = Rule::new("self == oldSelf").message("the controller volume cannot change (StatefulSet claim templates are immutable)").reason(Reason::FieldValueForbidden))]
pub struct ControllerVolume {
    /// Requested capacity, a Kubernetes quantity; the Raft state is small (a few MiB).
    #[serde(default = "default_controller_size")]
    #[schemars(length(min = 1, max = 32))]
    pub size: String,
    /// StorageClass of the claims; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_controller_size() -> String {
    "1Gi".to_string()
}

impl Default for ControllerVolume {
    fn default() -> Self {
        ControllerVolume {
            size: default_controller_size(),
            storage_class_name: None,
        }
    }
}

/// What the operator last observed of a Nameserver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameserverStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods created by the StatefulSet.
    #[serde(default)]
    pub replicas: i32,
    /// Pods passing their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Stable `host:port` of every replica, in the form brokers and proxies use.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `Ready`, `Progressing` and `Degraded`, following the Kubernetes API conventions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
