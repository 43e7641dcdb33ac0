//! The leader's view of its followers: how far each holds the log, when each last held all of
//! it, the in-sync set the confirm offset waits for, and the confirm offset that follows from
//! them.
//!
//! ## The in-sync set here and at the controller
//! The controller may elect any member of the in-sync set IT committed, so the confirm offset
//! (what every member may dispatch, and what `Store::truncate` then refuses to cut) must never
//! pass what any of those members holds. The leader therefore computes the confirm offset over a
//! local set that always contains the controller's ([`Progress::in_sync`]):
//! - it grows *before* the controller is asked to add a member, and only with a member that
//!   holds at least the current confirm offset (checked under the same lock that moves the
//!   offset, so the offset cannot pass it in between). Under steady load a follower is always a
//!   batch behind the leader, and alone in the set the leader's confirm offset is its own log
//!   end; so a follower that caught up (KIP-16's rule, below) already holds the confirm offset
//!   back while it waits to join: at its next report it holds at least what the leader had at
//!   its previous one, which bounds the confirm offset of then, and it joins;
//! - it shrinks only when the controller answers that it committed the smaller set
//!   ([`Progress::altered`]), never on a heartbeat answer (which may have been read before a
//!   change this leader made: taking it would drop a member the controller just added); such an
//!   answer may also name a member a committed shrink removed since, which is taken back only if
//!   it holds the confirm offset (else the next proposal would put it back below the offset);
//! - one change is on its way to the controller at a time, so a committed answer is exactly the
//!   set that was proposed.
//!
//! Within an epoch only its leader changes the controller's set, so these rules keep the local
//! set a superset of every set the controller committed in the epoch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
struct Follower {
    /// How far it holds the log (its last report).
    held: u64,
    /// When it last held the whole log: the time of a report that reached the leader's end, or
    /// the time of the report before one that reached the end the leader had then (a follower
    /// fetching under steady load is always a batch behind; KIP-16's rule). None: never in
    /// this term.
    caught_up_at: Option<Instant>,
    /// The previous report's time and the leader's log end then.
    last_report: Instant,
    end_at_last_report: u64,
}

#[derive(Debug)]
struct State {
    /// Members the confirm offset waits for; always contains the controller's committed set.
    in_sync: BTreeSet<u32>,
    followers: HashMap<u32, Follower>,
    /// When this member took the lead (followers never heard from count from here).
    since: Instant,
    /// The epoch it leads or last led.
    epoch: Option<u64>,
    /// The in-sync change on its way to the controller (its ticket), if any.
    altering: Option<u64>,
    /// The last ticket handed out.
    tickets: u64,
}

/// Follower progress and the confirm offset.
#[derive(Debug)]
pub struct Progress {
    me: u32,
    /// A follower caught up this recently may join the set (and holds the confirm offset back
    /// until it does).
    rejoin_within: Duration,
    state: Mutex<State>,
    confirmed: watch::Sender<u64>,
    /// Wakes writers blocked in [`Progress::wait_confirmed_blocking`] when the confirm offset
    /// moves (they run on the store's threads, outside the runtime).
    moved: (Mutex<()>, parking_lot::Condvar),
    /// Tasks waiting in [`Progress::reached`].
    waiters: Mutex<Waiters>,
}

/// Tasks waiting for the confirm offset to reach an offset, ordered by that offset, so a move
/// wakes only the tasks it reached. (On a watch channel every move woke every waiter: under
/// load dozens of sends wait on a leader, the offset moves at each follower report, and most
/// wake-ups found their record not confirmed yet.)
#[derive(Debug, Default)]
struct Waiters {
    /// Tells apart waiters for the same offset.
    next: u64,
    by_end: BTreeMap<(u64, u64), Waker>,
}

/// Completes once the confirm offset reaches `end` ([`Progress::reached`]).
pub struct Reached<'a> {
    progress: &'a Progress,
    end: u64,
    key: Option<(u64, u64)>,
}

