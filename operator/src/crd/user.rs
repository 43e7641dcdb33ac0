//! `User`: a user of a FerroMQ cluster whose Broker runs with `spec.auth.enabled`, like
//! Strimzi's `KafkaUser`. The spec is the user's ACL policy; the operator generates the secret
//! key, keeps it in a Secret it owns, creates the user and its policy on the cluster through the
//! admin API (as the Broker's super user) and deletes the user when the resource goes.
//!
//! The policy speaks the broker's own vocabulary (`ferromq-auth`): resources `*`, `cluster`,
//! `topic:NAME`, `topic:PREFIX*`, `topic:*`, the same for `group:`; actions `publish`,
//! `subscribe`, `create`, `update`, `delete`, `get`, `list`, `all`; effect `allow` or `deny`
//! (deny wins); optional source ranges. The schema refuses the worst mistakes at `kubectl apply`
//! (its action and effect lists are generated from the auth crate's own types); everything else
//! is checked by the auth crate's parser before any admin call, and a refusal becomes
//! `Ready=False` with reason `InvalidPolicy` naming the entry.

use ferromq_auth::{Action, Effect};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::topic::BrokerRef;

/// Desired state of one user of a FerroMQ cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "ferromq.io",
    version = "v1alpha1",
    kind = "User",
    namespaced,
    status = "UserStatus",
    shortname = "fus",
    category = "ferromq",
    doc = "A FerroMQ user: an access key, a generated secret kept in a Secret the operator owns, and an ACL policy, kept in sync with the cluster through the admin API.",
    printcolumn(
        name = "Broker",
        type_ = "string",
        json_path = ".spec.brokerRef.name",
        description = "Broker cluster"
    ),
    printcolumn(
        name = "Access-Key",
        type_ = "string",
        json_path = ".status.accessKey",
        description = "Access key clients sign with"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secretName",
        description = "Secret holding accessKey and secretKey"
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
pub struct UserSpec {
    /// The Broker (same namespace) whose cluster the user belongs to; it must run with
    /// `spec.auth.enabled`. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("brokerRef is immutable"))]
    pub broker_ref: BrokerRef,
    /// Access key (user name) on the cluster, what clients put in their credentials; defaults to
    /// `metadata.name`. Letters, digits and `. _ - @`, at most 128 characters. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._@-]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("accessKey is immutable"))]
    pub access_key: Option<String>,
    /// `normal`: bound by `policies` (allowed only what an allow entry grants and no deny entry
    /// refuses). Super users cannot be made from a resource: they bypass every policy and manage
    /// users, so anyone allowed to create User resources would become the cluster's
    /// administrator; the Broker's super user (`spec.auth.superUserSecretRef`) is the one.
    #[serde(default)]
    pub kind: UserKind,
    /// The user's whole ACL policy: entries not listed here are removed from the cluster. At
    /// most one entry per resource and effect (merge their actions). Empty: the user may do
    /// nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub policies: Vec<PolicySpec>,
}

/// The kinds of user a resource may ask for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    /// Bound by its policies.
    #[default]
    Normal,
}

impl UserKind {
    /// The kind as the admin API names it.
    pub fn as_auth(self) -> ferromq_auth::UserKind {
        match self {
            UserKind::Normal => ferromq_auth::UserKind::Normal,
        }
    }
}

/// One entry of a user's ACL policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// The resources the entry is about: `*` (everything, the cluster included), `cluster`,
    /// `topic:NAME`, `topic:PREFIX*`, `topic:*`, `group:NAME`, `group:PREFIX*` or `group:*`.
    /// Names hold letters, digits and `% | _ - .`; a `*` only at the end.
    #[schemars(
        length(min = 1, max = 262),
        regex(pattern = r"^(\*|cluster|(topic|group):(\*|[A-Za-z0-9%|_.-]+\*?))$")
    )]
    pub resource: String,
    /// Actions the entry allows or denies: `publish`, `subscribe`, `create`, `update`,
    /// `delete`, `get`, `list`, or `all` (which also covers actions added later).
    #[schemars(schema_with = "actions_schema")]
    pub actions: Vec<String>,
    /// `allow` (default) or `deny`; a matching deny entry wins over every allow entry.
    #[serde(default = "default_effect")]
    #[schemars(schema_with = "effect_schema")]
    pub effect: String,
    /// Source address ranges (CIDR, or one address) the entry is limited to; empty: from
    /// anywhere. Behind a Service with `externalTrafficPolicy: Cluster` clients appear with a
    /// node's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub sources: Vec<String>,
}

fn default_effect() -> String {
    Effect::Allow.to_string()
}

/// The action names of the schema: the auth crate's own list plus `all`, so the schema cannot
/// drift from what the broker reads.
pub fn action_names() -> Vec<String> {
    Action::EVERY
        .iter()
        .map(|a| a.as_str().to_string())
        .chain(std::iter::once("all".to_string()))
        .collect()
}

fn actions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 8,
        "items": { "type": "string", "enum": action_names() },
        "description": "Actions the entry allows or denies: `publish`, `subscribe`, `create`, `update`, `delete`, `get`, `list`, or `all` (which also covers actions added later)."
    })
}

fn effect_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<String> = [Effect::Allow, Effect::Deny]
        .iter()
        .map(ToString::to_string)
        .collect();
    schemars::json_schema!({
        "type": "string",
        "enum": names,
        "default": default_effect(),
        "description": "`allow` (default) or `deny`; a matching deny entry wins over every allow entry."
    })
}

/// What the operator last observed of a User.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The access key the user has on the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    /// The Secret (same namespace, owned by this User) holding `accessKey`, `secretKey` and
    /// `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `resourceVersion` of the Secret whose key the cluster was last given: when the Secret
    /// changes (deleted and regenerated, or edited), the new key is sent to the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<String>,
    /// Broker groups the Broker had when the user was last written to the cluster: every group
    /// keeps its own copy of users and policies, so a group added later gets them at the next
    /// reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_groups: Option<i32>,
    /// `Ready`, `Progressing` and `Degraded`, following the Kubernetes API conventions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_lists_exactly_the_actions_and_effects_the_auth_crate_reads() {
        for name in action_names() {
            assert!(
                ferromq_auth::ActionSet::parse_list([name.as_str()]).is_ok(),
                "{name}"
            );
        }
        assert_eq!(action_names().len(), Action::EVERY.len() + 1);
        for e in ["allow", "deny"] {
            assert!(e.parse::<Effect>().is_ok());
        }
        assert_eq!(default_effect(), "allow");
    }
}
