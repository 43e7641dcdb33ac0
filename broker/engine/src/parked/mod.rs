//! Parked messages: stored now, delivered to their topic later or never. Delay messages wait
//! for their time ([`timer`]), half messages for their transaction's outcome ([`transaction`]);
//! [`schedule`] keeps either kind's pending entries by due time.
//!
//! ## How a message is parked
//! It is appended, whole, to a system topic of one queue (`%SYS%FM_TIMER`, `%SYS%FM_HALF`),
//! with its real topic and queue kept in `__FM_REAL_TOPIC` / `__FM_REAL_QUEUE` and a number
//! (its due time) in the store's `__FM_CQ_KEY`, which lands in the consume queue entry. The
//! append is acknowledged like any other, so a parked message is exactly as durable as a
//! normal one, and consumers never see it: nobody subscribes to a system topic.
//!
//! ## How it is settled
//! Releasing appends a copy to the real topic (same message id, properties and body, plus
//! `__FM_PARKED` naming the parked entry), then marks the entry released; discarding only marks
//! it. Marks are one byte per entry in memory-mapped files ([`ferromq_store::marks`]), so a
//! settled entry stays settled after kill -9. One lock orders every settlement, so a commit
//! racing a transaction check, or a recall racing the timer, settles the entry once.
//!
//! A crash between the copy and its mark would release the entry twice. Entries parked before
//! this start are therefore checked against the real topic (by message id, then `__FM_PARKED`)
//! before they are released; entries parked since need no check.
//!
//! ## Restart
//! [`Parked::scan`] walks the consume queue from the oldest pending entry and hands every
//! pending one (offset, due time, commit log offset) to the caller, reading no message.
//! Retention never deletes a commit log segment at or after the oldest pending entry.

pub mod schedule;
pub mod timer;
pub mod transaction;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferromq_store::marks::{Mark, Marks};
use ferromq_store::{NewMessage, Store, StoredMessage};
use parking_lot::Mutex;
use tracing::warn;

use crate::error::EngineError;
use crate::props::{CQ_KEY, PARKED_FROM, REAL_INCARNATION, REAL_QUEUE, REAL_TOPIC};

/// Where a parked message is: its entry in the system topic's queue and its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParkedAt {
    pub entry: u64,
    pub phys: u64,
}

impl ParkedAt {
    /// The id a client gets for a parked message: `<kind>:<entry>:<commit log offset>`, with
    /// `kind` naming what it is (a recall handle, a transaction id), so one id is never taken
    /// for the other.
    pub fn encode(self, kind: &str) -> String {
        format!("{kind}:{}:{}", self.entry, self.phys)
    }

    /// Reads back an id of `kind` made by [`ParkedAt::encode`].
    pub fn decode(s: &str, kind: &str) -> Option<ParkedAt> {
        let rest = s.strip_prefix(kind)?.strip_prefix(':')?;
        let (e, p) = rest.split_once(':')?;
        Some(ParkedAt {
            entry: e.parse().ok()?,
            phys: p.parse().ok()?,
        })
    }
}

/// What delay timers and transactions have in common: a parked queue, the schedule of its
/// pending entries, and one thread that acts on them when they fall due.
pub trait ParkedQueue: Send + Sync + Sized + 'static {
    /// What the schedule holds per pending entry.
    type Item: Ord;
    /// Name of the thread.
    const THREAD: &'static str;

    fn parked(&self) -> &Parked;
    fn schedule(&self) -> &schedule::Schedule<Self::Item>;
    /// The thread's body: returns once [`ParkedQueue::stop`] was called.
    fn run(&self);

    /// Pending entries per real topic.
    fn pending_by_topic(&self) -> BTreeMap<String, u64> {
        self.schedule().pending_by_topic()
    }

    /// The commit log offset retention must keep (the oldest pending entry).
    fn retention_floor(&self) -> Result<u64, EngineError> {
        self.parked().advance_floor()
    }

    /// Starts the thread.
    fn start(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name(Self::THREAD.into())
            .spawn(move || me.run())
    }

    /// Stops the thread.
    fn stop(&self) {
        self.schedule().stop();
    }

    /// Writes the marks to disk (clean shutdown).
    fn flush(&self) -> Result<(), EngineError> {
        self.parked().flush()
    }
}

/// What settling an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Settled now, as asked.
    Now,
    /// It was settled before; nothing changed.
    Already(Mark),
}

/// One parked queue.
pub struct Parked {
    store: Arc<Store>,
    topic: &'static str,
    marks: Marks,
    settle: Mutex<()>,
    /// Entries below this were parked before this start (see the module docs).
    recovered_below: u64,
    /// The oldest entry that may still be pending (advanced by [`Parked::advance_floor`]).
    floor: AtomicU64,
    /// Replicated groups: settlements are journaled for the followers.
    journal: Option<crate::journal::Journal>,
}