impl Future for Reached<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let p = self.progress;
        if p.confirm() >= self.end {
            return Poll::Ready(());
        }
        {
            let mut w = p.waiters.lock();
            let end = self.end;
            let key = *self.key.get_or_insert_with(|| {
                w.next += 1;
                (end, w.next)
            });
            w.by_end.insert(key, cx.waker().clone());
        }
        // Checked again after registering: a move in between either shows here or finds the
        // waker in the list.
        if p.confirm() >= self.end {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Reached<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.progress.waiters.lock().by_end.remove(&key);
        }
    }
}

impl Progress {
    pub fn new(me: u32, confirm: u64, rejoin_within: Duration) -> Progress {
        Progress {
            me,
            rejoin_within,
            state: Mutex::new(State {
                in_sync: BTreeSet::from([me]),
                followers: HashMap::new(),
                since: Instant::now(),
                epoch: None,
                altering: None,
                tickets: 0,
            }),
            confirmed: watch::channel(confirm).0,
            moved: (Mutex::new(()), parking_lot::Condvar::new()),
            waiters: Mutex::new(Waiters::default()),
        }
    }

    /// Starts a term as leader of `epoch` with the set the controller named: no follower has
    /// reported yet; the confirm offset never goes back below `start_confirm`. Leading the
    /// same epoch again (after stepping down without a new election) keeps the local set as it
    /// was: the controller's answer may predate a change this leader made.
    pub fn lead(&self, epoch: u64, in_sync: BTreeSet<u32>, start_confirm: u64) {
        let mut s = self.state.lock();
        s.followers.clear();
        s.since = Instant::now();
        if s.epoch != Some(epoch) {
            s.in_sync = in_sync;
        }
        s.epoch = Some(epoch);
        s.in_sync.insert(self.me);
        s.altering = None;
        drop(s);
        self.confirmed.send_if_modified(|c| {
            if start_confirm > *c {
                *c = start_confirm;
                true
            } else {
                false
            }
        });
        self.wake_blocked();
    }

    /// A set the controller committed in this leader's epoch (a heartbeat answer): none leaves
    /// the local set (see the module docs). A member the local set lacks joins only if it holds
    /// the confirm offset: the answer may predate a smaller set this leader had committed since,
    /// and a member taken back in must not be proposed again below the confirm offset.
    pub fn note_committed(&self, in_sync: &BTreeSet<u32>) {
        let mut s = self.state.lock();
        let confirm = self.confirm();
        let holding: Vec<u32> = in_sync
            .iter()
            .copied()
            .filter(|id| *id == self.me || s.followers.get(id).is_some_and(|f| f.held >= confirm))
            .collect();
        s.in_sync.extend(holding);
    }

    /// The set the confirm offset waits for.
    pub fn in_sync(&self) -> BTreeSet<u32> {
        self.state.lock().in_sync.clone()
    }

    pub fn in_sync_count(&self) -> usize {
        self.state.lock().in_sync.len()
    }

    /// A follower's report: it holds the log up to `held`; the leader's log ends at `end`.
    pub fn report(&self, follower: u32, held: u64, end: u64) {
        let now = Instant::now();
        let mut s = self.state.lock();
        let f = s.followers.entry(follower).or_insert(Follower {
            held,
            caught_up_at: None,
            last_report: now,
            end_at_last_report: u64::MAX,
        });
        f.held = held;
        if held >= end {
            f.caught_up_at = Some(now);
        } else if held >= f.end_at_last_report && f.caught_up_at.is_none_or(|t| f.last_report > t) {
            f.caught_up_at = Some(f.last_report);
        }
        f.last_report = now;
        f.end_at_last_report = end;
        let recent = f
            .caught_up_at
            .is_some_and(|t| now.saturating_duration_since(t) <= self.rejoin_within);
        let joins = recent && !s.in_sync.contains(&follower) && held >= self.confirm();
        if joins {
            // The controller is asked at the next heartbeat answer (plan_change: the local set
            // is then larger than the committed one).
            s.in_sync.insert(follower);
        }
    }

