//! The store: ties the commit log, consume queues, index files and metadata together, runs
//! the background dispatcher and flusher, and recovers after a crash.
//!
//! Threads: callers append and read on their own threads (calls block; async servers call
//! them from `spawn_blocking`). One dispatcher thread follows the commit log and writes consume
//! queue and index entries. One flusher thread makes the log durable (on a timer in async
//! mode, on demand with group commit in sync mode). One housekeeping thread flushes the
//! derived files, writes the checkpoint, persists consumer offsets, checks the disk and
//! applies retention.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{error, info, info_span, warn};

use crate::checkpoint::{sync_dir, Checkpoint};
use crate::commit_log::{CommitLog, ScanReport};
use crate::config::{FlushMode, StoreConfig};
use crate::consume_queue::{self, ConsumeQueue};
use crate::error::{Result, StoreError};
use crate::index::Index;
use crate::metadata::{OffsetStore, TopicStore};
use crate::record::{self, NewMessage, StoredMessage, TxKind};
use crate::{KEY_SEPARATOR, PROP_CQ_KEY, PROP_KEYS, PROP_MSG_ID, PROP_TAGS};

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

/// A record as the dispatcher sees it, handed to listeners (long polling, timers).
#[derive(Debug)]
pub struct DispatchEvent<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub phys_offset: u64,
    pub size: u32,
    pub store_timestamp_ms: i64,
    pub tx_kind: TxKind,
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
    pub disk_full: bool,
    pub stopped: Option<String>,
    pub corrupt_records_total: u64,
    /// Recovery facts of the last open.
    pub recovered_unclean: bool,
    pub recovery_truncated_bytes: u64,
    pub recovery_corrupt_records: Vec<(u64, String)>,
}

#[derive(Default)]
struct Writer {
    /// Next queue offset per topic and queue.
    next: HashMap<String, HashMap<u32, u64>>,
}

/// A thread waiting in sync mode for its record to be flushed.
struct FlushWaiter {
    end: u64,
    thread: std::thread::Thread,
}

