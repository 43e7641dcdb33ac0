//! `Nameserver`: the route registry that brokers register to and proxies read routes from.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ImagePullPolicy, PodPlacement};

/// Desired state of a FerroMQ name server ensemble: a StatefulSet of `ferromq nameserver`
/// pods behind a headless Service, so every replica has a stable DNS name brokers can resolve.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
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
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready replicas"
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
pub struct NameserverSpec {
    /// Number of name server pods. Brokers register to every one of them.
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
}

fn default_replicas() -> i32 {
    1
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
