//! `Broker`: the storage tier (broker groups; with `replicasPerGroup` > 1 each group is a
//! replicated set of members whose leader the name servers' replication controller elects) and
//! the compute tier (stateless proxies that clients talk to), scaled separately.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ImagePullPolicy, LoggingSpec, PodPlacement, PodTemplate};

/// Desired state of a FerroMQ cluster's data plane. `spec.storage` becomes one StatefulSet per
/// broker group; `spec.compute` becomes the proxy Deployment behind the client Service on 8081.
/// The scale subresource drives `spec.compute.replicas`, so `kubectl scale` and a
/// HorizontalPodAutoscaler touch the proxies alone.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "ferromq.io",
    version = "v1alpha1",
    kind = "Broker",
    namespaced,
    status = "BrokerStatus",
    shortname = "fbk",
    category = "ferromq",
    doc = "A FerroMQ broker cluster: storage tier (broker groups) and compute tier (proxies).",
    scale(
        spec_replicas_path = ".spec.compute.replicas",
        status_replicas_path = ".status.compute.replicas",
        label_selector_path = ".status.compute.selector"
    ),
    printcolumn(
        name = "Groups",
        type_ = "integer",
        json_path = ".spec.storage.groups",
        description = "Broker groups (shards)"
    ),
    printcolumn(
        name = "Storage-Ready",
        type_ = "integer",
        json_path = ".status.storage.readyGroups",
        description = "Groups whose every replica is ready"
    ),
    printcolumn(
        name = "Under-Replicated",
        type_ = "integer",
        json_path = ".status.storage.underReplicatedGroups",
        description = "Replicated groups with fewer in-sync members than replicas, or no leader"
    ),
    printcolumn(
        name = "Leaders",
        type_ = "string",
        json_path = ".status.storage.replication[*].leader",
        description = "Replica id of each replicated group's leader, in group order",
        priority = 1
    ),
    printcolumn(
        name = "Epochs",
        type_ = "string",
        json_path = ".status.storage.replication[*].epoch",
        description = "Leader epoch of each replicated group, in group order",
        priority = 1
    ),
    printcolumn(
        name = "In-Sync",
        type_ = "string",
        json_path = ".status.storage.replication[*].inSync",
        description = "In-sync members of each replicated group, in group order",
        priority = 1
    ),
    printcolumn(
        name = "Proxies",
        type_ = "integer",
        json_path = ".spec.compute.replicas",
        description = "Desired proxy replicas"
    ),
    printcolumn(
        name = "Proxies-Ready",
        type_ = "integer",
        json_path = ".status.compute.readyReplicas",
        description = "Ready proxy replicas"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "Address clients connect to",
        priority = 1
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
pub struct BrokerSpec {
    /// The Nameserver (same namespace) the brokers register to and the proxies read routes from.
    pub nameserver_ref: NameserverRef,
    /// Container image that holds the `ferromq` binary, used by both tiers.
    #[schemars(length(min = 1))]
    pub image: String,
    /// When to pull the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,
    /// The storage tier: broker groups with persistent volumes.
    pub storage: StorageSpec,
    /// The compute tier: stateless proxies serving the RocketMQ 5 gRPC protocol on port 8081.
    pub compute: ComputeSpec,
    /// Extra broker settings rendered into `broker.toml` (kebab-case keys, string values).
    /// Changing them rolls the broker pods one at a time: in a replicated group followers
    /// first, then the leader after its lead moved to an up-to-date in-sync member. A key the
    /// broker does not know, a value it cannot read, or a key the operator sets itself
    /// (`flush`, `nameservers`, `group`, ...) is refused with reason `InvalidConfig` and
    /// nothing is rolled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Log level and format of the broker and proxy pods (default: `info`, `Text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
    /// Authentication and authorization (RocketMQ 5 signed requests, users and ACL policies).
    /// Unset or `enabled: false`: the broker's default, no checks at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
}

impl BrokerSpec {
    /// True when the brokers require signed requests.
    pub fn auth_enabled(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| a.enabled)
    }
}

/// Authentication of a Broker's cluster. Turning it on (or changing the super user's Secret)
/// rolls the broker pods; the proxies forward each caller's signed headers and hold no users.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Require signed requests on the RocketMQ and admin APIs and enforce users' ACL policies
    /// (`ferromq broker` key `auth`). The remoting protocol checks no signatures, so it stays
    /// off. Clients then need credentials: create `User` resources for them.
    #[serde(default)]
    pub enabled: bool,
    /// Secret (same namespace) holding the bootstrap super user: keys `accessKey` and
    /// `secretKey` (8 to 256 printable ASCII characters). Every broker pod creates or updates
    /// that super user at start-up, and the operator signs its own admin calls with it. Unset:
    /// the operator generates `<broker>-superuser` (access key `admin`, a random secret key)
    /// and owns it; deleting it makes a new one, which the brokers take at their next restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub super_user_secret_ref: Option<SecretRef>,
}

/// Names a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// `metadata.name` of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Names a Nameserver in the Broker's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct NameserverRef {
    /// `metadata.name` of the Nameserver.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// The storage tier: `groups` shards, each a StatefulSet of `replicasPerGroup` pods. With more
