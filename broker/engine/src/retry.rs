//! Retries of offset-based consumers: a message a consumer could not process comes back to its
//! group as a copy in the group's retry topic, after a delay, and goes to the dead-letter topic
//! once the group's retries are used up.
//!
//! Pop delivery ([`crate::delivery`]) retries by making a message visible again; offset-based
//! consumers (4.x remoting clients) cannot, because they keep their own position in each queue
//! and move past a failed message. They hand it back instead, and subscribe to their group's
//! retry topic (`%RETRY%<group>`, one queue, created on demand) to get it again. The copy keeps
//! the message id, properties and body, counts its retries, remembers the topic it was first
//! consumed from ([`crate::props::RETRY_ORIGIN_TOPIC`]) and waits as a delay timer, so it is
//! exactly as durable as any send.
//!
//! ## Limits
//! A message consumed after `n` retries that fails again is retried if `n` is below the
//! group's limit, else dead-lettered in the same format as pop delivery's dead letters. The
//! limit is the group's own setting (`max delivery attempts - 1`, so the default is 16 like
//! RocketMQ's) unless the consumer names one: 4.x clients send their `maxReconsumeTimes`, which
//! applies, capped by the group's explicit setting when an administrator gave it one.

use std::time::Duration;

use ferromq_store::NewMessage;
use tracing::info;

use crate::delivery::{as_new, dead_letter_copy};
use crate::error::EngineError;
use crate::props;
use crate::time::now_ms;
use crate::topics::{ensure_dlq_topic, ensure_retry_topic, retry_topic};
use crate::Engine;

/// A message handed back by a consumer of `group`.
#[derive(Debug, Clone)]
pub struct Retry {
    pub group: String,
    /// The message as it was consumed (topic and properties as stored).
    pub message: NewMessage,
    /// Retries it had before this one (0 for a first delivery).
    pub retries: u32,
    /// Wait before it is delivered again.
    pub delay: Duration,
    /// The consumer's own retry limit, if it sent one.
    pub client_limit: Option<u32>,
    /// Dead-letter it now whatever its retries (a consumer's explicit request).
    pub dead_letter: bool,
}

/// What handing a message back did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// A copy waits in the retry topic until `due_ms`.
    Later { topic: String, due_ms: u64 },
    /// The retries are used up: the message is in the dead-letter topic.
    DeadLettered { topic: String },
}

impl Engine {
    /// The retry limit of `group` for a consumer that sent `client_limit`.
    pub fn retry_limit(&self, group: &str, client_limit: Option<u32>) -> u32 {
        let explicit = self
            .groups
            .get(group)
            .max_delivery_attempts
            .map(|a| a.saturating_sub(1));
        match (client_limit, explicit) {
            (Some(c), Some(e)) => c.min(e),
            (Some(c), None) => c,
            (None, Some(e)) => e,
            (None, None) => self.groups.max_attempts(group).saturating_sub(1),
        }
    }

    /// Hands a message back for a later retry, or dead-letters it (see the module docs).
    pub fn retry(&self, r: Retry) -> Result<Retried, EngineError> {
        let mut m = r.message;
        let origin = m
            .properties
            .get(props::RETRY_ORIGIN_TOPIC)
            .cloned()
            .unwrap_or_else(|| m.topic.clone());
        if r.dead_letter || r.retries >= self.retry_limit(&r.group, r.client_limit) {
            let copy = dead_letter_copy(m, &r.group, &origin, r.retries + 1);
            ensure_dlq_topic(&self.store, self.journal.as_ref(), &copy.topic)?;
            self.store.append(&copy)?;
            self.deliveries.count_dead_letter(&r.group, &origin);
            info!(group = %r.group, topic = %origin, retries = r.retries, dlq = %copy.topic, "message moved to dead-letter topic");
            return Ok(Retried::DeadLettered { topic: copy.topic });
        }
        let topic = retry_topic(&r.group);
        ensure_retry_topic(&self.store, self.journal.as_ref(), &topic)?;
        m.properties
            .insert(props::RETRY_ORIGIN_TOPIC.into(), origin);
        m.properties.remove(props::MESSAGE_GROUP);
        m.properties.remove(props::DELIVER_AT);
        m.properties.insert(
            props::MESSAGE_TYPE.into(),
            props::type_code(ferromq_store::MessageType::Normal).to_string(),
        );
        m.topic = topic.clone();
        m.queue_id = 0;
        m.reconsume_times = r.retries + 1;
        let due_ms = now_ms().max(0) as u64 + r.delay.as_millis() as u64;
        if r.delay.is_zero() {
            self.store.append(&m)?;
        } else {
            self.timers.schedule_at(&m, due_ms)?;
        }
        Ok(Retried::Later { topic, due_ms })
    }

