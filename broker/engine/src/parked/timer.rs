//! Delay messages: a message with a delivery time is parked ([`super`]) and released to
//! its topic by one timer thread when that time comes; RecallMessage discards it before then.
//!
//! ## Memory
//! The message itself stays on disk. Memory holds one heap entry per pending timer: due time,
//! parked entry and commit log offset, 24 bytes (plus the heap's spare capacity), so a million
//! pending timers cost about 24-48 MiB whatever their bodies weigh.
//!
//! ## Precision
//! The thread sleeps until the earliest due time and re-checks the wall clock when it wakes, so
//! nothing is released before its time. Due times are rounded *up* to the millisecond. The
//! released copy is dispatched like any new message, which wakes long-polling consumers at once.
//!
//! ## Restart
//! Pending timers are rebuilt from the parked queue (its entries carry the due time), so a
//! timer that fell due while the broker was down is released right after it comes back.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferromq_store::marks::Mark;
use ferromq_store::{NewMessage, Store};
use tracing::{info, warn};

use super::schedule::Schedule;
use super::{Parked, ParkedAt, ParkedQueue, Settled};
use crate::error::EngineError;
use crate::props::REAL_TOPIC;
use crate::time::now_ms;

/// The system topic holding pending delay messages.
pub const TIMER_TOPIC: &str = "%SYS%FM_TIMER";
/// Kind of a recall handle (see [`ParkedAt::encode`]).
const RECALL_HANDLE: &str = "t1";

/// Most timers released per wake-up before the heap is looked at again.
const RELEASE_BATCH: usize = 512;
/// Wait before a release that failed (a full disk) is tried again.
const RETRY_AFTER_MS: u64 = 1000;

/// Upper bounds (ms) of the lateness histogram.
pub const LATENESS_BUCKETS_MS: [u64; 9] = [1, 5, 10, 25, 50, 100, 250, 1000, 10_000];

/// Counters of the timer service, for metrics.
#[derive(Debug, Default)]
pub struct TimerStats {
    pub released: AtomicU64,
    pub recalled: AtomicU64,
    /// Dropped because their parked message failed its checksum or was gone.
    pub unreadable: AtomicU64,
    /// Lateness of released timers: counts per bucket of [`LATENESS_BUCKETS_MS`], then +Inf.
    pub lateness: [AtomicU64; LATENESS_BUCKETS_MS.len() + 1],
}

/// The recall handle of a parked delay message.
pub fn recall_handle(at: ParkedAt) -> String {
    at.encode(RECALL_HANDLE)
}

fn parse_recall_handle(h: &str) -> Option<ParkedAt> {
    ParkedAt::decode(h, RECALL_HANDLE)
}

pub struct Timers {
    parked: Parked,
    /// Pending timers: (due, parked message).
    pending: Schedule<ParkedAt>,
    pub stats: TimerStats,
}

impl Timers {
    /// Opens the timer queue in `data_dir` and loads the pending timers.
    pub fn open(
        store: Arc<Store>,
        data_dir: &Path,
        journal: Option<crate::journal::Journal>,
    ) -> Result<Arc<Timers>, EngineError> {
        let parked = Parked::open(store, TIMER_TOPIC, &data_dir.join("timers"), journal)?;
        let started = std::time::Instant::now();
        let pending = Schedule::load(&parked, |at| at)?;
        if !pending.is_empty() {
            info!(
                pending = pending.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "pending timers loaded"
            );
        }
        Ok(Arc::new(Timers {
            parked,
            pending,
            stats: TimerStats::default(),
        }))
    }

    /// Parks `msg` until `due_ms` and returns its recall handle.
    pub fn schedule(&self, msg: &NewMessage, due_ms: u64) -> Result<String, EngineError> {
        self.schedule_at(msg, due_ms).map(recall_handle)
    }

