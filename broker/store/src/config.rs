//! Store configuration, validated once at open with errors that name the bad field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// Fewest entries a derived consume queue file holds (20 KiB).
pub const MIN_CQ_ENTRIES: u64 = 1024;

/// Default [`StoreConfig::flush_gather`]: 300 µs. On a disk whose flush takes a few hundred
/// microseconds (2026-12-04), 64 concurrent sync senders sent 9 to 21 % more with 11 to 17 %
/// less server CPU per message; 1 and 2 senders never gather; 8 and 16 senders sent 3 to 4 % and
/// 5 to 8 % less, at 5 to 13 % less CPU per message. `0ms` turns it off.
pub const DEFAULT_FLUSH_GATHER: Duration = Duration::from_micros(300);
/// Fewest entries a derived index file holds (about 25 KiB).
pub const MIN_INDEX_ENTRIES: u64 = 1024;

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
    /// How often the async flusher runs (default 200 ms), and how often the background
    /// housekeeping looks at the disk, the spare files and the consumer offsets.
    pub flush_interval: Duration,
    /// How often consume queues and index files are flushed, after which the checkpoint's
    /// `dispatched` moves (default 1 s, as Apache RocketMQ flushes its consume queues; the
    /// checkpoint's `log_flushed` still moves every `flush_interval`). They are derived from
    /// the commit log, so a longer interval loses nothing: it only lengthens the stretch of
    /// log that recovery dispatches again. Each flush writes back every page dispatch touched
    /// since the last one, and a message's index entry lands on a random hash-slot page: at
    /// 200 ms, `msync` and the faults on pages it write-protected took about 3 % of the
    /// server's CPU at 5 000 msg/s (BENCHMARKS.md, 2026-12-06).
    pub checkpoint_interval: Duration,
    /// Largest accepted message body (default 4 MiB).
    pub max_body_size: usize,
    /// Entries per consume queue file; 0 (the default) derives it from the segment size (see
    /// [`StoreConfig::resolved`]: 300 000 entries, 6 MB, for 1 GiB segments, less for smaller
    /// ones). A queue that already has files keeps their size; a new queue on a nearly full
    /// disk gets smaller files.
    pub cq_entries_per_file: u64,
    /// Hash slots per index file; 0 (the default) derives it from `index_entries`.
    pub index_slots: u32,
    /// Entries per index file; 0 (the default) derives it from the segment size (2 000 000,
    /// about 50 MB a file, for 1 GiB segments). New index files are smaller on a nearly full disk.
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
    /// Sync mode: the longest the flusher waits before a flush for as many waiters as the
    /// most any of the recent flushes woke (zero: flush at once). Each flush costs a disk
    /// round trip and wakes threads; sends a flush woke together come back together, and
    /// under many concurrent sends fewer and fuller flushes leave the CPU to the sends. The
    /// flusher gathers only while recent flushes woke several waiters on average, so a lone
    /// sender, or a few, is never delayed.
    pub flush_gather: Duration,
    /// The metadata log (topics, consumer offsets) is rewritten as a snapshot once it is larger
    /// than this and than twice its last snapshot (default 4 MiB).
    pub metadata_compact_bytes: u64,
    /// The log is one replica of a replicated group: consume queues, the index and dispatch
    /// listeners only ever see what the group confirmed ([`crate::Store::set_dispatch_limit`]).
    /// At open nothing beyond what was dispatched before is dispatched until the group says so.
    pub replicated: bool,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            segment_size: 1 << 30,
            flush: FlushMode::Async,
            flush_interval: Duration::from_millis(200),
            checkpoint_interval: Duration::from_secs(1),
            max_body_size: 4 << 20,
            cq_entries_per_file: 0,
            index_slots: 0,
            index_entries: 0,
            retention: Duration::from_secs(72 * 3600),
            retention_bytes: None,
            disk_high_water: 0.90,
            clean_interval: Duration::from_secs(10),
            store_host: None,
            flush_gather: DEFAULT_FLUSH_GATHER,
            metadata_compact_bytes: 4 << 20,
            replicated: false,
        }
    }

    /// The configuration with every derived size filled in. Preallocated files follow the
    /// segment size, so a store on a small volume with small segments does not preallocate
    /// files sized for a 1 GiB segment:
    ///
    /// - consume queue files: one 20-byte entry per 64 bytes of segment, between
    ///   [`MIN_CQ_ENTRIES`] and 300 000 entries (6 MB, RocketMQ's size, at 1 GiB segments);
    /// - index files: one entry per 512 bytes of segment, between [`MIN_INDEX_ENTRIES`] and
    ///   2 000 000 entries (about 50 MB at 1 GiB segments), with a quarter as many hash slots.
    pub fn resolved(&self) -> StoreConfig {
        let mut c = self.clone();
        if c.cq_entries_per_file == 0 {
            c.cq_entries_per_file = (c.segment_size / 64 / crate::consume_queue::ENTRY_LEN as u64)
                .clamp(MIN_CQ_ENTRIES, 300_000);
        }
        if c.index_entries == 0 {
            c.index_entries = (c.segment_size / 512).clamp(MIN_INDEX_ENTRIES, 2_000_000) as u32;
        }
        if c.index_slots == 0 {
            c.index_slots = (c.index_entries / 4).max(64);
        }
        c
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
        if self.cq_entries_per_file > 1 << 30 {
            return bad(
                "cq_entries_per_file",
                format!("{} is above the maximum of 2^30", self.cq_entries_per_file),
            );
        }
        if self.index_entries > 1 << 28 {
            return bad(
                "index_entries",
                format!("{} is above the maximum of 2^28", self.index_entries),
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
        if self.checkpoint_interval.is_zero() {
            return bad("checkpoint_interval", "must be positive".into());
        }
        if self.metadata_compact_bytes < 4096 {
            return bad(
                "metadata_compact_bytes",
                format!(
                    "{} bytes is below the minimum of 4 KiB",
                    self.metadata_compact_bytes
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_sizes_follow_the_segment_size() {
        let mut c = StoreConfig::new("/x");
        let big = c.resolved();
        assert_eq!(big.cq_entries_per_file, 300_000, "RocketMQ's size at 1 GiB");
        assert_eq!((big.index_entries, big.index_slots), (2_000_000, 500_000));
        c.segment_size = 8 << 20;
        let small = c.resolved();
        assert_eq!(small.cq_entries_per_file, 6553);
        assert_eq!((small.index_entries, small.index_slots), (16384, 4096));
        c.segment_size = 128 << 10;
        c.max_body_size = 1024;
        let tiny = c.resolved();
        assert_eq!(tiny.cq_entries_per_file, MIN_CQ_ENTRIES);
        assert_eq!(tiny.index_entries as u64, MIN_INDEX_ENTRIES);
        // Explicit sizes win.
        c.cq_entries_per_file = 10;
        c.index_entries = 20;
        c.index_slots = 3;
        let r = c.resolved();
        assert_eq!(
            (r.cq_entries_per_file, r.index_entries, r.index_slots),
            (10, 20, 3)
        );
        c.validate().unwrap();
    }
}
