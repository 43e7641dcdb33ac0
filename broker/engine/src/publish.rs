//! Publishing: a message a front door has already checked for well-formedness is checked
//! against its topic (exists, writable, of the right type), against this group's drain state and
//! the delay limit, then appended, or parked as a delay timer or a half message.
//!
//! Front doors (the RocketMQ 5 gRPC service, later the remoting protocol) translate their wire
//! message into a [`Publication`] and the answer back; what a message means is decided here
//! once.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

use ferromq_store::{
    MessageType, NewMessage, TopicConfig, KEY_SEPARATOR, PROP_KEYS, PROP_MSG_ID, PROP_TAGS,
};

use crate::error::EngineError;
use crate::props;
use crate::time::{now_ms, WallTime};
use crate::Engine;

/// One message to publish.
#[derive(Debug, Clone, Default)]
pub struct Publication {
    pub topic: String,
    /// The queue the producer chose, if it chose one (see [`crate::placement`]: a queue the
    /// topic lacks is refused; none means the engine picks).
    pub queue_id: Option<u32>,
    pub message_type: MessageType,
    pub message_id: String,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    /// FIFO message group.
    pub message_group: Option<String>,
    /// DELAY messages: when to deliver.
    pub delivery_time: Option<WallTime>,
    /// PRIORITY messages: higher first.
    pub priority: Option<i32>,
    /// TRANSACTION messages: the message's own wait before the first check.
    pub transaction_recovery: Option<Duration>,
    /// Client id of the producer (asked first by transaction checks).
    pub producer: Option<String>,
    pub born_timestamp_ms: i64,
    /// The producer's host as it named itself (free text).
    pub born_host: String,
    pub trace_context: Option<String>,
    pub user_properties: BTreeMap<String, String>,
    pub body: Bytes,
}

/// What publishing one message did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Its offset in its queue when it was appended to the topic now (not parked).
    pub queue_offset: Option<u64>,
    /// End of its record in the commit log when it is visible to consumers now.
    pub visible_end: Option<u64>,
    /// TRANSACTION messages: the id to commit or roll back with.
    pub transaction_id: Option<String>,
    /// DELAY messages parked until later: the handle to recall it with.
    pub recall_handle: Option<String>,
    /// Where its record starts in the commit log (appended or parked): what front doors that
    /// name messages by offset hand out.
    pub log_offset: u64,
    /// Appended without waiting ([`Engine::publish_quick`], [`Engine::publish_pending`],
    /// [`Engine::publish_deferred`]) to a replicated group's leader: the term it was admitted
    /// in. It counts as stored once `store.acknowledged(term, visible_end)` completes.
    pub term: Option<u64>,
}

/// Whether a message waits before its topic sees it.
enum Park {
    No,
    /// A delay message due at this time (ms since the epoch).
    Timer(u64),
    /// A half message, with its own wait before the first transaction check.
    Half(Option<Duration>),
}

/// What [`Engine::publish_quick`] did with a message.
#[derive(Debug)]
pub enum Quick {
    /// Appended. It counts once `store.acknowledged(term, visible_end)` completes (the flush
    /// in sync mode, the group's confirmation on a replicated group's leader).
    Published(Published),
    /// Checked, but storing it may block (a file to allocate, the
    /// append lock busy): finish it with [`Engine::publish_pending`] off the async workers.
    Blocked(Pending),
    /// Not checked: it needs work that may block (a topic to auto-create, a timer or half
    /// message to park): publish it with [`Engine::publish`] off the async workers.
    Later(Publication),
}

/// A checked message waiting for a blocking append (see [`Quick::Blocked`]).
#[derive(Debug)]
pub struct Pending {
    message: NewMessage,
}

impl Engine {
    /// Checks one message against its topic and this group, and stores it.
    pub fn publish(&self, p: Publication) -> Result<Published, EngineError> {
        self.publish_with(p, false)
    }