    /// [`Timers::schedule`], answering where the parked message is (its commit log offset is
    /// what offset-based front doors name it by).
    pub fn schedule_at(&self, msg: &NewMessage, due_ms: u64) -> Result<ParkedAt, EngineError> {
        let at = self.parked.park(msg, due_ms)?;
        self.pending.add(due_ms, at, &msg.topic);
        Ok(at)
    }

    /// Cancels a pending delay message of `topic`. Returns its message id.
    pub fn recall(&self, topic: &str, handle: &str) -> Result<String, EngineError> {
        let at = parse_recall_handle(handle).ok_or_else(|| {
            EngineError::bad_request(format!("{handle:?} is not a recall handle of this broker"))
        })?;
        let m = self.parked.read(at.entry, Some(at.phys)).map_err(|_| {
            EngineError::MessageNotFound(
                "no delay message has this recall handle (expired by retention, or another broker's)"
                    .into(),
            )
        })?;
        if m.properties.get(REAL_TOPIC).map(String::as_str) != Some(topic) {
            return Err(EngineError::MessageNotFound(format!(
                "the recall handle is not for a message of topic {topic}"
            )));
        }
        let id = m.msg_id().unwrap_or_default().to_string();
        match self.parked.settle(at, Mark::Discarded)? {
            (Settled::Now, _) => {
                self.stats.recalled.fetch_add(1, Ordering::Relaxed);
                self.pending.forget(topic);
                Ok(id)
            }
            (Settled::Already(Mark::Discarded), _) => Ok(id),
            (Settled::Already(_), _) => Err(EngineError::AlreadySettled(format!(
                "message {id} was already delivered; it can no longer be recalled"
            ))),
        }
    }

    fn release_due(&self) {
        while let Some(due) = self.pending.wait_due(RELEASE_BATCH) {
            let ats: Vec<ParkedAt> = due.iter().map(|(_, at)| *at).collect();
            let results = self.parked.release_all(&ats);
            for ((d, at), r) in due.into_iter().zip(results) {
                match r {
                    Ok((Settled::Now, m)) => {
                        let late = (now_ms().max(0) as u64).saturating_sub(d);
                        self.record_lateness(late);
                        if let Some(t) = m.as_ref().and_then(|m| m.properties.get(REAL_TOPIC)) {
                            self.pending.forget(t);
                        }
                    }
                    Ok((Settled::Already(_), _)) => {}
                    Err(EngineError::TopicNotFound(topic)) => {
                        tracing::info!(entry = at.entry, %topic, "a pending delay message's topic was deleted; it is dropped");
                        self.pending.forget(&topic);
                    }
                    Err(e @ (EngineError::MessageNotFound(_) | EngineError::Corrupt(_))) => {
                        tracing::error!(entry = at.entry, error = %e, "a pending delay message cannot be read; it is dropped, not delivered");
                        self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                        let _ = self.parked.abandon(at.entry);
                    }
                    Err(e) => {
                        warn!(entry = at.entry, error = %e, "releasing a timer failed; trying again in 1 s");
                        let retry = d.max(now_ms().max(0) as u64) + RETRY_AFTER_MS;
                        self.pending.requeue(retry, at);
                    }
                }
            }
        }
    }

    fn record_lateness(&self, ms: u64) {
        self.stats.released.fetch_add(1, Ordering::Relaxed);
        let i = LATENESS_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENESS_BUCKETS_MS.len());
        self.stats.lateness[i].fetch_add(1, Ordering::Relaxed);
    }
}

impl ParkedQueue for Timers {
    type Item = ParkedAt;
    const THREAD: &'static str = "timers";

    fn parked(&self) -> &Parked {
        &self.parked
    }

    fn schedule(&self) -> &Schedule<ParkedAt> {
        &self.pending
    }

    fn run(&self) {
        self.release_due()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_handles_round_trip() {
        let at = ParkedAt {
            entry: 42,
            phys: 1 << 40,
        };
        assert_eq!(parse_recall_handle(&recall_handle(at)), Some(at));
        assert_eq!(parse_recall_handle("t1:x:1"), None);
        assert_eq!(parse_recall_handle("x1:1:1"), None);
    }
}
