//! The election rules, decided on the controller leader from what only it knows: when each
//! member last heartbeat (a monotonic clock, in memory) and the switchovers admins asked for.
//!
//! Nothing here touches Raft or a clock of its own: every decision takes `now` and returns the
//! [`Command`] to propose, so the rules are tested with instants the test chooses. The state
//! machine ([`crate::state`]) re-checks what must hold on every replica (epoch compare-and-set,
//! clean elections only from the in-sync set); this module decides *when* to propose.
//!
//! Rules:
//! - Liveness is counted from when the controller leader RECEIVED a heartbeat. A member this
//!   node has not heard from since it became Raft leader counts as last heard at that instant,
//!   and no election happens before `member-expiry` has passed since then: leases granted by
//!   the previous Raft leader may still run until then.
//! - A group leader silent for longer than `member-expiry` is replaced by the alive in-sync
//!   member with the highest reported log end (ties: the lowest replica id); the new in-sync
//!   set is the alive in-sync members. With none alive the group is left without a leader
//!   (its in-sync set kept, so one of them is elected when it comes back) unless unclean
//!   election is enabled: then the alive member with the highest log end leads alone.
//! - A leaderless group (epoch > 0) elects the same way as soon as an in-sync member is alive.
//! - The confirm floor: members report the confirm offset they know in every heartbeat (what
//!   they may have dispatched to consumers, which `Store::truncate` then refuses to cut). The
//!   floor of a group is the highest of the latest reports of its members and of what the
//!   controller persisted ([`GroupState::confirm_floor`], raised through Raft at most every
//!   [`FLOOR_PERSIST_EVERY`] while it grows, so a new controller leader knows it). No member
//!   whose reported log end is below the floor is elected cleanly: it cannot hold what some
//!   member dispatched, and that member could not follow it. A leaderless group therefore waits
//!   (its in-sync set kept) until a member whose log reaches the floor is alive; with unclean
//!   election on, it elects the in-sync member with the highest log end instead, as an unclean
//!   election (which resets the floor).
//!
//! Why the floor is safe to wait for: the leader computes the confirm offset over a set that
//! contains the controller's in-sync set (the broker's `replication` module), so every member
//! of that set holds every confirm offset any member used; the floor is then below the log end
//! of every in-sync member, and a clean election waits at most one heartbeat for a fresh report
//! of it. The floor only delays an election when that invariant was broken (a member of the set
//! lacks records another member dispatched): then electing the short member would leave the
//! other unable to follow (the "must be rebuilt" refusal) and a second failure could lose
//! acknowledged data; waiting for the member that holds them loses nothing.
//! - After an unclean election a member whose log was confirmed past the new leader's end must
//!   be rebuilt; it reports a confirm offset of 0 once it finds out (its first attempt to follow),
//!   and the controller forgets the group's reports at the election.
//! - With `--flush async` a member holds confirmed records in its page cache only: a machine
//!   crash that takes them from every member leaves the group waiting (logged every 10 s) until
//!   an operator enables unclean election, which then elects the best remaining member.
//! - A switchover is pending for `switchover-timeout`; the leader learns it from its heartbeat
//!   answer and completes it itself, for the epoch it was asked at.
//! - A leader whose process restarted (its heartbeat names another incarnation than before)
//!   leads no more at that epoch, even when it came back within `member-expiry` (a pod that a
//!   StatefulSet recreates in a second or two): it lost its lease, what it knew of its
//!   followers, and possibly an unflushed tail its followers hold. It earns no lease, cannot
//!   change the in-sync set, and is replaced as a silent leader would be, counting from the
//!   last heartbeat of its previous life (that life's lease has ended by then), by another
//!   alive in-sync member; the new in-sync set leaves it out until it caught up from the new
//!   leader, which adds it back. With no other in-sync member alive the group goes leaderless
//!   for one epoch, then elects the restarted member cleanly. The controller leader sees the
//!   restart as a new incarnation, or as the process's first heartbeat (`first`) finding it the
//!   leader already; its answer says so (`restarted`), and the member repeats that epoch in
//!   every later heartbeat (`restarted_epoch`), so a controller leader elected in between,
//!   which saw neither, still leaves it out of that epoch. (A member elected on its previous
//!   life's heartbeats, just before its new process first reports, counts as restarted too:
//!   one more election, never a leader that forgot its followers.)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::state::{Command, CommandError, ElectionKind, GroupState, ReplicaId};

/// How often, at most, a growing confirm floor of one group is written through Raft.
pub const FLOOR_PERSIST_EVERY: Duration = Duration::from_secs(1);

/// The durations and switches the rules follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A member not heard from for this long is dead; always longer than `lease`.
    pub member_expiry: Duration,
    /// How long a group leader may act on one heartbeat answer, counted from its sending.
    pub lease: Duration,
    /// Allow electing a member outside the in-sync set when no in-sync member is alive.
    pub unclean_election: bool,
    /// How long an admin's switchover waits for the leader to complete it.
    pub switchover_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            member_expiry: Duration::from_secs(3),
            lease: Duration::from_secs(2),
            unclean_election: false,
            switchover_timeout: Duration::from_secs(5),
        }
    }
}

/// A member's last heartbeat as received by this controller leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub at: Instant,
    pub log_end: u64,
    /// The confirm offset it reported (0: none it vouches for).
    pub confirm: u64,
}

