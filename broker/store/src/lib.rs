//! `ferromq-store`: the storage engine of FerroMQ. No networking, no protocol types.
//!
//! ## Durability contract
//! An append that returned `Ok` is in the commit log and survives a crash of the process
//! (kill -9): its bytes are in the page cache, and recovery finds them by checksum. In
//! [`FlushMode::Sync`] it is also on disk before the call returns, so it survives a power
//! loss; in [`FlushMode::Async`] a power loss can lose what was appended within the last
//! `flush_interval` (200 ms by default). A record that fails its CRC32C is never returned as
//! a message: recovery cuts a torn tail, and damage inside the log is reported with its
//! offset and skipped. A failed flush stops the store from acknowledging anything more until
//! it is reopened (it never retries and pretends). A disk above its high-water mark, or too
//! full for a file an append needs, refuses appends with [`StoreError::DiskFull`] before
//! anything is written, and accepts them again once space is back. Every file the dispatcher
//! will write for a record is allocated before the record is acknowledged, so an acknowledged
//! append is always readable through its consume queue once dispatched.
//!
//! ## On disk
//! ```text
//! <data dir>/
//!   LOCK                 flock'd while a process has the store open
//!   RUNNING              present while open; found at open = the last stop was unclean
//!   checkpoint           offsets recovery starts from (see `checkpoint`)
//!   commitlog/<base>     segments of the commit log (see `commit_log`, `record`)
//!   consumequeue/<topic>/<queue>/<first offset>   consume queues (see `consume_queue`)
//!   index/<seq>          key and message-id index files (see `index`)
//!   config/metadata.log  topics, deleted-topic fences and consumer offsets (see
//!                        `metadata_log`; migrated from topics.json and offsets.json)
//! ```

pub mod checkpoint;
pub mod commit_log;
pub mod config;
pub mod consume_queue;
pub mod disk;
pub mod epochs;
pub mod error;
pub mod index;
pub mod mapped_file;
pub mod marks;
pub mod memory;
pub mod metadata;
pub mod metadata_log;
pub mod record;
mod store;

pub use config::{FlushMode, StoreConfig, DEFAULT_FLUSH_GATHER};
pub use error::{Result, StoreError};
pub use metadata::{
    validate_name, MessageType, MetadataStats, OffsetKey, OffsetStore, Permission, TopicConfig,
    TopicStore, TryPersist,
};
pub use record::{NewMessage, RecordView, StoredMessage};
pub use store::{
    AppendGate, AppendListener, AppendResult, Confirmation, DispatchEvent, DispatchListener,
    DispatchedListener, Durable, RawBatch, ReadResult, Store, StoreStats, TagFilter,
};

/// Property holding a message's tag (one per message).
pub const PROP_TAGS: &str = "TAGS";
/// Property holding a message's index keys, separated by [`KEY_SEPARATOR`].
pub const PROP_KEYS: &str = "KEYS";
/// Property holding the producer-assigned message id.
pub const PROP_MSG_ID: &str = "UNIQ_KEY";
/// Separator of keys inside [`PROP_KEYS`].
pub const KEY_SEPARATOR: char = ' ';
/// A record carrying this property (a decimal `u64`) gets that number in its consume queue
/// entry instead of its tag hash. Parked records use it for their due time, so a restart
/// finds every pending timer's due time in the queue, without parsing the records for it.
pub const PROP_CQ_KEY: &str = "__FM_CQ_KEY";
