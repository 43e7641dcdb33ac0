//! How message fields travel as store properties: the one list of FerroMQ's internal keys.
//!
//! The store knows tags, keys and message ids (`TAGS`, `KEYS`, `UNIQ_KEY`) because it indexes
//! them. Everything else a front door needs back on delivery (message group, type, born host,
//! trace context, dead-letter origin) and everything the engine keeps about parked messages
//! lives under `__FM_` keys, which producers may not use; whatever remains is user properties.

use ferromq_store::MessageType;

/// Prefix of FerroMQ's internal properties; user properties may not start with it.
pub const INTERNAL_PREFIX: &str = "__FM_";
/// FIFO message group.
pub const MESSAGE_GROUP: &str = "__FM_GROUP";
/// Message type as the producer declared it (see [`type_code`]).
pub const MESSAGE_TYPE: &str = "__FM_TYPE";
/// Producer host name (free text; the store's born host is a socket address).
pub const BORN_HOST: &str = "__FM_BORN_HOST";
/// Tracing context, echoed to consumers.
pub const TRACE_CONTEXT: &str = "__FM_TRACE";
/// PRIORITY messages: their priority (higher is delivered first).
pub const PRIORITY: &str = "__FM_PRIORITY";
/// On dead-lettered copies: the topic the message came from.
pub const DLQ_ORIGIN_TOPIC: &str = "__FM_DLQ_TOPIC";
/// On dead-lettered copies: deliveries before it was dead-lettered.
pub const DLQ_ATTEMPTS: &str = "__FM_DLQ_ATTEMPTS";
/// On dead-lettered copies: the FIFO message group the message had (restored on a resend).
pub const DLQ_MESSAGE_GROUP: &str = "__FM_DLQ_GROUP";
/// On a dead letter sent back to its topic: the one consumer group it is for (others skip it,
/// having consumed it before).
pub const RESEND_GROUP: &str = "__FM_RESEND_GROUP";
/// On a retry copy of an offset-based consumer's message (in `%RETRY%<group>`): the topic the
/// message was first consumed from.
pub const RETRY_ORIGIN_TOPIC: &str = "__FM_RETRY_TOPIC";
/// On a delay message: its delivery time (ms since the epoch), echoed to consumers.
pub const DELIVER_AT: &str = "__FM_DELIVER_AT";
/// On a parked message: the topic it will be delivered to.
pub const REAL_TOPIC: &str = "__FM_REAL_TOPIC";
/// On a parked message: the incarnation of [`REAL_TOPIC`] it was sent to (see
/// `ferromq_store::TopicStore::incarnation`); a topic deleted and created again meanwhile does
/// not receive it.
pub const REAL_INCARNATION: &str = "__FM_REAL_INCARNATION";
/// On a parked message: the queue of [`REAL_TOPIC`] the producer chose.
pub const REAL_QUEUE: &str = "__FM_REAL_QUEUE";
/// On a released copy: `<system topic>:<entry>` of the parked original.
pub const PARKED_FROM: &str = "__FM_PARKED";
/// On a half message: the client id of the producer that sent it, asked first at check time.
pub const TX_PRODUCER: &str = "__FM_TX_PRODUCER";
/// The store's consume-queue key property (a parked message's due time).
pub const CQ_KEY: &str = ferromq_store::PROP_CQ_KEY;

/// Whether a stored property is one of the system fields (not a user property).
pub fn is_system(key: &str) -> bool {
    key.starts_with(INTERNAL_PREFIX)
        || key == ferromq_store::PROP_TAGS
        || key == ferromq_store::PROP_KEYS
        || key == ferromq_store::PROP_MSG_ID
}

/// The number stored in [`MESSAGE_TYPE`]. These are the numbers of the RocketMQ 5 protocol's
/// `MessageType` enum (a published fact), so stored messages written by earlier versions, which
/// wrote the wire number, read back the same.
pub fn type_code(t: MessageType) -> i32 {
    match t {
        MessageType::Normal => 1,
        MessageType::Fifo => 2,
        MessageType::Delay => 3,
        MessageType::Transaction => 4,
        MessageType::Priority => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_keys_are_system_fields() {
        for k in [
            MESSAGE_GROUP,
            MESSAGE_TYPE,
            DELIVER_AT,
            REAL_TOPIC,
            PARKED_FROM,
            TX_PRODUCER,
            CQ_KEY,
            "TAGS",
            "UNIQ_KEY",
        ] {
            assert!(is_system(k), "{k}");
        }
        assert!(!is_system("color"));
    }
}
