//! Roll-outs of replicated broker groups, driven by the operator.
//!
//! A replicated group's StatefulSet uses the `OnDelete` strategy: the StatefulSet controller
//! creates pods from the new template only where a pod was deleted, and this module decides
//! which pod to delete, one at a time. Followers go first (highest replica id first); the
//! leader goes last, and only after the admin API's `Switchover` moved the lead to an
//! up-to-date in-sync member, so the restart costs no failover. A member is restarted only
//! while every pod is ready and, when the controller's view is known, every member is in sync,
//! so a roll never takes a second member out of the in-sync set.
//!
//! Across groups the broker controller rolls one group at a time ([`turn`]): a group whose
//! StatefulSet a spec change would alter waits until every group before it is settled, so a
//! bad image or setting stops at the first group instead of reaching them all.
//!
//! When the replication state cannot be read (no proxy yet, admin API down) the roll goes on
//! in ordinal order from the highest, as a StatefulSet's own RollingUpdate would: restarting a
//! leader then costs a failover (a few seconds of refused sends), never acknowledged messages.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::builders::broker::spec_hash;

use crate::crd::GroupReplicationStatus;

/// Pod label the StatefulSet controller puts the pod's template revision in.
const REVISION_LABEL: &str = "controller-revision-hash";

/// One member pod, as the roll sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Pod name (`<group>-<ordinal>`).
    pub pod: String,
    /// Its replica id: ordinal + 1.
    pub replica_id: i64,
    /// Runs the StatefulSet's update revision.
    pub updated: bool,
    /// Passes readiness.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
}

/// What the roll of one group does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every member runs the current template.
    Done,
    /// A member is starting, unready, terminating or catching up: look again later.
    Wait(String),
    /// Delete this member's pod so the StatefulSet recreates it from the new template.
    Restart {
        /// The pod.
        pod: String,
        /// True when it is the leader (no in-sync member could take over first).
        leader: bool,
    },
    /// Move the lead from the outdated leader to an up-to-date in-sync member first.
    Switchover {
        /// The current leader's replica id.
        from: i64,
        /// The member to lead.
        to: i64,
    },
}

/// Reads the members from the group's pods; `update_revision` is the StatefulSet's.
pub fn members(pods: &[Pod], update_revision: &str) -> Vec<Member> {
    pods.iter()
        .filter_map(|p| {
            let pod = p.name_any();
            let ordinal: i64 = pod.rsplit_once('-')?.1.parse().ok()?;
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Some(Member {
                updated: p.labels().get(REVISION_LABEL).map(String::as_str)
                    == Some(update_revision),
                terminating: p.metadata.deletion_timestamp.is_some(),
                ready,
                replica_id: ordinal + 1,
                pod,
            })
        })
        .collect()
}

/// The next step of a group's roll: `want` pods, `replication` the controller's view of the
/// group when it could be read.
pub fn next_step(
    members: &[Member],
    want: i32,
    replication: Option<&GroupReplicationStatus>,
) -> Step {
    let outdated: Vec<&Member> = members
        .iter()
        .filter(|m| !m.updated && !m.terminating)
        .collect();
    if outdated.is_empty() {
        return Step::Done;
    }
    if let Some(m) = members.iter().find(|m| m.terminating || !m.ready) {
        return Step::Wait(format!("member pod {} is not ready yet", m.pod));
    }
    if members.len() < usize::try_from(want).unwrap_or(0) {
        return Step::Wait(format!("{}/{want} member pods exist", members.len()));
    }
    let leader = replication.and_then(|r| r.leader);
    if let Some(r) = replication {
        if r.in_sync < want {
            return Step::Wait(format!(
                "{}/{want} members in sync; a restart waits until all have caught up",
                r.in_sync
            ));
        }
    }
    if let Some(follower) = outdated
        .iter()
        .filter(|m| Some(m.replica_id) != leader)
        .max_by_key(|m| m.replica_id)
    {
        return Step::Restart {
            pod: follower.pod.clone(),
            leader: false,
        };
    }
    // Only the leader is left (so the leader is known).
    let from = leader.unwrap_or_default();
    let target = replication.and_then(|r| {
        r.in_sync_replicas
            .iter()
            .filter(|id| **id != from)
            .filter(|id| {
                members
                    .iter()
                    .any(|m| m.replica_id == **id && m.updated && m.ready)
            })
            .max()
            .copied()
    });
    match target {
        Some(to) => Step::Switchover { from, to },
        None => Step::Restart {
            pod: outdated[0].pod.clone(),
            leader: true,
        },
    }
}

/// Whether a group's StatefulSet may be applied in this reconcile.
#[derive(Debug, PartialEq)]
pub enum Turn<'a> {
    /// Apply the desired StatefulSet: it is new, unchanged (the apply only repairs drift), or
    /// every earlier group is settled.
    Apply,
    /// Keep the current StatefulSet: the desired one differs and an earlier group is still
    /// rolling.
    Wait(&'a StatefulSet),
}

