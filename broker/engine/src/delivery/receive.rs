//! Handing messages out: one read-ahead loop brings new messages of a queue in as waiting
//! entries, one sweep over the unsettled entries hands out what may go (in offset order, or by
//! priority on PRIORITY topics), keeping FIFO groups to one message in flight and collecting
//! what has used up its deliveries for the dead-letter topic.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use ferromq_store::StoredMessage;
use tracing::warn;

use super::queue::{EntryState, QueueState, Renewal, Unsettled, MAX_RENEWED_HOLD};
use super::{Deliveries, Delivery, ReceiveOutcome, ReceiveSpec, PRIORITY_WINDOW};
use crate::error::EngineError;
use crate::props;
use crate::receipt::ReceiptHandle;

/// Most messages a queue may hold read and unsettled (waiting behind busy FIFO groups, or in
/// flight) before reading stops.
const MAX_UNSETTLED_PER_QUEUE: usize = 10_000;

/// Most store reads one receive makes in one queue, so a filter that matches nothing in a long
/// backlog cannot hold the queue for long.
const MAX_READS_PER_RECEIVE: u32 = 64;

/// What one receive on one queue has seen so far.
struct Sweep {
    now: Instant,
    /// FIFO groups that may not get another message now.
    busy: HashSet<String>,
    /// Messages read by this receive, kept so handing them out does not read them again.
    fresh: BTreeMap<u64, StoredMessage>,
    /// Entries that used up their deliveries.
    exhausted: Vec<u64>,
    /// Store reads left.
    reads: u32,
}

impl Sweep {
    fn mark_busy(&mut self, fifo: bool, e: &Unsettled) {
        if let (true, Some(g)) = (fifo, &e.message_group) {
            self.busy.insert(g.clone());
        }
    }

    fn is_busy(&self, fifo: bool, e: &Unsettled) -> bool {
        fifo && e
            .message_group
            .as_ref()
            .is_some_and(|g| self.busy.contains(g))
    }
}

impl Deliveries {
    /// Hands out up to `spec.batch` messages: expired and waiting ones first (oldest first, or
    /// highest priority first), then new ones.
    pub fn receive(&self, spec: &ReceiveSpec<'_>) -> Result<ReceiveOutcome, EngineError> {
        if let Some(again) = self.repeat_attempt(spec) {
            return Ok(again);
        }
        let mut out = ReceiveOutcome::default();
        for &q in &spec.queues {
            if out.deliveries.len() >= spec.batch {
                break;
            }
            let st = self.state(spec.group, spec.topic, q);
            let mut st = st.lock();
            // A state of a deleted topic hands out nothing (the topic may exist again).
            let _gate = self.topic_gate.read_recursive();
            if !self.is_current(spec.topic, &st) {
                continue;
            }
            st.max_attempts = spec.max_attempts;
            self.receive_queue(spec, q, &mut st, &mut out)?;
            self.store_low_water(spec.group, spec.topic, q, &mut st, false)?;
        }
        if let (Some(a), false) = (&spec.attempt, out.deliveries.is_empty()) {
            self.attempts
                .remember(spec.group, spec.topic, a, &out.deliveries);
        }
        Ok(out)
    }

    /// Whether a receive on `queues` would read only recent records (see
    /// `Store::is_recent`), so it may run on an async worker: for each queue, its oldest
    /// unsettled message and its next new one. A queue the group has not read yet, or whose
    /// state another receive holds, does not count as recent.
    pub fn reads_recent(&self, group: &str, topic: &str, queues: &[u32]) -> bool {
        queues.iter().all(|&q| {
            let Some(st) = self.known_queue(group, topic, q) else {
                return false;
            };
            let next = {
                let Some(st) = st.try_lock() else {
                    return false;
                };
                if let Some((_, e)) = st.unsettled.first_key_value() {
                    if !self.store.is_recent(e.phys_offset) {
                        return false;
                    }
                }
                st.next_offset
            };
            if next >= self.store.queue_range(topic, q).1 {
                return true;
            }
            let entry = self.store.queue_entry(topic, q, next);
            matches!(entry, Ok(Some(e)) if self.store.is_recent(e.phys_offset))
        })
    }

