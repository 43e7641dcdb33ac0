//! Replication inside a broker group: one leader and its followers, chosen by the controller
//! (the Raft group in the name servers, `ferromq-controller`), copying the leader's commit log
//! record for record.
//!
//! ## Data path
//! Every follower holds one [`fetch`] stream open to the leader. It starts by telling the leader
//! its epoch history's end; the leader answers with its own epoch history, the follower cuts its
//! log where the two diverge (`ferromq_store::epochs::divergence`, KIP-101/279) and then receives
//! whole records in batches that never span two epochs, writes them at the same offsets
//! (`Store::append_raw`) and reports how far it holds the log. The leader's **confirm offset** is
//! the lowest offset every in-sync member holds; it is the only thing any member dispatches up to
//! (`Store::set_dispatch_limit`), so no consumer ever sees a record a failover could take back.
//!
//! ## Acknowledgement
//! - `async`: a send is acknowledged once the leader wrote it (a leader's crash with its disk lost
//!   can lose what the followers had not fetched: the loss window is reported by the benchmarks).
//! - `sync`: a send is acknowledged once every in-sync member holds it (on disk, with
//!   `--flush sync`), i.e. once the confirm offset passes it.
//! - Fewer in-sync members than `--min-in-sync` refuses sends (HA_NOT_AVAILABLE), as does a leader
//!   whose controller lease ran out: a leader cut off from the controller stops acknowledging
//!   before the controller may elect another one (the lease is counted from when the leader sent
//!   the heartbeat that earned it, the controller's expiry from when it received it, and the
//!   expiry is longer), so two leaders never both acknowledge.
//!
//! ## In-sync set
//! The controller holds it; the leader changes it through the controller only. A follower that
//! has not held the whole log for `replica-lag` leaves it; one that catches up rejoins.
//!
//! Safety rests on one invariant: **every member of the controller's in-sync set holds the log
//! up to every confirm offset any member has used** (and so dispatched, and so refuses to cut:
//! `Store::truncate`). The controller elects only from that set, so a new leader's log always
//! reaches what any member dispatched, and every member can follow it. The leader keeps the
//! invariant by computing the confirm offset over a local set that always contains the
//! controller's ([`progress`] has the rules): a member that catches up joins the local set
//! before the controller is asked, and only if it holds the current confirm offset; one that
//! lags leaves the local set only once the controller committed the smaller set; heartbeat
//! answers (possibly read before a change this leader made) never remove members, and add only
//! members that hold the confirm offset. Within an
//! epoch only its leader changes the controller's set, and a new epoch's leader starts from the
//! set the controller elected it with, whose members all held the old confirm offset.
//!
//! A second, independent guard sits in the controller: members report their confirm offset in
//! every heartbeat, the controller keeps the highest (in memory and, often, through Raft) and
//! never elects a member whose reported log end is below it (`ferromq_controller::rules`). Were
//! the invariant ever broken, a leaderless group would wait for the member that holds the
//! confirmed log rather than elect one that does not.
//!
//! A member whose log was dispatched beyond where the leader's history ends cannot follow it
//! (the cut would take back what consumers may have read): it logs an error saying it must be
//! rebuilt, shows `ferromq_replication_rebuild_needed 1`, reports a confirm offset of 0 (it no
//! longer vouches for its log) and keeps retrying.

pub mod auth;
pub mod fetch;
pub mod follower;
pub mod progress;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_store::epochs::{EpochHistory, EpochStart};
use ferromq_store::{FlushMode, Store};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use progress::Progress;

/// A follower that caught up this recently may rejoin the in-sync set (at most `replica-lag`).
pub const REJOIN_WITHIN: Duration = Duration::from_secs(1);

/// When a send is acknowledged in a replicated group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Once the leader wrote it.
    Async,
    /// Once every in-sync member holds it.
    Sync,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "async" => Ok(Mode::Async),
            "sync" => Ok(Mode::Sync),
            other => Err(format!("{other:?} is not async or sync")),
        }
    }
}

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub group: String,
    pub replica_id: u32,
    pub mode: Mode,
    /// Sends are refused while fewer members are in sync.
    pub min_in_sync: usize,
    /// A follower that has not held the whole log for this long leaves the in-sync set.
    pub replica_lag: Duration,
    /// How long a `sync` send waits for the in-sync members before it is refused.
    pub ack_timeout: Duration,
}

