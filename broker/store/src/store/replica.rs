//! What a replicated broker group needs from its store: the leader ships whole records of its
//! log ([`Store::read_raw`]), followers write them at the same positions ([`Store::append_raw`]),
//! a rejoining member cuts an unconfirmed tail its leader does not have ([`Store::truncate`]),
//! and nothing that a failover could take back is ever dispatched: consume queues, the index and
//! dispatch listeners stop at the group's confirm offset ([`Store::set_dispatch_limit`]).
//!
//! Replicas' logs are byte-identical up to their common end: same records at the same offsets,
//! same segment boundaries and fillers (every member must run with the same segment size). A
//! record carries its own commit log offset inside its checksum, so a record written at the
//! wrong place on a follower is refused, not stored.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::{lock, Cursor, InHand, Inner, Store, Writer};
use crate::consume_queue;
use crate::error::{Result, StoreError};
use crate::index;
use crate::record::{self, Slot};

/// A run of whole records read from a replica's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawBatch {
    /// Where the bytes start.
    pub from: u64,
    /// Whole message records, as they are on disk.
    pub bytes: Vec<u8>,
    /// The segment ends with a filler after the bytes: the next record starts at this offset
    /// (the next segment's base).
    pub filler_to: Option<u64>,
}

impl RawBatch {
    /// The log offset after this batch.
    pub fn end(&self) -> u64 {
        self.filler_to
            .unwrap_or(self.from + self.bytes.len() as u64)
    }
}

/// [`Store::set_dispatch_limit`] dispatches up to this many bytes of records on the caller's
/// thread (writes into consume queue and index files the writer allocated already).
const DISPATCH_INLINE_BYTES: u64 = 1 << 20;

impl Store {
    /// Caps dispatch at `offset` (the group's confirm offset); `u64::MAX` removes the cap.
    /// Raising it dispatches what it released on the caller's thread when that is a little,
    /// or leaves it to a pass already running (see `Inner::dispatch_here`): the records a send
    /// waits to see dispatched before it is answered, with no wake-up of the dispatcher thread
    /// on that path. It wakes the dispatcher otherwise.
    pub fn set_dispatch_limit(&self, offset: u64) {
        let i = &self.inner;
        let old = i.dispatch_limit.swap(offset, Ordering::AcqRel);
        if offset <= old {
            return;
        }
        let gap = i
            .dispatch_target()
            .saturating_sub(i.dispatched.load(Ordering::Acquire));
        if gap <= DISPATCH_INLINE_BYTES {
            i.dispatch_here(None);
        } else {
            i.wake_dispatcher();
        }
    }

    /// The current dispatch cap.
    pub fn dispatch_limit(&self) -> u64 {
        self.inner.dispatch_limit.load(Ordering::Acquire)
    }

    /// End of the log: the next record goes here.
    pub fn log_end(&self) -> u64 {
        self.inner.log.write_pos()
    }

    /// Everything below this is on disk.
    pub fn flushed_end(&self) -> u64 {
        self.inner.log.flushed_pos()
    }

    /// Everything below this is in the consume queues and the index.
    pub fn dispatched_end(&self) -> u64 {
        self.inner.dispatched.load(Ordering::Acquire)
    }

    /// Blocks until everything below `end` is on disk (a follower in sync mode acknowledges a
    /// batch only then).
    pub fn wait_flushed(&self, end: u64) -> Result<()> {
        self.inner.wait_flushed(end)
    }

    /// Reads whole records from `from` (a record boundary of this log), about `max_bytes` of
    /// them (always at least one record when there is one), never past `upto` nor past the end
    /// of `from`'s segment. A damaged record is an error: it is never shipped.
    pub fn read_raw(&self, from: u64, max_bytes: usize, upto: u64) -> Result<RawBatch> {
        let i = &self.inner;
        let end = i.log.write_pos().min(upto);
        let mut batch = RawBatch {
            from,
            ..Default::default()
        };
        if from >= end {
            return Ok(batch);
        }
        let min = i.log.min_pos();
        let seg = i.log.segment_for(from).filter(|_| from >= min).ok_or(
            StoreError::OffsetOutOfRange {
                offset: from,
                min,
                max: end,
            },
        )?;
        let seg_size = i.cfg.segment_size;
        let seg_end = seg.base + seg_size;
        let mut pos = from;
        while pos < end && (pos == from || pos - from < max_bytes as u64) {
            let at = (pos - seg.base) as usize;
            let rest = seg.file.slice(at, (seg_end - pos) as usize);
            match record::probe(rest, pos)? {
                Slot::Message(len) => {
                    if pos + len as u64 > end {
                        break;
                    }
                    pos += len as u64;
                }
                Slot::Filler => {
                    if seg_end <= end {
                        batch.filler_to = Some(seg_end);
                    }
                    break;
                }
                Slot::Empty => break,
            }
        }
        batch.bytes = seg
            .file
            .slice((from - seg.base) as usize, (pos - from) as usize)
            .to_vec();
        Ok(batch)
    }

