//! The journal of a replicated group: every change to state the engine keeps beside the
//! messages (topics, consumer offsets, parked-message marks, group settings, drain state) is
//! also appended to the commit log, as a record of the system topic [`JOURNAL_TOPIC`], so it
//! travels to the followers with the messages and survives a failover.
//!
//! The leader applies a change where it happens and journals it; a follower applies what it
//! finds in the journal once the group has confirmed it ([`Applier`]), reading the journal's
//! queue like a consumer from the position it last applied (kept in a small file), so a
//! restart applies nothing twice that matters: every change is idempotent (it sets a value, it
//! does not add to one). Unreplicated brokers keep no journal.
//!
//! Fences (topic delete and re-create) carry the offset the leader chose: replicas' logs are
//! byte-identical, so the same offset is the same place in every replica.
//!
//! Users and ACL policies ([`Change::Auth`]) travel in the same journal but are not the
//! engine's: the server's auth store reads them on every member, leader included, up to the
//! confirm offset (see `broker/server/src/replication/auth.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferromq_store::marks::{Mark, Marks};
use ferromq_store::{MessageType, NewMessage, Permission, Store, StoreError, TopicConfig};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::EngineError;
use crate::groups::{GroupConfig, Groups};
use crate::membership::Membership;

/// The system topic holding the journal (one queue).
pub const JOURNAL_TOPIC: &str = "%SYS%FM_JOURNAL";

/// One change to state kept beside the messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    /// A topic created or updated; `incarnation` is where a re-created name starts.
    Topic {
        topic: TopicConfig,
        incarnation: u64,
    },
    /// A topic deleted, its records below `fence` no longer served.
    TopicDeleted { name: String, fence: u64 },
    /// Consumer offsets that moved (every message below each is settled for its group).
    Offsets {
        offsets: Vec<(String, String, u32, u64)>,
    },
    /// A parked message settled (released or discarded) in `queue` (the parked system topic).
    Mark { queue: String, entry: u64, mark: u8 },
    /// A consumer group's settings.
    Group { name: String, config: GroupConfig },
    /// The group became read-only (drained) or read-write.
    Drain { read_only: bool },
    /// A consumer group deleted: its offsets and settings are gone.
    GroupDeleted { name: String },
    /// Users and ACL policies changed (with `--auth`): the server's auth store applies it on
    /// every member, the leader included, once the group confirmed it (it carries secrets;
    /// the engine neither reads nor applies it).
    Auth { record: serde_json::Value },
}

/// How every journaled [`Change::Auth`] record's body starts (the tag comes first in the JSON
/// form), so a reader looking for them parses no other record.
pub const AUTH_RECORD_PREFIX: &[u8] = br#"{"change":"auth""#;

/// Appends changes to the journal (leader side). Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    store: Arc<Store>,
}

impl Journal {
    /// The journal of `store`, creating its topic when it does not exist yet.
    pub fn open(store: Arc<Store>) -> Result<Journal, EngineError> {
        if store.topics().get(JOURNAL_TOPIC).is_none() {
            match store.topics().create(TopicConfig {
                name: JOURNAL_TOPIC.into(),
                queues: 1,
                message_type: MessageType::Normal,
                permission: Permission::ReadWrite,
                retention_ms: None,
            }) {
                Ok(_) | Err(StoreError::TopicExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Journal { store })
    }

    /// Appends `change`; returns the log offset after it (what the group must confirm before
    /// the change counts as replicated).
    pub fn record(&self, change: &Change) -> Result<u64, EngineError> {
        self.record_at(change).map(|(_, end)| end)
    }

    /// Appends `change`; returns where its record starts and the log offset after it.
    pub fn record_at(&self, change: &Change) -> Result<(u64, u64), EngineError> {
        let body = serde_json::to_vec(change)
            .map_err(|e| EngineError::internal(format!("journal entry: {e}")))?;
        let a = self.store.append(&NewMessage {
            topic: JOURNAL_TOPIC.into(),
            queue_id: 0,
            body: body.into(),
            ..Default::default()
        })?;
        Ok((a.phys_offset, a.phys_offset + u64::from(a.size)))
    }
}

/// Where a follower's applier is: the journal queue offset of the next entry to apply.
const APPLIED_FILE: &str = "journal-applied";

/// Applies journal entries on a follower (see the module docs).
pub struct Applier {
    store: Arc<Store>,
    data_dir: PathBuf,
    applied_path: PathBuf,
    next: u64,
    groups: Groups,
    membership: Membership,
    marks: Vec<(String, Marks)>,
}

impl Applier {
    /// Opens the applier of the engine files under `data_dir` (the same files the engine opens
    /// when this member leads).
    pub fn open(
        store: Arc<Store>,
        data_dir: &Path,
        default_max_attempts: u32,
    ) -> Result<Applier, EngineError> {
        Journal::open(store.clone())?;
        let applied_path = data_dir.join(APPLIED_FILE);
        let next = match std::fs::read_to_string(&applied_path) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(EngineError::Io(format!(
                    "read {}: {e}",
                    applied_path.display()
                )))
            }
        };
        let groups = Groups::open(data_dir, default_max_attempts)
            .map_err(|e| EngineError::Io(e.to_string()))?;
        let membership = Membership::default();
        Ok(Applier {
            store,
            data_dir: data_dir.to_path_buf(),
            applied_path,
            next,
            groups,
            membership,
            marks: Vec::new(),
        })
    }