    /// [`Engine::publish`] that does not wait for an appended message to count (the flush,
    /// the group's confirmation): the caller awaits `store.acknowledged(term, visible_end)`,
    /// once for a whole request. Parked messages are stored as `publish` stores them. Blocks.
    pub fn publish_deferred(&self, p: Publication) -> Result<Published, EngineError> {
        self.publish_with(p, true)
    }

    fn publish_with(&self, mut p: Publication, deferred: bool) -> Result<Published, EngineError> {
        let topic = self.topic(&p.topic)?;
        let park = self.check(&p, &topic)?;
        let producer = p.producer.take();
        let message = self.placed(p, &topic)?;
        let published = match park {
            Park::No if deferred => appended(self.store.append_deferred(&message)?),
            Park::No => appended(self.store.append(&message)?),
            Park::Timer(due) => {
                let at = self.timers.schedule_at(&message, due)?;
                Published {
                    recall_handle: Some(crate::parked::timer::recall_handle(at)),
                    log_offset: at.phys,
                    ..Default::default()
                }
            }
            Park::Half(recovery) => {
                let at = self
                    .transactions
                    .prepare_at(&message, recovery, producer.as_deref())?;
                Published {
                    transaction_id: Some(crate::parked::transaction::transaction_id(at)),
                    log_offset: at.phys,
                    ..Default::default()
                }
            }
        };
        Ok(published)
    }

    /// The stored form of `p` on the queue that placement picks for it in `topic` (the topic
    /// `p` names: its name moves into the stored form, the configuration stays the caller's).
    fn placed(&self, mut p: Publication, topic: &TopicConfig) -> Result<NewMessage, EngineError> {
        let queue_id = self.placement.choose(
            &topic.name,
            topic.queues,
            p.queue_id,
            p.message_group.as_deref(),
        )?;
        let name = std::mem::take(&mut p.topic);
        Ok(stored_form(p, name, queue_id))
    }

    /// [`Engine::publish`] for a caller on an async worker: does only what cannot block (see
    /// [`ferromq_store::Store::try_append`]) and hands back the rest. The checks and their
    /// errors are the same as `publish`'s.
    pub fn publish_quick(&self, p: Publication) -> Result<Quick, EngineError> {
        let Some(topic) = self.store.topics().get(&p.topic) else {
            return Ok(Quick::Later(p));
        };
        if !matches!(self.check(&p, &topic)?, Park::No) {
            return Ok(Quick::Later(p));
        }
        let message = self.placed(p, &topic)?;
        Ok(match self.store.try_append(&message)? {
            Some(a) => Quick::Published(appended(a)),
            None => Quick::Blocked(Pending { message }),
        })
    }

    /// [`Engine::publish_quick`] for the messages of one request, stored under one
    /// acquisition of the store's append lock when every one of them is an ordinary append
    /// that needs no allocation ([`ferromq_store::Store::try_append_batch`]): their outcomes,
    /// in order. `None` when any of them is not (a topic to create, a message to park, a
    /// refusal, anything to allocate): nothing was stored, and the caller publishes them one
    /// by one, where each gets its own outcome.
    pub fn publish_quick_batch(&self, ps: Vec<Publication>) -> Option<Vec<Published>> {
        let mut messages = Vec::with_capacity(ps.len());
        // A request's messages nearly always share one topic: its configuration is looked up
        // (under the metadata lock, and cloned) once per run of messages naming it.
        let mut topic: Option<TopicConfig> = None;
        for p in ps {
            let t = match topic {
                Some(ref t) if t.name == p.topic => t,
                _ => topic.insert(self.store.topics().get(&p.topic)?),
            };
            if !matches!(self.check(&p, t), Ok(Park::No)) {
                return None;
            }
            messages.push(self.placed(p, t).ok()?);
        }
        let appends = self.store.try_append_batch(&messages).ok()??;
        Some(appends.into_iter().map(appended).collect())
    }

