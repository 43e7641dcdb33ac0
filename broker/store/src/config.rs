//! Store configuration, validated once at open with errors that name the bad field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// When an append is acknowledged relative to fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushMode {
    /// Acknowledge once the record is in the page cache; a background flusher makes it
    /// durable every `flush_interval`. A process crash loses nothing; a power loss can lose
    /// up to one interval of appends.
    #[default]
    Async,
    /// Acknowledge only once the record is on disk. Concurrent appends share one flush
    /// (group commit), so the cost of an fsync is spread over everything waiting for it.
    Sync,
}

impl std::str::FromStr for FlushMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "async" => Ok(FlushMode::Async),
            "sync" => Ok(FlushMode::Sync),
            other => Err(format!("unknown flush mode {other:?} (async or sync)")),
        }
    }
}

/// Everything the store can be tuned with. `StoreConfig::new(dir)` gives the production
/// defaults; tests shrink the sizes.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Size of each commit log segment file (default 1 GiB).
    pub segment_size: u64,
    pub flush: FlushMode,
    /// How often the async flusher runs, and how often consume queues, index files and the
    /// checkpoint are flushed in both modes (default 200 ms).
    pub flush_interval: Duration,
    /// Largest accepted message body (default 4 MiB).
    pub max_body_size: usize,
    /// Entries per consume queue file (default 300 000, 6 MB).
    pub cq_entries_per_file: u64,
    /// Hash slots per index file (default 500 000).
    pub index_slots: u32,
    /// Entries per index file (default 2 000 000).
    pub index_entries: u32,
    /// Segments whose last write is older than this are deleted (default 72 h).
    pub retention: Duration,
    /// Oldest segments are deleted while the log is larger than this (default: no limit).
    pub retention_bytes: Option<u64>,
    /// Fraction of the disk above which appends are refused (default 0.90).
    pub disk_high_water: f64,
    /// How often retention and the disk check run (default 10 s for retention, disk every
    /// flush interval).
    pub clean_interval: Duration,
    /// Address recorded as the store host of every record.
    pub store_host: Option<SocketAddr>,
    /// How far ahead of the writer a background thread faults pages in (default 64 MiB; 0
    /// turns it off). Moves the kernel's page zeroing off the append path.
    pub prefault_window: u64,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            segment_size: 1 << 30,
            flush: FlushMode::Async,
            flush_interval: Duration::from_millis(200),
            max_body_size: 4 << 20,
            cq_entries_per_file: 300_000,
            index_slots: 500_000,
            index_entries: 2_000_000,
            retention: Duration::from_secs(72 * 3600),
            retention_bytes: None,
            disk_high_water: 0.90,
            clean_interval: Duration::from_secs(10),
            store_host: None,
            prefault_window: 64 << 20,
        }
    }

    /// Checks the configuration as a whole, naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(StoreError::Config { field, reason });
        if self.segment_size < 64 * 1024 {
            return bad(
                "segment_size",
                format!("{} bytes is below the minimum of 64 KiB", self.segment_size),
            );
        }
        if self.segment_size > (1 << 40) {
            return bad(
                "segment_size",
                format!("{} bytes is above the maximum of 1 TiB", self.segment_size),
            );
        }
        if self.max_body_size == 0 {
            return bad("max_body_size", "must be positive".into());
        }
        if self.max_body_size as u64 + 64 * 1024 > self.segment_size {
            return bad(
                "max_body_size",
                format!(
                    "{} bytes does not fit in a segment of {} bytes with room for headers",
                    self.max_body_size, self.segment_size
                ),
            );
        }
        if self.cq_entries_per_file == 0 {
            return bad("cq_entries_per_file", "must be positive".into());
        }
        if self.index_slots == 0 || self.index_entries == 0 {
            return bad(
                "index_slots",
                "index slots and entries must be positive".into(),
            );
        }
        if !(self.disk_high_water > 0.0 && self.disk_high_water <= 1.0) {
            return bad(
                "disk_high_water",
                format!("{} is not within (0, 1]", self.disk_high_water),
            );
        }
        if self.flush_interval.is_zero() {
            return bad("flush_interval", "must be positive".into());
        }
        Ok(())
    }
}