/// What this member is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Following `leader` (replica id and replication address) in `epoch`, when one is known.
    Follower {
        epoch: u64,
        leader: Option<(u32, String)>,
    },
    /// Leading `epoch`, whose first record is at `start`.
    Leader { epoch: u64, start: u64 },
}

impl Role {
    pub fn epoch(&self) -> u64 {
        match self {
            Role::Follower { epoch, .. } | Role::Leader { epoch, .. } => *epoch,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

/// Why this member does not take a write now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("broker group {group} member {replica} is not the leader{}", leader.as_ref().map(|l| format!(" (replica {} at {} leads)", l.0, l.1)).unwrap_or_default())]
    NotLeader {
        group: String,
        replica: u32,
        leader: Option<(u32, String)>,
    },
    #[error("broker group {group}: the leader's controller lease ran out; it stops acknowledging until the controller confirms it again")]
    LeaseExpired { group: String },
    #[error("broker group {group} has {in_sync} in-sync member(s), fewer than min-in-sync {min}")]
    TooFewInSync {
        group: String,
        in_sync: usize,
        min: usize,
    },
    #[error("broker group {group}: not every in-sync member confirmed the write within {waited:?}; it may still be delivered")]
    ReplicationTimeout { group: String, waited: Duration },
}

/// One member of a replicated group.
pub struct Replica {
    pub cfg: ReplicaConfig,
    pub store: Arc<Store>,
    epochs: Mutex<EpochHistory>,
    role: watch::Sender<Role>,
    /// The log grew (the leader's streams wake on it).
    pub(crate) grown: Arc<Notify>,
    /// Until when the controller's lease lets this leader acknowledge.
    lease: Mutex<Option<Instant>>,
    /// Leadership is being handed to this member (a switchover): no more writes here.
    handing_over: Mutex<Option<u32>>,
    pub(crate) progress: Progress,
    /// Set when the leader's history ends below what this member dispatched: (where the cut
    /// would be, what was dispatched). It cannot follow until rebuilt.
    rebuild: Mutex<Option<(u64, u64)>>,
    /// Batches with records this member wrote as a follower (with the log end: the average
    /// batch size, which tells how well the leader's shipping batches under load).
    pub(crate) batches_written: std::sync::atomic::AtomicU64,
}

impl Replica {
    /// Opens the replica's state over its store (whose `replicated` flag must be set): the epoch
    /// history in `dir`, and a follower role until the controller says otherwise.
    pub fn open(
        store: Arc<Store>,
        dir: &std::path::Path,
        cfg: ReplicaConfig,
    ) -> Result<Arc<Replica>, ferromq_store::StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ferromq_store::StoreError::io(format!("create {}", dir.display()), e))?;
        let epochs = EpochHistory::open(dir)?;
        let epoch = epochs.last().map_or(0, |e| e.epoch);
        let grown = Arc::new(Notify::new());
        let confirm = store.dispatch_limit().min(store.log_end());
        Ok(Arc::new_cyclic(|me: &std::sync::Weak<Replica>| {
            let (g, me) = (grown.clone(), me.clone());
            store.on_append(Arc::new(move |_| {
                g.notify_waiters();
                if let Some(r) = me.upgrade() {
                    r.recompute_confirm();
                }
            }));
            Replica {
                progress: Progress::new(
                    cfg.replica_id,
                    confirm,
                    REJOIN_WITHIN.min(cfg.replica_lag),
                ),
                cfg,
                store,
                epochs: Mutex::new(epochs),
                role: watch::channel(Role::Follower {
                    epoch,
                    leader: None,
                })
                .0,
                grown,
                lease: Mutex::new(None),
                handing_over: Mutex::new(None),
                rebuild: Mutex::new(None),
                batches_written: std::sync::atomic::AtomicU64::new(0),
            }
        }))
        .inspect(|r| {
            r.store
                .set_append_gate(Arc::new(WeakGate(Arc::downgrade(r))));
        })
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    pub fn history(&self) -> Vec<EpochStart> {
        self.epochs.lock().entries().to_vec()
    }

    pub(crate) fn epochs(&self) -> parking_lot::MutexGuard<'_, EpochHistory> {
        self.epochs.lock()
    }

