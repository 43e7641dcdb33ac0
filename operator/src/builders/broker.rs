//! Children of a `Broker`.
//!
//! Storage tier, per group `i` (`<broker>-group-<i>`): a headless Service, a StatefulSet and a
//! PDB. With one pod per group the pod is the group's only, unreplicated member; with more, pod
//! ordinal `o` runs `--replica-id o+1`, the replication controller elects the leader, the pods
//! prefer distinct nodes (pod anti-affinity on the group label) and the PDB lets one member go
//! at a time, so a voluntary disruption never takes more than one member out of the in-sync
//! set. Compute tier: the proxy Deployment
//! (`<broker>-proxy`), the client Service (`<broker>`, port 8081), a PDB and, when autoscaling is
//! set, a HorizontalPodAutoscaler that targets the Broker's own scale subresource. Both tiers
//! read `<broker>-config` (ConfigMap with `broker.toml` and `proxy.toml`).
//!
//! Rolling order: an unreplicated group's StatefulSet uses RollingUpdate; a replicated group's
//! uses OnDelete and the broker controller deletes its pods one at a time, followers first and
//! the leader after a switchover (`controller::broker::roll`). Pod templates carry a hash of the rendered config, so a config change rolls the pods too;
//! the name server list is left out of that hash, so scaling name servers rolls nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, PodAffinityTerm,
    PodAntiAffinity, PodTemplateSpec, Service, ServiceSpec, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{
    claim_template, container_ports, env, headless_service, http_probe, identity_env, label,
    label_selector, object_labels, one_at_a_time_pdb, pod_spec, selector_labels, selector_string,
    service_ports, stable_hash, BuildError, Parent, BROKER_PORT, CONFIG_HASH_ANNOTATION, GRPC_PORT,
    HTTP_PORT,
};
use super::internal_tls;
use crate::crd::Broker;

/// Component label of broker (storage) pods.
pub const BROKER_COMPONENT: &str = "broker";
/// Component label of proxy (compute) pods.
pub const PROXY_COMPONENT: &str = "proxy";
/// Name of the data volume claim template (claims are `data-<group>-<ordinal>`).
pub const DATA_VOLUME: &str = "data";
/// Where broker pods mount their volume.
pub const DATA_DIR: &str = "/var/lib/ferromq";
/// Where both tiers mount the ConfigMap.
pub const CONFIG_DIR: &str = "/etc/ferromq";

/// Name of broker group `index`'s StatefulSet, headless Service and PDB; also its group name
/// on the cluster.
pub fn group_name(broker: &str, index: i32) -> String {
    format!("{broker}-group-{index}")
}

/// The index of a group from its StatefulSet name, when it is one of `broker`'s groups.
pub fn group_index(broker: &str, sts_name: &str) -> Option<i32> {
    sts_name
        .strip_prefix(&format!("{broker}-group-"))?
        .parse()
        .ok()
}

/// Name of the proxy Deployment, its PDB and HPA.
pub fn proxy_name(broker: &str) -> String {
    format!("{broker}-proxy")
}

/// Name of the ConfigMap with the rendered configuration.
pub fn config_name(broker: &str) -> String {
    format!("{broker}-config")
}

/// Labels selecting one group's pods.
pub fn group_selector(broker: &str, group: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(broker, BROKER_COMPONENT);
    l.insert(label::GROUP.to_string(), group.to_string());
    l
}

/// Label selector string of the proxy pods (the scale subresource's `status.compute.selector`).
pub fn proxy_selector(broker: &str) -> String {
    selector_string(&selector_labels(broker, PROXY_COMPONENT))
}

/// Facts read from the cluster that shape the desired objects.
#[derive(Clone, Debug, Default)]
pub struct BrokerInputs {
    /// Stable addresses of the referenced Nameserver's replicas.
    pub nameservers: Vec<String>,
    /// Claim-template size of each existing group StatefulSet, by group name. A StatefulSet's
    /// claim templates are immutable, so an existing group keeps its template size; growing the
    /// volume is done by patching the claims instead (see the broker controller).
    pub existing_claim_sizes: BTreeMap<String, String>,
    /// The existing client Service's load-balancer address and node port, which the proxies
    /// advertise.
    pub service: super::endpoint::ServiceFacts,
    /// The referenced Nameserver's `spec.internalTls.enabled`: every internal link of the
    /// cluster uses TLS under its CA.
    pub internal_tls: bool,
    /// Versions of the Secrets the pods mount, by name (see
    /// [`internal_tls::SECRETS_HASH_ANNOTATION`]).
    pub secret_versions: BTreeMap<String, String>,
}

/// One broker group's objects.
pub struct GroupChildren {
    /// Group name (also the StatefulSet, Service and PDB name).
    pub name: String,
    /// Headless Service giving each pod a stable DNS name.
    pub service: Service,
    /// The group's StatefulSet.
    pub statefulset: StatefulSet,
    /// Allows one pod of the group down at a time.
    pub pdb: PodDisruptionBudget,
}

