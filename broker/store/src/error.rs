//! Errors of the storage engine. Each variant carries the value that caused it so that the
//! server can map it to exactly one RocketMQ status code and a message a user can act on.

use std::path::PathBuf;

/// Everything the store can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The message body is larger than the configured limit (`max_body_size`).
    #[error("message body is {size} bytes, over the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    /// The whole encoded record (topic, properties, body) would not fit in one segment.
    #[error("record of {size} bytes does not fit in a commit log segment of {segment_size} bytes")]
    RecordTooLarge { size: usize, segment_size: u64 },
    /// A field that the record layout cannot hold (for example a topic over 127 bytes).
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// The disk holding the data directory is fuller than the high-water mark, or a new
    /// segment could not be allocated. Appends resume once space is back.
    #[error("disk full: {detail}; appends are refused until space is freed")]
    DiskFull { detail: String },
    /// A previous write or flush failed. Nothing is acknowledged any more: the store must be
    /// reopened, which recovers from what is really on disk.
    #[error(
        "store stopped after an I/O failure ({cause}); restart the broker to recover from disk"
    )]
    Stopped { cause: String },
    /// A record failed its checksum or structural checks; it is never served.
    #[error("corrupt record at commit log offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// Bytes handed to a decoder are not a valid encoding.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// An offset outside what the commit log holds (deleted by retention or not yet written).
    #[error("commit log offset {offset} is outside the stored range {min}..{max}")]
    OffsetOutOfRange { offset: u64, min: u64, max: u64 },
    /// The topic is not in the metadata store.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// The topic exists already (on create).
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// The queue id is not below the topic's queue count.
    #[error("queue {queue_id} does not exist in topic {topic} ({queues} queues)")]
    UnknownQueue {
        topic: String,
        queue_id: u32,
        queues: u32,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    /// This replica of a replicated group takes no writes now (it follows, or it leads without
    /// the controller's lease or enough in-sync members); the reason says which.
    #[error("{0}")]
    NotWritable(String),
    /// The record was written but the group did not confirm it as the acknowledgement mode
    /// requires in time: it is not acknowledged, and may still be delivered.
    #[error("{0}")]
    NotReplicated(String),
    /// Configuration that cannot work, naming the field.
    #[error("invalid store configuration: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    /// An operating-system I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// Result alias used across the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