/// A group leader heard from a new process (incarnation) at the epoch it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Restarted {
    replica: ReplicaId,
    epoch: u64,
    /// The last heartbeat of its previous life: its lease counts from before that.
    last_heard: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    target: ReplicaId,
    epoch: u64,
    deadline: Instant,
}

/// What the controller leader remembers in memory: heartbeats and pending switchovers. A new
/// Raft leader starts from nothing ([`Elector::became_leader`]).
#[derive(Debug)]
pub struct Elector {
    pub timing: Timing,
    seen: HashMap<(String, ReplicaId), Seen>,
    leading_since: Option<Instant>,
    switchovers: HashMap<String, Pending>,
    /// Groups whose election was decided and is being proposed: no lease until it applied.
    electing: HashSet<String>,
    /// When each group's confirm floor was last proposed for persisting.
    floor_proposed: HashMap<String, Instant>,
    /// The process incarnation each member last reported (members that report one).
    incarnations: HashMap<(String, ReplicaId), u64>,
    /// Per group, its leader if it restarted at the epoch it leads.
    restarted: HashMap<String, Restarted>,
}

impl Elector {
    pub fn new(timing: Timing) -> Elector {
        Elector {
            timing,
            seen: HashMap::new(),
            leading_since: None,
            switchovers: HashMap::new(),
            electing: HashSet::new(),
            floor_proposed: HashMap::new(),
            incarnations: HashMap::new(),
            restarted: HashMap::new(),
        }
    }

    /// This node became Raft leader at `at`: forget what an earlier term saw.
    pub fn became_leader(&mut self, at: Instant) {
        self.forget_liveness();
        self.leading_since = Some(at);
    }

    /// This node is no longer Raft leader.
    pub fn lost_leadership(&mut self) {
        self.forget_liveness();
        self.leading_since = None;
    }

    fn forget_liveness(&mut self) {
        self.seen.clear();
        self.switchovers.clear();
        self.incarnations.clear();
        self.restarted.clear();
    }

    pub fn leading_since(&self) -> Option<Instant> {
        self.leading_since
    }

    /// Records a heartbeat received at `at`.
    pub fn record(
        &mut self,
        group: &str,
        replica: ReplicaId,
        log_end: u64,
        confirm: u64,
        at: Instant,
    ) {
        self.seen.insert(
            (group.to_string(), replica),
            Seen {
                at,
                log_end,
                confirm,
            },
        );
    }

    /// Records a heartbeat received at `at` from process `incarnation` of the member (0: the
    /// member does not say). Returns when its previous incarnation was last heard when this one
    /// differs from it: the member restarted since (see [`Elector::leader_restarted`]).
    pub fn record_from(
        &mut self,
        group: &str,
        replica: ReplicaId,
        incarnation: u64,
        log_end: u64,
        confirm: u64,
        at: Instant,
    ) -> Option<Instant> {
        let before = self.seen(group, replica).map(|s| s.at);
        let restarted = if incarnation == 0 {
            None
        } else {
            match self
                .incarnations
                .insert((group.to_string(), replica), incarnation)
            {
                Some(old) if old != incarnation => before,
                _ => None,
            }
        };
        self.record(group, replica, log_end, confirm, at);
        restarted
    }

    /// `replica`, the leader of `group` at `epoch`, restarted; its previous life was last heard
    /// at `last_heard`. From now on it earns no lease and may not change the in-sync set at
    /// that epoch, and [`Elector::failover`] replaces it once that life's lease has ended.
    pub fn leader_restarted(
        &mut self,
        group: &str,
        replica: ReplicaId,
        epoch: u64,
        last_heard: Instant,
    ) {
        self.restarted.insert(
            group.to_string(),
            Restarted {
                replica,
                epoch,
                last_heard,
            },
        );
    }

    /// True when `replica` restarted while leading `group` at `epoch` (so leads no more).
    pub fn restarted_leader(&self, group: &str, replica: ReplicaId, epoch: u64) -> bool {
        self.restart_of(group, replica, epoch).is_some()
    }

    /// The restart of `replica` while it led `group` at `epoch`, if it restarted.
    fn restart_of(&self, group: &str, replica: ReplicaId, epoch: u64) -> Option<&Restarted> {
        self.restarted
            .get(group)
            .filter(|r| r.replica == replica && r.epoch == epoch)
    }

    /// The group's confirm floor: the highest of its members' latest reported confirm offsets
    /// (heard in this term) and of the persisted floor.
    pub fn floor(&self, group: &str, g: &GroupState) -> u64 {
        g.members
            .keys()
            .filter_map(|r| self.seen(group, *r))
            .map(|s| s.confirm)
            .fold(g.confirm_floor, u64::max)
    }

    /// The command persisting a grown floor, at most every [`FLOOR_PERSIST_EVERY`] per group.
    pub fn floor_to_persist(
        &mut self,
        group: &str,
        g: &GroupState,
        now: Instant,
    ) -> Option<Command> {
        let floor = self.floor(group, g);
        if floor <= g.confirm_floor {
            return None;
        }
        if self
            .floor_proposed
            .get(group)
            .is_some_and(|t| now.saturating_duration_since(*t) < FLOOR_PERSIST_EVERY)
        {
            return None;
        }
        self.floor_proposed.insert(group.to_string(), now);
        Some(Command::RaiseConfirmFloor {
            group: group.to_string(),
            offset: floor,
        })
    }

