//! Consumer group settings that the broker, not the client, decides: how many deliveries a
//! message gets before it is dead-lettered, and whether the group consumes FIFO topics in
//! message-group order. Kept in `<data dir>/server/groups.json`, replaced atomically.
//!
//! A group needs no registration: one that was never configured uses the server defaults,
//! and FIFO ordering follows the topic's type (FIFO topics are consumed in order).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Explicit settings of one group; `None` means "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delivery_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fifo: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not parse: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The configured groups.
#[derive(Debug)]
pub struct Groups {
    path: PathBuf,
    default_max_attempts: u32,
    map: Mutex<BTreeMap<String, GroupConfig>>,
}

impl Groups {
    pub fn open(data_dir: &Path, default_max_attempts: u32) -> Result<Groups, GroupError> {
        let dir = data_dir.join("server");
        let path = dir.join("groups.json");
        let map = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| GroupError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(GroupError::Io { path, source: e }),
        };
        Ok(Groups {
            path,
            default_max_attempts,
            map: Mutex::new(map),
        })
    }

    pub fn get(&self, group: &str) -> GroupConfig {
        self.map.lock().get(group).cloned().unwrap_or_default()
    }

    /// Deliveries before dead-lettering for this group.
    pub fn max_attempts(&self, group: &str) -> u32 {
        self.get(group)
            .max_delivery_attempts
            .unwrap_or(self.default_max_attempts)
    }

    /// Whether this group consumes `topic` in message-group order.
    pub fn fifo(&self, group: &str, topic_is_fifo: bool) -> bool {
        self.get(group).fifo.unwrap_or(topic_is_fifo)
    }

    pub fn list(&self) -> BTreeMap<String, GroupConfig> {
        self.map.lock().clone()
    }

    /// Sets a group's settings (durable on return).
    pub fn set(&self, group: &str, cfg: GroupConfig) -> Result<(), GroupError> {
        let mut map = self.map.lock();
        let mut next = map.clone();
        next.insert(group.to_string(), cfg);
        self.persist(&next)?;
        *map = next;
        Ok(())
    }

    /// Forgets a group's settings (durable on return); a group never configured is fine.
    pub fn remove(&self, group: &str) -> Result<(), GroupError> {
        let mut map = self.map.lock();
        if !map.contains_key(group) {
            return Ok(());
        }
        let mut next = map.clone();
        next.remove(group);
        self.persist(&next)?;
        *map = next;
        Ok(())
    }

    fn persist(&self, map: &BTreeMap<String, GroupConfig>) -> Result<(), GroupError> {
        let io = |source| GroupError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(map).map_err(|e| GroupError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&json).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_persist_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let g = Groups::open(dir.path(), 17).unwrap();
        assert_eq!(g.max_attempts("a"), 17);
        assert!(g.fifo("a", true));
        g.set(
            "a",
            GroupConfig {
                max_delivery_attempts: Some(3),
                fifo: Some(false),
            },
        )
        .unwrap();
        let g = Groups::open(dir.path(), 17).unwrap();
        assert_eq!(g.max_attempts("a"), 3);
        assert!(!g.fifo("a", true));
    }
}
