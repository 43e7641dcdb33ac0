//! Dead letters as an operator sees them: listing what a group's dead-letter topic holds, and
//! sending letters back to the topic they came from once the cause is fixed.
//!
//! A resent letter is appended to its origin topic again, with its message id, keys, tag, user
//! properties, body and FIFO message group, and marked for the group it died in
//! ([`props::RESEND_GROUP`]): other groups of the topic consumed it long ago and skip it. It is
//! delivered as a new message (first attempt). The dead-letter topic is a log, so the letter
//! also stays there; a cursor per group (the consumer offset of an internal group, durable and
//! journaled) remembers how far letters were resent, so "resend everything" never sends one
//! twice and listings can tell which were.

use std::collections::BTreeSet;

use ferromq_store::{NewMessage, StoredMessage};

use crate::error::EngineError;
use crate::journal::Change;
use crate::props;
use crate::topics::dlq_topic;
use crate::Engine;

/// One letter of a dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message: StoredMessage,
    /// The topic it was dead-lettered from.
    pub origin_topic: String,
    /// Deliveries it had before.
    pub attempts: u32,
    /// Whether "resend everything" has sent it back already.
    pub resent: bool,
}

/// A page of a group's dead letters.
#[derive(Debug, Clone, Default)]
pub struct DeadLetters {
    pub letters: Vec<DeadLetter>,
    /// Letters the topic holds.
    pub total: u64,
    /// Of those, letters not resent yet.
    pub pending: u64,
}

/// A letter sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resent {
    pub message_id: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
}

/// Letters read per store read while resending everything.
const RESEND_BATCH: usize = 256;

/// The internal group whose offset on `%DLQ%<group>` is the resend cursor.
fn cursor_group(group: &str) -> String {
    format!("%RESENT%{group}")
}

impl Engine {
    /// Up to `max` letters of `group`'s dead-letter topic from queue offset `from` (the oldest
    /// stored when `None`).
    pub fn dead_letters(
        &self,
        group: &str,
        from: Option<u64>,
        max: usize,
    ) -> Result<DeadLetters, EngineError> {
        let dlq = self.dlq_of(group)?;
        let (min, end) = self.store.queue_range(&dlq, 0);
        let cursor = self.resend_cursor(group, &dlq);
        let r = self
            .store
            .read(&dlq, 0, from.unwrap_or(min).max(min), max, None)?;
        let letters = r
            .messages
            .into_iter()
            .map(|m| DeadLetter {
                origin_topic: m
                    .properties
                    .get(props::DLQ_ORIGIN_TOPIC)
                    .cloned()
                    .unwrap_or_default(),
                attempts: m
                    .properties
                    .get(props::DLQ_ATTEMPTS)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                resent: m.queue_offset < cursor,
                message: m,
            })
            .collect();
        Ok(DeadLetters {
            letters,
            total: end - min,
            pending: end - cursor,
        })
    }

    /// Sends letters back to their topics: those with the given message ids (resent again if
    /// they were before), or with none given every letter not resent yet.
    pub fn resend_dead_letters(
        &self,
        group: &str,
        message_ids: &[String],
    ) -> Result<Vec<Resent>, EngineError> {
        if self.membership.is_read_only() {
            return Err(EngineError::Draining {
                group: self.membership.group(),
            });
        }
        let dlq = self.dlq_of(group)?;
        if !message_ids.is_empty() {
            // Every id is found before anything is sent, so a typo changes nothing.
            let wanted: BTreeSet<&str> = message_ids.iter().map(String::as_str).collect();
            let mut letters = Vec::new();
            for id in wanted {
                match self.store.find_id(&dlq, id)? {
                    Some(m) => letters.push(m),
                    None => {
                        return Err(EngineError::MessageNotFound(format!(
                            "no dead letter with message id {id} in {dlq}"
                        )))
                    }
                }
            }
            return letters.iter().map(|m| self.resend(group, m)).collect();
        }
        let mut out = Vec::new();
        loop {
            let cursor = self.resend_cursor(group, &dlq);
            let r = self.store.read(&dlq, 0, cursor, RESEND_BATCH, None)?;
            let Some(last) = r.messages.last().map(|m| m.queue_offset) else {
                return Ok(out);
            };
            for m in &r.messages {
                match self.resend(group, m) {
                    Ok(x) => out.push(x),
                    Err(e) => {
                        // What went back stays counted: a retry starts at the letter that failed.
                        self.set_resend_cursor(group, &dlq, m.queue_offset)?;
                        return Err(e);
                    }
                }
            }
            self.set_resend_cursor(group, &dlq, last + 1)?;
        }
    }

