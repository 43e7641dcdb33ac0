//! Durable storage of one controller: the Raft log, the vote, the state machine and its
//! snapshot, all in one `redb` database file (`<data-dir>/controller.redb`).
//!
//! Why redb and not a file of our own: every write here is small and rare (a heartbeat of a new
//! member, an election, an in-sync change), but each must survive kill -9 and power loss
//! exactly. redb gives ACID transactions whose `commit` returns only after fsync
//! (`Durability::Immediate`, its default), a copy-on-write B-tree that never exposes a torn
//! write (a crash keeps the last committed transaction whole; its pages carry checksums), and is
//! tested by its authors with crash-countdown fuzzing. An append-only file would need our own
//! CRC framing, torn-tail recovery, truncation on conflicting entries, and compaction after
//! purges: more code, for data that fits in a few kilobytes.
//!
//! Layout (tables of the one file; values are JSON of openraft's serde types):
//! - `log`: log index (u64) -> `Entry<TypeConfig>`.
//! - `meta`: `"vote"` -> `Vote`, `"last_purged"` -> `LogId`.
//! - `machine`: `"applied"` -> [`Applied`] (last applied log id, membership, the
//!   [`ControllerState`]), written in the same transaction as each applied batch;
//!   `"snapshot"` -> the last snapshot (its meta and bytes).
//!
//! Durability contract: `append` calls back only after the entries' transaction committed;
//! `save_vote` returns after commit; `apply` returns after the new state and its last applied
//! log id committed together, so after a restart the state machine is exactly the one of its
//! recorded last applied entry and openraft never applies an entry twice. All disk work runs
//! on tokio's blocking pool, never on the async workers.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use parking_lot::RwLock;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::raft::{NodeId, TypeConfig};
use crate::state::{CommandError, CommandResult, ControllerState, GroupState};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const MACHINE: TableDefinition<&str, &[u8]> = TableDefinition::new("machine");

/// The file name inside the data directory.
pub const FILE: &str = "controller.redb";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// A failure of the database or of decoding what it holds.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("controller database: {0}")]
    Db(#[from] redb::Error),
    #[error("controller database holds an undecodable record: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("controller disk task failed: {0}")]
    Task(String),
}

macro_rules! via_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for DiskError {
            fn from(e: $t) -> Self {
                DiskError::Db(e.into())
            }
        }
    )*};
}
via_redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn any(e: DiskError) -> AnyError {
    AnyError::error(e)
}

/// Runs disk work on the blocking pool.
async fn on_disk<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Result<T, DiskError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DiskError::Task(e.to_string()))?
}

/// What the state machine holds, persisted whole after every applied batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub state: ControllerState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// Opens (creating if needed) the database in `dir`.
pub fn open(dir: &Path) -> Result<Arc<Database>, DiskError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        DiskError::Task(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    // A peer restarted inside the same process (tests) may still be releasing the file for a
    // moment after its Raft tasks stopped.
    let path = dir.join(FILE);
    let mut tries = 0;
    let db = loop {
        match Database::create(&path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r?,
        }
    };
    let tx = db.begin_write()?;
    {
        tx.open_table(LOG)?;
        tx.open_table(META)?;
        tx.open_table(MACHINE)?;
    }
    tx.commit()?;
    Ok(Arc::new(db))
}

fn get_json<T: for<'de> Deserialize<'de>>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, DiskError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(table)?;
    let v = t.get(key)?;
    Ok(match v {
        Some(v) => Some(serde_json::from_slice(v.value())?),
        None => None,
    })
}

