//! The replicated state: per broker group its members, leader, leader epoch and in-sync set,
//! and the commands that change it.
//!
//! Everything here is deterministic: every controller applies the same committed commands in
//! the same order and reaches the same state, so the rules that must hold on every replica
//! (the epoch only grows, the leader is in the in-sync set, a clean election picks an in-sync
//! member, stale proposals fail) are checked in [`ControllerState::apply`], not by the caller.
//! A refused command changes nothing and its [`CommandError`] is the answer of the Raft write.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A broker group member's id (`--replica-id`), distinct within its group.
pub type ReplicaId = u64;

/// One broker group as the controller holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Every member ever registered: replica id -> `host:port`.
    pub members: BTreeMap<ReplicaId, String>,
    /// The member that may accept writes, if any.
    pub leader: Option<ReplicaId>,
    /// Incremented by every leader change (including to "no leader"); never decreases.
    pub epoch: u64,
    /// Members holding everything the leader acknowledged; contains the leader when there is one.
    pub in_sync: BTreeSet<ReplicaId>,
    /// The highest confirm offset a member reported that the controller persisted: some member
    /// may have dispatched the log up to here, so no member whose log ends below it is elected
    /// cleanly ([`crate::rules`]). Only grows, except that an unclean election resets it to 0.
    #[serde(default)]
    pub confirm_floor: u64,
}

impl GroupState {
    /// The leader's address, if there is a leader.
    pub fn leader_address(&self) -> Option<&str> {
        self.leader
            .and_then(|l| self.members.get(&l))
            .map(String::as_str)
    }
}

/// How a leader was chosen; counted in `ferromq_controller_elections_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ElectionKind {
    /// From the in-sync set: nothing acknowledged is lost.
    Clean,
    /// Outside the in-sync set (`--unclean-election`): acknowledged messages may be lost.
    Unclean,
    /// Requested by an admin and confirmed by the old leader once the target held its log.
    Switchover,
}

impl ElectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ElectionKind::Clean => "clean",
            ElectionKind::Unclean => "unclean",
            ElectionKind::Switchover => "switchover",
        }
    }
}

/// A change proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Registers a member (or updates its address). A group without a leader at epoch 0 (never
    /// had one) elects this first member: epoch 1, in_sync = {it}.
    Join {
        group: String,
        replica: ReplicaId,
        address: String,
    },
    /// Changes the leader, compare-and-set on the epoch: applied only while the group is at
    /// `expected_epoch`, then the epoch becomes `expected_epoch + 1`. `leader: None` records
    /// that the group has no electable member (the in-sync set is then kept as it is: they are
    /// the members that may be elected cleanly later).
    Elect {
        group: String,
        expected_epoch: u64,
        leader: Option<ReplicaId>,
        in_sync: BTreeSet<ReplicaId>,
        kind: ElectionKind,
    },
    /// The leader at `epoch` replaces the in-sync set.
    AlterInSync {
        group: String,
        epoch: u64,
        leader: ReplicaId,
        in_sync: BTreeSet<ReplicaId>,
    },
    /// Raises the group's confirm floor to `offset` (a no-op when it is already higher): the
    /// controller leader persists the highest confirm offset members reported, so that a later
    /// controller leader knows it too.
    RaiseConfirmFloor { group: String, offset: u64 },
}

impl Command {
    pub fn group(&self) -> &str {
        match self {
            Command::Join { group, .. }
            | Command::Elect { group, .. }
            | Command::AlterInSync { group, .. }
            | Command::RaiseConfirmFloor { group, .. } => group,
        }
    }
}

/// Why a command was refused; it changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("group {group:?} is unknown to the controller")]
    UnknownGroup { group: String },
    #[error("group {group:?} is at epoch {current}, not {expected}")]
    StaleEpoch {
        group: String,
        expected: u64,
        current: u64,
    },
    #[error("replica {caller} is not the leader of group {group:?} (leader: {leader:?})")]
    NotLeader {
        group: String,
        caller: ReplicaId,
        leader: Option<ReplicaId>,
    },
    #[error("replica {replica} is not a member of group {group:?}")]
    UnknownMember { group: String, replica: ReplicaId },
    #[error("the in-sync set {in_sync:?} of group {group:?} must contain the leader {leader:?}")]
    LeaderNotInSync {
        group: String,
        leader: Option<ReplicaId>,
        in_sync: BTreeSet<ReplicaId>,
    },
    #[error("replica {replica} is not in the in-sync set {in_sync:?} of group {group:?}: it cannot be elected cleanly")]
    NotInSync {
        group: String,
        replica: ReplicaId,
        in_sync: BTreeSet<ReplicaId>,
    },
    #[error("group {group:?} has no leader")]
    NoLeader { group: String },
    #[error("no switchover of group {group:?} to replica {target} at epoch {epoch} is pending (none was asked, it timed out, or the epoch moved)")]
    NoSwitchoverPending {
        group: String,
        target: ReplicaId,
        epoch: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The answer of an applied command: the group as it is afterwards.
pub type CommandResult = Result<GroupState, CommandError>;

/// Every broker group, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub groups: BTreeMap<String, GroupState>,
}

