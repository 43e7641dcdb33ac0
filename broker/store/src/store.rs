//! The store: ties the commit log, consume queues, index files and metadata together, runs
//! the background dispatcher and flusher, and recovers after a crash.
//!
//! Threads: callers append and read on their own threads (calls block; async servers call
//! them from `spawn_blocking`). [`Store::try_append`] is the exception, for async callers: it
//! appends only when that is a copy into the page cache (one `pwrite` into the active segment,
//! whose blocks are allocated; the consume queue file and the index room exist) and otherwise
//! says to take the blocking
//! [`Store::append`] (or [`Store::append_deferred`]); what it still waits for is awaited with
//! [`Store::acknowledged`]: the sync-mode flush, a future the flusher wakes together with every
//! other waiter of the same flush (group commit), and on a replicated group's leader the
//! group's confirmation in the term the [`AppendGate`] admitted the record in.
//! One dispatcher thread follows the commit log and writes consume
//! queue and index entries. One flusher thread makes the log durable (on a timer in async
//! mode, on demand with group commit in sync mode). One housekeeping thread flushes the
//! derived files, writes the checkpoint, persists consumer offsets, checks the disk, allocates
//! the next segment and index file ahead of need and applies retention.
//!
//! Retention: the node's deletes whole segments (by the age of their last write, and the
//! oldest while the log is over its byte budget). Segments hold every topic's records, so a
//! topic's own retention ([`crate::TopicConfig::retention_ms`]) cannot delete anything there:
//! reads skip the topic's records older than it, and each retention pass moves the topic's
//! queues past them (their minimum offsets go up, consume queue files holding only expired
//! entries are deleted). Their bytes go with their segment under the node's rule.
//!
//! Invariant: an acknowledged append is readable through its consume queue once dispatched.
//! Everything the dispatcher will write for a record (its consume queue file, room in the
//! index) is allocated by the writer before the record is acknowledged, so the dispatcher never
//! allocates and a full disk refuses appends ([`StoreError::DiskFull`]) instead of leaving the
//! log ahead of what can be read. Should the dispatcher fail anyway (an I/O error), appends
//! are refused until it succeeds again.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, info_span, warn};

use crate::checkpoint::{sync_dir, Checkpoint};
use crate::commit_log::{CommitLog, ScanReport};
use crate::config::{FlushMode, StoreConfig};
use crate::consume_queue::{self, ConsumeQueue};
use crate::disk::{DiskState, LogLimiter};
use crate::error::{Result, StoreError};
use crate::index::{self, Index};
use crate::metadata::{self, Fencer, MetadataStats, OffsetStore, TopicStore};
use crate::record::{self, NewMessage, RecordView, StoredMessage};
use crate::{KEY_SEPARATOR, PROP_CQ_KEY, PROP_KEYS, PROP_MSG_ID, PROP_TAGS};

mod durable;
mod replica;

pub use durable::Durable;
pub use replica::RawBatch;

/// What an append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Where the record starts in the commit log (its permanent address).
    pub phys_offset: u64,
    /// Its position in the (topic, queue) consume queue.
    pub queue_offset: u64,
    /// Bytes on disk.
    pub size: u32,
    pub store_timestamp_ms: i64,
    /// The term (leader epoch) the record was admitted in, while it still waits for its
    /// replicated group's confirmation: set by [`Store::try_append`] and
    /// [`Store::append_deferred`] on a store under an [`AppendGate`]. Such a record counts as
    /// written only once [`Store::acknowledged`] for it completes. `None` without a gate, and
    /// from calls that waited already ([`Store::append`]).
    pub term: Option<u64>,
}

/// A test of a message's properties (its tag is under the `TAGS` key when the user did not set
/// one), applied to every message a read returns. The store knows nothing of the language that
/// built it (SQL92 filters live in `ferromq-filter`).
pub type PropertyTest = dyn Fn(&StoredMessage) -> bool + Send + Sync;

/// A read filter: a tag expression, `*` (or empty) for all or `A || B || C`, optionally with a
/// [`PropertyTest`] every message must also pass.
#[derive(Clone, Default)]
pub struct TagFilter {
    tags: Vec<String>,
    hashes: Vec<u64>,
    test: Option<Arc<PropertyTest>>,
}

impl std::fmt::Debug for TagFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagFilter")
            .field("tags", &self.tags)
            .field("property_test", &self.test.is_some())
            .finish()
    }
}

impl PartialEq for TagFilter {
    fn eq(&self, other: &Self) -> bool {
        self.tags == other.tags
            && match (&self.test, &other.test) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for TagFilter {}

impl TagFilter {
    /// Parses a RocketMQ tag expression.
    pub fn parse(expr: &str) -> TagFilter {
        let expr = expr.trim();
        if expr.is_empty() || expr == "*" {
            return TagFilter::default();
        }
        let tags: Vec<String> = expr
            .split("||")
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if tags.iter().any(|t| t == "*") {
            return TagFilter::default();
        }
        let hashes = tags
            .iter()
            .map(|t| consume_queue::tag_hash(Some(t)))
            .collect();
        TagFilter {
            tags,
            hashes,
            test: None,
        }
    }

    /// Every message matching the tag expression must also pass `test`.
    pub fn with_property_test(mut self, test: Arc<PropertyTest>) -> TagFilter {
        self.test = Some(test);
        self
    }

    /// True when every message matches.
    pub fn is_all(&self) -> bool {
        self.tags.is_empty() && self.test.is_none()
    }

    /// Whether a stored message passes the tag expression and the property test.
    pub fn matches_message(&self, m: &StoredMessage) -> bool {
        self.matches(m.tag()) && self.test.as_ref().is_none_or(|t| t(m))
    }

    fn hash_may_match(&self, h: u64) -> bool {
        self.tags.is_empty() || self.hashes.contains(&h)
    }

    /// [`TagFilter::matches_message`] for a record read in place (a property test, rare, reads
    /// a copy).
    pub fn matches_view(&self, v: &RecordView<'_>) -> bool {
        self.matches(v.tag()) && self.test.as_ref().is_none_or(|t| t(&v.to_message()))
    }

    /// Whether a message with this tag passes the tag expression (the property test aside).
    pub fn matches(&self, tag: Option<&str>) -> bool {
        self.tags.is_empty() || tag.is_some_and(|t| self.tags.iter().any(|x| x == t))
    }
}

/// What a queue read returns.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub messages: Vec<StoredMessage>,
    /// The queue offset to read from next time.
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    /// Commit log offsets of records skipped because they failed their checks.
    pub corrupt: Vec<u64>,
}

/// What a queue read made of one record.
enum Seen {
    Taken,
    /// Filtered out, or expired by the topic's retention.
    Skipped,
    /// The reader took no more: the read ends before this record.
    Refused,
    /// The consume queue entry points at a record of another queue or offset.
    Misplaced,
}

/// A record as the dispatcher sees it, handed to listeners (long polling, timers).
#[derive(Debug)]
pub struct DispatchEvent<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub phys_offset: u64,
    pub size: u32,
    pub store_timestamp_ms: i64,
    pub tag: Option<&'a str>,
    raw: &'a [u8],
}

impl DispatchEvent<'_> {
    /// Looks up one property of the record.
    pub fn property(&self, key: &str) -> Option<String> {
        let mut found = None;
        let _ = record::for_each_property(self.raw, |k, v| {
            if k == key && found.is_none() {
                found = Some(v.to_string());
            }
        });
        found
    }
}

/// A callback run by the dispatcher for every record it dispatches.
pub type DispatchListener = Arc<dyn Fn(&DispatchEvent<'_>) + Send + Sync>;

/// A callback run once per dispatch pass with how far the log is now dispatched (readable by
/// queue): async waiters for read-your-writes wake once per pass, not once per record.
pub type DispatchedListener = Arc<dyn Fn(u64) + Send + Sync>;

/// A callback run after records are written, with the new end of the log (a replication
/// leader wakes the streams to its followers with it). It must be quick: it runs on the
/// writer's thread.
pub type AppendListener = Arc<dyn Fn(u64) + Send + Sync>;

/// What [`AppendGate::confirmation`] returns: completes with [`AppendGate::confirmed`]'s answer.
pub type Confirmation<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Who may append to this log, and when an append counts as done, for a replica of a
/// replicated group. The store asks [`AppendGate::admit`] under its append lock, so once a
/// member stops leading no append of its own slips in; and it waits in
/// [`AppendGate::confirmed`] (a thread) or [`AppendGate::confirmation`] (a task) after writing,
/// outside the lock, so concurrent sends share one replication round trip the way they share
/// one flush.
pub trait AppendGate: Send + Sync {
    /// Whether this replica may append now ([`StoreError::NotWritable`] when not); returns the
    /// term (leader epoch) the append belongs to, to hand back to [`AppendGate::confirmed`].
    fn admit(&self) -> Result<u64>;
    /// Waits until the group holds the log up to `end`, written in `term`, as its
    /// acknowledgement mode requires ([`StoreError::NotReplicated`] when it did not in time, or
    /// when the term ended first: offsets confirmed in a later term belong to another log).
    fn confirmed(&self, term: u64, end: u64) -> Result<()>;
    /// [`AppendGate::confirmed`] for a caller on an async worker: the same answer under the
    /// same rules (timeout, end of the term), without holding a thread while it waits.
    fn confirmation(&self, term: u64, end: u64) -> Confirmation<'_>;
}

/// Figures for metrics and admin views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    pub log_min_offset: u64,
    pub log_write_offset: u64,
    pub log_flushed_offset: u64,
    pub dispatched_offset: u64,
    pub segments: usize,
    pub log_bytes_on_disk: u64,
    pub appends_total: u64,
    pub append_bytes_total: u64,
    pub flushes_total: u64,
    /// Time spent in commit log flushes (msync), for the average flush cost.
    pub flush_seconds_total: f64,
    /// Appends are refused for lack of space ([`Store::disk_full`] says why).
    pub disk_full: bool,
    pub stopped: Option<String>,
    /// Distinct records found damaged (CRC or structure) since open, recovery included.
    pub corrupt_records_total: u64,
    /// Recovery facts of the last open.
    pub recovered_unclean: bool,
    pub recovery_truncated_bytes: u64,
    pub recovery_corrupt_records: Vec<(u64, String)>,
    /// Why appends are refused for lack of space, if they are.
    pub disk_full_reason: Option<String>,
    /// Why the dispatcher is failing, if it is (appends are refused meanwhile).
    pub dispatch_failure: Option<String>,
    /// The metadata log (topics and offsets).
    pub metadata: MetadataStats,
}

/// What [`Inner::admit`] found out about a message before it takes the append lock.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    /// Encoded length of the record.
    len: usize,
    /// Index entries the dispatcher will add for it.
    index_entries: u64,
}

/// Longest an async worker waits for the append lock while another async worker holds it
/// to copy records in (see [`Inner::try_writer`]). Such a hold is an encode and a `pwrite` of
/// at most a batch (tens of microseconds); past this the holder was likely preempted, and the
/// request goes to the blocking pool as when the lock is held by a path that may allocate.
const QUICK_WAIT: std::time::Duration = std::time::Duration::from_micros(200);

/// The append lock held by an async worker that only copies: the mark that lets other
/// workers wait for it is cleared before the lock is released, however the holder returns.
struct QuickWriter<'a> {
    quick: &'a AtomicBool,
    guard: std::sync::MutexGuard<'a, Writer>,
}

impl<'a> QuickWriter<'a> {
    fn hold(quick: &'a AtomicBool, guard: std::sync::MutexGuard<'a, Writer>) -> Self {
        quick.store(true, Ordering::Release);
        QuickWriter { quick, guard }
    }
}

impl Drop for QuickWriter<'_> {
    fn drop(&mut self) {
        // Runs before `guard` is dropped: the mark never outlives this hold.
        self.quick.store(false, Ordering::Release);
    }
}

impl std::ops::Deref for QuickWriter<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        &self.guard
    }
}

impl std::ops::DerefMut for QuickWriter<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.guard
    }
}

/// The writer's position in one queue.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    /// The next queue offset.
    next: u64,
    /// The consume queue file holding offsets below this exists (0: not checked yet).
    file_end: u64,
}