    /// Moves the resend cursor (durably, journaled).
    fn set_resend_cursor(&self, group: &str, dlq: &str, next: u64) -> Result<(), EngineError> {
        self.store
            .offsets()
            .commit(&cursor_group(group), dlq, 0, next)?;
        self.journal(&Change::Offsets {
            offsets: vec![(cursor_group(group), dlq.to_string(), 0, next)],
        })?;
        Ok(())
    }

    /// The group's dead-letter topic, if it has one here.
    fn dlq_of(&self, group: &str) -> Result<String, EngineError> {
        let dlq = dlq_topic(group);
        if self.store.topics().get(&dlq).is_none() {
            return Err(EngineError::GroupNotFound(format!(
                "consumer group {group} has no dead letters here ({dlq} does not exist)"
            )));
        }
        Ok(dlq)
    }

    fn resend_cursor(&self, group: &str, dlq: &str) -> u64 {
        let (min, _) = self.store.queue_range(dlq, 0);
        self.store
            .offsets()
            .get(&cursor_group(group), dlq, 0)
            .unwrap_or(min)
            .max(min)
    }

    /// Appends one letter to its origin topic for `group`.
    fn resend(&self, group: &str, letter: &StoredMessage) -> Result<Resent, EngineError> {
        let id = letter.msg_id().unwrap_or_default().to_string();
        let origin = letter
            .properties
            .get(props::DLQ_ORIGIN_TOPIC)
            .cloned()
            .ok_or_else(|| {
                EngineError::bad_request(format!(
                    "dead letter {id} does not name the topic it came from"
                ))
            })?;
        let topic = self
            .store
            .topics()
            .get(&origin)
            .ok_or_else(|| EngineError::TopicNotFound(origin.clone()))?;
        if !topic.permission.writable() {
            return Err(EngineError::TopicPermission {
                topic: topic.name,
                what: "writable",
            });
        }
        let mut properties = letter.properties.clone();
        properties.remove(props::DLQ_ORIGIN_TOPIC);
        properties.remove(props::DLQ_ATTEMPTS);
        let message_group = properties.remove(props::DLQ_MESSAGE_GROUP);
        if let Some(g) = &message_group {
            properties.insert(props::MESSAGE_GROUP.into(), g.clone());
        }
        properties.insert(
            props::MESSAGE_TYPE.into(),
            props::type_code(topic.message_type).to_string(),
        );
        properties.insert(props::RESEND_GROUP.into(), group.to_string());
        let queue_id =
            self.placement
                .choose(&topic.name, topic.queues, None, message_group.as_deref())?;
        let a = self.store.append(&NewMessage {
            topic: topic.name.clone(),
            queue_id,
            born_timestamp_ms: letter.born_timestamp_ms,
            born_host: letter.born_host,
            properties,
            body: letter.body.clone().into(),
            ..Default::default()
        })?;
        tracing::info!(group, message_id = %id, topic = %topic.name, queue = queue_id, "dead letter sent back to its topic");
        Ok(Resent {
            message_id: id,
            topic: topic.name,
            queue_id,
            queue_offset: a.queue_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ferromq_store::{
        MessageType, NewMessage, Permission, Store, StoreConfig, TagFilter, TopicConfig,
    };

    use crate::delivery::ReceiveSpec;
    use crate::journal::{Change, JOURNAL_TOPIC};
    use crate::resets::ResetTo;
    use crate::{Engine, EngineConfig};

    /// A replicated engine (so changes are journaled) with topic `t` of one queue.
    fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let store = Store::open(StoreConfig::new(dir.join("store"))).expect("store");
        let mut cfg = EngineConfig::new(dir.join("engine"));
        cfg.replicated = true;
        let e = Engine::open(store, cfg).expect("engine");
        e.create_topic(TopicConfig {
            name: "t".into(),
            queues: 1,
            message_type: MessageType::Normal,
            permission: Permission::ReadWrite,
            retention_ms: None,
        })
        .expect("topic");
        e
    }

    fn send(e: &Engine, body: &str) {
        let mut properties = std::collections::BTreeMap::new();
        properties.insert(ferromq_store::PROP_MSG_ID.to_string(), body.to_uppercase());
        let a = e
            .store
            .append(&NewMessage {
                topic: "t".into(),
                properties,
                body: body.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .expect("append");
        assert!(e
            .store
            .wait_dispatched(a.phys_offset + u64::from(a.size), Duration::from_secs(5)));
    }

    /// Waits until everything in the log is dispatched: a dead letter or a resent message is
    /// appended by the call, and the dispatcher thread indexes it a moment later.
    fn settle(e: &Engine) {
        assert!(e
            .store
            .wait_dispatched(e.store.log_end(), Duration::from_secs(5)));
    }

    fn receive(e: &Engine, group: &str) -> Vec<crate::delivery::Delivery> {
        let all = TagFilter::parse("*");
        e.deliveries
            .receive(&ReceiveSpec {
                group,
                topic: "t",
                queues: vec![0],
                batch: 10,
                invisible: Duration::from_secs(30),
                filter: &all,
                fifo: false,
                priority: false,
                max_attempts: 5,
                renew_for: None,
                attempt: None,
            })
            .expect("receive")
            .deliveries
    }

    fn bodies(d: &[crate::delivery::Delivery]) -> Vec<String> {
        d.iter()
            .map(|d| String::from_utf8_lossy(&d.message.body).into_owned())
            .collect()
    }

    /// Whether the journal holds `c` (waiting for the store to dispatch it).
    fn journaled(e: &Engine, c: &Change) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, end) = e.store.queue_range(JOURNAL_TOPIC, 0);
            let r = e
                .store
                .read(JOURNAL_TOPIC, 0, 0, end as usize + 1, None)
                .expect("read");
            if r.messages
                .iter()
                .any(|m| serde_json::from_slice::<Change>(&m.body).ok().as_ref() == Some(c))
            {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_reset_restarts_delivery_and_is_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        for b in ["a", "b", "c"] {
            send(&e, b);
        }
        for d in receive(&e, "g") {
            e.deliveries.ack("g", "t", &d.handle).unwrap();
        }
        let plan = e.plan_offset_reset("g", None, ResetTo::Offset(1)).unwrap();
        assert_eq!((plan[0].current, plan[0].target), (3, 1));
        assert!(receive(&e, "g").is_empty(), "planning changes nothing");
        e.reset_offsets("g", &plan).unwrap();
        assert_eq!(e.store.offsets().get("g", "t", 0), Some(1));
        assert!(journaled(
            &e,
            &Change::Offsets {
                offsets: vec![("g".into(), "t".into(), 0, 1)]
            }
        ));
        assert_eq!(bodies(&receive(&e, "g")), ["b", "c"]);
        assert!(matches!(
            e.plan_offset_reset("nobody", None, ResetTo::Earliest),
            Err(crate::EngineError::GroupNotFound(_))
        ));

        e.delete_group("g").unwrap();
        assert_eq!(e.store.offsets().get("g", "t", 0), None);
        assert!(journaled(&e, &Change::GroupDeleted { name: "g".into() }));
    }

    #[test]
    fn a_resent_letter_goes_to_its_group_only_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        send(&e, "x");
        assert_eq!(bodies(&receive(&e, "other")).len(), 1);
        let d = receive(&e, "g");
        e.deliveries.forward_to_dlq("g", "t", &d[0].handle).unwrap();
        settle(&e);
        let page = e.dead_letters("g", None, 10).unwrap();
        assert_eq!((page.total, page.pending), (1, 1));
        assert_eq!(page.letters[0].origin_topic, "t");

        let resent = e.resend_dead_letters("g", &[]).unwrap();
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].message_id, "X");
        settle(&e);
        let again = receive(&e, "g");
        assert_eq!(bodies(&again), ["x"]);
        assert_eq!(again[0].attempt, 1);
        assert!(receive(&e, "other").is_empty(), "other groups skip it");
        assert!(e.resend_dead_letters("g", &[]).unwrap().is_empty());
        assert!(e.dead_letters("g", None, 10).unwrap().letters[0].resent);
        assert!(matches!(
            e.resend_dead_letters("g", &["NOPE".into()]),
            Err(crate::EngineError::MessageNotFound(_))
        ));
    }
}