    /// Writes a batch read from the leader's log at `batch.from`, which must be this log's
    /// end, after checking every record (checksum, and the offset it says it lives at). Returns
    /// the new end. In sync flush mode it returns once the batch is on disk.
    pub fn append_raw(&self, batch: &RawBatch) -> Result<u64> {
        let i = &self.inner;
        if let Some(e) = i.stopped_error() {
            return Err(e);
        }
        // Checked before the records (a clearer error) and again under the lock.
        check_start(i, batch)?;
        let records = parse_raw(batch)?;
        let end = {
            let mut w = lock(&i.writer);
            check_start(i, batch)?;
            i.admit_raw(&mut w, &records)?;
            let end = i.log.write_at(batch.from, &batch.bytes, batch.filler_to)?;
            i.log.publish(end);
            end
        };
        i.after_write(records.len() as u64, batch.bytes.len() as u64, end)?;
        Ok(end)
    }

    /// [`Store::append_raw`] when that is a copy into memory, for a follower's async task:
    /// the batch fits in the active segment, every consume queue file and
    /// the index room it needs exist, and the append lock is free. `Ok(None)` means nothing
    /// was written and the caller takes [`Store::append_raw`] on a thread that may block (a
    /// segment's end, a file to allocate, another writer). It does not wait for the flush:
    /// in sync mode the caller awaits [`Store::durable`] for the returned end.
    ///
    /// Why: a follower receives one batch per leader wake-up, often a few records; handing
    /// each to the blocking pool and back cost more thread switches than the copy itself.
    pub fn try_append_raw(&self, batch: &RawBatch) -> Result<Option<u64>> {
        let i = &self.inner;
        if let Some(e) = i.stopped_error() {
            return Err(e);
        }
        if batch.filler_to.is_some() || batch.bytes.is_empty() {
            return Ok(None);
        }
        check_start(i, batch)?;
        let records = parse_raw(batch)?;
        let Some(mut w) = i.try_writer() else {
            return Ok(None);
        };
        check_start(i, batch)?;
        let fits = i.log.room_in_active(batch.bytes.len()).is_some();
        if !fits || !i.raw_ready(&w, &records) {
            return Ok(None);
        }
        i.admit_raw(&mut w, &records)?;
        let end = i.log.write_at(batch.from, &batch.bytes, None)?;
        i.log.publish(end);
        drop(w);
        i.count_written(records.len() as u64, batch.bytes.len() as u64, end);
        i.dispatch_here(Some(InHand {
            start: batch.from,
            records: &batch.bytes,
        }));
        Ok(Some(end))
    }

    /// Cuts the log back to `offset`, dropping records no other replica confirmed (a member
    /// rejoining after a failover, KIP-101). Refused below what was dispatched: that part was
    /// confirmed, and every replica has it. Returns the bytes dropped.
    pub fn truncate(&self, offset: u64) -> Result<u64> {
        let i = &self.inner;
        let mut w = lock(&i.writer);
        let _pass = lock(&i.dispatch_lock);
        let end = i.log.write_pos();
        if offset >= end {
            return Ok(0);
        }
        let dispatched = i.dispatched.load(Ordering::Acquire);
        if offset < dispatched {
            return Err(StoreError::malformed(
                "truncation",
                format!(
                    "offset {offset} is below what consumers may have read ({dispatched}); this replica must be rebuilt"
                ),
            ));
        }
        // The cut records' queue offsets are handed out again: each queue restarts at the
        // lowest one it lost.
        let mut lowest: HashMap<(String, u32), u64> = HashMap::new();
        i.log.for_each_raw(
            offset,
            end,
            u64::MAX,
            |_, rec| {
                let h = record::header(rec)?;
                let topic = record::topic_of(rec)?.to_string();
                let e = lowest.entry((topic, h.queue_id)).or_insert(h.queue_offset);
                *e = (*e).min(h.queue_offset);
                Ok(())
            },
            |pos, e| warn!(offset = pos, error = %e, "damaged record in a truncated tail"),
        )?;
        i.log.truncate_to(offset)?;
        // Never dispatch past the cut: what comes next there is not confirmed yet.
        i.dispatch_limit.fetch_min(offset, Ordering::AcqRel);
        for ((topic, q), first) in lowest {
            if let Some(c) = w.next.get_mut(&topic).and_then(|m| m.get_mut(&q)) {
                c.next = c.next.min(first);
            }
        }
        drop(_pass);
        drop(w);
        i.write_checkpoint()?;
        info!(
            from = offset,
            to = end,
            bytes = end - offset,
            "commit log truncated to the group's history"
        );
        Ok(end - offset)
    }
}