impl Parked {
    /// Opens the parked queue `topic`, its marks under `marks_dir`.
    pub fn open(
        store: Arc<Store>,
        topic: &'static str,
        marks_dir: &Path,
        journal: Option<crate::journal::Journal>,
    ) -> Result<Parked, EngineError> {
        let marks = Marks::open(marks_dir).map_err(EngineError::from)?;
        let (min, max) = store.queue_range(topic, 0);
        let floor = marks.first_pending(min, max);
        Ok(Parked {
            store,
            topic,
            marks,
            settle: Mutex::new(()),
            recovered_below: max,
            floor: AtomicU64::new(floor),
            journal,
        })
    }

    pub fn topic(&self) -> &'static str {
        self.topic
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Parks `msg` (addressed to its real topic and queue) until it is settled; `key` is its due
    /// time in ms since the epoch.
    pub fn park(&self, msg: &NewMessage, key: u64) -> Result<ParkedAt, EngineError> {
        let mut m = msg.clone();
        m.properties.insert(REAL_TOPIC.into(), m.topic.clone());
        m.properties.insert(
            REAL_INCARNATION.into(),
            self.store.topics().incarnation(&m.topic).to_string(),
        );
        m.properties
            .insert(REAL_QUEUE.into(), m.queue_id.to_string());
        m.properties.insert(CQ_KEY.into(), key.to_string());
        m.topic = self.topic.to_string();
        m.queue_id = 0;
        let r = self.store.append(&m).map_err(EngineError::from)?;
        Ok(ParkedAt {
            entry: r.queue_offset,
            phys: r.phys_offset,
        })
    }

    /// The parked message of `entry`, as stored (real topic in [`REAL_TOPIC`]).
    pub fn read(&self, entry: u64, phys: Option<u64>) -> Result<StoredMessage, EngineError> {
        let phys = match phys {
            Some(p) => p,
            None => match self.store.queue_entry(self.topic, 0, entry) {
                Ok(Some(e)) => e.phys_offset,
                Ok(None) => {
                    return Err(EngineError::MessageNotFound(format!(
                        "no parked message {entry} in {}",
                        self.topic
                    )))
                }
                Err(e) => return Err(e.into()),
            },
        };
        let m = self.store.message_at(phys).map_err(|e| match e {
            // Checksum failure: reported, never served.
            ferromq_store::StoreError::Corrupt { .. } => EngineError::Corrupt(format!(
                "parked message {entry} of {} is corrupt: {e}",
                self.topic
            )),
            ferromq_store::StoreError::OffsetOutOfRange { .. } => {
                EngineError::MessageNotFound(format!(
                    "parked message {entry} of {} is no longer stored",
                    self.topic
                ))
            }
            other => other.into(),
        })?;
        if m.topic != self.topic || m.queue_offset != entry {
            return Err(EngineError::MessageNotFound(format!(
                "no parked message {entry} in {}",
                self.topic
            )));
        }
        Ok(m)
    }

    /// The mark of `entry`.
    pub fn mark(&self, entry: u64) -> Mark {
        self.marks.get(entry)
    }

    /// Settles `entry`: [`Mark::Released`] delivers it to its topic (see
    /// [`Parked::release_all`]), [`Mark::Discarded`] drops it. Returns the parked message too
    /// (for counters and logs).
    pub fn settle(
        &self,
        at: ParkedAt,
        how: Mark,
    ) -> Result<(Settled, Option<StoredMessage>), EngineError> {
        if how == Mark::Released {
            return self
                .release_all(&[at])
                .pop()
                .unwrap_or_else(|| Err(EngineError::internal("release answered nothing")));
        }
        let _g = self.settle.lock();
        let now = self.marks.get(at.entry);
        if now != Mark::Pending {
            return Ok((Settled::Already(now), None));
        }
        let parked = self.read(at.entry, Some(at.phys))?;
        self.set_mark(at.entry, how)?;
        Ok((Settled::Now, Some(parked)))
    }

