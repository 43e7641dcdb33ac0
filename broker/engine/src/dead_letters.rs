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
                out.push(self.resend(group, m)?);
            }
            let next = last + 1;
            self.store
                .offsets()
                .commit(&cursor_group(group), &dlq, 0, next)?;
            self.journal(&Change::Offsets {
                offsets: vec![(cursor_group(group), dlq.clone(), 0, next)],
            })?;
        }
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
            body: letter.body.clone(),
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