    /// How far this member holds the log, as it reports it: on disk with `--flush sync`, else
    /// written (which survives a crash of the process, not of the machine).
    pub fn held(&self) -> u64 {
        match self.store.config().flush {
            FlushMode::Sync => self.store.flushed_end(),
            FlushMode::Async => self.store.log_end(),
        }
    }

    /// Takes the lead in `epoch` (the controller elected this member): the epoch starts at the
    /// end of the log, every in-sync member must confirm from there.
    pub fn become_leader(
        &self,
        epoch: u64,
        in_sync: BTreeSet<u32>,
    ) -> Result<(), ferromq_store::StoreError> {
        let start = self.store.log_end();
        self.epochs.lock().begin(epoch, start)?;
        self.progress
            .lead(epoch, in_sync, self.store.dispatch_limit().min(start));
        self.recompute_confirm();
        info!(group = %self.cfg.group, replica = self.cfg.replica_id, epoch, start, "leading the broker group");
        self.role.send_replace(Role::Leader { epoch, start });
        Ok(())
    }

    /// Follows `leader` in `epoch` (or waits for one to be known).
    pub fn become_follower(&self, epoch: u64, leader: Option<(u32, String)>) {
        let next = Role::Follower { epoch, leader };
        if *self.role.borrow() != next {
            if self.role.borrow().is_leader() {
                warn!(group = %self.cfg.group, replica = self.cfg.replica_id, epoch, "no longer the leader");
            }
            *self.lease.lock() = None;
            *self.handing_over.lock() = None;
            self.role.send_replace(next);
            // Writers waiting for a confirmation this member can no longer give fail now.
            self.progress.wake_blocked();
        }
    }

    /// The controller's lease, counted from when the heartbeat that earned it was sent.
    pub fn extend_lease(&self, sent: Instant, lease: Duration) {
        let until = sent + lease;
        let mut l = self.lease.lock();
        if l.is_none_or(|u| u < until) {
            *l = Some(until);
        }
    }

    /// Stops taking writes because leadership moves to `to` (a switchover); the controller's
    /// next answer makes this member a follower.
    pub fn hand_over(&self, to: u32) {
        *self.handing_over.lock() = Some(to);
    }

    /// Whether a switchover to another member is under way.
    pub fn handing_over(&self) -> Option<u32> {
        *self.handing_over.lock()
    }

    /// A set the controller committed in this leader's epoch, from a heartbeat answer: none
    /// leaves the set the confirm offset waits for (only a change this leader proposed and saw
    /// committed removes members, [`Replica::plan_in_sync_change`]); members it lacks join if
    /// they hold the confirm offset.
    pub fn note_committed_in_sync(&self, in_sync: &BTreeSet<u32>) {
        self.progress.note_committed(in_sync);
        self.recompute_confirm();
    }

    /// The in-sync change to propose to the controller now, if any: followers that have not
    /// held the whole log for `replica-lag` leave, followers that caught up within
    /// [`REJOIN_WITHIN`] and hold the confirm offset join (counted by the confirm offset from
    /// then on, before the controller has them). `committed` is the set of the controller's
    /// last answer. Hand the outcome to [`Replica::in_sync_altered`].
    pub fn plan_in_sync_change(&self, committed: &BTreeSet<u32>) -> Option<progress::Change> {
        self.progress.plan_change(
            self.cfg.replica_lag,
            REJOIN_WITHIN.min(self.cfg.replica_lag),
            committed,
        )
    }

    /// The controller's answer to a planned change: `Some(set)` when it committed `set` in this
    /// leader's epoch.
    pub fn in_sync_altered(&self, ticket: u64, committed: Option<&BTreeSet<u32>>) {
        self.progress.altered(ticket, committed);
        self.recompute_confirm();
    }

