//! Pop-style delivery: which message each consumer group gets next, which ones are invisible
//! (handed out and not yet settled), redelivery, dead-lettering and FIFO message-group order.
//!
//! ## State and durability (the choice made for standalone)
//! State lives in memory, one [`QueueState`] per (group, topic, queue). Only one number is
//! persisted: the group's consumer offset in the store, which is always the lowest offset that
//! is not settled yet (every message below it is acked, dead-lettered or filtered out). An ack
//! that moves it commits it durably before the ack is answered. After a restart, delivery
//! starts again from that offset: acked-and-committed messages never come back, unacked ones
//! are delivered again (with `delivery_attempt` starting at 1 again, and acked messages above
//! an unacked one delivered again too: at-least-once). A group seen for the first time starts
//! at the oldest message still stored, so messages sent before a consumer started are not lost.
//!
//! ## Rules
//! - A delivered message is invisible until `now + invisible_duration`; acked, it is settled.
//!   Not acked in time, it becomes deliverable again with `delivery_attempt + 1`; once it has
//!   been delivered `max_attempts` times and expires again, it is appended to `%DLQ%<group>`
//!   and settled. ChangeInvisibleDuration moves the deadline (a nack with the client's backoff).
//! - FIFO (per group and topic): among the unsettled messages of one message group, only the
//!   lowest offset may be in flight; later ones wait (as `Pending`) until it is settled.
//!   Producers hash a message group to one queue, so per-queue tracking preserves group order.
//! - Every delivery gets a new epoch inside its receipt handle; only the latest handle settles.
//! - PRIORITY topics: the engine reads up to [`PRIORITY_WINDOW`] waiting messages of a queue
//!   ahead and hands out the highest priority first, send order among equals. A message that
//!   arrives later with a higher priority overtakes everything still waiting in that window.
//!
//! All methods block on store I/O: call them from `spawn_blocking`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferromq_proto::v2::Code;
use ferromq_store::{
    MessageType, NewMessage, Permission, Store, StoredMessage, TagFilter, TopicConfig,
};
use tracing::{info, warn};

use crate::props;
use crate::receipt::ReceiptHandle;
use crate::status::RpcError;

/// Most messages a queue may hold waiting behind busy FIFO groups before reading stops.
const MAX_PENDING_PER_QUEUE: usize = 10_000;

/// Waiting messages of a PRIORITY queue compared when choosing what to deliver next.
pub const PRIORITY_WINDOW: usize = 1024;

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: StoredMessage,
    pub attempt: u32,
    pub handle: ReceiptHandle,
    pub invisible: Duration,
}

/// What a receive wants.
#[derive(Debug, Clone)]
pub struct ReceiveSpec<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// Queues to serve, in the order to try them.
    pub queues: Vec<u32>,
    pub batch: usize,
    pub invisible: Duration,
    pub filter: &'a TagFilter,
    pub fifo: bool,
    /// The topic is a PRIORITY topic.
    pub priority: bool,
    pub max_attempts: u32,
    /// Push consumers ask the server to keep their messages invisible while they are alive
    /// (`auto_renew`); this is their client id.
    pub renew_for: Option<&'a str>,
    /// Client id and `attempt_id` of a push consumer's receive: a retry of a receive whose
    /// answer was lost carries the same one and gets the same messages back.
    pub attempt: Option<String>,
}

/// How long the messages of a receive attempt are remembered for a retry.
const ATTEMPT_MEMORY: Duration = Duration::from_secs(120);

/// (group, topic, client id + attempt id) of a push consumer's receive.
type AttemptKey = (String, String, String);

/// A delivery remembered for a retried receive attempt.
#[derive(Debug, Clone)]
struct Remembered {
    queue_id: u32,
    offset: u64,
    epoch: u64,
}

/// Longest a push consumer may hold one delivery through automatic renewal.
const MAX_RENEWED_HOLD: Duration = Duration::from_secs(30 * 60);

/// Automatic renewal of a push consumer's delivery.
#[derive(Debug, Clone)]
struct Renewal {
    client_id: String,
    invisible: Duration,
    give_up_at: Instant,
}