/// The turn of one group: `current` as stored (`None`: not created yet), `desired` as built
/// (carrying [`crate::builders::broker::SPEC_HASH_ANNOTATION`]), `busy` the first earlier
/// group that is not settled, if any.
pub fn turn<'a>(
    current: Option<&'a StatefulSet>,
    desired: &StatefulSet,
    busy: Option<&str>,
) -> Turn<'a> {
    match current {
        Some(cur) if busy.is_some() && spec_hash(cur) != spec_hash(desired) => Turn::Wait(cur),
        _ => Turn::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts_with_hash(hash: &str) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.annotations = Some(
            [(
                crate::builders::broker::SPEC_HASH_ANNOTATION.to_string(),
                hash.to_string(),
            )]
            .into(),
        );
        s
    }

    #[test]
    fn a_changed_group_waits_while_an_earlier_one_rolls() {
        let old = sts_with_hash("a");
        let new = sts_with_hash("b");
        assert_eq!(
            turn(Some(&old), &new, Some("demo-group-0")),
            Turn::Wait(&old)
        );
        assert_eq!(turn(Some(&old), &new, None), Turn::Apply, "its turn");
        assert_eq!(
            turn(Some(&new), &new, Some("demo-group-0")),
            Turn::Apply,
            "unchanged: the apply only repairs drift"
        );
        assert_eq!(
            turn(None, &new, Some("demo-group-0")),
            Turn::Apply,
            "a new group is created at once"
        );
        assert_eq!(
            turn(Some(&StatefulSet::default()), &new, Some("demo-group-0")),
            Turn::Wait(&StatefulSet::default()),
            "a StatefulSet from before the hash annotation counts as changed"
        );
    }

    fn m(replica_id: i64, updated: bool) -> Member {
        Member {
            pod: format!("demo-group-0-{}", replica_id - 1),
            replica_id,
            updated,
            ready: true,
            terminating: false,
        }
    }

    fn view(leader: i64, in_sync: Vec<i64>) -> GroupReplicationStatus {
        GroupReplicationStatus {
            group: "demo-group-0".into(),
            leader: Some(leader),
            epoch: 3,
            in_sync: in_sync.len() as i32,
            in_sync_replicas: in_sync,
        }
    }

    fn restart(pod: &str, leader: bool) -> Step {
        Step::Restart {
            pod: pod.into(),
            leader,
        }
    }

    #[test]
    fn followers_roll_first_then_the_lead_moves_then_the_old_leader_rolls() {
        let r = view(2, vec![1, 2, 3]);
        let mut ms = vec![m(1, false), m(2, false), m(3, false)];
        assert_eq!(
            next_step(&ms, 3, Some(&r)),
            restart("demo-group-0-2", false)
        );
        ms[2].updated = true;
        assert_eq!(
            next_step(&ms, 3, Some(&r)),
            restart("demo-group-0-0", false)
        );
        ms[0].updated = true;
        assert_eq!(
            next_step(&ms, 3, Some(&r)),
            Step::Switchover { from: 2, to: 3 }
        );
        // Once the controller moved the lead, the old leader is a follower like any other.
        let r = view(3, vec![1, 2, 3]);
        assert_eq!(
            next_step(&ms, 3, Some(&r)),
            restart("demo-group-0-1", false)
        );
        ms[1].updated = true;
        assert_eq!(next_step(&ms, 3, Some(&r)), Step::Done);
    }

    #[test]
    fn one_member_at_a_time_and_only_with_the_whole_set_in_sync() {
        let r = view(1, vec![1, 2, 3]);
        let mut ms = vec![m(1, false), m(2, false), m(3, true)];
        ms[2].ready = false;
        assert!(
            matches!(next_step(&ms, 3, Some(&r)), Step::Wait(w) if w.contains("demo-group-0-2"))
        );
        ms[2].ready = true;
        ms.pop();
        assert!(
            matches!(next_step(&ms, 3, Some(&r)), Step::Wait(w) if w == "2/3 member pods exist")
        );
        ms.push(m(3, true));
        let catching_up = view(1, vec![1, 2]);
        assert!(
            matches!(next_step(&ms, 3, Some(&catching_up)), Step::Wait(w) if w.starts_with("2/3 members in sync"))
        );
        assert_eq!(
            next_step(&ms, 3, Some(&r)),
            restart("demo-group-0-1", false)
        );
    }

    #[test]
    fn without_the_controllers_view_the_roll_goes_by_ordinal() {
        let ms = vec![m(1, false), m(2, false), m(3, true)];
        assert_eq!(next_step(&ms, 3, None), restart("demo-group-0-1", false));
        let ms = vec![m(1, false), m(2, true), m(3, true)];
        assert_eq!(next_step(&ms, 3, None), restart("demo-group-0-0", false));
    }

    #[test]
    fn a_leader_with_no_up_to_date_in_sync_peer_is_restarted_in_place() {
        let ms = vec![m(1, false), m(2, true)];
        let r = view(1, vec![1, 2]);
        assert_eq!(
            next_step(&ms, 2, Some(&r)),
            Step::Switchover { from: 1, to: 2 }
        );
        let mut ms = ms;
        ms.push(m(3, true));
        // want 3 but in-sync holds only the leader and one peer that runs the old template.
        let r = view(1, vec![1]);
        assert!(matches!(
            next_step(&ms, 1, Some(&r)),
            Step::Restart { leader: true, .. }
        ));
    }

    #[test]
    fn members_are_read_from_pods() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "demo-group-0-2", "labels": { REVISION_LABEL: "r2" } },
            "status": { "conditions": [ { "type": "Ready", "status": "True" } ] } }))
        .expect("pod");
        assert_eq!(
            members(std::slice::from_ref(&pod), "r2"),
            [Member {
                pod: "demo-group-0-2".into(),
                replica_id: 3,
                updated: true,
                ready: true,
                terminating: false,
            }]
        );
        assert!(!members(&[pod], "r3")[0].updated);
    }
}