/// Everything a Broker owns, in apply order.
pub struct BrokerChildren {
    /// Rendered configuration of both tiers.
    pub config: ConfigMap,
    /// The storage tier, one entry per group in `0..spec.storage.groups`.
    pub groups: Vec<GroupChildren>,
    /// Proxy Deployment.
    pub proxy: Deployment,
    /// Client Service on port 8081.
    pub client_service: Service,
    /// Proxy PDB.
    pub proxy_pdb: PodDisruptionBudget,
    /// Proxy autoscaler, when `spec.compute.autoscaling` is set.
    pub hpa: Option<HorizontalPodAutoscaler>,
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| toml_string(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `broker.toml`: name servers, the flush mode, for replicated groups the replication mode and
/// `min-in-sync` (an unreplicated broker refuses `sync` replication), retention and the disk
/// high-water mark when set, then `spec.config` entries. Per-pod identity (group, replica id, advertised address) comes from flags and env.
/// The replication controller is reached through the name servers (the broker's default).
pub fn render_broker_config(broker: &Broker, nameservers: &[String]) -> String {
    let s = &broker.spec.storage;
    let mut out = String::from("# Rendered by ferromq-operator from the Broker resource.\n");
    out.push_str(&format!("nameservers = {}\n", toml_list(nameservers)));
    out.push_str(&format!(
        "flush = {}\n",
        toml_string(s.flush_mode.as_config())
    ));
    if s.replicated() {
        out.push_str(&format!(
            "replication-mode = {}\n",
            toml_string(s.replication_mode.as_config())
        ));
        out.push_str(&format!("min-in-sync = {}\n", s.min_in_sync));
    }
    if let Some(r) = &s.retention {
        out.push_str(&format!("retention = {}\n", toml_string(r)));
    }
    if let Some(r) = &s.retention_bytes {
        out.push_str(&format!("retention-bytes = {}\n", toml_string(r)));
    }
    if let Some(p) = s.disk_high_water {
        out.push_str(&format!("disk-high-water = {p}\n"));
    }
    if broker.spec.auth_enabled() {
        // The super user's name comes from its Secret through the environment
        // (FERROMQ_AUTH_SUPER_USER); its secret key from the mounted file.
        out.push_str("auth = true\n");
        out.push_str(&format!(
            "auth-super-secret-file = {}\n",
            toml_string(&format!("{AUTH_DIR}/{}", super::auth::SECRET_KEY))
        ));
    }
    for (k, v) in &broker.spec.config {
        out.push_str(&format!("{} = {}\n", toml_key(k), toml_string(v)));
    }
    out
}

/// Keys of `broker.toml` the operator sets itself, from the Broker's fields or as flags of
/// every broker pod; `spec.config` may not hold them (a flag would silently win, and a key
/// written twice makes the file unreadable).
pub const MANAGED_KEYS: &[(&str, &str)] = &[
    ("nameservers", "spec.nameserverRef"),
    ("flush", "spec.storage.flushMode"),
    ("replication-mode", "spec.storage.replicationMode"),
    ("min-in-sync", "spec.storage.minInSync"),
    ("retention", "spec.storage.retention"),
    ("retention-bytes", "spec.storage.retentionBytes"),
    ("disk-high-water", "spec.storage.diskHighWater"),
    ("auth", "spec.auth.enabled"),
    ("auth-super-user", "spec.auth.superUserSecretRef"),
    ("auth-super-secret-file", "spec.auth.superUserSecretRef"),
    ("data-dir", "the volume the operator mounts"),
    ("group", "the StatefulSet of each group"),
    ("replica-id", "the pod ordinal"),
    ("role", "the replication controller"),
    ("addr", "the operator (0.0.0.0:10911)"),
    ("grpc-addr", "the operator (0.0.0.0:10911)"),
    ("http-addr", "the operator (0.0.0.0:9090)"),
    ("tls-ca", "the Nameserver's spec.internalTls"),
];

/// Checks `spec.config` the way `ferromq broker` will read `broker.toml`, so a bad key or
/// value is refused on the Broker (condition `InvalidConfig`) instead of rolling pods into a
/// crash loop. The message names the key. Checks that need the pod (certificate and secret
/// files, listening ports) are left to the broker.
pub fn check_config(broker: &Broker) -> Result<(), String> {
    let s = &broker.spec.storage;
    if let Some(r) = &s.retention {
        ferromq_config::parse_duration("retention", r)
            .map_err(|e| format!("spec.storage.retention: {}", e.reason))?;
    }
    if let Some(r) = &s.retention_bytes {
        ferromq_config::parse_limit("retention-bytes", r)
            .map_err(|e| format!("spec.storage.retentionBytes: {}", e.reason))?;
    }
    for key in broker.spec.config.keys() {
        if let Some((_, from)) = MANAGED_KEYS.iter().find(|(k, _)| k == key) {
            return Err(format!(
                "spec.config: key {key:?} is set by the operator from {from}; remove it"
            ));
        }
    }
    let text = render_broker_config(broker, &["nameserver:9876".to_string()]);
    ferromq_config::ConfigFile::parse("spec.config", &text)
        .and_then(|file| ferromq_config::Role::Broker.check(&file))
        .map_err(|e| match e.field {
            "config" => e.reason,
            field => format!(
                "spec.config: {field}: {}",
                e.reason.strip_prefix("spec.config: ").unwrap_or(&e.reason)
            ),
        })
}

/// `proxy.toml`: the name servers the proxies read routes from.
pub fn render_proxy_config(nameservers: &[String]) -> String {
    format!(
        "# Rendered by ferromq-operator from the Broker resource.\nnameservers = {}\n",
        toml_list(nameservers)
    )
}

/// Environment of both tiers from `spec.logging`, and the cluster name the RocketMQ-named
/// metrics carry (the Broker's name).
fn telemetry_env(broker: &Broker, name: &str) -> Vec<EnvVar> {
    let mut out = vec![env("FERROMQ_CLUSTER_NAME", name)];
    if let Some(l) = &broker.spec.logging {
        out.push(env("FERROMQ_LOG", l.level.clone()));
        out.push(env("FERROMQ_LOG_FORMAT", l.format.as_str()));
    }
    out
}

/// Arguments of `ferromq broker` shared by every pod of every group, then `extra`.
fn broker_args(extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "broker",
        "--config",
        "/etc/ferromq/broker.toml",
        "--data-dir",
        DATA_DIR,
        "--group",
        "$(FERROMQ_GROUP)",
        "--addr",
        "0.0.0.0:10911",
        "--http-addr",
        "0.0.0.0:9090",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().cloned());
    args
}

/// The shell wrapper of a replicated group's members: the replica id is the pod's ordinal + 1
/// (a StatefulSet template is shared by all ordinals; this is the one per-pod difference, and
/// ids stay stable because ordinals and their claims do).
const REPLICA_ENTRYPOINT: &str = r#"ordinal="${FERROMQ_POD_NAME##*-}"
exec ferromq broker --config /etc/ferromq/broker.toml --data-dir /var/lib/ferromq --group "$FERROMQ_GROUP" --replica-id "$((ordinal + 1))" --addr 0.0.0.0:10911 --http-addr 0.0.0.0:9090"#;

/// Command and arguments of a broker container: `ferromq broker` directly for an unreplicated
/// group, through `/bin/sh` (to read the ordinal) for a replicated one; `extra` (the internal
/// TLS flags, plain words) goes last in either form.
fn broker_command(replicated: bool, extra: &[String]) -> (Vec<String>, Option<Vec<String>>) {
    if replicated {
        let tail: String = extra.iter().map(|a| format!(" {a}")).collect();
        (
            vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                format!("{REPLICA_ENTRYPOINT}{tail}"),
            ],
            None,
        )
    } else {
        (vec!["ferromq".to_string()], Some(broker_args(extra)))
    }
}

/// The user's affinity plus, for a replicated group, a preferred anti-affinity between the
/// group's pods on `kubernetes.io/hostname`: members on distinct nodes survive a node loss.
/// Preferred, not required, so a cluster with fewer nodes than replicas still runs the group.
pub fn group_affinity(
    user: Option<Affinity>,
    selector: &BTreeMap<String, String>,
    replicated: bool,
) -> Option<Affinity> {
    if !replicated {
        return user;
    }
    let spread = WeightedPodAffinityTerm {
        weight: 100,
        pod_affinity_term: PodAffinityTerm {
            label_selector: Some(label_selector(selector.clone())),
            topology_key: "kubernetes.io/hostname".to_string(),
            ..PodAffinityTerm::default()
        },
    };
    let mut affinity = user.unwrap_or_default();
    let anti = affinity
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default);
    anti.preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(spread);
    Some(affinity)
}

fn config_volume(broker: &str) -> Volume {
    Volume {
        name: "config".to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_name(broker),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Where broker pods mount the super user's Secret (its `secretKey` only).
pub const AUTH_DIR: &str = "/etc/ferromq/auth";

/// The Secret holding the Broker's super user when authentication is on: the one named in
/// `spec.auth.superUserSecretRef`, else the one the operator generates.
pub fn super_user_secret(broker: &Broker, name: &str) -> Option<String> {
    let auth = broker.spec.auth.as_ref().filter(|a| a.enabled)?;
    Some(match &auth.super_user_secret_ref {
        Some(r) => r.name.clone(),
        None => super::auth::generated_super_user_secret(name),
    })
}

/// The super user's name, from its Secret, for `ferromq broker` (`--auth-super-user`).
fn super_user_env(secret: &str) -> EnvVar {
    EnvVar {
        name: "FERROMQ_AUTH_SUPER_USER".to_string(),
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                name: secret.to_string(),
                key: super::auth::ACCESS_KEY.to_string(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..EnvVar::default()
    }
}

/// The super user's secret key as a file (a file, not an environment variable: the broker
/// reads secrets from files only, and the environment shows in `kubectl describe`).
fn auth_volume(secret: &str) -> Volume {
    Volume {
        name: "auth".to_string(),
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                key: super::auth::SECRET_KEY.to_string(),
                path: super::auth::SECRET_KEY.to_string(),
                mode: None,
            }]),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Volume::default()
    }
}

