//! Settling deliveries: ack, a new invisibility deadline (a nack or an extension), and the
//! dead-letter topic; plus committing how far each group has settled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use ferromq_store::{MessageType, NewMessage, StoredMessage, TryPersist};
use tracing::{info, warn};

use super::queue::{EntryState, QueueState};
use super::Deliveries;
use crate::error::EngineError;
use crate::props;
use crate::receipt::ReceiptHandle;
use crate::topics::{dlq_topic, ensure_dlq_topic};

impl Deliveries {
    /// The queue state of the delivery `h` names, if `h` comes from this instance.
    fn delivery_queue(
        &self,
        group: &str,
        topic: &str,
        h: &ReceiptHandle,
    ) -> Result<Arc<Mutex<QueueState>>, EngineError> {
        let st = self.known_queue(group, topic, h.queue_id).ok_or_else(|| {
            EngineError::UnknownDelivery {
                group: group.to_string(),
                topic: topic.to_string(),
            }
        })?;
        if h.instance != self.instance {
            return Err(EngineError::HandleFromBeforeRestart);
        }
        Ok(st)
    }

    /// Runs `f` on the queue state of the delivery `h` names, once `h` is known to be the
    /// latest handle of a message still out; otherwise answers why it is not.
    fn with_delivery<R>(
        &self,
        group: &str,
        topic: &str,
        h: &ReceiptHandle,
        f: impl FnOnce(&mut QueueState) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        let st = self.delivery_queue(group, topic, h)?;
        let mut st = st.lock();
        still_out(&st, h)?;
        f(&mut st)
    }

    /// Settles a delivery. Once it returns Ok the consumer offset is written as durably as the
    /// store's flush mode writes messages (see `OffsetStore::persist`).
    pub fn ack(&self, group: &str, topic: &str, h: &ReceiptHandle) -> Result<(), EngineError> {
        if self.ack_in_memory(group, topic, h)? {
            self.persist_offsets()?;
        }
        Ok(())
    }

    /// Settles a delivery in memory; returns whether the group's offset moved, in which case
    /// the caller must [`Deliveries::persist_offsets`] before answering (one write can then
    /// cover a whole batch of acks).
    pub fn ack_in_memory(
        &self,
        group: &str,
        topic: &str,
        h: &ReceiptHandle,
    ) -> Result<bool, EngineError> {
        self.with_delivery(group, topic, h, |st| {
            st.unsettled.remove(&h.offset);
            self.store_low_water(group, topic, h.queue_id, st, false)
        })
    }

    /// [`Deliveries::ack_in_memory`] for a caller that must not wait (an async worker): `None`
    /// when the queue's state is locked by someone else (a receive may be reading the store
    /// under it), in which case nothing was done.
    pub fn try_ack_in_memory(
        &self,
        group: &str,
        topic: &str,
        h: &ReceiptHandle,
    ) -> Option<Result<bool, EngineError>> {
        let st = match self.delivery_queue(group, topic, h) {
            Ok(st) => st,
            Err(e) => return Some(Err(e)),
        };
        let mut st = st.try_lock()?;
        Some(still_out(&st, h).and_then(|()| {
            st.unsettled.remove(&h.offset);
            self.store_low_water(group, topic, h.queue_id, &mut st, false)
        }))
    }

    /// A ticket for [`Deliveries::try_persist_offsets`], taken once the acks it is for are
    /// settled in memory.
    pub fn persist_ticket(&self) -> u64 {
        self.store.offsets().ticket()
    }

    /// [`Deliveries::persist_offsets`] for a caller that must not wait, for the offsets
    /// recorded before `ticket` was taken (see `OffsetStore::try_persist`);
    /// [`TryPersist::Block`] always in a replicated group, whose offsets are also journaled.
    pub fn try_persist_offsets(&self, ticket: u64) -> Result<TryPersist, EngineError> {
        if self.journal.is_some() {
            return Ok(TryPersist::Block);
        }
        Ok(self.store.offsets().try_persist(ticket)?)
    }

    /// Writes every offset recorded so far (on disk with `--flush sync`, in the page cache
    /// otherwise, synced by the store's housekeeping) and journals the ones that moved, in a
    /// replicated group. Runs outside the queue locks so receives never wait for an fsync;
    /// concurrent callers share one write (the store coalesces them).
    pub fn persist_offsets(&self) -> Result<(), EngineError> {
        self.store.offsets().persist()?;
        self.journal_offsets()
    }

