//! A Broker's status as a pure function of what one reconcile observed: the progress of the
//! group StatefulSets and the proxy Deployment it applied, the claims still growing or unable
//! to grow, and the admin API's answers to the drain calls. No I/O here, so every condition,
//! reason and message below is unit-tested; the reconcile only adds timestamps
//! ([`crate::conditions::merge`]) and writes the result.

use std::collections::BTreeSet;

use crate::admin::AdminError;
use crate::builders::broker as b;
use crate::conditions::{Desired, DEGRADED, PROGRESSING, READY};
use crate::controller::progress::Progress;
use crate::crd::{Broker, ComputeStatus, GroupReplicationStatus, StorageStatus};

/// Outcome of the volume-expansion pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Claims whose request was raised or whose capacity still lags.
    pub pending: Vec<String>,
    /// Claims that cannot grow because of their storage class, with the class name (empty
    /// when the claim names none).
    pub blocked: Vec<(String, String)>,
}

/// A drain call the admin API did not answer with progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainFailure {
    /// The group being drained.
    pub group: String,
    /// Where the call went.
    pub endpoint: String,
    /// What went wrong.
    pub error: AdminError,
}

/// Outcome of the pass over groups beyond `spec.storage.groups`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drain {
    /// Surplus groups still there: draining, or kept because their drain call failed.
    pub draining: Vec<String>,
    /// The last drain call that failed, if any did.
    pub failure: Option<DrainFailure>,
}

/// What one reconcile of a Broker saw after applying its children.
pub struct Observed<'a> {
    /// The Broker as the reconcile read it.
    pub broker: &'a Broker,
    /// Each group StatefulSet the spec asks for, as its apply returned it.
    pub groups: Vec<Progress>,
    /// The proxy Deployment, as its apply returned it.
    pub proxies: Progress,
    /// Claims being grown or unable to grow.
    pub expansion: Expansion,
    /// Surplus groups being drained.
    pub drain: Drain,
    /// Replicated groups as the admin API reported them; `None` for unreplicated groups or
    /// when the admin API could not be read.
    pub replication: Option<Vec<GroupReplicationStatus>>,
    /// Groups whose StatefulSet was left on its previous spec because an earlier group is
    /// still rolling (one group at a time).
    pub waiting: Vec<String>,
    /// The client address (`status.endpoint`); `None` while the Service has no external
    /// address yet.
    pub endpoint: Option<String>,
}

/// The status a reconcile writes, before condition timestamps.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// `status.endpoint`.
    pub endpoint: Option<String>,
    /// `status.storage`.
    pub storage: StorageStatus,
    /// `status.compute`.
    pub compute: ComputeStatus,
    /// `Ready`, `Progressing`, `Degraded`, in that order.
    pub conditions: Vec<Desired>,
    /// Something is still moving (roll-out, drain, expansion): look again soon.
    pub busy: bool,
}

/// `status.storage.replication` and `underReplicatedGroups`: the spec's groups in order (groups
/// being drained and other Brokers' groups left out); a group the controller does not know yet
/// counts as under-replicated.
fn replication_status(
    broker: &Broker,
    reported: Option<&Vec<GroupReplicationStatus>>,
) -> (Vec<GroupReplicationStatus>, Option<i32>) {
    let Some(reported) = reported else {
        return (Vec::new(), None);
    };
    let storage = &broker.spec.storage;
    let name = broker.metadata.name.clone().unwrap_or_default();
    let mut groups = Vec::new();
    let mut under = 0;
    for i in 0..storage.groups {
        let group = b::group_name(&name, i);
        match reported.iter().find(|g| g.group == group) {
            Some(g) => {
                if g.leader.is_none() || g.in_sync < storage.replicas_per_group {
                    under += 1;
                }
                groups.push(g.clone());
            }
            None => under += 1,
        }
    }
    (groups, Some(under))
}

