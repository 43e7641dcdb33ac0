//! Small metadata kept beside the log: topics and consumer offsets.
//!
//! Both live in one append-only metadata log (`config/metadata.log`, see
//! [`crate::metadata_log`] for the layout, recovery and compaction): a topic create or an
//! offset commit appends one small checksummed frame and fsyncs it, so its cost does not grow
//! with the number of topics or groups. A log that is damaged anywhere but its tail stops the
//! store at open with its path: we do not guess at metadata.
//!
//! ## Deleting a topic
//! Deleting a topic fences it rather than erasing its records from the shared commit log
//! (they age out with retention like any other). The fence is the commit log's end at the
//! moment of the delete, taken with appends stopped: records of that topic name below it
//! belong to the deleted incarnation and are never served again. One metadata frame records
//! the delete with its fence and drops every consumer offset on the topic, so a crash never
//! separates the two. The store then removes the topic's consume queues; one left behind by
//! a crash is recognised at the next open (its entries point below the fence) and removed,
//! and re-dispatch after a crash skips fenced records. A topic created again under the name
//! gets a fresh fence (nothing appended to the name while it did not exist is served either)
//! and starts with empty queues at offset 0: new groups do not see the old messages and old
//! groups do not continue from their old offsets. [`TopicStore::incarnation`] gives the fence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::disk::LogLimiter;
use crate::error::{Result, StoreError};
use crate::metadata_log::{LogFile, Op};

/// RocketMQ 5 message types a topic accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    #[default]
    Normal,
    Fifo,
    Delay,
    Transaction,
    Priority,
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            MessageType::Normal => "normal",
            MessageType::Fifo => "fifo",
            MessageType::Delay => "delay",
            MessageType::Transaction => "transaction",
            MessageType::Priority => "priority",
        };
        f.write_str(s)
    }
}

impl std::str::FromStr for MessageType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "normal" => MessageType::Normal,
            "fifo" => MessageType::Fifo,
            "delay" => MessageType::Delay,
            "transaction" => MessageType::Transaction,
            "priority" => MessageType::Priority,
            other => {
                return Err(format!(
                    "unknown message type {other:?} (normal, fifo, delay, transaction, priority)"
                ))
            }
        })
    }
}

/// What clients may do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    #[default]
    ReadWrite,
    Read,
    Write,
    None,
}

impl Permission {
    pub fn readable(self) -> bool {
        matches!(self, Permission::ReadWrite | Permission::Read)
    }
    pub fn writable(self) -> bool {
        matches!(self, Permission::ReadWrite | Permission::Write)
    }
}

/// A topic's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TopicConfig {
    pub name: String,
    pub queues: u32,
    pub message_type: MessageType,
    pub permission: Permission,
    /// How long this topic's messages are served, in milliseconds (`None`: as long as the
    /// node keeps them). The commit log is shared by every topic, so this cannot delete a
    /// topic's records: messages older than it are no longer served and their consume queue
    /// entries expire (see [`crate::Store`]'s retention), while their bytes go when the segment
    /// holding them is deleted under the node's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
}

impl TopicConfig {
    /// A topic of `queues` queues with the default type, permission and retention.
    pub fn new(name: impl Into<String>, queues: u32) -> TopicConfig {
        TopicConfig {
            name: name.into(),
            queues,
            message_type: MessageType::Normal,
            permission: Permission::ReadWrite,
            retention_ms: None,
        }
    }
}

/// Longest per-topic retention the store accepts (about 292 million years: what keeps the
/// cut-off time, in milliseconds since the epoch, inside an `i64`).
pub const MAX_RETENTION_MS: u64 = i64::MAX as u64;

/// Largest queue count a topic may have.
pub const MAX_QUEUES: u32 = 1024;

/// Checks a topic or group name against RocketMQ's rules: letters, digits, `%`, `-`, `_`,
/// `|`, 1 to 127 characters.
pub fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > crate::record::MAX_TOPIC_LEN {
        return Err(StoreError::InvalidField {
            field: kind,
            reason: format!("{name:?} must be 1 to 127 characters"),
        });
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '-' | '_' | '|')))
    {
        return Err(StoreError::InvalidField {
            field: kind,
            reason: format!("{name:?} contains {c:?}; allowed are letters, digits, %, -, _ and |"),
        });
    }
    Ok(())
}

/// Key of a consumer offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
}

/// Called by [`TopicStore`] to delete or re-create a topic while the commit log stands still:
/// `persist` receives the fence (the commit log's end), writes the metadata change and says
/// whether it fenced the topic; only then does the implementation (the store) drop the
/// topic's consume queues. See the module docs.
pub(crate) trait Fencer: Send + Sync {
    /// `at` is the fence another replica of the log chose (the same offset is the same place in
    /// every replica); `None` lets the store choose its log's end.
    fn fence(
        &self,
        topic: &str,
        at: Option<u64>,
        persist: &mut dyn FnMut(u64) -> Result<bool>,
    ) -> Result<()>;
}

/// The metadata as it is now: what replaying the log gives, plus offset changes not yet
/// written.
#[derive(Debug, Default)]
struct State {
    topics: BTreeMap<String, TopicConfig>,
    /// The retention of every topic that has its own (kept apart so readers find it quickly).
    retentions: BTreeMap<String, u64>,
    fences: BTreeMap<String, u64>,
    offsets: BTreeMap<OffsetKey, u64>,
    /// Offsets set since the last persist (every one of them after every pending removal
    /// that matches it, so removals are written first).
    pending_sets: BTreeMap<OffsetKey, u64>,
    pending_removals: Vec<(String, Option<String>)>,
}

