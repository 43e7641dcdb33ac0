//! What a `User` asks of the cluster: its access key, its policy as the auth crate's entries
//! (checked before any admin call), the steps that turn the cluster's copy of the policy into
//! it, and the Secret that hands the credentials to applications.

use std::collections::{BTreeMap, BTreeSet};

use ferromq_auth::policy::normalize_entries;
use ferromq_auth::{Effect, PolicyEntry, PolicyError, ResourcePattern, Secret as SecretKey};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::auth::{credential_secret, ENDPOINT_KEY, EXAMPLE_ANNOTATION, SECRET_KEY};
use super::common::{BuildError, Parent};
use crate::crd::{User, UserSpec};

/// Component label of a User's Secret.
pub const USER_COMPONENT: &str = "user";

/// The user's name on the cluster: `spec.accessKey`, else `metadata.name`.
pub fn access_key(user: &User) -> String {
    user.spec
        .access_key
        .clone()
        .unwrap_or_else(|| user.name_any())
}

/// The Secret a User owns: named like the User (as Strimzi names a KafkaUser's).
pub fn secret_name(user: &User) -> String {
    user.name_any()
}

/// Why a User's spec cannot be applied: the condition reason and a message naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// `InvalidAccessKey` or `InvalidPolicy`.
    pub reason: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

/// The user's access key and policy, or why the spec cannot be applied. Every rule is the auth
/// crate's ([`PolicyEntry::parse`], [`normalize_entries`],
/// [`ferromq_auth::user::validate_access_key`]) except one the admin API adds: it keeps one
/// entry per resource and effect, so two such entries would overwrite each other.
pub fn desired(user: &User) -> Result<(String, Vec<PolicyEntry>), Invalid> {
    let access_key = access_key(user);
    ferromq_auth::user::validate_access_key(&access_key).map_err(|e| {
        let field = if user.spec.access_key.is_some() {
            "spec.accessKey"
        } else {
            "metadata.name (the access key when spec.accessKey is unset)"
        };
        Invalid {
            reason: "InvalidAccessKey",
            message: format!("{field}: {e}"),
        }
    })?;
    let policy = desired_policy(&user.spec).map_err(|message| Invalid {
        reason: "InvalidPolicy",
        message,
    })?;
    Ok((access_key, policy))
}

/// The policy of a User's spec as the auth crate's entries; see [`desired`].
pub fn desired_policy(spec: &UserSpec) -> Result<Vec<PolicyEntry>, String> {
    let mut entries = Vec::with_capacity(spec.policies.len());
    let mut seen: BTreeMap<(ResourcePattern, bool), usize> = BTreeMap::new();
    for (i, p) in spec.policies.iter().enumerate() {
        if p.actions.is_empty() {
            // Joined, no actions would read as one empty action name.
            let e = PolicyError::NoActions {
                resource: p.resource.clone(),
            };
            return Err(format!("spec.policies[{i}]: {e}"));
        }
        let sources: Vec<&str> = p.sources.iter().map(String::as_str).collect();
        let entry = PolicyEntry::parse(&p.resource, &p.actions.join(","), &p.effect, &sources)
            .map_err(|e| format!("spec.policies[{i}]: {e}"))?;
        let key = key_of(&entry);
        if let Some(first) = seen.insert(key, i) {
            return Err(format!(
                "spec.policies[{i}] and spec.policies[{first}] are both {} entries for {}; the cluster keeps one entry per resource and effect: merge their actions and sources into one",
                entry.effect, entry.resource
            ));
        }
        entries.push(canonical(entry));
    }
    normalize_entries(entries).map_err(|e| format!("spec.policies: {e}"))
}

/// What the admin API identifies an entry by: its resource and effect (`true` for deny;
/// `Effect` has no order of its own).
fn key_of(e: &PolicyEntry) -> (ResourcePattern, bool) {
    (e.resource.clone(), e.effect == Effect::Deny)
}

fn effect_of(deny: bool) -> Effect {
    if deny {
        Effect::Deny
    } else {
        Effect::Allow
    }
}

/// An entry with its source ranges sorted and deduplicated, so that two entries that mean the
/// same compare equal whatever order the ranges were written in.
fn canonical(mut e: PolicyEntry) -> PolicyEntry {
    e.sources.sort();
    e.sources.dedup();
    e
}

/// One admin call of a policy sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyStep {
    /// Add the entry, replacing the one with the same resource and effect.
    Put(PolicyEntry),
    /// Remove the entry for this resource and effect.
    Remove {
        /// The entry's resource pattern.
        resource: ResourcePattern,
        /// The entry's effect.
        effect: Effect,
    },
}

