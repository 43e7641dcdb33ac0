//! Merges a tier's `podTemplate` (the user's additions) into the pod template a builder made.
//!
//! The operator's own labels, annotations and environment variables win over the user's: the
//! schema already refuses the reserved keys, so this only matters for objects that skipped
//! validation. Security contexts are overlaid field by field, so setting one field (say
//! `runAsUser`) keeps the operator's other hardening defaults.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::crd::PodTemplate;

/// Adds `user` to `template`: labels and annotations beside the operator's, pull secrets,
/// priority class and spread constraints as given, environment variables after the first
/// container's, security contexts overlaid on the operator's defaults.
pub fn merge_into(template: &mut PodTemplateSpec, user: Option<&PodTemplate>) {
    let Some(user) = user else {
        return;
    };
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    for (target, extra) in [
        (&mut meta.labels, &user.labels),
        (&mut meta.annotations, &user.annotations),
    ] {
        if let Some(extra) = extra {
            let map = target.get_or_insert_with(Default::default);
            for (k, v) in extra {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    let Some(spec) = template.spec.as_mut() else {
        return;
    };
    if user.image_pull_secrets.is_some() {
        spec.image_pull_secrets = user.image_pull_secrets.clone();
    }
    if user.priority_class_name.is_some() {
        spec.priority_class_name = user.priority_class_name.clone();
    }
    if let Some(tsc) = &user.topology_spread_constraints {
        spec.topology_spread_constraints
            .get_or_insert_with(Vec::new)
            .extend(tsc.iter().cloned());
    }
    if let Some(sc) = &user.security_context {
        spec.security_context = Some(match &spec.security_context {
            Some(ours) => overlay(ours, sc),
            None => sc.clone(),
        });
    }
    if let Some(container) = spec.containers.first_mut() {
        if let Some(extra) = &user.env {
            let env = container.env.get_or_insert_with(Vec::new);
            let taken: Vec<String> = env.iter().map(|e| e.name.clone()).collect();
            env.extend(extra.iter().filter(|e| !taken.contains(&e.name)).cloned());
        }
        if let Some(sc) = &user.container_security_context {
            container.security_context = Some(match &container.security_context {
                Some(ours) => overlay(ours, sc),
                None => sc.clone(),
            });
        }
    }
}

/// `top` laid over `base`: objects merge key by key (recursively), anything else set in `top`
/// replaces `base`'s value. Falls back to `top` if the result does not read back as a `T`,
/// which cannot happen for two values of the same type.
fn overlay<T: Serialize + DeserializeOwned + Clone>(base: &T, top: &T) -> T {
    fn merge(base: &mut serde_json::Value, top: serde_json::Value) {
        match (base, top) {
            (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
                for (k, v) in t {
                    match b.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            b.insert(k, v);
                        }
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let (Ok(mut b), Ok(t)) = (serde_json::to_value(base), serde_json::to_value(top)) else {
        return top.clone();
    };
    merge(&mut b, t);
    serde_json::from_value(b).unwrap_or_else(|_| top.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::common::{env, pod_spec, IMAGE_UID};
    use k8s_openapi::api::core::v1::{
        Capabilities, Container, LocalObjectReference, PodSecurityContext, SecurityContext,
        TopologySpreadConstraint,
    };
    use std::collections::BTreeMap;

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    "ferromq".to_string(),
                )])),
                ..ObjectMeta::default()
            }),
            spec: Some(pod_spec(
                Container {
                    name: "broker".to_string(),
                    env: Some(vec![env("FERROMQ_GROUP", "g")]),
                    ..Container::default()
                },
                None,
            )),
        }
    }

    #[test]
    fn nothing_to_merge_leaves_the_template_as_built() {
        let mut t = template();
        merge_into(&mut t, None);
        assert_eq!(t, template());
        merge_into(&mut t, Some(&PodTemplate::default()));
        assert_eq!(t, template());
    }

    #[test]
    fn every_field_reaches_the_pod_and_the_operators_keys_win() {
        let user = PodTemplate {
            labels: Some(BTreeMap::from([
                ("team".to_string(), "payments".to_string()),
                ("app.kubernetes.io/name".to_string(), "mine".to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                "sidecar.istio.io/inject".to_string(),
                "false".to_string(),
            )])),
            image_pull_secrets: Some(vec![LocalObjectReference {
                name: "regcred".to_string(),
            }]),
            priority_class_name: Some("critical".to_string()),
            topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "topology.kubernetes.io/zone".to_string(),
                when_unsatisfiable: "ScheduleAnyway".to_string(),
                ..TopologySpreadConstraint::default()
            }]),
            env: Some(vec![env("TZ", "UTC"), env("FERROMQ_GROUP", "hijack")]),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(1000),
                ..PodSecurityContext::default()
            }),
            container_security_context: Some(SecurityContext {
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_BIND_SERVICE".to_string()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
        };
        let mut t = template();
        merge_into(&mut t, Some(&user));
        let meta = t.metadata.clone().expect("meta");
        let labels = meta.labels.expect("labels");
        assert_eq!(labels["team"], "payments");
        assert_eq!(
            labels["app.kubernetes.io/name"], "ferromq",
            "selector label kept"
        );
        assert_eq!(
            meta.annotations.expect("annotations")["sidecar.istio.io/inject"],
            "false"
        );
        let spec = t.spec.expect("spec");
        assert_eq!(spec.image_pull_secrets, user.image_pull_secrets);
        assert_eq!(spec.priority_class_name.as_deref(), Some("critical"));
        assert_eq!(
            spec.topology_spread_constraints,
            user.topology_spread_constraints
        );
        let env: Vec<_> = spec.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env,
            vec![
                ("FERROMQ_GROUP".to_string(), "g".to_string()),
                ("TZ".to_string(), "UTC".to_string())
            ]
        );
        let pod = spec.security_context.expect("pod security context");
        assert_eq!(
            pod.run_as_user,
            Some(1000),
            "the user's field replaces ours"
        );
        assert_eq!(pod.run_as_non_root, Some(true), "our other defaults stay");
        assert_eq!(pod.fs_group, Some(IMAGE_UID));
        assert!(pod.seccomp_profile.is_some());
        let c = spec.containers[0]
            .security_context
            .clone()
            .expect("container security context");
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(c.allow_privilege_escalation, Some(false));
        let caps = c.capabilities.expect("capabilities");
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(caps.add, Some(vec!["NET_BIND_SERVICE".to_string()]));
    }
}
