//! The leader's view of its followers: how far each holds the log, when each last held all of
//! it, the in-sync set the controller committed, and the confirm offset that follows from them.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
struct Follower {
    /// How far it holds the log (its last report).
    held: u64,
    /// When it last held the whole log.
    caught_up_at: Instant,
}

#[derive(Debug)]
struct State {
    in_sync: BTreeSet<u32>,
    followers: HashMap<u32, Follower>,
    /// When this member took the lead (followers never heard from count from here).
    since: Instant,
}

/// Follower progress and the confirm offset.
#[derive(Debug)]
pub struct Progress {
    me: u32,
    state: Mutex<State>,
    confirmed: watch::Sender<u64>,
    /// Wakes writers blocked in [`Progress::wait_confirmed_blocking`] when the confirm offset
    /// moves (they run on the store's threads, outside the runtime).
    moved: (Mutex<()>, parking_lot::Condvar),
}

impl Progress {
    pub fn new(me: u32, confirm: u64) -> Progress {
        Progress {
            me,
            state: Mutex::new(State {
                in_sync: BTreeSet::from([me]),
                followers: HashMap::new(),
                since: Instant::now(),
            }),
            confirmed: watch::channel(confirm).0,
            moved: (Mutex::new(()), parking_lot::Condvar::new()),
        }
    }

    /// Starts a term as leader: no follower has reported yet; the confirm offset never goes
    /// back below `start_confirm`.
    pub fn lead(&self, in_sync: BTreeSet<u32>, start_confirm: u64) {
        let mut s = self.state.lock();
        s.followers.clear();
        s.since = Instant::now();
        s.in_sync = in_sync;
        s.in_sync.insert(self.me);
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

    pub fn set_in_sync(&self, in_sync: BTreeSet<u32>) {
        let mut s = self.state.lock();
        s.in_sync = in_sync;
        s.in_sync.insert(self.me);
    }

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
        let since = s.since;
        let f = s.followers.entry(follower).or_insert(Follower {
            held,
            caught_up_at: since,
        });
        f.held = held;
        if held >= end {
            f.caught_up_at = now;
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
    /// in-sync member holds. Returns the new value when it moved (it only ever grows).
    pub fn recompute(&self, leader_held: u64) -> Option<u64> {
        let c = {
            let s = self.state.lock();
            s.in_sync
                .iter()
                .filter(|id| **id != self.me)
                .map(|id| s.followers.get(id).map_or(0, |f| f.held))
                .fold(leader_held, u64::min)
        };
        let mut moved = None;
        self.confirmed.send_if_modified(|cur| {
            if c > *cur {
                *cur = c;
                moved = Some(c);
                true
            } else {
                false
            }
        });
        if moved.is_some() {
            self.wake_blocked();
        }
        moved
    }

    pub fn confirm(&self) -> u64 {
        *self.confirmed.borrow()
    }

    pub(crate) fn wake_blocked(&self) {
        let _g = self.moved.0.lock();
        self.moved.1.notify_all();
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
        let mut rx = self.confirmed.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= end))
            .await
            .is_ok_and(|r| r.is_ok());
        reached
    }

    /// In-sync followers that have not held the whole log for `lag` (to drop from the set).
    pub fn lagging(&self, lag: Duration) -> Vec<u32> {
        let now = Instant::now();
        let s = self.state.lock();
        s.in_sync
            .iter()
            .filter(|id| **id != self.me)
            .filter(|id| {
                let last = s.followers.get(id).map_or(s.since, |f| f.caught_up_at);
                now.duration_since(last) > lag
            })
            .copied()
            .collect()
    }

    /// Followers outside the in-sync set that held the whole log within `lag` (to add).
    pub fn caught_up(&self, lag: Duration) -> Vec<u32> {
        let now = Instant::now();
        let s = self.state.lock();
        s.followers
            .iter()
            .filter(|(id, f)| !s.in_sync.contains(id) && now.duration_since(f.caught_up_at) <= lag)
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirm_offset_is_the_lowest_in_sync_holding_and_never_goes_back() {
        let p = Progress::new(1, 0);
        p.lead(BTreeSet::from([1, 2, 3]), 0);
        assert_eq!(p.recompute(100), None, "followers have not reported");
        p.report(2, 80, 100);
        p.report(3, 60, 100);
        assert_eq!(p.recompute(100), Some(60));
        // A follower outside the in-sync set does not hold the group back.
        p.set_in_sync(BTreeSet::from([1, 2]));
        assert_eq!(p.recompute(100), Some(80));
        p.report(2, 10, 100);
        assert_eq!(p.recompute(100), None, "never backwards");
        assert_eq!(p.confirm(), 80);
    }

    #[test]
    fn lagging_and_caught_up_followers_are_told_apart() {
        let p = Progress::new(1, 0);
        p.lead(BTreeSet::from([1, 2]), 0);
        p.report(2, 100, 100);
        p.report(3, 100, 100);
        assert!(p.lagging(Duration::from_secs(5)).is_empty());
        assert_eq!(p.caught_up(Duration::from_secs(5)), vec![3]);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(p.lagging(Duration::from_millis(10)), vec![2]);
    }

    #[tokio::test]
    async fn a_sync_send_waits_for_the_confirm_offset() {
        let p = std::sync::Arc::new(Progress::new(1, 0));
        p.lead(BTreeSet::from([1, 2]), 0);
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
        let p = std::sync::Arc::new(Progress::new(1, 0));
        p.lead(BTreeSet::from([1, 2]), 0);
        let p2 = p.clone();
        let writer =
            std::thread::spawn(move || p2.wait_confirmed_blocking(70, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        p.report(2, 70, 70);
        p.recompute(70);
        assert!(writer.join().expect("join"));
        assert!(!p.wait_confirmed_blocking(80, Duration::from_millis(10)));
    }

    proptest::proptest! {
        /// Whatever the order of reports and in-sync changes, the confirm offset never goes
        /// back and never passes what every in-sync member holds at the moment it moves.
        #[test]
        fn the_confirm_offset_only_grows_and_every_in_sync_member_holds_it(
            steps in proptest::collection::vec((0u32..4, 0u64..1000, proptest::bool::ANY), 1..60)
        ) {
            let p = Progress::new(0, 0);
            p.lead(BTreeSet::from([0, 1, 2, 3]), 0);
            let mut held = [0u64; 4];
            let mut leader_end = 0u64;
            let mut last = 0;
            for (who, grow, shrink_set) in steps {
                if who == 0 {
                    leader_end += grow;
                    held[0] = leader_end;
                } else {
                    // A follower holds at most what the leader wrote.
                    held[who as usize] = (held[who as usize] + grow).min(leader_end);
                    p.report(who, held[who as usize], leader_end);
                }
                if shrink_set {
                    p.set_in_sync(BTreeSet::from([0, who]));
                }
                if let Some(c) = p.recompute(held[0]) {
                    let in_sync = p.in_sync();
                    for m in &in_sync {
                        proptest::prop_assert!(held[*m as usize] >= c, "member {} holds {} < confirm {}", m, held[*m as usize], c);
                    }
                }
                proptest::prop_assert!(p.confirm() >= last);
                last = p.confirm();
            }
        }
    }
}