#[derive(Default)]
struct Writer {
    /// Position per topic and queue.
    next: HashMap<String, HashMap<u32, Cursor>>,
}

/// Distinct damaged records seen since open: each is counted (and logged) once, however often
/// readers run into it.
#[derive(Default)]
struct CorruptRecords {
    seen: Mutex<std::collections::HashSet<u64>>,
    total: AtomicU64,
}

impl CorruptRecords {
    /// Offsets remembered to count each once; past this many, repeats are counted again.
    const MAX_TRACKED: usize = 1 << 16;

    /// Counts the damaged record at `offset`; true the first time it is seen.
    fn note(&self, offset: u64) -> bool {
        let mut seen = lock(&self.seen);
        let new = if seen.len() < Self::MAX_TRACKED {
            seen.insert(offset)
        } else {
            !seen.contains(&offset)
        };
        if new {
            self.total.fetch_add(1, Ordering::Relaxed);
        }
        new
    }
}

/// A caller waiting in sync mode for its record to be flushed.
struct FlushWaiter {
    end: u64,
    wake: FlushWake,
}

/// How the flusher wakes a waiter: a blocked thread is unparked, an async task woken.
enum FlushWake {
    Thread(std::thread::Thread),
    Task(std::task::Waker),
}

impl FlushWake {
    fn wake(&self) {
        match self {
            FlushWake::Thread(t) => t.unpark(),
            FlushWake::Task(w) => w.wake_by_ref(),
        }
    }
}

#[derive(Default)]
struct Faults {
    fail_flush: AtomicBool,
    /// Dispatch passes left to fail with `ENOSPC`.
    fail_dispatch: AtomicU64,
}

struct Inner {
    cfg: StoreConfig,
    log: CommitLog,
    cq_dir: PathBuf,
    /// Consume queues by topic, then queue id (nested so lookups by `&str` allocate nothing).
    cqs: RwLock<HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>>,
    index: Index,
    topics: TopicStore,
    offsets: OffsetStore,
    writer: Mutex<Writer>,
    /// Set while an async worker holds `writer` to copy records in ([`QuickWriter`]): others
    /// may wait for such a holder (see [`Inner::try_writer`]).
    writer_quick: AtomicBool,
    dispatched: AtomicU64,
    /// Records at or below this offset are already in the index (set at recovery).
    index_done_upto: Option<u64>,
    dispatch_mx: Mutex<()>,
    dispatch_cv: Condvar,
    dispatcher_idle: AtomicBool,
    dispatch_waiters: AtomicU64,
    dispatched_cv: Condvar,
    flush_mx: Mutex<()>,
    flush_cv: Condvar,
    flush_list: Mutex<Vec<FlushWaiter>>,
    flusher_idle: AtomicBool,
    /// While the flusher gathers (see [`Inner::gather`]), the number of waiters it waits for;
    /// `usize::MAX` otherwise. The waiter that brings the list to it wakes the flusher.
    gather_target: AtomicUsize,
    house_mx: Mutex<()>,
    house_cv: Condvar,
    stopped: Mutex<Option<String>>,
    stopped_flag: AtomicBool,
    disk: DiskState,
    /// Why the dispatcher's last pass failed, while it keeps failing.
    dispatch_failure: Mutex<Option<(String, bool)>>,
    dispatch_failing: AtomicBool,
    /// Held for each dispatch pass (by whichever thread takes it), by a topic delete and by
    /// the retention, so a deleted topic's queues are never written while they are removed.
    /// Taken through [`Inner::pass_lock`] or [`Inner::take_asked_passes`], whose releases look
    /// at `dispatch_asked`.
    dispatch_lock: Mutex<()>,
    /// Set by a writer that wants its records dispatched (see [`Inner::dispatch_here`]) and
    /// cleared by the pass that takes them: a writer that finds the lock held leaves the pass
    /// to the holder's release instead of waking the dispatcher thread.
    dispatch_asked: AtomicBool,
    /// Fences of deleted topics (see [`crate::metadata`]): records of the name below the fence
    /// are never dispatched or served.
    fences: RwLock<HashMap<String, u64>>,
    /// Whether `fences` has any entry (lets the dispatcher skip its lock when none does).
    any_fence: AtomicBool,
    /// Rate limits of repeated warnings (one line per 30 s, with a count of the others).
    dispatch_log: LogLimiter,
    house_log: LogLimiter,
    shutdown: AtomicBool,
    listeners: RwLock<Vec<DispatchListener>>,
    dispatched_listeners: RwLock<Vec<DispatchedListener>>,
    append_listeners: RwLock<Vec<AppendListener>>,
    /// Set on a replica of a replicated group (see [`AppendGate`]).
    append_gate: RwLock<Option<Arc<dyn AppendGate>>>,
    faults: Faults,
    appends: AtomicU64,
    append_bytes: AtomicU64,
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
    corrupt: CorruptRecords,
    recovery: (bool, u64, Vec<(u64, String)>),
    /// The offsets of the checkpoint on disk, to skip rewriting an unchanged one.
    last_checkpoint: Mutex<Option<Checkpoint>>,
    /// Dispatch never goes past this commit log offset (replicated groups: the confirm offset;
    /// `u64::MAX` otherwise).
    dispatch_limit: AtomicU64,
    /// The log's end when it was opened: every record at or past it was checked by this
    /// process (sealed by its writer, or verified by a replica's append when received), so
    /// the dispatcher checks its framing and not its checksum again. The records before it
    /// were recovered from disk and are checked in full.
    written_from: u64,
    /// Retention keeps every segment holding a record at or above this commit log offset
    /// (records parked for later: pending timers and half messages). `u64::MAX`: no floor.
    retention_floor: AtomicU64,
}

/// The storage engine. Cheap to share: wrap it in an `Arc`.
pub struct Store {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    _lock: File,
    closed: AtomicBool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The store timestamp below which a topic keeping messages `retention_ms` no longer serves
/// them, at `now_ms`.
fn retention_cutoff(now_ms: i64, retention_ms: u64) -> i64 {
    now_ms.saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX))
}

const RUNNING_MARKER: &str = "RUNNING";

thread_local! {
    /// Records encoded before their `pwrite`, one buffer per appending thread.
    static RECORDS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A record buffer grown past this (a large batch or body) is freed after use, not kept per
/// thread.
const MAX_KEPT_BUFFER: usize = 4 << 20;

/// Records an append just wrote, as the bytes it wrote, for the dispatch pass it takes.
#[derive(Clone, Copy)]
struct InHand<'a> {
    /// The log position of the first record.
    start: u64,
    /// Whole records, one after another, exactly as written at `start`.
    records: &'a [u8],
}

impl InHand<'_> {
    fn end(&self) -> u64 {
        self.start + self.records.len() as u64
    }
}

/// The dispatch lock held ([`Inner::pass_lock`]). Its release takes the passes that writers
/// asked for while it was held ([`Inner::dispatch_here`]): a topic delete or the retention
/// holds the lock without dispatching, and a pass up to a given end may stop short of what
/// was written meanwhile.
struct PassGuard<'a> {
    inner: &'a Inner,
    guard: Option<std::sync::MutexGuard<'a, ()>>,
}

impl<'a> PassGuard<'a> {
    /// The lock's guard, as the proof a pass asks for.
    fn held(&self) -> &std::sync::MutexGuard<'a, ()> {
        match &self.guard {
            Some(g) => g,
            None => unreachable!("the guard is taken only by drop"),
        }
    }
}

impl Drop for PassGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        fence(Ordering::SeqCst);
        self.inner.take_asked_passes();
    }
}

/// How many recent flushes the gather remembers (see [`Inner::gather`]): at a few hundred
/// microseconds each, a few milliseconds, so a burst's target is forgotten soon after it.
const GATHER_MEMORY: usize = 32;

/// The fewest waiters the recent flushes must have woken on average before the flusher
/// gathers: fewer means few concurrent senders (on 2026-12-04, 8 senders averaged 2.8 per
/// flush, 64 senders 5.9).
const GATHER_MIN_MEAN: usize = 4;

/// How many waiters each of the last [`GATHER_MEMORY`] flushes woke: the flush gather waits
/// for as many as the most of them.
#[derive(Default)]
struct RecentWakes {
    woken: [usize; GATHER_MEMORY],
    next: usize,
}

impl RecentWakes {
    fn record(&mut self, woken: usize) {
        self.woken[self.next] = woken;
        self.next = (self.next + 1) % GATHER_MEMORY;
    }

    /// How many waiters the next flush waits for; one or none means it does not wait.
    ///
    /// Only while the recent flushes woke [`GATHER_MIN_MEAN`] waiters or more on average: with
    /// fewer, the senders are few enough that the CPU keeps up, and a flush that overlaps
    /// their next sends does more than one that waits for all of them (8 senders lost 8 to
    /// 9 % to the wait on 2026-12-04).
    fn target(&self) -> usize {
        let sum: usize = self.woken.iter().sum();
        if sum < GATHER_MIN_MEAN * GATHER_MEMORY {
            return 0;
        }
        self.woken.iter().copied().max().unwrap_or(0)
    }
}