/// The calls that turn `current` (what the cluster holds) into `desired`, none when they agree.
///
/// The admin API changes one entry per call, so a sync passes through intermediate policies.
/// The order keeps them from granting more than before or after: new and changed deny entries
/// first, then allow entries removed, then allow entries added or changed, and deny entries
/// removed last. (A deny entry replaced by a narrower one, while an allow it used to cover is
/// still in place, is the one window this order cannot close; it lasts one call.)
pub fn plan_policy(current: &[PolicyEntry], desired: &[PolicyEntry]) -> Vec<PolicyStep> {
    let mut have: BTreeMap<(ResourcePattern, bool), Vec<PolicyEntry>> = BTreeMap::new();
    for e in current {
        have.entry(key_of(e))
            .or_default()
            .push(canonical(e.clone()));
    }
    let want: BTreeSet<(ResourcePattern, bool)> = desired.iter().map(key_of).collect();
    let puts = |effect: Effect| {
        let mut steps = Vec::new();
        for e in desired.iter().filter(|e| e.effect == effect) {
            let e = canonical(e.clone());
            match have.get(&key_of(&e)).map(Vec::as_slice) {
                Some([only]) if *only == e => {}
                // Several entries for one key (written by other means): clear them first.
                Some(many) if many.len() > 1 => {
                    steps.push(PolicyStep::Remove {
                        resource: e.resource.clone(),
                        effect,
                    });
                    steps.push(PolicyStep::Put(e));
                }
                _ => steps.push(PolicyStep::Put(e)),
            }
        }
        steps
    };
    let removals = |effect: Effect| {
        have.keys()
            .filter(|k| effect_of(k.1) == effect && !want.contains(*k))
            .map(|(resource, deny)| PolicyStep::Remove {
                resource: resource.clone(),
                effect: effect_of(*deny),
            })
            .collect::<Vec<_>>()
    };
    let mut steps = puts(Effect::Deny);
    steps.extend(removals(Effect::Allow));
    steps.extend(puts(Effect::Allow));
    steps.extend(removals(Effect::Deny));
    steps
}

/// A command that uses the Secret, for its `ferromq.io/example` annotation.
pub fn example(namespace: &str, secret: &str, access_key: &str, endpoint: &str) -> String {
    format!(
        "FERROMQ_ACCESS_KEY={access_key} FERROMQ_SECRET_KEY=\"$(kubectl -n {namespace} get secret {secret} -o jsonpath='{{.data.{SECRET_KEY}}}' | base64 -d)\" ferromq bench produce --server {endpoint} --topic TOPIC --duration 5s"
    )
}

