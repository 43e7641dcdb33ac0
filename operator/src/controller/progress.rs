//! How far a workload's controller has got: reads StatefulSet and Deployment status the way
//! `kubectl rollout status` does, so conditions say "ready" only for the current revision.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

/// How far one workload has got towards its spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Pods the workload controller reports (old and new revisions alike).
    pub replicas: i32,
    /// Pods that are ready.
    pub ready: i32,
    /// The controller has seen the latest spec and every wanted pod runs it and is ready.
    pub settled: bool,
}

/// Progress of a StatefulSet: settled once the controller has seen the latest spec, every pod
/// runs the update revision, and all are ready.
pub fn sts_progress(sts: &StatefulSet) -> Progress {
    let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = sts.status.clone().unwrap_or_default();
    let ready = st.ready_replicas.unwrap_or(0);
    let observed = st.observed_generation == sts.metadata.generation;
    let updated = st.updated_replicas.unwrap_or(0) >= desired
        && st.current_revision.is_some()
        && st.current_revision == st.update_revision;
    let settled = observed && updated && ready >= desired && st.replicas <= desired;
    Progress {
        replicas: st.replicas,
        ready,
        settled,
    }
}

/// Progress of a Deployment, judged like [`sts_progress`].
pub fn deployment_progress(d: &Deployment) -> Progress {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let ready = st.ready_replicas.unwrap_or(0);
    let replicas = st.replicas.unwrap_or(0);
    let settled = st.observed_generation == d.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= desired
        && ready >= desired
        && replicas == desired;
    Progress {
        replicas,
        ready,
        settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(spec_replicas: i32, generation: i64, status: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({ "metadata": { "name": "s", "generation": generation },
            "spec": { "replicas": spec_replicas, "serviceName": "s", "selector": {}, "template": {} },
            "status": status }))
        .expect("statefulset")
    }

    #[test]
    fn statefulset_settles_only_on_the_update_revision() {
        let mid_roll = sts(
            3,
            2,
            json!({ "observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
            "updatedReplicas": 1, "currentRevision": "r1", "updateRevision": "r2" }),
        );
        let p = |replicas, ready, settled| Progress {
            replicas,
            ready,
            settled,
        };
        assert_eq!(sts_progress(&mid_roll), p(3, 3, false));
        let done = sts(
            3,
            2,
            json!({ "observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
            "updatedReplicas": 3, "currentRevision": "r2", "updateRevision": "r2" }),
        );
        assert_eq!(sts_progress(&done), p(3, 3, true));
        for (spec_replicas, generation, why) in [
            (3, 3, "a spec the controller has not seen is not settled"),
            (2, 2, "surplus pods still exist"),
        ] {
            let s = sts(
                spec_replicas,
                generation,
                json!({ "observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                "updatedReplicas": 3, "currentRevision": "r2", "updateRevision": "r2" }),
            );
            assert!(!sts_progress(&s).settled, "{why}");
        }
    }

    #[test]
    fn deployment_settles_when_all_replicas_are_updated_and_ready() {
        let d = |status: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({ "metadata": { "name": "d", "generation": 4 },
                "spec": { "replicas": 2, "selector": {}, "template": {} }, "status": status }))
            .expect("deployment")
        };
        assert!(deployment_progress(&d(json!({ "observedGeneration": 4, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2 }))).settled);
        assert!(!deployment_progress(&d(json!({ "observedGeneration": 4, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 2 }))).settled);
        assert_eq!(deployment_progress(&d(json!({}))), Progress::default());
    }
}