    /// Appends a message [`Engine::publish_quick`] checked but could not store without
    /// blocking. Blocks for what must be allocated, not for the flush or the group: like
    /// [`Quick::Published`], it counts once `store.acknowledged(term, visible_end)` completes.
    pub fn publish_pending(&self, p: Pending) -> Result<Published, EngineError> {
        Ok(appended(self.store.append_deferred(&p.message)?))
    }

    /// The checks of one message against its topic and this group; says whether it is parked.
    fn check(
        &self,
        p: &Publication,
        topic: &ferromq_store::TopicConfig,
    ) -> Result<Park, EngineError> {
        if self.membership.is_read_only() {
            return Err(EngineError::Draining {
                group: self.membership.group(),
            });
        }
        if !topic.permission.writable() {
            return Err(EngineError::TopicPermission {
                topic: topic.name.clone(),
                what: "writable",
            });
        }
        if topic.message_type != p.message_type {
            return Err(EngineError::TypeMismatch {
                topic: topic.name.clone(),
                accepts: topic.message_type,
                sent: p.message_type,
            });
        }
        let park = match p.message_type {
            MessageType::Normal | MessageType::Fifo | MessageType::Priority => Park::No,
            MessageType::Delay => {
                let due = p.delivery_time.ok_or_else(|| {
                    EngineError::IllegalDeliveryTime(
                        "a DELAY message needs a delivery_timestamp".into(),
                    )
                })?;
                let due_ms = due.ceil_ms();
                let now = now_ms();
                let max = self.config.max_delay.as_millis() as i64;
                if due_ms - now > max {
                    return Err(EngineError::IllegalDeliveryTime(format!(
                        "delivery time is {} s ahead, over the maximum delay of {} s",
                        (due_ms - now) / 1000,
                        max / 1000
                    )));
                }
                if due_ms > now {
                    Park::Timer(due_ms as u64)
                } else {
                    Park::No
                }
            }
            MessageType::Transaction => Park::Half(p.transaction_recovery),
        };
        if let Some(priority) = p.priority {
            if p.message_type != MessageType::Priority {
                return Err(EngineError::PropertyConflict(
                    "only PRIORITY messages may carry a priority".into(),
                ));
            }
            if priority < 0 {
                return Err(EngineError::bad_request(format!(
                    "priority {priority} is negative; use 0 or more (higher is delivered first)"
                )));
            }
        }
        Ok(park)
    }
}

/// What an append of a message to its topic tells the front door.
fn appended(a: ferromq_store::AppendResult) -> Published {
    Published {
        queue_offset: Some(a.queue_offset),
        visible_end: Some(a.phys_offset + u64::from(a.size)),
        log_offset: a.phys_offset,
        term: a.term,
        ..Default::default()
    }
}

