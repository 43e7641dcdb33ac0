//! The delivery state of one (consumer group, topic, queue): which messages are out
//! (invisible), which wait, and how far the group has read and settled.

use std::time::{Duration, Instant};

/// Longest a push consumer may hold one delivery through automatic renewal.
pub(super) const MAX_RENEWED_HOLD: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct QueueKey {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EntryState {
    /// Read and deliverable, but not handed out: new, or waiting for an earlier message of its
    /// FIFO group to be settled, or inside a PRIORITY queue's read-ahead window.
    Pending,
    /// Handed out; invisible until `until`.
    Invisible { until: Instant, epoch: u64 },
}

/// Automatic renewal of a push consumer's delivery.
#[derive(Debug, Clone)]
pub(super) struct Renewal {
    pub client_id: String,
    pub invisible: Duration,
    pub give_up_at: Instant,
}

/// A message the group has read and not settled.
#[derive(Debug, Clone)]
pub(super) struct Unsettled {
    pub phys_offset: u64,
    /// Deliveries so far.
    pub attempts: u32,
    pub message_group: Option<String>,
    pub state: EntryState,
    pub renewal: Option<Renewal>,
    /// PRIORITY messages: their priority (0 otherwise).
    pub priority: i32,
}

impl Unsettled {
    /// Invisible until a time still to come.
    pub fn is_out(&self, now: Instant) -> bool {
        matches!(self.state, EntryState::Invisible { until, .. } if until > now)
    }

    /// Handed out, its time is up, and it has had every delivery it may get.
    pub fn is_exhausted(&self, now: Instant, max_attempts: u32) -> bool {
        matches!(self.state, EntryState::Invisible { until, .. } if until <= now)
            && self.attempts >= max_attempts
    }

    /// Whether `epoch` is the delivery this entry is out under.
    pub fn is_out_under(&self, epoch: u64) -> bool {
        matches!(self.state, EntryState::Invisible { epoch: e, .. } if e == epoch)
    }
}

#[derive(Debug, Default)]
pub(super) struct QueueState {
    /// The topic's incarnation when this state was created (see
    /// `ferromq_store::TopicStore::incarnation`): a state of a deleted topic never writes an
    /// offset or hands out a message of the topic created again under the name.
    pub incarnation: u64,
    /// Next offset this group has never read.
    pub next_offset: u64,
    /// Offset last written to the store's consumer offsets.
    pub committed: u64,
    pub unsettled: std::collections::BTreeMap<u64, Unsettled>,
    /// The group's max attempts as of the last receive (for the background reaper).
    pub max_attempts: u32,
}

impl QueueState {
    pub fn starting_at(offset: u64, incarnation: u64) -> QueueState {
        QueueState {
            incarnation,
            next_offset: offset,
            committed: offset,
            ..Default::default()
        }
    }

    /// The lowest offset not settled: every message below it is settled for the group.
    pub fn low_water(&self) -> u64 {
        self.unsettled
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_offset)
            .min(self.next_offset)
    }

    /// Read but not handed out.
    pub fn waiting(&self) -> usize {
        self.unsettled
            .values()
            .filter(|e| e.state == EntryState::Pending)
            .count()
    }

    /// Handed out and not settled.
    pub fn inflight(&self) -> u64 {
        self.unsettled
            .values()
            .filter(|e| matches!(e.state, EntryState::Invisible { .. }))
            .count() as u64
    }
}