impl ControllerState {
    pub fn group(&self, name: &str) -> Option<&GroupState> {
        self.groups.get(name)
    }

    /// Applies one committed command. Refusals leave the state untouched.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::Join {
                group,
                replica,
                address,
            } => {
                if address.is_empty() {
                    return Err(CommandError::Invalid(format!(
                        "replica {replica} of group {group:?} has no address"
                    )));
                }
                let g = self.groups.entry(group.clone()).or_default();
                g.members.insert(*replica, address.clone());
                if g.leader.is_none() && g.epoch == 0 {
                    g.leader = Some(*replica);
                    g.epoch = 1;
                    g.in_sync = BTreeSet::from([*replica]);
                }
                Ok(g.clone())
            }
            Command::Elect {
                group,
                expected_epoch,
                leader,
                in_sync,
                kind,
            } => {
                let g = self.existing(group)?;
                check_epoch(group, g, *expected_epoch)?;
                for r in in_sync.iter().chain(leader.iter()) {
                    if !g.members.contains_key(r) {
                        return Err(CommandError::UnknownMember {
                            group: group.clone(),
                            replica: *r,
                        });
                    }
                }
                match leader {
                    Some(l) => {
                        if !in_sync.contains(l) {
                            return Err(CommandError::LeaderNotInSync {
                                group: group.clone(),
                                leader: *leader,
                                in_sync: in_sync.clone(),
                            });
                        }
                        if *kind != ElectionKind::Unclean && !g.in_sync.contains(l) {
                            return Err(CommandError::NotInSync {
                                group: group.clone(),
                                replica: *l,
                                in_sync: g.in_sync.clone(),
                            });
                        }
                        if *kind != ElectionKind::Unclean && !in_sync.is_subset(&g.in_sync) {
                            return Err(CommandError::Invalid(format!(
                                "a clean election of group {group:?} cannot add members to the in-sync set {:?} (asked {in_sync:?})",
                                g.in_sync
                            )));
                        }
                        if *kind == ElectionKind::Unclean && in_sync.len() != 1 {
                            return Err(CommandError::Invalid(format!(
                                "an unclean election of group {group:?} leaves only the new leader in sync (asked {in_sync:?})"
                            )));
                        }
                    }
                    None => {
                        if in_sync != &g.in_sync {
                            return Err(CommandError::Invalid(format!(
                                "leaving group {group:?} without a leader keeps its in-sync set {:?}",
                                g.in_sync
                            )));
                        }
                    }
                }
                g.leader = *leader;
                g.in_sync = in_sync.clone();
                g.epoch = expected_epoch + 1;
                if *kind == ElectionKind::Unclean {
                    // The new leader's log may end below what was confirmed before: the group's
                    // history restarts from it (members past it must be rebuilt).
                    g.confirm_floor = 0;
                }
                Ok(g.clone())
            }
            Command::AlterInSync {
                group,
                epoch,
                leader,
                in_sync,
            } => {
                let g = self.existing(group)?;
                check_epoch(group, g, *epoch)?;
                if g.leader != Some(*leader) {
                    return Err(CommandError::NotLeader {
                        group: group.clone(),
                        caller: *leader,
                        leader: g.leader,
                    });
                }
                if !in_sync.contains(leader) {
                    return Err(CommandError::LeaderNotInSync {
                        group: group.clone(),
                        leader: Some(*leader),
                        in_sync: in_sync.clone(),
                    });
                }
                if let Some(r) = in_sync.iter().find(|r| !g.members.contains_key(r)) {
                    return Err(CommandError::UnknownMember {
                        group: group.clone(),
                        replica: *r,
                    });
                }
                g.in_sync = in_sync.clone();
                Ok(g.clone())
            }
            Command::RaiseConfirmFloor { group, offset } => {
                let g = self.existing(group)?;
                g.confirm_floor = g.confirm_floor.max(*offset);
                Ok(g.clone())
            }
        }
    }

    fn existing(&mut self, group: &str) -> Result<&mut GroupState, CommandError> {
        self.groups
            .get_mut(group)
            .ok_or_else(|| CommandError::UnknownGroup {
                group: group.to_string(),
            })
    }
}