    /// Journals the offsets that moved since the last journal entry (replicated groups).
    pub(super) fn journal_offsets(&self) -> Result<(), EngineError> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        // Shared with other writers, exclusive of a topic delete, which drops the moved offsets
        // of its topic: none of them is journaled after the deletion.
        let _gate = self.topic_gate.read_recursive();
        let moved: Vec<(String, String, u32, u64)> = std::mem::take(&mut *self.moved.lock())
            .into_iter()
            .map(|((g, t, q), o)| (g, t, q, o))
            .collect();
        if !moved.is_empty() {
            j.record(&crate::journal::Change::Offsets { offsets: moved })?;
        }
        Ok(())
    }

    /// Moves the invisibility deadline of a delivery; returns the handle to use from now on.
    pub fn change_invisible(
        &self,
        group: &str,
        topic: &str,
        h: &ReceiptHandle,
        invisible: Duration,
    ) -> Result<ReceiptHandle, EngineError> {
        self.with_delivery(group, topic, h, |st| {
            let handle = self.new_handle(h.queue_id, h.offset);
            if let Some(e) = st.unsettled.get_mut(&h.offset) {
                e.state = EntryState::Invisible {
                    until: Instant::now() + invisible,
                    epoch: handle.epoch,
                };
                // The client chose a deadline (a nack or an extension): stop renewing for it.
                e.renewal = None;
            }
            Ok(handle)
        })
    }

    /// Moves a delivered message to the group's dead-letter topic now (client-driven, FIFO
    /// push consumers after their local retries).
    pub fn forward_to_dlq(
        &self,
        group: &str,
        topic: &str,
        h: &ReceiptHandle,
    ) -> Result<(), EngineError> {
        self.with_delivery(group, topic, h, |st| {
            self.dead_letter(group, topic, h.queue_id, h.offset, st)?;
            self.store_low_water(group, topic, h.queue_id, st, true)
                .map(|_| ())
        })
    }

    /// Appends the entry's message to `%DLQ%<group>` and settles it. An entry whose message
    /// cannot be read any more is dropped with a warning (there is nothing to move).
    pub(super) fn dead_letter(
        &self,
        group: &str,
        topic: &str,
        q: u32,
        off: u64,
        st: &mut QueueState,
    ) -> Result<(), EngineError> {
        let Some(e) = st.unsettled.get(&off).cloned() else {
            return Ok(());
        };
        let original = match self.store.message_at(e.phys_offset) {
            Ok(m) => m,
            Err(err) => {
                warn!(group, topic, queue = q, offset = off, error = %err, "message to dead-letter is unreadable; dropped");
                st.unsettled.remove(&off);
                return Ok(());
            }
        };
        let m = dead_letter_copy(as_new(original), group, topic, e.attempts);
        ensure_dlq_topic(&self.store, self.journal.as_ref(), &m.topic)?;
        self.store.append(&m)?;
        info!(group, topic, queue = q, offset = off, attempts = e.attempts, dlq = %m.topic, "message moved to dead-letter topic");
        self.count_dead_letter(group, topic);
        st.unsettled.remove(&off);
        Ok(())
    }

    /// Counts a message of `topic` moved to `group`'s dead-letter topic (for metrics).
    pub(crate) fn count_dead_letter(&self, group: &str, topic: &str) {
        *self
            .dead_lettered
            .lock()
            .entry((group.to_string(), topic.to_string()))
            .or_insert(0) += 1;
    }

    /// Records the group's offset if it moved (returns whether it did): durably at once when
    /// `durable`, else in memory for the store's background flush or the caller's persist.
    pub(super) fn store_low_water(
        &self,
        group: &str,
        topic: &str,
        q: u32,
        st: &mut QueueState,
        durable: bool,
    ) -> Result<bool, EngineError> {
        let low = st.low_water();
        if low == st.committed {
            return Ok(false);
        }
        // Not for a topic deleted meanwhile: its offsets are gone and must stay gone.
        let _gate = self.topic_gate.read_recursive();
        if !self.is_current(topic, st) {
            return Ok(false);
        }
        st.committed = low;
        if self.journal.is_some() {
            self.moved
                .lock()
                .insert((group.to_string(), topic.to_string(), q), low);
        }
        if durable {
            self.store.offsets().commit(group, topic, q, low)?;
            self.journal_offsets()?;
        } else {
            self.store.offsets().set(group, topic, q, low);
        }
        Ok(true)
    }
}

/// Whether `h` is the latest handle of a message still out.
fn still_out(st: &QueueState, h: &ReceiptHandle) -> Result<(), EngineError> {
    if st
        .unsettled
        .get(&h.offset)
        .is_some_and(|e| e.is_out_under(h.epoch))
    {
        Ok(())
    } else {
        Err(EngineError::StaleHandle)
    }
}

/// A stored message as a message to store again (its offsets and store fields dropped).
pub(crate) fn as_new(m: StoredMessage) -> NewMessage {
    NewMessage {
        topic: m.topic,
        queue_id: m.queue_id,
        born_timestamp_ms: m.born_timestamp_ms,
        born_host: m.born_host,
        flags: m.flags,
        reconsume_times: m.reconsume_times,
        properties: m.properties,
        body: m.body.into(),
    }
}

/// The copy of a message that goes to `group`'s dead-letter topic after `attempts`
/// deliveries from `origin_topic`: one format whichever way a message got there (pop delivery
/// ran out of attempts, or an offset-based consumer's retries did).
pub(crate) fn dead_letter_copy(
    m: NewMessage,
    group: &str,
    origin_topic: &str,
    attempts: u32,
) -> NewMessage {
    let mut properties = m.properties;
    properties.insert(props::DLQ_ORIGIN_TOPIC.into(), origin_topic.into());
    properties.insert(props::DLQ_ATTEMPTS.into(), attempts.to_string());
    // Consumers of the DLQ are not FIFO-bound by the original group (kept aside for a resend),
    // nor retried copies; every group reading the DLQ sees a letter that was resent before.
    if let Some(g) = properties.remove(props::MESSAGE_GROUP) {
        properties.insert(props::DLQ_MESSAGE_GROUP.into(), g);
    }
    properties.remove(props::RETRY_ORIGIN_TOPIC);
    properties.remove(props::RESEND_GROUP);
    properties.insert(
        props::MESSAGE_TYPE.into(),
        props::type_code(MessageType::Normal).to_string(),
    );
    NewMessage {
        topic: dlq_topic(group),
        queue_id: 0,
        born_timestamp_ms: m.born_timestamp_ms,
        born_host: m.born_host,
        flags: m.flags,
        reconsume_times: attempts,
        properties,
        body: m.body,
    }
}