    /// Releases several entries with one append of all their copies, so a batch of timers
    /// falling due together costs one flush wait (with `--flush sync`), not one each. Results
    /// are per entry, in order, as [`Parked::settle`] gives them.
    pub fn release_all(
        &self,
        ats: &[ParkedAt],
    ) -> Vec<Result<(Settled, Option<StoredMessage>), EngineError>> {
        let _g = self.settle.lock();
        let mut out: Vec<Result<(Settled, Option<StoredMessage>), EngineError>> =
            Vec::with_capacity(ats.len());
        // Per entry: Some(index into `copies`) when it is to be appended now.
        let mut slots: Vec<Option<usize>> = Vec::with_capacity(ats.len());
        let mut copies = Vec::new();
        for at in ats {
            let now = self.marks.get(at.entry);
            if now != Mark::Pending {
                out.push(Ok((Settled::Already(now), None)));
                slots.push(None);
                continue;
            }
            let prepared = self
                .read(at.entry, Some(at.phys))
                .and_then(|m| self.unparked(&m).map(|c| (m, c)));
            match prepared {
                Ok((parked, copy)) => {
                    if at.entry < self.recovered_below && self.already_released(&copy, at.entry) {
                        warn!(topic = %copy.topic, entry = at.entry, "parked message was released before a crash; not releasing it again");
                        slots.push(None);
                    } else {
                        slots.push(Some(copies.len()));
                        copies.push(copy);
                    }
                    out.push(Ok((Settled::Now, Some(parked))));
                }
                Err(e) => {
                    // Its topic was deleted since it was parked: it is dropped, not delivered
                    // to whatever now has the name.
                    if matches!(e, EngineError::TopicNotFound(_)) {
                        if let Err(m) = self.set_mark(at.entry, Mark::Discarded) {
                            warn!(entry = at.entry, error = %m, "cannot mark a parked message of a deleted topic discarded");
                        }
                    }
                    out.push(Err(e));
                    slots.push(None);
                }
            }
        }
        let mut failed: Vec<Option<ferromq_store::StoreError>> = self
            .store
            .append_batch(&copies)
            .into_iter()
            .map(|r| r.err())
            .collect();
        for ((at, slot), r) in ats.iter().zip(slots).zip(out.iter_mut()) {
            if r.is_err() || matches!(r, Ok((Settled::Already(_), _))) {
                continue;
            }
            if let Some(e) = slot.and_then(|i| failed.get_mut(i).and_then(Option::take)) {
                *r = Err(EngineError::from(e));
                continue;
            }
            if let Err(e) = self.set_mark(at.entry, Mark::Released) {
                *r = Err(e);
            }
        }
        out
    }

    /// Gives up on an entry whose message cannot be read (corrupt, or gone): marks it discarded
    /// so it is not tried again after every restart. The caller logs why.
    pub fn abandon(&self, entry: u64) -> Result<(), EngineError> {
        let _g = self.settle.lock();
        if self.marks.get(entry) == Mark::Pending {
            self.set_mark(entry, Mark::Discarded)?;
        }
        Ok(())
    }

    /// Settles `entry` durably, journaled in a replicated group.
    fn set_mark(&self, entry: u64, how: Mark) -> Result<(), EngineError> {
        self.marks.set(entry, how)?;
        if let Some(j) = &self.journal {
            j.record(&crate::journal::Change::Mark {
                queue: self.topic.to_string(),
                entry,
                mark: how.to_byte(),
            })?;
        }
        Ok(())
    }

    fn marker(&self, entry: u64) -> String {
        format!("{}:{entry}", self.topic)
    }

    /// The message to append to the real topic.
    fn unparked(&self, m: &StoredMessage) -> Result<NewMessage, EngineError> {
        let mut properties: BTreeMap<String, String> = m.properties.clone();
        let topic = properties.remove(REAL_TOPIC).ok_or_else(|| {
            EngineError::internal(format!(
                "parked message {} has no {REAL_TOPIC}",
                m.queue_offset
            ))
        })?;
        let queue_id = properties
            .remove(REAL_QUEUE)
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        properties.remove(CQ_KEY);
        properties.insert(PARKED_FROM.into(), self.marker(m.queue_offset));
        // Records parked before incarnations were kept carry none and are not checked.
        let incarnation = properties.remove(REAL_INCARNATION);
        let topics = self.store.topics();
        let deleted = incarnation.is_some_and(|i| {
            topics.get(&topic).is_none() || i != topics.incarnation(&topic).to_string()
        });
        if deleted {
            return Err(EngineError::TopicNotFound(topic));
        }
        // The topic may have lost queues since; keep the queue valid.
        let queues = topics.get(&topic).map_or(1, |t| t.queues.max(1));
        Ok(NewMessage {
            topic,
            queue_id: queue_id % queues,
            born_timestamp_ms: m.born_timestamp_ms,
            born_host: m.born_host,
            flags: m.flags,
            // Retries of offset-based consumers wait here too and carry their count.
            reconsume_times: m.reconsume_times,
            properties,
            body: m.body.clone().into(),
        })
    }

