//! Topic names the engine reserves, and the topics it creates for itself.

use ferromq_store::{MessageType, Permission, Store, TopicConfig};

use crate::error::EngineError;
use crate::journal::{Change, Journal};

/// Topics clients may not publish to directly: RocketMQ's system prefixes, retry and
/// dead-letter topics, and FerroMQ's own (`%SYS%`, where parked messages wait).
pub fn is_system_topic(name: &str) -> bool {
    name.starts_with("rmq_sys_")
        || name.starts_with("%RETRY%")
        || name.starts_with("%DLQ%")
        || name.starts_with("%SYS%")
}

/// Refuses a system topic as the target of a client's send.
pub fn check_client_topic(name: &str) -> Result<(), EngineError> {
    if is_system_topic(name) {
        return Err(EngineError::SystemTopic(name.to_string()));
    }
    Ok(())
}

/// Name of a group's dead-letter topic.
pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// Prefix of the retry topics of offset-based consumer groups.
pub const RETRY_PREFIX: &str = "%RETRY%";

/// Name of a group's retry topic: where offset-based consumers (4.x remoting clients) find the
/// messages they handed back, each due at its retry time. They subscribe to it themselves.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The group whose retry topic `topic` is.
pub fn retry_group(topic: &str) -> Option<&str> {
    topic.strip_prefix(RETRY_PREFIX).filter(|g| !g.is_empty())
}

/// Creates a group's retry topic on first use (one queue, like the dead-letter topic).
pub fn ensure_retry_topic(
    store: &Store,
    journal: Option<&Journal>,
    name: &str,
) -> Result<(), EngineError> {
    ensure_dlq_topic(store, journal, name)
}

/// Creates a group's dead-letter topic on first use (one queue, readable and writable, so a
/// consumer can drain it), journaled in a replicated group.
pub fn ensure_dlq_topic(
    store: &Store,
    journal: Option<&Journal>,
    name: &str,
) -> Result<(), EngineError> {
    if store.topics().get(name).is_some() {
        return Ok(());
    }
    let cfg = TopicConfig {
        name: name.into(),
        queues: 1,
        message_type: MessageType::Normal,
        permission: Permission::ReadWrite,
        retention_ms: None,
    };
    match store.topics().create(cfg) {
        Ok(t) => {
            if let Some(j) = journal {
                j.record(&Change::Topic {
                    incarnation: store.topics().incarnation(&t.name),
                    topic: t,
                })?;
            }
            Ok(())
        }
        Err(ferromq_store::StoreError::TopicExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prefixes_are_refused_to_clients() {
        for t in ["%DLQ%g", "%RETRY%g", "%SYS%FM_TIMER", "rmq_sys_x"] {
            assert!(matches!(
                check_client_topic(t),
                Err(EngineError::SystemTopic(_))
            ));
        }
        assert!(check_client_topic("orders").is_ok());
        assert_eq!(dlq_topic("g"), "%DLQ%g");
        assert_eq!(retry_topic("g"), "%RETRY%g");
        assert_eq!(retry_group("%RETRY%g"), Some("g"));
        assert_eq!(retry_group("%RETRY%"), None);
        assert_eq!(retry_group("orders"), None);
    }
}