fn put_json<T: Serialize>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), DiskError> {
    let bytes = serde_json::to_vec(value)?;
    let tx = db.begin_write()?;
    {
        let mut t = tx.open_table(table)?;
        t.insert(key, bytes.as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

/// The Raft log and vote.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    fn entries(
        db: &Database,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<Entry<TypeConfig>>, DiskError> {
        let tx = db.begin_read()?;
        let t = tx.open_table(LOG)?;
        let mut out = Vec::new();
        for item in t.range::<u64>(range)? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Removes the entries whose index is in `range`.
    fn remove(
        db: &Database,
        range: (Bound<u64>, Bound<u64>),
        purged: Option<LogId<NodeId>>,
    ) -> Result<(), DiskError> {
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(LOG)?;
            let keys: Vec<u64> = t
                .range::<u64>(range)?
                .map(|item| item.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for k in keys {
                t.remove(k)?;
            }
            if let Some(p) = purged {
                let bytes = serde_json::to_vec(&p)?;
                tx.open_table(META)?
                    .insert("last_purged", bytes.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn bounds<RB: RangeBounds<u64>>(r: &RB) -> (Bound<u64>, Bound<u64>) {
    (r.start_bound().cloned(), r.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let db = self.db.clone();
        let range = bounds(&range);
        on_disk(move || LogStore::entries(&db, range))
            .await
            .map_err(|e| StorageIOError::read_logs(any(e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let db = self.db.clone();
        on_disk(move || {
            let purged: Option<LogId<NodeId>> = get_json(&db, META, "last_purged")?;
            let tx = db.begin_read()?;
            let t = tx.open_table(LOG)?;
            let last = match t.last()? {
                Some((_, v)) => {
                    let e: Entry<TypeConfig> = serde_json::from_slice(v.value())?;
                    Some(e.log_id)
                }
                None => purged,
            };
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(any(e)).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        let vote = *vote;
        on_disk(move || put_json(&db, META, "vote", &vote))
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        let db = self.db.clone();
        on_disk(move || get_json(&db, META, "vote"))
            .await
            .map_err(|e| StorageIOError::read_vote(any(e)).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| serde_json::to_vec(&e).map(|b| (e.log_id.index, b)))
            .collect::<Result<_, _>>()
            .map_err(|e| StorageIOError::write_logs(any(e.into())))?;
        let db = self.db.clone();
        let written = on_disk(move || {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(LOG)?;
                for (i, b) in &encoded {
                    t.insert(*i, b.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg)));
                Err(StorageIOError::write_logs(any(e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        on_disk(move || {
            LogStore::remove(&db, (Bound::Included(log_id.index), Bound::Unbounded), None)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(any(e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        on_disk(move || {
            LogStore::remove(
                &db,
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some(log_id),
            )
        })
        .await
        .map_err(|e| StorageIOError::write_logs(any(e)).into())
    }
}

/// The state machine: the controller's [`Applied`] state in memory (shared with the services
/// that read it) and on disk.
#[derive(Debug, Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    /// Bumped after every applied batch or installed snapshot, for waiters.
    changes: Arc<watch::Sender<u64>>,
}

impl StateMachine {
    /// Loads the persisted state (empty on a new disk).
    pub fn load(
        db: Arc<Database>,
        applied: Arc<RwLock<Applied>>,
        changes: Arc<watch::Sender<u64>>,
    ) -> Result<StateMachine, DiskError> {
        if let Some(a) = get_json::<Applied>(&db, MACHINE, "applied")? {
            *applied.write() = a;
        }
        Ok(StateMachine {
            db,
            applied,
            changes,
        })
    }

    fn persist(
        db: &Database,
        applied: &Applied,
        snapshot: Option<&StoredSnapshot>,
    ) -> Result<(), DiskError> {
        let bytes = serde_json::to_vec(applied)?;
        let snap = snapshot.map(serde_json::to_vec).transpose()?;
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(MACHINE)?;
            t.insert("applied", bytes.as_slice())?;
            if let Some(s) = &snap {
                t.insert("snapshot", s.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let applied = self.applied.read().clone();
        let data = serde_json::to_vec(&applied)
            .map_err(|e| StorageIOError::write_snapshot(None, any(e.into())))?;
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                applied.last_applied.map_or(0, |l| l.index),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let db = self.db.clone();
        on_disk(move || put_json(&db, MACHINE, "snapshot", &stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, openraft::BasicNode>,
    )> {
        let a = self.applied.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Apply to a copy, persist it, then publish it: a failed write leaves memory as the disk.
        let mut next = self.applied.read().clone();
        let mut answers = Vec::new();
        for e in entries {
            next.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => answers.push(Ok(GroupState::default())),
                EntryPayload::Normal(cmd) => answers.push(next.state.apply(&cmd)),
                EntryPayload::Membership(m) => {
                    next.membership = StoredMembership::new(Some(e.log_id), m);
                    answers.push(Err(CommandError::Invalid("membership change".into())));
                }
            }
        }
        let db = self.db.clone();
        let to_write = next.clone();
        on_disk(move || StateMachine::persist(&db, &to_write, None))
            .await
            .map_err(|e| StorageIOError::write_state_machine(any(e)))?;
        *self.applied.write() = next;
        self.changed();
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let mut applied: Applied = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e.into())))?;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.db.clone();
        let to_write = applied.clone();
        on_disk(move || StateMachine::persist(&db, &to_write, Some(&stored)))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(e)))?;
        *self.applied.write() = applied;
        self.changed();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let db = self.db.clone();
        let stored: Option<StoredSnapshot> = on_disk(move || get_json(&db, MACHINE, "snapshot"))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, any(e)))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