    fn already_released(&self, copy: &NewMessage, entry: u64) -> bool {
        let Some(id) = copy.properties.get(ferromq_store::PROP_MSG_ID) else {
            return false;
        };
        let marker = self.marker(entry);
        self.store
            .lookup_id(&copy.topic, id)
            .is_some_and(|m| m.properties.get(PARKED_FROM) == Some(&marker))
    }

    /// Calls `f(at, key)` for every pending entry, oldest first (restart).
    pub fn scan(&self, mut f: impl FnMut(ParkedAt, u64)) -> Result<u64, EngineError> {
        let (min, max) = self.store.queue_range(self.topic, 0);
        let mut n = 0;
        let mut i = self.marks.first_pending(min, max);
        while i < max {
            if self.marks.get(i) == Mark::Pending {
                if let Some(e) = self
                    .store
                    .queue_entry(self.topic, 0, i)
                    .map_err(EngineError::from)?
                {
                    f(
                        ParkedAt {
                            entry: i,
                            phys: e.phys_offset,
                        },
                        e.tag_hash,
                    );
                    n += 1;
                }
            }
            i += 1;
        }
        Ok(n)
    }

    /// Moves the oldest-pending floor up and drops mark files nobody needs. Returns the commit
    /// log offset of the oldest pending entry (`u64::MAX`: none), which retention must keep.
    /// Cheap when nothing changed; run it now and then.
    pub fn advance_floor(&self) -> Result<u64, EngineError> {
        let (min, max) = self.store.queue_range(self.topic, 0);
        let from = self.floor.load(Ordering::Acquire).max(min);
        let floor = self.marks.first_pending(from, max);
        self.floor.store(floor, Ordering::Release);
        // Only below what the queue itself lost to retention: a trimmed mark reads as pending,
        // and a record still stored must never look pending again.
        self.marks.trim(floor.min(min)).map_err(EngineError::from)?;
        if floor >= max {
            return Ok(u64::MAX);
        }
        Ok(self
            .store
            .queue_entry(self.topic, 0, floor)
            .map_err(EngineError::from)?
            .map_or(u64::MAX, |e| e.phys_offset))
    }

    /// Writes the marks to disk (clean shutdown).
    pub fn flush(&self) -> Result<(), EngineError> {
        self.marks.flush().map_err(EngineError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_store::{MessageType, Permission, StoreConfig, TopicConfig, PROP_MSG_ID};
    use std::time::Duration;

    const QUEUE: &str = "%SYS%TEST_PARKED";

    fn wait_dispatched(store: &Store) {
        let end = store.stats().log_write_offset;
        assert!(store.wait_dispatched(end, Duration::from_secs(5)));
    }

    /// A crash after a release's copy was appended but before its mark was written: after the
    /// restart the entry is still pending, and releasing it must not append a second copy.
    #[test]
    fn a_release_cut_short_by_a_crash_is_not_repeated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreConfig::new(dir.path().join("store"))).expect("store");
        store
            .topics()
            .create(TopicConfig {
                name: "t".into(),
                queues: 1,
                message_type: MessageType::Delay,
                permission: Permission::ReadWrite,
                retention_ms: None,
            })
            .expect("topic");
        let marks = dir.path().join("marks");
        let mut msg = NewMessage {
            topic: "t".into(),
            body: b"once".to_vec().into(),
            ..Default::default()
        };
        msg.properties.insert(PROP_MSG_ID.into(), "m1".into());
        let p = Parked::open(store.clone(), QUEUE, &marks, None).expect("open");
        let cut_short = p.park(&msg, 1).expect("park");
        msg.properties.insert(PROP_MSG_ID.into(), "m2".into());
        let other = p.park(&msg, 1).expect("park");
        let copy = p
            .unparked(&p.read(cut_short.entry, Some(cut_short.phys)).expect("read"))
            .expect("copy");
        store.append(&copy).expect("the copy, its mark lost");
        wait_dispatched(&store);
        drop(p);

        let p = Parked::open(store.clone(), QUEUE, &marks, None).expect("reopen");
        for r in p.release_all(&[cut_short, other]) {
            assert!(matches!(r, Ok((Settled::Now, Some(_)))), "{r:?}");
        }
        wait_dispatched(&store);
        let ids: Vec<String> = store
            .read("t", 0, 0, 10, None)
            .expect("read")
            .messages
            .iter()
            .filter_map(|m| m.msg_id().map(str::to_string))
            .collect();
        assert_eq!(ids, vec!["m1", "m2"], "m1 once, m2 released now");
        assert_eq!(p.mark(cut_short.entry), Mark::Released);
        assert!(matches!(
            p.settle(cut_short, Mark::Released),
            Ok((Settled::Already(Mark::Released), None))
        ));
    }
}