    /// [`Engine::retry`] for the message whose record starts at commit log offset `phys`.
    /// `delay` gives the wait from the retries the message had (4.x clients may leave the
    /// choice to the broker, which waits longer the more retries a message had).
    pub fn retry_at_offset(
        &self,
        group: &str,
        phys: u64,
        delay: &dyn Fn(u32) -> Duration,
        client_limit: Option<u32>,
        dead_letter: bool,
    ) -> Result<Retried, EngineError> {
        let stored = self.store.message_at(phys).map_err(|e| {
            EngineError::MessageNotFound(format!(
                "no message starts at commit log offset {phys}: {e}"
            ))
        })?;
        if crate::topics::is_system_topic(&stored.topic)
            && crate::topics::retry_group(&stored.topic).is_none()
            && !stored.topic.starts_with("%DLQ%")
        {
            return Err(EngineError::bad_request(format!(
                "the message at commit log offset {phys} is in system topic {} and cannot be retried",
                stored.topic
            )));
        }
        let retries = stored.reconsume_times;
        self.retry(Retry {
            group: group.to_string(),
            message: as_new(stored),
            retries,
            delay: delay(retries),
            client_limit,
            dead_letter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;
    use ferromq_store::{MessageType, Permission, Store, StoreConfig, TopicConfig};
    use std::sync::Arc;

    fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let store = Store::open(StoreConfig::new(dir.join("store"))).expect("store");
        store
            .topics()
            .create(TopicConfig {
                name: "t".into(),
                queues: 2,
                message_type: MessageType::Normal,
                permission: Permission::ReadWrite,
                retention_ms: None,
            })
            .expect("topic");
        Engine::open(store, EngineConfig::new(dir)).expect("engine")
    }

    fn wait(e: &Engine) {
        let end = e.store.stats().log_write_offset;
        assert!(e.store.wait_dispatched(end, Duration::from_secs(5)));
    }

    #[test]
    fn a_handed_back_message_waits_in_the_retry_topic_then_goes_to_the_dlq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path());
        let mut m = NewMessage {
            topic: "t".into(),
            queue_id: 1,
            body: b"payload".to_vec().into(),
            ..Default::default()
        };
        m.properties
            .insert(ferromq_store::PROP_MSG_ID.into(), "id-1".into());
        let a = e.store.append(&m).expect("append");
        wait(&e);
        let r = e
            .retry_at_offset("g", a.phys_offset, &|_| Duration::ZERO, Some(1), false)
            .expect("retry");
        assert!(matches!(&r, Retried::Later { topic, .. } if topic == "%RETRY%g"));
        wait(&e);
        let copy = e
            .store
            .read("%RETRY%g", 0, 0, 10, None)
            .expect("read")
            .messages
            .pop()
            .expect("a retry copy");
        assert_eq!(copy.reconsume_times, 1);
        assert_eq!(copy.msg_id(), Some("id-1"));
        assert_eq!(copy.body, b"payload");
        assert_eq!(
            copy.properties
                .get(props::RETRY_ORIGIN_TOPIC)
                .map(String::as_str),
            Some("t")
        );
        // It fails again: one retry was the limit.
        let r = e
            .retry_at_offset("g", copy.phys_offset, &|_| Duration::ZERO, Some(1), false)
            .expect("dead-letter");
        assert_eq!(
            r,
            Retried::DeadLettered {
                topic: "%DLQ%g".into()
            }
        );
        wait(&e);
        let dead = e
            .store
            .read("%DLQ%g", 0, 0, 10, None)
            .expect("read")
            .messages
            .pop()
            .expect("a dead letter");
        assert_eq!(
            dead.properties
                .get(props::DLQ_ORIGIN_TOPIC)
                .map(String::as_str),
            Some("t"),
            "the origin, not the retry topic"
        );
        assert_eq!(dead.msg_id(), Some("id-1"));
        assert_eq!(
            e.deliveries.dead_lettered(),
            vec![(("g".to_string(), "t".to_string()), 1)],
            "counted under the topic it came from"
        );
    }

    #[test]
    fn the_groups_explicit_setting_caps_the_clients_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path());
        assert_eq!(e.retry_limit("g", None), 16);
        assert_eq!(e.retry_limit("g", Some(20)), 20);
        e.groups
            .set(
                "g",
                crate::groups::GroupConfig {
                    max_delivery_attempts: Some(4),
                    fifo: None,
                },
            )
            .expect("set");
        assert_eq!(e.retry_limit("g", None), 3);
        assert_eq!(e.retry_limit("g", Some(20)), 3);
        assert_eq!(e.retry_limit("g", Some(1)), 1);
    }
}
