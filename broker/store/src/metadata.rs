//! Small metadata kept beside the log: topics and consumer offsets.
//!
//! Both are JSON files (`config/topics.json`, `config/offsets.json`) replaced atomically
//! (temp file, fsync, rename, directory fsync), so a crash leaves the old or the new version,
//! never a mix. A file that does not parse stops the store at open with its path: we do not
//! guess at metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomically;
use crate::error::{Result, StoreError};

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
}

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

/// The topics this store knows.
#[derive(Debug)]
pub struct TopicStore {
    dir: PathBuf,
    topics: Mutex<BTreeMap<String, TopicConfig>>,
}

fn load_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
            offset: 0,
            reason: format!("{} does not parse: {e}", path.display()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e)),
    }
}

impl TopicStore {
    pub fn open(dir: &Path) -> Result<TopicStore> {
        let topics: BTreeMap<String, TopicConfig> = load_json(&dir.join("topics.json"))?;
        Ok(TopicStore {
            dir: dir.to_path_buf(),
            topics: Mutex::new(topics),
        })
    }

    fn persist(&self, topics: &BTreeMap<String, TopicConfig>) -> Result<()> {
        let json = serde_json::to_vec_pretty(topics)
            .map_err(|e| StoreError::malformed("topics", e.to_string()))?;
        write_atomically(&self.dir, "topics.json", &json)
    }

    fn validate(t: &TopicConfig) -> Result<()> {
        validate_name("topic", &t.name)?;
        if t.queues == 0 || t.queues > MAX_QUEUES {
            return Err(StoreError::InvalidField {
                field: "queues",
                reason: format!("{} is not within 1..={MAX_QUEUES}", t.queues),
            });
        }
        Ok(())
    }

    /// Applies `change` to a copy of the topics, persists the copy and only then makes it
    /// current, so a failed write changes nothing.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, TopicConfig>) -> Result<T>,
    ) -> Result<T> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = topics.clone();
        let out = change(&mut next)?;
        self.persist(&next)?;
        *topics = next;
        Ok(out)
    }

    /// Creates a topic; refuses an existing name. Durable when it returns.
    pub fn create(&self, t: TopicConfig) -> Result<TopicConfig> {
        Self::validate(&t)?;
        self.change(|m| {
            if m.contains_key(&t.name) {
                return Err(StoreError::TopicExists(t.name.clone()));
            }
            m.insert(t.name.clone(), t.clone());
            Ok(t)
        })
    }

    /// Creates or replaces a topic. Durable when it returns.
    pub fn upsert(&self, t: TopicConfig) -> Result<TopicConfig> {
        Self::validate(&t)?;
        self.change(|m| {
            m.insert(t.name.clone(), t.clone());
            Ok(t)
        })
    }

    /// Updates an existing topic. Durable when it returns.
    pub fn update(&self, t: TopicConfig) -> Result<TopicConfig> {
        Self::validate(&t)?;
        self.change(|m| {
            if !m.contains_key(&t.name) {
                return Err(StoreError::UnknownTopic(t.name.clone()));
            }
            m.insert(t.name.clone(), t.clone());
            Ok(t)
        })
    }

    /// Deletes a topic's configuration (its messages age out with the log).
    pub fn delete(&self, name: &str) -> Result<TopicConfig> {
        self.change(|m| {
            m.remove(name)
                .ok_or_else(|| StoreError::UnknownTopic(name.to_string()))
        })
    }

    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<TopicConfig> {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Key of a consumer offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
}

#[derive(Debug, Default)]
struct Offsets {
    map: BTreeMap<OffsetKey, u64>,
    dirty: bool,
}

/// Consumer offsets: the next queue offset each group will consume.
#[derive(Debug)]
pub struct OffsetStore {
    dir: PathBuf,
    inner: Mutex<Offsets>,
    /// Serialises writers of the file so an older snapshot never lands after a newer one.
    persist_lock: Mutex<()>,
}

#[derive(Serialize, Deserialize, Default)]
struct OffsetFile {
    offsets: Vec<(OffsetKey, u64)>,
}

impl OffsetStore {
    pub fn open(dir: &Path) -> Result<OffsetStore> {
        let f: OffsetFile = load_json(&dir.join("offsets.json"))?;
        Ok(OffsetStore {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Offsets {
                map: f.offsets.into_iter().collect(),
                dirty: false,
            }),
            persist_lock: Mutex::new(()),
        })
    }

    /// Sets an offset in memory; the background flusher persists it within a second, and a
    /// clean shutdown always does. Use [`OffsetStore::commit`] when the caller needs it durable.
    pub fn set(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = OffsetKey {
            group: group.into(),
            topic: topic.into(),
            queue_id,
        };
        if g.map.get(&key) != Some(&offset) {
            g.map.insert(key, offset);
            g.dirty = true;
        }
    }

    /// Sets an offset and returns once it is on disk.
    pub fn commit(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Result<()> {
        self.set(group, topic, queue_id, offset);
        self.persist()
    }

    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.map
            .get(&OffsetKey {
                group: group.into(),
                topic: topic.into(),
                queue_id,
            })
            .copied()
    }

    /// All offsets, for admin views.
    pub fn all(&self) -> Vec<(OffsetKey, u64)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Removes every offset of a group (or of a group on one topic).
    pub fn remove_group(&self, group: &str, topic: Option<&str>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = g.map.len();
        g.map
            .retain(|k, _| !(k.group == group && topic.is_none_or(|t| k.topic == t)));
        if g.map.len() != before {
            g.dirty = true;
        }
    }

    /// Writes the offsets if anything changed since the last write.
    pub fn persist(&self) -> Result<()> {
        let _p = self.persist_lock.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if !g.dirty {
                return Ok(());
            }
            g.dirty = false;
            OffsetFile {
                offsets: g.map.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            }
        };
        let json = serde_json::to_vec(&snapshot)
            .map_err(|e| StoreError::malformed("offsets", e.to_string()))?;
        if let Err(e) = write_atomically(&self.dir, "offsets.json", &json) {
            self.inner.lock().unwrap_or_else(|p| p.into_inner()).dirty = true;
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_survive_reopen_and_refuse_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let ts = TopicStore::open(dir.path()).unwrap();
        let t = TopicConfig {
            name: "orders".into(),
            queues: 8,
            message_type: MessageType::Fifo,
            permission: Permission::ReadWrite,
        };
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
        let ts = TopicStore::open(dir.path()).unwrap();
        assert_eq!(ts.get("orders"), Some(t));
        assert_eq!(ts.list().len(), 1);
        ts.delete("orders").unwrap();
        assert!(TopicStore::open(dir.path())
            .unwrap()
            .get("orders")
            .is_none());
    }

    #[test]
    fn committed_offsets_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let os = OffsetStore::open(dir.path()).unwrap();
        os.commit("g", "t", 1, 42).unwrap();
        os.set("g", "t", 2, 7);
        os.persist().unwrap();
        let os = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(os.get("g", "t", 1), Some(42));
        assert_eq!(os.get("g", "t", 2), Some(7));
        assert_eq!(os.get("g", "t", 3), None);
    }

    #[test]
    fn damaged_metadata_is_refused_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("topics.json"), b"{ not json").unwrap();
        assert!(matches!(
            TopicStore::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
