//! Marks: one byte of state per entry of a parked queue (pending timers, half messages), kept
//! in memory-mapped files so a settled entry stays settled after kill -9.
//!
//! A parked queue is append-only and its entries are settled out of order (a timer due in one
//! second settles before one due in a day), so a single "done up to" offset cannot say which
//! entries are left. One byte per entry can: 0 pending, then [`Mark::Released`] or
//! [`Mark::Discarded`]. A million parked messages cost one MiB on disk and nothing on the heap.
//!
//! Files are `<dir>/<first entry>` of [`CHUNK`] bytes each, allocated in full when created (a
//! full disk shows up as an error then, never as SIGBUS later). Chunks wholly below the oldest
//! pending entry are deleted by [`Marks::trim`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

/// Entries per mark file.
pub const CHUNK: u64 = 1 << 20;

/// The state of one parked entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Still parked.
    Pending,
    /// Delivered to its topic (timer due, transaction committed).
    Released,
    /// Dropped (recalled, rolled back).
    Discarded,
}

impl Mark {
    /// The mark a stored byte stands for (unknown bytes read as pending).
    pub fn from_byte(b: u8) -> Mark {
        match b {
            1 => Mark::Released,
            2 => Mark::Discarded,
            _ => Mark::Pending,
        }
    }

    /// The byte a mark is stored as.
    pub fn to_byte(self) -> u8 {
        match self {
            Mark::Pending => 0,
            Mark::Released => 1,
            Mark::Discarded => 2,
        }
    }
}

/// The mark files of one parked queue.
#[derive(Debug)]
pub struct Marks {
    dir: PathBuf,
    chunks: Mutex<BTreeMap<u64, Arc<MappedFile>>>,
}

impl Marks {
    /// Opens (or creates) the mark files in `dir`.
    pub fn open(dir: &Path) -> Result<Marks> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let mut chunks = BTreeMap::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
        for e in entries {
            let e = e.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            let name = e.file_name();
            let Some(base) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if base % CHUNK != 0 {
                return Err(StoreError::malformed(
                    "mark file",
                    format!("{} is not at a chunk boundary", e.path().display()),
                ));
            }
            if MappedFile::remove_if_unallocated(&e.path(), CHUNK)? {
                continue;
            }
            chunks.insert(base, Arc::new(MappedFile::open(&e.path(), CHUNK)?));
        }
        Ok(Marks {
            dir: dir.to_path_buf(),
            chunks: Mutex::new(chunks),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<MappedFile>>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mark of entry `i`. Entries never marked (or in deleted chunks) read as pending;
    /// callers only ask about entries their queue still holds.
    pub fn get(&self, i: u64) -> Mark {
        let base = i - i % CHUNK;
        match self.lock().get(&base) {
            Some(f) => Mark::from_byte(f.slice((i - base) as usize, 1)[0]),
            None => Mark::Pending,
        }
    }

    /// Marks entry `i`. Written into the page cache: it survives a crash of the process.
    pub fn set(&self, i: u64, m: Mark) -> Result<()> {
        let base = i - i % CHUNK;
        let mut chunks = self.lock();
        let f = match chunks.get(&base) {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(MappedFile::create(&self.dir.join(base.to_string()), CHUNK)?);
                chunks.insert(base, f.clone());
                f
            }
        };
        f.write_at((i - base) as usize, &[m.to_byte()]);
        Ok(())
    }

    /// The first pending entry in `from..to`, or `to` when all are settled.
    pub fn first_pending(&self, from: u64, to: u64) -> u64 {
        let chunks = self.lock();
        let mut i = from;
        while i < to {
            let base = i - i % CHUNK;
            let Some(f) = chunks.get(&base) else {
                return i;
            };
            let end = (base + CHUNK).min(to);
            let bytes = f.slice((i - base) as usize, (end - i) as usize);
            if let Some(p) = bytes.iter().position(|b| *b == 0) {
                return i + p as u64;
            }
            i = end;
        }
        to
    }

    /// Deletes mark files wholly below entry `below` (all settled, and the queue trimmed).
    pub fn trim(&self, below: u64) -> Result<()> {
        let mut chunks = self.lock();
        let old: Vec<u64> = chunks
            .keys()
            .copied()
            .filter(|b| b + CHUNK <= below)
            .collect();
        for b in old {
            if let Some(f) = chunks.remove(&b) {
                let path = f.path().to_path_buf();
                drop(f);
                std::fs::remove_file(&path)
                    .map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
            }
        }
        Ok(())
    }

    /// Writes the marks to disk (clean shutdown; kill -9 keeps them through the page cache).
    pub fn flush(&self) -> Result<()> {
        for f in self.lock().values() {
            f.flush()
                .map_err(|e| StoreError::io(format!("flush {}", f.path().display()), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_reopen_and_find_the_first_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let m = Marks::open(dir.path()).expect("open");
            assert_eq!(m.get(5), Mark::Pending);
            for i in 0..10 {
                m.set(i, Mark::Released).expect("set");
            }
            m.set(12, Mark::Discarded).expect("set");
            m.set(CHUNK + 3, Mark::Released).expect("set second chunk");
            assert_eq!(m.first_pending(0, 20), 10);
        }
        let m = Marks::open(dir.path()).expect("reopen");
        assert_eq!(m.get(3), Mark::Released);
        assert_eq!(m.get(12), Mark::Discarded);
        assert_eq!(m.get(11), Mark::Pending);
        assert_eq!(m.first_pending(0, 10), 10);
        assert_eq!(m.first_pending(CHUNK + 3, CHUNK + 4), CHUNK + 4);
        m.trim(CHUNK).expect("trim");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        assert_eq!(m.get(CHUNK + 3), Mark::Released);
    }
}
