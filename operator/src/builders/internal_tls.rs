//! Internal TLS as the pods see it: the Secrets (the cluster CA, one server certificate per
//! name server ensemble, broker group and proxy tier), the names each certificate covers, the
//! volume and flags that hand them to `ferromq`, and the pod-template annotation that rolls
//! pods when a Secret they mount changes.
//!
//! Certificate names follow how peers dial: name servers at `<ns>-<i>.<ns>.<namespace>.svc:9876`
//! (brokers, proxies, and the controller's Raft peers), broker members at their advertised
//! `<pod>.<group>.<namespace>.svc:10911` (proxies and replication), proxies at the client
//! Service `<broker>.<namespace>.svc:8081` (the operator's admin calls). Each certificate also
//! covers the `.svc.cluster.local` forms, the Service's short names, `localhost` and
//! `127.0.0.1`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::ByteString;

use super::common::{object_labels, stable_hash, Parent};
use crate::crd::Nameserver;
use crate::pki::{ClusterCa, CA_CERT, CA_KEY, TLS_CERT, TLS_KEY};

/// Where every pod mounts its internal certificate Secret.
pub const INTERNAL_TLS_DIR: &str = "/etc/ferromq/internal-tls";
/// Name of that volume.
pub const VOLUME: &str = "internal-tls";
/// Label on every leaf Secret: the Nameserver whose CA issued it, so the CA's owner can find
/// every leaf before retiring an old CA.
pub const CLUSTER_CA_LABEL: &str = "ferromq.io/cluster-ca";
/// Annotation on the generated CA Secret: when the operator last renewed it (Unix seconds).
pub const RENEWED_AT_ANNOTATION: &str = "ferromq.io/ca-renewed-at";
/// Annotation on pod templates: a digest of the versions of the Secrets the pods mount, so a
/// renewed certificate or a rotated super user rolls them. Versions (uid and resourceVersion),
/// not contents: an annotation anyone who reads pods can see must not be a hash of a password
/// someone could guess offline.
pub const SECRETS_HASH_ANNOTATION: &str = "ferromq.io/secrets-hash";

/// The CA Secret the operator generates for Nameserver `name`.
pub fn generated_ca_secret(name: &str) -> String {
    format!("{name}-cluster-ca")
}

/// The CA Secret Nameserver `ns` issues from: `spec.internalTls.caSecretRef` or the generated one.
pub fn ca_secret_name(ns: &Nameserver) -> String {
    ns.spec
        .internal_tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
        .map(|r| r.name.clone())
        .unwrap_or_else(|| generated_ca_secret(&ns.metadata.name.clone().unwrap_or_default()))
}

/// True when the CA Secret is the user's (never renewed by the operator).
pub fn ca_is_users(ns: &Nameserver) -> bool {
    ns.spec
        .internal_tls
        .as_ref()
        .is_some_and(|t| t.ca_secret_ref.is_some())
}

/// The name servers' certificate Secret.
pub fn nameserver_secret(nameserver: &str) -> String {
    format!("{nameserver}-internal-tls")
}

/// Broker group `group`'s certificate Secret.
pub fn group_secret(group: &str) -> String {
    format!("{group}-internal-tls")
}

/// The proxies' certificate Secret (their internal trust, and their client port when
/// `spec.compute.tls` names no certificate).
pub fn proxy_secret(broker: &str) -> String {
    format!("{broker}-proxy-tls")
}

/// The names a certificate for Service `service` must cover; with `per_pod`, the wildcard of
/// its pods' DNS names too (headless Services).
pub fn service_names(service: &str, namespace: &str, per_pod: bool) -> Vec<String> {
    let mut out = Vec::new();
    if per_pod {
        out.push(format!("*.{service}.{namespace}.svc"));
        out.push(format!("*.{service}.{namespace}.svc.cluster.local"));
    }
    out.extend([
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ]);
    out
}

/// The flag that makes a process dial its internal links over TLS, verifying peers against
/// the mounted bundle.
pub fn ca_args() -> Vec<String> {
    vec![
        "--tls-ca".to_string(),
        format!("{INTERNAL_TLS_DIR}/{CA_CERT}"),
    ]
}

/// Flags of a process whose gRPC port is internal only (name servers, brokers): TLS only,
/// with the mounted certificate, and TLS on every link it dials.
pub fn server_args() -> Vec<String> {
    let mut out = vec!["--tls".to_string(), "required".to_string()];
    out.extend(cert_args(INTERNAL_TLS_DIR));
    out.extend(ca_args());
    out
}

/// `--tls-cert`/`--tls-key` of the Secret mounted at `dir`.
pub fn cert_args(dir: &str) -> Vec<String> {
    vec![
        "--tls-cert".to_string(),
        format!("{dir}/{TLS_CERT}"),
        "--tls-key".to_string(),
        format!("{dir}/{TLS_KEY}"),
    ]
}