    /// Joins the broker group (for the drain state file).
    pub fn join(&self, group: &str) -> Result<(), EngineError> {
        self.membership
            .join(group, &self.data_dir)
            .map_err(|e| EngineError::Io(e.to_string()))
    }

    /// The journal queue offset of the next entry to apply.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Whether every dispatched entry is applied.
    pub fn caught_up(&self) -> bool {
        self.next >= self.store.queue_range(JOURNAL_TOPIC, 0).1
    }

    /// Applies every dispatched entry not applied yet; returns how many.
    pub fn apply_dispatched(&mut self) -> Result<usize, EngineError> {
        let mut n = 0;
        loop {
            let r = self.store.read(JOURNAL_TOPIC, 0, self.next, 256, None)?;
            if r.messages.is_empty() {
                let skip = r.next_offset.max(r.min_offset);
                if skip > self.next {
                    self.next = skip;
                    self.persist()?;
                }
                return Ok(n);
            }
            for m in &r.messages {
                match serde_json::from_slice::<Change>(&m.body) {
                    Ok(c) => self.apply(c)?,
                    Err(e) => {
                        warn!(offset = m.queue_offset, error = %e, "unreadable journal entry skipped")
                    }
                }
                self.next = m.queue_offset + 1;
                n += 1;
            }
            self.persist()?;
        }
    }

