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
    }
}
