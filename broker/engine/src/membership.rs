//! Where this engine sits in a cluster: its broker group's name and whether it takes new
//! messages. A standalone server is the single group `standalone`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

/// Words in the refusal of a send while the group is drained; proxies recognise them and pass
/// the send on to another group (the RocketMQ 5 status has no field for the reason).
pub const DRAINING: &str = "is read-only (being drained)";

/// The group name and drain state.
#[derive(Debug)]
pub struct Membership {
    group: RwLock<String>,
    read_only: AtomicBool,
    state_file: RwLock<Option<PathBuf>>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            group: RwLock::new("standalone".to_string()),
            read_only: AtomicBool::new(false),
            state_file: RwLock::new(None),
        }
    }
}

impl Membership {
    pub fn group(&self) -> String {
        self.group.read().clone()
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// Names the group and loads its drain state from `data_dir`, so a group being drained stays
    /// read-only across restarts.
    pub fn join(&self, group: &str, data_dir: &Path) -> std::io::Result<()> {
        *self.group.write() = group.to_string();
        let path = data_dir.join("group-state");
        let ro = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim() == "read-only",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        self.read_only.store(ro, Ordering::Release);
        *self.state_file.write() = Some(path);
        Ok(())
    }

    /// Switches between read-write and read-only, durably (written and synced before it applies).
    pub fn set_read_only(&self, ro: bool) -> std::io::Result<()> {
        if let Some(path) = self.state_file.read().clone() {
            let tmp = path.with_extension("tmp");
            let text = if ro { "read-only\n" } else { "read-write\n" };
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
        }
        self.read_only.store(ro, Ordering::Release);
        Ok(())
    }

    pub fn state_name(&self) -> &'static str {
        if self.is_read_only() {
            "read-only"
        } else {
            "read-write"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_state_survives_a_new_membership() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Membership::default();
        assert_eq!(m.group(), "standalone");
        m.join("g1", dir.path()).expect("join");
        m.set_read_only(true).expect("drain");
        let again = Membership::default();
        again.join("g1", dir.path()).expect("join");
        assert!(again.is_read_only());
        assert_eq!(again.state_name(), "read-only");
    }
}