/// What a receive found, plus when something may become deliverable without a new message.
#[derive(Debug, Default)]
pub struct ReceiveOutcome {
    pub deliveries: Vec<Delivery>,
    pub next_expiry: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueueKey {
    group: String,
    topic: String,
    queue_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryState {
    /// Read, but waiting for an earlier message of its FIFO group to be settled.
    Pending,
    /// Handed out; invisible until `until`.
    Invisible { until: Instant, epoch: u64 },
}

#[derive(Debug, Clone)]
struct Unsettled {
    phys_offset: u64,
    /// Deliveries so far.
    attempts: u32,
    message_group: Option<String>,
    state: EntryState,
    renewal: Option<Renewal>,
    /// PRIORITY messages: their priority (0 otherwise).
    priority: i32,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Next offset this group has never read.
    next_offset: u64,
    /// Offset last written to the store's consumer offsets.
    committed: u64,
    unsettled: BTreeMap<u64, Unsettled>,
    /// The group's max attempts as of the last receive (for the background reaper).
    max_attempts: u32,
}

impl QueueState {
    fn low_water(&self) -> u64 {
        self.unsettled
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_offset)
            .min(self.next_offset)
    }
}

/// Progress of one (group, topic, queue) for admin views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueProgress {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub committed: u64,
    pub inflight: u64,
}

