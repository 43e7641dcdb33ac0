//! The in-memory side of a parked queue: what is pending, by due time, and how many per real
//! topic, with one thread waiting for the earliest due time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{Parked, ParkedAt};
use crate::error::EngineError;
use crate::props::REAL_TOPIC;
use crate::time::now_ms;

/// The in-memory side of a parked queue: what is pending, by due time, and how many per real
/// topic. One thread waits on it ([`Schedule::wait_due`]); senders and settlements update it.
/// `T` is what the owner needs back when an item falls due (a [`ParkedAt`], plus a check count
/// for transactions).
pub struct Schedule<T> {
    state: Mutex<ScheduleState<T>>,
    wake: Condvar,
    stop: AtomicBool,
}

struct ScheduleState<T> {
    /// (due ms, item), earliest first.
    heap: BinaryHeap<Reverse<(u64, T)>>,
    by_topic: HashMap<String, u64>,
}

/// Longest sleep between looks at the clock when nothing is due sooner.
const IDLE_WAIT: Duration = Duration::from_secs(60);

impl<T: Ord> Schedule<T> {
    /// Loads every pending entry of `parked` (restart), each as `item(at)` due at its key. Each
    /// pending record is read once, for the per-topic counts.
    pub fn load(parked: &Parked, item: impl Fn(ParkedAt) -> T) -> Result<Schedule<T>, EngineError> {
        let mut heap = BinaryHeap::new();
        let mut by_topic: HashMap<String, u64> = HashMap::new();
        parked.scan(|at, due| {
            if let Ok(m) = parked.read(at.entry, Some(at.phys)) {
                if let Some(t) = m.properties.get(REAL_TOPIC) {
                    *by_topic.entry(t.clone()).or_default() += 1;
                }
            }
            heap.push(Reverse((due, item(at))));
        })?;
        Ok(Schedule {
            state: Mutex::new(ScheduleState { heap, by_topic }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ScheduleState<T>> {
        self.state.lock()
    }

    /// Items scheduled (pending, plus settled ones not yet popped).
    pub fn len(&self) -> usize {
        self.lock().heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a newly parked item of `topic`, waking the waiting thread if it is now the earliest.
    pub fn add(&self, due: u64, item: T, topic: &str) {
        let mut s = self.lock();
        *s.by_topic.entry(topic.to_string()).or_default() += 1;
        self.push_locked(&mut s, due, item);
    }

    /// Puts back an item already counted (a retry, the next check).
    pub fn requeue(&self, due: u64, item: T) {
        let mut s = self.lock();
        self.push_locked(&mut s, due, item);
    }

    fn push_locked(&self, s: &mut ScheduleState<T>, due: u64, item: T) {
        let earliest = s.heap.peek().is_none_or(|Reverse((d, _))| due < *d);
        s.heap.push(Reverse((due, item)));
        if earliest {
            self.wake.notify_one();
        }
    }

    /// One item of `topic` was settled.
    pub fn forget(&self, topic: &str) {
        let mut s = self.lock();
        if let Some(n) = s.by_topic.get_mut(topic) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.by_topic.remove(topic);
            }
        }
    }

    /// Pending items per real topic.
    pub fn pending_by_topic(&self) -> BTreeMap<String, u64> {
        self.lock()
            .by_topic
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Blocks until something is due, then returns up to `max` due items (earliest first), or
    /// `None` once [`Schedule::stop`] was called. Re-reads the wall clock after every wake-up, so
    /// nothing is returned before its time.
    pub fn wait_due(&self, max: usize) -> Option<Vec<(u64, T)>> {
        let mut s = self.lock();
        loop {
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            let now = now_ms().max(0) as u64;
            let wait = match s.heap.peek() {
                Some(Reverse((d, _))) if *d <= now => break,
                Some(Reverse((d, _))) => Duration::from_millis(*d - now).min(IDLE_WAIT),
                None => IDLE_WAIT,
            };
            self.wake.wait_for(&mut s, wait);
        }
        let now = now_ms().max(0) as u64;
        let mut due = Vec::new();
        while due.len() < max && s.heap.peek().is_some_and(|Reverse((d, _))| *d <= now) {
            if let Some(Reverse(x)) = s.heap.pop() {
                due.push(x);
            }
        }
        Some(due)
    }

    /// Makes [`Schedule::wait_due`] return `None`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _g = self.lock();
        self.wake.notify_all();
    }
}
