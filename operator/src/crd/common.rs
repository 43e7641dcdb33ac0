//! Pieces of spec shared by several kinds: image pull policy, pod placement and logging.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
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