    /// An unclean election of `group` applied: the confirm offsets its members reported belong
    /// to the history it left behind.
    pub fn forget_confirms(&mut self, group: &str) {
        for ((g, _), s) in self.seen.iter_mut() {
            if g == group {
                s.confirm = 0;
            }
        }
    }

    /// Why a group that needs a leader is not getting one: the floor and the alive in-sync
    /// members' reported log ends, when some are alive but none reaches the floor.
    pub fn short_of_floor(
        &self,
        group: &str,
        g: &GroupState,
        now: Instant,
    ) -> Option<(u64, Vec<(ReplicaId, u64)>)> {
        let needs = match g.leader {
            None => g.epoch > 0,
            Some(l) => !self.is_alive(group, l, now) || self.restarted_leader(group, l, g.epoch),
        };
        if !needs {
            return None;
        }
        let floor = self.floor(group, g);
        let alive: Vec<(ReplicaId, u64)> = g
            .in_sync
            .iter()
            .filter(|r| Some(**r) != g.leader && self.is_alive(group, **r, now))
            .map(|r| (*r, self.seen(group, *r).map_or(0, |s| s.log_end)))
            .collect();
        (!alive.is_empty() && alive.iter().all(|(_, end)| *end < floor)).then_some((floor, alive))
    }

    /// The member's last heartbeat, if heard from in this term.
    pub fn seen(&self, group: &str, replica: ReplicaId) -> Option<Seen> {
        self.seen.get(&(group.to_string(), replica)).copied()
    }

    /// Heard from within `member-expiry` before `now`.
    pub fn is_alive(&self, group: &str, replica: ReplicaId, now: Instant) -> bool {
        self.seen(group, replica)
            .is_some_and(|s| now.saturating_duration_since(s.at) <= self.timing.member_expiry)
    }

    /// Whether the wait after becoming Raft leader is over (and this node leads at all).
    pub fn may_elect(&self, now: Instant) -> bool {
        self.leading_since
            .is_some_and(|t| now.saturating_duration_since(t) > self.timing.member_expiry)
    }

    /// The lease a heartbeat earns: only the leader at the current epoch that knows that epoch,
    /// and only while no election of its group is on its way through Raft (the state read may
    /// be about to change under it).
    pub fn lease_for(
        &self,
        group: &str,
        g: &GroupState,
        replica: ReplicaId,
        believed_epoch: u64,
    ) -> Option<Duration> {
        (g.leader == Some(replica)
            && believed_epoch == g.epoch
            && g.epoch > 0
            && !self.electing.contains(group)
            && !self.restarted_leader(group, replica, g.epoch))
        .then_some(self.timing.lease)
    }

    /// An election of `group` was decided and is being proposed (see [`Elector::lease_for`]);
    /// false if one already is.
    pub fn begin_election(&mut self, group: &str) -> bool {
        self.electing.insert(group.to_string())
    }

    /// The proposal of `group`'s election finished (applied or refused).
    pub fn end_election(&mut self, group: &str) {
        self.electing.remove(group);
    }

    /// The election `group` needs at `now`, if any.
    pub fn failover(&self, group: &str, g: &GroupState, now: Instant) -> Option<Command> {
        if !self.may_elect(now) || self.electing.contains(group) {
            return None;
        }
        let old = match g.leader {
            Some(l) => {
                // A restarted leader counts as silent since its previous life's last heartbeat.
                let last = match self.restart_of(group, l, g.epoch) {
                    Some(r) => r.last_heard,
                    None => self.seen(group, l).map(|s| s.at).or(self.leading_since)?,
                };
                if now.saturating_duration_since(last) <= self.timing.member_expiry {
                    return None;
                }
                Some(l)
            }
            None if g.epoch == 0 => return None,
            None => None,
        };
        let alive_in_sync: BTreeSet<ReplicaId> = g
            .in_sync
            .iter()
            .copied()
            .filter(|r| Some(*r) != old && self.is_alive(group, *r, now))
            .collect();
        let elect =
            |leader: Option<ReplicaId>, in_sync: BTreeSet<ReplicaId>, kind| Command::Elect {
                group: group.to_string(),
                expected_epoch: g.epoch,
                leader,
                in_sync,
                kind,
            };
        let floor = self.floor(group, g);
        let reaches_floor =
            |r: &ReplicaId| self.seen(group, *r).is_some_and(|s| s.log_end >= floor);
        if let Some(best) =
            self.most_caught_up(group, alive_in_sync.iter().copied().filter(reaches_floor))
        {
            return Some(elect(Some(best), alive_in_sync, ElectionKind::Clean));
        }
        if self.timing.unclean_election {
            // In-sync members are alive but none holds what was dispatched: electing one loses
            // that part, which only an unclean election may do.
            if let Some(best) = self.most_caught_up(group, alive_in_sync.iter().copied()) {
                return Some(elect(
                    Some(best),
                    BTreeSet::from([best]),
                    ElectionKind::Unclean,
                ));
            }
            let alive = g
                .members
                .keys()
                .copied()
                .filter(|r| Some(*r) != old && self.is_alive(group, *r, now));
            if let Some(best) = self.most_caught_up(group, alive) {
                return Some(elect(
                    Some(best),
                    BTreeSet::from([best]),
                    ElectionKind::Unclean,
                ));
            }
        }
        // Nobody electable: record that the group has no leader (fencing the old one by the
        // epoch), once.
        old.map(|_| elect(None, g.in_sync.clone(), ElectionKind::Clean))
    }