fn auth_mount() -> VolumeMount {
    VolumeMount {
        name: "auth".to_string(),
        mount_path: AUTH_DIR.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Where proxies mount `spec.compute.tls.secretName`.
pub const TLS_DIR: &str = "/etc/ferromq/tls";

/// The proxy's flags. The client port serves `spec.compute.tls`'s certificate when set, else,
/// with internal TLS, the proxies' certificate from the cluster CA (which the operator's admin
/// calls verify), else a self-signed one; with internal TLS the proxy also verifies the brokers
/// and name servers it dials against the cluster CA.
fn proxy_args(client_tls: bool, internal: bool) -> Vec<String> {
    let mut args = vec![
        "proxy".to_string(),
        "--config".to_string(),
        format!("{CONFIG_DIR}/proxy.toml"),
        "--grpc-addr".to_string(),
        format!("0.0.0.0:{GRPC_PORT}"),
        "--http-addr".to_string(),
        format!("0.0.0.0:{HTTP_PORT}"),
    ];
    if client_tls {
        args.extend(internal_tls::cert_args(TLS_DIR));
    } else if internal {
        args.extend(internal_tls::cert_args(internal_tls::INTERNAL_TLS_DIR));
    }
    if internal {
        args.extend(internal_tls::ca_args());
    }
    args
}

/// The Secrets a group's broker pods mount: its internal certificate and the super user's.
pub fn group_mounted_secrets(
    broker: &Broker,
    name: &str,
    group: &str,
    internal: bool,
) -> Vec<String> {
    internal
        .then(|| internal_tls::group_secret(group))
        .into_iter()
        .chain(super_user_secret(broker, name))
        .collect()
}

/// The Secrets proxy pods mount: the client certificate and the proxies' internal one.
pub fn proxy_mounted_secrets(broker: &Broker, name: &str, internal: bool) -> Vec<String> {
    broker
        .spec
        .compute
        .tls
        .as_ref()
        .map(|t| t.secret_name.clone())
        .into_iter()
        .chain(internal.then(|| internal_tls::proxy_secret(name)))
        .collect()
}

fn tls_volume(tls: &crate::crd::ClientTls) -> Volume {
    Volume {
        name: "tls".to_string(),
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some(tls.secret_name.clone()),
            ..Default::default()
        }),
        ..Volume::default()
    }
}

fn tls_mount() -> VolumeMount {
    VolumeMount {
        name: "tls".to_string(),
        mount_path: TLS_DIR.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn config_mount() -> VolumeMount {
    VolumeMount {
        name: "config".to_string(),
        mount_path: CONFIG_DIR.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// A pod template: the operator's labels, the config-hash and secrets-hash annotations and
/// `spec`, with the tier's `podTemplate` merged in.
fn pod_template(
    labels: BTreeMap<String, String>,
    config_hash: &str,
    secrets_hash: Option<String>,
    spec: k8s_openapi::api::core::v1::PodSpec,
    user: Option<&crate::crd::PodTemplate>,
) -> PodTemplateSpec {
    let mut annotations =
        BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string())]);
    if let Some(h) = secrets_hash {
        annotations.insert(internal_tls::SECRETS_HASH_ANNOTATION.to_string(), h);
    }
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(spec),
    };
    super::pod_template::merge_into(&mut template, user);
    template
}

/// Annotation on a group StatefulSet: hash of the spec the operator last applied. The broker
/// controller compares it with the desired one to tell which groups a spec change would
/// touch, and touches them one at a time.
pub const SPEC_HASH_ANNOTATION: &str = "ferromq.io/spec-hash";

/// The spec hash a desired group StatefulSet carries ([`SPEC_HASH_ANNOTATION`]).
pub fn spec_hash(sts: &StatefulSet) -> Option<&str> {
    sts.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
        .map(String::as_str)
}

