//! How protocol fields travel as store properties.
//!
//! The store knows tags, keys and message ids (`TAGS`, `KEYS`, `UNIQ_KEY`) because it indexes
//! them. Everything else the protocol needs back on delivery (message group, type, born host,
//! trace context, dead-letter origin) is kept under `__FM_` keys, which producers may not use;
//! whatever remains is user properties.

/// Prefix of FerroMQ's internal properties; user properties may not start with it.
pub const INTERNAL_PREFIX: &str = "__FM_";
/// FIFO message group.
pub const MESSAGE_GROUP: &str = "__FM_GROUP";
/// Message type as the producer declared it (protocol enum number).
pub const MESSAGE_TYPE: &str = "__FM_TYPE";
/// Producer host name (the protocol's born_host is free text, the store's is a socket address).
pub const BORN_HOST: &str = "__FM_BORN_HOST";
/// Tracing context, echoed to consumers.
pub const TRACE_CONTEXT: &str = "__FM_TRACE";
/// PRIORITY messages: their priority (higher is delivered first).
pub const PRIORITY: &str = "__FM_PRIORITY";
/// On dead-lettered copies: the topic the message came from.
pub const DLQ_ORIGIN_TOPIC: &str = "__FM_DLQ_TOPIC";
/// On dead-lettered copies: deliveries before it was dead-lettered.
pub const DLQ_ATTEMPTS: &str = "__FM_DLQ_ATTEMPTS";

/// Whether a stored property is one of the protocol's system fields (not a user property).
pub fn is_system(key: &str) -> bool {
    key.starts_with(INTERNAL_PREFIX)
        || key == ferromq_store::PROP_TAGS
        || key == ferromq_store::PROP_KEYS
        || key == ferromq_store::PROP_MSG_ID
}
