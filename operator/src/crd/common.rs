//! Pieces of spec shared by several kinds: image pull policy, pod placement, the pod template
//! overlay and logging.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, SecurityContext, Toleration,
    TopologySpreadConstraint,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When the kubelet pulls the container image (the Kubernetes `imagePullPolicy`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node does not have the image (the default).
    #[default]
    IfNotPresent,
    /// Never pull; the image must already be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The string Kubernetes expects in a container spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// How the FerroMQ processes of a resource log (their `FERROMQ_LOG` and `FERROMQ_LOG_FORMAT`).
/// Changing it rolls the pods like any other template change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    /// What to log: `error`, `warn`, `info` (the default), `debug` or `trace`, optionally
    /// followed by per-crate directives such as `info,ferromq_store=debug`.
    #[serde(default = "default_log_level")]
    #[schemars(regex(
        pattern = r"^(off|error|warn|info|debug|trace)(,[a-z0-9_:]+=(off|error|warn|info|debug|trace))*$"
    ))]
    pub level: String,
    /// Log line format: `Text` for people, `Json` (one object per line) for log collectors.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingSpec {
    fn default() -> Self {
        LoggingSpec {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_string()
}

/// Log line format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the current span.
    Json,
}

impl LogFormat {
    /// The value of `ferromq --log-format`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where the pods of a tier may be scheduled. Copied verbatim into the pod template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPlacement {
    /// Node labels a node must carry to run these pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Node and pod affinity / anti-affinity rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Taints these pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
}

/// Additions to the pods of one tier, merged into the pod template the operator builds (a
/// field left unset keeps the operator's choice). Changing any of it rolls that tier's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.labels) || !self.labels.exists(k, k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by', 'ferromq.io/group'])").message("podTemplate.labels must not set the operator's selector labels (app.kubernetes.io/name, instance, component, managed-by, ferromq.io/group)"))]
#[x_kube(validation = Rule::new("!has(self.annotations) || !('ferromq.io/config-hash' in self.annotations || 'ferromq.io/secrets-hash' in self.annotations)").message("podTemplate.annotations must not set ferromq.io/config-hash or ferromq.io/secrets-hash (the operator's)"))]
#[x_kube(validation = Rule::new("!has(self.env) || self.env.all(e, !(e.name in ['FERROMQ_POD_NAME', 'FERROMQ_POD_NAMESPACE', 'FERROMQ_POD_IP', 'FERROMQ_HOST_IP', 'FERROMQ_GROUP', 'FERROMQ_ADVERTISE_ADDR', 'FERROMQ_CLUSTER_NAME', 'FERROMQ_LOG', 'FERROMQ_LOG_FORMAT']))").message("podTemplate.env must not set a variable the operator sets (FERROMQ_POD_*, FERROMQ_HOST_IP, FERROMQ_GROUP, FERROMQ_ADVERTISE_ADDR, FERROMQ_CLUSTER_NAME, FERROMQ_LOG, FERROMQ_LOG_FORMAT); use spec.logging or compute.service.advertisedAddress"))]
pub struct PodTemplate {
    /// Labels added to every pod (not to the selector). The operator's own keys are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to every pod (e.g. for a service mesh or a log collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Secrets the kubelet uses to pull the image from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// PriorityClass of the pods (e.g. one that keeps brokers from being preempted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// How the pods spread over zones or nodes; added to the operator's own placement (a
    /// replicated group's preferred anti-affinity stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Environment variables appended to the FerroMQ container's. The ones the operator sets
    /// are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub env: Option<Vec<EnvVar>>,
    /// Pod security context. Fields set here replace the operator's; the rest keep its
    /// defaults (non-root user 65532, fsGroup 65532, RuntimeDefault seccomp profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Security context of the FerroMQ container. Fields set here replace the operator's; the
    /// rest keep its defaults (no privilege escalation, every capability dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
}