    /// The highest reported log end among `candidates`; ties go to the lowest replica id.
    fn most_caught_up(
        &self,
        group: &str,
        candidates: impl Iterator<Item = ReplicaId>,
    ) -> Option<ReplicaId> {
        candidates
            .map(|r| (self.seen(group, r).map_or(0, |s| s.log_end), r))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, r)| r)
    }

    /// An admin asks to move leadership of `group` to `target` (default: the most caught-up
    /// in-sync member other than the leader, alive ones first). Returns the target.
    pub fn request_switchover(
        &mut self,
        group: &str,
        g: &GroupState,
        target: Option<ReplicaId>,
        now: Instant,
    ) -> Result<ReplicaId, CommandError> {
        let leader = g.leader.ok_or_else(|| CommandError::NoLeader {
            group: group.to_string(),
        })?;
        let target = match target {
            Some(t) => {
                if !g.members.contains_key(&t) {
                    return Err(CommandError::UnknownMember {
                        group: group.to_string(),
                        replica: t,
                    });
                }
                if !g.in_sync.contains(&t) {
                    return Err(CommandError::NotInSync {
                        group: group.to_string(),
                        replica: t,
                        in_sync: g.in_sync.clone(),
                    });
                }
                if t == leader {
                    return Err(CommandError::Invalid(format!(
                        "replica {t} already leads group {group:?}"
                    )));
                }
                t
            }
            None => {
                let others = || g.in_sync.iter().copied().filter(|r| *r != leader);
                let alive = others().filter(|r| self.is_alive(group, *r, now));
                self.most_caught_up(group, alive)
                    .or_else(|| self.most_caught_up(group, others()))
                    .ok_or_else(|| {
                        CommandError::Invalid(format!(
                            "group {group:?} has no in-sync member besides its leader {leader} to switch over to (in sync: {:?})",
                            g.in_sync
                        ))
                    })?
            }
        };
        self.switchovers.insert(
            group.to_string(),
            Pending {
                target,
                epoch: g.epoch,
                deadline: now + self.timing.switchover_timeout,
            },
        );
        Ok(target)
    }

    /// The switchover the leader of `group` must carry out, if one is pending for its epoch.
    pub fn pending_switchover(
        &mut self,
        group: &str,
        g: &GroupState,
        now: Instant,
    ) -> Option<ReplicaId> {
        let p = *self.switchovers.get(group)?;
        if p.epoch != g.epoch || now > p.deadline || !g.in_sync.contains(&p.target) {
            self.switchovers.remove(group);
            return None;
        }
        Some(p.target)
    }

    /// The old leader completes a pending switchover: the election to propose.
    pub fn complete_switchover(
        &mut self,
        group: &str,
        g: &GroupState,
        epoch: u64,
        target: ReplicaId,
        now: Instant,
    ) -> Result<Command, CommandError> {
        if self.pending_switchover(group, g, now) != Some(target) || g.epoch != epoch {
            return Err(CommandError::NoSwitchoverPending {
                group: group.to_string(),
                target,
                epoch,
            });
        }
        self.switchovers.remove(group);
        Ok(Command::Elect {
            group: group.to_string(),
            expected_epoch: epoch,
            leader: Some(target),
            in_sync: g.in_sync.clone(),
            kind: ElectionKind::Switchover,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CommandResult, ControllerState};
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    /// A controller leader applying its own proposals directly (no Raft), with a clock the test
    /// moves.
    struct World {
        state: ControllerState,
        elector: Elector,
        t0: Instant,
        now: Instant,
    }

    impl World {
        fn new(unclean: bool) -> World {
            let t0 = Instant::now();
            let mut elector = Elector::new(Timing {
                unclean_election: unclean,
                ..Timing::default()
            });
            elector.became_leader(t0);
            World {
                state: ControllerState::default(),
                elector,
                t0,
                now: t0,
            }
        }

        fn at(&mut self, d: Duration) {
            self.now = self.t0 + d;
        }

        fn g(&self) -> GroupState {
            self.state.group("g").cloned().unwrap_or_default()
        }

        /// A heartbeat as the controller leader handles it: record, register if new.
        fn heartbeat(&mut self, r: ReplicaId, log_end: u64) -> Option<Duration> {
            self.heartbeat_c(r, log_end, 0)
        }

        /// A heartbeat that reports a confirm offset too.
        fn heartbeat_c(&mut self, r: ReplicaId, log_end: u64, confirm: u64) -> Option<Duration> {
            self.elector.record("g", r, log_end, confirm, self.now);
            if !self.g().members.contains_key(&r) {
                self.apply(Command::Join {
                    group: "g".into(),
                    replica: r,
                    address: format!("127.0.0.1:{r}"),
                })
                .expect("join");
            }
            let g = self.g();
            self.elector.lease_for("g", &g, r, g.epoch)
        }

        fn apply(&mut self, c: Command) -> CommandResult {
            self.state.apply(&c)
        }

        /// Runs the election loop once; returns the command applied.
        fn tick(&mut self) -> Option<Command> {
            let c = self.elector.failover("g", &self.g(), self.now)?;
            self.apply(c.clone())
                .expect("the elector proposes valid elections");
            Some(c)
        }

        fn alter(&mut self, set: &[ReplicaId]) -> CommandResult {
            let g = self.g();
            self.apply(Command::AlterInSync {
                group: "g".into(),
                epoch: g.epoch,
                leader: g.leader.expect("leader"),
                in_sync: set.iter().copied().collect(),
            })
        }
    }

    /// Three members, 1 leads, all in sync, at t = 4 s (past the initial wait).
    fn three(unclean: bool) -> World {
        let mut w = World::new(unclean);
        for r in 1..=3 {
            w.heartbeat(r, 100);
        }
        w.alter(&[1, 2, 3]).expect("grow");
        w.at(4 * S);
        for r in 1..=3 {
            w.heartbeat(r, 100);
        }
        w
    }

    #[test]
    fn failover_happens_only_after_the_leader_expires() {
        let mut w = three(false);
        // Leader 1 falls silent at 4 s; followers keep reporting.
        for ms in (4250..=7000).step_by(250) {
            w.at(Duration::from_millis(ms));
            w.heartbeat(2, 100);
            w.heartbeat(3, 120);
            assert_eq!(
                w.tick(),
                None,
                "no election {ms} ms in: leader silent < 3 s"
            );
        }
        w.at(Duration::from_millis(7001));
        w.heartbeat(2, 100);
        w.heartbeat(3, 120);
        let c = w.tick().expect("failover");
        assert!(matches!(
            c,
            Command::Elect {
                kind: ElectionKind::Clean,
                ..
            }
        ));
        let g = w.g();
        assert_eq!(g.leader, Some(3), "highest log end wins");
        assert_eq!(g.epoch, 2);
        assert_eq!(
            g.in_sync,
            BTreeSet::from([2, 3]),
            "the dead leader leaves the set"
        );
        assert_eq!(w.tick(), None, "one election per failure");
    }

    #[test]
    fn only_alive_in_sync_members_are_elected_cleanly() {
        let mut w = three(false);
        w.alter(&[1, 2]).expect("3 fell behind");
        w.at(Duration::from_millis(7500));
        w.heartbeat(2, 50);
        w.heartbeat(3, 10_000); // most data, but out of sync
        w.tick().expect("failover");
        assert_eq!(
            w.g().leader,
            Some(2),
            "3 is out of sync, whatever its log end"
        );
        assert_eq!(w.g().in_sync, BTreeSet::from([2]));
    }

    #[test]
    fn no_in_sync_member_alive_leaves_the_group_without_a_leader_until_one_returns() {
        let mut w = three(false);
        w.alter(&[1, 2]).expect("shrink");
        w.at(Duration::from_millis(8000));
        w.heartbeat(3, 500);
        let c = w.tick().expect("the group is marked leaderless");
        assert!(matches!(c, Command::Elect { leader: None, .. }));
        let g = w.g();
        assert_eq!((g.leader, g.epoch), (None, 2));
        assert_eq!(g.in_sync, BTreeSet::from([1, 2]), "in-sync set kept");
        assert_eq!(w.tick(), None, "recorded once");
        assert_eq!(w.heartbeat(3, 500), None, "no lease without leadership");
        // The old leader comes back: it is in sync, so it leads again at a new epoch.
        w.at(Duration::from_millis(8500));
        w.heartbeat(1, 100);
        w.tick().expect("re-election");
        let g = w.g();
        assert_eq!((g.leader, g.epoch), (Some(1), 3));
        assert_eq!(g.in_sync, BTreeSet::from([1]));
    }

    #[test]
    fn unclean_election_only_when_enabled() {
        for unclean in [false, true] {
            let mut w = three(unclean);
            w.alter(&[1]).expect("shrink to the leader");
            w.at(Duration::from_millis(8000));
            w.heartbeat(2, 90);
            w.heartbeat(3, 95);
            let c = w.tick().expect("a decision");
            let g = w.g();
            if unclean {
                assert!(matches!(
                    c,
                    Command::Elect {
                        kind: ElectionKind::Unclean,
                        ..
                    }
                ));
                assert_eq!(g.leader, Some(3), "highest log end among the alive");
                assert_eq!(g.in_sync, BTreeSet::from([3]));
            } else {
                assert_eq!(g.leader, None);
            }
            assert_eq!(g.epoch, 2);
        }
    }

    #[test]
    fn a_leader_that_restarted_is_replaced_even_when_it_came_back_at_once() {
        let mut w = three(false);
        let ms = Duration::from_millis;
        // Each member's first process reports an incarnation.
        for r in 1..=3 {
            assert_eq!(w.elector.record_from("g", r, 10 + r, 100, 0, w.now), None);
        }
        // Leader 1 is killed at 4 s and back 1.5 s later as a new process: not silent long
        // enough to count as dead, yet it must not resume epoch 1.
        w.at(ms(5_500));
        let last = w.elector.record_from("g", 1, 99, 100, 0, w.now);
        assert_eq!(
            last,
            Some(w.t0 + 4 * S),
            "its previous life was last heard at 4 s"
        );
        w.elector.leader_restarted("g", 1, 1, w.t0 + 4 * S);
        let g = w.g();
        assert_eq!(
            w.elector.lease_for("g", &g, 1, 1),
            None,
            "no lease for the new process"
        );
        assert!(w.elector.restarted_leader("g", 1, 1));
        // The old life's lease (2 s from 4 s) runs out before anything is elected.
        w.at(ms(6_900));
        for r in 2..=3 {
            w.elector.record_from("g", r, 10 + r, 100, 0, w.now);
        }
        w.elector.record_from("g", 1, 99, 100, 0, w.now);
        assert_eq!(w.tick(), None, "within member-expiry of the previous life");
        w.at(ms(7_100));
        w.elector.record_from("g", 1, 99, 100, 0, w.now);
        let c = w.tick().expect("the restarted leader is replaced");
        assert!(
            matches!(
                &c,
                Command::Elect {
                    leader: Some(2),
                    kind: ElectionKind::Clean,
                    ..
                }
            ),
            "{c:?}"
        );
        let g = w.g();
        assert_eq!(g.epoch, 2);
        assert_eq!(
            g.in_sync,
            BTreeSet::from([2, 3]),
            "the restarted member rejoins only once it caught up"
        );
        // At the new epoch nothing is held against it any more.
        assert!(!w.elector.restarted_leader("g", 1, 2));
        assert_eq!(w.tick(), None);
    }

    #[test]
    fn a_restarted_sole_in_sync_leader_is_elected_again_at_a_new_epoch() {
        let mut w = three(false);
        w.alter(&[1]).expect("shrink");
        for r in 1..=3 {
            w.elector.record_from("g", r, 10 + r, 100, 0, w.now);
        }
        w.at(5 * S);
        let last = w
            .elector
            .record_from("g", 1, 99, 100, 0, w.now)
            .expect("restart seen");
        w.elector.leader_restarted("g", 1, 1, last);
        w.at(Duration::from_millis(7_100));
        w.elector.record_from("g", 1, 99, 100, 0, w.now);
        w.heartbeat(2, 100);
        // No other in-sync member: the group goes leaderless, then elects the only one it has.
        let c = w.tick().expect("fenced");
        assert!(matches!(c, Command::Elect { leader: None, .. }), "{c:?}");
        let c = w.tick().expect("re-elected");
        assert!(
            matches!(
                c,
                Command::Elect {
                    leader: Some(1),
                    ..
                }
            ),
            "{c:?}"
        );
        assert_eq!(w.g().epoch, 3);
        let g = w.g();
        assert_eq!(
            w.elector.lease_for("g", &g, 1, 3),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn an_unchanged_or_unreported_incarnation_is_no_restart() {
        let mut w = three(false);
        assert_eq!(
            w.elector.record_from("g", 1, 7, 100, 0, w.now),
            None,
            "first heard"
        );
        assert_eq!(
            w.elector.record_from("g", 1, 7, 100, 0, w.now),
            None,
            "same process"
        );
        assert_eq!(
            w.elector.record_from("g", 1, 0, 100, 0, w.now),
            None,
            "not reported"
        );
        w.elector.became_leader(w.now);
        assert_eq!(
            w.elector.record_from("g", 1, 8, 100, 0, w.now),
            None,
            "a new Raft leader knows no earlier incarnation"
        );
    }

    #[test]
    fn a_new_raft_leader_waits_member_expiry_before_electing() {
        let mut w = three(false);
        // The Raft leadership moves at 10 s; this node forgets what it saw.
        w.at(10 * S);
        w.elector.became_leader(w.now);
        w.heartbeat(2, 100);
        w.heartbeat(3, 100);
        // Leader 1 was silent since 4 s: long dead, yet nothing happens during the wait.
        for ms in (10_000..=13_000).step_by(500) {
            w.at(Duration::from_millis(ms));
            w.heartbeat(2, 100);
            w.heartbeat(3, 100);
            assert_eq!(w.tick(), None, "election {ms} ms in, inside the wait");
        }
        w.at(Duration::from_millis(13_001));
        w.heartbeat(2, 100);
        w.heartbeat(3, 100);
        assert!(
            w.tick().is_some(),
            "after the wait, the silent leader is replaced"
        );
        // Not leading: never elects.
        w.elector.lost_leadership();
        w.at(60 * S);
        assert_eq!(w.elector.failover("g", &w.g(), w.now), None);
    }

    #[test]
    fn leases_go_to_the_leader_at_its_epoch_only() {
        let mut w = three(false);
        let g = w.g();
        assert_eq!(
            w.elector.lease_for("g", &g, 1, 1),
            Some(Duration::from_secs(2))
        );
        assert_eq!(w.elector.lease_for("g", &g, 1, 0), None, "stale epoch");
        assert_eq!(w.elector.lease_for("g", &g, 2, 1), None, "follower");
        assert!(w.elector.begin_election("g"));
        assert!(!w.elector.begin_election("g"), "one election at a time");
        assert_eq!(
            w.elector.lease_for("g", &g, 1, 1),
            None,
            "no lease while an election is being proposed"
        );
        w.at(60 * S);
        assert_eq!(
            w.elector.failover("g", &g, w.now),
            None,
            "not decided twice"
        );
        w.elector.end_election("g");
        assert_eq!(
            w.elector.lease_for("g", &g, 1, 1),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn switchover_moves_leadership_to_an_in_sync_member() {
        let mut w = three(false);
        w.heartbeat(2, 90);
        w.heartbeat(3, 100);
        let g = w.g();
        assert!(matches!(
            w.elector.request_switchover("g", &g, Some(1), w.now),
            Err(CommandError::Invalid(_))
        ));
        assert!(matches!(
            w.elector.request_switchover("g", &g, Some(9), w.now),
            Err(CommandError::UnknownMember { .. })
        ));
        w.alter(&[1, 2]).expect("3 behind");
        let g = w.g();
        assert!(matches!(
            w.elector.request_switchover("g", &g, Some(3), w.now),
            Err(CommandError::NotInSync { .. })
        ));
        let target = w
            .elector
            .request_switchover("g", &g, None, w.now)
            .expect("default target");
        assert_eq!(target, 2);
        assert_eq!(w.elector.pending_switchover("g", &g, w.now), Some(2));
        assert!(matches!(
            w.elector.complete_switchover("g", &g, 1, 3, w.now),
            Err(CommandError::NoSwitchoverPending { .. })
        ));
        let c = w
            .elector
            .complete_switchover("g", &g, 1, 2, w.now)
            .expect("complete");
        w.apply(c).expect("applied");
        let g = w.g();
        assert_eq!((g.leader, g.epoch), (Some(2), 2));
        assert_eq!(
            g.in_sync,
            BTreeSet::from([1, 2]),
            "the old leader stays in sync"
        );
        assert_eq!(w.elector.pending_switchover("g", &g, w.now), None);
        // A switchover nobody completes times out.
        w.elector
            .request_switchover("g", &g, Some(1), w.now)
            .expect("ask again");
        w.at(Duration::from_millis(4000 + 5001));
        assert_eq!(w.elector.pending_switchover("g", &g, w.now), None);
    }

    /// The chaos run's failure: every member of a group killed at once; the first in-sync
    /// member back has a log that ends below what another member dispatched. It must not be
    /// elected: the group waits for the member whose log reaches the confirm floor.
    #[test]
    fn a_leaderless_group_waits_for_a_member_whose_log_reaches_the_confirm_floor() {
        let mut w = three(false);
        // Leader 1 reported confirm 1000 (it may have dispatched that far); 2 holds 900 only
        // (the broken case: it should hold the confirm offset), 3 holds 1000.
        w.heartbeat_c(1, 1100, 1000);
        w.heartbeat_c(2, 900, 900);
        w.heartbeat_c(3, 1000, 1000);
        // Everyone is killed at 4 s; the leader expires, nobody is alive: no leader.
        w.at(Duration::from_millis(7100));
        let c = w.tick().expect("fenced");
        assert!(matches!(c, Command::Elect { leader: None, .. }));
        assert_eq!(w.g().in_sync, BTreeSet::from([1, 2, 3]));
        // 2 comes back first: alive, in sync, but short of the floor.
        w.at(Duration::from_millis(8000));
        w.heartbeat_c(2, 900, 900);
        assert_eq!(w.tick(), None, "the short member is not elected");
        let (floor, alive) = w
            .elector
            .short_of_floor("g", &w.g(), w.now)
            .expect("reported as waiting");
        assert_eq!((floor, alive), (1000, vec![(2, 900)]));
        // 3 comes back: its log reaches the floor; it leads, 2 stays in the set to catch up.
        w.at(Duration::from_millis(9000));
        w.heartbeat_c(2, 900, 900);
        w.heartbeat_c(3, 1000, 1000);
        w.tick().expect("election");
        let g = w.g();
        assert_eq!(g.leader, Some(3));
        assert_eq!(g.in_sync, BTreeSet::from([2, 3]));
        assert_eq!(w.elector.short_of_floor("g", &g, w.now), None);
    }

    /// In the sound case a follower holds the leader's confirm offset; a report of it older
    /// than the leader's last one delays the election by one heartbeat, no more.
    #[test]
    fn a_stale_report_below_the_floor_delays_the_election_until_the_next_heartbeat() {
        let mut w = three(false);
        w.alter(&[1, 2]).expect("3 out of sync");
        w.heartbeat_c(1, 500, 500);
        // Leader 1 is silent from 4 s; 2's next report still predates 1's last confirm.
        w.at(Duration::from_millis(7100));
        w.heartbeat_c(2, 450, 400);
        w.heartbeat_c(3, 10_000, 0);
        let c = w.tick().expect("the silent leader is fenced");
        assert!(matches!(c, Command::Elect { leader: None, .. }));
        assert_eq!(w.tick(), None, "2's last report is below the floor 500");
        w.at(Duration::from_millis(7400));
        w.heartbeat_c(2, 510, 500);
        w.tick().expect("2 reaches the floor now");
        let g = w.g();
        assert_eq!(g.leader, Some(2), "3 holds more but is out of sync");
        assert_eq!(g.in_sync, BTreeSet::from([2]));
    }

    #[test]
    fn the_floor_is_persisted_for_the_next_controller_leader() {
        let mut w = three(false);
        w.heartbeat_c(1, 2000, 1500);
        let c = w
            .elector
            .floor_to_persist("g", &w.g(), w.now)
            .expect("a grown floor is persisted");
        assert_eq!(
            c,
            Command::RaiseConfirmFloor {
                group: "g".into(),
                offset: 1500
            }
        );
        w.apply(c).expect("applied");
        assert_eq!(w.g().confirm_floor, 1500);
        w.heartbeat_c(1, 2100, 1600);
        assert_eq!(
            w.elector.floor_to_persist("g", &w.g(), w.now),
            None,
            "at most once a second"
        );
        w.at(4 * S + FLOOR_PERSIST_EVERY);
        assert!(w.elector.floor_to_persist("g", &w.g(), w.now).is_some());
        // The Raft leadership moves and every member is gone: the new leader knows the floor
        // from the state alone, and the short member that comes back first waits.
        w.at(20 * S);
        w.elector.became_leader(w.now);
        w.at(24 * S);
        w.heartbeat_c(2, 1400, 1400);
        let c = w.tick().expect("the silent leader is fenced");
        assert!(matches!(c, Command::Elect { leader: None, .. }));
        assert_eq!(w.tick(), None, "2 ends below the persisted floor");
        w.heartbeat_c(3, 1500, 1500);
        w.tick().expect("3 reaches it");
        assert_eq!(w.g().leader, Some(3));
        // A floor never goes down by Raft.
        w.apply(Command::RaiseConfirmFloor {
            group: "g".into(),
            offset: 10,
        })
        .expect("applied");
        assert_eq!(w.g().confirm_floor, 1500);
    }

    #[test]
    fn with_unclean_election_a_short_in_sync_member_is_elected_uncleanly_and_the_floor_resets() {
        let mut w = three(true);
        w.heartbeat_c(1, 1100, 1000);
        w.apply(Command::RaiseConfirmFloor {
            group: "g".into(),
            offset: 1000,
        })
        .expect("persisted");
        w.at(Duration::from_millis(7500));
        w.heartbeat_c(2, 900, 900);
        let c = w.tick().expect("election");
        assert!(matches!(
            c,
            Command::Elect {
                kind: ElectionKind::Unclean,
                ..
            }
        ));
        let g = w.g();
        assert_eq!(
            (g.leader, g.in_sync.clone()),
            (Some(2), BTreeSet::from([2]))
        );
        assert_eq!(
            g.confirm_floor, 0,
            "the history restarts from the new leader"
        );
        w.elector.forget_confirms("g");
        assert_eq!(w.elector.floor("g", &g), 0);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Advance(u64),
        Heartbeat(ReplicaId, u64, u64),
        Tick,
        Alter(Vec<ReplicaId>),
        StaleAlter(Vec<ReplicaId>),
        Switchover(Option<ReplicaId>),
        Complete,
        RaftLeaderChange,
        PersistFloor,
    }

    fn event() -> impl Strategy<Value = Event> {
        let r = 1u64..=4;
        prop_oneof![
            3 => (1u64..2000).prop_map(Event::Advance),
            4 => (r.clone(), 0u64..1000, 0u64..1000).prop_map(|(r, l, c)| Event::Heartbeat(r, l, c)),
            3 => Just(Event::Tick),
            2 => proptest::collection::vec(r.clone(), 0..4).prop_map(Event::Alter),
            1 => proptest::collection::vec(r.clone(), 0..4).prop_map(Event::StaleAlter),
            1 => proptest::option::of(r).prop_map(Event::Switchover),
            1 => Just(Event::Complete),
            1 => Just(Event::RaftLeaderChange),
            1 => Just(Event::PersistFloor),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever happens: the epoch never decreases, the leader is always in sync, and a
        /// clean election never picks a member outside the in-sync set.
        #[test]
        fn invariants_hold_over_random_events(unclean: bool, events in proptest::collection::vec(event(), 1..120)) {
            let mut w = World::new(unclean);
            let mut elapsed = 0u64;
            for e in events {
                let before = w.g();
                match e {
                    Event::Advance(ms) => { elapsed += ms; w.at(Duration::from_millis(elapsed)); }
                    Event::Heartbeat(r, l, c) => { w.heartbeat_c(r, l, c); }
                    Event::Tick => {
                        let floor = w.elector.floor("g", &before);
                        if let Some(Command::Elect { leader: Some(l), kind, .. }) = w.tick() {
                            if kind == ElectionKind::Clean {
                                prop_assert!(before.in_sync.contains(&l), "clean election of {} outside {:?}", l, before.in_sync);
                                let end = w.elector.seen("g", l).map_or(0, |s| s.log_end);
                                prop_assert!(end >= floor, "clean election of {} whose log ends at {} below the floor {}", l, end, floor);
                            }
                            prop_assert!(kind != ElectionKind::Unclean || unclean);
                        }
                    }
                    Event::Alter(set) => {
                        if before.leader.is_some() {
                            let _ = w.alter(&set);
                        }
                    }
                    Event::StaleAlter(set) => {
                        if let Some(l) = before.leader {
                            let r = w.apply(Command::AlterInSync {
                                group: "g".into(),
                                epoch: before.epoch.wrapping_sub(1),
                                leader: l,
                                in_sync: set.into_iter().collect(),
                            });
                            prop_assert!(r.is_err(), "a stale epoch is refused");
                        }
                    }
                    Event::Switchover(t) => {
                        let _ = w.elector.request_switchover("g", &before, t, w.now);
                    }
                    Event::Complete => {
                        if let Some(t) = w.elector.pending_switchover("g", &before, w.now) {
                            let c = w.elector.complete_switchover("g", &before, before.epoch, t, w.now);
                            let c = c.expect("pending switchover completes");
                            w.apply(c).expect("switchover applies");
                            prop_assert!(before.in_sync.contains(&t));
                        }
                    }
                    Event::RaftLeaderChange => w.elector.became_leader(w.now),
                    Event::PersistFloor => {
                        if let Some(c) = w.elector.floor_to_persist("g", &before, w.now) {
                            w.apply(c).expect("a known group's floor is persisted");
                        }
                    }
                }
                let after = w.g();
                if !unclean {
                    prop_assert!(after.confirm_floor >= before.confirm_floor, "the persisted floor went down");
                }
                prop_assert!(after.epoch >= before.epoch, "epoch went back {} -> {}", before.epoch, after.epoch);
                if after.leader != before.leader {
                    prop_assert!(after.epoch > before.epoch, "leader changed without a new epoch");
                }
                if let Some(l) = after.leader {
                    prop_assert!(after.in_sync.contains(&l), "leader {} not in {:?}", l, after.in_sync);
                }
            }
        }
    }
}