/// The message as the store keeps it: system fields under their property keys. Front doors
/// that store a publication other than through [`Engine::publish`] (retries) use it too.
pub fn stored_form(p: Publication, topic: String, queue_id: u32) -> NewMessage {
    let mut properties = p.user_properties;
    properties.insert(PROP_MSG_ID.into(), p.message_id);
    if let Some(t) = p.tag {
        properties.insert(PROP_TAGS.into(), t);
    }
    if !p.keys.is_empty() {
        let mut separator = [0u8; 4];
        let separator: &str = KEY_SEPARATOR.encode_utf8(&mut separator);
        properties.insert(PROP_KEYS.into(), p.keys.join(separator));
    }
    if let Some(g) = p.message_group {
        properties.insert(props::MESSAGE_GROUP.into(), g);
    }
    properties.insert(
        props::MESSAGE_TYPE.into(),
        props::type_code(p.message_type).to_string(),
    );
    let born_host = p.born_host.parse().ok();
    if !p.born_host.is_empty() {
        properties.insert(props::BORN_HOST.into(), p.born_host);
    }
    if let Some(tc) = p.trace_context.filter(|t| !t.is_empty()) {
        properties.insert(props::TRACE_CONTEXT.into(), tc);
    }
    if p.message_type == MessageType::Delay {
        if let Some(t) = p.delivery_time {
            properties.insert(props::DELIVER_AT.into(), t.floor_ms().to_string());
        }
    }
    if p.message_type == MessageType::Priority {
        properties.insert(props::PRIORITY.into(), p.priority.unwrap_or(0).to_string());
    }
    NewMessage {
        topic,
        queue_id,
        born_timestamp_ms: p.born_timestamp_ms,
        born_host,
        properties,
        body: p.body,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use ferromq_store::{
        MessageType, Store, StoreConfig, TopicConfig, PROP_KEYS, PROP_MSG_ID, PROP_TAGS,
    };

    use super::Publication;
    use crate::{props, Engine, EngineConfig};

    /// An engine with topics `a` and `b` of one queue each.
    fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let store = Store::open(StoreConfig::new(dir.join("store"))).expect("store");
        let e = Engine::open(store, EngineConfig::new(dir.join("engine"))).expect("engine");
        for name in ["a", "b"] {
            e.create_topic(TopicConfig::new(name, 1)).expect("topic");
        }
        e
    }

    fn publication(topic: &str, id: &str) -> Publication {
        Publication {
            topic: topic.into(),
            queue_id: Some(0),
            message_type: MessageType::Normal,
            message_id: id.into(),
            tag: Some("tag".into()),
            keys: vec!["k1".into(), "k2".into()],
            producer: Some("producer-1".into()),
            born_host: "10.0.0.7:4100".into(),
            body: Bytes::from(id.to_lowercase()),
            ..Default::default()
        }
    }

    fn ids(e: &Engine, topic: &str) -> Vec<String> {
        assert!(e
            .store
            .wait_dispatched(e.store.log_end(), Duration::from_secs(5)));
        e.store
            .read(topic, 0, 0, 10, None)
            .expect("read")
            .messages
            .iter()
            .map(|m| m.properties[PROP_MSG_ID].clone())
            .collect()
    }

    #[test]
    fn a_batch_over_two_topics_stores_each_message_on_its_own_topic() {
        let dir = tempfile::tempdir().expect("dir");
        let e = engine(dir.path());
        // A queue's first record allocates its consume queue file, which the quick path never
        // does: one message each on the blocking path first.
        e.publish(publication("a", "A0")).expect("publish");
        e.publish(publication("b", "B0")).expect("publish");
        let batch = ["A1", "B1", "A2", "A3", "B2"]
            .map(|id| publication(if id.starts_with('A') { "a" } else { "b" }, id));
        let out = e.publish_quick_batch(batch.to_vec()).expect("stored");
        let offsets: Vec<_> = out.iter().map(|p| p.queue_offset).collect();
        assert_eq!(offsets, [1, 1, 2, 3, 2].map(Some));
        assert_eq!(ids(&e, "a"), ["A0", "A1", "A2", "A3"]);
        assert_eq!(ids(&e, "b"), ["B0", "B1", "B2"]);
        let stored = e.store.read("b", 0, 2, 1, None).expect("read").messages;
        let m = &stored[0];
        assert_eq!(m.topic, "b");
        assert_eq!(m.body, b"b2");
        assert_eq!(m.properties[PROP_TAGS], "tag");
        assert_eq!(m.properties[PROP_KEYS], "k1 k2");
        assert_eq!(m.properties[props::BORN_HOST], "10.0.0.7:4100");
        assert_eq!(m.born_host, "10.0.0.7:4100".parse().ok());
        // The producer is for a transaction's checks, never stored.
        assert!(!m.properties.values().any(|v| v == "producer-1"));
    }

    #[test]
    fn a_batch_naming_a_missing_topic_stores_none_of_it() {
        let dir = tempfile::tempdir().expect("dir");
        let e = engine(dir.path());
        e.publish(publication("a", "A0")).expect("publish");
        let end = e.store.log_end();
        let batch = vec![publication("a", "A1"), publication("missing", "M1")];
        assert!(e.publish_quick_batch(batch).is_none());
        assert_eq!(e.store.log_end(), end);
        assert_eq!(ids(&e, "a"), ["A0"]);
    }
}
