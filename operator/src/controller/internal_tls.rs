//! The cluster CA and the server certificates of internal TLS, against the API server.
//!
//! The Nameserver's reconcile owns the CA: it generates it (unless the user names one), takes
//! each renewal step ([`crate::pki::plan_ca`]) and issues the name servers' certificate. Each
//! Broker's reconcile reads that CA (never writes it) and issues its groups' and proxies'
//! certificates. Every write replaces the Secret at the version read (optimistic
//! concurrency), so two reconciles never interleave a CA and a key from different renewals.
//! What is decided here is in [`crate::pki`]; this module only reads and writes Secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::{child_ref, Context};
use crate::builders::auth::controlled_by;
use crate::builders::common::Parent;
use crate::builders::internal_tls as it;
use crate::crd::Nameserver;
use crate::pki::{
    self, plan_ca, plan_leaf, CaAction, CertInfo, ClusterCa, LeafAction, CA_CERT, CA_KEY, TLS_CERT,
    TLS_KEY,
};
use crate::Error;

/// A refusal: CamelCase condition reason and a message naming the Secret and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Condition reason.
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// The cluster CA as a reconcile sees it.
#[derive(Debug)]
pub enum CaState {
    /// Internal TLS is off.
    Off,
    /// Certificates are issued under this CA.
    Ready(Box<ClusterCa>),
    /// The CA cannot be used; nothing is changed.
    Unusable(Refusal),
}

fn bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .filter(|b| !b.is_empty())
}

/// Reads a CA Secret into a [`ClusterCa`] or a refusal naming the key at fault.
pub fn read_ca(secret: &Secret, field: &str, now: i64) -> Result<ClusterCa, Refusal> {
    let name = secret.name_any();
    let missing = |key: &str| {
        Refusal {
        reason: "InvalidCaSecret",
        message: format!(
            "Secret {name} ({field}) has no key {key}; it needs {CA_CERT} (the CA certificate, PEM) and {CA_KEY} (its private key, PEM)"
        ),
    }
    };
    let cert = bytes(secret, CA_CERT).ok_or_else(|| missing(CA_CERT))?;
    let key = bytes(secret, CA_KEY).ok_or_else(|| missing(CA_KEY))?;
    let mut ca =
        ClusterCa::from_pem(&format!("Secret {name} ({field})"), cert, key, now).map_err(|e| {
            Refusal {
                reason: "InvalidCaSecret",
                message: e.to_string(),
            }
        })?;
    ca.renewed_at = secret
        .annotations()
        .get(it::RENEWED_AT_ANNOTATION)
        .and_then(|v| v.parse().ok());
    Ok(ca)
}

/// The first certificate of a leaf Secret's `tls.crt`, if readable.
fn leaf_of(secret: &Secret) -> Option<CertInfo> {
    pki::parse_pem_certs(bytes(secret, TLS_CERT)?, TLS_CERT)
        .ok()?
        .into_iter()
        .next()
}

/// Common name of the CA the operator generates for Nameserver `name` in `namespace`.
fn ca_common_name(name: &str, namespace: &str) -> String {
    format!("FerroMQ cluster CA {namespace}/{name}")
}