#[derive(Default)]
struct Faults {
    fail_flush: AtomicBool,
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
    house_mx: Mutex<()>,
    house_cv: Condvar,
    stopped: Mutex<Option<String>>,
    stopped_flag: AtomicBool,
    disk_full: Mutex<Option<String>>,
    disk_full_flag: AtomicBool,
    shutdown: AtomicBool,
    listeners: RwLock<Vec<DispatchListener>>,
    faults: Faults,
    appends: AtomicU64,
    append_bytes: AtomicU64,
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
    corrupt_seen: AtomicU64,
    recovery: (bool, u64, Vec<(u64, String)>),
    /// The offsets of the checkpoint on disk, to skip rewriting an unchanged one.
    last_checkpoint: Mutex<Option<Checkpoint>>,
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

const RUNNING_MARKER: &str = "RUNNING";

impl Store {
    /// Opens the store in `cfg.data_dir`, recovering from an unclean stop if needed, and
    /// starts its background threads. Fails if another process has the directory open.
    pub fn open(cfg: StoreConfig) -> Result<Arc<Store>> {
        cfg.validate()?;
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
        let (from, durable, dispatch_from) = match (cp, unclean) {
            (Some(cp), false) => (
                cp.dispatched.min(cp.log_flushed),
                cp.log_flushed,
                cp.dispatched,
            ),
            (Some(cp), true) => (
                cp.dispatched.min(cp.log_flushed),
                cp.log_flushed,
                cp.dispatched,
            ),
            (None, _) => (log.min_pos(), 0, log.min_pos()),
        };
        let report: ScanReport = log.recover(from, durable)?;
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
        let index_done_upto = index.end_phys();
        let cq_dir = dir.join("consumequeue");
        let cqs = open_consume_queues(&cq_dir, cfg.cq_entries_per_file, report.end)?;
        let topics = TopicStore::open(&dir.join("config"))?;
        let offsets = OffsetStore::open(&dir.join("config"))?;

        let inner = Arc::new(Inner {
            log,
            cq_dir,
            cqs: RwLock::new(cqs),
            index,
            topics,
            offsets,
            writer: Mutex::new(Writer::default()),
            dispatched: AtomicU64::new(dispatch_from.max(0)),
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
            house_mx: Mutex::new(()),
            house_cv: Condvar::new(),
            stopped: Mutex::new(None),
            stopped_flag: AtomicBool::new(false),
            disk_full: Mutex::new(None),
            disk_full_flag: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            listeners: RwLock::new(Vec::new()),
            faults: Faults::default(),
            appends: AtomicU64::new(0),
            append_bytes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_nanos: AtomicU64::new(0),
            corrupt_seen: AtomicU64::new(0),
            recovery: (unclean, report.truncated_bytes, report.corrupt.clone()),
            last_checkpoint: Mutex::new(None),
            retention_floor: AtomicU64::new(u64::MAX),
            cfg,
        });

        // Re-dispatch what the derived files may lack, then derive the writer's queue offsets.
        let start = inner
            .dispatched
            .load(Ordering::Acquire)
            .max(inner.log.min_pos())
            .min(report.end);
        inner.dispatched.store(start, Ordering::Release);
        inner.dispatch_until(report.end)?;
        {
            let mut w = lock(&inner.writer);
            for (topic, queues) in inner.cqs.read().unwrap_or_else(|p| p.into_inner()).iter() {
                for (q, cq) in queues {
                    w.next
                        .entry(topic.clone())
                        .or_default()
                        .insert(*q, cq.max_offset());
                }
            }
        }
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
        if inner.cfg.prefault_window > 0 {
            threads.push(spawn("store-prefault", Inner::run_prefaulter, &inner)?);
        }
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

    /// The message whose record starts at commit log offset `phys_offset`.
    pub fn message_at(&self, phys_offset: u64) -> Result<StoredMessage> {
        self.inner.log.read(phys_offset)
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
        self.inner.lookup(topic, key, begin_ms, end_ms, max, |m| {
            m.keys().any(|k| k == key)
        })
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

    /// The message of `topic` with message id `id` (property `UNIQ_KEY`).
    pub fn lookup_id(&self, topic: &str, id: &str) -> Option<StoredMessage> {
        self.inner
            .lookup(topic, id, i64::MIN, i64::MAX, 1, |m| m.msg_id() == Some(id))
            .into_iter()
            .next()
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
            disk_full: i.disk_full_flag.load(Ordering::Acquire),
            stopped: lock(&i.stopped).clone(),
            corrupt_records_total: i.corrupt_seen.load(Ordering::Relaxed),
            recovered_unclean: i.recovery.0,
            recovery_truncated_bytes: i.recovery.1,
            recovery_corrupt_records: i.recovery.2.clone(),
        }
    }

    /// Makes everything appended so far durable now (both modes).
    pub fn flush(&self) -> Result<()> {
        let end = self.inner.log.write_pos();
        let r = self.inner.flush_log(end);
        self.inner.release_waiters();
        r
    }

    /// Runs retention now instead of waiting for the housekeeping interval (admin and tests).
    pub fn apply_retention(&self) -> Result<u64> {
        self.inner.apply_retention()
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
        i.dispatch_until(end)?;
        i.flush_log(end)?;
        i.flush_derived()
            .map_err(|e| StoreError::io("flush consume queues and index", e))?;
        i.offsets.persist()?;
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

fn open_consume_queues(
    dir: &Path,
    per_file: u64,
    log_end: u64,
) -> Result<HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>> {
    let mut out = HashMap::new();
    let list = |d: &Path| {
        std::fs::read_dir(d).map_err(|e| StoreError::io(format!("list {}", d.display()), e))
    };
    for t in list(dir)? {
        let t = t.map_err(|e| StoreError::io("list consume queues", e))?;
        if !t.path().is_dir() {
            continue;
        }
        let topic = t.file_name().to_string_lossy().to_string();
        for q in list(&t.path())? {
            let q = q.map_err(|e| StoreError::io("list consume queues", e))?;
            let Ok(qid) = q.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cq = ConsumeQueue::open(&q.path(), per_file)?;
            cq.recover(log_end)?;
            out.entry(topic.clone())
                .or_insert_with(HashMap::new)
                .insert(qid, Arc::new(cq));
        }
    }
    Ok(out)
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
        let cq = Arc::new(ConsumeQueue::open(&dir, self.cfg.cq_entries_per_file)?);
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
        if self.disk_full_flag.load(Ordering::Acquire) {
            let detail = lock(&self.disk_full).clone().unwrap_or_default();
            return Some(StoreError::DiskFull { detail });
        }
        None
    }

    fn append(&self, msg: &NewMessage) -> Result<AppendResult> {
        let len = self.admit(msg)?;
        let a = self.write_one(&mut lock(&self.writer), msg, len)?;
        self.after_write(1, a.size as u64, a.phys_offset + a.size as u64)?;
        Ok(a)
    }

    /// Checks that `msg` may be appended now and returns its encoded length.
    fn admit(&self, msg: &NewMessage) -> Result<usize> {
        if msg.body.len() > self.cfg.max_body_size {
            return Err(StoreError::BodyTooLarge {
                size: msg.body.len(),
                limit: self.cfg.max_body_size,
            });
        }
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        record::encoded_len(msg)
    }

    /// Writes one record at the end of the log; the caller holds the append lock.
    fn write_one(&self, w: &mut Writer, msg: &NewMessage, len: usize) -> Result<AppendResult> {
        if let Some(e) = self.stopped_error() {
            return Err(e);
        }
        let (seg, pos) = self.log.reserve(len)?;
        let queues = match w.next.get_mut(msg.topic.as_str()) {
            Some(q) => q,
            None => w.next.entry(msg.topic.clone()).or_default(),
        };
        let next = queues.entry(msg.queue_id).or_insert(0);
        let queue_offset = *next;
        let store_ts = now_ms();
        // Encoded straight into the mapping: the range is ours until `publish`.
        let out = seg.file.slice_mut((pos - seg.base) as usize, len);
        record::encode(msg, self.cfg.store_host, out)?;
        record::seal(out, queue_offset, pos, store_ts);
        self.log.publish(pos + len as u64);
        *next += 1;
        Ok(AppendResult {
            phys_offset: pos,
            queue_offset,
            size: len as u32,
            store_timestamp_ms: store_ts,
        })
    }

    /// Counts the written records, wakes the dispatcher and, in sync mode, waits until
    /// everything below `end` is on disk.
    fn after_write(&self, count: u64, bytes: u64, end: u64) -> Result<()> {
        self.appends.fetch_add(count, Ordering::Relaxed);
        self.append_bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.dispatcher_idle.load(Ordering::SeqCst) {
            let _g = lock(&self.dispatch_mx);
            self.dispatch_cv.notify_one();
        }
        if self.cfg.flush == FlushMode::Sync {
            self.wait_flushed(end)?;
        }
        Ok(())
    }

    /// Appends several messages under one lock and, in sync mode, one wait for the flush.
    /// Each message gets its own result, as a RocketMQ send of a batch reports per entry.
    fn append_batch(&self, msgs: &[NewMessage]) -> Vec<Result<AppendResult>> {
        let admitted: Vec<Result<usize>> = msgs.iter().map(|m| self.admit(m)).collect();
        let (mut count, mut bytes, mut end) = (0u64, 0u64, 0u64);
        let mut results: Vec<Result<AppendResult>> = {
            let mut w = lock(&self.writer);
            msgs.iter()
                .zip(admitted)
                .map(|(msg, len)| {
                    let r = len.and_then(|len| self.write_one(&mut w, msg, len));
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
        lock(&self.flush_list).push(FlushWaiter {
            end,
            thread: std::thread::current(),
        });
        if self.flusher_idle.load(Ordering::SeqCst) {
            let _g = lock(&self.flush_mx);
            self.flush_cv.notify_one();
        }
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

    /// Unparks the waiters a flush has covered (all of them once the store stopped).
    fn release_waiters(&self) {
        let flushed = self.log.flushed_pos();
        let stopped = self.stopped_flag.load(Ordering::Acquire);
        let mut list = lock(&self.flush_list);
        list.retain(|w| {
            if stopped || w.end <= flushed {
                w.thread.unpark();
                false
            } else {
                true
            }
        });
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
            let target = self.log.write_pos();
            let _ = self.flush_log(target);
            self.release_waiters();
        }
    }

    fn run_dispatcher(self: Arc<Self>) {
        loop {
            // Checked first so a dispatcher stuck retrying (a full disk) still lets close()
            // finish; close() dispatches what is left itself.
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let target = self.log.write_pos();
            if self.dispatched.load(Ordering::Acquire) < target {
                if let Err(e) = self.dispatch_until(target) {
                    error!(error = %e, "dispatch failed; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            let g = lock(&self.dispatch_mx);
            self.dispatcher_idle.store(true, Ordering::SeqCst);
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            if self.log.write_pos() > self.dispatched.load(Ordering::Acquire) {
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

    /// Writes consume queue and index entries for every record in `dispatched..end`.
    fn dispatch_until(&self, end: u64) -> Result<()> {
        let from = self.dispatched.load(Ordering::Acquire);
        if from >= end {
            return Ok(());
        }
        let listeners: Vec<DispatchListener> = self
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut done = from;
        let r = self.log.for_each_raw(from, end, |pos, rec| {
            self.dispatch_one(pos, rec, &listeners)?;
            done = pos + rec.len() as u64;
            Ok(())
        });
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
        Ok(())
    }

    fn dispatch_one(&self, pos: u64, rec: &[u8], listeners: &[DispatchListener]) -> Result<()> {
        let h = record::header(rec)?;
        let topic = record::topic_of(rec)?;
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
                tx_kind: h.tx_kind,
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
        let Some(cq) = self.cq(topic, queue_id) else {
            return Ok(ReadResult {
                next_offset: offset.min(0),
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
        let scan_limit = max.saturating_mul(16).clamp(64, 4096) as u64;
        let stop = max_off.min(o.saturating_add(scan_limit));
        while o < stop && out.messages.len() < max {
            let Some(e) = cq.get(o)? else { break };
            if let Some(f) = filter {
                if !f.hash_may_match(e.tag_hash) {
                    o += 1;
                    continue;
                }
            }
            match self.log.read(e.phys_offset) {
                Ok(m) => {
                    if m.topic != topic || m.queue_id != queue_id || m.queue_offset != o {
                        self.corrupt_seen.fetch_add(1, Ordering::Relaxed);
                        error!(
                            topic,
                            queue_id,
                            queue_offset = o,
                            phys = e.phys_offset,
                            "consume queue entry points at another record; skipped"
                        );
                        out.corrupt.push(e.phys_offset);
                    } else if filter.is_none_or(|f| f.matches_message(&m)) {
                        out.messages.push(m);
                    }
                }
                Err(StoreError::OffsetOutOfRange { .. }) => {
                    // Deleted by retention under our feet: move on.
                }
                Err(err @ StoreError::Corrupt { .. }) => {
                    self.corrupt_seen.fetch_add(1, Ordering::Relaxed);
                    error!(topic, queue_id, queue_offset = o, phys = e.phys_offset, error = %err, "corrupt record skipped, not served");
                    out.corrupt.push(e.phys_offset);
                }
                Err(err) => return Err(err),
            }
            o += 1;
        }
        out.next_offset = o.max(offset.min(max_off));
        Ok(out)
    }

    fn lookup(
        &self,
        topic: &str,
        key: &str,
        begin: i64,
        end: i64,
        max: usize,
        confirm: impl Fn(&StoredMessage) -> bool,
    ) -> Vec<StoredMessage> {
        let mut out = Vec::new();
        for phys in self.index.lookup(topic, key, begin, end, max) {
            if out.len() >= max {
                break;
            }
            if let Ok(m) = self.log.read(phys) {
                if m.topic == topic && confirm(&m) {
                    out.push(m);
                }
            }
        }
        out
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
        let path = std::ffi::CString::new(self.cfg.data_dir.as_os_str().as_encoded_bytes())
            .unwrap_or_default();
        // SAFETY: statvfs fills a plain struct for a NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
            return;
        }
        // As `df` counts it: blocks in use over blocks usable by us (used + available), so
        // blocks reserved for root or unusable by the filesystem do not count as "full".
        let in_use = st.f_blocks.saturating_sub(st.f_bfree) as f64;
        let usable = in_use + st.f_bavail as f64;
        if usable <= 0.0 {
            return;
        }
        let used = in_use / usable;
        let mut full = lock(&self.disk_full);
        if used >= self.cfg.disk_high_water {
            if full.is_none() {
                warn!(
                    used = format!("{:.1}%", used * 100.0),
                    "disk above the high-water mark; refusing appends"
                );
            }
            *full = Some(format!(
                "{} is {:.1}% full, above the high-water mark of {:.0}%",
                self.cfg.data_dir.display(),
                used * 100.0,
                self.cfg.disk_high_water * 100.0
            ));
            self.disk_full_flag.store(true, Ordering::Release);
        } else if full.take().is_some() {
            info!("disk below the high-water mark again; accepting appends");
            self.disk_full_flag.store(false, Ordering::Release);
        }
    }

    fn apply_retention(&self) -> Result<u64> {
        let now = SystemTime::now();
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
        Ok(min)
    }

    /// Keeps the pages just ahead of the write position faulted in, so appends copy into
    /// ready memory. Pauses on errors (an old kernel without MADV_POPULATE_WRITE) for good.
    fn run_prefaulter(self: Arc<Self>) {
        let window = self.cfg.prefault_window;
        let mut done = self.log.write_pos();
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let write = self.log.write_pos();
            done = done.max(write);
            if done < write + window / 2 || done == write {
                match self.log.prefault(done, write + window) {
                    Ok(next) => {
                        if next == done {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        done = next;
                    }
                    Err(e) => {
                        info!(error = %e, "page prefaulting not available; appends fault pages themselves");
                        return;
                    }
                }
            } else {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    fn run_housekeeping(self: Arc<Self>) {
        let mut last_clean = Instant::now();
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
            if let Err(e) = self.log.prepare_spare() {
                warn!(error = %e, "could not allocate the next segment ahead of time");
            }
            if let Err(e) = self.write_checkpoint() {
                warn!(error = %e, "checkpoint not written");
            }
            if let Err(e) = self.offsets.persist() {
                warn!(error = %e, "consumer offsets not persisted");
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
