//! Pop-style delivery: which message each consumer group gets next, which ones are invisible
//! (handed out and not yet settled), redelivery, dead-lettering and FIFO message-group order.
//!
//! ## State and durability (the choice made for standalone)
//! State lives in memory, one queue state per (group, topic, queue) ([`queue`]). Only one
//! number is persisted: the group's consumer offset in the store, which is always the lowest
//! offset that is not settled yet (every message below it is acked, dead-lettered or filtered
//! out). An ack that moves it commits it durably before the ack is answered. After a restart,
//! delivery starts again from that offset: acked-and-committed messages never come back, unacked
//! ones are delivered again (with `delivery_attempt` starting at 1 again, and acked messages
//! above an unacked one delivered again too: at-least-once). A group seen for the first time
//! starts at the oldest message still stored, so messages sent before a consumer started are
//! not lost.
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
//! ## Deleting a topic
//! [`Deliveries::delete_topic`] deletes the topic in the store (which fences its messages and
//! drops its groups' offsets) and forgets its delivery state. Work already running on a state of
//! the old topic cannot bring anything back: every state remembers the topic's incarnation, and
//! offsets are written, and messages handed out, only while the topic exists in that
//! incarnation. The check and the write happen under a lock a delete takes exclusively, so an
//! ack that races the delete either lands before it (and is dropped with the other offsets) or
//! sees the topic gone (and writes nothing).
//!
//! ## Layout
//! [`queue`] holds the per-queue state, `receive` reads ahead and hands out, `settle` acks,
//! extends and dead-letters, `upkeep` renews push consumers' deliveries and dead-letters in the
//! background, `attempts` remembers push consumers' receive attempts for their retries.
//!
//! All methods block on store I/O: call them from `spawn_blocking`.

mod attempts;
mod offsets;
mod queue;
mod receive;
mod settle;
mod upkeep;

pub(crate) use settle::{as_new, dead_letter_copy};

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferromq_store::{Store, StoredMessage, TagFilter, TopicConfig};
use parking_lot::{Mutex, RwLock};

use crate::receipt::ReceiptHandle;
use attempts::Attempts;
use queue::{QueueKey, QueueState};

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

/// What a receive found, plus when something may become deliverable without a new message.
#[derive(Debug, Default)]
pub struct ReceiveOutcome {
    pub deliveries: Vec<Delivery>,
    pub next_expiry: Option<Instant>,
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
    /// Messages moved to dead-letter topics since start, per (group, original topic), for
    /// metrics.
    dead_lettered: Mutex<HashMap<(String, String), u64>>,
    attempts: Attempts,
    /// Shared by offset writes and hand-outs (which check the topic's incarnation under it),
    /// exclusive for a topic delete (see the module docs).
    topic_gate: RwLock<()>,
    /// Replicated groups: the journal, and the offsets that moved since its last entry.
    journal: Option<crate::journal::Journal>,
    moved: Mutex<std::collections::BTreeMap<(String, String, u32), u64>>,
}