/// The cluster CA of `ns`. With `manage` (the Nameserver's own reconcile) a CA the operator
/// owns is generated when missing and taken one renewal step further when due.
pub async fn cluster_ca(ctx: &Context, ns: &Nameserver, manage: bool) -> Result<CaState, Error> {
    if !ns.spec.internal_tls_enabled() {
        return Ok(CaState::Off);
    }
    let namespace = ns.namespace().unwrap_or_default();
    let ns_name = ns.name_any();
    let secret_name = it::ca_secret_name(ns);
    let users = it::ca_is_users(ns);
    let field = if users {
        "spec.internalTls.caSecretRef"
    } else {
        "generated cluster CA"
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = pki::unix_now();
    let Some(secret) = secrets.get_opt(&secret_name).await? else {
        if users {
            return Ok(CaState::Unusable(Refusal {
                reason: "CaSecretNotFound",
                message: format!(
                    "Secret {secret_name} (spec.internalTls.caSecretRef of Nameserver {ns_name}) does not exist in namespace {namespace}; create it with keys {CA_CERT} and {CA_KEY}"
                ),
            }));
        }
        if !manage {
            return Ok(CaState::Unusable(Refusal {
                reason: "ClusterCaPending",
                message: format!(
                    "Nameserver {ns_name} has not generated its cluster CA (Secret {secret_name}) yet"
                ),
            }));
        }
        let ca = match ClusterCa::generate(&ca_common_name(&ns_name, &namespace), now) {
            Ok(ca) => ca,
            Err(e) => {
                return Ok(CaState::Unusable(Refusal {
                    reason: "CaGenerationFailed",
                    message: e.to_string(),
                }))
            }
        };
        let parent = Parent::of(ns)?;
        let created = match secrets
            .create(
                &PostParams::default(),
                &it::ca_secret(&parent, &secret_name, &ca),
            )
            .await
        {
            Ok(s) => s,
            // Another reconcile won: use its CA.
            Err(kube::Error::Api(s)) if s.code == 409 => secrets.get(&secret_name).await?,
            Err(e) => return Err(e.into()),
        };
        ctx.event_related(
            ns,
            Some(child_ref::<Secret>(&namespace, &secret_name)),
            EventType::Normal,
            "ClusterCaCreated",
            "IssueCertificates",
            format!("generated the cluster CA in Secret {secret_name}"),
        )
        .await;
        return Ok(match read_ca(&created, field, now) {
            Ok(ca) => CaState::Ready(Box::new(ca)),
            Err(r) => CaState::Unusable(r),
        });
    };
    let ca = match read_ca(&secret, field, now) {
        Ok(ca) => ca,
        Err(r) => return Ok(CaState::Unusable(r)),
    };
    if !manage || users {
        return Ok(CaState::Ready(Box::new(ca)));
    }
    let leaves: Vec<Option<CertInfo>> = secrets
        .list(&ListParams::default().labels(&format!("{}={ns_name}", it::CLUSTER_CA_LABEL)))
        .await?
        .items
        .iter()
        .map(leaf_of)
        .collect();
    let (next, what) = match plan_ca(now, &ca, &leaves) {
        CaAction::Keep => return Ok(CaState::Ready(Box::new(ca))),
        CaAction::Renew => match ca.renewed(&ca_common_name(&ns_name, &namespace), now) {
            Ok(next) => (
                next,
                "renewed the cluster CA; the previous one stays trusted until every certificate is re-issued",
            ),
            Err(e) => {
                return Ok(CaState::Unusable(Refusal {
                    reason: "CaGenerationFailed",
                    message: e.to_string(),
                }))
            }
        },
        CaAction::DropRetired => (
            ca.without_retired(),
            "every certificate is issued by the renewed cluster CA: the previous CA is no longer trusted",
        ),
    };
    let parent = Parent::of(ns)?;
    let mut updated = it::ca_secret(&parent, &secret_name, &next);
    updated.metadata.resource_version = secret.metadata.resource_version.clone();
    // A conflict means another reconcile wrote first: this one ends with an error and the
    // next one reads what won.
    secrets
        .replace(&secret_name, &PostParams::default(), &updated)
        .await?;
    ctx.event_related(
        ns,
        Some(child_ref::<Secret>(&namespace, &secret_name)),
        EventType::Normal,
        "ClusterCaRotated",
        "IssueCertificates",
        format!("Secret {secret_name}: {what}"),
    )
    .await;
    Ok(CaState::Ready(Box::new(next)))
}

/// Makes Secret `secret_name` hold a certificate for `names` issued under `ca`, with `ca`'s
/// bundle as `ca.crt`: issues one when [`plan_leaf`] says so, otherwise only refreshes the
/// bundle when it changed. Owned by `owner` (its `parent`) and labelled with `cluster`.
#[allow(clippy::too_many_arguments)]
pub async fn ensure_leaf<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    owner: &K,
    parent: &Parent,
    component: &str,
    cluster: &str,
    secret_name: &str,
    names: &[String],
    ca: &ClusterCa,
) -> Result<Result<(), Refusal>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &parent.namespace);
    let existing = secrets.get_opt(secret_name).await?;
    if let Some(s) = &existing {
        if !controlled_by(s, &parent.owner.uid) {
            return Ok(Err(Refusal {
                reason: "CertificateSecretTaken",
                message: format!(
                    "Secret {secret_name} exists but is not owned by {} {}; the operator issues the internal certificate into that name: delete or rename the existing Secret",
                    parent.owner.kind, parent.name
                ),
            }));
        }
    }
    let now = pki::unix_now();
    let bundle = ca.bundle_pem();
    let current = existing.as_ref().and_then(leaf_of);
    let (cert, key, issued) = match plan_leaf(now, current.as_ref(), names, ca) {
        LeafAction::Issue(why) => match ca.issue(names, now) {
            Ok((cert, key)) => (cert, key, Some(why)),
            Err(e) => {
                return Ok(Err(Refusal {
                    reason: "CertificateIssueFailed",
                    message: format!("Secret {secret_name}: {e}"),
                }))
            }
        },
        LeafAction::Keep => {
            // Keep implies a readable certificate, so a Secret.
            let Some(s) = existing.as_ref() else {
                return Ok(Ok(()));
            };
            if bytes(s, CA_CERT) == Some(bundle.as_bytes()) {
                return Ok(Ok(()));
            }
            (
                String::from_utf8_lossy(bytes(s, TLS_CERT).unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(bytes(s, TLS_KEY).unwrap_or_default()).into_owned(),
                None,
            )
        }
    };
    let mut desired = it::leaf_secret(
        parent,
        secret_name,
        component,
        cluster,
        &cert,
        &key,
        &bundle,
    );
    match &existing {
        Some(s) => {
            desired.metadata.resource_version = s.metadata.resource_version.clone();
            secrets
                .replace(secret_name, &PostParams::default(), &desired)
                .await?;
        }
        None => {
            secrets.create(&PostParams::default(), &desired).await?;
        }
    }
    let note = match issued {
        Some(why) => format!("issued the internal TLS certificate in Secret {secret_name} ({why})"),
        None => format!("Secret {secret_name}: the cluster CA bundle changed"),
    };
    ctx.event_related(
        owner,
        Some(child_ref::<Secret>(&parent.namespace, secret_name)),
        EventType::Normal,
        "CertificateIssued",
        "IssueCertificates",
        note,
    )
    .await;
    Ok(Ok(()))
}

/// The version of each existing Secret of `names` (see
/// [`it::SECRETS_HASH_ANNOTATION`]); absent ones are left out.
pub async fn secret_versions(
    ctx: &Context,
    namespace: &str,
    names: &[String],
) -> Result<BTreeMap<String, String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = BTreeMap::new();
    for n in names {
        if let Some(s) = secrets.get_opt(n).await? {
            out.insert(n.clone(), it::secret_version(&s));
        }
    }
    Ok(out)
}