    fn persist(&self) -> Result<(), EngineError> {
        use std::io::Write;
        let tmp = self.applied_path.with_extension("tmp");
        let io = |e: std::io::Error| EngineError::Io(format!("write {}: {e}", tmp.display()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        writeln!(f, "{}", self.next).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.applied_path).map_err(io)?;
        Ok(())
    }

    fn marks_of(&mut self, queue: &str) -> Result<&Marks, EngineError> {
        if let Some(i) = self.marks.iter().position(|(q, _)| q == queue) {
            return Ok(&self.marks[i].1);
        }
        let dir = match queue {
            crate::parked::timer::TIMER_TOPIC => self.data_dir.join("timers"),
            crate::parked::transaction::HALF_TOPIC => self.data_dir.join("transactions"),
            other => {
                return Err(EngineError::internal(format!(
                    "journal names an unknown parked queue {other}"
                )))
            }
        };
        let m = Marks::open(&dir)?;
        self.marks.push((queue.to_string(), m));
        Ok(&self.marks[self.marks.len() - 1].1)
    }

    fn apply(&mut self, c: Change) -> Result<(), EngineError> {
        match c {
            Change::Topic { topic, incarnation } => {
                let name = topic.name.clone();
                if incarnation > 0 && self.store.topics().incarnation(&name) < incarnation {
                    self.store.topics().upsert_at(topic, incarnation)?;
                } else {
                    self.store.topics().upsert(topic)?;
                }
                info!(topic = %name, "topic applied from the journal");
            }
            Change::TopicDeleted { name, fence } => {
                match self.store.topics().delete_at(&name, fence) {
                    Ok(_) | Err(StoreError::UnknownTopic(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                info!(topic = %name, fence, "topic deletion applied from the journal");
            }
            Change::Offsets { offsets } => {
                for (g, t, q, o) in offsets {
                    self.store.offsets().set(&g, &t, q, o);
                }
                self.store.offsets().persist()?;
            }
            Change::Mark { queue, entry, mark } => {
                let mark = match Mark::from_byte(mark) {
                    Mark::Pending => {
                        return Err(EngineError::internal(format!(
                            "journal mark {mark} does not settle anything"
                        )))
                    }
                    m => m,
                };
                let marks = self.marks_of(&queue)?;
                if marks.get(entry) == Mark::Pending {
                    marks.set(entry, mark)?;
                }
            }
            Change::Group { name, config } => self
                .groups
                .set(&name, config)
                .map_err(|e| EngineError::Io(e.to_string()))?,
            Change::Drain { read_only } => self
                .membership
                .set_read_only(read_only)
                .map_err(|e| EngineError::Io(e.to_string()))?,
            Change::GroupDeleted { name } => {
                self.groups
                    .remove(&name)
                    .map_err(|e| EngineError::Io(e.to_string()))?;
                self.store.offsets().remove_group(&name, None);
                self.store.offsets().persist()?;
            }
            // Applied by the auth store's own reader, on the leader too.
            Change::Auth { .. } => {}
        }
        Ok(())
    }

    /// Writes the parked-message marks to disk and lets go of them (before the engine opens
    /// them as leader).
    pub fn close(&mut self) -> Result<(), EngineError> {
        for (_, m) in self.marks.drain(..) {
            m.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_as_written() {
        let c = Change::Offsets {
            offsets: vec![("g".into(), "t".into(), 3, 42)],
        };
        let json = serde_json::to_string(&c).expect("json");
        assert!(json.contains("\"change\":\"offsets\""), "{json}");
        assert_eq!(serde_json::from_str::<Change>(&json).expect("back"), c);
        let auth = Change::Auth {
            record: serde_json::json!({"users": []}),
        };
        let body = serde_json::to_vec(&auth).expect("json");
        assert!(body.starts_with(AUTH_RECORD_PREFIX));
        assert!(!json.as_bytes().starts_with(AUTH_RECORD_PREFIX));
    }

    #[test]
    fn a_topic_retention_reaches_a_follower_and_old_entries_read_without_one() {
        // An entry journaled before topics had a retention reads as "the node's".
        let old = r#"{"change":"topic","topic":{"name":"t","queues":2,"message-type":"normal","permission":"read-write"},"incarnation":0}"#;
        match serde_json::from_str::<Change>(old).expect("old entry") {
            Change::Topic { topic, .. } => assert_eq!(topic.retention_ms, None),
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(ferromq_store::StoreConfig::new(dir.path().join("store"))).unwrap();
        let engine_dir = dir.path().join("engine");
        std::fs::create_dir_all(&engine_dir).unwrap();
        store.topics().create(TopicConfig::new("t", 2)).unwrap();
        let kept = TopicConfig {
            retention_ms: Some(86_400_000),
            ..TopicConfig::new("t", 2)
        };
        let change = Change::Topic {
            topic: kept.clone(),
            incarnation: 0,
        };
        let json = serde_json::to_string(&change).expect("json");
        assert!(json.contains("\"retention-ms\":86400000"), "{json}");
        let end = Journal::open(store.clone())
            .unwrap()
            .record(&change)
            .unwrap();
        assert!(store.wait_dispatched(end, std::time::Duration::from_secs(5)));
        let mut applier = Applier::open(store.clone(), &engine_dir, 16).unwrap();
        assert_eq!(applier.apply_dispatched().unwrap(), 1);
        assert_eq!(store.topics().get("t"), Some(kept));
        assert_eq!(store.topics().retention_of("t"), Some(86_400_000));
    }

    #[test]
    fn a_follower_forgets_a_deleted_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(ferromq_store::StoreConfig::new(dir.path().join("store"))).unwrap();
        let engine_dir = dir.path().join("engine");
        Groups::open(&engine_dir, 16)
            .unwrap()
            .set(
                "g",
                GroupConfig {
                    max_delivery_attempts: Some(3),
                    fifo: None,
                },
            )
            .unwrap();
        store.offsets().commit("g", "t", 0, 7).unwrap();
        let end = Journal::open(store.clone())
            .unwrap()
            .record(&Change::GroupDeleted { name: "g".into() })
            .unwrap();
        assert!(store.wait_dispatched(end, std::time::Duration::from_secs(5)));
        let mut applier = Applier::open(store.clone(), &engine_dir, 16).unwrap();
        assert_eq!(applier.apply_dispatched().unwrap(), 1);
        assert_eq!(store.offsets().get("g", "t", 0), None);
        assert!(!Groups::open(&engine_dir, 16)
            .unwrap()
            .list()
            .contains_key("g"));
    }
}
