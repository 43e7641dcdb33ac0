//! Labels, owner references and container pieces shared by all builders.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, Probe, Service, ServicePort,
    ServiceSpec, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::PodPlacement;

/// Field manager name used for every server-side apply.
pub const MANAGER: &str = "ferromq-operator";
/// Port of every role's HTTP endpoint (`/healthz`, `/readyz`, `/metrics`).
pub const HTTP_PORT: i32 = 9090;
/// Name server port.
pub const NAMESERVER_PORT: i32 = 9876;
/// Internal broker port (proxy -> broker, replication).
pub const BROKER_PORT: i32 = 10911;
/// Client gRPC port served by proxies.
pub const GRPC_PORT: i32 = 8081;

/// Label keys.
pub mod label {
    /// Always `ferromq`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The owning custom resource's name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `nameserver`, `broker` or `proxy`.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// Always `ferromq-operator`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The broker group (StatefulSet name) a broker pod or claim belongs to.
    pub const GROUP: &str = "ferromq.io/group";
}

/// Annotation on pod templates: hash of the rendered configuration, so a config change rolls pods.
pub const CONFIG_HASH_ANNOTATION: &str = "ferromq.io/config-hash";

/// A child object could not be built because the parent lacks something the API server
/// always sets (name, namespace, uid); seen only with hand-made objects.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The parent resource has no `metadata.{0}`.
    #[error("resource has no metadata.{0}")]
    MissingMetadata(&'static str),
}

/// Selector labels of one component of one instance: stable for the object's life, because
/// selectors of StatefulSets and Deployments are immutable.
pub fn selector_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::NAME.to_string(), "ferromq".to_string()),
        (label::INSTANCE.to_string(), instance.to_string()),
        (label::COMPONENT.to_string(), component.to_string()),
    ])
}

/// Selector labels plus `managed-by`, put on every object the operator creates.
pub fn object_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(instance, component);
    labels.insert(label::MANAGED_BY.to_string(), MANAGER.to_string());
    labels
}

/// `k=v,k=v` form of a label map (for list calls and the scale subresource).
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A LabelSelector matching exactly these labels.
pub fn label_selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// Name, namespace and controller owner reference of a parent resource.
pub struct Parent {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// Controller reference pointing at the parent, so garbage collection removes children.
    pub owner: OwnerReference,
}

impl Parent {
    /// Reads the identity of `obj`, failing when it was never stored by an API server.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Result<Self, BuildError> {
        let namespace = obj
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let owner = obj
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        Ok(Parent {
            name: obj.name_any(),
            namespace,
            owner,
        })
    }

    /// Metadata of a child named `name` with `labels`.
    pub fn child_meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Environment variables that give a pod its identity (`FERROMQ_POD_*`).
pub fn identity_env() -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    vec![
        field("FERROMQ_POD_NAME", "metadata.name"),
        field("FERROMQ_POD_NAMESPACE", "metadata.namespace"),
        field("FERROMQ_POD_IP", "status.podIP"),
    ]
}

/// A plain `name=value` environment variable.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// Service ports that forward to the container port of the same name.
pub fn service_ports(ports: &[(&str, i32)]) -> Vec<ServicePort> {
    ports
        .iter()
        .map(|(name, port)| ServicePort {
            name: Some(name.to_string()),
            port: *port,
            target_port: Some(IntOrString::String(name.to_string())),
            ..ServicePort::default()
        })
        .collect()
}

/// Named container ports.
pub fn container_ports(ports: &[(&str, i32)]) -> Vec<ContainerPort> {
    ports
        .iter()
        .map(|(name, port)| ContainerPort {
            name: Some(name.to_string()),
            container_port: *port,
            ..ContainerPort::default()
        })
        .collect()
}

/// A headless Service (stable per-pod DNS names) that also lists pods before they are ready,
/// so peers can find each other while starting.
pub fn headless_service(
    meta: ObjectMeta,
    selector: BTreeMap<String, String>,
    ports: &[(&str, i32)],
) -> Service {
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector),
            ports: Some(service_ports(ports)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A PodDisruptionBudget letting at most one selected pod be voluntarily evicted at a time.
pub fn one_at_a_time_pdb(
    meta: ObjectMeta,
    selector: BTreeMap<String, String>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(label_selector(selector)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// A StatefulSet claim template `name`: one ReadWriteOnce volume of `size` per pod.
pub fn claim_template(
    name: &str,
    labels: BTreeMap<String, String>,
    storage_class_name: Option<String>,
    size: String,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(size))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// HTTP probe on the role's HTTP port.
pub fn http_probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// A pod spec with one container and the tier's placement.
pub fn pod_spec(mut container: Container, placement: Option<&PodPlacement>) -> PodSpec {
    let placement = placement.cloned().unwrap_or_default();
    container.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Default::default()
        }),
        ..Default::default()
    });
    PodSpec {
        containers: vec![container],
        // The image's unprivileged user; fsGroup makes the data volume writable for it on
        // every storage driver (not only the ones that create world-writable directories).
        security_context: Some(k8s_openapi::api::core::v1::PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(IMAGE_UID),
            run_as_group: Some(IMAGE_UID),
            fs_group: Some(IMAGE_UID),
            fs_group_change_policy: Some("OnRootMismatch".to_string()),
            seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        node_selector: placement.node_selector,
        affinity: placement.affinity,
        tolerations: placement.tolerations,
        // Gives SIGTERM time to flush and close the store.
        termination_grace_period_seconds: Some(60),
        ..PodSpec::default()
    }
}

/// User and group id of the `ferromq` user in the broker image (broker/Dockerfile).
pub const IMAGE_UID: i64 = 65532;

/// FNV-1a 64-bit: a hash that stays the same across Rust releases, unlike `DefaultHasher`,
/// so config-hash annotations do not change (and roll pods) when the operator is rebuilt.
pub fn stable_hash(data: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_run_unprivileged_and_can_write_their_volume() {
        let spec = pod_spec(Container::default(), None);
        let pod = spec.security_context.expect("pod security context");
        assert_eq!(pod.run_as_non_root, Some(true));
        assert_eq!(pod.fs_group, Some(IMAGE_UID));
        let c = spec.containers[0]
            .security_context
            .clone()
            .expect("container security context");
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(
            c.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
    }

    #[test]
    fn stable_hash_is_fixed_for_known_input() {
        assert_eq!(stable_hash(""), "cbf29ce484222325");
        assert_eq!(stable_hash("a"), "af63dc4c8601ec8c");
        assert_ne!(
            stable_hash("flush-mode = \"sync\""),
            stable_hash("flush-mode = \"async\"")
        );
    }

    #[test]
    fn selector_string_joins_sorted_labels() {
        let s = selector_string(&selector_labels("demo", "proxy"));
        assert_eq!(
            s,
            "app.kubernetes.io/component=proxy,app.kubernetes.io/instance=demo,app.kubernetes.io/name=ferromq"
        );
    }
}