fn check_epoch(group: &str, g: &GroupState, expected: u64) -> Result<(), CommandError> {
    if g.epoch != expected {
        return Err(CommandError::StaleEpoch {
            group: group.to_string(),
            expected,
            current: g.epoch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(s: &mut ControllerState, r: ReplicaId) -> GroupState {
        s.apply(&Command::Join {
            group: "g".into(),
            replica: r,
            address: format!("127.0.0.1:{}", 1000 + r),
        })
        .expect("join")
    }

    #[test]
    fn the_first_member_of_a_new_group_leads_at_epoch_one() {
        let mut s = ControllerState::default();
        let g = join(&mut s, 2);
        assert_eq!((g.leader, g.epoch), (Some(2), 1));
        assert_eq!(g.in_sync, BTreeSet::from([2]));
        let g = join(&mut s, 1);
        assert_eq!(
            (g.leader, g.epoch),
            (Some(2), 1),
            "a second member only joins"
        );
        assert_eq!(g.in_sync, BTreeSet::from([2]));
        assert_eq!(g.members.len(), 2);
    }

    #[test]
    fn alter_in_sync_is_compare_and_set_on_epoch_and_leader() {
        let mut s = ControllerState::default();
        join(&mut s, 1);
        join(&mut s, 2);
        let alter = |epoch, leader, set: &[u64]| Command::AlterInSync {
            group: "g".into(),
            epoch,
            leader,
            in_sync: set.iter().copied().collect(),
        };
        let before = s.clone();
        assert!(matches!(
            s.apply(&alter(0, 1, &[1, 2])),
            Err(CommandError::StaleEpoch { current: 1, .. })
        ));
        assert!(matches!(
            s.apply(&alter(1, 2, &[1, 2])),
            Err(CommandError::NotLeader { .. })
        ));
        assert!(matches!(
            s.apply(&alter(1, 1, &[2])),
            Err(CommandError::LeaderNotInSync { .. })
        ));
        assert!(matches!(
            s.apply(&alter(1, 1, &[1, 9])),
            Err(CommandError::UnknownMember { replica: 9, .. })
        ));
        assert_eq!(s, before, "refused commands change nothing");
        let g = s
            .apply(&alter(1, 1, &[1, 2]))
            .expect("leader grows the set");
        assert_eq!(g.in_sync, BTreeSet::from([1, 2]));
        assert_eq!(g.epoch, 1, "the in-sync set does not move the epoch");
    }

    #[test]
    fn elections_bump_the_epoch_and_refuse_stale_or_unsafe_proposals() {
        let mut s = ControllerState::default();
        join(&mut s, 1);
        join(&mut s, 2);
        join(&mut s, 3);
        s.apply(&Command::AlterInSync {
            group: "g".into(),
            epoch: 1,
            leader: 1,
            in_sync: BTreeSet::from([1, 2]),
        })
        .expect("alter");
        let elect = |epoch, leader: Option<u64>, set: &[u64], kind| Command::Elect {
            group: "g".into(),
            expected_epoch: epoch,
            leader,
            in_sync: set.iter().copied().collect(),
            kind,
        };
        assert!(matches!(
            s.apply(&elect(1, Some(3), &[3], ElectionKind::Clean)),
            Err(CommandError::NotInSync { replica: 3, .. })
        ));
        assert!(matches!(
            s.apply(&elect(1, Some(2), &[2, 3], ElectionKind::Clean)),
            Err(CommandError::Invalid(_))
        ));
        let g = s
            .apply(&elect(1, Some(2), &[2], ElectionKind::Clean))
            .expect("clean election");
        assert_eq!((g.leader, g.epoch), (Some(2), 2));
        assert!(matches!(
            s.apply(&elect(1, Some(1), &[1], ElectionKind::Clean)),
            Err(CommandError::StaleEpoch { current: 2, .. })
        ));
        let g = s
            .apply(&elect(2, None, &[2], ElectionKind::Clean))
            .expect("no electable member");
        assert_eq!((g.leader, g.epoch), (None, 3));
        let g = s
            .apply(&elect(3, Some(3), &[3], ElectionKind::Unclean))
            .expect("unclean election");
        assert_eq!((g.leader, g.epoch), (Some(3), 4));
        assert_eq!(g.in_sync, BTreeSet::from([3]));
    }
}