/// than one pod per group, pod ordinal `i` is member `--replica-id i+1` of a replicated group and
/// the replication controller (the Nameserver's `controller`) elects its leader.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minInSync) || self.minInSync <= self.replicasPerGroup").message("minInSync must not exceed replicasPerGroup"))]
#[x_kube(validation = Rule::new("(self.replicasPerGroup > 1) == (oldSelf.replicasPerGroup > 1)").message("replicasPerGroup cannot change between 1 (unreplicated) and more (replicated): an unreplicated group's data has no journal for followers to copy; create a new Broker").reason(Reason::FieldValueForbidden))]
pub struct StorageSpec {
    /// Number of broker groups (shards). Growing adds groups; shrinking drains the removed
    /// groups through the admin API before their StatefulSets are deleted.
    #[schemars(range(min = 1, max = 64))]
    pub groups: i32,
    /// Pods per group. 1: an unreplicated group (one process on one volume). More: a
    /// replicated group, one leader and followers that copy its commit log and take over when
    /// it fails; this needs the referenced Nameserver to run the replication controller
    /// (`spec.controller.enabled`), otherwise the Broker is refused with `ControllerRequired`.
    /// A replicated group may grow or shrink (down to 2); changing between 1 and more is
    /// refused: create a new Broker.
    #[serde(default = "default_replicas_per_group")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas_per_group: i32,
    /// The persistent volume of each broker pod.
    pub volume: VolumeSpec,
    /// When the commit log is flushed to disk before a send is acknowledged.
    #[serde(default)]
    pub flush_mode: FlushMode,
    /// When a replicated group acknowledges a send (ignored with one replica per group).
    #[serde(default)]
    pub replication_mode: ReplicationMode,
    /// A replicated group refuses sends while fewer of its members (the leader included) are
    /// in sync; at most `replicasPerGroup`. 2 with 3 replicas keeps every acknowledged
    /// message on two volumes at all times. Ignored with one replica per group.
    #[serde(default = "default_min_in_sync")]
    #[schemars(range(min = 1, max = 5))]
    pub min_in_sync: i32,
    /// How long each broker keeps a commit log segment after its last write, e.g. `7d` or
    /// `72h` (default 72h). Expired segments are deleted whether or not every consumer group
    /// has read them; the segment being written is never deleted, and a consumer behind the
    /// new start resumes there. An unreadable value is refused with `InvalidConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub retention: Option<String>,
    /// Largest commit log of each broker pod, e.g. `40GiB`: the oldest segments are deleted
    /// beyond it. Keep it below the volume size. Unset: no size limit, only `retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub retention_bytes: Option<String>,
    /// Percent of the volume in use above which a broker refuses sends until retention frees
    /// space (default 90). The Broker's pods stay ready so consumers can drain them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub disk_high_water: Option<i32>,
    /// CPU and memory of each broker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scheduling constraints of broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PodPlacement>,
    /// Labels, annotations, pull secrets, priority, spread constraints, environment and
    /// security contexts added to the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

fn default_replicas_per_group() -> i32 {
    1
}

fn default_min_in_sync() -> i32 {
    1
}

impl StorageSpec {
    /// True when each group is a replicated set of members (more than one pod per group).
    pub fn replicated(&self) -> bool {
        self.replicas_per_group > 1
    }
}

/// A broker pod's volume. The size may only grow: growing it expands the existing claims in
/// place (the storage class must allow volume expansion).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('0'))").message("size must be a positive quantity such as 10Gi"))]
#[x_kube(validation = Rule::new("!isQuantity(oldSelf.size) || !isQuantity(self.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0").message("storage size may only grow").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storageClassName cannot change once set").reason(Reason::FieldValueForbidden))]
pub struct VolumeSpec {
    /// Requested capacity, a Kubernetes quantity (`50Gi`).
    #[schemars(length(min = 1, max = 32))]
    pub size: String,
    /// StorageClass of the claims; the cluster default when unset. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Commit-log flush policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FlushMode {
    /// Acknowledge after the write reaches the page cache; flush in the background.
    #[default]
    Async,
    /// Acknowledge only after fsync.
    Sync,
}

/// When a replicated group acknowledges a send.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReplicationMode {
    /// Acknowledge once the leader has written the message; followers copy it afterwards, so a
    /// leader that dies with its volume can lose what they had not fetched yet.
    Async,
    /// Acknowledge once every in-sync member holds the message (on disk too with `flushMode:
    /// Sync`); a failover elects only from the in-sync set, so no acknowledged message is lost.
    #[default]
    Sync,
}

impl FlushMode {
    /// Value used in `broker.toml`.
    pub fn as_config(self) -> &'static str {
        match self {
            FlushMode::Async => "async",
            FlushMode::Sync => "sync",
        }
    }
}

impl ReplicationMode {
    /// Value used in `broker.toml`.
    pub fn as_config(self) -> &'static str {
        match self {
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
        }
    }
}

