//! The engine's own settings: the part of a broker's configuration that decides delivery
//! semantics. The server builds it from its flags and files; the engine never reads either.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of one engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the engine keeps its own files (group settings, drain state, parked-message marks).
    pub data_dir: PathBuf,
    /// Create unknown topics (NORMAL, [`EngineConfig::default_queues`] queues) on first use.
    pub auto_create_topics: bool,
    /// Queue count of auto-created topics.
    pub default_queues: u32,
    /// Deliveries of one message to a group before it is dead-lettered (groups may override).
    pub max_delivery_attempts: u32,
    /// Longest delay a DELAY message may ask for.
    pub max_delay: Duration,
    /// First transaction check (unless the message sets its own) and the wait between checks.
    pub transaction_check_interval: Duration,
    /// Checks of an unresolved half message before it is rolled back.
    pub transaction_check_max: u32,
    /// The store is one replica of a replicated group: every change to state kept beside the
    /// messages is also journaled ([`crate::journal`]).
    pub replicated: bool,
}

impl EngineConfig {
    /// The defaults of a fresh broker, with its files under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            auto_create_topics: false,
            default_queues: 8,
            // RocketMQ's default: 16 retries after the first delivery.
            max_delivery_attempts: 17,
            max_delay: Duration::from_secs(3 * 86_400),
            transaction_check_interval: Duration::from_secs(10),
            // RocketMQ's default.
            transaction_check_max: 15,
            replicated: false,
        }
    }
}