    /// How far each follower holds the log (for views).
    pub fn held_by(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self
            .state
            .lock()
            .followers
            .iter()
            .map(|(id, f)| (*id, f.held))
            .collect();
        v.sort_unstable();
        v
    }

    /// Recomputes the confirm offset from the leader's own `held`: the lowest offset every
    /// in-sync member, and every follower waiting to join, holds. Returns the new value when
    /// it moved (it only ever grows). The offset moves under the state lock, so a member
    /// admitted to the set at the same time is counted in it or held at least the moved offset.
    pub fn recompute(&self, leader_held: u64) -> Option<u64> {
        let mut moved = None;
        {
            let now = Instant::now();
            let s = self.state.lock();
            let joining = caught_up(&s, self.rejoin_within, now);
            let c = s
                .in_sync
                .iter()
                .chain(joining.iter())
                .filter(|id| **id != self.me)
                .map(|id| s.followers.get(id).map_or(0, |f| f.held))
                .fold(leader_held, u64::min);
            self.confirmed.send_if_modified(|cur| {
                if c > *cur {
                    *cur = c;
                    moved = Some(c);
                    true
                } else {
                    false
                }
            });
        }
        if moved.is_some() {
            self.wake_blocked();
        }
        moved
    }

    pub fn confirm(&self) -> u64 {
        *self.confirmed.borrow()
    }

    /// Follows the confirm offset (async waiters that also watch something else).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.confirmed.subscribe()
    }

    /// After the confirm offset moved: wakes the blocked writers and the tasks it reached.
    pub(crate) fn wake_blocked(&self) {
        {
            let _g = self.moved.0.lock();
            self.moved.1.notify_all();
        }
        let confirm = self.confirm();
        let reached = {
            let mut w = self.waiters.lock();
            let later = w.by_end.split_off(&(confirm.saturating_add(1), 0));
            std::mem::replace(&mut w.by_end, later)
        };
        for waker in reached.into_values() {
            waker.wake();
        }
    }

    /// Completes once the confirm offset reaches `end`. Only a move that reaches `end` wakes
    /// the task (see [`Waiters`]).
    pub fn reached(&self, end: u64) -> Reached<'_> {
        Reached {
            progress: self,
            end,
            key: None,
        }
    }

    /// [`Progress::wait_confirmed`] for a thread outside the runtime (the store's writers).
    pub fn wait_confirmed_blocking(&self, end: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.moved.0.lock();
        loop {
            if self.confirm() >= end {
                return true;
            }
            if self.moved.1.wait_until(&mut g, deadline).timed_out() {
                return self.confirm() >= end;
            }
        }
    }

    /// A follower learns the confirm offset from its leader.
    pub fn note_confirm(&self, c: u64) {
        self.confirmed.send_if_modified(|cur| {
            if c > *cur {
                *cur = c;
                true
            } else {
                false
            }
        });
        self.wake_blocked();
    }

    /// Waits until the confirm offset reaches `end`; false after `timeout`.
    pub async fn wait_confirmed(&self, end: u64, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.reached(end))
            .await
            .is_ok()
    }

    /// In-sync followers that have not held the whole log for `lag` (to drop from the set).
    pub fn lagging(&self, lag: Duration) -> Vec<u32> {
        let s = self.state.lock();
        lagging(&s, self.me, lag, Instant::now())
    }

    /// Followers outside the in-sync set that held the whole log within `lag` (candidates to
    /// add; [`Progress::plan_change`] also checks they hold the confirm offset).
    pub fn caught_up(&self, lag: Duration) -> Vec<u32> {
        let s = self.state.lock();
        caught_up(&s, lag, Instant::now())
    }

    /// The in-sync change to propose to the controller now, if any, given the set it last
    /// answered with (`committed`): lagging members leave, caught-up ones that hold at least
    /// the confirm offset join, and a set the controller does not hold yet is proposed again.
    /// Members joining are added to the local set here, before the proposal; the ones leaving
    /// stay until [`Progress::altered`] reports the commit. Nothing while a change is on its
    /// way.
    pub fn plan_change(
        &self,
        lag: Duration,
        rejoin_within: Duration,
        committed: &BTreeSet<u32>,
    ) -> Option<Change> {
        let now = Instant::now();
        let mut s = self.state.lock();
        if s.altering.is_some() {
            return None;
        }
        let confirm = self.confirm();
        let leaving = lagging(&s, self.me, lag, now);
        let joining: Vec<u32> = caught_up(&s, rejoin_within, now)
            .into_iter()
            .filter(|id| s.followers.get(id).is_some_and(|f| f.held >= confirm))
            .collect();
        s.in_sync.extend(joining);
        let mut next = s.in_sync.clone();
        for l in &leaving {
            next.remove(l);
        }
        next.insert(self.me);
        let mut with_me = committed.clone();
        with_me.insert(self.me);
        // Proposed even when the answer already shows `next`: the answer may predate a change
        // of ours, and only a commit this leader saw lets the local set shrink.
        if next == with_me && next == s.in_sync {
            return None;
        }
        let joining: Vec<u32> = next.difference(&with_me).copied().collect();
        s.tickets += 1;
        let ticket = s.tickets;
        s.altering = Some(ticket);
        Some(Change {
            ticket,
            next,
            leaving,
            joining,
        })
    }

    /// The controller answered the change proposed by [`Progress::plan_change`]: `Some(set)`
    /// when it committed `set` in this leader's epoch (the local set becomes it), `None` when
    /// the change failed or the epoch moved (the local set stays: it still contains every set
    /// the controller may hold). An answer to a change of an earlier term is ignored.
    pub fn altered(&self, ticket: u64, committed: Option<&BTreeSet<u32>>) {
        let mut s = self.state.lock();
        if s.altering != Some(ticket) {
            return;
        }
        s.altering = None;
        if let Some(set) = committed {
            s.in_sync = set.clone();
            s.in_sync.insert(self.me);
        }
    }
}