impl Deliveries {
    pub fn new(store: Arc<Store>, journal: Option<crate::journal::Journal>) -> Deliveries {
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
            attempts: Attempts::default(),
            topic_gate: RwLock::new(()),
            journal,
            moved: Mutex::new(Default::default()),
        }
    }

    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The state of a queue for a group, created on first use at the group's committed offset
    /// (or the oldest stored message for a new group).
    fn state(&self, group: &str, topic: &str, queue_id: u32) -> Arc<Mutex<QueueState>> {
        let key = QueueKey {
            group: group.into(),
            topic: topic.into(),
            queue_id,
        };
        let mut map = self.queues.lock();
        if let Some(s) = map.get(&key) {
            return s.clone();
        }
        let incarnation = self.store.topics().incarnation(topic);
        let start = match self.store.offsets().get(group, topic, queue_id) {
            Some(o) => o,
            None => self.store.queue_range(topic, queue_id).0,
        };
        let s = Arc::new(Mutex::new(QueueState::starting_at(start, incarnation)));
        map.insert(key, s.clone());
        s
    }

    /// The state of a queue the group has read from, if any.
    fn known_queue(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
    ) -> Option<Arc<Mutex<QueueState>>> {
        self.queues
            .lock()
            .get(&QueueKey {
                group: group.into(),
                topic: topic.into(),
                queue_id,
            })
            .cloned()
    }

    /// Every queue state, for background passes and views (the map lock is not held while
    /// each state is looked at).
    fn all_queues(&self) -> Vec<(QueueKey, Arc<Mutex<QueueState>>)> {
        self.queues
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Messages dead-lettered since start, per (group, the topic they came from).
    pub fn dead_lettered(&self) -> Vec<((String, String), u64)> {
        let mut v: Vec<((String, String), u64)> = self
            .dead_lettered
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    }

    /// Deletes a topic: in the store (its messages fenced, its groups' offsets dropped, durably),
    /// in the journal of a replicated group (with its fence) and here (its delivery state
    /// forgotten), so a topic created again under the name starts
    /// empty for every group, old or new. See the module docs for in-flight work.
    pub fn delete_topic(&self, topic: &str) -> Result<TopicConfig, crate::EngineError> {
        let deleted = {
            let _exclusive = self.topic_gate.write();
            let deleted = self.store.delete_topic(topic)?;
            // Offsets of the old topic not journaled yet never will be, and the deletion is
            // journaled before any offset of a topic created again under the name.
            self.moved.lock().retain(|(_, t, _), _| t != topic);
            if let Some(j) = &self.journal {
                j.record(&crate::journal::Change::TopicDeleted {
                    name: topic.to_string(),
                    fence: self.store.topics().incarnation(topic),
                })?;
            }
            deleted
        };
        self.forget_topic(topic);
        Ok(deleted)
    }

    /// Forgets a group: its delivery state and, durably, its offsets on every topic.
    pub fn forget_group(&self, group: &str) -> Result<(), crate::EngineError> {
        // Exclusive of offset writes, as a topic delete is: none lands between the two steps.
        let _exclusive = self.topic_gate.write();
        self.queues.lock().retain(|k, _| k.group != group);
        self.moved.lock().retain(|(g, _, _), _| g != group);
        self.store.offsets().remove_group(group, None);
        self.store.offsets().persist()?;
        Ok(())
    }

    /// Forgets a topic's delivery state (after the topic is deleted).
    pub fn forget_topic(&self, topic: &str) {
        self.queues.lock().retain(|k, _| k.topic != topic);
    }

    /// Whether a state of `topic` still belongs to the topic as it exists now. Call with the
    /// topic gate held (shared).
    fn is_current(&self, topic: &str, st: &QueueState) -> bool {
        self.store.topics().get(topic).is_some()
            && self.store.topics().incarnation(topic) == st.incarnation
    }

    /// Groups that have consumed, with their in-memory progress.
    pub fn progress(&self) -> Vec<QueueProgress> {
        let mut out: Vec<QueueProgress> = self
            .all_queues()
            .into_iter()
            .map(|(k, st)| {
                let st = st.lock();
                QueueProgress {
                    group: k.group,
                    topic: k.topic,
                    queue_id: k.queue_id,
                    committed: st.low_water(),
                    inflight: st.inflight(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.group, &a.topic, a.queue_id).cmp(&(&b.group, &b.topic, b.queue_id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EngineError;
    use crate::props;
    use crate::topics::dlq_topic;
    use ferromq_store::{MessageType, NewMessage, Permission, StoreConfig};
    use std::collections::BTreeMap;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        let mut cfg = StoreConfig::new(dir);
        cfg.segment_size = 1 << 20;
        cfg.max_body_size = 64 << 10;
        cfg.cq_entries_per_file = 1000;
        cfg.index_slots = 1000;
        cfg.index_entries = 4000;
        let s = Store::open(cfg).expect("open store");
        s.topics().create(topic_t()).expect("topic");
        s
    }

    /// A store with topic `t` (one queue) in a temporary directory, and an engine over it.
    fn fixture() -> (tempfile::TempDir, Arc<Store>, Deliveries) {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d = Deliveries::new(s.clone(), None);
        (dir, s, d)
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
                body: body.as_bytes().to_vec().into(),
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

    /// Everything `d` hands out to group `g` from queue 0 of `t` now, held for a minute.
    fn receive_held(d: &Deliveries) -> ReceiveOutcome {
        let all = TagFilter::parse("*");
        d.receive(&spec(&all, false, Duration::from_secs(60), 5))
            .unwrap()
    }

    #[test]
    fn reads_are_recent_only_on_known_queues_that_no_receive_holds() {
        let (_dir, s, d) = fixture();
        send(&s, None, "a");
        assert!(!d.reads_recent("g", "t", &[0]), "never read: no state yet");
        assert_eq!(bodies(&receive_held(&d)), ["a"]);
        send(&s, None, "b");
        assert!(
            d.reads_recent("g", "t", &[0]),
            "a small store is all recent"
        );
        let st = d.known_queue("g", "t", 0).expect("queue state");
        let _reading = st.lock();
        assert!(!d.reads_recent("g", "t", &[0]), "held by another receive");
    }

    #[test]
    fn an_ack_that_must_not_wait_settles_like_an_ack_or_steps_aside_for_a_locked_queue() {
        let (_dir, s, d) = fixture();
        send(&s, None, "a");
        send(&s, None, "b");
        let got = receive_held(&d);
        let (a, b) = (&got.deliveries[0].handle, &got.deliveries[1].handle);
        {
            // A receive reading under the queue's lock: nothing is done, nothing waits.
            let st = d.known_queue("g", "t", 0).expect("queue state");
            let _reading = st.lock();
            assert!(d.try_ack_in_memory("g", "t", a).is_none());
        }
        assert!(matches!(d.try_ack_in_memory("g", "t", a), Some(Ok(true))));
        assert!(matches!(
            d.try_ack_in_memory("g", "t", a),
            Some(Err(EngineError::StaleHandle))
        ));
        assert!(matches!(
            d.try_ack_in_memory("other", "t", b),
            Some(Err(EngineError::UnknownDelivery { .. }))
        ));
        assert_eq!(
            d.try_persist_offsets(d.persist_ticket()).unwrap(),
            ferromq_store::TryPersist::Written
        );
        assert_eq!(s.offsets().get("g", "t", 0), Some(1), "a is settled");
        assert!(matches!(d.try_ack_in_memory("g", "t", b), Some(Ok(true))));
        assert!(receive_held(&d).deliveries.is_empty());
    }

    #[test]
    fn acked_messages_never_come_back_and_unacked_ones_do_with_attempt_plus_one() {
        let (_dir, s, d) = fixture();
        send(&s, None, "a");
        send(&s, None, "b");
        let all = TagFilter::parse("*");
        // A long invisibility: the test decides when "b" becomes visible again (below), so a
        // slow machine cannot make it come back early.
        let first = d
            .receive(&spec(&all, false, Duration::from_secs(60), 5))
            .unwrap();
        assert_eq!(bodies(&first), ["a", "b"]);
        d.ack("g", "t", &first.deliveries[0].handle).unwrap();
        // Acking twice is refused: the handle is settled.
        assert!(matches!(
            d.ack("g", "t", &first.deliveries[0].handle),
            Err(EngineError::StaleHandle)
        ));
        assert!(d
            .receive(&spec(&all, false, Duration::from_secs(60), 5))
            .unwrap()
            .deliveries
            .is_empty());
        // "b" was never acked: once its invisibility ends it comes back.
        let shortened = d
            .change_invisible(
                "g",
                "t",
                &first.deliveries[1].handle,
                Duration::from_millis(1),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let again = d
            .receive(&spec(&all, false, Duration::from_secs(5), 5))
            .unwrap();
        assert_eq!(bodies(&again), ["b"]);
        assert_eq!(again.deliveries[0].attempt, 2);
        // The older handles of "b" are stale now.
        assert!(d.ack("g", "t", &first.deliveries[1].handle).is_err());
        assert!(d.ack("g", "t", &shortened).is_err());
        d.ack("g", "t", &again.deliveries[0].handle).unwrap();
        assert_eq!(s.offsets().get("g", "t", 0), Some(2));
    }

    /// Retention deletes segments whatever the groups still need (as Kafka and RocketMQ do):
    /// a group whose offset points below the log's new start resumes at the first message
    /// still held, without an error, and its offset moves there once it acknowledges.
    #[test]
    fn a_group_behind_retention_resumes_at_the_new_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.segment_size = 1 << 20;
        cfg.max_body_size = 64 << 10;
        cfg.cq_entries_per_file = 1000;
        cfg.index_slots = 1000;
        cfg.index_entries = 4000;
        cfg.retention = Duration::ZERO;
        // Retention runs below when the test says so, not in the background.
        cfg.clean_interval = Duration::from_secs(3600);
        let s = Store::open(cfg).expect("open store");
        s.topics().create(topic_t()).expect("topic");
        let d = Deliveries::new(s.clone(), None);
        let all = TagFilter::parse("*");
        send(&s, None, "first");
        let got = d
            .receive(&spec(&all, false, Duration::from_secs(30), 5))
            .unwrap();
        assert_eq!(bodies(&got), ["first"]);
        d.ack("g", "t", &got.deliveries[0].handle).unwrap();
        assert_eq!(s.offsets().get("g", "t", 0), Some(1));
        // About four segments of 50 KB bodies that the group has not read.
        let filler = "x".repeat(50_000);
        for i in 0..80 {
            send(&s, None, &format!("{i:02}{filler}"));
        }
        let log_min = s.apply_retention().expect("retention");
        assert!(log_min > 0, "closed segments are deleted");
        assert!(s.stats().segments >= 1, "never the one being written");
        let (qmin, qmax) = s.queue_range("t", 0);
        assert!(qmin > 1 && qmax == 81, "{qmin}..{qmax}");
        let got = d
            .receive(&spec(&all, false, Duration::from_secs(30), 5))
            .expect("no error for a group behind the log");
        let first = &got.deliveries[0].message;
        assert_eq!(
            first.queue_offset, qmin,
            "resumes at the first message still held"
        );
        assert!(first.phys_offset >= log_min);
        for dl in &got.deliveries {
            d.ack("g", "t", &dl.handle).unwrap();
        }
        let committed = s.offsets().get("g", "t", 0).expect("committed");
        assert!(
            committed > qmin,
            "the offset moved past the deleted part: {committed}"
        );
    }

    /// The topic every test uses: `t`, one NORMAL queue.
    fn topic_t() -> TopicConfig {
        TopicConfig {
            name: "t".into(),
            queues: 1,
            message_type: MessageType::Normal,
            permission: Permission::ReadWrite,
            retention_ms: None,
        }
    }

    fn recreate(s: &Store) {
        s.topics().create(topic_t()).expect("topic created again");
    }

    /// The late-ack race: an ack that got hold of a queue state before the topic was deleted
    /// and settles after it was created again writes no offset for the new topic, and a
    /// receive through such a state hands out nothing.
    #[test]
    fn work_in_flight_across_a_delete_resurrects_no_offset_and_no_message() {
        let (_dir, s, d) = fixture();
        for b in ["a", "b", "c"] {
            send(&s, None, b);
        }
        let all = TagFilter::parse("*");
        let got = d
            .receive(&spec(&all, false, Duration::from_secs(30), 5))
            .unwrap();
        assert_eq!(bodies(&got), ["a", "b", "c"]);
        d.ack("g", "t", &got.deliveries[0].handle).unwrap();
        assert_eq!(s.offsets().get("g", "t", 0), Some(1));
        let held = d.known_queue("g", "t", 0).expect("state");

        d.delete_topic("t").unwrap();
        assert_eq!(
            s.offsets().get("g", "t", 0),
            None,
            "the delete drops offsets"
        );
        recreate(&s);
        send(&s, None, "new");

        // The in-flight ack settles on the state it holds.
        {
            let mut st = held.lock();
            st.unsettled.clear();
            assert!(!d.store_low_water("g", "t", 0, &mut st, true).unwrap());
        }
        assert_eq!(s.offsets().get("g", "t", 0), None, "no offset came back");
        // Handles of the old topic are unknown now.
        assert!(d.ack("g", "t", &got.deliveries[1].handle).is_err());
        // The group starts the new topic from its beginning.
        let fresh = d
            .receive(&spec(&all, false, Duration::from_secs(30), 5))
            .unwrap();
        assert_eq!(bodies(&fresh), ["new"]);
        assert_eq!(fresh.deliveries[0].handle.offset, 0);
        // A state of the old topic that a receive still holds hands out nothing.
        d.queues.lock().insert(
            QueueKey {
                group: "g2".into(),
                topic: "t".into(),
                queue_id: 0,
            },
            held,
        );
        let stale = d
            .receive(&ReceiveSpec {
                group: "g2",
                ..spec(&all, false, Duration::from_secs(30), 5)
            })
            .unwrap();
        assert!(stale.deliveries.is_empty());
        assert_eq!(s.offsets().get("g2", "t", 0), None);
    }

    #[test]
    fn exhausted_messages_move_to_the_dead_letter_topic() {
        let (_dir, s, d) = fixture();
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
        let (_dir, s, d) = fixture();
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
        let (_dir, s, d) = fixture();
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
        let (_dir, s, d) = fixture();
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
            let d = Deliveries::new(s.clone(), None);
            send(&s, None, "a");
            send(&s, None, "b");
            let all = TagFilter::parse("*");
            let o = d
                .receive(&spec(&all, false, Duration::from_secs(30), 5))
                .unwrap();
            d.ack("g", "t", &o.deliveries[0].handle).unwrap();
            // Restart: a handle of the old engine is refused by the new one.
            let d2 = Deliveries::new(s.clone(), None);
            assert!(d2.ack("g", "t", &o.deliveries[1].handle).is_err());
            let o2 = d2
                .receive(&spec(&all, false, Duration::from_secs(30), 5))
                .unwrap();
            assert_eq!(bodies(&o2), ["b"]);
        }
        let d = Deliveries::new(s.clone(), None);
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

    #[test]
    fn priority_queues_hand_out_the_highest_priority_first_and_send_order_among_equals() {
        let (_dir, s, d) = fixture();
        for (body, p) in [("p1", 1), ("p5a", 5), ("p3", 3), ("p5b", 5), ("p9", 9)] {
            let mut properties = BTreeMap::new();
            properties.insert(ferromq_store::PROP_MSG_ID.to_string(), body.to_string());
            properties.insert(props::PRIORITY.to_string(), p.to_string());
            let r = s
                .append(&NewMessage {
                    topic: "t".into(),
                    properties,
                    body: body.as_bytes().to_vec().into(),
                    ..Default::default()
                })
                .expect("append");
            assert!(s.wait_dispatched(r.phys_offset + r.size as u64, Duration::from_secs(5)));
        }
        let all = TagFilter::parse("*");
        let sp = ReceiveSpec {
            priority: true,
            batch: 2,
            ..spec(&all, false, Duration::from_secs(30), 5)
        };
        assert_eq!(bodies(&d.receive(&sp).unwrap()), ["p9", "p5a"]);
        assert_eq!(bodies(&d.receive(&sp).unwrap()), ["p5b", "p3"]);
        assert_eq!(bodies(&d.receive(&sp).unwrap()), ["p1"]);
    }
}
