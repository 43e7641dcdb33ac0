//! Children of a `Nameserver`: a headless Service (stable per-pod DNS), a StatefulSet and a
//! PodDisruptionBudget. With `controller.enabled` every pod also runs a replication controller
//! peer: `--controller-peers` lists every pod's stable address in ordinal order (the same list
//! on every pod), `--controller-id` is the ordinal + 1, and the Raft state lives on a per-pod
//! claim (`controller-data`) so it survives restarts and rescheduling.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec, Service, VolumeMount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::common::{
    claim_template, container_ports, headless_service, http_probe, identity_env, label_selector,
    object_labels, one_at_a_time_pdb, pod_spec, selector_labels, BuildError, Parent, HTTP_PORT,
    NAMESERVER_PORT,
};
use super::internal_tls;
use crate::crd::Nameserver;

/// Component label value of name server pods.
pub const COMPONENT: &str = "nameserver";
/// Claim template holding a controller peer's Raft log and state.
pub const CONTROLLER_VOLUME: &str = "controller-data";
/// Where name server pods mount the controller's volume (`--data-dir`).
pub const CONTROLLER_DIR: &str = "/var/lib/ferromq";

/// Command of a name server pod: `ferromq nameserver` directly, or, with the controller,
/// through `/bin/sh` to derive the peer id from the pod's ordinal. `extra` (the internal TLS
/// flags) goes last in either form.
fn nameserver_command(
    peers: Option<&[String]>,
    extra: &[String],
) -> (Vec<String>, Option<Vec<String>>) {
    let base = format!("--addr 0.0.0.0:{NAMESERVER_PORT} --http-addr 0.0.0.0:{HTTP_PORT}");
    match peers {
        None => (
            vec!["ferromq".to_string()],
            Some(
                std::iter::once("nameserver")
                    .chain(base.split(' '))
                    .map(String::from)
                    .chain(extra.iter().cloned())
                    .collect(),
            ),
        ),
        Some(peers) => {
            let tail: String = extra.iter().map(|a| format!(" {a}")).collect();
            let script = format!(
                "ordinal=\"${{FERROMQ_POD_NAME##*-}}\"\nexec ferromq nameserver {base} --controller-peers {} --controller-id \"$((ordinal + 1))\" --data-dir {CONTROLLER_DIR}{tail}",
                peers.join(",")
            );
            (vec!["/bin/sh".to_string(), "-c".to_string(), script], None)
        }
    }
}

/// Stable `host:port` of each name server replica: `<name>-<i>.<name>.<namespace>.svc:9876`.
/// Brokers and proxies get these DNS names, never pod IPs, so a rescheduled name server does
/// not force them to restart.
pub fn addresses(name: &str, namespace: &str, replicas: i32) -> Vec<String> {
    (0..replicas.max(0))
        .map(|i| format!("{name}-{i}.{name}.{namespace}.svc:{NAMESERVER_PORT}"))
        .collect()
}

/// Everything a Nameserver owns, in apply order.
pub struct NameserverChildren {
    /// Headless Service named like the Nameserver.
    pub service: Service,
    /// StatefulSet named like the Nameserver.
    pub statefulset: StatefulSet,
    /// PDB allowing one name server down at a time.
    pub pdb: PodDisruptionBudget,
}

/// Facts read from the cluster that shape the desired objects.
#[derive(Clone, Debug, Default)]
pub struct NameserverInputs {
    /// Versions of the Secrets the pods mount, by name (see
    /// [`internal_tls::SECRETS_HASH_ANNOTATION`]).
    pub secret_versions: BTreeMap<String, String>,
}

/// The Secrets name server pods mount.
pub fn mounted_secrets(ns: &Nameserver) -> Vec<String> {
    if ns.spec.internal_tls_enabled() {
        vec![internal_tls::nameserver_secret(
            &ns.metadata.name.clone().unwrap_or_default(),
        )]
    } else {
        Vec::new()
    }
}