impl State {
    fn drop_topic_offsets(&mut self, name: &str) {
        self.offsets.retain(|k, _| k.topic != name);
        self.pending_sets.retain(|k, _| k.topic != name);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::TopicPut(t) => {
                match t.retention_ms {
                    Some(ms) => self.retentions.insert(t.name.clone(), ms),
                    None => self.retentions.remove(&t.name),
                };
                self.topics.insert(t.name.clone(), t.clone());
            }
            Op::TopicDelete { name, fence } => {
                self.topics.remove(name);
                self.retentions.remove(name);
                self.fences.insert(name.clone(), *fence);
                self.drop_topic_offsets(name);
            }
            Op::TopicFence { name, fence } => {
                self.fences.insert(name.clone(), *fence);
                self.drop_topic_offsets(name);
            }
            Op::OffsetSet { key, offset } => {
                self.offsets.insert(key.clone(), *offset);
            }
            Op::OffsetRemove { group, topic } => {
                let gone = |k: &OffsetKey| {
                    k.group == *group && topic.as_ref().is_none_or(|t| k.topic == *t)
                };
                self.offsets.retain(|k, _| !gone(k));
            }
        }
    }

    /// The whole state as operations, in an order that replays to it.
    fn snapshot(&self) -> Vec<Op> {
        let fences = self.fences.iter().map(|(name, fence)| Op::TopicFence {
            name: name.clone(),
            fence: *fence,
        });
        let topics = self.topics.values().cloned().map(Op::TopicPut);
        let offsets = self.offsets.iter().map(|(key, offset)| Op::OffsetSet {
            key: key.clone(),
            offset: *offset,
        });
        fences.chain(topics).chain(offsets).collect()
    }
}

#[derive(Debug)]
struct Writer {
    log: LogFile,
    /// After a failed compaction, the next try waits until the log reaches this length.
    retry_compaction_at: u64,
}

/// Counters of the metadata log, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataStats {
    /// Bytes appended to the log since open (compactions not included).
    pub bytes_appended: u64,
    /// Frames appended since open.
    pub frames_appended: u64,
    /// Snapshots written since open (including a migration).
    pub compactions: u64,
    /// Bytes of the log now.
    pub log_bytes: u64,
}

/// Topics and offsets over one metadata log. Lock order: `writer`, then `state`; `state` is
/// never held across I/O, so lookups never wait for a disk.
#[derive(Debug)]
struct Meta {
    dir: PathBuf,
    compact_bytes: u64,
    writer: Mutex<Writer>,
    state: Mutex<State>,
    bytes_appended: AtomicU64,
    frames_appended: AtomicU64,
    compactions: AtomicU64,
    log_bytes: AtomicU64,
    compaction_log: LogLimiter,
    /// Whether any topic has a retention of its own (readers skip the state lock when none
    /// does).
    any_retention: AtomicBool,
    /// Whether every offset write waits for its fdatasync (`--flush sync`). Otherwise offset
    /// writes reach the page cache before [`OffsetStore::persist`] returns (they survive the
    /// process being killed) and the housekeeping thread syncs them within an interval, as the
    /// commit log is synced in async mode. Topic changes always wait for the disk.
    sync_offsets: bool,
    /// Tickets handed to callers of [`OffsetStore::try_persist`] ([`OffsetStore::ticket`]).
    tickets: AtomicU64,
    /// Every ticket up to this one is written: each offset write covers the tickets handed out
    /// before it took the pending changes.
    covered: AtomicU64,
    /// Whether a caller was told to compact on a thread that may block ([`TryPersist::Block`])
    /// and has not finished: the others then poll instead of queueing behind it on threads.
    compaction_claimed: AtomicBool,
}

/// What [`OffsetStore::try_persist`] did with a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryPersist {
    /// Every offset set before the ticket was taken is written (to the page cache), by this
    /// call or by another writer.
    Written,
    /// Another writer holds the log and may be writing them: try again shortly with the same
    /// ticket (nothing is lost by waiting; the writer holding the log does not block for long
    /// unless it compacts, which one caller at a time is sent to do).
    Busy,
    /// Writing means waiting for the disk (every offset write synced, or a compaction this
    /// caller is to do): call [`OffsetStore::persist`] on a thread that may block.
    Block,
}

/// Clears [`Meta::compaction_claimed`] when a persist that may block ends, however it ends.
struct ClaimReset<'a>(&'a AtomicBool);

impl Drop for ClaimReset<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn load_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            StoreError::malformed(
                "metadata",
                format!("{} does not parse: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e)),
    }
}

/// The offsets file written before the metadata log.
#[derive(Deserialize, Default)]
struct OffsetFile {
    offsets: Vec<(OffsetKey, u64)>,
}

const TOPICS_JSON: &str = "topics.json";
const OFFSETS_JSON: &str = "offsets.json";