/// The Broker's status from what the reconcile observed.
pub fn summarize(o: &Observed<'_>) -> Summary {
    let spec = &o.broker.spec;
    let groups = spec.storage.groups;
    let want_proxies = spec.compute.replicas;
    let ready_groups = o.groups.iter().filter(|g| g.settled).count() as i32;
    let storage_settled = o.groups.iter().all(|g| g.settled);
    let compute_settled = o.proxies.settled;
    let proxy_ready = o.proxies.ready;
    let draining = &o.drain.draining;
    let pending = &o.expansion.pending;

    let ready = if storage_settled && compute_settled {
        Desired::new(
            READY,
            true,
            "Ready",
            format!(
                "{groups}/{groups} broker groups and {proxy_ready}/{want_proxies} proxies ready"
            ),
        )
    } else if !storage_settled {
        Desired::new(
            READY,
            false,
            "StorageNotReady",
            format!("{ready_groups}/{groups} broker groups ready"),
        )
    } else {
        Desired::new(
            READY,
            false,
            "ComputeNotReady",
            format!("{proxy_ready}/{want_proxies} proxies ready"),
        )
    };

    let drain_problem = o
        .drain
        .failure
        .as_ref()
        .map(|f| format!("draining {} through {}: {}", f.group, f.endpoint, f.error));
    let progressing = if !draining.is_empty() {
        let extra = drain_problem
            .as_ref()
            .map(|p| format!("; last error: {p}"))
            .unwrap_or_default();
        Desired::new(
            PROGRESSING,
            true,
            "DrainingGroups",
            format!("draining {} before removal{extra}", draining.join(", ")),
        )
    } else if !pending.is_empty() {
        Desired::new(
            PROGRESSING,
            true,
            "ExpandingVolumes",
            format!(
                "waiting for claims to reach {}: {}",
                spec.storage.volume.size,
                pending.join(", ")
            ),
        )
    } else if !storage_settled {
        let queue = if o.waiting.is_empty() {
            String::new()
        } else {
            format!("; waiting their turn: {}", o.waiting.join(", "))
        };
        Desired::new(
            PROGRESSING,
            true,
            "RollingOutStorage",
            format!(
                "broker pods are being created or updated one group at a time, followers before leaders{queue}"
            ),
        )
    } else if !compute_settled {
        Desired::new(
            PROGRESSING,
            true,
            "RollingOutCompute",
            "proxy pods are being created, updated or scaled",
        )
    } else if o.endpoint.is_none() {
        let type_ = spec
            .compute
            .service
            .as_ref()
            .map(|s| s.type_)
            .unwrap_or_default();
        Desired::new(
            PROGRESSING,
            true,
            "AwaitingEndpoint",
            format!(
                "the {} client Service has no external address yet",
                type_.as_str()
            ),
        )
    } else {
        Desired::new(PROGRESSING, false, "Stable", "both tiers match the spec")
    };

    let degraded = if !o.expansion.blocked.is_empty() {
        let classes: BTreeSet<&str> = o
            .expansion
            .blocked
            .iter()
            .map(|(_, c)| if c.is_empty() { "<none>" } else { c.as_str() })
            .collect();
        let claims: Vec<&str> = o
            .expansion
            .blocked
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        Desired::new(
            DEGRADED,
            true,
            "VolumeExpansionNotAllowed",
            format!(
                "StorageClass {} does not allow volume expansion, so claims {} keep their size; set allowVolumeExpansion: true on the class",
                classes.into_iter().collect::<Vec<_>>().join(", "),
                claims.join(", ")
            ),
        )
    } else if let Some(p) = &drain_problem {
        Desired::new(
            DEGRADED,
            true,
            "DrainFailed",
            format!("{p}; the group is kept until the admin API answers"),
        )
    } else {
        Desired::new(DEGRADED, false, "AsExpected", "")
    };

    let (replication, under_replicated_groups) =
        replication_status(o.broker, o.replication.as_ref());
    Summary {
        endpoint: o.endpoint.clone(),
        storage: StorageStatus {
            groups: groups + draining.len() as i32,
            ready_groups,
            ready_replicas: o.groups.iter().map(|g| g.ready).sum(),
            draining: draining.clone(),
            pending_volume_expansions: pending.clone(),
            under_replicated_groups,
            replication,
        },
        compute: ComputeStatus {
            replicas: o.proxies.replicas,
            ready_replicas: proxy_ready,
            selector: b::proxy_selector(&o.broker.metadata.name.clone().unwrap_or_default()),
        },
        conditions: vec![ready, progressing, degraded],
        // An under-replicated group is recovering (members catching up, an election): keep
        // its leader and in-sync count fresh instead of waiting for the 5-minute resync.
        busy: !draining.is_empty()
            || !pending.is_empty()
            || !storage_settled
            || !compute_settled
            || o.endpoint.is_none()
            || under_replicated_groups.is_some_and(|n| n > 0),
    }
}

