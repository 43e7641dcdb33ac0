//! What can go wrong inside the engine, in the engine's own words.
//!
//! Each variant is one kind of refusal or failure a front door must tell its client about; the
//! server turns it into a RocketMQ status code in one place (`status.rs` of the `ferromq`
//! crate), so the engine never names a wire code. Variants carry the offending value (topic,
//! group, handle) and their text is written for the person who sent the request.

use std::sync::Arc;

use ferromq_store::{MessageType, StoreError};

/// A refused request or a failure of the engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Publishing to a name reserved for the broker's own topics.
    #[error("topic {0} is a system topic; clients cannot publish to it")]
    SystemTopic(String),
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// A consumer group this broker knows nothing about (the message says what was looked for).
    #[error("{0}")]
    GroupNotFound(String),
    /// The topic's permission forbids this direction (`what` is "writable" or "readable").
    #[error("topic {topic} is not {what}")]
    TopicPermission { topic: String, what: &'static str },
    /// This broker group is read-only while it is drained.
    #[error(
        "broker group {group} {}; send through a proxy so the message goes to a writable group",
        crate::DRAINING
    )]
    Draining { group: String },
    /// The message's type is not the one its topic accepts.
    #[error("topic {topic} accepts {accepts} messages, not {sent:?}")]
    TypeMismatch {
        topic: String,
        accepts: MessageType,
        sent: MessageType,
    },
    /// A field that only some message types may carry (priority, delivery time).
    #[error("{0}")]
    PropertyConflict(String),
    /// A delivery time that is missing or too far ahead.
    #[error("{0}")]
    IllegalDeliveryTime(String),
    /// A malformed field of an otherwise well-formed request.
    #[error("{0}")]
    BadRequest(String),
    /// A receipt handle that is garbled or was issued by another broker.
    #[error("receipt handle {0:?} is not one this broker issued")]
    ForeignHandle(String),
    /// A receipt handle issued before this broker (re)started.
    #[error("receipt handle was issued before the broker restarted; the message will be delivered again")]
    HandleFromBeforeRestart,
    /// A receipt handle of an earlier delivery, or of a settled message.
    #[error("receipt handle is stale: the message was settled or delivered again since")]
    StaleHandle,
    /// No delivery of this group and topic is known under the handle.
    #[error("no message of topic {topic} was delivered to group {group} with this handle")]
    UnknownDelivery { group: String, topic: String },
    /// A transaction id that is empty, garbled, foreign or names no half message.
    #[error("{0}")]
    InvalidTransactionId(String),
    /// The message was settled the other way already (committed vs rolled back, delivered vs
    /// recalled).
    #[error("{0}")]
    AlreadySettled(String),
    #[error("{0}")]
    MessageNotFound(String),
    /// A stored record failed its checksum: reported, never served.
    #[error("{0}")]
    Corrupt(String),
    /// A subscription filter that does not parse or names nothing.
    #[error("{0}")]
    IllegalFilter(String),
    /// The store refused or failed (shared, so one failure can answer a whole batch).
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// A local file of the engine (group settings, drain state) could not be read or written.
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> EngineError {
        EngineError::Store(Arc::new(e))
    }
}

impl EngineError {
    pub fn internal(message: impl Into<String>) -> EngineError {
        EngineError::Internal(message.into())
    }

    pub fn bad_request(message: impl Into<String>) -> EngineError {
        EngineError::BadRequest(message.into())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