/// The compute tier: stateless proxies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeSpec {
    /// Number of proxy pods; the target of the scale subresource.
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// CPU and memory of each proxy pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// When set, a HorizontalPodAutoscaler scales this Broker's compute tier within these bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Scheduling constraints of proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PodPlacement>,
    /// Certificate of the client port. The port takes TLS and plaintext either way (the Java
    /// and Go clients default to TLS, the others to plaintext); unset, the proxies serve their
    /// certificate from the cluster CA when the Nameserver's `internalTls` is on, otherwise
    /// each makes a self-signed certificate at start-up, which the Java and Go clients accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Labels, annotations, pull secrets, priority, spread constraints, environment and
    /// security contexts added to the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
    /// The client Service (named like the Broker): its type, so clients outside the cluster
    /// can connect, and its annotations. Unset: a ClusterIP Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ClientService>,
}

/// The client Service in front of the proxies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.nodePort) || self.type != 'ClusterIP'").message("nodePort needs type NodePort or LoadBalancer"))]
pub struct ClientService {
    /// `ClusterIP` (the default: in-cluster clients only), `NodePort` (every node's address on
    /// `nodePort`) or `LoadBalancer` (an external address from the cloud's load balancer).
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations of the Service, e.g. the cloud provider's load-balancer settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Node port of the client port with `NodePort` or `LoadBalancer`; unset, Kubernetes
    /// picks one from its node-port range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    /// `host:port` clients should use, when neither the Service's DNS name nor the address
    /// Kubernetes reports reaches them (a DNS name in front of the load balancer, a port
    /// forward). Becomes `status.endpoint` and the address the proxies advertise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 261),
        regex(pattern = r"^[^:\s]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$")
    )]
    pub advertised_address: Option<String>,
}

/// Type of the client Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster at `<broker>.<namespace>.svc:8081`.
    #[default]
    ClusterIP,
    /// Also reachable at every node's address on the node port.
    NodePort,
    /// Also reachable at the address the cloud's load balancer gets.
    LoadBalancer,
}

impl ServiceType {
    /// The Service's `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The proxies' TLS certificate, from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// A `kubernetes.io/tls` Secret in the Broker's namespace: `tls.crt` (PEM chain) and
    /// `tls.key` (PEM key), e.g. made by cert-manager. Proxies read it at start-up; a renewed
    /// certificate rolls them (the operator re-reads the Secret at least every 5 minutes).
    /// With the Nameserver's internal TLS on, the operator's own admin calls verify this
    /// certificate against the cluster CA plus the Secret's `ca.crt` (cert-manager writes it).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Bounds of the compute tier's HorizontalPodAutoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct Autoscaling {
    /// Lower bound of proxy replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Upper bound of proxy replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) the autoscaler aims for.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percent: i32,
}

fn default_cpu_target() -> i32 {
    70
}

/// What the operator last observed of a Broker; each tier separately.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `host:port` clients connect to: `compute.service.advertisedAddress` when set, else the
    /// load balancer's address (LoadBalancer), a node's address and the node port (NodePort),
    /// or the client Service's DNS name (`<broker>.<namespace>.svc:8081`, ClusterIP). Absent
    /// while a load balancer or node port has no address yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The storage tier.
    #[serde(default)]
    pub storage: StorageStatus,
    /// The compute tier (also read by the scale subresource).
    #[serde(default)]
    pub compute: ComputeStatus,
    /// `Ready`, `Progressing` and `Degraded`, following the Kubernetes API conventions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Observed state of the storage tier.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// Broker groups that exist (including ones being drained).
    #[serde(default)]
    pub groups: i32,
    /// Groups whose every replica is ready.
    #[serde(default)]
    pub ready_groups: i32,
    /// Ready broker pods over all groups.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Groups being drained before removal, by StatefulSet name.
    #[serde(default)]
    pub draining: Vec<String>,
    /// Claims whose size does not yet match `spec.storage.volume.size`.
    #[serde(default)]
    pub pending_volume_expansions: Vec<String>,
    /// Replicated groups with no leader or fewer in-sync members than `replicasPerGroup`;
    /// absent when the groups are unreplicated or the admin API could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_replicated_groups: Option<i32>,
    /// Each replicated group as the replication controller holds it (read through the admin
    /// API's `ListCluster`); empty when the groups are unreplicated or the admin API could not
    /// be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replication: Vec<GroupReplicationStatus>,
}

/// One replicated broker group's leadership, as the replication controller reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupReplicationStatus {
    /// The group (its StatefulSet name).
    pub group: String,
    /// Replica id of the leader (pod ordinal + 1); absent while the group has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<i64>,
    /// Leader epoch: grows by one at every leader change.
    #[serde(default)]
    pub epoch: i64,
    /// Members in the in-sync set (the leader included).
    #[serde(default)]
    pub in_sync: i32,
    /// Replica ids of the in-sync members.
    #[serde(default)]
    pub in_sync_replicas: Vec<i64>,
}

/// Observed state of the compute tier.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeStatus {
    /// Proxy pods that exist (the scale subresource's `status.replicas`).
    #[serde(default)]
    pub replicas: i32,
    /// Proxy pods passing readiness.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of proxy pods, for the scale subresource and autoscalers.
    #[serde(default)]
    pub selector: String,
}