    /// The messages a previous receive with the same attempt handed out and that are still
    /// held under that delivery, with their original handles; `None` when there are none.
    fn repeat_attempt(&self, spec: &ReceiveSpec<'_>) -> Option<ReceiveOutcome> {
        let remembered = self
            .attempts
            .recall(spec.group, spec.topic, spec.attempt.as_deref()?)?;
        let mut out = ReceiveOutcome::default();
        for r in remembered {
            let Some(st) = self.known_queue(spec.group, spec.topic, r.queue_id) else {
                continue;
            };
            let st = st.lock();
            let Some(e) = st.unsettled.get(&r.offset) else {
                continue;
            };
            if !e.is_out_under(r.epoch) {
                continue;
            }
            if let Ok(message) = self.store.message_at(e.phys_offset) {
                out.deliveries.push(Delivery {
                    message,
                    attempt: e.attempts,
                    handle: ReceiptHandle {
                        instance: self.instance,
                        queue_id: r.queue_id,
                        offset: r.offset,
                        epoch: r.epoch,
                    },
                    invisible: spec.invisible,
                });
            }
        }
        (!out.deliveries.is_empty()).then_some(out)
    }

    fn receive_queue(
        &self,
        spec: &ReceiveSpec<'_>,
        q: u32,
        st: &mut QueueState,
        out: &mut ReceiveOutcome,
    ) -> Result<(), EngineError> {
        let mut sweep = Sweep {
            now: Instant::now(),
            busy: HashSet::new(),
            fresh: BTreeMap::new(),
            exhausted: Vec::new(),
            reads: MAX_READS_PER_RECEIVE,
        };
        if spec.priority {
            // Fill the window first: a later message may outrank everything already waiting.
            let mut room = PRIORITY_WINDOW.saturating_sub(st.waiting());
            while room > 0 {
                let Some(n) = self.read_ahead(spec, q, st, room, &mut sweep)? else {
                    break;
                };
                room -= n;
            }
            self.hand_out_from(spec, q, st, 0, &mut sweep, out);
        } else {
            self.hand_out_from(spec, q, st, 0, &mut sweep, out);
            while out.deliveries.len() < spec.batch {
                let from = st.next_offset;
                let want = spec.batch - out.deliveries.len();
                if self.read_ahead(spec, q, st, want, &mut sweep)?.is_none() {
                    break;
                }
                self.hand_out_from(spec, q, st, from, &mut sweep, out);
            }
        }
        for off in std::mem::take(&mut sweep.exhausted) {
            self.dead_letter(spec.group, spec.topic, q, off, st)?;
        }
        Ok(())
    }