/// The conditions of a spec the operator will not act on: nothing changes, `Degraded` says why
/// and what to fix.
pub fn refused(reason: &str, message: &str) -> Vec<Desired> {
    vec![
        Desired::new(READY, false, reason, message),
        Desired::new(
            PROGRESSING,
            false,
            reason,
            "waiting for the spec to be fixed; running workloads untouched",
        ),
        Desired::new(DEGRADED, true, reason, message),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::broker::tests::fixture;
    use tonic::Code;

    const SETTLED: Progress = Progress {
        replicas: 2,
        ready: 2,
        settled: true,
    };
    const ROLLING: Progress = Progress {
        replicas: 2,
        ready: 1,
        settled: false,
    };

    /// A demo Broker with 2 groups and 3 proxies, everything settled and nothing pending.
    fn calm(broker: &Broker) -> Observed<'_> {
        Observed {
            broker,
            groups: vec![SETTLED, SETTLED],
            proxies: Progress {
                replicas: 3,
                ready: 3,
                settled: true,
            },
            expansion: Expansion::default(),
            drain: Drain::default(),
            replication: None,
            waiting: Vec::new(),
            endpoint: Some("demo.prod.svc:8081".into()),
        }
    }

    /// A demo Broker with 1 group and 1 proxy, both settled and nothing pending.
    fn small(broker: &Broker) -> Observed<'_> {
        Observed {
            groups: vec![SETTLED],
            proxies: SETTLED,
            ..calm(broker)
        }
    }

    fn failed_drain(error: AdminError) -> Option<DrainFailure> {
        Some(DrainFailure {
            group: "demo-group-1".into(),
            endpoint: "demo.prod.svc:8081".into(),
            error,
        })
    }

    /// `Type=Status:Reason` of each condition, in order.
    fn brief(s: &Summary) -> String {
        let one = |c: &Desired| format!("{}={}:{}", c.type_, c.status, c.reason);
        s.conditions.iter().map(one).collect::<Vec<_>>().join(" ")
    }

    fn unreachable() -> AdminError {
        AdminError::Unreachable {
            detail: "transport error: tcp connect error: Connection refused (os error 111)".into(),
        }
    }

    #[test]
    fn a_settled_broker_is_ready_and_stable() {
        let broker = fixture(2, 3);
        let s = summarize(&calm(&broker));
        assert_eq!(
            brief(&s),
            "Ready=true:Ready Progressing=false:Stable Degraded=false:AsExpected"
        );
        assert_eq!(
            s.conditions[0].message,
            "2/2 broker groups and 3/3 proxies ready"
        );
        assert_eq!(
            s.storage,
            StorageStatus {
                groups: 2,
                ready_groups: 2,
                ready_replicas: 4,
                draining: vec![],
                pending_volume_expansions: vec![],
                under_replicated_groups: None,
                replication: vec![],
            }
        );
        assert_eq!(s.compute.replicas, 3);
        assert_eq!(s.compute.ready_replicas, 3);
        assert_eq!(s.compute.selector, b::proxy_selector("demo"));
        assert!(!s.busy);
    }

    #[test]
    fn storage_roll_out_comes_before_compute() {
        let broker = fixture(2, 3);
        let mut o = calm(&broker);
        o.groups[1] = ROLLING;
        o.proxies.settled = false;
        let s = summarize(&o);
        assert_eq!(
            brief(&s),
            "Ready=false:StorageNotReady Progressing=true:RollingOutStorage Degraded=false:AsExpected"
        );
        assert_eq!(s.conditions[0].message, "1/2 broker groups ready");
        assert_eq!(s.storage.ready_groups, 1);
        assert_eq!(s.storage.ready_replicas, 3);
        assert!(s.busy);

        o.groups[1] = SETTLED;
        o.proxies.ready = 1;
        let s = summarize(&o);
        assert_eq!(
            brief(&s),
            "Ready=false:ComputeNotReady Progressing=true:RollingOutCompute Degraded=false:AsExpected"
        );
        assert_eq!(s.conditions[0].message, "1/3 proxies ready");
        assert!(s.busy);
    }

    #[test]
    fn groups_waiting_their_turn_are_named_and_not_ready() {
        let broker = fixture(2, 3);
        let mut o = calm(&broker);
        o.groups[0] = ROLLING;
        // The waiting group's StatefulSet still runs the old spec; the reconcile marks it
        // unsettled.
        o.groups[1].settled = false;
        o.waiting = vec!["demo-group-1".into()];
        let s = summarize(&o);
        assert_eq!(
            brief(&s),
            "Ready=false:StorageNotReady Progressing=true:RollingOutStorage Degraded=false:AsExpected"
        );
        assert_eq!(
            s.conditions[1].message,
            "broker pods are being created or updated one group at a time, followers before leaders; waiting their turn: demo-group-1"
        );
        assert!(s.busy);
    }

    #[test]
    fn the_endpoint_is_reported_and_a_missing_one_keeps_the_broker_progressing() {
        let broker = fixture(2, 3);
        let s = summarize(&calm(&broker));
        assert_eq!(s.endpoint.as_deref(), Some("demo.prod.svc:8081"));

        let mut lb = fixture(2, 3);
        lb.spec.compute.service = Some(crate::crd::ClientService {
            type_: crate::crd::ServiceType::LoadBalancer,
            ..Default::default()
        });
        let mut o = calm(&lb);
        o.endpoint = None;
        let s = summarize(&o);
        assert_eq!(
            brief(&s),
            "Ready=true:Ready Progressing=true:AwaitingEndpoint Degraded=false:AsExpected"
        );
        assert_eq!(
            s.conditions[1].message,
            "the LoadBalancer client Service has no external address yet"
        );
        assert_eq!(s.endpoint, None);
        assert!(s.busy, "look again for the address");
    }

    #[test]
    fn draining_groups_count_until_removed_and_failed_drain_calls_degrade() {
        let broker = fixture(1, 1);
        let mut o = small(&broker);
        o.drain.draining = vec!["demo-group-1".into(), "demo-group-2".into()];
        let s = summarize(&o);
        assert_eq!(
            brief(&s),
            "Ready=true:Ready Progressing=true:DrainingGroups Degraded=false:AsExpected"
        );
        assert_eq!(
            s.conditions[1].message,
            "draining demo-group-1, demo-group-2 before removal"
        );
        assert_eq!(s.storage.groups, 3);
        assert_eq!(s.storage.draining, ["demo-group-1", "demo-group-2"]);
        assert!(s.busy);

        // A drain call that failed keeps its group and degrades with the admin error.
        o.drain = Drain {
            draining: vec!["demo-group-1".into()],
            failure: failed_drain(unreachable()),
        };
        let s = summarize(&o);
        assert_eq!(
            brief(&s),
            "Ready=true:Ready Progressing=true:DrainingGroups Degraded=true:DrainFailed"
        );
        assert_eq!(
            s.conditions[2].message,
            "draining demo-group-1 through demo.prod.svc:8081: unreachable: \
             transport error: tcp connect error: Connection refused (os error 111); \
             the group is kept until the admin API answers"
        );
        assert!(s.conditions[1]
            .message
            .ends_with("; last error: draining demo-group-1 through demo.prod.svc:8081: unreachable: transport error: tcp connect error: Connection refused (os error 111)"));

        // A refusal carries the status code and the cluster's own words.
        o.drain.failure = failed_drain(AdminError::Status {
            call: "SetGroupState",
            code: Code::NotFound,
            message: "broker group demo-group-1 is not known to the name servers".into(),
        });
        let s = summarize(&o);
        assert_eq!(
            s.conditions[2].message,
            "draining demo-group-1 through demo.prod.svc:8081: SetGroupState answered NotFound: \
             broker group demo-group-1 is not known to the name servers; \
             the group is kept until the admin API answers"
        );
    }

    #[test]
    fn claims_that_cannot_grow_degrade_and_name_class_and_claims() {
        let broker = fixture(1, 1);
        let mut o = small(&broker);
        o.expansion.blocked = vec![
            ("data-demo-group-0-0".into(), "fixed".into()),
            ("data-demo-group-0-1".into(), String::new()),
            ("data-demo-group-0-2".into(), "fixed".into()),
        ];
        o.drain.failure = failed_drain(unreachable());
        let s = summarize(&o);
        assert_eq!(
            brief(&s),
            "Ready=true:Ready Progressing=false:Stable Degraded=true:VolumeExpansionNotAllowed",
            "blocked claims outrank a drain failure"
        );
        assert_eq!(
            s.conditions[2].message,
            "StorageClass <none>, fixed does not allow volume expansion, so claims \
             data-demo-group-0-0, data-demo-group-0-1, data-demo-group-0-2 keep their size; \
             set allowVolumeExpansion: true on the class"
        );
        assert!(!s.busy, "blocked claims wait for a human, not for a poll");
    }

    #[test]
    fn growing_claims_are_progress() {
        let broker = fixture(1, 1);
        let mut o = small(&broker);
        o.expansion.pending = vec!["data-demo-group-0-0".into()];
        let s = summarize(&o);
        assert_eq!(
            brief(&s),
            "Ready=true:Ready Progressing=true:ExpandingVolumes Degraded=false:AsExpected"
        );
        assert_eq!(
            s.conditions[1].message,
            "waiting for claims to reach 10Gi: data-demo-group-0-0"
        );
        assert_eq!(s.storage.pending_volume_expansions, ["data-demo-group-0-0"]);
        assert!(s.busy);
    }

    #[test]
    fn replicated_groups_report_leader_epoch_and_in_sync_count() {
        let mut broker = fixture(3, 1);
        broker.spec.storage.replicas_per_group = 3;
        let g = |group: &str, leader: Option<i64>, epoch: i64, in_sync: Vec<i64>| {
            GroupReplicationStatus {
                group: group.into(),
                leader,
                epoch,
                in_sync: in_sync.len() as i32,
                in_sync_replicas: in_sync,
            }
        };
        let mut o = calm(&broker);
        o.groups = vec![SETTLED, SETTLED, SETTLED];
        o.replication = Some(vec![
            g("demo-group-1", Some(2), 4, vec![2, 1]),
            g("other-group-0", Some(1), 1, vec![1, 2, 3]),
            g("demo-group-0", Some(1), 1, vec![1, 2, 3]),
        ]);
        let s = summarize(&o);
        assert_eq!(
            s.storage.replication,
            [
                g("demo-group-0", Some(1), 1, vec![1, 2, 3]),
                g("demo-group-1", Some(2), 4, vec![2, 1]),
            ],
            "the spec's groups in order; other Brokers' groups left out"
        );
        assert_eq!(
            s.storage.under_replicated_groups,
            Some(2),
            "group 1 lacks a member, group 2 is unknown to the controller"
        );
        assert!(s.busy, "recovering groups are looked at again soon");

        o.replication = Some(vec![g("demo-group-0", None, 2, vec![1, 2, 3])]);
        let s = summarize(&o);
        assert_eq!(s.storage.under_replicated_groups, Some(3), "no leader");

        o.replication = Some(vec![
            g("demo-group-0", Some(1), 2, vec![1, 2, 3]),
            g("demo-group-1", Some(3), 2, vec![1, 2, 3]),
            g("demo-group-2", Some(2), 2, vec![1, 2, 3]),
        ]);
        let s = summarize(&o);
        assert_eq!(s.storage.under_replicated_groups, Some(0));
        assert!(!s.busy);

        o.replication = None;
        let s = summarize(&o);
        assert_eq!(s.storage.under_replicated_groups, None);
        assert!(s.storage.replication.is_empty());
    }

    #[test]
    fn a_refused_spec_changes_nothing_and_says_why() {
        let conds = refused("NameserverNotFound", "Nameserver x does not exist");
        assert_eq!(
            conds,
            [
                Desired::new(
                    READY,
                    false,
                    "NameserverNotFound",
                    "Nameserver x does not exist"
                ),
                Desired::new(
                    PROGRESSING,
                    false,
                    "NameserverNotFound",
                    "waiting for the spec to be fixed; running workloads untouched"
                ),
                Desired::new(
                    DEGRADED,
                    true,
                    "NameserverNotFound",
                    "Nameserver x does not exist"
                ),
            ]
        );
    }
}