impl Meta {
    fn open(dir: &Path, compact_bytes: u64, sync_offsets: bool) -> Result<Meta> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let mut state = State::default();
        let mut compactions = 0;
        let log = match LogFile::open(dir)? {
            Some((log, frames)) => {
                for op in frames.iter().flatten() {
                    state.apply(op);
                }
                log
            }
            None => {
                // First open, or a directory written before the log: migrate the JSON files.
                let topics: BTreeMap<String, TopicConfig> = load_json(&dir.join(TOPICS_JSON))?;
                let offsets: OffsetFile = load_json(&dir.join(OFFSETS_JSON))?;
                state.topics = topics;
                state.offsets = offsets.offsets.into_iter().collect();
                let log = LogFile::create(dir, &state.snapshot())?;
                compactions = 1;
                if !state.topics.is_empty() || !state.offsets.is_empty() {
                    info!(
                        topics = state.topics.len(),
                        offsets = state.offsets.len(),
                        "metadata migrated from JSON files to the metadata log"
                    );
                }
                log
            }
        };
        // JSON files next to a log were migrated (perhaps by a run that crashed before this
        // step): keep them for inspection under a name nothing reads.
        for name in [TOPICS_JSON, OFFSETS_JSON] {
            let p = dir.join(name);
            if p.exists() {
                let to = dir.join(format!("{name}.migrated"));
                std::fs::rename(&p, &to)
                    .map_err(|e| StoreError::io(format!("rename {}", p.display()), e))?;
            }
        }
        let log_bytes = log.len();
        let any_retention = AtomicBool::new(!state.retentions.is_empty());
        Ok(Meta {
            dir: dir.to_path_buf(),
            compact_bytes,
            writer: Mutex::new(Writer {
                log,
                retry_compaction_at: 0,
            }),
            state: Mutex::new(state),
            bytes_appended: AtomicU64::new(0),
            frames_appended: AtomicU64::new(0),
            compactions: AtomicU64::new(compactions),
            log_bytes: AtomicU64::new(log_bytes),
            compaction_log: LogLimiter::default(),
            any_retention,
            sync_offsets,
            tickets: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            compaction_claimed: AtomicBool::new(false),
        })
    }

    /// Appends `ops` as one frame (on disk when `sync`, else in the page cache), then
    /// (`apply`) applies them, then compacts if it is time.
    fn write(&self, w: &mut Writer, ops: &[Op], apply: bool, sync: bool) -> Result<()> {
        self.write_frame(w, ops, apply, sync)?;
        self.maybe_compact(w);
        self.log_bytes.store(w.log.len(), Ordering::Relaxed);
        Ok(())
    }

    /// [`Meta::write`] without the compaction that may follow it.
    fn write_frame(&self, w: &mut Writer, ops: &[Op], apply: bool, sync: bool) -> Result<()> {
        let n = if sync {
            w.log.append(ops)?
        } else {
            w.log.append_unsynced(ops)?
        };
        self.bytes_appended.fetch_add(n, Ordering::Relaxed);
        self.frames_appended.fetch_add(1, Ordering::Relaxed);
        if apply {
            let mut st = lock(&self.state);
            for op in ops {
                st.apply(op);
            }
            self.any_retention
                .store(!st.retentions.is_empty(), Ordering::Release);
        }
        self.log_bytes.store(w.log.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Rewrites the log as a snapshot once it has grown enough. Pending offset changes stay
    /// pending: the snapshot holds their values already, and writing them again after it is
    /// harmless (removals before sets, see [`State`]).
    fn maybe_compact(&self, w: &mut Writer) {
        if !self.compaction_due(w) {
            return;
        }
        let ops = lock(&self.state).snapshot();
        match w.log.rewrite(&ops) {
            Ok(()) => {
                self.compactions.fetch_add(1, Ordering::Relaxed);
                w.retry_compaction_at = 0;
            }
            Err(e) => {
                w.retry_compaction_at = w.log.len() + self.compact_bytes / 4;
                if let Some(suppressed) = self.compaction_log.check() {
                    warn!(dir = %self.dir.display(), error = %e, suppressed, "metadata log not compacted; appending to it meanwhile");
                }
            }
        }
    }

    /// Whether the log has grown enough to be rewritten (and is past a failed attempt's wait).
    fn compaction_due(&self, w: &Writer) -> bool {
        w.log.wants_compaction(self.compact_bytes) && w.log.len() >= w.retry_compaction_at
    }

    /// Whether no offset change waits to be written.
    fn nothing_pending(&self) -> bool {
        let st = lock(&self.state);
        st.pending_sets.is_empty() && st.pending_removals.is_empty()
    }

    /// A topic change: `build` checks the current state and returns the operations to write
    /// (and the caller's answer); they are applied only once written.
    fn change<T>(&self, build: impl FnOnce(&State) -> Result<(Vec<Op>, T)>) -> Result<T> {
        let mut w = lock(&self.writer);
        let (ops, out) = build(&lock(&self.state))?;
        self.write(&mut w, &ops, true, true)?;
        Ok(out)
    }

    /// Writes pending offset changes, if any: on disk when `durable` or when every offset write
    /// is synced, else in the page cache. A durable call also syncs earlier unsynced writes.
    fn persist_offsets(&self, durable: bool) -> Result<()> {
        let _claim = ClaimReset(&self.compaction_claimed);
        let sync = durable || self.sync_offsets;
        if self.nothing_pending() {
            if durable {
                return lock(&self.writer).log.sync();
            }
            return Ok(());
        }
        let mut w = lock(&self.writer);
        self.write_pending(&mut w, sync, true)
    }

    /// Writes the pending offset changes as one frame (then compacts the log if it is due and
    /// `compact`); on failure they stay pending.
    fn write_pending(&self, w: &mut Writer, sync: bool, compact: bool) -> Result<()> {
        // Before taking the changes: a ticket handed out by now was taken after its offset was
        // set, so that offset is among them (or was written earlier).
        let upto = self.tickets.load(Ordering::SeqCst);
        let (removals, sets) = {
            let mut st = lock(&self.state);
            (
                std::mem::take(&mut st.pending_removals),
                std::mem::take(&mut st.pending_sets),
            )
        };
        let ops: Vec<Op> = removals
            .iter()
            .map(|(group, topic)| Op::OffsetRemove {
                group: group.clone(),
                topic: topic.clone(),
            })
            .chain(sets.iter().map(|(key, offset)| Op::OffsetSet {
                key: key.clone(),
                offset: *offset,
            }))
            .collect();
        let written = if compact {
            self.write(w, &ops, false, sync)
        } else {
            self.write_frame(w, &ops, false, sync)
        };
        if let Err(e) = written {
            // Put them back: removals before later ones; a set only if its key still has a
            // value no later change wrote (the map is the truth).
            let mut st = lock(&self.state);
            let later = std::mem::replace(&mut st.pending_removals, removals);
            st.pending_removals.extend(later);
            for key in sets.into_keys() {
                if let Some(v) = st.offsets.get(&key).copied() {
                    st.pending_sets.entry(key).or_insert(v);
                }
            }
            return Err(e);
        }
        self.covered.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// [`Meta::persist_offsets`] without waiting, for `ticket`: see [`OffsetStore::try_persist`].
    fn try_persist_offsets(&self, ticket: u64) -> Result<TryPersist> {
        if self.sync_offsets {
            return Ok(TryPersist::Block);
        }
        if self.covered.load(Ordering::SeqCst) >= ticket {
            return Ok(TryPersist::Written);
        }
        let mut w = match self.writer.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(TryPersist::Busy),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if self.nothing_pending() {
            // Holding the log, no write is under way: every change set before the ticket was
            // taken by a write that has ended well (a failed one puts its changes back).
            self.covered.fetch_max(ticket, Ordering::SeqCst);
            return Ok(TryPersist::Written);
        }
        if self.compaction_due(&w) {
            drop(w);
            // A rewrite and an fsync: one caller does it on a thread that may block, the
            // others wait for it by polling.
            return Ok(if self.compaction_claimed.swap(true, Ordering::SeqCst) {
                TryPersist::Busy
            } else {
                TryPersist::Block
            });
        }
        // Never compacts here; the write covers `ticket` (handed out before this call).
        self.write_pending(&mut w, false, false)?;
        Ok(TryPersist::Written)
    }

    fn stats(&self) -> MetadataStats {
        MetadataStats {
            bytes_appended: self.bytes_appended.load(Ordering::Relaxed),
            frames_appended: self.frames_appended.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
            log_bytes: self.log_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Opens the metadata in `dir` (migrating JSON files written before the metadata log) and
/// returns its two views. `compact_bytes`: see [`crate::StoreConfig::metadata_compact_bytes`].
/// `sync_offsets`: whether [`OffsetStore::persist`] waits for the disk (the store passes
/// `--flush sync`); topic changes and [`OffsetStore::commit`] always do.
pub fn open(
    dir: &Path,
    compact_bytes: u64,
    sync_offsets: bool,
) -> Result<(TopicStore, OffsetStore)> {
    let meta = Arc::new(Meta::open(dir, compact_bytes, sync_offsets)?);
    Ok((
        TopicStore {
            meta: meta.clone(),
            fencer: OnceLock::new(),
        },
        OffsetStore { meta },
    ))
}

/// The topics this store knows.
pub struct TopicStore {
    meta: Arc<Meta>,
    fencer: OnceLock<Weak<dyn Fencer>>,
}

impl std::fmt::Debug for TopicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicStore")
            .field("dir", &self.meta.dir)
            .finish()
    }
}

impl TopicStore {
    fn validate(t: &TopicConfig) -> Result<()> {
        validate_name("topic", &t.name)?;
        if t.queues == 0 || t.queues > MAX_QUEUES {
            return Err(StoreError::InvalidField {
                field: "queues",
                reason: format!("{} is not within 1..={MAX_QUEUES}", t.queues),
            });
        }
        match t.retention_ms {
            Some(0) => Err(StoreError::InvalidField {
                field: "retention",
                reason: "must be more than zero (leave it unset for the node's retention)".into(),
            }),
            Some(ms) if ms > MAX_RETENTION_MS => Err(StoreError::InvalidField {
                field: "retention",
                reason: format!("{ms} ms is longer than {MAX_RETENTION_MS} ms"),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn set_fencer(&self, f: Weak<dyn Fencer>) {
        let _ = self.fencer.set(f);
    }

    fn fencer(&self) -> Option<Arc<dyn Fencer>> {
        self.fencer.get().and_then(Weak::upgrade)
    }

    /// Runs `change` (which writes the metadata) with the fence the store chose, or with the
    /// topic's current fence when no store is attached.
    fn fenced<T>(
        &self,
        name: &str,
        at: Option<u64>,
        change: impl FnOnce(u64) -> Result<(T, bool)>,
    ) -> Result<T> {
        let mut change = Some(change);
        let mut out = None;
        let mut persist = |fence: u64| {
            let c = change
                .take()
                .ok_or_else(|| StoreError::malformed("fence", "applied twice"))?;
            let (value, fenced) = c(fence)?;
            out = Some(value);
            Ok(fenced)
        };
        match self.fencer() {
            Some(f) => f.fence(name, at, &mut persist)?,
            None => {
                persist(at.unwrap_or_else(|| self.incarnation(name)))?;
            }
        }
        out.ok_or_else(|| StoreError::malformed("fence", "not applied"))
    }

    /// Creates a topic; refuses an existing name. Durable when it returns. A name that was
    /// deleted before starts a new incarnation: nothing stored under it before is served.
    pub fn create(&self, t: TopicConfig) -> Result<TopicConfig> {
        Self::validate(&t)?;
        self.put(t, false, None)
    }

    fn put(&self, t: TopicConfig, replace: bool, at: Option<u64>) -> Result<TopicConfig> {
        let build = |fence: Option<u64>| {
            let t = t.clone();
            move |st: &State| {
                let exists = st.topics.contains_key(&t.name);
                if exists && !replace {
                    return Err(StoreError::TopicExists(t.name.clone()));
                }
                let mut ops = Vec::new();
                // Only a topic that does not exist now starts a new incarnation.
                let fence = fence.filter(|_| !exists);
                if let Some(fence) = fence {
                    ops.push(Op::TopicFence {
                        name: t.name.clone(),
                        fence,
                    });
                }
                ops.push(Op::TopicPut(t.clone()));
                Ok((ops, (t, fence.is_some())))
            }
        };
        let was_deleted = lock(&self.meta.state).fences.contains_key(&t.name);
        if was_deleted {
            self.fenced(&t.name.clone(), at, |fence| {
                self.meta.change(build(Some(fence)))
            })
        } else {
            self.meta.change(build(None)).map(|(t, _)| t)
        }
    }

    /// Creates or replaces a topic. Durable when it returns.
    pub fn upsert(&self, t: TopicConfig) -> Result<TopicConfig> {
        Self::validate(&t)?;
        self.put(t, true, None)
    }

    /// [`TopicStore::upsert`] on a replica: a re-created name's incarnation starts at `fence`,
    /// the offset the leader chose.
    pub fn upsert_at(&self, t: TopicConfig, fence: u64) -> Result<TopicConfig> {
        Self::validate(&t)?;
        self.put(t, true, Some(fence))
    }

    /// Updates an existing topic. Durable when it returns.
    pub fn update(&self, t: TopicConfig) -> Result<TopicConfig> {
        Self::validate(&t)?;
        self.meta.change(|st| {
            if !st.topics.contains_key(&t.name) {
                return Err(StoreError::UnknownTopic(t.name.clone()));
            }
            Ok((vec![Op::TopicPut(t.clone())], t))
        })
    }

    /// Deletes a topic, its consumer offsets and (through the store) its messages: a topic of
    /// the same name created later starts empty. Durable when it returns.
    pub fn delete(&self, name: &str) -> Result<TopicConfig> {
        self.delete_fenced(name, None)
    }

    /// [`TopicStore::delete`] on a replica, fenced at the offset the leader chose.
    pub fn delete_at(&self, name: &str, fence: u64) -> Result<TopicConfig> {
        self.delete_fenced(name, Some(fence))
    }

    fn delete_fenced(&self, name: &str, at: Option<u64>) -> Result<TopicConfig> {
        self.fenced(name, at, |fence| {
            self.meta.change(|st| {
                let t = st
                    .topics
                    .get(name)
                    .cloned()
                    .ok_or_else(|| StoreError::UnknownTopic(name.to_string()))?;
                let op = Op::TopicDelete {
                    name: name.to_string(),
                    fence,
                };
                Ok((vec![op], (t, true)))
            })
        })
    }

    /// Records that nothing below commit log offset `fence` belongs to `name` any more, without
    /// changing the topic (the store lowers fences past the end of a log cut by a crash).
    pub(crate) fn set_fence(&self, name: &str, fence: u64) -> Result<()> {
        self.meta.change(|_| {
            let op = Op::TopicFence {
                name: name.to_string(),
                fence,
            };
            Ok((vec![op], ()))
        })
    }

    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        lock(&self.meta.state).topics.get(name).cloned()
    }

    pub fn list(&self) -> Vec<TopicConfig> {
        lock(&self.meta.state).topics.values().cloned().collect()
    }

    /// The retention of `name` in milliseconds, when the topic has its own (see
    /// [`TopicConfig::retention_ms`]).
    pub fn retention_of(&self, name: &str) -> Option<u64> {
        if !self.meta.any_retention.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.meta.state).retentions.get(name).copied()
    }

    /// Every topic with a retention of its own, with it in milliseconds.
    pub fn retentions(&self) -> BTreeMap<String, u64> {
        if !self.meta.any_retention.load(Ordering::Acquire) {
            return BTreeMap::new();
        }
        lock(&self.meta.state).retentions.clone()
    }

    /// The incarnation of a topic name: 0 if it was never deleted, otherwise the commit log
    /// offset where its current incarnation starts (records of the name below it are never
    /// served).
    pub fn incarnation(&self, name: &str) -> u64 {
        lock(&self.meta.state)
            .fences
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Every fenced name with its fence.
    pub fn fences(&self) -> BTreeMap<String, u64> {
        lock(&self.meta.state).fences.clone()
    }

    /// Counters of the metadata log (shared with the offsets).
    pub fn metadata_stats(&self) -> MetadataStats {
        self.meta.stats()
    }
}

/// Consumer offsets: the next queue offset each group will consume.
#[derive(Debug)]
pub struct OffsetStore {
    meta: Arc<Meta>,
}

impl OffsetStore {
    /// Sets an offset in memory; the background flusher persists it within a second, and a
    /// clean shutdown always does. Use [`OffsetStore::commit`] when the caller needs it durable.
    pub fn set(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let mut st = lock(&self.meta.state);
        let key = OffsetKey {
            group: group.into(),
            topic: topic.into(),
            queue_id,
        };
        if st.offsets.get(&key) != Some(&offset) {
            st.offsets.insert(key.clone(), offset);
            st.pending_sets.insert(key, offset);
        }
    }

    /// Sets an offset and returns once it is on disk: one small frame in the metadata log.
    pub fn commit(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Result<()> {
        self.set(group, topic, queue_id, offset);
        self.persist_durable()
    }

    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        lock(&self.meta.state)
            .offsets
            .get(&OffsetKey {
                group: group.into(),
                topic: topic.into(),
                queue_id,
            })
            .copied()
    }

    /// All offsets, for admin views.
    pub fn all(&self) -> Vec<(OffsetKey, u64)> {
        lock(&self.meta.state)
            .offsets
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Removes every offset of a group (or of a group on one topic).
    pub fn remove_group(&self, group: &str, topic: Option<&str>) {
        let mut st = lock(&self.meta.state);
        let gone = |k: &OffsetKey| k.group == group && topic.is_none_or(|t| k.topic == t);
        let before = st.offsets.len();
        st.offsets.retain(|k, _| !gone(k));
        st.pending_sets.retain(|k, _| !gone(k));
        if st.offsets.len() != before {
            st.pending_removals
                .push((group.to_string(), topic.map(str::to_string)));
        }
    }

    /// Writes the offsets changed since the last write, if any (one frame, O(changes) bytes),
    /// as durably as the store's flush mode: on disk with `--flush sync`; in the page cache
    /// otherwise (a killed process keeps them; the housekeeping thread syncs them within its
    /// interval, so a power loss can only take back that interval's acks, which are then
    /// delivered again: at least once, as for the messages of that interval).
    pub fn persist(&self) -> Result<()> {
        self.meta.persist_offsets(false)
    }

    /// A ticket for [`OffsetStore::try_persist`], taken after the offsets it is to persist were
    /// set.
    pub fn ticket(&self) -> u64 {
        self.meta.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// [`OffsetStore::persist`] for a caller that must not block (an async worker), for the
    /// offsets set before `ticket` was taken: [`TryPersist::Written`] once they are in the page
    /// cache, whoever wrote them; [`TryPersist::Busy`] while another writer holds the log (try
    /// again: that writer, or the next try, writes them); [`TryPersist::Block`] when writing
    /// means waiting (`--flush sync`, or a compaction due that this caller is to do). Why
    /// tickets: a burst of acks used to send every ack that found the log busy to a thread of
    /// its own, each waiting for the lock to write what the first had mostly written already.
    pub fn try_persist(&self, ticket: u64) -> Result<TryPersist> {
        self.meta.try_persist_offsets(ticket)
    }

    /// Writes the offsets changed since the last write and returns once they, and every
    /// earlier offset write, are on disk.
    pub fn persist_durable(&self) -> Result<()> {
        self.meta.persist_offsets(true)
    }

    /// Counters of the metadata log (shared with the topics).
    pub fn metadata_stats(&self) -> MetadataStats {
        self.meta.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicConfig {
        TopicConfig {
            name: name.into(),
            queues: 8,
            message_type: MessageType::Fifo,
            permission: Permission::ReadWrite,
            retention_ms: None,
        }
    }

    #[test]
    fn topics_survive_reopen_and_refuse_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let (ts, _) = open(dir.path(), 1 << 20, true).unwrap();
        let t = topic("orders");
        ts.create(t.clone()).unwrap();
        assert!(matches!(
            ts.create(t.clone()),
            Err(StoreError::TopicExists(_))
        ));
        assert!(matches!(
            ts.create(TopicConfig {
                name: "bad name".into(),
                ..t.clone()
            }),
            Err(StoreError::InvalidField { field: "topic", .. })
        ));
        assert!(matches!(
            ts.create(TopicConfig {
                name: "z".into(),
                queues: 0,
                ..t.clone()
            }),
            Err(StoreError::InvalidField {
                field: "queues",
                ..
            })
        ));
        drop(ts);
        let (ts, _) = open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(ts.get("orders"), Some(t));
        assert_eq!(ts.list().len(), 1);
        ts.delete("orders").unwrap();
        assert!(open(dir.path(), 1 << 20, true)
            .unwrap()
            .0
            .get("orders")
            .is_none());
    }

    #[test]
    fn a_topic_retention_is_kept_refused_when_zero_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let (ts, _) = open(dir.path(), 1 << 20, true).unwrap();
        ts.create(topic("plain")).unwrap();
        assert!(ts.retentions().is_empty());
        assert_eq!(ts.retention_of("plain"), None);
        let short = TopicConfig {
            retention_ms: Some(60_000),
            ..topic("short")
        };
        ts.create(short.clone()).unwrap();
        assert!(matches!(
            ts.update(TopicConfig {
                retention_ms: Some(0),
                ..short.clone()
            }),
            Err(StoreError::InvalidField {
                field: "retention",
                ..
            })
        ));
        assert_eq!(
            ts.get("short"),
            Some(short.clone()),
            "a refused update changes nothing"
        );
        drop(ts);
        let (ts, _) = open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(ts.get("short"), Some(short.clone()));
        assert_eq!(ts.retention_of("short"), Some(60_000));
        assert_eq!(ts.retention_of("plain"), None);
        // Back to the node's retention, and that survives a reopen too.
        ts.update(TopicConfig {
            retention_ms: None,
            ..short.clone()
        })
        .unwrap();
        assert_eq!(ts.retention_of("short"), None);
        ts.update(TopicConfig {
            retention_ms: Some(1_000),
            ..short.clone()
        })
        .unwrap();
        ts.delete("short").unwrap();
        assert!(
            ts.retentions().is_empty(),
            "a deleted topic keeps no retention"
        );
        drop(ts);
        let (ts, _) = open(dir.path(), 1 << 20, true).unwrap();
        assert!(ts.retentions().is_empty());
        assert!(ts.get("short").is_none());
    }

    #[test]
    fn committed_offsets_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (_, os) = open(dir.path(), 1 << 20, true).unwrap();
        os.commit("g", "t", 1, 42).unwrap();
        os.set("g", "t", 2, 7);
        os.persist().unwrap();
        let (_, os) = open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(os.get("g", "t", 1), Some(42));
        assert_eq!(os.get("g", "t", 2), Some(7));
        assert_eq!(os.get("g", "t", 3), None);
    }

    #[test]
    fn offsets_written_without_a_sync_are_read_back_and_a_durable_persist_syncs_them() {
        let dir = tempfile::tempdir().unwrap();
        let (_, os) = open(dir.path(), 1 << 20, false).unwrap();
        os.set("g", "t", 0, 5);
        os.persist().unwrap();
        assert!(lock(&os.meta.writer).log.has_unsynced());
        // Nothing pending: a durable persist still syncs what the last write left in the cache.
        os.persist_durable().unwrap();
        assert!(!lock(&os.meta.writer).log.has_unsynced());
        os.set("g", "t", 0, 9);
        os.persist().unwrap();
        // A process killed now leaves the frame in the page cache: the next open reads it.
        let (_, os) = open(dir.path(), 1 << 20, false).unwrap();
        assert_eq!(os.get("g", "t", 0), Some(9));
        // A commit is durable whatever the mode.
        os.commit("g", "t", 0, 11).unwrap();
        assert!(!lock(&os.meta.writer).log.has_unsynced());
    }

    #[test]
    fn a_persist_that_must_not_wait_writes_only_when_nothing_waits_and_never_compacts() {
        let dir = tempfile::tempdir().unwrap();
        // Offsets synced on every write (`--flush sync`): never without waiting.
        let (_, os) = open(dir.path(), 1 << 20, true).unwrap();
        os.set("g", "t", 0, 5);
        assert_eq!(os.try_persist(os.ticket()).unwrap(), TryPersist::Block);
        drop(os);
        let dir = tempfile::tempdir().unwrap();
        let (_, os) = open(dir.path(), 4096, false).unwrap();
        os.set("g", "t", 0, 5);
        let t = os.ticket();
        {
            let _busy = lock(&os.meta.writer);
            assert_eq!(
                os.try_persist(t).unwrap(),
                TryPersist::Busy,
                "the log is held by another writer"
            );
        }
        assert_eq!(os.try_persist(t).unwrap(), TryPersist::Written);
        let frames = os.metadata_stats().frames_appended;
        assert_eq!(os.try_persist(t).unwrap(), TryPersist::Written);
        assert_eq!(os.try_persist(os.ticket()).unwrap(), TryPersist::Written);
        assert_eq!(
            os.metadata_stats().frames_appended,
            frames,
            "nothing pending: nothing written again"
        );
        // Past the compaction size it writes without compacting, then sends one caller to
        // `persist`, which compacts; the others are told to wait for it meanwhile.
        let mut refused = 0;
        let before = os.metadata_stats().compactions;
        for i in 0..2000u64 {
            os.set(&format!("g{}", i % 10), "t", (i % 3) as u32, i);
            match os.try_persist(os.ticket()).unwrap() {
                TryPersist::Written => {}
                TryPersist::Busy => panic!("nobody else writes or compacts"),
                TryPersist::Block => {
                    refused += 1;
                    os.set("other", "t", 0, i);
                    assert_eq!(
                        os.try_persist(os.ticket()).unwrap(),
                        TryPersist::Busy,
                        "one caller compacts, the others wait for it"
                    );
                    os.persist().unwrap();
                }
            }
        }
        let s = os.metadata_stats();
        assert!(
            refused > 0 && s.compactions - before == refused,
            "{refused} {before} {s:?}"
        );
        let all = os.all();
        drop(os);
        let (_, os) = open(dir.path(), 4096, false).unwrap();
        assert_eq!(os.all(), all, "what it wrote reads back");
    }

    #[test]
    fn a_ticket_is_written_by_whichever_writer_takes_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (_, os) = open(dir.path(), 1 << 20, false).unwrap();
        os.set("g", "t", 0, 7);
        let t = os.ticket();
        // Another writer (the flusher, another ack's persist) takes the change first.
        os.persist().unwrap();
        let frames = os.metadata_stats().frames_appended;
        assert_eq!(os.try_persist(t).unwrap(), TryPersist::Written);
        assert_eq!(
            os.metadata_stats().frames_appended,
            frames,
            "not written twice"
        );
        // A change set after a ticket was covered needs a ticket of its own.
        os.set("g", "t", 0, 8);
        let t2 = os.ticket();
        assert!(t2 > t);
        assert_eq!(os.try_persist(t2).unwrap(), TryPersist::Written);
        assert_eq!(os.metadata_stats().frames_appended, frames + 1);
        drop(os);
        let (_, os) = open(dir.path(), 1 << 20, false).unwrap();
        assert_eq!(os.get("g", "t", 0), Some(8));
    }

    #[test]
    fn an_offset_commit_writes_one_small_frame_whatever_the_number_of_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (_, os) = open(dir.path(), 64 << 20, true).unwrap();
        for g in 0..2000 {
            os.set(&format!("group-{g}"), "topic", 0, g);
        }
        os.persist().unwrap();
        let before = os.metadata_stats();
        os.commit("group-7", "topic", 0, 100).unwrap();
        let after = os.metadata_stats();
        assert_eq!(after.frames_appended - before.frames_appended, 1);
        assert!(after.bytes_appended - before.bytes_appended < 64);
    }

    #[test]
    fn deleting_a_topic_drops_its_offsets_and_fences_it() {
        let dir = tempfile::tempdir().unwrap();
        let (ts, os) = open(dir.path(), 1 << 20, true).unwrap();
        ts.create(topic("t")).unwrap();
        os.commit("g", "t", 0, 5).unwrap();
        os.commit("g", "other", 0, 6).unwrap();
        os.set("h", "t", 1, 9); // pending, never written
        ts.delete("t").unwrap();
        assert_eq!(os.get("g", "t", 0), None);
        assert_eq!(os.get("h", "t", 1), None);
        os.persist().unwrap();
        let (ts, os) = open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(os.all().len(), 1);
        assert_eq!(os.get("g", "other", 0), Some(6));
        assert!(ts.fences().contains_key("t"));
        ts.create(topic("t")).unwrap();
        assert_eq!(os.get("g", "t", 0), None);
    }

    #[test]
    fn removals_and_sets_replay_in_the_order_they_happened() {
        let dir = tempfile::tempdir().unwrap();
        let (_, os) = open(dir.path(), 1 << 20, true).unwrap();
        os.commit("g", "t", 0, 1).unwrap();
        os.set("g", "t", 0, 5);
        os.remove_group("g", None);
        os.set("g", "t", 1, 7);
        os.persist().unwrap();
        let (_, os) = open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(os.get("g", "t", 0), None);
        assert_eq!(os.get("g", "t", 1), Some(7));
    }

    #[test]
    fn compaction_keeps_the_state_and_bounds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (ts, os) = open(dir.path(), 4096, true).unwrap();
        ts.create(TopicConfig {
            retention_ms: Some(3_600_000),
            ..topic("t")
        })
        .unwrap();
        ts.create(topic("gone")).unwrap();
        ts.delete("gone").unwrap();
        for i in 0..2000u64 {
            os.commit(&format!("g{}", i % 10), "t", (i % 3) as u32, i)
                .unwrap();
        }
        let s = os.metadata_stats();
        assert!(s.compactions > 1, "{s:?}");
        assert!(s.log_bytes < 16 << 10, "{s:?}");
        let all = os.all();
        drop((ts, os));
        let (ts, os) = open(dir.path(), 4096, true).unwrap();
        assert_eq!(os.all(), all);
        assert_eq!(ts.list().len(), 1);
        assert_eq!(
            ts.retention_of("t"),
            Some(3_600_000),
            "kept by the snapshot"
        );
        assert!(ts.incarnation("gone") > 0 || ts.fences().contains_key("gone"));
    }

    #[test]
    fn json_files_from_before_the_log_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let t = topic("orders");
        let mut topics = BTreeMap::new();
        topics.insert(t.name.clone(), t.clone());
        std::fs::write(
            dir.path().join(TOPICS_JSON),
            serde_json::to_vec_pretty(&topics).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(OFFSETS_JSON),
            br#"{"offsets":[[{"group":"g","topic":"orders","queue_id":2},17]]}"#,
        )
        .unwrap();
        let (ts, os) = open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(ts.get("orders"), Some(t));
        assert_eq!(os.get("g", "orders", 2), Some(17));
        assert!(!dir.path().join(TOPICS_JSON).exists());
        assert!(dir.path().join("topics.json.migrated").exists());
        os.commit("g", "orders", 2, 18).unwrap();
        drop((ts, os));
        let (_, os) = open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(os.get("g", "orders", 2), Some(18));
    }

    #[test]
    fn damaged_metadata_is_refused_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOPICS_JSON), b"{ not json").unwrap();
        assert!(matches!(
            open(dir.path(), 1 << 20, true),
            Err(StoreError::Malformed { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let (ts, _) = open(dir.path(), 1 << 20, true).unwrap();
        ts.create(topic("a")).unwrap();
        ts.create(topic("b")).unwrap();
        ts.create(topic("c")).unwrap();
        drop(ts);
        let path = dir.path().join(crate::metadata_log::FILE_NAME);
        let mut b = std::fs::read(&path).unwrap();
        let first = crate::metadata_log::decode_frame(&b).unwrap().1;
        b[first + 14] ^= 1; // inside the second frame, with a third after it
        std::fs::write(&path, &b).unwrap();
        let e = open(dir.path(), 1 << 20, true).unwrap_err();
        assert!(e.to_string().contains("metadata.log"), "{e}");
    }
}
