//! `Topic`: a topic on a running FerroMQ cluster, created, updated and deleted through the
//! broker's admin API. A finalizer keeps the resource until the cluster has dropped the topic.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of one topic. The topic name defaults to `metadata.name`; set `spec.name` for
/// names Kubernetes object names cannot hold (upper case, `%`, `|`, `_`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "ferromq.io",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "ftp",
    category = "ferromq",
    doc = "A FerroMQ topic, kept in sync with the cluster through the admin API.",
    printcolumn(
        name = "Broker",
        type_ = "string",
        json_path = ".spec.brokerRef.name",
        description = "Broker cluster"
    ),
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.messageType",
        description = "Message type"
    ),
    printcolumn(
        name = "Queues",
        type_ = "integer",
        json_path = ".spec.queues",
        description = "Queues per broker group"
    ),
    printcolumn(
        name = "Retention",
        type_ = "string",
        json_path = ".spec.retention",
        description = "The topic's own retention (empty: the Broker's)"
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
pub struct TopicSpec {
    /// The Broker (same namespace) whose cluster holds the topic. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("brokerRef is immutable"))]
    pub broker_ref: BrokerRef,
    /// Topic name on the cluster; defaults to `metadata.name`. Letters, digits, `%`, `-`, `_`,
    /// `|`, at most 127 characters; names starting with `rmq_sys_`, `%RETRY%` or `%DLQ%` are
    /// reserved for the system. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 127), regex(pattern = r"^[%|a-zA-Z0-9_-]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("name is immutable"))]
    #[x_kube(validation = Rule::new("!self.startsWith('rmq_sys_') && !self.startsWith('%RETRY%') && !self.startsWith('%DLQ%')").message("system topic names are reserved"))]
    pub name: Option<String>,
    /// Queues per broker group. May only grow: shrinking would strand messages in the
    /// removed queues.
    #[serde(default = "default_queues")]
    #[schemars(range(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("queues may only grow"))]
    pub queues: i32,
    /// The one message type sends to this topic must use. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("messageType is immutable"))]
    pub message_type: MessageType,
    /// Whether clients may read, write, or both.
    #[serde(default)]
    pub permission: Permission,
    /// How long the topic's messages are served, e.g. `24h`, `7d` or `90m`; unset: as long
    /// as the brokers keep them (the Broker's `spec.storage.retention`, 72h by default). At
    /// most the Broker's retention, which bounds every topic: the commit log is shared by
    /// all topics, so older messages of this topic stop being delivered while their disk
    /// space is freed with the Broker's retention. Removing it goes back to the Broker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub retention: Option<String>,
}

fn default_queues() -> i32 {
    8
}

/// Names a Broker in the Topic's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct BrokerRef {
    /// `metadata.name` of the Broker.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// RocketMQ 5 message types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageType {
    /// Ordinary messages.
    #[default]
    Normal,
    /// Ordered per message group.
    Fifo,
    /// Delivered at a set time.
    Delay,
    /// Half messages committed or rolled back by the producer.
    Transaction,
    /// Waiting messages are delivered highest priority first.
    Priority,
}

impl MessageType {
    /// The upper-case name, as in the spec; Events and conditions show it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Normal => "NORMAL",
            MessageType::Fifo => "FIFO",
            MessageType::Delay => "DELAY",
            MessageType::Transaction => "TRANSACTION",
            MessageType::Priority => "PRIORITY",
        }
    }
}

/// Topic permission.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Permission {
    /// Producers and consumers both allowed.
    #[default]
    ReadWrite,
    /// Consumers only (drains a topic).
    ReadOnly,
    /// Producers only.
    WriteOnly,
}

impl Permission {
    /// The short form `ferromq admin` prints (`rw`, `r`, `w`); Events show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadWrite => "rw",
            Permission::ReadOnly => "r",
            Permission::WriteOnly => "w",
        }
    }
}

/// What the operator last observed of a Topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The topic as the cluster reported it after the last reconcile; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<TopicClusterState>,
    /// `Ready`, `Progressing` and `Degraded`, following the Kubernetes API conventions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A topic as the cluster holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicClusterState {
    /// Topic name on the cluster.
    pub name: String,
    /// Queues per broker group.
    pub queues: i32,
    /// Message type.
    pub message_type: MessageType,
    /// Permission.
    pub permission: Permission,
    /// The topic's own retention, written in its largest whole unit (`24h` reads as `1d`);
    /// absent: the brokers' retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}