/// The volume of a pod's internal certificate Secret.
pub fn volume(secret: &str) -> Volume {
    Volume {
        name: VOLUME.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            items: Some(
                [TLS_CERT, TLS_KEY, CA_CERT]
                    .map(|k| k8s_openapi::api::core::v1::KeyToPath {
                        key: k.to_string(),
                        path: k.to_string(),
                        mode: None,
                    })
                    .to_vec(),
            ),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Where it is mounted.
pub fn mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME.to_string(),
        mount_path: INTERNAL_TLS_DIR.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The version of a Secret as [`SECRETS_HASH_ANNOTATION`] counts it.
pub fn secret_version(secret: &Secret) -> String {
    format!(
        "{}/{}",
        secret.metadata.uid.as_deref().unwrap_or_default(),
        secret
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default()
    )
}

/// The value of [`SECRETS_HASH_ANNOTATION`] for pods mounting `mounted`, given the versions
/// read from the cluster (a Secret not there yet counts as absent); `None` when the pods mount
/// no Secret, so that clusters without auth or TLS keep their pod templates.
pub fn secrets_hash(mounted: &[String], versions: &BTreeMap<String, String>) -> Option<String> {
    if mounted.is_empty() {
        return None;
    }
    let mut names: Vec<&String> = mounted.iter().collect();
    names.sort();
    names.dedup();
    let text: String = names
        .iter()
        .map(|n| {
            format!(
                "{n}={}\n",
                versions.get(*n).map(String::as_str).unwrap_or("absent")
            )
        })
        .collect();
    Some(stable_hash(&text))
}

/// The CA Secret the operator generates, owned by the Nameserver `parent`.
pub fn ca_secret(parent: &Parent, name: &str, ca: &ClusterCa) -> Secret {
    let mut meta = parent.child_meta(name, object_labels(&parent.name, "nameserver"));
    if let Some(at) = ca.renewed_at {
        meta.annotations = Some(BTreeMap::from([(
            RENEWED_AT_ANNOTATION.to_string(),
            at.to_string(),
        )]));
    }
    Secret {
        metadata: meta,
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([
            (
                CA_CERT.to_string(),
                ByteString(ca.bundle_pem().into_bytes()),
            ),
            (
                CA_KEY.to_string(),
                ByteString(ca.key_pem().as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

/// A server certificate Secret (`kubernetes.io/tls` plus `ca.crt`), owned by `parent`,
/// labelled with the Nameserver `cluster` whose CA issued it.
pub fn leaf_secret(
    parent: &Parent,
    name: &str,
    component: &str,
    cluster: &str,
    cert_pem: &str,
    key_pem: &str,
    bundle_pem: &str,
) -> Secret {
    let mut labels = object_labels(&parent.name, component);
    labels.insert(CLUSTER_CA_LABEL.to_string(), cluster.to_string());
    Secret {
        metadata: parent.child_meta(name, labels),
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (
                TLS_CERT.to_string(),
                ByteString(cert_pem.as_bytes().to_vec()),
            ),
            (TLS_KEY.to_string(), ByteString(key_pem.as_bytes().to_vec())),
            (
                CA_CERT.to_string(),
                ByteString(bundle_pem.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_pods_services_and_loopback() {
        assert_eq!(
            service_names("demo-group-0", "prod", true),
            vec![
                "*.demo-group-0.prod.svc",
                "*.demo-group-0.prod.svc.cluster.local",
                "demo-group-0.prod.svc",
                "demo-group-0.prod.svc.cluster.local",
                "demo-group-0.prod",
                "demo-group-0",
                "localhost",
                "127.0.0.1",
            ]
        );
        assert!(!service_names("demo", "prod", false)
            .iter()
            .any(|n| n.starts_with('*')));
    }

    #[test]
    fn the_secrets_hash_follows_versions_and_is_absent_without_secrets() {
        let mounted = vec!["a".to_string(), "b".to_string()];
        let mut v = BTreeMap::from([("a".to_string(), "u1/5".to_string())]);
        let h1 = secrets_hash(&mounted, &v).expect("hash");
        v.insert("b".to_string(), "u2/7".to_string());
        let h2 = secrets_hash(&mounted, &v).expect("hash");
        assert_ne!(h1, h2);
        // Order of the mounted list does not matter; an unrelated Secret does not count.
        v.insert("c".to_string(), "u3/1".to_string());
        assert_eq!(
            secrets_hash(&["b".to_string(), "a".to_string()], &v),
            Some(h2.clone())
        );
        v.insert("a".to_string(), "u1/6".to_string());
        assert_ne!(secrets_hash(&mounted, &v), Some(h2));
        assert_eq!(secrets_hash(&[], &v), None);
    }

    #[test]
    fn server_flags_name_the_mounted_files() {
        assert_eq!(
            server_args().join(" "),
            "--tls required --tls-cert /etc/ferromq/internal-tls/tls.crt --tls-key \
             /etc/ferromq/internal-tls/tls.key --tls-ca /etc/ferromq/internal-tls/ca.crt"
        );
    }
}