impl Store {
    /// Opens the store in `cfg.data_dir`, recovering from an unclean stop if needed, and
    /// starts its background threads. Fails if another process has the directory open.
    pub fn open(cfg: StoreConfig) -> Result<Arc<Store>> {
        cfg.validate()?;
        let cfg = cfg.resolved();
        let dir = cfg.data_dir.clone();
        let _span = info_span!("store_open", dir = %dir.display()).entered();
        for sub in ["", "commitlog", "consumequeue", "index", "config"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| StoreError::io(format!("create {}", dir.join(sub).display()), e))?;
        }
        let lock_file =
            File::create(dir.join("LOCK")).map_err(|e| StoreError::io("create LOCK", e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io("lock data directory", e))
            }
        }

        let marker = dir.join(RUNNING_MARKER);
        let mut unclean = marker.exists();
        let cp = match Checkpoint::load(&dir) {
            Ok(cp) => cp,
            Err(e) => {
                warn!(error = %e, "checkpoint is damaged; recovering from the oldest segment");
                unclean = true;
                None
            }
        };
        let log = CommitLog::open(&dir.join("commitlog"), cfg.segment_size)?;
        let (from, durable, dispatch_from) = match cp {
            Some(cp) => (
                cp.dispatched.min(cp.log_flushed),
                cp.log_flushed,
                cp.dispatched,
            ),
            None => (log.min_pos(), 0, log.min_pos()),
        };
        let report: ScanReport = log.recover(from, durable)?;
        // A scan that had to start earlier (a segment cut short) re-dispatches from there too.
        let dispatch_from = dispatch_from.min(report.scanned_from);
        if unclean {
            warn!(
                end = report.end,
                truncated = report.truncated_bytes,
                corrupt = report.corrupt.len(),
                quarantined = report.quarantined.len(),
                "recovered after an unclean stop"
            );
        }
        // Everything recovered is flushed before anything new is acknowledged.
        log.flush_to(report.end)
            .map_err(|e| StoreError::io("flush recovered log", e))?;
        log.set_flushed(report.end);

        let index = Index::open(&dir.join("index"), cfg.index_slots, cfg.index_entries)?;
        // Records at or past the recovered end are new even if the index has entries for
        // offsets there (records a torn tail lost): they must be indexed again.
        let index_done_upto = index
            .end_phys()
            .filter(|_| report.end > 0)
            .map(|e| e.min(report.end - 1));
        let (topics, offsets) = metadata::open(
            &dir.join("config"),
            cfg.metadata_compact_bytes,
            cfg.flush == FlushMode::Sync,
        )?;
        // A fence past the end of a log cut by a crash would hide records appended from now
        // on below it: lower it to the end (everything of the old incarnation is below).
        let mut fences = HashMap::new();
        for (name, fence) in topics.fences() {
            let fence = if fence > report.end {
                topics.set_fence(&name, report.end)?;
                report.end
            } else {
                fence
            };
            fences.insert(name, fence);
        }
        let cq_dir = dir.join("consumequeue");
        let cqs = open_consume_queues(&cq_dir, cfg.cq_entries_per_file, report.end, &fences)?;

        let inner = Arc::new(Inner {
            log,
            cq_dir,
            cqs: RwLock::new(cqs),
            index,
            topics,
            offsets,
            writer: Mutex::new(Writer::default()),
            writer_quick: AtomicBool::new(false),
            dispatched: AtomicU64::new(dispatch_from),
            index_done_upto,
            dispatch_mx: Mutex::new(()),
            dispatch_cv: Condvar::new(),
            dispatcher_idle: AtomicBool::new(false),
            dispatch_waiters: AtomicU64::new(0),
            dispatched_cv: Condvar::new(),
            flush_mx: Mutex::new(()),
            flush_cv: Condvar::new(),
            flush_list: Mutex::new(Vec::new()),
            flusher_idle: AtomicBool::new(false),
            gather_target: AtomicUsize::new(usize::MAX),
            house_mx: Mutex::new(()),
            house_cv: Condvar::new(),
            stopped: Mutex::new(None),
            stopped_flag: AtomicBool::new(false),
            disk: DiskState::default(),
            dispatch_failure: Mutex::new(None),
            dispatch_failing: AtomicBool::new(false),
            dispatch_lock: Mutex::new(()),
            dispatch_asked: AtomicBool::new(false),
            any_fence: AtomicBool::new(!fences.is_empty()),
            fences: RwLock::new(fences),
            dispatch_log: LogLimiter::default(),
            house_log: LogLimiter::default(),
            shutdown: AtomicBool::new(false),
            listeners: RwLock::new(Vec::new()),
            dispatched_listeners: RwLock::new(Vec::new()),
            append_listeners: RwLock::new(Vec::new()),
            append_gate: RwLock::new(None),
            faults: Faults::default(),
            appends: AtomicU64::new(0),
            append_bytes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_nanos: AtomicU64::new(0),
            corrupt: CorruptRecords::default(),
            recovery: (unclean, report.truncated_bytes, report.corrupt.clone()),
            last_checkpoint: Mutex::new(None),
            retention_floor: AtomicU64::new(u64::MAX),
            dispatch_limit: AtomicU64::new(u64::MAX),
            written_from: report.end,
            cfg,
        });

        // Re-dispatch what the derived files may lack, then derive the writer's queue offsets.
        let start = inner
            .dispatched
            .load(Ordering::Acquire)
            .max(inner.log.min_pos())
            .min(report.end);
        inner.dispatched.store(start, Ordering::Release);
        for (offset, _) in &report.corrupt {
            inner.corrupt.note(*offset);
        }
        if inner.cfg.replicated {
            // Only what the group confirmed may be dispatched; that was dispatched already.
            inner.dispatch_limit.store(start, Ordering::Release);
        }
        inner.dispatch_until(report.end.min(inner.dispatch_limit.load(Ordering::Acquire)))?;
        inner.index.sync_reserved_to_used();
        {
            let mut w = lock(&inner.writer);
            for (topic, queues) in inner.cqs.read().unwrap_or_else(|p| p.into_inner()).iter() {
                for (q, cq) in queues {
                    w.next.entry(topic.clone()).or_default().insert(
                        *q,
                        Cursor {
                            next: cq.max_offset(),
                            file_end: 0,
                        },
                    );
                }
            }
        }
        if inner.cfg.replicated {
            // The queue offsets of records not dispatched yet are in the log only.
            inner.advance_cursors(
                start.max(inner.dispatched.load(Ordering::Acquire)),
                report.end,
            )?;
        }
        // Queues reopen at their first file: expire again what topics' retention had expired
        // inside it, before anything is served.
        if let Err(e) = inner.expire_topics(now_ms()) {
            warn!(error = %e, "per-topic retention not applied at open; the next pass retries");
        }
        let weak: std::sync::Weak<Inner> = Arc::downgrade(&inner);
        inner.topics.set_fencer(weak);
        inner.write_checkpoint()?;
        File::create(&marker).map_err(|e| StoreError::io("create RUNNING marker", e))?;
        sync_dir(&dir)?;
        inner.check_disk();

        let mut threads = Vec::new();
        let spawn = |name: &str, f: fn(Arc<Inner>), inner: &Arc<Inner>| {
            let i = inner.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(i))
                .map_err(|e| StoreError::io(format!("start {name} thread"), e))
        };
        threads.push(spawn("store-dispatch", Inner::run_dispatcher, &inner)?);
        threads.push(spawn("store-flush", Inner::run_flusher, &inner)?);
        threads.push(spawn("store-house", Inner::run_housekeeping, &inner)?);
        info!(end = report.end, "store open");
        Ok(Arc::new(Store {
            inner,
            threads: Mutex::new(threads),
            _lock: lock_file,
            closed: AtomicBool::new(false),
        }))
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Appends a message. Returns once it is in the log (async mode) or on disk (sync mode).
    pub fn append(&self, msg: &NewMessage) -> Result<AppendResult> {
        self.inner.append(msg)
    }

    /// Appends a message if that needs no disk I/O and no long wait: for callers on async
    /// workers. `Ok(None)` means it could not be done that way (the next segment, a consume
    /// queue file or index room must be allocated first, a blocking writer holds the log, or
    /// another async writer held it past a short wait): nothing was written, and the caller
    /// takes [`Store::append`] or [`Store::append_deferred`] on a thread that may block.
    /// `Ok(Some(a))` means it is in the log; it is acknowledged only once
    /// [`Store::acknowledged`]`(a.term, end)` for its end completes (the flush in sync mode;
    /// under an [`AppendGate`], the group's confirmation in the term it was admitted in, which
    /// `a.term` carries). Errors are the refusals [`Store::append`] gives.
    pub fn try_append(&self, msg: &NewMessage) -> Result<Option<AppendResult>> {
        self.inner.try_append(msg)
    }

    /// [`Store::try_append`] for several messages, written in order under one acquisition of
    /// the append lock: all of them (`Ok(Some)`, one result each, in order) or none
    /// (`Ok(None)`: the caller appends them one by one, as [`Store::try_append`] says). An
    /// error is a refusal: none of them may be acknowledged, and the log's end did not move
    /// (a write that failed part way may have left some of their records past the end, where
    /// the next append overwrites them or a recovery after a crash may find them, as it may
    /// find any unacknowledged send).
    pub fn try_append_batch(&self, msgs: &[NewMessage]) -> Result<Option<Vec<AppendResult>>> {
        if msgs.is_empty() {
            return Ok(Some(Vec::new()));
        }
        self.inner.try_append_batch(msgs)
    }

    /// [`Store::append`] without its waits: writes the message (blocking for whatever must be
    /// allocated first) and returns at once; it counts as written only once
    /// [`Store::acknowledged`]`(a.term, end)` completes, which an async caller awaits without
    /// holding a thread (several appends wait once for the last end of each term).
    pub fn append_deferred(&self, msg: &NewMessage) -> Result<AppendResult> {
        self.inner.append_deferred(msg)
    }

    /// Completes once every record below `end` counts as written: as durable as the flush
    /// mode promises ([`Store::durable`]) and, for records admitted in `term` by the
    /// [`AppendGate`] ([`AppendResult::term`]), confirmed by the gate in that term. An error
    /// means they must not be acknowledged ([`StoreError::NotReplicated`]: the group did not
    /// confirm them in time or the term ended first; they may still be delivered).
    pub fn acknowledged(
        &self,
        term: Option<u64>,
        end: u64,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let durable = self.durable(end);
        let gated = term.map(|t| (t, self.inner.gate()));
        async move {
            durable.await?;
            match gated {
                None => Ok(()),
                Some((term, Some(gate))) => gate.confirmation(term, end).await,
                Some((_, None)) => Err(StoreError::NotReplicated(
                    "a record admitted in a term has no gate to confirm it".into(),
                )),
            }
        }
    }

    /// Completes once every record below commit log offset `end` is as durable as the flush
    /// mode promises: at once in async mode; in sync mode once flushed (the flusher wakes all
    /// waiters a flush covers together). An error means the store stopped (a failed flush)
    /// before that: the record must not be acknowledged.
    pub fn durable(&self, end: u64) -> Durable {
        Durable {
            inner: self.inner.clone(),
            end,
        }
    }

    /// Appends several messages under one lock (and one flush wait in sync mode), in order.
    /// Each message gets its own result: a refused message does not stop the others.
    pub fn append_batch(&self, msgs: &[NewMessage]) -> Vec<Result<AppendResult>> {
        self.inner.append_batch(msgs)
    }

    /// Reads up to `max` messages of a queue from `offset`, optionally filtered by tag.
    pub fn read(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: usize,
        filter: Option<&TagFilter>,
    ) -> Result<ReadResult> {
        self.inner.read(topic, queue_id, offset, max, filter)
    }

    /// [`Store::read`] without copying: each matching record is handed to `take` in place (a
    /// view into the mapped log, checked like any read), which answers whether it took it; the
    /// first one refused ends the read there, and `next_offset` is its offset. For a reader that
    /// only copies the fields out again (a pull writing its answer); `messages` stays empty.
    pub fn read_each(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: usize,
        filter: Option<&TagFilter>,
        take: impl FnMut(&RecordView<'_>) -> bool,
    ) -> Result<ReadResult> {
        self.inner
            .read_each(topic, queue_id, offset, max, filter, take)
    }

    /// The message whose record starts at commit log offset `phys_offset` (an offset the store
    /// handed out: an append result, a consume queue entry). A record that fails its checks is
    /// [`StoreError::Corrupt`] with its offset (and counted, see
    /// [`Store::corrupt_records_total`]); an offset the log no longer (or not yet) holds is
    /// [`StoreError::OffsetOutOfRange`].
    pub fn message_at(&self, phys_offset: u64) -> Result<StoredMessage> {
        self.inner.read_at(phys_offset)
    }

    /// `(min, max)` queue offsets of a queue: messages `min..max` are readable.
    pub fn queue_range(&self, topic: &str, queue_id: u32) -> (u64, u64) {
        match self.inner.cq(topic, queue_id) {
            Some(cq) => (cq.min_offset(), cq.max_offset()),
            None => (0, 0),
        }
    }

    /// Messages of `topic` carrying `key` (property `KEYS`), stored within `begin..=end` ms,
    /// newest first.
    pub fn lookup_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: i64,
        end_ms: i64,
        max: usize,
    ) -> Vec<StoredMessage> {
        self.inner
            .lookup(topic, key, begin_ms, end_ms, max, |m| {
                m.keys().any(|k| k == key)
            })
            .0
    }

    /// Whether the record at commit log offset `phys_offset` is recent enough to be read
    /// from memory: within the last part of the log as large as 40 % of the memory this
    /// process may use (the machine's, or its cgroup's limit when lower). A heuristic, as in
    /// Apache RocketMQ's "message in memory" check: the page cache keeps recently written
    /// pages, so a reader that keeps up with producers reads without waiting for the disk and
    /// may do so on an async worker; an older record goes to a thread that may block.
    pub fn is_recent(&self, phys_offset: u64) -> bool {
        static WINDOW: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let window = *WINDOW.get_or_init(|| crate::memory::usable_bytes() / 5 * 2);
        self.inner.log.write_pos().saturating_sub(phys_offset) < window
    }

    /// The consume queue entry at `offset` of a queue, if it is stored. Parked records (timers,
    /// half messages) keep a number of their own in `tag_hash` (see [`crate::PROP_CQ_KEY`]).
    pub fn queue_entry(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<Option<consume_queue::Entry>> {
        match self.inner.cq(topic, queue_id) {
            Some(cq) => cq.get(offset),
            None => Ok(None),
        }
    }

    /// Keeps retention away from every segment holding a record at or above `phys_offset`
    /// (`u64::MAX` lifts the floor). Parked messages must outlive the retention period.
    pub fn set_retention_floor(&self, phys_offset: u64) {
        self.inner
            .retention_floor
            .store(phys_offset, Ordering::Release);
    }

    /// The message of `topic` with message id `id` (property `UNIQ_KEY`); `None` also when
    /// the record is damaged (see [`Store::find_id`] to tell the two apart).
    pub fn lookup_id(&self, topic: &str, id: &str) -> Option<StoredMessage> {
        self.find_id(topic, id).ok().flatten()
    }

    /// The message of `topic` with message id `id`: `Ok(None)` when no record has it,
    /// [`StoreError::Corrupt`] (with the record's commit log offset) when the index points at
    /// a record that fails its checks and no intact one has the id. The index matches by a
    /// 32-bit hash, so a damaged record reported this way is almost surely the one asked for.
    pub fn find_id(&self, topic: &str, id: &str) -> Result<Option<StoredMessage>> {
        let (found, damaged) = self
            .inner
            .lookup(topic, id, i64::MIN, i64::MAX, 1, |m| m.msg_id() == Some(id));
        match (found.into_iter().next(), damaged) {
            (Some(m), _) => Ok(Some(m)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// Deletes a topic: its configuration, its consumer offsets, and its messages for every
    /// reader (fenced, see [`crate::metadata`]), so a topic created again under the name starts
    /// empty. The same as `topics().delete(name)`. Durable when it returns.
    pub fn delete_topic(&self, name: &str) -> Result<crate::TopicConfig> {
        self.inner.topics.delete(name)
    }

    /// Why appends are refused for lack of space, or `None` while they are accepted. Set when
    /// the disk is above the high-water mark or an allocation failed with `ENOSPC`; it clears
    /// by itself once space is back (checked every flush interval). For readiness and the
    /// `ferromq_store_disk_full` metric.
    pub fn disk_full(&self) -> Option<String> {
        self.inner.disk.reason()
    }

    /// Why appends are refused right now, if they are: the store is closed or stopped after a
    /// failed flush, the disk is full, or the dispatcher is failing. `None` means appends are
    /// accepted.
    pub fn refusal(&self) -> Option<StoreError> {
        self.inner.refusal()
    }

    /// Distinct records found damaged (checksum or structure) since open, recovery included:
    /// each is counted once however often it is read. For the corrupt-records metric.
    pub fn corrupt_records_total(&self) -> u64 {
        self.inner.corrupt.total.load(Ordering::Relaxed)
    }

    /// Topic metadata.
    pub fn topics(&self) -> &TopicStore {
        &self.inner.topics
    }

    /// Consumer offsets.
    pub fn offsets(&self) -> &OffsetStore {
        &self.inner.offsets
    }

    /// Registers a callback the dispatcher runs for every record it dispatches (after the
    /// consume queue entry is written, so a read triggered by it finds the message). A
    /// callback that needs the store should hold a `Weak`, or the store is never dropped.
    pub fn on_dispatch(&self, f: DispatchListener) {
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// Registers a callback run once per dispatch pass with the new dispatched end (see
    /// [`DispatchedListener`]).
    pub fn on_dispatched(&self, f: DispatchedListener) {
        self.inner
            .dispatched_listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// Puts every later append under `gate` (a replica of a replicated group).
    pub fn set_append_gate(&self, gate: Arc<dyn AppendGate>) {
        *self
            .inner
            .append_gate
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(gate);
    }

    pub fn on_append(&self, f: AppendListener) {
        self.inner
            .append_listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// Waits until every record below commit log offset `end` is dispatched (readable by
    /// queue), up to `timeout`. Returns whether it was.
    pub fn wait_dispatched(&self, end: u64, timeout: Duration) -> bool {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        inner.dispatch_waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = lock(&inner.dispatch_mx);
        let ok = loop {
            if inner.dispatched.load(Ordering::Acquire) >= end {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            g = inner
                .dispatched_cv
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(10)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        drop(g);
        inner.dispatch_waiters.fetch_sub(1, Ordering::SeqCst);
        ok
    }

    /// Figures for metrics.
    pub fn stats(&self) -> StoreStats {
        let i = &self.inner;
        let (segments, bytes) = i.log.disk_usage();
        StoreStats {
            log_min_offset: i.log.min_pos(),
            log_write_offset: i.log.write_pos(),
            log_flushed_offset: i.log.flushed_pos(),
            dispatched_offset: i.dispatched.load(Ordering::Acquire),
            segments,
            log_bytes_on_disk: bytes,
            appends_total: i.appends.load(Ordering::Relaxed),
            append_bytes_total: i.append_bytes.load(Ordering::Relaxed),
            flushes_total: i.flushes.load(Ordering::Relaxed),
            flush_seconds_total: i.flush_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            disk_full: i.disk.is_full(),
            stopped: lock(&i.stopped).clone(),
            corrupt_records_total: i.corrupt.total.load(Ordering::Relaxed),
            recovered_unclean: i.recovery.0,
            recovery_truncated_bytes: i.recovery.1,
            recovery_corrupt_records: i.recovery.2.clone(),
            disk_full_reason: i.disk.reason(),
            dispatch_failure: lock(&i.dispatch_failure).as_ref().map(|(r, _)| r.clone()),
            metadata: i.topics.metadata_stats(),
        }
    }

    /// Makes everything appended so far durable now (both modes).
    pub fn flush(&self) -> Result<()> {
        let end = self.inner.log.write_pos();
        let r = self.inner.flush_log(end);
        self.inner.release_waiters();
        r
    }

    /// Runs retention now instead of waiting for the housekeeping interval (admin and tests):
    /// the node's (segments) and every topic's own (see [`crate::TopicConfig::retention_ms`]).
    /// Returns the commit log's new minimum offset.
    pub fn apply_retention(&self) -> Result<u64> {
        self.inner.apply_retention()
    }

    /// Test hook: [`Store::apply_retention`] as if the clock read `now` (ages are measured
    /// against it), so tests need not wait for messages to grow old.
    #[doc(hidden)]
    pub fn apply_retention_at(&self, now: SystemTime) -> Result<u64> {
        self.inner.apply_retention_at(now)
    }

    /// Re-reads the disk usage now (admin and tests).
    pub fn check_disk(&self) {
        self.inner.check_disk()
    }

    /// Test hook: the next commit log flush fails with EIO, as a dying disk would.
    #[doc(hidden)]
    pub fn inject_flush_failure(&self) {
        self.inner.faults.fail_flush.store(true, Ordering::SeqCst);
    }

    /// Test hook: the next `passes` dispatch passes fail with `ENOSPC` before writing anything,
    /// as a dispatcher that cannot write its files would.
    #[doc(hidden)]
    pub fn inject_dispatch_failures(&self, passes: u64) {
        self.inner
            .faults
            .fail_dispatch
            .store(passes, Ordering::SeqCst);
    }

    /// Flushes everything, writes the final checkpoint and removes the running marker, so the
    /// next open skips recovery. Appends after this fail. Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let i = &self.inner;
        i.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = lock(&i.dispatch_mx);
            i.dispatch_cv.notify_all();
        }
        {
            let _g = lock(&i.flush_mx);
            i.flush_cv.notify_all();
        }
        {
            let _g = lock(&i.house_mx);
            i.house_cv.notify_all();
        }
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        if let Some(cause) = lock(&i.stopped).clone() {
            warn!(%cause, "closing a store stopped by an I/O failure; the next open will recover");
            return Err(StoreError::Stopped { cause });
        }
        let end = i.log.write_pos();
        i.dispatch_until(end.min(i.dispatch_limit.load(Ordering::Acquire)))?;
        i.flush_log(end)?;
        i.flush_derived()
            .map_err(|e| StoreError::io("flush consume queues and index", e))?;
        i.offsets.persist_durable()?;
        i.write_checkpoint()?;
        let marker = i.cfg.data_dir.join(RUNNING_MARKER);
        std::fs::remove_file(&marker).map_err(|e| StoreError::io("remove RUNNING marker", e))?;
        sync_dir(&i.cfg.data_dir)?;
        info!(end, "store closed cleanly");
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            error!(error = %e, "store did not close cleanly");
        }
    }
}

/// Suffix of a deleted topic's consume queue directory while it is being removed.
const DELETED_SUFFIX: &str = ".deleted-";

fn open_consume_queues(
    dir: &Path,
    per_file: u64,
    log_end: u64,
    fences: &HashMap<String, u64>,
) -> Result<HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>> {
    let mut out = HashMap::new();
    let list = |d: &Path| {
        std::fs::read_dir(d).map_err(|e| StoreError::io(format!("list {}", d.display()), e))
    };
    let remove = |path: &Path, why: &str| {
        info!(dir = %path.display(), "{why}");
        if let Err(e) = std::fs::remove_dir_all(path) {
            warn!(dir = %path.display(), error = %e, "could not remove; will retry at the next open");
        }
    };
    for t in list(dir)? {
        let t = t.map_err(|e| StoreError::io("list consume queues", e))?;
        if !t.path().is_dir() {
            continue;
        }
        let topic = t.file_name().to_string_lossy().to_string();
        if topic.contains(DELETED_SUFFIX) {
            remove(&t.path(), "removing the consume queues of a deleted topic");
            continue;
        }
        let fence = fences.get(&topic).copied().unwrap_or(0);
        for q in list(&t.path())? {
            let q = q.map_err(|e| StoreError::io("list consume queues", e))?;
            let Ok(qid) = q.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cq = ConsumeQueue::open(&q.path(), per_file)?;
            cq.recover(log_end)?;
            // Left by a crash in the middle of a topic delete: it indexes the old incarnation.
            if fence > 0 && cq.first_phys()?.is_some_and(|p| p < fence) {
                drop(cq);
                remove(
                    &q.path(),
                    "removing a consume queue of a deleted topic's old incarnation",
                );
                continue;
            }
            out.entry(topic.clone())
                .or_insert_with(HashMap::new)
                .insert(qid, Arc::new(cq));
        }
    }
    Ok(out)
}

/// True for a failure caused by a full disk (the store's own error, or `ENOSPC` underneath).
fn is_out_of_space(e: &StoreError) -> bool {
    match e {
        StoreError::DiskFull { .. } => true,
        StoreError::Io { source, .. } => crate::mapped_file::is_disk_full(source),
        _ => false,
    }
}

impl Fencer for Inner {
    /// Stops appends, lets `persist` record the fence (the end of the log), then forgets the
    /// topic's queue positions and removes its consume queues with the dispatcher held off.
    fn fence(
        &self,
        topic: &str,
        at: Option<u64>,
        persist: &mut dyn FnMut(u64) -> Result<bool>,
    ) -> Result<()> {
        let mut w = lock(&self.writer);
        let fence = at.unwrap_or_else(|| self.log.write_pos());
        if !persist(fence)? {
            return Ok(());
        }
        self.fences
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), fence);
        self.any_fence.store(true, Ordering::Release);
        w.next.remove(topic);
        let _d = self.pass_lock();
        let had = self
            .cqs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic)
            .is_some();
        let dir = self.cq_dir.join(topic);
        if had || dir.exists() {
            // Renamed first (atomic), so a queue of the new incarnation never finds old files;
            // removed after (a leftover is removed at the next open).
            let aside = self.cq_dir.join(format!("{topic}{DELETED_SUFFIX}{fence}"));
            std::fs::rename(&dir, &aside)
                .map_err(|e| StoreError::io(format!("move aside {}", dir.display()), e))?;
            sync_dir(&self.cq_dir)?;
            if let Err(e) = std::fs::remove_dir_all(&aside) {
                warn!(dir = %aside.display(), error = %e, "could not remove a deleted topic's consume queues; will retry at the next open");
            }
        }
        info!(
            topic,
            fence, "topic fenced: its earlier records are no longer served"
        );
        Ok(())
    }
}

impl Inner {
    fn stopped_error(&self) -> Option<StoreError> {
        if !self.stopped_flag.load(Ordering::Acquire) {
            return None;
        }
        Some(StoreError::Stopped {
            cause: lock(&self.stopped).clone().unwrap_or_default(),
        })
    }

    fn stop(&self, cause: String) {
        error!(%cause, "store stops acknowledging writes");
        let mut s = lock(&self.stopped);
        if s.is_none() {
            *s = Some(cause);
        }
        self.stopped_flag.store(true, Ordering::Release);
        drop(s);
        self.release_waiters();
    }

    fn cq(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        self.cqs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .and_then(|q| q.get(&queue_id))
            .cloned()
    }

    fn cq_or_create(&self, topic: &str, queue_id: u32) -> Result<Arc<ConsumeQueue>> {
        if let Some(cq) = self.cq(topic, queue_id) {
            return Ok(cq);
        }
        let mut map = self.cqs.write().unwrap_or_else(|p| p.into_inner());
        if let Some(cq) = map.get(topic).and_then(|q| q.get(&queue_id)) {
            return Ok(cq.clone());
        }
        let dir = self.cq_dir.join(topic).join(queue_id.to_string());
        // A new queue's files take at most a 64th of the free space each.
        let per_file = crate::disk::capped_entries(
            &self.cq_dir,
            self.cfg.cq_entries_per_file,
            crate::config::MIN_CQ_ENTRIES.min(self.cfg.cq_entries_per_file),
            consume_queue::ENTRY_LEN as u64,
            64,
        );
        let cq = Arc::new(ConsumeQueue::open(&dir, per_file)?);
        sync_dir(&self.cq_dir)?;
        map.entry(topic.to_string())
            .or_default()
            .insert(queue_id, cq.clone());
        Ok(cq)
    }

    /// Why appends are refused right now, if they are (a fresh error each call).
    fn refusal(&self) -> Option<StoreError> {
        if self.shutdown.load(Ordering::Acquire) {
            return Some(StoreError::Stopped {
                cause: "store is closed".into(),
            });
        }
        if let Some(e) = self.stopped_error() {
            return Some(e);
        }
        if self.disk.is_full() {
            if let Some(e) = self.disk.refusal() {
                return Some(e);
            }
        }
        if self.dispatch_failing.load(Ordering::Acquire) {
            let (cause, space) = lock(&self.dispatch_failure).clone().unwrap_or_default();
            let detail = format!("consume queues cannot be written ({cause})");
            return Some(if space {
                StoreError::DiskFull { detail }
            } else {
                StoreError::io(
                    "appends refused while the dispatcher fails",
                    std::io::Error::other(detail),
                )
            });
        }
        None
    }

    /// Turns an allocation failure into the disk-full refusal (and state) when it is one.
    fn refuse_for_space(&self, e: StoreError, needed: u64) -> StoreError {
        if !is_out_of_space(&e) {
            return e;
        }
        let detail = match e {
            StoreError::DiskFull { detail } => detail,
            other => other.to_string(),
        };
        self.disk.allocation_failed(needed, &detail);
        StoreError::DiskFull { detail }
    }

    /// Reads the record at `offset`, counting it when it is damaged.
    fn read_at(&self, offset: u64) -> Result<StoredMessage> {
        self.with_record_at(offset, |v| v.to_message())
    }

    /// [`CommitLog::with_record`], a corrupt record counted and logged once.
    fn with_record_at<R>(&self, offset: u64, f: impl FnOnce(RecordView<'_>) -> R) -> Result<R> {
        let r = self.log.with_record(offset, f);
        if let Err(StoreError::Corrupt { offset, reason }) = &r {
            if self.corrupt.note(*offset) {
                error!(offset, %reason, "corrupt record in the commit log; it is not served");
            }
        }
        r
    }

    /// The fence of `topic` (0: never deleted).
    fn fence_of(&self, topic: &str) -> u64 {
        if !self.any_fence.load(Ordering::Acquire) {
            return 0;
        }
        let fences = self.fences.read().unwrap_or_else(|p| p.into_inner());
        fences.get(topic).copied().unwrap_or(0)
    }

    fn append(&self, msg: &NewMessage) -> Result<AppendResult> {
        let mut a = self.append_deferred(msg)?;
        let end = a.phys_offset + a.size as u64;
        if self.cfg.flush == FlushMode::Sync {
            self.wait_flushed(end)?;
        }
        if let Some(term) = a.term.take() {
            self.confirm_blocking(term, end)?;
        }
        Ok(a)
    }

    /// [`Store::append_deferred`]: the gate admits the record under the append lock and its
    /// term goes back with the result.
    fn append_deferred(&self, msg: &NewMessage) -> Result<AppendResult> {
        let adm = self.admit(msg)?;
        let gate = self.gate();
        let a = {
            let mut w = lock(&self.writer);
            let term = gate.as_ref().map(|g| g.admit()).transpose()?;
            AppendResult {
                term,
                ..self.write_one(&mut w, msg, adm)?
            }
        };
        self.note_written(1, a.size as u64, a.phys_offset + a.size as u64);
        Ok(a)
    }

    /// Waits on this thread until the gate confirms the records below `end` of `term`.
    fn confirm_blocking(&self, term: u64, end: u64) -> Result<()> {
        match self.gate() {
            Some(g) => g.confirmed(term, end),
            None => Err(StoreError::NotReplicated(
                "a record admitted in a term has no gate to confirm it".into(),
            )),
        }
    }

    fn gate(&self) -> Option<Arc<dyn AppendGate>> {
        self.append_gate
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks that `msg` may be appended now and returns its encoded length and the index
    /// entries it will take (worked out here, outside the append lock).
    fn admit(&self, msg: &NewMessage) -> Result<Admitted> {
        if msg.body.len() > self.cfg.max_body_size {
            return Err(StoreError::BodyTooLarge {
                size: msg.body.len(),
                limit: self.cfg.max_body_size,
            });
        }
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        Ok(Admitted {
            len: record::encoded_len(msg)?,
            index_entries: index::entries_for(
                msg.properties.get(PROP_MSG_ID).map(String::as_str),
                msg.properties.get(PROP_KEYS).map(String::as_str),
            ),
        })
    }

    /// Writes one record at the end of the log; the caller holds the append lock. Everything
    /// the dispatcher will need for the record is allocated first (see the module docs).
    fn write_one(&self, w: &mut Writer, msg: &NewMessage, adm: Admitted) -> Result<AppendResult> {
        let Admitted { len, index_entries } = adm;
        if let Some(e) = self.stopped_error() {
            return Err(e);
        }
        let queues = match w.next.get_mut(msg.topic.as_str()) {
            Some(q) => q,
            None => w.next.entry(msg.topic.clone()).or_default(),
        };
        let cursor = queues.entry(msg.queue_id).or_default();
        let queue_offset = cursor.next;
        if queue_offset >= cursor.file_end {
            let cq_bytes = self.cfg.cq_entries_per_file * consume_queue::ENTRY_LEN as u64;
            let cq = self
                .cq_or_create(&msg.topic, msg.queue_id)
                .map_err(|e| self.refuse_for_space(e, cq_bytes))?;
            let file_bytes = cq.entries_per_file() * consume_queue::ENTRY_LEN as u64;
            cursor.file_end = cq
                .ensure(queue_offset)
                .map_err(|e| self.refuse_for_space(e, file_bytes))?;
        }
        self.index
            .reserve(index_entries)
            .map_err(|e| self.refuse_for_space(e, self.index.file_bytes()))?;
        let (seg, pos) = self
            .log
            .reserve(len)
            .map_err(|e| self.refuse_for_space(e, self.cfg.segment_size))?;
        let store_ts = now_ms();
        // Encoded aside and written with one `pwrite` (see `CommitLog::write_through`); the
        // range is ours until `publish`.
        RECORDS.with(|b| -> Result<()> {
            let mut buf = b.borrow_mut();
            buf.clear();
            buf.resize(len, 0);
            record::encode(msg, self.cfg.store_host, &mut buf)?;
            record::seal(&mut buf, queue_offset, pos, store_ts);
            let written = self.log.write_through(&seg, pos, &buf);
            if buf.capacity() > MAX_KEPT_BUFFER {
                *buf = Vec::new();
            }
            written
        })?;
        self.log.publish(pos + len as u64);
        cursor.next += 1;
        self.index.commit_reserved(index_entries);
        Ok(AppendResult {
            phys_offset: pos,
            queue_offset,
            size: len as u32,
            store_timestamp_ms: store_ts,
            term: None,
        })
    }

    /// [`Store::try_append`]: the append lock is waited for only briefly and only while
    /// another async worker holds it to copy (see [`Inner::try_writer`]), and everything
    /// [`Inner::write_one`] would allocate must exist already.
    /// Under an [`AppendGate`] the gate admits the record under the append lock, as in
    /// [`Inner::append`], and the result carries its term for [`Store::acknowledged`].
    fn try_append(&self, msg: &NewMessage) -> Result<Option<AppendResult>> {
        Ok(self
            .try_append_batch(std::slice::from_ref(msg))?
            .and_then(|mut r| r.pop()))
    }

    /// [`Store::try_append_batch`], and [`Inner::try_append`] as a batch of one: records
    /// appended under one acquisition of the append lock, all or none. The readiness checks cover the whole
    /// batch (each queue's consume queue file, the index room, the active segment's room for
    /// the batch's total length), so no record is written unless every one of them can be
    /// without allocating. The records are encoded into one buffer and written with one
    /// `pwrite` (see `CommitLog::write_through`).
    fn try_append_batch(&self, msgs: &[NewMessage]) -> Result<Option<Vec<AppendResult>>> {
        let gate = self.gate();
        if self.cfg.replicated && gate.is_none() {
            // A replica before its gate is set: the blocking path refuses or waits as it must.
            return Ok(None);
        }
        let mut admitted = Vec::with_capacity(msgs.len());
        let (mut total_len, mut total_entries) = (0usize, 0u64);
        for m in msgs {
            let adm = self.admit(m)?;
            total_len += adm.len;
            total_entries += adm.index_entries;
            admitted.push(adm);
        }
        let Some(mut w) = self.try_writer() else {
            return Ok(None);
        };
        if let Some(e) = self.stopped_error() {
            return Err(e);
        }
        // Asked under the append lock (no write of a term slips in after it ended), and before
        // anything else, so a member that may not write refuses here rather than on a thread.
        let term = gate.as_ref().map(|g| g.admit()).transpose()?;
        // Records per queue in this batch: a batch names few queues (usually one).
        let mut per_queue: Vec<(&str, u32, u64)> = Vec::with_capacity(1);
        for m in msgs {
            match per_queue
                .iter_mut()
                .find(|(t, q, _)| *q == m.queue_id && *t == m.topic.as_str())
            {
                Some(c) => c.2 += 1,
                None => per_queue.push((m.topic.as_str(), m.queue_id, 1)),
            }
        }
        let ready = per_queue.iter().all(|(t, q, n)| {
            w.next
                .get(*t)
                .and_then(|qs| qs.get(q))
                .is_some_and(|c| c.next + n <= c.file_end)
        });
        if !ready || !self.index.has_room(total_entries) {
            return Ok(None);
        }
        let Some(start) = self.log.room_in_active(total_len) else {
            return Ok(None);
        };
        let Some(seg) = self.log.segment_for(start) else {
            return Ok(None);
        };
        // Each queue's first offset in this batch; the cursors move only once it is written.
        let mut next: Vec<u64> = per_queue
            .iter()
            .map(|(t, q, _)| {
                w.next
                    .get(*t)
                    .and_then(|qs| qs.get(q))
                    .map_or(0, |c| c.next)
            })
            .collect();
        let store_ts = now_ms();
        // Taken out of the thread's slot (not borrowed) so that it can be read again by the
        // dispatch pass below, whatever that pass calls.
        let mut buf = RECORDS.with(|b| std::mem::take(&mut *b.borrow_mut()));
        buf.clear();
        buf.resize(total_len, 0);
        let mut results = Vec::with_capacity(msgs.len());
        let mut at = 0usize;
        for (m, adm) in msgs.iter().zip(&admitted) {
            let slot = per_queue
                .iter()
                .position(|(t, q, _)| *q == m.queue_id && *t == m.topic.as_str())
                .unwrap_or_default();
            let queue_offset = next[slot];
            next[slot] += 1;
            let phys = start + at as u64;
            let out = &mut buf[at..at + adm.len];
            record::encode(m, self.cfg.store_host, out)?;
            record::seal(out, queue_offset, phys, store_ts);
            results.push(AppendResult {
                phys_offset: phys,
                queue_offset,
                size: adm.len as u32,
                store_timestamp_ms: store_ts,
                term,
            });
            at += adm.len;
        }
        self.log.write_through(&seg, start, &buf)?;
        let end = start + total_len as u64;
        self.log.publish(end);
        for (t, q, n) in &per_queue {
            if let Some(c) = w.next.get_mut(*t).and_then(|qs| qs.get_mut(q)) {
                c.next += n;
            }
        }
        self.index.commit_reserved(total_entries);
        drop(w);
        self.count_written(msgs.len() as u64, total_len as u64, end);
        self.dispatch_here(Some(InHand {
            start,
            records: &buf,
        }));
        if buf.capacity() <= MAX_KEPT_BUFFER {
            RECORDS.with(|b| *b.borrow_mut() = buf);
        }
        Ok(Some(results))
    }

    /// The append lock for an async worker, if it is free or soon free. Holders that only
    /// copy (other async workers here, marked by [`QuickWriter`]) release it within tens of
    /// microseconds (about 40 for a batch of 32 at 1 KiB), so a worker that finds one of them
    /// holding it waits for it, up to [`QUICK_WAIT`] and yielding its thread meanwhile: that
    /// is much cheaper than taking the request to the blocking pool. A holder that may
    /// allocate (the blocking paths) may hold it for a disk's worth of time, and an async
    /// worker must not wait for that.
    fn try_writer(&self) -> Option<QuickWriter<'_>> {
        let mut tries = 0u32;
        let mut waiting_since = None;
        loop {
            match self.writer.try_lock() {
                Ok(g) => return Some(QuickWriter::hold(&self.writer_quick, g)),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    return Some(QuickWriter::hold(&self.writer_quick, p.into_inner()))
                }
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            tries += 1;
            if tries <= 64 {
                std::hint::spin_loop();
                continue;
            }
            if !self.writer_quick.load(Ordering::Acquire) {
                return None;
            }
            let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > QUICK_WAIT {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Counts the written records, wakes the dispatcher and, in sync mode, waits until
    /// everything below `end` is on disk.
    fn after_write(&self, count: u64, bytes: u64, end: u64) -> Result<()> {
        self.note_written(count, bytes, end);
        if self.cfg.flush == FlushMode::Sync {
            self.wait_flushed(end)?;
        }
        Ok(())
    }

    /// Counts the written records, tells who follows the log (append listeners) and
    /// dispatches them on this thread, waiting for a running pass to end: only blocking
    /// appends come here, so a queue's first record (whose consume queue file the pass
    /// creates) is dispatched here rather than on an async worker. While dispatch is failing,
    /// the dispatcher thread retries it.
    fn note_written(&self, count: u64, bytes: u64, end: u64) {
        self.count_written(count, bytes, end);
        if self.dispatch_failing.load(Ordering::Acquire) {
            self.wake_dispatcher();
            return;
        }
        if let Err(e) = self.dispatch_until(self.dispatch_target()) {
            self.dispatch_failed(&e);
            self.wake_dispatcher();
        }
    }

    /// Counts the written records and tells the append listeners.
    fn count_written(&self, count: u64, bytes: u64, end: u64) {
        self.appends.fetch_add(count, Ordering::Relaxed);
        self.append_bytes.fetch_add(bytes, Ordering::Relaxed);
        for l in self
            .append_listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l(end);
        }
    }

    /// Wakes the dispatcher thread if it sleeps and has something to do: below a dispatch
    /// limit (a replica's confirm offset) a write alone gives it nothing, and waking it for
    /// nothing cost a replica a thread switch per batch. Callers change the log end or the
    /// limit before they call this, and the dispatcher checks its target again after it says
    /// it is idle, so no work is missed.
    fn wake_dispatcher(&self) {
        if self.dispatch_target() <= self.dispatched.load(Ordering::Acquire) {
            return;
        }
        if self.dispatcher_idle.load(Ordering::SeqCst) {
            let _g = lock(&self.dispatch_mx);
            self.dispatch_cv.notify_one();
        }
    }

    /// Appends several messages under one lock and, in sync mode, one wait for the flush.
    /// Each message gets its own result, as a RocketMQ send of a batch reports per entry.
    fn append_batch(&self, msgs: &[NewMessage]) -> Vec<Result<AppendResult>> {
        let admitted: Vec<Result<Admitted>> = msgs.iter().map(|m| self.admit(m)).collect();
        let (mut count, mut bytes, mut end) = (0u64, 0u64, 0u64);
        let gate = self.gate();
        let mut term = 0;
        let mut results: Vec<Result<AppendResult>> = {
            let mut w = lock(&self.writer);
            match gate.as_ref().map(|g| g.admit()) {
                Some(Err(e)) => {
                    let why = e.to_string();
                    return msgs
                        .iter()
                        .map(|_| Err(StoreError::NotWritable(why.clone())))
                        .collect();
                }
                Some(Ok(t)) => term = t,
                None => {}
            }
            msgs.iter()
                .zip(admitted)
                .map(|(msg, len)| {
                    let r = len.and_then(|adm| self.write_one(&mut w, msg, adm));
                    if let Ok(a) = &r {
                        count += 1;
                        bytes += a.size as u64;
                        end = a.phys_offset + a.size as u64;
                    }
                    r
                })
                .collect()
        };
        if count == 0 {
            return results;
        }
        if let Err(e) = self.after_write(count, bytes, end) {
            let cause = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(StoreError::Stopped {
                    cause: cause.clone(),
                });
            }
        } else if let Some(Err(e)) = gate.map(|g| g.confirmed(term, end)) {
            let why = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(StoreError::NotReplicated(why.clone()));
            }
        }
        results
    }

    /// Group commit: registers as a waiter, wakes the flusher, and sleeps until a flush
    /// covering `end` has completed.
    fn wait_flushed(&self, end: u64) -> Result<()> {
        if self.log.flushed_pos() >= end {
            return Ok(());
        }
        // Each waiter parks on its own; the flusher unparks exactly those a flush covered,
        // so waking sixteen writers is sixteen unparks, not a convoy on one mutex. The list
        // is also the flusher's "someone is waiting" signal: its mutex orders the push before
        // the flusher's check or the flusher's idle flag before our load of it.
        self.add_flush_waiter(FlushWaiter {
            end,
            wake: FlushWake::Thread(std::thread::current()),
        });
        loop {
            if self.log.flushed_pos() >= end {
                return Ok(());
            }
            if let Some(e) = self.stopped_error() {
                return Err(e);
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    /// Puts a waiter on the flusher's list and wakes the flusher if it sleeps, or if it
    /// gathers and this waiter is the last one it waits for.
    ///
    /// The list's mutex orders the push before the flusher's check, or the flusher's idle flag
    /// (or gather target) before our load of it: no wake-up is lost.
    fn add_flush_waiter(&self, w: FlushWaiter) {
        let waiting = {
            let mut list = lock(&self.flush_list);
            list.push(w);
            list.len()
        };
        if self.flusher_idle.load(Ordering::SeqCst)
            || waiting >= self.gather_target.load(Ordering::SeqCst)
        {
            let _g = lock(&self.flush_mx);
            self.flush_cv.notify_one();
        }
    }

    /// Group commit under load: before a flush, waits (at most `flush_gather`) until `want`
    /// sends wait for a flush ([`RecentWakes::target`]: zero, so no wait, unless many senders
    /// are active). Sends that a flush wakes together come back together, so when the CPU is
    /// busy the next flush then takes all of them at once instead of one flush for the first
    /// few and another for the rest: fewer flushes, fewer wake-ups, less CPU per message.
    fn gather(&self, want: usize) {
        if self.cfg.flush_gather.is_zero() || want <= 1 {
            return;
        }
        let deadline = Instant::now() + self.cfg.flush_gather;
        let mut g = lock(&self.flush_mx);
        self.gather_target.store(want, Ordering::SeqCst);
        loop {
            if lock(&self.flush_list).len() >= want
                || self.shutdown.load(Ordering::SeqCst)
                || self.stopped_flag.load(Ordering::Acquire)
            {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = self
                .flush_cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.gather_target.store(usize::MAX, Ordering::SeqCst);
    }

    /// Wakes the waiters a flush has covered (all of them once the store stopped); says how
    /// many.
    fn release_waiters(&self) -> usize {
        let flushed = self.log.flushed_pos();
        let stopped = self.stopped_flag.load(Ordering::Acquire);
        let mut list = lock(&self.flush_list);
        let before = list.len();
        list.retain(|w| {
            if stopped || w.end <= flushed {
                w.wake.wake();
                false
            } else {
                true
            }
        });
        before - list.len()
    }

    fn flush_log(&self, target: u64) -> Result<()> {
        if let Some(e) = self.stopped_error() {
            return Err(e);
        }
        if target <= self.log.flushed_pos() {
            return Ok(());
        }
        let started = Instant::now();
        let r = if self.faults.fail_flush.swap(false, Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        } else {
            self.log.flush_to(target)
        };
        match r {
            Ok(()) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.flush_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // Never retry-and-pretend: the kernel may have dropped the dirty pages.
                let cause = format!("commit log flush failed: {e}");
                self.stop(cause.clone());
                Err(StoreError::Stopped { cause })
            }
        }
    }

    fn run_flusher(self: Arc<Self>) {
        let interval = self.cfg.flush_interval;
        let mut woken = RecentWakes::default();
        loop {
            {
                let mut g = lock(&self.flush_mx);
                loop {
                    if self.shutdown.load(Ordering::SeqCst) {
                        self.release_waiters();
                        return;
                    }
                    // Idle is announced before the check, so a waiter that arrives after the
                    // check sees it and wakes us (no lost wake-up).
                    self.flusher_idle.store(true, Ordering::SeqCst);
                    let pending = self.log.write_pos() > self.log.flushed_pos();
                    if self.cfg.flush == FlushMode::Sync
                        && pending
                        && !lock(&self.flush_list).is_empty()
                    {
                        self.flusher_idle.store(false, Ordering::SeqCst);
                        break;
                    }
                    let (ng, to) = self
                        .flush_cv
                        .wait_timeout(g, interval)
                        .unwrap_or_else(|p| p.into_inner());
                    self.flusher_idle.store(false, Ordering::SeqCst);
                    g = ng;
                    if to.timed_out() && self.log.write_pos() > self.log.flushed_pos() {
                        break;
                    }
                }
            }
            if self.stopped_flag.load(Ordering::Acquire) {
                self.release_waiters();
                std::thread::sleep(interval);
                continue;
            }
            if self.cfg.flush == FlushMode::Sync {
                self.gather(woken.target());
            }
            let target = self.log.write_pos();
            let _ = self.flush_log(target);
            woken.record(self.release_waiters());
        }
    }

    fn run_dispatcher(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            // Checked first so a dispatcher stuck retrying (a full disk) still lets close()
            // finish; close() dispatches what is left itself.
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let target = self.dispatch_target();
            if self.dispatched.load(Ordering::Acquire) < target {
                match self.dispatch_until(target) {
                    Ok(()) => {
                        if self.dispatch_failing.swap(false, Ordering::AcqRel) {
                            *lock(&self.dispatch_failure) = None;
                            backoff = Duration::from_millis(50);
                            info!("dispatch recovered; accepting appends");
                        }
                    }
                    Err(e) => {
                        self.dispatch_failed(&e);
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                continue;
            }
            let g = lock(&self.dispatch_mx);
            self.dispatcher_idle.store(true, Ordering::SeqCst);
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            if self.dispatch_target() > self.dispatched.load(Ordering::Acquire) {
                self.dispatcher_idle.store(false, Ordering::SeqCst);
                continue;
            }
            let _ = self
                .dispatch_cv
                .wait_timeout(g, Duration::from_millis(20))
                .unwrap_or_else(|p| p.into_inner());
            self.dispatcher_idle.store(false, Ordering::SeqCst);
        }
    }

    /// How far the dispatcher may go now: the log end, capped by the dispatch limit.
    fn dispatch_target(&self) -> u64 {
        self.log
            .write_pos()
            .min(self.dispatch_limit.load(Ordering::Acquire))
    }

    /// Records a failed dispatch pass: appends are refused until a pass succeeds (so the log
    /// never runs ahead of what can be read), and the failure is logged once per 30 s.
    fn dispatch_failed(&self, e: &StoreError) {
        let space = is_out_of_space(e);
        *lock(&self.dispatch_failure) = Some((e.to_string(), space));
        let first = !self.dispatch_failing.swap(true, Ordering::AcqRel);
        if space {
            self.disk
                .allocation_failed(self.index.file_bytes(), &e.to_string());
        }
        if first {
            error!(error = %e, at = self.dispatched.load(Ordering::Acquire), "dispatch failed; appends refused until it succeeds");
        } else if let Some(suppressed) = self.dispatch_log.check() {
            error!(error = %e, suppressed, "dispatch still failing; appends refused");
        }
    }

    /// Writes consume queue and index entries for every record in `dispatched..end`.
    fn dispatch_until(&self, end: u64) -> Result<()> {
        let pass = self.pass_lock();
        self.dispatch_pass(pass.held(), end, None)
    }

    /// The dispatch lock, waiting for it. Its release takes the passes writers asked for
    /// while it was held (see [`PassGuard`]).
    fn pass_lock(&self) -> PassGuard<'_> {
        PassGuard {
            inner: self,
            guard: Some(lock(&self.dispatch_lock)),
        }
    }

    /// Dispatches what is written on the caller's thread: a send that wrote its record on an
    /// async worker makes it readable there, with no wake-up of the dispatcher thread and none
    /// back. The entries are plain writes into mapped files the writer allocated before
    /// acknowledging (see the module docs). When a pass is running, the writer only asks, and
    /// the holder takes another pass once it releases the lock (a combining lock: one of the
    /// concurrent writers dispatches for all of them). While dispatch is failing it wakes the
    /// dispatcher thread instead, which retries with a back-off.
    fn dispatch_here(&self, in_hand: Option<InHand<'_>>) {
        if self.dispatch_failing.load(Ordering::Acquire) {
            self.wake_dispatcher();
            return;
        }
        // Asked before the lock is tried, and the holder looks after it released the lock:
        // either this writer gets the lock or the holder sees the request (the fences order
        // the flag and the lock word as one total order).
        self.dispatch_asked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.take_asked_passes_with(in_hand);
        if self.dispatch_failing.load(Ordering::Acquire) {
            self.wake_dispatcher();
        }
    }

    /// Takes passes while a writer asked for one and the lock is free; a holder found meanwhile
    /// takes the rest when it releases the lock. A loop, not a recursion, however many
    /// writers keep asking.
    fn take_asked_passes(&self) {
        self.take_asked_passes_with(None)
    }

    /// [`Inner::take_asked_passes`], the first pass reading `in_hand`'s records from the
    /// caller's bytes rather than from the log.
    fn take_asked_passes_with(&self, mut in_hand: Option<InHand<'_>>) {
        while self.dispatch_asked.load(Ordering::SeqCst) {
            let Ok(pass) = self.dispatch_lock.try_lock() else {
                return;
            };
            // Cleared under the lock and before the pass reads its target: a writer that asks
            // after this either is covered by the pass or finds the flag set again below.
            self.dispatch_asked.store(false, Ordering::SeqCst);
            let r = self.dispatch_pass(&pass, self.dispatch_target(), in_hand.take());
            drop(pass);
            fence(Ordering::SeqCst);
            if let Err(e) = r {
                self.dispatch_failed(&e);
                return;
            }
        }
    }

    /// One dispatch pass up to `end`, holding the pass lock. The records of `in_hand` that the
    /// pass covers are read from those bytes, which are what was just written there, instead
    /// of from the log's mapping: that read is the first touch of each new page of the log
    /// through the mapping (a page fault per page), and it finds the segment and checks the
    /// framing again.
    fn dispatch_pass(
        &self,
        _held: &std::sync::MutexGuard<'_, ()>,
        end: u64,
        in_hand: Option<InHand<'_>>,
    ) -> Result<()> {
        let from = self.dispatched.load(Ordering::Acquire);
        if from >= end {
            return Ok(());
        }
        let failing = &self.faults.fail_dispatch;
        if failing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::io(
                "write consume queue entry (injected)",
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        let listeners: Vec<DispatchListener> = self
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut done = from;
        let from_log = |from: u64, to: u64, done: &mut u64| {
            self.log.for_each_raw(
                from,
                to,
                self.written_from,
                |pos, rec| {
                    self.dispatch_one(pos, rec, &listeners)?;
                    *done = pos + rec.len() as u64;
                    Ok(())
                },
                |pos, e| {
                    if self.corrupt.note(pos) {
                        warn!(offset = pos, error = %e, "damaged record stepped over by the dispatcher; it is not served");
                    }
                },
            )
        };
        let r = match in_hand.filter(|h| h.start >= from && h.end() <= end) {
            Some(h) => from_log(from, h.start, &mut done).and_then(|next| {
                if next != h.start {
                    // The log did not lead to these records (it cannot, short of a damaged
                    // log): read it as a pass without them would.
                    return from_log(next, end, &mut done);
                }
                self.dispatch_records(h, &listeners, &mut done)?;
                from_log(h.end(), end, &mut done)
            }),
            None => from_log(from, end, &mut done),
        };
        match r {
            Ok(next) => self.dispatched.store(next.max(done), Ordering::Release),
            Err(e) => {
                self.dispatched.store(done, Ordering::Release);
                return Err(e);
            }
        }
        if self.dispatch_waiters.load(Ordering::SeqCst) > 0 {
            let _g = lock(&self.dispatch_mx);
            self.dispatched_cv.notify_all();
        }
        let upto = self.dispatched.load(Ordering::Acquire);
        for l in self
            .dispatched_listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l(upto);
        }
        Ok(())
    }

    /// Dispatches the records of `h` from its bytes, checking their framing as a pass over
    /// the log does for records this process wrote.
    fn dispatch_records(
        &self,
        h: InHand<'_>,
        listeners: &[DispatchListener],
        done: &mut u64,
    ) -> Result<()> {
        let mut at = 0usize;
        while at < h.records.len() {
            let pos = h.start + at as u64;
            let rest = &h.records[at..];
            let len = match record::probe_framing(rest, pos)? {
                record::Slot::Message(len) if len as usize <= rest.len() => len as usize,
                other => {
                    return Err(StoreError::Corrupt {
                        offset: pos,
                        reason: format!("a written batch holds {other:?} where a record was"),
                    })
                }
            };
            self.dispatch_one(pos, &rest[..len], listeners)?;
            at += len;
            *done = pos + len as u64;
        }
        Ok(())
    }

    fn dispatch_one(&self, pos: u64, rec: &[u8], listeners: &[DispatchListener]) -> Result<()> {
        let h = record::header(rec)?;
        let topic = record::topic_of(rec)?;
        if pos < self.fence_of(topic) {
            // A deleted incarnation of the topic: not dispatched, never served.
            return Ok(());
        }
        let mut tag = None;
        let mut keys = None;
        let mut id = None;
        let mut cq_key = None;
        record::for_each_property(rec, |k, v| match k {
            PROP_TAGS => tag = Some(v),
            PROP_KEYS => keys = Some(v),
            PROP_MSG_ID => id = Some(v),
            PROP_CQ_KEY => cq_key = v.parse::<u64>().ok(),
            _ => {}
        })?;
        let cq = self.cq_or_create(topic, h.queue_id)?;
        cq.put(
            h.queue_offset,
            consume_queue::Entry {
                phys_offset: pos,
                size: h.total_len,
                tag_hash: cq_key.unwrap_or_else(|| consume_queue::tag_hash(tag)),
            },
        )?;
        if self.index_done_upto.is_none_or(|upto| pos > upto) {
            if let Some(id) = id {
                self.index.put(topic, id, pos, h.store_timestamp_ms)?;
            }
            if let Some(keys) = keys {
                for k in keys.split(KEY_SEPARATOR).filter(|k| !k.is_empty()) {
                    self.index.put(topic, k, pos, h.store_timestamp_ms)?;
                }
            }
        }
        if !listeners.is_empty() {
            let ev = DispatchEvent {
                topic,
                queue_id: h.queue_id,
                queue_offset: h.queue_offset,
                phys_offset: pos,
                size: h.total_len,
                store_timestamp_ms: h.store_timestamp_ms,
                tag,
                raw: rec,
            };
            for l in listeners {
                l(&ev);
            }
        }
        Ok(())
    }

    fn read(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: usize,
        filter: Option<&TagFilter>,
    ) -> Result<ReadResult> {
        let mut messages = Vec::new();
        let mut out = self.read_each(topic, queue_id, offset, max, filter, |v| {
            messages.push(v.to_message());
            true
        })?;
        out.messages = messages;
        Ok(out)
    }

    /// The walk behind every queue read: each matching record goes to `take` in place, which
    /// answers whether it took it; the first one refused ends the read there (`next_offset` is
    /// its offset). `messages` of the result stays empty.
    fn read_each(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: usize,
        filter: Option<&TagFilter>,
        mut take: impl FnMut(&RecordView<'_>) -> bool,
    ) -> Result<ReadResult> {
        let Some(cq) = self.cq(topic, queue_id) else {
            return Ok(ReadResult {
                next_offset: 0,
                ..Default::default()
            });
        };
        let min = cq.min_offset();
        let max_off = cq.max_offset();
        let mut out = ReadResult {
            min_offset: min,
            max_offset: max_off,
            ..Default::default()
        };
        let mut o = offset.max(min);
        // Messages older than the topic's own retention are not served, whether or not
        // retention has expired their entries yet.
        let cutoff = self
            .topics
            .retention_of(topic)
            .map(|ms| retention_cutoff(now_ms(), ms));
        let scan_limit = max.saturating_mul(16).clamp(64, 4096) as u64;
        let stop = max_off.min(o.saturating_add(scan_limit));
        let mut taken = 0;
        while o < stop && taken < max {
            let Some(e) = cq.get(o)? else { break };
            if let Some(f) = filter {
                if !f.hash_may_match(e.tag_hash) {
                    o += 1;
                    continue;
                }
            }
            let seen = self.with_record_at(e.phys_offset, |v| {
                if v.topic() != topic || v.queue_id() != queue_id || v.queue_offset() != o {
                    Seen::Misplaced
                } else if cutoff.is_some_and(|c| v.store_timestamp_ms() < c) {
                    // Expired by the topic's retention: skipped like a filtered message.
                    Seen::Skipped
                } else if filter.is_none_or(|f| f.matches_view(&v)) {
                    if take(&v) {
                        Seen::Taken
                    } else {
                        Seen::Refused
                    }
                } else {
                    Seen::Skipped
                }
            });
            match seen {
                Ok(Seen::Taken) => taken += 1,
                Ok(Seen::Skipped) => {}
                Ok(Seen::Refused) => break,
                Ok(Seen::Misplaced) => {
                    if self.corrupt.note(e.phys_offset) {
                        error!(
                            topic,
                            queue_id,
                            queue_offset = o,
                            phys = e.phys_offset,
                            "consume queue entry points at another record; skipped"
                        );
                    }
                    out.corrupt.push(e.phys_offset);
                }
                Err(StoreError::OffsetOutOfRange { .. }) => {
                    // Deleted by retention under our feet: move on.
                }
                Err(StoreError::Corrupt { .. }) => {
                    // Counted and logged once by `with_record_at`.
                    out.corrupt.push(e.phys_offset);
                }
                Err(err) => return Err(err),
            }
            o += 1;
        }
        out.next_offset = o.max(offset.min(max_off));
        Ok(out)
    }

    /// Messages of `topic` under index key `key` that `confirm` accepts, newest first, and
    /// the error of the first candidate found damaged (there may be none).
    fn lookup(
        &self,
        topic: &str,
        key: &str,
        begin: i64,
        end: i64,
        max: usize,
        confirm: impl Fn(&StoredMessage) -> bool,
    ) -> (Vec<StoredMessage>, Option<StoreError>) {
        let mut out = Vec::new();
        let mut damaged = None;
        let fence = self.fence_of(topic);
        let cutoff = self
            .topics
            .retention_of(topic)
            .map(|ms| retention_cutoff(now_ms(), ms));
        // A topic with its own retention: also what a retention pass expired (by the clock it
        // ran with) is gone, as it is for reads.
        let kept = |m: &StoredMessage| {
            cutoff.is_none_or(|c| {
                m.store_timestamp_ms >= c
                    && self
                        .cq(topic, m.queue_id)
                        .is_none_or(|cq| m.queue_offset >= cq.min_offset())
            })
        };
        for phys in self.index.lookup(topic, key, begin, end, max) {
            if out.len() >= max {
                break;
            }
            if phys < fence {
                continue;
            }
            match self.read_at(phys) {
                Ok(m) if m.topic == topic && kept(&m) && confirm(&m) => out.push(m),
                Ok(_) | Err(StoreError::OffsetOutOfRange { .. }) => {}
                Err(e) => {
                    damaged.get_or_insert(e);
                }
            }
        }
        (out, damaged)
    }

    fn flush_derived(&self) -> std::io::Result<()> {
        let cqs: Vec<Arc<ConsumeQueue>> = self
            .cqs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|q| q.values().cloned())
            .collect();
        for cq in cqs {
            cq.flush()?;
        }
        self.index.flush()
    }

    /// The checkpoint: `dispatched` is read before the derived files are flushed, so every
    /// entry it promises is on disk when it is written.
    fn write_checkpoint(&self) -> Result<()> {
        let dispatched = self.dispatched.load(Ordering::Acquire);
        self.flush_derived()
            .map_err(|e| StoreError::io("flush consume queues and index", e))?;
        self.store_checkpoint(dispatched)
    }

    /// The checkpoint between two flushes of the derived files (see
    /// [`StoreConfig::checkpoint_interval`]): `log_flushed` follows the log's own flushes,
    /// because recovery takes a bad record below it for damage inside the log (reported and
    /// skipped) and one above it for a torn tail (cut); `dispatched` stays what the last
    /// flush of the derived files covered.
    fn write_log_checkpoint(&self) -> Result<()> {
        let covered = lock(&self.last_checkpoint).as_ref().map(|l| l.dispatched);
        match covered {
            Some(dispatched) => self.store_checkpoint(dispatched),
            None => self.write_checkpoint(),
        }
    }

    fn store_checkpoint(&self, dispatched: u64) -> Result<()> {
        let cp = Checkpoint {
            log_flushed: self.log.flushed_pos(),
            dispatched,
            log_min: self.log.min_pos().min(dispatched),
            written_at_ms: now_ms(),
        };
        // An idle store rewrites nothing: the same offsets need no new file and no fsyncs.
        let mut last = lock(&self.last_checkpoint);
        let same = |l: &Checkpoint| {
            (l.log_flushed, l.dispatched, l.log_min) == (cp.log_flushed, cp.dispatched, cp.log_min)
        };
        if last.as_ref().is_some_and(same) {
            return Ok(());
        }
        cp.store(&self.cfg.data_dir)?;
        *last = Some(cp);
        Ok(())
    }

    fn check_disk(&self) {
        self.disk
            .check(&self.cfg.data_dir, self.cfg.disk_high_water);
    }

    /// Per-topic retention (see [`crate::TopicConfig::retention_ms`]): moves each queue of a
    /// topic that has its own retention past the entries whose message is older than it, so
    /// consumers skip them and the queue's minimum says so. Store timestamps grow along a
    /// queue, so the scan stops at the first message still kept (each pass reads the newly
    /// expired records and one more); a damaged record neither expires nor stops it. The
    /// records stay in the shared commit log until the node's retention deletes their
    /// segment. Returns how many entries expired.
    fn expire_topics(&self, now_ms: i64) -> Result<u64> {
        let mut expired = 0;
        for (topic, ms) in self.topics.retentions() {
            let cutoff = retention_cutoff(now_ms, ms);
            let mut topic_expired = 0;
            let queues: Vec<(u32, Arc<ConsumeQueue>)> = self
                .cqs
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&topic)
                .map(|q| q.iter().map(|(id, cq)| (*id, cq.clone())).collect())
                .unwrap_or_default();
            for (q, cq) in queues {
                let (min, max) = (cq.min_offset(), cq.max_offset());
                let mut to = min;
                for o in min..max {
                    let Some(e) = cq.get(o)? else { break };
                    match self.read_at(e.phys_offset) {
                        Ok(m) if m.store_timestamp_ms < cutoff => to = o + 1,
                        Ok(_) => break,
                        // Its segment is gone already (the node's retention).
                        Err(StoreError::OffsetOutOfRange { .. }) => to = o + 1,
                        Err(_) => {}
                    }
                }
                if to > min {
                    // Under the dispatch lock, and only while the queue is still the topic's:
                    // a topic deleted (and perhaps created again) meanwhile has other queues.
                    let _d = self.pass_lock();
                    if self.cq(&topic, q).is_some_and(|now| Arc::ptr_eq(&now, &cq)) {
                        cq.expire_below(to)?;
                        topic_expired += to - min;
                    }
                }
            }
            expired += topic_expired;
            if topic_expired > 0 {
                debug!(
                    topic,
                    expired = topic_expired,
                    retention_ms = ms,
                    "messages expired by the topic's retention"
                );
            }
        }
        Ok(expired)
    }

    fn apply_retention(&self) -> Result<u64> {
        self.apply_retention_at(SystemTime::now())
    }

    fn apply_retention_at(&self, now: SystemTime) -> Result<u64> {
        let retention = self.cfg.retention;
        let budget = self.cfg.retention_bytes;
        let dispatched = self.dispatched.load(Ordering::Acquire);
        let floor = self.retention_floor.load(Ordering::Acquire);
        let min = self.log.delete_oldest(|base, mtime, total| {
            // Never delete what the dispatcher has not indexed yet, nor a parked record.
            if base + self.cfg.segment_size > dispatched.min(floor) {
                return false;
            }
            let old = now
                .duration_since(mtime)
                .map(|age| age > retention)
                .unwrap_or(false);
            let over = budget.is_some_and(|b| total > b);
            old || over
        })?;
        let cqs: Vec<Arc<ConsumeQueue>> = self
            .cqs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|q| q.values().cloned())
            .collect();
        for cq in cqs {
            cq.trim(min)?;
        }
        self.index.trim(min)?;
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.expire_topics(now_ms)?;
        Ok(min)
    }

    /// Keeps the pages just ahead of the write position faulted in, so appends copy into
    /// ready memory. Pauses on errors (an old kernel without MADV_POPULATE_WRITE) for good.
    fn run_housekeeping(self: Arc<Self>) {
        let mut last_clean = Instant::now();
        let mut last_derived = Instant::now();
        loop {
            {
                let g = lock(&self.house_mx);
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                let _ = self
                    .house_cv
                    .wait_timeout(g, self.cfg.flush_interval)
                    .unwrap_or_else(|p| p.into_inner());
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
            }
            self.check_disk();
            if self.stopped_flag.load(Ordering::Acquire) {
                continue;
            }
            // A full disk makes these fail every interval: one line per 30 s says so.
            let results = [
                (
                    "could not allocate the next segment ahead of time",
                    self.log.prepare_spare(),
                ),
                (
                    "could not allocate the next index file ahead of time",
                    self.index.prepare_spare(),
                ),
                ("checkpoint not written", {
                    // The derived files only every `checkpoint_interval`.
                    if last_derived.elapsed() >= self.cfg.checkpoint_interval {
                        last_derived = Instant::now();
                        self.write_checkpoint()
                    } else {
                        self.write_log_checkpoint()
                    }
                }),
                (
                    "consumer offsets not persisted",
                    self.offsets.persist_durable(),
                ),
            ];
            for (what, r) in results {
                if let Err(e) = r {
                    if let Some(suppressed) = self.house_log.check() {
                        warn!(error = %e, suppressed, "{what}");
                    }
                }
            }
            if last_clean.elapsed() >= self.cfg.clean_interval {
                last_clean = Instant::now();
                if let Err(e) = self.apply_retention() {
                    warn!(error = %e, "retention failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(topic: &str, id: &str) -> NewMessage {
        let mut properties = std::collections::BTreeMap::new();
        properties.insert(PROP_MSG_ID.to_string(), id.to_string());
        NewMessage {
            topic: topic.to_string(),
            properties,
            body: id.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    /// A writer that finds a dispatch pass running (here: the lock held as a topic delete
    /// holds it) only asks for a pass; the holder's release takes it, so the record becomes
    /// readable without the writer waiting or waking the dispatcher thread.
    #[test]
    fn a_writer_that_finds_the_pass_lock_held_leaves_its_dispatch_to_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let first = store.append(&plain("t", "m0")).unwrap();
        assert!(store.wait_dispatched(
            first.phys_offset + u64::from(first.size),
            Duration::from_secs(10)
        ));
        let held = store.inner.pass_lock();
        let a = loop {
            if let Some(a) = store.try_append(&plain("t", "m1")).unwrap() {
                break a;
            }
        };
        let end = a.phys_offset + u64::from(a.size);
        assert!(store.inner.dispatch_asked.load(Ordering::SeqCst));
        assert!(
            store.stats().dispatched_offset < end,
            "not dispatched while the lock is held"
        );
        drop(held);
        assert!(store.wait_dispatched(end, Duration::from_secs(10)));
        let r = store.read("t", 0, 0, 10, None).unwrap();
        let ids: Vec<&str> = r.messages.iter().map(|m| m.msg_id().unwrap()).collect();
        assert_eq!(ids, ["m0", "m1"]);
        store.close().unwrap();
    }

    /// An async worker's append never waits for a holder of the append lock that may allocate
    /// (any blocking path), and waits a bounded time for one that only copies: a holder that
    /// does not let go makes it give up, not hang. The copying holder's mark lasts exactly as
    /// long as its hold.
    #[test]
    fn an_async_append_waits_only_for_a_copying_holder_and_not_forever() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.append(&plain("t", "m0")).unwrap();
        let inner = &store.inner;

        let blocking = lock(&inner.writer);
        assert!(!inner.writer_quick.load(Ordering::SeqCst));
        assert!(store.try_append(&plain("t", "m1")).unwrap().is_none());
        drop(blocking);

        let copying = inner.try_writer().expect("the lock is free");
        assert!(inner.writer_quick.load(Ordering::SeqCst));
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| assert!(store.try_append(&plain("t", "m1")).unwrap().is_none()));
        });
        assert!(
            started.elapsed() >= QUICK_WAIT,
            "it waited for the copying holder"
        );
        drop(copying);
        assert!(
            !inner.writer_quick.load(Ordering::SeqCst),
            "the mark ends with the hold"
        );

        let a = store
            .try_append(&plain("t", "m1"))
            .unwrap()
            .expect("the lock is free again");
        assert!(!inner.writer_quick.load(Ordering::SeqCst));
        let end = a.phys_offset + u64::from(a.size);
        assert!(store.wait_dispatched(end, Duration::from_secs(10)));
        let r = store.read("t", 0, 0, 10, None).unwrap();
        let ids: Vec<&str> = r.messages.iter().map(|m| m.msg_id().unwrap()).collect();
        assert_eq!(ids, ["m0", "m1"], "the refused tries wrote nothing");
        store.close().unwrap();
    }

    #[test]
    fn the_gather_waits_for_as_many_as_a_recent_flush_woke_and_forgets_them() {
        let mut w = RecentWakes::default();
        assert_eq!(w.target(), 0, "a new store does not gather");
        for _ in 0..GATHER_MEMORY {
            w.record(1);
        }
        assert_eq!(w.target(), 0, "a lone sender is never waited for");
        for _ in 0..GATHER_MEMORY {
            w.record(3);
        }
        assert_eq!(w.target(), 0, "a few senders are not waited for");
        for _ in 0..GATHER_MEMORY {
            w.record(GATHER_MIN_MEAN);
        }
        w.record(12);
        w.record(5);
        assert_eq!(
            w.target(),
            12,
            "many senders: the most of the recent flushes"
        );
        for _ in 0..GATHER_MEMORY - 2 {
            w.record(GATHER_MIN_MEAN);
        }
        assert_eq!(w.target(), 12, "still among the last GATHER_MEMORY flushes");
        w.record(GATHER_MIN_MEAN);
        assert_eq!(w.target(), 5, "the burst is forgotten");
        w.record(GATHER_MIN_MEAN);
        assert_eq!(w.target(), GATHER_MIN_MEAN);
        for _ in 0..GATHER_MEMORY {
            w.record(2);
        }
        assert_eq!(w.target(), 0, "the senders went away");
    }
}