    /// Whether this member may take a write now (and why not).
    pub fn check_writable(&self) -> Result<(), Refusal> {
        let role = self.role();
        if !role.is_leader() {
            let leader = match role {
                Role::Follower { leader, .. } => leader,
                Role::Leader { .. } => None,
            };
            return Err(Refusal::NotLeader {
                group: self.cfg.group.clone(),
                replica: self.cfg.replica_id,
                leader,
            });
        }
        if let Some(to) = *self.handing_over.lock() {
            return Err(Refusal::NotLeader {
                group: self.cfg.group.clone(),
                replica: self.cfg.replica_id,
                leader: Some((to, "(switching over)".into())),
            });
        }
        if self.lease.lock().is_none_or(|u| Instant::now() >= u) {
            return Err(Refusal::LeaseExpired {
                group: self.cfg.group.clone(),
            });
        }
        let in_sync = self.progress.in_sync_count();
        if in_sync < self.cfg.min_in_sync {
            return Err(Refusal::TooFewInSync {
                group: self.cfg.group.clone(),
                in_sync,
                min: self.cfg.min_in_sync,
            });
        }
        Ok(())
    }

    /// Waits (sync mode) until every in-sync member holds the log up to `end`.
    pub async fn wait_confirmed(&self, end: u64, timeout: Duration) -> Result<(), Refusal> {
        if self.cfg.mode == Mode::Async {
            return Ok(());
        }
        if self.progress.wait_confirmed(end, timeout).await {
            Ok(())
        } else {
            Err(Refusal::ReplicationTimeout {
                group: self.cfg.group.clone(),
                waited: timeout,
            })
        }
    }

    /// [`ferromq_store::AppendGate::confirmed`] for a task: waits (sync mode) until the
    /// confirm offset passes `end` while this member still leads `term`, the term the record
    /// was admitted in. [`StoreError::NotReplicated`](ferromq_store::StoreError) when the term
    /// ends first (a deposed leader follows the next one, whose confirm offset soon passes
    /// `end` in a log that may lack this record) or after `ack-timeout`. No thread waits: the
    /// task wakes on a move of the confirm offset or of the role.
    pub async fn confirmed_in_term(
        &self,
        term: u64,
        end: u64,
    ) -> Result<(), ferromq_store::StoreError> {
        if self.cfg.mode == Mode::Async {
            return Ok(());
        }
        // With `--flush sync` this member's own part is its flush, which the caller has just
        // awaited and which moves no follower report: count it now.
        self.recompute_confirm();
        let deadline = tokio::time::Instant::now() + self.cfg.ack_timeout;
        // Wakes only once the offset reaches `end` (not at every move on the way).
        let confirmed = self.progress.reached(end);
        tokio::pin!(confirmed);
        let mut role = self.role.subscribe();
        let mut expired = false;
        loop {
            // Marked seen before the checks, so a change after them wakes the wait below.
            role.borrow_and_update();
            // The offset first, then the role, as in `confirmed`: a member follows (and learns
            // another leader's offsets) only after it stopped leading.
            let reached = self.progress.confirm() >= end;
            let now = self.role();
            let in_term = now.is_leader() && now.epoch() == term;
            if reached && in_term {
                return Ok(());
            }
            if !in_term {
                return Err(self.term_ended());
            }
            if expired {
                return Err(self.not_confirmed_in_time());
            }
            tokio::select! {
                _ = &mut confirmed => {}
                _ = role.changed() => {}
                _ = tokio::time::sleep_until(deadline) => expired = true,
            }
        }
    }

    fn term_ended(&self) -> ferromq_store::StoreError {
        ferromq_store::StoreError::NotReplicated(format!(
            "broker group {}: leadership moved before the in-sync members confirmed the write; it may still be delivered",
            self.cfg.group
        ))
    }

    fn not_confirmed_in_time(&self) -> ferromq_store::StoreError {
        ferromq_store::StoreError::NotReplicated(
            Refusal::ReplicationTimeout {
                group: self.cfg.group.clone(),
                waited: self.cfg.ack_timeout,
            }
            .to_string(),
        )
    }