    /// One store read of up to `want` new messages passing the filter, added as waiting
    /// entries; returns how many, or `None` when it could not move on (nothing readable yet,
    /// the queue full of unsettled entries, or the reads of this receive used up). Advances
    /// `next_offset` past what the filter skipped.
    fn read_ahead(
        &self,
        spec: &ReceiveSpec<'_>,
        q: u32,
        st: &mut QueueState,
        want: usize,
        sweep: &mut Sweep,
    ) -> Result<Option<usize>, EngineError> {
        let (_, max_off) = self.store.queue_range(spec.topic, q);
        if want == 0
            || sweep.reads == 0
            || st.next_offset >= max_off
            || st.unsettled.len() >= MAX_UNSETTLED_PER_QUEUE
        {
            return Ok(None);
        }
        sweep.reads -= 1;
        let start = st.next_offset;
        let want = want.min(MAX_UNSETTLED_PER_QUEUE - st.unsettled.len());
        let r = self
            .store
            .read(spec.topic, q, st.next_offset, want, Some(spec.filter))?;
        let mut n = 0;
        for m in r.messages {
            st.next_offset = m.queue_offset + 1;
            // A dead letter sent back for another group: this group settled it long ago.
            if m.properties
                .get(props::RESEND_GROUP)
                .is_some_and(|g| g != spec.group)
            {
                continue;
            }
            let priority = if spec.priority {
                m.properties
                    .get(props::PRIORITY)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0)
            } else {
                0
            };
            st.unsettled.insert(
                m.queue_offset,
                Unsettled {
                    phys_offset: m.phys_offset,
                    attempts: 0,
                    message_group: m.properties.get(props::MESSAGE_GROUP).cloned(),
                    state: EntryState::Pending,
                    renewal: None,
                    priority,
                },
            );
            sweep.fresh.insert(m.queue_offset, m);
            n += 1;
        }
        st.next_offset = st.next_offset.max(r.next_offset).max(r.min_offset);
        // Nothing readable yet (not dispatched): stop instead of spinning.
        Ok((st.next_offset > start).then_some(n))
    }

    /// The sweep over unsettled entries at or after `from`: notes when invisible ones expire,
    /// collects exhausted ones, and hands out waiting and expired ones while the batch has room,
    /// in offset order (by priority first on PRIORITY topics), one per FIFO group.
    fn hand_out_from(
        &self,
        spec: &ReceiveSpec<'_>,
        q: u32,
        st: &mut QueueState,
        from: u64,
        sweep: &mut Sweep,
        out: &mut ReceiveOutcome,
    ) {
        let mut candidates: Vec<(Reverse<i32>, u64)> = Vec::new();
        for (&off, e) in st.unsettled.range(from..) {
            if e.is_out(sweep.now) {
                if let EntryState::Invisible { until, .. } = e.state {
                    out.next_expiry = Some(out.next_expiry.map_or(until, |n| n.min(until)));
                }
                sweep.mark_busy(spec.fifo, e);
            } else if e.is_exhausted(sweep.now, spec.max_attempts) {
                sweep.exhausted.push(off);
            } else {
                candidates.push((Reverse(if spec.priority { e.priority } else { 0 }), off));
            }
        }
        if spec.priority {
            candidates.sort_unstable();
        }
        for (_, off) in candidates {
            let Some(e) = st.unsettled.get(&off) else {
                continue;
            };
            if sweep.is_busy(spec.fifo, e) || out.deliveries.len() >= spec.batch {
                sweep.mark_busy(spec.fifo, e);
                continue;
            }
            let message = match sweep.fresh.remove(&off) {
                Some(m) => m,
                None => match self.store.message_at(e.phys_offset) {
                    Ok(m) => m,
                    Err(err) => {
                        warn!(group = spec.group, topic = spec.topic, queue = q, offset = off, error = %err, "unsettled message unreadable; dropped");
                        st.unsettled.remove(&off);
                        continue;
                    }
                },
            };
            let Some(e) = st.unsettled.get_mut(&off) else {
                continue;
            };
            sweep.mark_busy(spec.fifo, e);
            out.deliveries
                .push(self.hand_out(spec, q, off, e, message, sweep.now));
        }
    }

    /// Puts an entry out under a new handle.
    fn hand_out(
        &self,
        spec: &ReceiveSpec<'_>,
        q: u32,
        off: u64,
        e: &mut Unsettled,
        message: StoredMessage,
        now: Instant,
    ) -> Delivery {
        let handle = self.new_handle(q, off);
        e.attempts += 1;
        e.state = EntryState::Invisible {
            until: now + spec.invisible,
            epoch: handle.epoch,
        };
        e.renewal = spec.renew_for.map(|c| Renewal {
            client_id: c.to_string(),
            invisible: spec.invisible,
            give_up_at: now + MAX_RENEWED_HOLD,
        });
        Delivery {
            message,
            attempt: e.attempts,
            handle,
            invisible: spec.invisible,
        }
    }

    pub(super) fn new_handle(&self, queue_id: u32, offset: u64) -> ReceiptHandle {
        ReceiptHandle {
            instance: self.instance,
            queue_id,
            offset,
            epoch: self.epoch.fetch_add(1, Ordering::Relaxed),
        }
    }
}