/// The delivery engine of one broker.
pub struct Deliveries {
    store: Arc<Store>,
    /// Random per start; part of every receipt handle.
    instance: u64,
    epoch: AtomicU64,
    queues: Mutex<HashMap<QueueKey, Arc<Mutex<QueueState>>>>,
    /// Messages moved to dead-letter topics since start, per group (for metrics).
    dead_lettered: Mutex<HashMap<String, u64>>,
    /// Recent receive attempts of push consumers: (group, topic, attempt) -> what they got.
    attempts: Mutex<HashMap<AttemptKey, (Instant, Vec<Remembered>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Name of a group's dead-letter topic.
pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

impl Deliveries {
    pub fn new(store: Arc<Store>) -> Deliveries {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let instance = (nanos ^ (std::process::id() as u64).rotate_left(32)) | 1;
        Deliveries {
            store,
            instance,
            epoch: AtomicU64::new(1),
            queues: Mutex::new(HashMap::new()),
            dead_lettered: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    pub fn instance(&self) -> u64 {
        self.instance
    }

    fn state(&self, group: &str, topic: &str, queue_id: u32) -> Arc<Mutex<QueueState>> {
        let key = QueueKey {
            group: group.into(),
            topic: topic.into(),
            queue_id,
        };
        let mut map = lock(&self.queues);
        if let Some(s) = map.get(&key) {
            return s.clone();
        }
        let start = match self.store.offsets().get(group, topic, queue_id) {
            Some(o) => o,
            None => self.store.queue_range(topic, queue_id).0,
        };
        let s = Arc::new(Mutex::new(QueueState {
            next_offset: start,
            committed: start,
            max_attempts: 0,
            ..Default::default()
        }));
        map.insert(key, s.clone());
        s
    }

    fn new_handle(&self, queue_id: u32, offset: u64) -> ReceiptHandle {
        ReceiptHandle {
            instance: self.instance,
            queue_id,
            offset,
            epoch: self.epoch.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Hands out up to `spec.batch` messages: expired and waiting ones first (oldest first),
    /// then new ones.
    pub fn receive(&self, spec: &ReceiveSpec<'_>) -> Result<ReceiveOutcome, RpcError> {
        if let Some(again) = self.repeat_attempt(spec) {
            return Ok(again);
        }
        let out = self.receive_fresh(spec)?;
        if let (Some(a), false) = (&spec.attempt, out.deliveries.is_empty()) {
            let now = Instant::now();
            let mut attempts = lock(&self.attempts);
            attempts.retain(|_, (at, _)| now.duration_since(*at) < ATTEMPT_MEMORY);
            let remembered = out
                .deliveries
                .iter()
                .map(|d| Remembered {
                    queue_id: d.handle.queue_id,
                    offset: d.handle.offset,
                    epoch: d.handle.epoch,
                })
                .collect();
            attempts.insert(
                (spec.group.to_string(), spec.topic.to_string(), a.clone()),
                (now, remembered),
            );
        }
        Ok(out)
    }

    /// The messages a previous receive with the same attempt handed out and that are still
    /// held under that delivery, with their original handles; `None` when there are none.
    fn repeat_attempt(&self, spec: &ReceiveSpec<'_>) -> Option<ReceiveOutcome> {
        let a = spec.attempt.as_ref()?;
        let (at, remembered) = lock(&self.attempts)
            .get(&(spec.group.to_string(), spec.topic.to_string(), a.clone()))
            .cloned()?;
        if at.elapsed() >= ATTEMPT_MEMORY {
            return None;
        }
        let mut out = ReceiveOutcome::default();
        for r in remembered {
            let Some(st) = self.known_queue(spec.group, spec.topic, r.queue_id) else {
                continue;
            };
            let st = lock(&st);
            let Some(e) = st.unsettled.get(&r.offset) else {
                continue;
            };
            if !matches!(e.state, EntryState::Invisible { epoch, .. } if epoch == r.epoch) {
                continue;
            }
            if let Ok(message) = self.store.message_at(e.phys_offset) {
                let handle = ReceiptHandle {
                    instance: self.instance,
                    queue_id: r.queue_id,
                    offset: r.offset,
                    epoch: r.epoch,
                };
                out.deliveries.push(Delivery {
                    message,
                    attempt: e.attempts,
                    handle,
                    invisible: spec.invisible,
                });
            }
        }
        (!out.deliveries.is_empty()).then_some(out)
    }

    fn receive_fresh(&self, spec: &ReceiveSpec<'_>) -> Result<ReceiveOutcome, RpcError> {
        let mut out = ReceiveOutcome::default();
        for &q in &spec.queues {
            if out.deliveries.len() >= spec.batch {
                break;
            }
            let st = self.state(spec.group, spec.topic, q);
            let mut st = lock(&st);
            st.max_attempts = spec.max_attempts;
            self.receive_queue(spec, q, &mut st, &mut out)?;
            self.store_low_water(spec.group, spec.topic, q, &mut st, false)?;
        }
        Ok(out)
    }

    fn receive_queue(
        &self,
        spec: &ReceiveSpec<'_>,
        q: u32,
        st: &mut QueueState,
        out: &mut ReceiveOutcome,
    ) -> Result<(), RpcError> {
        if spec.priority {
            return self.receive_queue_by_priority(spec, q, st, out);
        }
        let now = Instant::now();
        // FIFO groups that may not get another message now.
        let mut busy: HashSet<String> = HashSet::new();
        let mut expired_to_dlq = Vec::new();
        let offsets: Vec<u64> = st.unsettled.keys().copied().collect();
        for off in offsets {
            let Some(e) = st.unsettled.get(&off).cloned() else {
                continue;
            };
            let group_busy =
                spec.fifo && e.message_group.as_ref().is_some_and(|g| busy.contains(g));
            match e.state {
                EntryState::Invisible { until, .. } if until > now => {
                    out.next_expiry = Some(out.next_expiry.map_or(until, |n| n.min(until)));
                    mark_busy(spec.fifo, &mut busy, &e);
                    continue;
                }
                EntryState::Invisible { .. } if e.attempts >= spec.max_attempts => {
                    expired_to_dlq.push(off);
                    continue;
                }
                _ => {}
            }
            if group_busy || out.deliveries.len() >= spec.batch {
                mark_busy(spec.fifo, &mut busy, &e);
                continue;
            }
            let Some(d) = self.hand_out_again(spec, q, off, &e, st, now) else {
                continue;
            };
            mark_busy(spec.fifo, &mut busy, &st.unsettled[&off]);
            out.deliveries.push(d);
        }
        for off in expired_to_dlq {
            self.dead_letter(spec.group, spec.topic, q, off, st)?;
        }

        // New messages.
        let (_, max_off) = self.store.queue_range(spec.topic, q);
        let mut rounds = 0;
        while out.deliveries.len() < spec.batch && st.next_offset < max_off && rounds < 64 {
            rounds += 1;
            if st.unsettled.len() >= MAX_PENDING_PER_QUEUE {
                break;
            }
            let want = spec.batch - out.deliveries.len();
            let start_of_round = st.next_offset;
            let r = self
                .store
                .read(spec.topic, q, st.next_offset, want, Some(spec.filter))
                .map_err(RpcError::from)?;
            for m in r.messages {
                let off = m.queue_offset;
                st.next_offset = off + 1;
                let group = m.properties.get(props::MESSAGE_GROUP).cloned();
                let fifo_wait = spec.fifo && group.as_ref().is_some_and(|g| busy.contains(g));
                if fifo_wait || out.deliveries.len() >= spec.batch {
                    st.unsettled.insert(
                        off,
                        Unsettled {
                            phys_offset: m.phys_offset,
                            attempts: 0,
                            message_group: group.clone(),
                            state: EntryState::Pending,
                            renewal: None,
                            priority: 0,
                        },
                    );
                } else {
                    let phys = m.phys_offset;
                    let d = self.hand_out(spec, q, off, st, m, 1, group.clone(), phys, now);
                    out.deliveries.push(d);
                }
                if spec.fifo {
                    if let Some(g) = group {
                        busy.insert(g);
                    }
                }
            }
            let before = st.next_offset;
            st.next_offset = st.next_offset.max(r.next_offset).max(r.min_offset);
            if st.next_offset == before && before == start_of_round {
                // Nothing readable yet (not dispatched): stop instead of spinning.
                break;
            }
        }
        Ok(())
    }

    /// A PRIORITY queue: fill the window of waiting messages, then hand out the highest
    /// priorities (waiting or due for redelivery), lowest offset first among equals.
    fn receive_queue_by_priority(
        &self,
        spec: &ReceiveSpec<'_>,
        q: u32,
        st: &mut QueueState,
        out: &mut ReceiveOutcome,
    ) -> Result<(), RpcError> {
        let now = Instant::now();
        let (_, max_off) = self.store.queue_range(spec.topic, q);
        let mut waiting = st
            .unsettled
            .values()
            .filter(|e| e.state == EntryState::Pending)
            .count();
        let mut rounds = 0;
        while st.next_offset < max_off
            && waiting < PRIORITY_WINDOW
            && st.unsettled.len() < MAX_PENDING_PER_QUEUE
            && rounds < 64
        {
            rounds += 1;
            let start = st.next_offset;
            let r = self
                .store
                .read(
                    spec.topic,
                    q,
                    start,
                    PRIORITY_WINDOW - waiting,
                    Some(spec.filter),
                )
                .map_err(RpcError::from)?;
            for m in r.messages {
                st.next_offset = m.queue_offset + 1;
                st.unsettled.insert(
                    m.queue_offset,
                    Unsettled {
                        phys_offset: m.phys_offset,
                        attempts: 0,
                        message_group: None,
                        state: EntryState::Pending,
                        renewal: None,
                        priority: m
                            .properties
                            .get(props::PRIORITY)
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0),
                    },
                );
                waiting += 1;
            }
            st.next_offset = st.next_offset.max(r.next_offset).max(r.min_offset);
            if st.next_offset == start {
                break;
            }
        }
        let mut candidates: Vec<(std::cmp::Reverse<i32>, u64)> = Vec::new();
        let mut expired_to_dlq = Vec::new();
        for (off, e) in &st.unsettled {
            match e.state {
                EntryState::Invisible { until, .. } if until > now => {
                    out.next_expiry = Some(out.next_expiry.map_or(until, |n| n.min(until)));
                }
                EntryState::Invisible { .. } if e.attempts >= spec.max_attempts => {
                    expired_to_dlq.push(*off)
                }
                _ => candidates.push((std::cmp::Reverse(e.priority), *off)),
            }
        }
        candidates.sort_unstable();
        for (_, off) in candidates {
            if out.deliveries.len() >= spec.batch {
                break;
            }
            let Some(e) = st.unsettled.get(&off).cloned() else {
                continue;
            };
            if let Some(d) = self.hand_out_again(spec, q, off, &e, st, now) {
                out.deliveries.push(d);
            }
        }
        for off in expired_to_dlq {
            self.dead_letter(spec.group, spec.topic, q, off, st)?;
        }
        Ok(())
    }

    /// Hands out an entry already read (waiting, or due for redelivery): reads its message
    /// again, or drops the entry when it is gone (retention) or unreadable.
    fn hand_out_again(
        &self,
        spec: &ReceiveSpec<'_>,
        q: u32,
        off: u64,
        e: &Unsettled,
        st: &mut QueueState,
        now: Instant,
    ) -> Option<Delivery> {
        match self.store.message_at(e.phys_offset) {
            Ok(message) => Some(self.hand_out(
                spec,
                q,
                off,
                st,
                message,
                e.attempts + 1,
                e.message_group.clone(),
                e.phys_offset,
                now,
            )),
            Err(err) => {
                warn!(group = spec.group, topic = spec.topic, queue = q, offset = off, error = %err, "unsettled message unreadable; dropped");
                st.unsettled.remove(&off);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hand_out(
        &self,
        spec: &ReceiveSpec<'_>,
        q: u32,
        off: u64,
        st: &mut QueueState,
        message: StoredMessage,
        attempt: u32,
        message_group: Option<String>,
        phys_offset: u64,
        now: Instant,
    ) -> Delivery {
        let handle = self.new_handle(q, off);
        let priority = st.unsettled.get(&off).map_or(0, |e| e.priority);
        st.unsettled.insert(
            off,
            Unsettled {
                priority,
                phys_offset,
                attempts: attempt,
                message_group,
                state: EntryState::Invisible {
                    until: now + spec.invisible,
                    epoch: handle.epoch,
                },
                renewal: spec.renew_for.map(|c| Renewal {
                    client_id: c.to_string(),
                    invisible: spec.invisible,
                    give_up_at: now + MAX_RENEWED_HOLD,
                }),
            },
        );
        Delivery {
            message,
            attempt,
            handle,
            invisible: spec.invisible,
        }
    }

    /// Finds the unsettled entry a handle refers to, checking it is the latest delivery.
    fn check_handle(&self, st: &QueueState, h: &ReceiptHandle) -> Result<(), RpcError> {
        let stale = || {
            RpcError::new(
                Code::InvalidReceiptHandle,
                "receipt handle is stale: the message was settled or delivered again since",
            )
        };
        if h.instance != self.instance {
            return Err(RpcError::new(
                Code::InvalidReceiptHandle,
                "receipt handle was issued before the broker restarted; the message will be delivered again",
            ));
        }
        match st.unsettled.get(&h.offset) {
            Some(Unsettled {
                state: EntryState::Invisible { epoch, .. },
                ..
            }) if *epoch == h.epoch => Ok(()),
            _ => Err(stale()),
        }
    }

    fn known_queue(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
    ) -> Option<Arc<Mutex<QueueState>>> {
        lock(&self.queues)
            .get(&QueueKey {
                group: group.into(),
                topic: topic.into(),
                queue_id,
            })
            .cloned()
    }

    /// Settles a delivery. Durable (the consumer offset is committed) when it returns Ok.
    pub fn ack(&self, group: &str, topic: &str, h: &ReceiptHandle) -> Result<(), RpcError> {
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
    ) -> Result<bool, RpcError> {
        let st = self.known_queue(group, topic, h.queue_id).ok_or_else(|| {
            RpcError::new(
                Code::InvalidReceiptHandle,
                format!(
                    "no message of topic {topic} was delivered to group {group} with this handle"
                ),
            )
        })?;
        let mut st = lock(&st);
        self.check_handle(&st, h)?;
        st.unsettled.remove(&h.offset);
        self.store_low_water(group, topic, h.queue_id, &mut st, false)
    }

    /// Makes every offset recorded so far durable. Runs outside the queue locks so receives
    /// never wait for an fsync; concurrent callers share one write (the store coalesces them).
    pub fn persist_offsets(&self) -> Result<(), RpcError> {
        self.store.offsets().persist().map_err(RpcError::from)
    }

    /// Moves the invisibility deadline of a delivery; returns the handle to use from now on.
    pub fn change_invisible(
        &self,
        group: &str,
        topic: &str,
        h: &ReceiptHandle,
        invisible: Duration,
    ) -> Result<ReceiptHandle, RpcError> {
        let st = self.known_queue(group, topic, h.queue_id).ok_or_else(|| {
            RpcError::new(
                Code::InvalidReceiptHandle,
                format!(
                    "no message of topic {topic} was delivered to group {group} with this handle"
                ),
            )
        })?;
        let mut st = lock(&st);
        self.check_handle(&st, h)?;
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
    }

    /// Moves a delivered message to the group's dead-letter topic now (client-driven, FIFO
    /// push consumers after their local retries).
    pub fn forward_to_dlq(
        &self,
        group: &str,
        topic: &str,
        h: &ReceiptHandle,
    ) -> Result<(), RpcError> {
        let st = self.known_queue(group, topic, h.queue_id).ok_or_else(|| {
            RpcError::new(
                Code::InvalidReceiptHandle,
                format!(
                    "no message of topic {topic} was delivered to group {group} with this handle"
                ),
            )
        })?;
        let mut st = lock(&st);
        self.check_handle(&st, h)?;
        self.dead_letter(group, topic, h.queue_id, h.offset, &mut st)?;
        self.store_low_water(group, topic, h.queue_id, &mut st, true)
            .map(|_| ())
    }

    fn dead_letter(
        &self,
        group: &str,
        topic: &str,
        q: u32,
        off: u64,
        st: &mut QueueState,
    ) -> Result<(), RpcError> {
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
        let dlq = dlq_topic(group);
        ensure_dlq_topic(&self.store, &dlq)?;
        let mut properties = original.properties.clone();
        properties.insert(props::DLQ_ORIGIN_TOPIC.into(), topic.into());
        properties.insert(props::DLQ_ATTEMPTS.into(), e.attempts.to_string());
        // Consumers of the DLQ are not FIFO-bound by the original group.
        properties.remove(props::MESSAGE_GROUP);
        properties.insert(
            props::MESSAGE_TYPE.into(),
            (ferromq_proto::v2::MessageType::Normal as i32).to_string(),
        );
        let m = NewMessage {
            topic: dlq.clone(),
            queue_id: 0,
            born_timestamp_ms: original.born_timestamp_ms,
            born_host: original.born_host,
            reconsume_times: e.attempts,
            properties,
            body: original.body,
            ..Default::default()
        };
        self.store.append(&m).map_err(RpcError::from)?;
        info!(group, topic, queue = q, offset = off, attempts = e.attempts, dlq = %dlq, "message moved to dead-letter topic");
        *lock(&self.dead_lettered)
            .entry(group.to_string())
            .or_insert(0) += 1;
        st.unsettled.remove(&off);
        Ok(())
    }

    /// Records the group's offset if it moved (returns whether it did): durably at once when
    /// `durable`, else in memory for the store's background flush or the caller's persist.
    fn store_low_water(
        &self,
        group: &str,
        topic: &str,
        q: u32,
        st: &mut QueueState,
        durable: bool,
    ) -> Result<bool, RpcError> {
        let low = st.low_water();
        if low == st.committed {
            return Ok(false);
        }
        st.committed = low;
        if durable {
            self.store
                .offsets()
                .commit(group, topic, q, low)
                .map_err(RpcError::from)?;
        } else {
            self.store.offsets().set(group, topic, q, low);
        }
        Ok(true)
    }

    /// Periodic upkeep (the server runs it every second): renews push consumers' deliveries
    /// while their client is alive (`alive`), and dead-letters expired messages that used up
    /// their attempts even when nobody receives.
    pub fn reap(&self, alive: &dyn Fn(&str) -> bool) {
        let all: Vec<(QueueKey, Arc<Mutex<QueueState>>)> = lock(&self.queues)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let now = Instant::now();
        for (k, st) in all {
            let mut st = lock(&st);
            for e in st.unsettled.values_mut() {
                if let (EntryState::Invisible { until, .. }, Some(r)) = (&mut e.state, &e.renewal) {
                    // Renew once a third of the invisibility is left, so a renewal is never late.
                    if *until > now
                        && *until - now < r.invisible / 3
                        && now < r.give_up_at
                        && alive(&r.client_id)
                    {
                        *until = now + r.invisible;
                    }
                }
            }
            if st.max_attempts == 0 {
                continue;
            }
            let due: Vec<u64> = st
                .unsettled
                .iter()
                .filter(|(_, e)| {
                    matches!(e.state, EntryState::Invisible { until, .. } if until <= now)
                        && e.attempts >= st.max_attempts
                })
                .map(|(o, _)| *o)
                .collect();
            if due.is_empty() {
                continue;
            }
            for off in due {
                if let Err(e) = self.dead_letter(&k.group, &k.topic, k.queue_id, off, &mut st) {
                    warn!(group = %k.group, topic = %k.topic, error = %e, "dead-lettering failed; will retry");
                    break;
                }
            }
            if let Err(e) = self.store_low_water(&k.group, &k.topic, k.queue_id, &mut st, true) {
                warn!(group = %k.group, topic = %k.topic, error = %e, "offset commit failed; will retry");
            }
        }
    }

    /// Messages dead-lettered since start, per group.
    pub fn dead_lettered(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = lock(&self.dead_lettered)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    }

    /// Forgets a topic's delivery state (after the topic is deleted).
    pub fn forget_topic(&self, topic: &str) {
        lock(&self.queues).retain(|k, _| k.topic != topic);
    }

    /// Groups that have consumed, with their in-memory progress.
    pub fn progress(&self) -> Vec<QueueProgress> {
        let all: Vec<(QueueKey, Arc<Mutex<QueueState>>)> = lock(&self.queues)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out: Vec<QueueProgress> = all
            .into_iter()
            .map(|(k, st)| {
                let st = lock(&st);
                let inflight = st
                    .unsettled
                    .values()
                    .filter(|e| matches!(e.state, EntryState::Invisible { .. }))
                    .count() as u64;
                QueueProgress {
                    group: k.group,
                    topic: k.topic,
                    queue_id: k.queue_id,
                    committed: st.low_water(),
                    inflight,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.group, &a.topic, a.queue_id).cmp(&(&b.group, &b.topic, b.queue_id)));
        out
    }
}

fn mark_busy(fifo: bool, busy: &mut HashSet<String>, e: &Unsettled) {
    if fifo {
        if let Some(g) = &e.message_group {
            busy.insert(g.clone());
        }
    }
}

/// Creates a group's dead-letter topic on first use (one queue, readable and writable, so a
/// consumer can drain it).
pub fn ensure_dlq_topic(store: &Store, name: &str) -> Result<(), RpcError> {
    if store.topics().get(name).is_some() {
        return Ok(());
    }
    let cfg = TopicConfig {
        name: name.into(),
        queues: 1,
        message_type: MessageType::Normal,
        permission: Permission::ReadWrite,
    };
    match store.topics().create(cfg) {
        Ok(_) | Err(ferromq_store::StoreError::TopicExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_store::StoreConfig;
    use std::collections::BTreeMap;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        let mut cfg = StoreConfig::new(dir);
        cfg.segment_size = 1 << 20;
        cfg.max_body_size = 64 << 10;
        cfg.cq_entries_per_file = 1000;
        cfg.index_slots = 1000;
        cfg.index_entries = 4000;
        let s = Store::open(cfg).expect("open store");
        s.topics()
            .create(TopicConfig {
                name: "t".into(),
                queues: 1,
                message_type: MessageType::Normal,
                permission: Permission::ReadWrite,
            })
            .expect("topic");
        s
    }

    fn send(s: &Store, group: Option<&str>, body: &str) -> u64 {
        let mut properties = BTreeMap::new();
        properties.insert(ferromq_store::PROP_MSG_ID.to_string(), body.to_string());
        if let Some(g) = group {
            properties.insert(props::MESSAGE_GROUP.to_string(), g.to_string());
        }
        let r = s
            .append(&NewMessage {
                topic: "t".into(),
                queue_id: 0,
                properties,
                body: body.as_bytes().to_vec(),
                ..Default::default()
            })
            .expect("append");
        assert!(s.wait_dispatched(r.phys_offset + r.size as u64, Duration::from_secs(5)));
        r.queue_offset
    }

    fn spec<'a>(
        filter: &'a TagFilter,
        fifo: bool,
        invisible: Duration,
        max_attempts: u32,
    ) -> ReceiveSpec<'a> {
        ReceiveSpec {
            group: "g",
            topic: "t",
            queues: vec![0],
            batch: 10,
            invisible,
            filter,
            fifo,
            priority: false,
            max_attempts,
            renew_for: None,
            attempt: None,
        }
    }

    fn bodies(o: &ReceiveOutcome) -> Vec<String> {
        o.deliveries
            .iter()
            .map(|d| String::from_utf8_lossy(&d.message.body).into_owned())
            .collect()
    }

    #[test]
    fn acked_messages_never_come_back_and_unacked_ones_do_with_attempt_plus_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d = Deliveries::new(s.clone());
        send(&s, None, "a");
        send(&s, None, "b");
        let all = TagFilter::parse("*");
        let first = d
            .receive(&spec(&all, false, Duration::from_millis(50), 5))
            .unwrap();
        assert_eq!(bodies(&first), ["a", "b"]);
        d.ack("g", "t", &first.deliveries[0].handle).unwrap();
        // Acking twice is refused: the handle is settled.
        assert_eq!(
            d.ack("g", "t", &first.deliveries[0].handle)
                .unwrap_err()
                .code,
            Code::InvalidReceiptHandle
        );
        assert!(d
            .receive(&spec(&all, false, Duration::from_millis(50), 5))
            .unwrap()
            .deliveries
            .is_empty());
        std::thread::sleep(Duration::from_millis(80));
        let again = d
            .receive(&spec(&all, false, Duration::from_secs(5), 5))
            .unwrap();
        assert_eq!(bodies(&again), ["b"]);
        assert_eq!(again.deliveries[0].attempt, 2);
        // The old handle of "b" is stale now.
        assert!(d.ack("g", "t", &first.deliveries[1].handle).is_err());
        d.ack("g", "t", &again.deliveries[0].handle).unwrap();
        assert_eq!(s.offsets().get("g", "t", 0), Some(2));
    }

    #[test]
    fn exhausted_messages_move_to_the_dead_letter_topic() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d = Deliveries::new(s.clone());
        send(&s, None, "x");
        let all = TagFilter::parse("*");
        for attempt in 1..=2 {
            let o = d
                .receive(&spec(&all, false, Duration::from_millis(20), 2))
                .unwrap();
            assert_eq!(o.deliveries.len(), 1, "attempt {attempt}");
            assert_eq!(o.deliveries[0].attempt, attempt);
            std::thread::sleep(Duration::from_millis(40));
        }
        d.reap(&|_| true);
        assert!(d
            .receive(&spec(&all, false, Duration::from_millis(20), 2))
            .unwrap()
            .deliveries
            .is_empty());
        let dlq = dlq_topic("g");
        assert!(s.topics().get(&dlq).is_some());
        let (_, max) = s.queue_range(&dlq, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut max = max;
        while max == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            max = s.queue_range(&dlq, 0).1;
        }
        assert_eq!(max, 1);
        assert_eq!(s.offsets().get("g", "t", 0), Some(1));
    }

    #[test]
    fn push_deliveries_are_renewed_while_their_client_lives() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d = Deliveries::new(s.clone());
        send(&s, None, "p");
        let all = TagFilter::parse("*");
        let push = ReceiveSpec {
            renew_for: Some("c1"),
            ..spec(&all, false, Duration::from_millis(300), 5)
        };
        let o = d.receive(&push).unwrap();
        assert_eq!(o.deliveries.len(), 1);
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(60));
            d.reap(&|c| c == "c1");
        }
        assert!(
            d.receive(&push).unwrap().deliveries.is_empty(),
            "renewed: still invisible after 600 ms"
        );
        d.ack("g", "t", &o.deliveries[0].handle).unwrap();
        send(&s, None, "q");
        let o = d.receive(&push).unwrap();
        assert_eq!(o.deliveries.len(), 1);
        std::thread::sleep(Duration::from_millis(350));
        d.reap(&|_| false);
        assert_eq!(
            d.receive(&push).unwrap().deliveries.len(),
            1,
            "a dead client's message comes back"
        );
    }

    #[test]
    fn a_retried_receive_attempt_gets_the_same_messages_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d = Deliveries::new(s.clone());
        send(&s, None, "a");
        let all = TagFilter::parse("*");
        let push = ReceiveSpec {
            attempt: Some("c1/attempt-1".into()),
            ..spec(&all, false, Duration::from_secs(60), 5)
        };
        let first = d.receive(&push).unwrap();
        assert_eq!(bodies(&first), ["a"]);
        send(&s, None, "b");
        let retry = d.receive(&push).unwrap();
        assert_eq!(
            bodies(&retry),
            ["a"],
            "the lost answer is repeated, not new messages"
        );
        assert_eq!(retry.deliveries[0].handle, first.deliveries[0].handle);
        let next = ReceiveSpec {
            attempt: Some("c1/attempt-2".into()),
            ..push.clone()
        };
        assert_eq!(bodies(&d.receive(&next).unwrap()), ["b"]);
        d.ack("g", "t", &first.deliveries[0].handle).unwrap();
        assert!(
            d.receive(&push).unwrap().deliveries.is_empty(),
            "settled messages are not repeated"
        );
    }

    #[test]
    fn fifo_groups_wait_for_the_previous_message_of_their_group() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d = Deliveries::new(s.clone());
        for b in ["a1", "a2", "b1", "a3", "b2"] {
            send(&s, Some(&b[..1]), b);
        }
        let all = TagFilter::parse("*");
        let sp = spec(&all, true, Duration::from_secs(30), 5);
        let o = d.receive(&sp).unwrap();
        assert_eq!(bodies(&o), ["a1", "b1"]);
        assert!(d.receive(&sp).unwrap().deliveries.is_empty());
        d.ack("g", "t", &o.deliveries[0].handle).unwrap();
        let o2 = d.receive(&sp).unwrap();
        assert_eq!(bodies(&o2), ["a2"]);
        d.ack("g", "t", &o.deliveries[1].handle).unwrap();
        d.ack("g", "t", &o2.deliveries[0].handle).unwrap();
        let o3 = d.receive(&sp).unwrap();
        assert_eq!(bodies(&o3), ["a3", "b2"]);
    }

    #[test]
    fn offsets_survive_a_new_engine_and_filters_skip() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        {
            let d = Deliveries::new(s.clone());
            send(&s, None, "a");
            send(&s, None, "b");
            let all = TagFilter::parse("*");
            let o = d
                .receive(&spec(&all, false, Duration::from_secs(30), 5))
                .unwrap();
            d.ack("g", "t", &o.deliveries[0].handle).unwrap();
            // Restart: a handle of the old engine is refused by the new one.
            let d2 = Deliveries::new(s.clone());
            assert!(d2.ack("g", "t", &o.deliveries[1].handle).is_err());
            let o2 = d2
                .receive(&spec(&all, false, Duration::from_secs(30), 5))
                .unwrap();
            assert_eq!(bodies(&o2), ["b"]);
        }
        let d = Deliveries::new(s.clone());
        let none = TagFilter::parse("nothing-matches");
        let o = ReceiveSpec {
            group: "g2",
            ..spec(&none, false, Duration::from_secs(30), 5)
        };
        assert!(d.receive(&o).unwrap().deliveries.is_empty());
        assert_eq!(
            d.progress()
                .iter()
                .find(|p| p.group == "g2")
                .map(|p| p.committed),
            Some(2)
        );
    }
}