/// The Secret a User owns: `accessKey`, `secretKey` and the client `endpoint`, with an example
/// command in an annotation; deleted with the User by the garbage collector.
pub fn user_secret(
    user: &User,
    access_key: &str,
    secret_key: &SecretKey,
    endpoint: &str,
) -> Result<Secret, BuildError> {
    let parent = Parent::of(user)?;
    let name = secret_name(user);
    let annotations = BTreeMap::from([(
        EXAMPLE_ANNOTATION.to_string(),
        example(&parent.namespace, &name, access_key, endpoint),
    )]);
    Ok(credential_secret(
        &parent,
        &name,
        USER_COMPONENT,
        access_key,
        secret_key,
        &[(ENDPOINT_KEY, endpoint.to_string())],
        annotations,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BrokerRef, PolicySpec, UserKind};

    fn policy(resource: &str, actions: &[&str], effect: &str, sources: &[&str]) -> PolicySpec {
        PolicySpec {
            resource: resource.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            effect: effect.into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn user(policies: Vec<PolicySpec>) -> User {
        let mut u = User::new(
            "orders-app",
            UserSpec {
                broker_ref: BrokerRef {
                    name: "demo".into(),
                },
                access_key: None,
                kind: UserKind::Normal,
                policies,
            },
        );
        u.metadata.namespace = Some("prod".into());
        u.metadata.uid = Some("uid-u".into());
        u
    }

    fn entry(resource: &str, actions: &str, effect: &str, sources: &[&str]) -> PolicyEntry {
        PolicyEntry::parse(resource, actions, effect, sources).unwrap()
    }

    #[test]
    fn the_spec_becomes_the_auth_crates_entries() {
        let u = user(vec![
            policy("topic:orders-*", &["publish"], "allow", &[]),
            policy("group:billing", &["subscribe"], "allow", &[]),
            policy(
                "topic:orders-secret",
                &["publish", "subscribe"],
                "deny",
                &["10.0.0.0/8"],
            ),
        ]);
        let (ak, entries) = desired(&u).unwrap();
        assert_eq!(ak, "orders-app");
        let shown: Vec<String> = entries.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "allow publish topic:orders-*",
                "allow subscribe group:billing",
                "deny publish,subscribe topic:orders-secret from 10.0.0.0/8"
            ]
        );
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry() {
        for (p, words) in [
            (
                policy("topic:a*b", &["publish"], "allow", &[]),
                "spec.policies[1]: resource \"topic:a*b\"",
            ),
            (
                policy("queue:a", &["publish"], "allow", &[]),
                "resource type \"queue\" is not topic or group",
            ),
            (
                policy("topic:a", &["send"], "allow", &[]),
                "spec.policies[1]: action \"send\"",
            ),
            (
                policy("topic:a", &["publish"], "maybe", &[]),
                "effect \"maybe\"",
            ),
            (
                policy("topic:a", &["publish"], "allow", &["10.0.0.0/33"]),
                "spec.policies[1]: source range \"10.0.0.0/33\"",
            ),
            (policy("topic:a", &[], "allow", &[]), "lists no action"),
        ] {
            let u = user(vec![policy("topic:ok", &["publish"], "allow", &[]), p]);
            let err = desired(&u).unwrap_err();
            assert_eq!(err.reason, "InvalidPolicy");
            assert!(err.message.contains(words), "{}", err.message);
        }
    }

    #[test]
    fn two_entries_for_one_resource_and_effect_are_refused() {
        let u = user(vec![
            policy("topic:orders-*", &["publish"], "allow", &[]),
            policy("topic:orders-*", &["subscribe"], "allow", &["10.0.0.0/8"]),
        ]);
        let err = desired(&u).unwrap_err().message;
        assert!(
            err.starts_with(
                "spec.policies[1] and spec.policies[0] are both allow entries for topic:orders-*"
            ),
            "{err}"
        );
        // An allow and a deny for the same resource are two keys.
        let u = user(vec![
            policy("topic:orders-*", &["publish"], "allow", &[]),
            policy("topic:orders-*", &["subscribe"], "deny", &[]),
        ]);
        assert!(desired(&u).is_ok());
    }

    #[test]
    fn a_bad_access_key_names_its_field() {
        let mut u = user(vec![]);
        u.spec.access_key = Some("a/b".into());
        let err = desired(&u).unwrap_err();
        assert_eq!(err.reason, "InvalidAccessKey");
        assert!(
            err.message.starts_with("spec.accessKey: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn nothing_to_do_when_the_cluster_agrees_whatever_the_order() {
        let want = vec![
            entry(
                "topic:a",
                "publish",
                "allow",
                &["10.0.0.0/8", "192.168.0.0/16"],
            ),
            entry("group:g", "subscribe", "allow", &[]),
        ];
        let have = vec![
            entry("group:g", "subscribe", "allow", &[]),
            entry(
                "topic:a",
                "publish",
                "allow",
                &["192.168.0.0/16", "10.0.0.0/8"],
            ),
        ];
        assert_eq!(plan_policy(&have, &want), vec![]);
    }

    #[test]
    fn sync_adds_denies_first_and_removes_them_last() {
        let have = vec![
            entry("topic:*", "all", "allow", &[]),
            entry("topic:secret", "publish", "deny", &[]),
            entry("topic:keep", "publish", "allow", &[]),
        ];
        let want = vec![
            entry("topic:keep", "publish", "allow", &[]),
            entry("topic:orders", "publish,subscribe", "allow", &[]),
            entry("topic:orders-x", "publish", "deny", &[]),
        ];
        let steps = plan_policy(&have, &want);
        assert_eq!(
            steps,
            vec![
                PolicyStep::Put(entry("topic:orders-x", "publish", "deny", &[])),
                PolicyStep::Remove {
                    resource: "topic:*".parse().unwrap(),
                    effect: Effect::Allow
                },
                PolicyStep::Put(entry("topic:orders", "publish,subscribe", "allow", &[])),
                PolicyStep::Remove {
                    resource: "topic:secret".parse().unwrap(),
                    effect: Effect::Deny
                },
            ]
        );
        // Applying the steps the way the store does reaches the desired policy.
        let mut held = have.clone();
        for s in steps {
            match s {
                PolicyStep::Put(e) => {
                    match held
                        .iter_mut()
                        .find(|h| h.resource == e.resource && h.effect == e.effect)
                    {
                        Some(h) => *h = e,
                        None => held.push(e),
                    }
                }
                PolicyStep::Remove { resource, effect } => {
                    held.retain(|h| !(h.resource == resource && h.effect == effect))
                }
            }
        }
        assert_eq!(plan_policy(&held, &want), vec![]);
    }

    #[test]
    fn a_changed_entry_is_replaced_in_place() {
        let have = vec![entry("topic:a", "publish", "allow", &[])];
        let want = vec![entry("topic:a", "publish,subscribe", "allow", &[])];
        assert_eq!(
            plan_policy(&have, &want),
            vec![PolicyStep::Put(want[0].clone())]
        );
    }

    #[test]
    fn the_secret_is_owned_by_the_user_and_carries_an_example() {
        let u = user(vec![]);
        let key = SecretKey::new("0123456789abcdef0123").unwrap();
        let s = user_secret(&u, "orders-app", &key, "demo.prod.svc:8081").unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("orders-app"));
        assert!(super::super::auth::controlled_by(&s, "uid-u"));
        let ex = &s.metadata.annotations.as_ref().unwrap()[EXAMPLE_ANNOTATION];
        assert!(ex.contains("FERROMQ_ACCESS_KEY=orders-app"), "{ex}");
        assert!(ex.contains("--server demo.prod.svc:8081"), "{ex}");
        assert!(ex.contains("kubectl -n prod get secret orders-app"), "{ex}");
        assert!(!ex.contains("0123456789abcdef0123"), "{ex}");
        let c = super::super::auth::credentials_of(&s).unwrap();
        assert_eq!(c.access_key, "orders-app");
    }
}