fn build_group(
    broker: &Broker,
    parent: &Parent,
    index: i32,
    config_hash: &str,
    inputs: &BrokerInputs,
) -> GroupChildren {
    let storage = &broker.spec.storage;
    let name = group_name(&parent.name, index);
    let selector = group_selector(&parent.name, &name);
    let mut labels = object_labels(&parent.name, BROKER_COMPONENT);
    labels.insert(label::GROUP.to_string(), name.clone());

    let service = headless_service(
        parent.child_meta(&name, labels.clone()),
        selector.clone(),
        &[("broker", BROKER_PORT), ("http", HTTP_PORT)],
    );

    let mut container_env = identity_env();
    container_env.extend(telemetry_env(broker, &parent.name));
    container_env.push(env("FERROMQ_GROUP", name.clone()));
    container_env.push(env(
        "FERROMQ_ADVERTISE_ADDR",
        format!(
            "$(FERROMQ_POD_NAME).{name}.{}.svc:{BROKER_PORT}",
            parent.namespace
        ),
    ));
    let auth_secret = super_user_secret(broker, &parent.name);
    container_env.extend(auth_secret.as_deref().map(super_user_env));
    let tls = inputs.internal_tls;
    let tls_args = if tls {
        internal_tls::server_args()
    } else {
        Vec::new()
    };
    let (command, args) = broker_command(storage.replicated(), &tls_args);
    let container = Container {
        name: "broker".to_string(),
        image: Some(broker.spec.image.clone()),
        image_pull_policy: Some(broker.spec.image_pull_policy.as_str().to_string()),
        command: Some(command),
        args,
        env: Some(container_env),
        ports: Some(container_ports(&[
            ("broker", BROKER_PORT),
            ("http", HTTP_PORT),
        ])),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: storage.resources.clone(),
        volume_mounts: Some(
            [
                VolumeMount {
                    name: DATA_VOLUME.to_string(),
                    mount_path: DATA_DIR.to_string(),
                    ..VolumeMount::default()
                },
                config_mount(),
            ]
            .into_iter()
            .chain(auth_secret.as_ref().map(|_| auth_mount()))
            .chain(tls.then(internal_tls::mount))
            .collect(),
        ),
        ..Container::default()
    };
    let mut pod = pod_spec(container, storage.placement.as_ref());
    pod.volumes = Some(
        std::iter::once(config_volume(&parent.name))
            .chain(auth_secret.as_deref().map(auth_volume))
            .chain(tls.then(|| internal_tls::volume(&internal_tls::group_secret(&name))))
            .collect(),
    );
    let secrets_hash = internal_tls::secrets_hash(
        &group_mounted_secrets(broker, &parent.name, &name, tls),
        &inputs.secret_versions,
    );
    pod.affinity = group_affinity(pod.affinity.take(), &selector, storage.replicated());

    let mut pod_labels = labels.clone();
    pod_labels.remove(label::MANAGED_BY);
    let claim_size = inputs
        .existing_claim_sizes
        .get(&name)
        .cloned()
        .unwrap_or_else(|| storage.volume.size.clone());
    let mut claim_labels = selector.clone();
    claim_labels.insert(
        label::MANAGED_BY.to_string(),
        super::common::MANAGER.to_string(),
    );

    let mut statefulset = StatefulSet {
        metadata: parent.child_meta(&name, labels.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(storage.replicas_per_group),
            service_name: Some(name.clone()),
            pod_management_policy: Some("OrderedReady".to_string()),
            // A replicated group is rolled by the operator (followers first, the leader after a
            // switchover: `controller::broker::roll`); an unreplicated one by the StatefulSet.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some(
                    if storage.replicated() {
                        "OnDelete"
                    } else {
                        "RollingUpdate"
                    }
                    .to_string(),
                ),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: label_selector(selector.clone()),
            template: pod_template(
                pod_labels,
                config_hash,
                secrets_hash,
                pod,
                storage.pod_template.as_ref(),
            ),
            volume_claim_templates: Some(vec![claim_template(
                DATA_VOLUME,
                claim_labels,
                storage.volume.storage_class_name.clone(),
                claim_size,
            )]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    let spec_hash = stable_hash(&serde_json::to_string(&statefulset.spec).unwrap_or_default());
    statefulset.metadata.annotations = Some(BTreeMap::from([(
        SPEC_HASH_ANNOTATION.to_string(),
        spec_hash,
    )]));

    // maxUnavailable 1: a drain or eviction takes at most one member out of the in-sync set.
    let pdb = one_at_a_time_pdb(parent.child_meta(&name, labels), selector);

    GroupChildren {
        name,
        service,
        statefulset,
        pdb,
    }
}

/// The downward-API node address of a proxy pod, for a NodePort advertised address.
fn host_ip_env() -> EnvVar {
    EnvVar {
        name: "FERROMQ_HOST_IP".to_string(),
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                field_path: "status.hostIP".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..EnvVar::default()
    }
}

/// The client Service on 8081: ClusterIP unless `spec.compute.service` asks for NodePort or
/// LoadBalancer, with its annotations and fixed node port.
fn client_service(
    mut meta: ObjectMeta,
    selector: BTreeMap<String, String>,
    user: Option<&crate::crd::ClientService>,
) -> Service {
    let mut ports = service_ports(&[("grpc", GRPC_PORT)]);
    let type_ = user.map(|u| u.type_).unwrap_or_default();
    if let Some(u) = user {
        meta.annotations = u.annotations.clone().filter(|a| !a.is_empty());
        if type_ != crate::crd::ServiceType::ClusterIP {
            ports[0].node_port = u.node_port;
        }
    }
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(type_.as_str().to_string()),
            selector: Some(selector),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Builds the desired children of `broker` from the spec and the facts in `inputs`.
pub fn build(broker: &Broker, inputs: &BrokerInputs) -> Result<BrokerChildren, BuildError> {
    let parent = Parent::of(broker)?;
    let broker_toml = render_broker_config(broker, &inputs.nameservers);
    let proxy_toml = render_proxy_config(&inputs.nameservers);
    // The name server list is left out of the hashes: it names stable DNS entries, and a name
    // server scale-out must not restart every broker and proxy. The ConfigMap still changes
    // (mounted files follow within a kubelet sync period), so pods re-read it in place.
    let broker_hash = stable_hash(&render_broker_config(broker, &[]));
    let proxy_hash = stable_hash(&render_proxy_config(&[]));

    let config = ConfigMap {
        metadata: parent.child_meta(
            &config_name(&parent.name),
            object_labels(&parent.name, BROKER_COMPONENT),
        ),
        data: Some(BTreeMap::from([
            ("broker.toml".to_string(), broker_toml),
            ("proxy.toml".to_string(), proxy_toml),
        ])),
        ..ConfigMap::default()
    };

    let groups = (0..broker.spec.storage.groups)
        .map(|i| build_group(broker, &parent, i, &broker_hash, inputs))
        .collect();

    let compute = &broker.spec.compute;
    let proxy_labels = object_labels(&parent.name, PROXY_COMPONENT);
    let proxy_sel = selector_labels(&parent.name, PROXY_COMPONENT);
    let pname = proxy_name(&parent.name);
    let container = Container {
        name: "proxy".to_string(),
        image: Some(broker.spec.image.clone()),
        image_pull_policy: Some(broker.spec.image_pull_policy.as_str().to_string()),
        command: Some(vec!["ferromq".to_string()]),
        args: Some(proxy_args(compute.tls.is_some(), inputs.internal_tls)),
        env: Some(
            identity_env()
                .into_iter()
                .chain(telemetry_env(broker, &parent.name))
                .chain([
                    host_ip_env(),
                    env(
                        "FERROMQ_ADVERTISE_ADDR",
                        super::endpoint::advertise(
                            broker,
                            &parent.name,
                            &parent.namespace,
                            &inputs.service,
                        ),
                    ),
                ])
                .collect(),
        ),
        ports: Some(container_ports(&[("grpc", GRPC_PORT), ("http", HTTP_PORT)])),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: compute.resources.clone(),
        volume_mounts: Some(
            std::iter::once(config_mount())
                .chain(compute.tls.as_ref().map(|_| tls_mount()))
                .chain(inputs.internal_tls.then(internal_tls::mount))
                .collect(),
        ),
        ..Container::default()
    };
    let mut pod = pod_spec(container, compute.placement.as_ref());
    pod.volumes = Some(
        std::iter::once(config_volume(&parent.name))
            .chain(compute.tls.as_ref().map(tls_volume))
            .chain(
                inputs
                    .internal_tls
                    .then(|| internal_tls::volume(&internal_tls::proxy_secret(&parent.name))),
            )
            .collect(),
    );
    let proxy_secrets_hash = internal_tls::secrets_hash(
        &proxy_mounted_secrets(broker, &parent.name, inputs.internal_tls),
        &inputs.secret_versions,
    );
    let mut pod_labels = proxy_labels.clone();
    pod_labels.remove(label::MANAGED_BY);

    let proxy = Deployment {
        metadata: parent.child_meta(&pname, proxy_labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(compute.replicas),
            selector: label_selector(proxy_sel.clone()),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: pod_template(
                pod_labels,
                &proxy_hash,
                proxy_secrets_hash,
                pod,
                compute.pod_template.as_ref(),
            ),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    let client_service = client_service(
        parent.child_meta(&parent.name, proxy_labels.clone()),
        proxy_sel.clone(),
        compute.service.as_ref(),
    );

    let proxy_pdb = one_at_a_time_pdb(parent.child_meta(&pname, proxy_labels.clone()), proxy_sel);

    let hpa = compute
        .autoscaling
        .as_ref()
        .map(|a| HorizontalPodAutoscaler {
            metadata: parent.child_meta(&pname, proxy_labels.clone()),
            spec: Some(HorizontalPodAutoscalerSpec {
                // Scales the Broker through its scale subresource, so spec.compute.replicas stays
                // the one source of truth for the proxy count.
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some(format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION)),
                    kind: "Broker".to_string(),
                    name: parent.name.clone(),
                },
                min_replicas: Some(a.min_replicas),
                max_replicas: a.max_replicas,
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".to_string(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".to_string(),
                        target: MetricTarget {
                            type_: "Utilization".to_string(),
                            average_utilization: Some(a.target_cpu_utilization_percent),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                ..HorizontalPodAutoscalerSpec::default()
            }),
            ..HorizontalPodAutoscaler::default()
        });

    Ok(BrokerChildren {
        config,
        groups,
        proxy,
        client_service,
        proxy_pdb,
        hpa,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{
        Autoscaling, BrokerSpec, ComputeSpec, FlushMode, ImagePullPolicy, NameserverRef,
        ReplicationMode, StorageSpec, VolumeSpec,
    };

    pub(crate) fn fixture(groups: i32, proxies: i32) -> Broker {
        let mut b = Broker::new(
            "demo",
            BrokerSpec {
                nameserver_ref: NameserverRef {
                    name: "ns1".to_string(),
                },
                image: "ferromq:test".to_string(),
                image_pull_policy: ImagePullPolicy::IfNotPresent,
                storage: StorageSpec {
                    groups,
                    replicas_per_group: 2,
                    volume: VolumeSpec {
                        size: "10Gi".to_string(),
                        storage_class_name: Some("fast".to_string()),
                    },
                    flush_mode: FlushMode::Sync,
                    replication_mode: ReplicationMode::Async,
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
        b.metadata.namespace = Some("prod".to_string());
        b.metadata.uid = Some("uid-demo".to_string());
        b
    }

    fn inputs() -> BrokerInputs {
        BrokerInputs {
            nameservers: vec!["ns1-0.ns1.prod.svc:9876".to_string()],
            ..BrokerInputs::default()
        }
    }

    /// The literal environment of the broker and the proxy container.
    fn tier_envs(b: &Broker) -> [BTreeMap<String, String>; 2] {
        let c = build(b, &inputs()).expect("build");
        let group = c.groups[0]
            .statefulset
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap();
        let proxy = c.proxy.spec.clone().unwrap().template.spec.unwrap();
        [&group.containers[0], &proxy.containers[0]].map(|c| {
            c.env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| Some((e.name, e.value?)))
                .collect()
        })
    }

    #[test]
    fn logging_reaches_both_tiers_as_environment() {
        let mut b = fixture(1, 1);
        for e in tier_envs(&b) {
            assert_eq!(
                e.get("FERROMQ_CLUSTER_NAME").map(String::as_str),
                Some("demo")
            );
            assert!(
                !e.contains_key("FERROMQ_LOG"),
                "no level unless asked: {e:?}"
            );
        }
        b.spec.logging = Some(crate::crd::LoggingSpec {
            level: "debug,ferromq_store=trace".to_string(),
            format: crate::crd::LogFormat::Json,
        });
        for e in tier_envs(&b) {
            assert_eq!(
                e.get("FERROMQ_LOG").map(String::as_str),
                Some("debug,ferromq_store=trace")
            );
            assert_eq!(
                e.get("FERROMQ_LOG_FORMAT").map(String::as_str),
                Some("json")
            );
        }
    }

    #[test]
    fn one_statefulset_per_group_with_claim_template() {
        let c = build(&fixture(3, 2), &inputs()).expect("build");
        let names: Vec<_> = c.groups.iter().map(|g| g.name.clone()).collect();
        assert_eq!(names, vec!["demo-group-0", "demo-group-1", "demo-group-2"]);
        let sts = c.groups[1].statefulset.spec.clone().expect("spec");
        assert_eq!(sts.replicas, Some(2));
        assert_eq!(sts.service_name.as_deref(), Some("demo-group-1"));
        let vct = &sts.volume_claim_templates.expect("claims")[0];
        let spec = vct.spec.clone().expect("claim spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        let req = spec.resources.and_then(|r| r.requests).expect("requests");
        assert_eq!(req.get("storage").map(|q| q.0.as_str()), Some("10Gi"));
        let labels = sts.selector.match_labels.expect("selector");
        assert_eq!(
            labels.get(label::GROUP).map(String::as_str),
            Some("demo-group-1")
        );
    }

    #[test]
    fn existing_groups_keep_their_claim_template_size() {
        let mut b = fixture(2, 1);
        b.spec.storage.volume.size = "20Gi".to_string();
        let mut i = inputs();
        i.existing_claim_sizes
            .insert("demo-group-0".to_string(), "10Gi".to_string());
        let c = build(&b, &i).expect("build");
        let size = |g: &GroupChildren| {
            g.statefulset
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.as_ref())
                .and_then(|v| v[0].spec.as_ref())
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone())
        };
        assert_eq!(size(&c.groups[0]).as_deref(), Some("10Gi"));
        assert_eq!(size(&c.groups[1]).as_deref(), Some("20Gi"));
    }

    fn pod_of(c: &BrokerChildren, group: usize) -> k8s_openapi::api::core::v1::PodSpec {
        c.groups[group]
            .statefulset
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("pod")
    }

    fn broker_toml(c: &BrokerChildren) -> String {
        let data = c.config.data.clone().unwrap_or_default();
        data.get("broker.toml").cloned().unwrap_or_default()
    }

    #[test]
    fn replicated_members_take_their_replica_id_from_the_ordinal() {
        let mut b = fixture(1, 1);
        b.spec.storage.replicas_per_group = 3;
        b.spec.storage.replication_mode = ReplicationMode::Sync;
        b.spec.storage.min_in_sync = 2;
        let c = build(&b, &inputs()).expect("build");
        let pod = pod_of(&c, 0);
        let cmd = pod.containers[0].command.clone().unwrap_or_default();
        assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
        let script = &cmd[2];
        assert!(
            script.contains(r#"ordinal="${FERROMQ_POD_NAME##*-}""#),
            "{script}"
        );
        assert!(
            script.contains(r#"--replica-id "$((ordinal + 1))""#),
            "{script}"
        );
        assert!(script.contains("--data-dir /var/lib/ferromq"), "{script}");
        assert!(!script.contains("--role"), "{script}");
        assert_eq!(pod.containers[0].args, None);
        let env = pod.containers[0].env.clone().unwrap_or_default();
        assert!(env
            .iter()
            .any(|e| e.name == "FERROMQ_GROUP" && e.value.as_deref() == Some("demo-group-0")));
        let toml = broker_toml(&c);
        assert!(
            toml.contains("nameservers = [\"ns1-0.ns1.prod.svc:9876\"]"),
            "{toml}"
        );
        assert!(toml.contains("flush = \"sync\""), "{toml}");
        assert!(toml.contains("replication-mode = \"sync\"\n"), "{toml}");
        assert!(toml.contains("min-in-sync = 2\n"), "{toml}");
    }

    #[test]
    fn an_unreplicated_group_runs_the_broker_without_replica_id_or_replication_keys() {
        let mut b = fixture(1, 1);
        b.spec.storage.replicas_per_group = 1;
        // Sync without replica ids is refused by the broker, so it must not be rendered.
        b.spec.storage.replication_mode = ReplicationMode::Sync;
        let c = build(&b, &inputs()).expect("build");
        let pod = pod_of(&c, 0);
        assert_eq!(pod.containers[0].command, Some(vec!["ferromq".to_string()]));
        let args = pod.containers[0].args.clone().unwrap_or_default().join(" ");
        assert_eq!(
            args,
            "broker --config /etc/ferromq/broker.toml --data-dir /var/lib/ferromq \
             --group $(FERROMQ_GROUP) --addr 0.0.0.0:10911 --http-addr 0.0.0.0:9090"
        );
        let toml = broker_toml(&c);
        assert!(!toml.contains("replication-mode"), "{toml}");
        assert!(!toml.contains("min-in-sync"), "{toml}");
        assert_eq!(
            pod.affinity, None,
            "one pod per group has nothing to spread"
        );
    }

    #[test]
    fn replicated_pods_spread_over_nodes_next_to_the_users_affinity() {
        use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelector, NodeSelectorTerm};
        let mut b = fixture(2, 1);
        b.spec.storage.replicas_per_group = 3;
        let user_term = WeightedPodAffinityTerm {
            weight: 10,
            pod_affinity_term: PodAffinityTerm {
                topology_key: "topology.kubernetes.io/zone".to_string(),
                ..PodAffinityTerm::default()
            },
        };
        let node = NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm::default()],
            }),
            ..NodeAffinity::default()
        };
        b.spec.storage.placement = Some(crate::crd::PodPlacement {
            affinity: Some(Affinity {
                node_affinity: Some(node.clone()),
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        user_term.clone()
                    ]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..Default::default()
        });
        let c = build(&b, &inputs()).expect("build");
        let affinity = pod_of(&c, 1).affinity.expect("affinity");
        assert_eq!(affinity.node_affinity, Some(node), "the user's rules stay");
        let terms = affinity
            .pod_anti_affinity
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .expect("preferred anti-affinity");
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0], user_term);
        assert_eq!(terms[1].weight, 100);
        assert_eq!(
            terms[1].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            terms[1]
                .pod_affinity_term
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(group_selector("demo", "demo-group-1"))
        );
    }

    #[test]
    fn each_group_pdb_lets_one_member_go_at_a_time() {
        let mut b = fixture(2, 1);
        b.spec.storage.replicas_per_group = 3;
        let c = build(&b, &inputs()).expect("build");
        let strategy = |c: &BrokerChildren| {
            c.groups[0]
                .statefulset
                .spec
                .as_ref()
                .and_then(|s| s.update_strategy.clone())
                .and_then(|u| u.type_)
        };
        assert_eq!(
            strategy(&c).as_deref(),
            Some("OnDelete"),
            "the operator rolls"
        );
        b.spec.storage.replicas_per_group = 1;
        let one = build(&b, &inputs()).expect("build");
        assert_eq!(strategy(&one).as_deref(), Some("RollingUpdate"));
        let pdb = c.groups[1].pdb.spec.clone().expect("pdb spec");
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(pdb.min_available, None);
        assert_eq!(
            pdb.selector.and_then(|s| s.match_labels),
            Some(group_selector("demo", "demo-group-1"))
        );
    }

    #[test]
    fn config_change_changes_pod_template_hash() {
        let a = build(&fixture(1, 1), &inputs()).expect("build");
        let mut changed = fixture(1, 1);
        changed
            .spec
            .config
            .insert("max-message-size".to_string(), "8MiB".to_string());
        let b = build(&changed, &inputs()).expect("build");
        let hash = |c: &BrokerChildren| {
            c.groups[0]
                .statefulset
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
                .cloned()
        };
        assert!(hash(&a).is_some());
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn nameserver_scale_out_does_not_roll_pods() {
        let hash = |c: &BrokerChildren| {
            let sts = c.groups[0]
                .statefulset
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
                .cloned();
            let proxy = c
                .proxy
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
                .cloned();
            (sts, proxy)
        };
        let one = build(&fixture(1, 1), &inputs()).expect("build");
        let mut more = inputs();
        more.nameservers.push("ns1-1.ns1.prod.svc:9876".to_string());
        let two = build(&fixture(1, 1), &more).expect("build");
        assert_eq!(hash(&one), hash(&two));
        assert_ne!(
            one.config.data, two.config.data,
            "the ConfigMap still lists the new name server"
        );
    }

    #[test]
    fn spec_config_is_checked_as_the_broker_reads_it() {
        let with = |pairs: &[(&str, &str)]| {
            let mut b = fixture(2, 3);
            for (k, v) in pairs {
                b.spec.config.insert(k.to_string(), v.to_string());
            }
            check_config(&b)
        };
        with(&[]).expect("no extra settings");
        // Every value arrives as a string: counts, switches, sizes and durations included.
        with(&[
            ("max-delay", "2d"),
            ("max-body-size", "8MiB"),
            ("default-queues", "4"),
            ("auto-create-topics", "true"),
            ("idle-timeout", "30s"),
        ])
        .expect("valid settings");
        let err = with(&[("max-delay", "soon")]).expect_err("not a duration");
        assert!(err.starts_with("spec.config: max-delay: "), "{err}");
        let err = with(&[("max-dealy", "1d")]).expect_err("misspelt");
        assert!(err.contains("\"max-dealy\""), "{err}");
        let err = with(&[("route-refresh", "1s")]).expect_err("a proxy key");
        assert!(err.contains("\"route-refresh\" for a broker"), "{err}");
        let err = with(&[("auto-create-topics", "yes")]).expect_err("not a switch");
        assert!(err.contains("auto-create-topics"), "{err}");
        let err = with(&[("flush", "sync")]).expect_err("set from spec.storage");
        assert!(
            err.contains("\"flush\"") && err.contains("flushMode"),
            "{err}"
        );
        let err = with(&[("group", "g")]).expect_err("set per StatefulSet");
        assert!(err.contains("\"group\""), "{err}");
    }

    #[test]
    fn retention_fields_are_rendered_and_checked() {
        let mut b = fixture(1, 1);
        b.spec.storage.retention = Some("7d".to_string());
        b.spec.storage.retention_bytes = Some("40GiB".to_string());
        b.spec.storage.disk_high_water = Some(85);
        let t = render_broker_config(&b, &[]);
        assert!(t.contains("retention = \"7d\"\n"), "{t}");
        assert!(t.contains("retention-bytes = \"40GiB\"\n"), "{t}");
        assert!(t.contains("disk-high-water = 85\n"), "{t}");
        check_config(&b).expect("valid");
        b.spec.storage.retention = Some("a week".to_string());
        let err = check_config(&b).expect_err("not a duration");
        assert!(err.starts_with("spec.storage.retention: "), "{err}");
        b.spec.storage.retention = None;
        b.spec.storage.retention_bytes = Some("lots".to_string());
        let err = check_config(&b).expect_err("not a size");
        assert!(err.starts_with("spec.storage.retentionBytes: "), "{err}");
        let mut b = fixture(1, 1);
        b.spec.config.insert("retention".into(), "1d".into());
        let err = check_config(&b).expect_err("a storage field");
        assert!(err.contains("spec.storage.retention"), "{err}");
    }

    #[test]
    fn toml_values_are_escaped() {
        let mut b = fixture(1, 1);
        b.spec
            .config
            .insert("odd key".to_string(), "say \"hi\"\\".to_string());
        let t = render_broker_config(&b, &[]);
        assert!(t.contains("\"odd key\" = \"say \\\"hi\\\"\\\\\""), "{t}");
    }

    #[test]
    fn a_tls_secret_is_mounted_into_the_proxies_and_served() {
        let proxy_pod = |b: &Broker| {
            build(b, &inputs())
                .expect("build")
                .proxy
                .spec
                .and_then(|s| s.template.spec)
                .expect("pod")
        };
        let mut b = fixture(1, 2);
        let plain = proxy_pod(&b);
        let args = plain.containers[0].args.clone().unwrap_or_default();
        assert!(!args.iter().any(|a| a.starts_with("--tls")), "{args:?}");
        assert_eq!(plain.volumes.as_ref().map(Vec::len), Some(1));

        b.spec.compute.tls = Some(crate::crd::ClientTls {
            secret_name: "demo-tls".to_string(),
        });
        let pod = proxy_pod(&b);
        let args = pod.containers[0].args.clone().unwrap_or_default().join(" ");
        assert!(
            args.ends_with(
                "--tls-cert /etc/ferromq/tls/tls.crt --tls-key /etc/ferromq/tls/tls.key"
            ),
            "{args}"
        );
        let vols = pod.volumes.clone().unwrap_or_default();
        let tls = vols.iter().find(|v| v.name == "tls").expect("tls volume");
        assert_eq!(
            tls.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
            Some("demo-tls")
        );
        let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
        assert!(mounts
            .iter()
            .any(|m| m.name == "tls" && m.mount_path == TLS_DIR && m.read_only == Some(true)));
    }

    fn template_annotation(t: &PodTemplateSpec, key: &str) -> Option<String> {
        t.metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(key).cloned())
    }

    #[test]
    fn internal_tls_mounts_a_certificate_and_passes_the_flags_on_every_tier() {
        let mut b = fixture(2, 2);
        let mut i = inputs();
        i.internal_tls = true;
        let c = build(&b, &i).expect("build");
        for (g, replicated) in [(0, true), (1, true)] {
            let pod = pod_of(&c, g);
            let container = &pod.containers[0];
            // Replicated members run through the shell: the flags end its exec line.
            let line = if replicated {
                container.command.clone().unwrap_or_default().join(" ")
            } else {
                container.args.clone().unwrap_or_default().join(" ")
            };
            assert!(
                line.ends_with(
                    "--tls required --tls-cert /etc/ferromq/internal-tls/tls.crt --tls-key \
                     /etc/ferromq/internal-tls/tls.key --tls-ca /etc/ferromq/internal-tls/ca.crt"
                ),
                "{line}"
            );
            let vol = pod
                .volumes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|v| v.name == internal_tls::VOLUME)
                .and_then(|v| v.secret)
                .expect("internal TLS volume");
            assert_eq!(
                vol.secret_name,
                Some(format!("demo-group-{g}-internal-tls"))
            );
            assert!(container
                .volume_mounts
                .clone()
                .unwrap_or_default()
                .iter()
                .any(|m| m.name == internal_tls::VOLUME
                    && m.mount_path == internal_tls::INTERNAL_TLS_DIR));
        }
        // An unreplicated group takes them as arguments.
        b.spec.storage.replicas_per_group = 1;
        let single = build(&b, &i).expect("build");
        let args = pod_of(&single, 0).containers[0]
            .args
            .clone()
            .unwrap_or_default()
            .join(" ");
        assert!(args.contains("--tls required --tls-cert"), "{args}");

        // Proxies: the cluster certificate on the client port (the port still takes
        // plaintext: no --tls required), and the CA for what they dial.
        let proxy = c
            .proxy
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("pod");
        let args = proxy.containers[0]
            .args
            .clone()
            .unwrap_or_default()
            .join(" ");
        assert!(!args.contains("--tls required"), "{args}");
        assert!(
            args.ends_with(
                "--tls-cert /etc/ferromq/internal-tls/tls.crt --tls-key \
                 /etc/ferromq/internal-tls/tls.key --tls-ca /etc/ferromq/internal-tls/ca.crt"
            ),
            "{args}"
        );
        // With the user's client certificate, that one is served; the CA still verifies peers.
        b.spec.compute.tls = Some(crate::crd::ClientTls {
            secret_name: "demo-tls".to_string(),
        });
        let c = build(&b, &i).expect("build");
        let proxy = c
            .proxy
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("pod");
        let args = proxy.containers[0]
            .args
            .clone()
            .unwrap_or_default()
            .join(" ");
        assert!(
            args.ends_with(
                "--tls-cert /etc/ferromq/tls/tls.crt --tls-key /etc/ferromq/tls/tls.key \
                 --tls-ca /etc/ferromq/internal-tls/ca.crt"
            ),
            "{args}"
        );
        let vols: Vec<_> = proxy
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(vols, ["config", "tls", internal_tls::VOLUME]);
        assert_eq!(
            proxy_mounted_secrets(&b, "demo", true),
            ["demo-tls", "demo-proxy-tls"]
        );
    }

    #[test]
    fn a_changed_mounted_secret_rolls_only_the_pods_that_mount_it() {
        let mut b = fixture(2, 1);
        // Without auth or TLS there is nothing to hash: templates stay as they were.
        let c = build(&b, &inputs()).expect("build");
        let t = c.groups[0].statefulset.spec.clone().expect("spec").template;
        assert_eq!(
            template_annotation(&t, internal_tls::SECRETS_HASH_ANNOTATION),
            None
        );

        b.spec.auth = Some(crate::crd::AuthSpec {
            enabled: true,
            super_user_secret_ref: None,
        });
        assert_eq!(
            group_mounted_secrets(&b, "demo", "demo-group-1", true),
            ["demo-group-1-internal-tls", "demo-superuser"]
        );
        let mut i = inputs();
        i.internal_tls = true;
        for n in [
            "demo-superuser",
            "demo-group-0-internal-tls",
            "demo-group-1-internal-tls",
            "demo-proxy-tls",
        ] {
            i.secret_versions
                .insert(n.to_string(), format!("uid-{n}/1"));
        }
        let before = build(&b, &i).expect("build");
        let hash = |c: &BrokerChildren, g: usize| {
            let t = c.groups[g].statefulset.spec.clone().expect("spec").template;
            template_annotation(&t, internal_tls::SECRETS_HASH_ANNOTATION).expect("hash")
        };
        let proxy_t = |c: &BrokerChildren| c.proxy.spec.clone().expect("spec").template;

        // The super user's Secret changed: every broker group rolls, the proxies do not.
        let mut rotated = i.clone();
        rotated
            .secret_versions
            .insert("demo-superuser".into(), "uid-demo-superuser/2".into());
        let after = build(&b, &rotated).expect("build");
        for g in 0..2 {
            assert_ne!(hash(&before, g), hash(&after, g));
            assert_ne!(
                spec_hash(&before.groups[g].statefulset),
                spec_hash(&after.groups[g].statefulset),
                "the roll logic sees the group as changed"
            );
        }
        assert_eq!(proxy_t(&before), proxy_t(&after));

        // One group's certificate renewed: that group alone.
        let mut renewed = i.clone();
        renewed
            .secret_versions
            .insert("demo-group-1-internal-tls".into(), "uid/9".into());
        let after = build(&b, &renewed).expect("build");
        assert_eq!(hash(&before, 0), hash(&after, 0));
        assert_ne!(hash(&before, 1), hash(&after, 1));
        assert_eq!(proxy_t(&before), proxy_t(&after));

        // The proxies' certificate renewed: the proxies alone.
        let mut renewed = i.clone();
        renewed
            .secret_versions
            .insert("demo-proxy-tls".into(), "uid/9".into());
        let after = build(&b, &renewed).expect("build");
        assert_eq!(hash(&before, 0), hash(&after, 0));
        assert_ne!(
            template_annotation(&proxy_t(&before), internal_tls::SECRETS_HASH_ANNOTATION),
            template_annotation(&proxy_t(&after), internal_tls::SECRETS_HASH_ANNOTATION)
        );
    }

    #[test]
    fn auth_reaches_the_broker_pods_through_config_env_and_a_secret_file() {
        let mut b = fixture(1, 2);
        let off = build(&b, &inputs()).expect("build");
        assert!(!broker_toml(&off).contains("auth"), "{}", broker_toml(&off));
        assert_eq!(super_user_secret(&b, "demo"), None);

        b.spec.auth = Some(crate::crd::AuthSpec {
            enabled: true,
            super_user_secret_ref: None,
        });
        assert_eq!(
            super_user_secret(&b, "demo").as_deref(),
            Some("demo-superuser")
        );
        let on = build(&b, &inputs()).expect("build");
        let toml = broker_toml(&on);
        assert!(toml.contains("auth = true\n"), "{toml}");
        assert!(
            toml.contains("auth-super-secret-file = \"/etc/ferromq/auth/secretKey\""),
            "{toml}"
        );
        check_config(&b).expect("the broker reads the auth keys");
        let pod = pod_of(&on, 0);
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let su = env
            .iter()
            .find(|e| e.name == "FERROMQ_AUTH_SUPER_USER")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("super user from the Secret");
        assert_eq!(
            (su.name.as_str(), su.key.as_str()),
            ("demo-superuser", "accessKey")
        );
        let vol = pod
            .volumes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.name == "auth")
            .and_then(|v| v.secret)
            .expect("auth volume");
        assert_eq!(vol.secret_name.as_deref(), Some("demo-superuser"));
        assert_eq!(
            vol.items
                .unwrap_or_default()
                .iter()
                .map(|i| i.key.as_str())
                .collect::<Vec<_>>(),
            ["secretKey"],
            "only the secret key is mounted"
        );
        assert!(pod.containers[0]
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .iter()
            .any(|m| m.name == "auth" && m.mount_path == AUTH_DIR && m.read_only == Some(true)));
        // Turning auth on changes the broker pods (they roll), not the proxies, which forward
        // each caller's signed headers and hold no users.
        assert_ne!(
            off.groups[0].statefulset.metadata.annotations,
            on.groups[0].statefulset.metadata.annotations
        );
        assert_eq!(
            off.proxy.spec.as_ref().map(|s| &s.template),
            on.proxy.spec.as_ref().map(|s| &s.template)
        );

        b.spec.auth = Some(crate::crd::AuthSpec {
            enabled: true,
            super_user_secret_ref: Some(crate::crd::SecretRef {
                name: "my-admin".into(),
            }),
        });
        assert_eq!(super_user_secret(&b, "demo").as_deref(), Some("my-admin"));
        b.spec.config.insert("auth".into(), "false".into());
        let err = check_config(&b).unwrap_err();
        assert!(err.contains("spec.auth.enabled"), "{err}");
    }

    #[test]
    fn compute_tier_is_a_deployment_behind_the_client_service() {
        let c = build(&fixture(2, 3), &inputs()).expect("build");
        assert_eq!(c.proxy.metadata.name.as_deref(), Some("demo-proxy"));
        assert_eq!(c.proxy.spec.as_ref().and_then(|s| s.replicas), Some(3));
        let svc = c.client_service.spec.clone().expect("svc");
        assert_eq!(c.client_service.metadata.name.as_deref(), Some("demo"));
        assert_eq!(svc.ports.unwrap_or_default()[0].port, 8081);
        assert_eq!(svc.selector, Some(selector_labels("demo", PROXY_COMPONENT)));
        assert!(c.hpa.is_none());
        assert_eq!(
            proxy_selector("demo"),
            selector_string(&selector_labels("demo", PROXY_COMPONENT))
        );
    }

    #[test]
    fn autoscaling_targets_the_broker_scale_subresource() {
        let mut b = fixture(1, 2);
        b.spec.compute.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 6,
            target_cpu_utilization_percent: 60,
        });
        let hpa = build(&b, &inputs()).expect("build").hpa.expect("hpa");
        let spec = hpa.spec.expect("spec");
        assert_eq!(spec.scale_target_ref.kind, "Broker");
        assert_eq!(
            spec.scale_target_ref.api_version.as_deref(),
            Some("ferromq.io/v1alpha1")
        );
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    }

    #[test]
    fn pod_templates_reach_both_tiers_separately() {
        use crate::crd::PodTemplate;
        let mut b = fixture(2, 2);
        b.spec.storage.pod_template = Some(PodTemplate {
            labels: Some(BTreeMap::from([(
                "tier".to_string(),
                "storage".to_string(),
            )])),
            priority_class_name: Some("brokers".to_string()),
            env: Some(vec![env("MALLOC_ARENA_MAX", "2")]),
            ..PodTemplate::default()
        });
        b.spec.compute.pod_template = Some(PodTemplate {
            annotations: Some(BTreeMap::from([(
                "prometheus.io/scrape".to_string(),
                "true".to_string(),
            )])),
            image_pull_secrets: Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
                name: "regcred".to_string(),
            }]),
            ..PodTemplate::default()
        });
        let c = build(&b, &inputs()).expect("build");
        for g in &c.groups {
            let t = g.statefulset.spec.clone().expect("spec").template;
            let meta = t.metadata.expect("meta");
            assert_eq!(meta.labels.expect("labels")["tier"], "storage");
            let annotations = meta.annotations.expect("annotations");
            assert!(annotations.contains_key(CONFIG_HASH_ANNOTATION));
            assert!(!annotations.contains_key("prometheus.io/scrape"));
            let pod = t.spec.expect("pod");
            assert_eq!(pod.priority_class_name.as_deref(), Some("brokers"));
            assert_eq!(pod.image_pull_secrets, None);
            let env = pod.containers[0].env.clone().unwrap_or_default();
            assert!(env.iter().any(|e| e.name == "MALLOC_ARENA_MAX"));
            assert!(env.iter().any(|e| e.name == "FERROMQ_GROUP"));
        }
        let t = c.proxy.spec.clone().expect("spec").template;
        let meta = t.metadata.expect("meta");
        assert!(!meta.labels.expect("labels").contains_key("tier"));
        let annotations = meta.annotations.expect("annotations");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert!(annotations.contains_key(CONFIG_HASH_ANNOTATION));
        let pod = t.spec.expect("pod");
        assert_eq!(pod.priority_class_name, None);
        assert_eq!(
            pod.image_pull_secrets.map(|s| s[0].name.clone()).as_deref(),
            Some("regcred")
        );
    }

    #[test]
    fn the_client_service_type_annotations_and_node_port_follow_the_spec() {
        use crate::crd::{ClientService, ServiceType};
        let c = build(&fixture(1, 1), &inputs()).expect("build");
        let spec = c.client_service.spec.clone().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(c.client_service.metadata.annotations, None);

        let mut b = fixture(1, 1);
        b.spec.compute.service = Some(ClientService {
            type_: ServiceType::LoadBalancer,
            annotations: Some(BTreeMap::from([(
                "service.beta.kubernetes.io/aws-load-balancer-scheme".to_string(),
                "internet-facing".to_string(),
            )])),
            node_port: Some(30081),
            advertised_address: None,
        });
        let c = build(&b, &inputs()).expect("build");
        let spec = c.client_service.spec.clone().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.expect("ports")[0].node_port, Some(30081));
        assert_eq!(
            c.client_service.metadata.annotations.expect("annotations")
                ["service.beta.kubernetes.io/aws-load-balancer-scheme"],
            "internet-facing"
        );
    }

    /// The proxy container's environment, value or field path of each variable.
    fn proxy_env(c: &BrokerChildren) -> BTreeMap<String, String> {
        let pod = c
            .proxy
            .spec
            .clone()
            .expect("spec")
            .template
            .spec
            .expect("pod");
        pod.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let v = e.value.unwrap_or_else(|| {
                    e.value_from
                        .and_then(|f| f.field_ref)
                        .map(|f| f.field_path)
                        .unwrap_or_default()
                });
                (e.name, v)
            })
            .collect()
    }

    #[test]
    fn proxies_advertise_the_address_the_service_type_gives_clients() {
        use crate::builders::endpoint::ServiceFacts;
        use crate::crd::{ClientService, ServiceType};
        let c = build(&fixture(1, 1), &inputs()).expect("build");
        assert_eq!(
            proxy_env(&c)["FERROMQ_ADVERTISE_ADDR"],
            "demo.prod.svc:8081",
            "not the loopback default"
        );
        let mut b = fixture(1, 1);
        b.spec.compute.service = Some(ClientService {
            type_: ServiceType::NodePort,
            ..ClientService::default()
        });
        let mut i = inputs();
        i.service = ServiceFacts {
            load_balancer: None,
            node_port: Some(30999),
        };
        let env = proxy_env(&build(&b, &i).expect("build"));
        assert_eq!(env["FERROMQ_HOST_IP"], "status.hostIP");
        assert_eq!(env["FERROMQ_ADVERTISE_ADDR"], "$(FERROMQ_HOST_IP):30999");
        let pod = build(&b, &i)
            .expect("build")
            .proxy
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let order: Vec<_> = pod.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect();
        let at = |n: &str| order.iter().position(|x| x == n);
        assert!(
            at("FERROMQ_HOST_IP") < at("FERROMQ_ADVERTISE_ADDR"),
            "$(FERROMQ_HOST_IP) expands only when defined earlier: {order:?}"
        );
    }

    #[test]
    fn the_spec_hash_changes_with_the_group_spec_only() {
        let hash = |b: &Broker| {
            let c = build(b, &inputs()).expect("build");
            spec_hash(&c.groups[0].statefulset).map(String::from)
        };
        let base = fixture(2, 1);
        assert!(hash(&base).is_some());
        let mut image = fixture(2, 1);
        image.spec.image = "ferromq:v2".to_string();
        assert_ne!(hash(&base), hash(&image));
        let mut proxies = fixture(2, 5);
        proxies.spec.compute.replicas = 5;
        assert_eq!(
            hash(&base),
            hash(&proxies),
            "the compute tier is not the group's"
        );
    }

    #[test]
    fn group_index_parses_only_own_groups() {
        assert_eq!(group_index("demo", "demo-group-4"), Some(4));
        assert_eq!(group_index("demo", "other-group-4"), None);
        assert_eq!(group_index("demo", "demo-group-x"), None);
    }
}