/// An in-sync change to propose ([`Progress::plan_change`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Hand it back to [`Progress::altered`].
    pub ticket: u64,
    /// The whole set to propose.
    pub next: BTreeSet<u32>,
    /// Members that lag (they stay in the local set until the controller committed `next`).
    pub leaving: Vec<u32>,
    /// Members the controller's set lacks (already in the local set).
    pub joining: Vec<u32>,
}

fn lagging(s: &State, me: u32, lag: Duration, now: Instant) -> Vec<u32> {
    s.in_sync
        .iter()
        .filter(|id| **id != me)
        .filter(|id| {
            let last = s
                .followers
                .get(id)
                .and_then(|f| f.caught_up_at)
                .map_or(s.since, |t| t.max(s.since));
            now.saturating_duration_since(last) > lag
        })
        .copied()
        .collect()
}

fn caught_up(s: &State, lag: Duration, now: Instant) -> Vec<u32> {
    let mut v: Vec<u32> = s
        .followers
        .iter()
        .filter(|(id, f)| {
            !s.in_sync.contains(id)
                && f.caught_up_at
                    .is_some_and(|t| now.saturating_duration_since(t) <= lag)
        })
        .map(|(id, _)| *id)
        .collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(5);

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn woken(c: &std::sync::Arc<Count>) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_move_wakes_only_the_waiters_it_reached() {
        let p = Progress::new(1, 0, LAG);
        p.lead(1, BTreeSet::from([1, 2]), 0);
        let counts: Vec<_> = (0..3)
            .map(|_| std::sync::Arc::new(Count(0.into())))
            .collect();
        let mut waits: Vec<_> = [10, 20, 30]
            .iter()
            .map(|e| Box::pin(p.reached(*e)))
            .collect();
        for (w, c) in waits.iter_mut().zip(&counts) {
            let waker = Waker::from(c.clone());
            assert!(w
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        p.report(2, 5, 40);
        assert_eq!(p.recompute(40), Some(5));
        assert_eq!(counts.iter().map(woken).sum::<usize>(), 0, "5 reaches none");
        p.report(2, 20, 40);
        assert_eq!(p.recompute(40), Some(20));
        assert_eq!(counts.iter().map(woken).collect::<Vec<_>>(), [1, 1, 0]);
        let noop = Waker::from(std::sync::Arc::new(Count(0.into())));
        let mut cx = Context::from_waker(&noop);
        assert!(waits[0].as_mut().poll(&mut cx).is_ready());
        assert!(waits[1].as_mut().poll(&mut cx).is_ready());
        assert!(waits[2].as_mut().poll(&mut cx).is_pending());
        assert_eq!(p.waiters.lock().by_end.len(), 1, "the one left waits");
        drop(waits);
        assert!(
            p.waiters.lock().by_end.is_empty(),
            "a dropped wait leaves no waker"
        );
        let mut done = Box::pin(p.reached(20));
        assert!(
            done.as_mut().poll(&mut cx).is_ready(),
            "an offset already reached completes at once"
        );
        assert!(p.waiters.lock().by_end.is_empty());
    }

    #[test]
    fn the_confirm_offset_is_the_lowest_in_sync_holding_and_never_goes_back() {
        let p = Progress::new(1, 0, LAG);
        p.lead(1, BTreeSet::from([1, 2, 3]), 0);
        assert_eq!(p.recompute(100), None, "followers have not reported");
        p.report(2, 80, 100);
        p.report(3, 60, 100);
        assert_eq!(p.recompute(100), Some(60));
        // 3 lags and leaves the set once the controller committed it.
        std::thread::sleep(Duration::from_millis(30));
        p.report(2, 100, 100);
        let change = p
            .plan_change(Duration::from_millis(20), LAG, &BTreeSet::from([1, 2, 3]))
            .expect("3 lags");
        assert_eq!(change.leaving, vec![3]);
        assert_eq!(
            p.recompute(100),
            None,
            "3 counts until the controller committed"
        );
        p.altered(change.ticket, Some(&BTreeSet::from([1, 2])));
        assert_eq!(p.recompute(100), Some(100));
        p.report(2, 10, 100);
        assert_eq!(p.recompute(100), None, "never backwards");
        assert_eq!(p.confirm(), 100);
    }

    #[test]
    fn lagging_followers_are_found() {
        let p = Progress::new(1, 0, LAG);
        p.lead(1, BTreeSet::from([1, 2]), 0);
        p.report(2, 100, 100);
        assert!(p.lagging(Duration::from_secs(5)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(p.lagging(Duration::from_millis(10)), vec![2]);
    }

    /// Under steady load a follower's report never equals the leader's end at the moment it
    /// arrives, and alone in the set the leader's confirm offset is its own end: a follower
    /// that holds what the leader had at its previous report counts as caught up, holds the
    /// confirm offset back from then on, and joins at its next report.
    #[test]
    fn a_follower_one_batch_behind_under_load_joins() {
        let p = Progress::new(1, 0, LAG);
        p.lead(1, BTreeSet::from([1]), 0);
        let mut end = 100;
        assert_eq!(p.recompute(end), Some(100));
        p.report(2, 50, end);
        p.report(3, 0, end);
        for _ in 0..3 {
            // The batch each fetched reached the end the leader had then (3: far less); the
            // leader wrote on meanwhile.
            let held = end;
            end += 40;
            p.recompute(end);
            p.report(2, held, end);
            p.report(3, held - 100, end);
        }
        assert_eq!(p.in_sync(), BTreeSet::from([1, 2]), "3 never caught up");
        assert!(p.confirm() <= end - 40, "the confirm offset waits for 2");
        assert!(p.caught_up(LAG).is_empty());
    }

    /// The chaos run's root cause: the confirm offset passed a member the controller already
    /// had in its set, because the leader counted the member only once the controller's answer
    /// came back (or a heartbeat answer read before the change took it out again).
    #[test]
    fn a_joining_member_counts_before_the_controller_commits_and_only_if_it_holds_the_confirm_offset(
    ) {
        let p = Progress::new(1, 0, LAG);
        p.lead(1, BTreeSet::from([1]), 0);
        assert_eq!(p.recompute(1000), Some(1000));
        // 2 caught up with an earlier end but holds less than the confirm offset: not yet (it
        // holds the offset back from now on).
        p.report(2, 900, 900);
        assert_eq!(p.plan_change(LAG, LAG, &BTreeSet::from([1])), None);
        assert_eq!(p.in_sync(), BTreeSet::from([1]));
        assert_eq!(p.recompute(1200), None, "2 holds the offset back");
        // Now it holds the confirm offset: it joins the local set at once (at its report),
        // before the controller is asked, and the confirm offset waits for it.
        p.report(2, 1000, 1000);
        assert_eq!(p.in_sync(), BTreeSet::from([1, 2]));
        let change = p
            .plan_change(LAG, LAG, &BTreeSet::from([1]))
            .expect("2 joins");
        assert_eq!(change.joining, vec![2]);
        assert_eq!(change.next, BTreeSet::from([1, 2]));
        assert_eq!(p.in_sync(), BTreeSet::from([1, 2]));
        assert_eq!(p.recompute(1500), None, "2 holds 1000 only");
        assert_eq!(
            p.plan_change(LAG, LAG, &BTreeSet::from([1])),
            None,
            "one change at a time"
        );
        // A heartbeat answer read before the commit does not take 2 out again.
        p.note_committed(&BTreeSet::from([1]));
        assert_eq!(p.in_sync(), BTreeSet::from([1, 2]));
        // Nor does one read before a shrink put back a member short of the confirm offset.
        p.report(3, 10, 1000);
        p.note_committed(&BTreeSet::from([1, 3]));
        assert_eq!(p.in_sync(), BTreeSet::from([1, 2]));
        // The change failed (or its answer was lost): 2 stays, and it is proposed again.
        p.altered(change.ticket, None);
        assert_eq!(p.in_sync(), BTreeSet::from([1, 2]));
        let again = p
            .plan_change(LAG, LAG, &BTreeSet::from([1]))
            .expect("the controller lacks 2: proposed again");
        assert_eq!(again.next, BTreeSet::from([1, 2]));
        assert_eq!(again.joining, vec![2]);
        // An answer for an older ticket changes nothing.
        p.altered(change.ticket, Some(&BTreeSet::from([1])));
        assert_eq!(p.in_sync(), BTreeSet::from([1, 2]));
        p.altered(again.ticket, Some(&BTreeSet::from([1, 2])));
        assert_eq!(p.plan_change(LAG, LAG, &BTreeSet::from([1, 2])), None);
        p.report(2, 1500, 1500);
        assert_eq!(p.recompute(1500), Some(1500));
    }

    /// A member the local set has and the controller's answer lacks (an addition that never
    /// committed, or whose commit the answer predates) leaves only through a commit.
    #[test]
    fn a_lagging_member_the_controller_never_had_leaves_through_a_commit() {
        let p = Progress::new(1, 0, Duration::from_millis(5));
        p.lead(1, BTreeSet::from([1, 3]), 0);
        p.report(3, 0, 0);
        std::thread::sleep(Duration::from_millis(30));
        let committed = BTreeSet::from([1]);
        let change = p
            .plan_change(Duration::from_millis(10), LAG, &committed)
            .expect("3 lags: proposed although the answer already lacks it");
        assert_eq!(
            (change.next.clone(), change.leaving.clone()),
            (committed.clone(), vec![3])
        );
        assert_eq!(p.in_sync(), BTreeSet::from([1, 3]), "until the commit");
        p.altered(change.ticket, Some(&committed));
        assert_eq!(p.in_sync(), committed);
        assert_eq!(p.recompute(500), Some(500));
    }

    #[tokio::test]
    async fn a_sync_send_waits_for_the_confirm_offset() {
        let p = std::sync::Arc::new(Progress::new(1, 0, LAG));
        p.lead(1, BTreeSet::from([1, 2]), 0);
        let p2 = p.clone();
        let waiter =
            tokio::spawn(async move { p2.wait_confirmed(50, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        p.report(2, 50, 50);
        p.recompute(50);
        assert!(waiter.await.expect("join"));
        assert!(!p.wait_confirmed(60, Duration::from_millis(10)).await);
    }

    #[test]
    fn a_store_writer_blocks_until_the_group_confirms() {
        let p = std::sync::Arc::new(Progress::new(1, 0, LAG));
        p.lead(1, BTreeSet::from([1, 2]), 0);
        let p2 = p.clone();
        let writer =
            std::thread::spawn(move || p2.wait_confirmed_blocking(70, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        p.report(2, 70, 70);
        p.recompute(70);
        assert!(writer.join().expect("join"));
        assert!(!p.wait_confirmed_blocking(80, Duration::from_millis(10)));
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// The leader writes this much.
        Write(u64),
        /// A follower fetches up to this much more of the leader's log and reports.
        Fetch(u32, u64),
        /// The leader plans an in-sync change (lag 0 or long: drops or keeps laggards).
        Plan(bool),
        /// The controller commits the change on its way.
        Commit,
        /// The change on its way fails (its commit may still have happened: `true`).
        Fail(bool),
        /// A heartbeat answer carrying the set the controller held `n` steps ago.
        Answer(usize),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (1u64..200).prop_map(Step::Write),
            4 => (2u32..5, 0u64..300).prop_map(|(f, n)| Step::Fetch(f, n)),
            2 => any::<bool>().prop_map(Step::Plan),
            2 => Just(Step::Commit),
            1 => any::<bool>().prop_map(Step::Fail),
            2 => (0usize..4).prop_map(Step::Answer),
        ]
    }

    proptest::proptest! {
        /// Whatever the order of writes, fetches, in-sync changes, commits, failures and stale
        /// heartbeat answers: the confirm offset never goes back, and every member of every set
        /// the controller committed holds it (so any member the controller may elect holds
        /// what any member dispatched).
        #[test]
        fn the_confirm_offset_never_passes_a_member_of_the_controllers_set(
            steps in proptest::collection::vec(step(), 1..120)
        ) {
            let p = Progress::new(1, 0, LAG);
            let mut controller: Vec<BTreeSet<u32>> = vec![BTreeSet::from([1, 2, 3, 4])];
            p.lead(1, controller[0].clone(), 0);
            let mut held = [0u64; 5];
            let mut pending: Option<Change> = None;
            let mut last = 0;
            for s in steps {
                match s {
                    Step::Write(n) => held[1] += n,
                    Step::Fetch(f, n) => {
                        held[f as usize] = (held[f as usize] + n).min(held[1]);
                        p.report(f, held[f as usize], held[1]);
                    }
                    Step::Plan(drop_laggards) => {
                        let lag = if drop_laggards { Duration::ZERO } else { LAG };
                        let committed = controller.last().cloned().unwrap_or_default();
                        if let Some(c) = p.plan_change(lag, LAG, &committed) {
                            pending = Some(c);
                        }
                    }
                    Step::Commit => {
                        if let Some(c) = pending.take() {
                            controller.push(c.next.clone());
                            p.altered(c.ticket, Some(&c.next));
                        }
                    }
                    Step::Fail(committed_anyway) => {
                        if let Some(c) = pending.take() {
                            if committed_anyway {
                                controller.push(c.next.clone());
                            }
                            p.altered(c.ticket, None);
                        }
                    }
                    Step::Answer(ago) => {
                        let i = controller.len().saturating_sub(1 + ago);
                        p.note_committed(&controller[i]);
                    }
                }
                p.recompute(held[1]);
                let c = p.confirm();
                proptest::prop_assert!(c >= last, "the confirm offset went back");
                last = c;
                let current = controller.last().cloned().unwrap_or_default();
                for m in &current {
                    proptest::prop_assert!(held[*m as usize] >= c,
                        "member {} of the controller's set {:?} holds {} < confirm {}", m, current, held[*m as usize], c);
                }
            }
        }
    }
}