impl Inner {
    /// Prepares what the dispatcher will need for each record of a replicated batch
    /// (consume queue files, index room), advancing the writer's queue cursors.
    fn admit_raw(&self, w: &mut Writer, records: &[RawRecord<'_>]) -> Result<()> {
        for r in records {
            self.prepare_queue(w, r.topic, r.queue_id, r.queue_offset)?;
            self.index
                .reserve(r.index_entries)
                .map_err(|e| self.refuse_for_space(e, self.index.file_bytes()))?;
            self.index.commit_reserved(r.index_entries);
        }
        Ok(())
    }

    /// Whether [`Inner::admit_raw`] would find every consume queue file and the index room
    /// the records need already allocated (so it would not touch the disk).
    fn raw_ready(&self, w: &Writer, records: &[RawRecord<'_>]) -> bool {
        let ready = records.iter().all(|r| {
            w.next
                .get(r.topic)
                .and_then(|q| q.get(&r.queue_id))
                .is_some_and(|c| r.queue_offset < c.file_end)
        });
        ready
            && self
                .index
                .has_room(records.iter().map(|r| r.index_entries).sum())
    }

    /// Makes sure the consume queue file for `queue_offset` exists and moves the queue's
    /// cursor past it.
    fn prepare_queue(
        &self,
        w: &mut Writer,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
    ) -> Result<()> {
        let cursor = w
            .next
            .entry(topic.to_string())
            .or_default()
            .entry(queue_id)
            .or_insert(Cursor {
                next: queue_offset,
                file_end: 0,
            });
        if queue_offset >= cursor.file_end {
            let cq_bytes = self.cfg.cq_entries_per_file * consume_queue::ENTRY_LEN as u64;
            let cq = self
                .cq_or_create(topic, queue_id)
                .map_err(|e| self.refuse_for_space(e, cq_bytes))?;
            let file_bytes = cq.entries_per_file() * consume_queue::ENTRY_LEN as u64;
            cursor.file_end = cq
                .ensure(queue_offset)
                .map_err(|e| self.refuse_for_space(e, file_bytes))?;
        }
        cursor.next = cursor.next.max(queue_offset + 1);
        Ok(())
    }

    /// Moves the writer's queue cursors past the records of `from..to` (records in the log but
    /// not dispatched, whose queue offsets only the log knows).
    pub(super) fn advance_cursors(&self, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let mut w = lock(&self.writer);
        self.log.for_each_raw(
            from,
            to,
            u64::MAX,
            |_, rec| {
                let h = record::header(rec)?;
                let topic = record::topic_of(rec)?;
                let c = w
                    .next
                    .entry(topic.to_string())
                    .or_default()
                    .entry(h.queue_id)
                    .or_insert(Cursor {
                        next: 0,
                        file_end: 0,
                    });
                c.next = c.next.max(h.queue_offset + 1);
                Ok(())
            },
            |pos, e| warn!(offset = pos, error = %e, "damaged record past the dispatched end"),
        )?;
        Ok(())
    }
}

/// What the writer needs of one record of a replicated batch.
struct RawRecord<'a> {
    topic: &'a str,
    queue_id: u32,
    queue_offset: u64,
    index_entries: u64,
}

/// Checks a replicated batch record by record (checksum, the offset each says it lives at,
/// nothing but whole records) and says what each needs from the writer.
fn parse_raw(batch: &RawBatch) -> Result<Vec<RawRecord<'_>>> {
    let mut pos = batch.from;
    let mut rest: &[u8] = &batch.bytes;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let len = match record::probe(rest, pos)? {
            Slot::Message(len) => len as usize,
            Slot::Filler | Slot::Empty => {
                return Err(StoreError::malformed(
                    "replicated batch",
                    format!("no whole record at {pos}"),
                ))
            }
        };
        let (rec, tail) = rest.split_at(len);
        let h = record::header(rec)?;
        let mut id = None;
        let mut keys = None;
        record::for_each_property(rec, |k, v| match k {
            crate::PROP_MSG_ID => id = Some(v),
            crate::PROP_KEYS => keys = Some(v),
            _ => {}
        })?;
        records.push(RawRecord {
            topic: record::topic_of(rec)?,
            queue_id: h.queue_id,
            queue_offset: h.queue_offset,
            index_entries: index::entries_for(id, keys),
        });
        pos += len as u64;
        rest = tail;
    }
    Ok(records)
}

/// A replicated batch must start at this log's end; the caller holds the append lock.
fn check_start(i: &Inner, batch: &RawBatch) -> Result<()> {
    let at = i.log.write_pos();
    if batch.from != at {
        return Err(StoreError::malformed(
            "replicated batch",
            format!("starts at {} but this log ends at {at}", batch.from),
        ));
    }
    Ok(())
}