    /// Recomputes the leader's confirm offset after the log, a follower or the in-sync set
    /// moved, and lets dispatch follow it.
    pub fn recompute_confirm(&self) {
        if !self.role.borrow().is_leader() {
            return;
        }
        if let Some(c) = self.progress.recompute(self.held()) {
            self.store.set_dispatch_limit(c);
        }
    }

    /// The confirm offset as this member knows it.
    pub fn confirm(&self) -> u64 {
        self.progress.confirm()
    }

    /// The confirm offset this member reports to the controller: 0 while it needs a rebuild
    /// (its log no longer matches the group's history, so its offsets vouch for nothing).
    pub fn reported_confirm(&self) -> u64 {
        if self.rebuild.lock().is_some() {
            0
        } else {
            self.confirm()
        }
    }

    /// Records that following the leader needs a cut at `cut`, below what this member
    /// dispatched (`dispatched`): it must be rebuilt. `None` clears it (a later leader's history
    /// reaches far enough).
    pub fn set_rebuild_needed(&self, needed: Option<(u64, u64)>) {
        *self.rebuild.lock() = needed;
    }

    /// (cut, dispatched) while this member needs a rebuild.
    pub fn rebuild_needed(&self) -> Option<(u64, u64)> {
        *self.rebuild.lock()
    }
}

/// The gate the store holds: a weak reference, so the store (which the replica holds) does not
/// keep the replica alive.
struct WeakGate(std::sync::Weak<Replica>);

impl ferromq_store::AppendGate for WeakGate {
    fn admit(&self) -> Result<u64, ferromq_store::StoreError> {
        match self.0.upgrade() {
            Some(r) => ferromq_store::AppendGate::admit(&*r),
            None => Err(ferromq_store::StoreError::NotWritable(
                "this replica is shutting down".into(),
            )),
        }
    }

    fn confirmed(&self, term: u64, end: u64) -> Result<(), ferromq_store::StoreError> {
        match self.0.upgrade() {
            Some(r) => ferromq_store::AppendGate::confirmed(&*r, term, end),
            None => Err(shut_down()),
        }
    }

    fn confirmation(&self, term: u64, end: u64) -> ferromq_store::Confirmation<'_> {
        let replica = self.0.upgrade();
        Box::pin(async move {
            match replica {
                Some(r) => r.confirmed_in_term(term, end).await,
                None => Err(shut_down()),
            }
        })
    }
}

fn shut_down() -> ferromq_store::StoreError {
    ferromq_store::StoreError::NotReplicated(
        "this replica shut down before the group confirmed the write".into(),
    )
}

/// The store asks the replica before every append and waits on it after: only a leader with
/// its lease and enough in-sync members appends, and in `sync` mode a send is done once every
/// in-sync member holds it, in the term it was written in.
impl ferromq_store::AppendGate for Replica {
    fn admit(&self) -> Result<u64, ferromq_store::StoreError> {
        self.check_writable()
            .map_err(|r| ferromq_store::StoreError::NotWritable(r.to_string()))?;
        Ok(self.role().epoch())
    }

    fn confirmation(&self, term: u64, end: u64) -> ferromq_store::Confirmation<'_> {
        Box::pin(self.confirmed_in_term(term, end))
    }

    fn confirmed(&self, term: u64, end: u64) -> Result<(), ferromq_store::StoreError> {
        if self.cfg.mode == Mode::Async {
            return Ok(());
        }
        // The store flushed before it asks (`--flush sync`): count this member's flush now.
        self.recompute_confirm();
        let deadline = Instant::now() + self.cfg.ack_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reached = self
                .progress
                .wait_confirmed_blocking(end, left.min(Duration::from_millis(200)));
            // The confirm offset counts for this write only while the term it was written in
            // lasts. A deposed leader follows the next one at once, cuts the tail it holds
            // beyond their shared history (this write, perhaps) and learns that leader's
            // confirm offset, which soon passes `end` in a log without this record (checked
            // after reading the offset: a member follows only once it stopped leading).
            let role = self.role();
            let in_term = role.is_leader() && role.epoch() == term;
            if reached && in_term {
                return Ok(());
            }
            if !in_term {
                return Err(self.term_ended());
            }
            if left.is_zero() {
                return Err(self.not_confirmed_in_time());
            }
        }
    }
}