/// Builds the desired children of `ns` with no facts from the cluster.
pub fn build(ns: &Nameserver) -> Result<NameserverChildren, BuildError> {
    build_with(ns, &NameserverInputs::default())
}

/// Builds the desired children of `ns`.
pub fn build_with(
    ns: &Nameserver,
    inputs: &NameserverInputs,
) -> Result<NameserverChildren, BuildError> {
    let parent = Parent::of(ns)?;
    let tls = ns.spec.internal_tls_enabled();
    let labels = object_labels(&parent.name, COMPONENT);
    let selector = selector_labels(&parent.name, COMPONENT);

    // Brokers must resolve every name server, ready or not, to register early.
    let service = headless_service(
        parent.child_meta(&parent.name, labels.clone()),
        selector.clone(),
        &[("remoting", NAMESERVER_PORT), ("http", HTTP_PORT)],
    );

    let controller = ns.spec.controller.as_ref().filter(|c| c.enabled);
    let peers = addresses(&parent.name, &parent.namespace, ns.spec.replicas);
    let tls_args = if tls {
        internal_tls::server_args()
    } else {
        Vec::new()
    };
    let (command, args) = nameserver_command(controller.map(|_| peers.as_slice()), &tls_args);
    let mounts: Vec<VolumeMount> = controller
        .map(|_| VolumeMount {
            name: CONTROLLER_VOLUME.to_string(),
            mount_path: CONTROLLER_DIR.to_string(),
            ..VolumeMount::default()
        })
        .into_iter()
        .chain(tls.then(internal_tls::mount))
        .collect();
    let container = Container {
        name: "nameserver".to_string(),
        image: Some(ns.spec.image.clone()),
        image_pull_policy: Some(ns.spec.image_pull_policy.as_str().to_string()),
        command: Some(command),
        args,
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        env: Some(identity_env()),
        ports: Some(container_ports(&[
            ("remoting", NAMESERVER_PORT),
            ("http", HTTP_PORT),
        ])),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: ns.spec.resources.clone(),
        ..Container::default()
    };

    let statefulset = StatefulSet {
        metadata: parent.child_meta(&parent.name, labels.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(ns.spec.replicas),
            service_name: Some(parent.name.clone()),
            // Start them all at once: name servers hold no shared state, and controller peers
            // need a majority up before any can become ready.
            pod_management_policy: Some("Parallel".to_string()),
            volume_claim_templates: controller.map(|c| {
                vec![claim_template(
                    CONTROLLER_VOLUME,
                    selector.clone(),
                    c.volume.storage_class_name.clone(),
                    c.volume.size.clone(),
                )]
            }),
            selector: label_selector(selector.clone()),
            template: {
                let mut pod = pod_spec(container, ns.spec.placement.as_ref());
                if tls {
                    pod.volumes = Some(vec![internal_tls::volume(
                        &internal_tls::nameserver_secret(&parent.name),
                    )]);
                }
                let annotations = internal_tls::secrets_hash(
                    &mounted_secrets(ns),
                    &inputs.secret_versions,
                )
                .map(|h| BTreeMap::from([(internal_tls::SECRETS_HASH_ANNOTATION.to_string(), h)]));
                let mut t = PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        annotations,
                        ..ObjectMeta::default()
                    }),
                    spec: Some(pod),
                };
                super::pod_template::merge_into(&mut t, ns.spec.pod_template.as_ref());
                t
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };

    let pdb = one_at_a_time_pdb(parent.child_meta(&parent.name, labels), selector);

    Ok(NameserverChildren {
        service,
        statefulset,
        pdb,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{ControllerVolume, ImagePullPolicy, NameserverSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    pub(crate) fn fixture(replicas: i32) -> Nameserver {
        let mut ns = Nameserver::new(
            "ns1",
            NameserverSpec {
                replicas,
                image: "ferromq:test".to_string(),
                image_pull_policy: ImagePullPolicy::IfNotPresent,
                resources: None,
                placement: None,
                controller: None,
                pod_template: None,
                internal_tls: None,
            },
        );
        ns.metadata.namespace = Some("prod".to_string());
        ns.metadata.uid = Some("uid-ns1".to_string());
        ns
    }

    #[test]
    fn addresses_use_stable_pod_dns_names() {
        assert_eq!(
            addresses("ns1", "prod", 2),
            vec![
                "ns1-0.ns1.prod.svc:9876".to_string(),
                "ns1-1.ns1.prod.svc:9876".to_string()
            ]
        );
        assert!(addresses("ns1", "prod", 0).is_empty());
    }

    #[test]
    fn the_pod_template_reaches_the_name_server_pods() {
        use k8s_openapi::api::core::v1::PodSecurityContext;
        let mut ns = fixture(3);
        ns.spec.pod_template = Some(crate::crd::PodTemplate {
            labels: Some([("team".to_string(), "infra".to_string())].into()),
            priority_class_name: Some("system-cluster-critical".to_string()),
            security_context: Some(PodSecurityContext {
                supplemental_groups: Some(vec![4000]),
                ..PodSecurityContext::default()
            }),
            ..Default::default()
        });
        let c = build(&ns).expect("build");
        let t = c.statefulset.spec.expect("spec").template;
        let labels = t.metadata.and_then(|m| m.labels).expect("labels");
        assert_eq!(labels["team"], "infra");
        assert_eq!(labels["app.kubernetes.io/component"], COMPONENT);
        let pod = t.spec.expect("pod");
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-cluster-critical")
        );
        let sc = pod.security_context.expect("security context");
        assert_eq!(sc.supplemental_groups, Some(vec![4000]));
        assert_eq!(sc.run_as_non_root, Some(true));
    }

    #[test]
    fn statefulset_runs_nameserver_role_on_its_ports() {
        let c = build(&fixture(3)).expect("build");
        let spec = c.statefulset.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("ns1"));
        let pod = spec.template.spec.expect("pod spec");
        let args = pod.containers[0].args.clone().unwrap_or_default();
        assert_eq!(
            args,
            vec![
                "nameserver",
                "--addr",
                "0.0.0.0:9876",
                "--http-addr",
                "0.0.0.0:9090"
            ]
        );
        assert_eq!(
            pod.containers[0]
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|g| g.path.as_deref()),
            Some("/readyz")
        );
    }

    #[test]
    fn controller_peers_are_every_pod_in_ordinal_order_with_state_on_a_claim() {
        let mut ns = fixture(3);
        ns.spec.controller = Some(crate::crd::ControllerSpec {
            enabled: true,
            volume: ControllerVolume {
                size: "2Gi".to_string(),
                storage_class_name: Some("fast".to_string()),
            },
        });
        let spec = build(&ns).expect("build").statefulset.spec.expect("spec");
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let pod = spec.template.spec.expect("pod spec");
        let c = &pod.containers[0];
        assert_eq!(c.args, None);
        let cmd = c.command.clone().unwrap_or_default();
        assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
        assert_eq!(
            cmd[2],
            "ordinal=\"${FERROMQ_POD_NAME##*-}\"\nexec ferromq nameserver --addr 0.0.0.0:9876 \
             --http-addr 0.0.0.0:9090 --controller-peers \
             ns1-0.ns1.prod.svc:9876,ns1-1.ns1.prod.svc:9876,ns1-2.ns1.prod.svc:9876 \
             --controller-id \"$((ordinal + 1))\" --data-dir /var/lib/ferromq"
        );
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        assert_eq!(mounts.len(), 1);
        assert_eq!(
            (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
            (CONTROLLER_VOLUME, CONTROLLER_DIR)
        );
        let claims = spec.volume_claim_templates.expect("claim template");
        assert_eq!(claims[0].metadata.name.as_deref(), Some(CONTROLLER_VOLUME));
        let claim = claims[0].spec.clone().expect("claim spec");
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim
                .resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").cloned()),
            Some(Quantity("2Gi".to_string()))
        );

        // Without the controller: no shell, no claim.
        let plain = build(&fixture(3))
            .expect("build")
            .statefulset
            .spec
            .expect("spec");
        assert_eq!(plain.volume_claim_templates, None);
        let c = &plain.template.spec.expect("pod").containers[0];
        assert_eq!(c.command, Some(vec!["ferromq".to_string()]));
        assert_eq!(c.volume_mounts, None);
    }

    #[test]
    fn internal_tls_gives_name_servers_a_certificate_and_the_ca() {
        let mut ns = fixture(3);
        ns.spec.internal_tls = Some(crate::crd::InternalTls {
            enabled: true,
            ca_secret_ref: None,
        });
        assert_eq!(mounted_secrets(&ns), ["ns1-internal-tls"]);
        let flags = "--tls required --tls-cert /etc/ferromq/internal-tls/tls.crt --tls-key \
                     /etc/ferromq/internal-tls/tls.key --tls-ca /etc/ferromq/internal-tls/ca.crt";
        let c = build(&ns).expect("build");
        let pod = c
            .statefulset
            .spec
            .clone()
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let args = pod.containers[0].args.clone().unwrap_or_default().join(" ");
        assert!(args.ends_with(flags), "{args}");
        let vols = pod.volumes.clone().unwrap_or_default();
        assert_eq!(
            vols[0]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("ns1-internal-tls")
        );
        // With the controller the flags end the shell's exec line (Raft dials TLS too).
        ns.spec.controller = Some(crate::crd::ControllerSpec {
            enabled: true,
            volume: ControllerVolume::default(),
        });
        let pod = build(&ns)
            .expect("build")
            .statefulset
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let script = pod.containers[0]
            .command
            .clone()
            .unwrap_or_default()
            .join(" ");
        assert!(script.ends_with(flags), "{script}");
        assert_eq!(
            pod.containers[0].volume_mounts.as_ref().map(Vec::len),
            Some(2)
        );

        // A renewed certificate changes the pod template (the StatefulSet rolls).
        let hash = |v: &str| {
            let inputs = NameserverInputs {
                secret_versions: [("ns1-internal-tls".to_string(), v.to_string())].into(),
            };
            build_with(&ns, &inputs)
                .expect("build")
                .statefulset
                .spec
                .expect("spec")
                .template
                .metadata
                .and_then(|m| m.annotations)
                .and_then(|a| a.get(internal_tls::SECRETS_HASH_ANNOTATION).cloned())
        };
        assert!(hash("u/1").is_some());
        assert_ne!(hash("u/1"), hash("u/2"));
        // Without internal TLS nothing is mounted or annotated.
        let plain = build(&fixture(3))
            .expect("build")
            .statefulset
            .spec
            .expect("spec");
        assert_eq!(plain.template.metadata.and_then(|m| m.annotations), None);
    }

    #[test]
    fn children_are_owned_by_the_nameserver_and_selectable() {
        let c = build(&fixture(1)).expect("build");
        for meta in [
            &c.service.metadata,
            &c.statefulset.metadata,
            &c.pdb.metadata,
        ] {
            let owners = meta.owner_references.clone().unwrap_or_default();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "Nameserver");
            assert_eq!(owners[0].uid, "uid-ns1");
            assert_eq!(owners[0].controller, Some(true));
        }
        let svc = c.service.spec.expect("svc spec");
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
        assert_eq!(svc.selector, Some(selector_labels("ns1", COMPONENT)));
    }

    #[test]
    fn build_refuses_objects_never_stored() {
        let mut ns = fixture(1);
        ns.metadata.uid = None;
        assert!(matches!(
            build(&ns),
            Err(BuildError::MissingMetadata("uid"))
        ));
    }
}
