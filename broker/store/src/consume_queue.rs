//! Consume queues: for each (topic, queue), the positions of its messages in the commit log.
//!
//! On disk: `consumequeue/<topic>/<queue id>/<20-digit first queue offset>`, each file holding
//! `entries_per_file` fixed-size entries. All files of a queue have one size, read back from the
//! files at open (so queues written with other settings open unchanged); a new queue's size
//! comes from the configuration, capped on a nearly full disk. The writer creates the file an
//! entry will go to before it acknowledges the record ([`ConsumeQueue::ensure`]), so the
//! dispatcher only writes into files that exist. Entry `n` of a queue lives at byte
//! `(n % entries_per_file) * 20` of file `n / entries_per_file`, so an entry's place follows
//! from its queue offset alone and dispatching the same record twice writes the same bytes
//! (recovery relies on that).
//!
//! Entry layout (20 bytes, little-endian): `phys_offset` u64, `size` u32, `tag_hash` u64.
//! An entry of all zeros is "not written yet". A consume queue is a cache of the commit log:
//! recovery cuts entries that point past the end of the log and re-dispatches from the
//! checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

/// Size of one entry.
pub const ENTRY_LEN: usize = 20;

/// One consume queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    pub phys_offset: u64,
    pub size: u32,
    pub tag_hash: u64,
}

impl Entry {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.phys_offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[12..20].copy_from_slice(&self.tag_hash.to_le_bytes());
        b
    }

    /// Decodes an entry: `Ok(None)` for an unwritten (all-zero) slot, an error for bytes that
    /// cannot be an entry (wrong length, or a size no record can have).
    pub fn decode(b: &[u8]) -> Result<Option<Entry>> {
        if b.len() != ENTRY_LEN {
            return Err(StoreError::malformed(
                "consume queue entry",
                format!("{} bytes", b.len()),
            ));
        }
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[0..8]);
        let phys_offset = u64::from_le_bytes(x);
        let size = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        x.copy_from_slice(&b[12..20]);
        let tag_hash = u64::from_le_bytes(x);
        if size == 0 {
            if phys_offset == 0 && tag_hash == 0 {
                return Ok(None);
            }
            return Err(StoreError::malformed(
                "consume queue entry",
                "zero size with other fields set",
            ));
        }
        if (size as usize) < crate::record::MIN_RECORD_LEN {
            return Err(StoreError::malformed(
                "consume queue entry",
                format!("size {size} below the smallest record"),
            ));
        }
        Ok(Some(Entry {
            phys_offset,
            size,
            tag_hash,
        }))
    }
}

/// Hash of a tag for the consume queue's pre-filter (FNV-1a 64; 0 means "no tag").
pub fn tag_hash(tag: Option<&str>) -> u64 {
    match tag {
        None | Some("") => 0,
        Some(t) => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in t.as_bytes() {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h.max(1)
        }
    }
}

/// The consume queue of one (topic, queue).
#[derive(Debug)]
pub struct ConsumeQueue {
    dir: PathBuf,
    entries_per_file: u64,
    /// Files by their index (queue offset / entries_per_file).
    files: RwLock<BTreeMap<u64, Arc<MappedFile>>>,
    /// One past the highest written entry.
    max_offset: AtomicU64,
    /// The lowest entry still kept (retention moves it up).
    min_offset: AtomicU64,
    /// Entries written since the last flush: an idle queue costs no msync.
    dirty: AtomicBool,
}

impl ConsumeQueue {
    /// Opens (or creates) the queue stored in `dir`. A queue that has files keeps their size
    /// (a store written with other settings opens unchanged); a new queue gets
    /// `entries_per_file` entries a file.
    pub fn open(dir: &Path, entries_per_file: u64) -> Result<ConsumeQueue> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(first) = name.parse::<u64>() else {
                continue;
            };
            if name.len() != 20 {
                continue;
            }
            let len = entry
                .metadata()
                .map_err(|e| StoreError::io(format!("stat {}", entry.path().display()), e))?
                .len();
            found.push((first, entry.path(), len));
        }
        // Every file of a queue has the size of its largest file (a smaller one is a file a
        // crash left unallocated, removed below).
        let largest = found.iter().map(|(_, _, len)| *len).max().unwrap_or(0);
        let entries_per_file = if largest >= ENTRY_LEN as u64 {
            if largest % ENTRY_LEN as u64 != 0 {
                return Err(StoreError::malformed(
                    "consume queue",
                    format!(
                        "{} holds a file of {largest} bytes, not a whole number of entries",
                        dir.display()
                    ),
                ));
            }
            largest / ENTRY_LEN as u64
        } else {
            entries_per_file
        };
        let file_len = entries_per_file * ENTRY_LEN as u64;
        let mut files = BTreeMap::new();
        for (first, path, _) in found {
            if MappedFile::remove_if_unallocated(&path, file_len)? {
                continue;
            }
            if first % entries_per_file != 0 {
                return Err(StoreError::malformed(
                    "consume queue",
                    format!(
                        "{} does not start at a multiple of {entries_per_file} entries",
                        path.display()
                    ),
                ));
            }
            let f = MappedFile::open(&path, file_len)?;
            files.insert(first / entries_per_file, Arc::new(f));
        }
        let min = files
            .keys()
            .next()
            .map(|i| i * entries_per_file)
            .unwrap_or(0);
        // Entries a topic's retention expired stay expired.
        let min = match read_expired(dir)? {
            Some(expired) if !files.is_empty() => min.max(expired),
            _ => min,
        };
        let q = ConsumeQueue {
            dir: dir.to_path_buf(),
            entries_per_file,
            files: RwLock::new(files),
            max_offset: AtomicU64::new(min),
            min_offset: AtomicU64::new(min),
            dirty: AtomicBool::new(false),
        };
        Ok(q)
    }

    /// Entries per file of this queue.
    pub fn entries_per_file(&self) -> u64 {
        self.entries_per_file
    }

    /// The directory holding the queue's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes sure the file that will hold entry `offset` exists (allocated on disk), and
    /// returns the first offset past that file. The writer calls it before acknowledging a
    /// record, so the dispatcher never has to allocate: a full disk refuses the append instead.
    pub fn ensure(&self, offset: u64) -> Result<u64> {
        self.file_for(offset, true)?;
        Ok((offset / self.entries_per_file + 1) * self.entries_per_file)
    }

    fn files(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<MappedFile>>> {
        self.files.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn max_offset(&self) -> u64 {
        self.max_offset.load(Ordering::Acquire)
    }

    pub fn min_offset(&self) -> u64 {
        self.min_offset.load(Ordering::Acquire)
    }

    fn file_for(&self, offset: u64, create: bool) -> Result<Option<Arc<MappedFile>>> {
        let idx = offset / self.entries_per_file;
        if let Some(f) = self.files().get(&idx) {
            return Ok(Some(f.clone()));
        }
        if !create {
            return Ok(None);
        }
        let path = self
            .dir
            .join(format!("{:020}", idx * self.entries_per_file));
        let f = Arc::new(MappedFile::create(
            &path,
            self.entries_per_file * ENTRY_LEN as u64,
        )?);
        crate::checkpoint::sync_dir(&self.dir)?;
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(idx, f.clone());
        Ok(Some(f))
    }

    /// Writes the entry for `offset` (the dispatcher calls this once per record; again after a
    /// crash, with the same bytes).
    pub fn put(&self, offset: u64, entry: Entry) -> Result<()> {
        let f = self
            .file_for(offset, true)?
            .ok_or_else(|| StoreError::malformed("consume queue", "no file"))?;
        let at = ((offset % self.entries_per_file) as usize) * ENTRY_LEN;
        f.write_at(at, &entry.encode());
        self.max_offset.fetch_max(offset + 1, Ordering::AcqRel);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads the entry at `offset`: `None` if it is outside the kept range or not written.
    pub fn get(&self, offset: u64) -> Result<Option<Entry>> {
        if offset < self.min_offset() || offset >= self.max_offset() {
            return Ok(None);
        }
        let Some(f) = self.file_for(offset, false)? else {
            return Ok(None);
        };
        let at = ((offset % self.entries_per_file) as usize) * ENTRY_LEN;
        Entry::decode(f.slice(at, ENTRY_LEN))
    }

    /// Flushes every file that can hold dirty entries (the last two are enough: entries are
    /// written in order).
    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let files: Vec<Arc<MappedFile>> = self.files().values().rev().take(2).cloned().collect();
        for f in files {
            if let Err(e) = f.flush() {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Recovery: finds the last entry that points inside the commit log (`< log_end`), zeroes
    /// everything after it, and sets the queue's end there.
    pub fn recover(&self, log_end: u64) -> Result<()> {
        // Entries are written in queue order with growing commit log offsets, so the files are
        // checked from the newest back to the first one whose first entry is inside the log
        // (usually the last one or two; more when a cut-short segment lost many records).
        let all: Vec<(u64, Arc<MappedFile>)> =
            self.files().iter().map(|(k, v)| (*k, v.clone())).collect();
        let inside = |e: &Entry| e.phys_offset + e.size as u64 <= log_end;
        let mut max = self.min_offset();
        for (idx, f) in all.iter().rev() {
            let first = idx * self.entries_per_file;
            let mut last_valid = None;
            for slot in 0..self.entries_per_file {
                let at = slot as usize * ENTRY_LEN;
                match Entry::decode(f.slice(at, ENTRY_LEN)) {
                    Ok(Some(e)) if inside(&e) => last_valid = Some(slot),
                    Ok(None) => {}
                    Ok(Some(_)) | Err(_) => {
                        // Points past the log (the record was cut) or is garbage: forget it.
                        f.write_at(at, &[0u8; ENTRY_LEN]);
                    }
                }
            }
            if let Some(slot) = last_valid {
                max = max.max(first + slot + 1);
                // Entries after the last valid one were zeroed above; older files are whole.
                break;
            }
        }
        self.max_offset.store(max, Ordering::Release);
        Ok(())
    }

    /// The commit log offset of the oldest entry still kept, if any.
    pub fn first_phys(&self) -> Result<Option<u64>> {
        Ok(self.get(self.min_offset())?.map(|e| e.phys_offset))
    }

    /// Retention: drops files all of whose entries point below `log_min`, and moves the queue's
    /// minimum up to the first entry still in the log.
    pub fn trim(&self, log_min: u64) -> Result<()> {
        let files: Vec<(u64, Arc<MappedFile>)> =
            self.files().iter().map(|(k, v)| (*k, v.clone())).collect();
        let max = self.max_offset();
        for (idx, f) in files {
            let first = idx * self.entries_per_file;
            let last = (first + self.entries_per_file).min(max);
            if last == 0 || last <= first {
                break;
            }
            let last_entry =
                Entry::decode(f.slice(((last - 1 - first) as usize) * ENTRY_LEN, ENTRY_LEN))?;
            let whole_file_gone = last == first + self.entries_per_file
                && matches!(last_entry, Some(e) if e.phys_offset + e.size as u64 <= log_min);
            if whole_file_gone {
                self.files
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&idx);
                std::fs::remove_file(f.path())
                    .map_err(|e| StoreError::io(format!("delete {}", f.path().display()), e))?;
                self.min_offset
                    .fetch_max(first + self.entries_per_file, Ordering::AcqRel);
                continue;
            }
            // Move min inside this file to the first entry still in the log.
            let mut o = self.min_offset().max(first);
            while o < last {
                match Entry::decode(f.slice(((o - first) as usize) * ENTRY_LEN, ENTRY_LEN))? {
                    Some(e) if e.phys_offset < log_min => o += 1,
                    _ => break,
                }
            }
            self.min_offset.fetch_max(o, Ordering::AcqRel);
            break;
        }
        Ok(())
    }

    /// Per-topic retention: forgets every entry below queue offset `to` (at most the end of
    /// the queue) for good. The new start is written to the queue's [`EXPIRED_FILE`] first (so
    /// the queue reopens after it even if the topic's retention grows meanwhile), then the
    /// minimum moves (a reader never looks for an entry that is going away), then the files
    /// holding only such entries are deleted, except the one holding the queue's last entry:
    /// recovery finds the queue's end in it.
    pub fn expire_below(&self, to: u64) -> Result<()> {
        let max = self.max_offset();
        let to = to.min(max);
        if to <= self.min_offset() {
            return Ok(());
        }
        write_expired(&self.dir, to)?;
        self.min_offset.fetch_max(to, Ordering::AcqRel);
        let gone: Vec<(u64, Arc<MappedFile>)> = self
            .files()
            .iter()
            .take_while(|(idx, _)| {
                let end = (*idx + 1) * self.entries_per_file;
                end <= to && end < max
            })
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (idx, f) in gone {
            self.files
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&idx);
            std::fs::remove_file(f.path())
                .map_err(|e| StoreError::io(format!("delete {}", f.path().display()), e))?;
        }
        Ok(())
    }
}

/// In a queue's directory: the queue offset below which a topic's retention expired the
/// entries (8 bytes, little-endian), so the queue reopens after them.
pub const EXPIRED_FILE: &str = "expired";

fn write_expired(dir: &Path, to: u64) -> Result<()> {
    let tmp = dir.join(format!("{EXPIRED_FILE}.tmp"));
    let path = dir.join(EXPIRED_FILE);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &to.to_le_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| StoreError::io(format!("write {}", path.display()), e))?;
    crate::checkpoint::sync_dir(dir)
}

/// The start [`write_expired`] recorded in `dir`, if any (a damaged file counts as none: the
/// store's next retention pass expires those entries again).
fn read_expired(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(EXPIRED_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(<[u8; 8]>::try_from(b.as_slice())
            .ok()
            .map(u64::from_le_bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_land_at_their_offset_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        for i in 0..10u64 {
            q.put(
                i,
                Entry {
                    phys_offset: i * 200,
                    size: 150,
                    tag_hash: i,
                },
            )
            .unwrap();
        }
        assert_eq!(q.max_offset(), 10);
        assert_eq!(
            q.get(7).unwrap(),
            Some(Entry {
                phys_offset: 1400,
                size: 150,
                tag_hash: 7
            })
        );
        assert_eq!(q.get(10).unwrap(), None);
        drop(q);
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        q.recover(1_000_000).unwrap();
        assert_eq!(q.max_offset(), 10);
        q.recover(1000).unwrap(); // entries 5.. point past a shorter log
        assert_eq!(q.max_offset(), 5);
        assert_eq!(q.get(5).unwrap(), None);
        // A log cut far back: every file after the cut is emptied, not only the last two.
        q.recover(250).unwrap();
        assert_eq!(q.max_offset(), 1);
        assert_eq!(q.get(0).unwrap().map(|e| e.phys_offset), Some(0));
        assert_eq!(q.get(1).unwrap(), None);
        drop(q);
        // Reopened with another default size, the queue keeps the size of its files.
        let q = ConsumeQueue::open(dir.path(), 1000).unwrap();
        assert_eq!(q.entries_per_file(), 4);
        q.recover(250).unwrap();
        assert_eq!(q.max_offset(), 1);
        assert_eq!(q.ensure(5).unwrap(), 8);
    }

    /// Ten entries 200 bytes apart in files of four entries.
    fn filled_queue(dir: &std::path::Path) -> ConsumeQueue {
        let q = ConsumeQueue::open(dir, 4).unwrap();
        for i in 0..10u64 {
            q.put(
                i,
                Entry {
                    phys_offset: i * 200,
                    size: 150,
                    tag_hash: 0,
                },
            )
            .unwrap();
        }
        q
    }

    #[test]
    fn trim_drops_whole_files_below_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let q = filled_queue(dir.path());
        q.trim(1200).unwrap();
        assert_eq!(q.min_offset(), 6);
        assert_eq!(q.get(3).unwrap(), None);
        assert!(q.get(6).unwrap().is_some());
    }

    #[test]
    fn expiring_moves_the_minimum_and_drops_whole_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let q = filled_queue(dir.path());
        q.expire_below(6).unwrap();
        assert_eq!(q.min_offset(), 6);
        assert_eq!(q.get(5).unwrap(), None);
        assert!(q.get(6).unwrap().is_some());
        assert_eq!(q.files().len(), 2, "entries 4..8 still hold 6 and 7");
        // Never backwards, never past the end.
        q.expire_below(2).unwrap();
        assert_eq!(q.min_offset(), 6);
        q.expire_below(99).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (10, 10));
        assert_eq!(q.files().len(), 1, "the file being written stays");
        drop(q);
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        q.recover(1_000_000).unwrap();
        assert_eq!(
            (q.min_offset(), q.max_offset()),
            (10, 10),
            "expiry is for good"
        );
    }

    #[test]
    fn expired_entries_stay_expired_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        for i in 0..7u64 {
            q.put(
                i,
                Entry {
                    phys_offset: i * 200,
                    size: 150,
                    tag_hash: 0,
                },
            )
            .unwrap();
        }
        q.expire_below(2).unwrap();
        q.expire_below(5).unwrap();
        drop(q);
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        q.recover(1_000_000).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (5, 7));
        assert_eq!(q.get(4).unwrap(), None);
        assert_eq!(q.get(5).unwrap().map(|e| e.phys_offset), Some(1000));
        assert_eq!(q.first_phys().unwrap(), Some(1000));
        // Everything expired, the end at a file boundary: the file holding the last entry
        // stays, so the queue's end (where the writer continues) survives a reopen.
        q.put(
            7,
            Entry {
                phys_offset: 1400,
                size: 150,
                tag_hash: 0,
            },
        )
        .unwrap();
        q.expire_below(8).unwrap();
        drop(q);
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        q.recover(1_000_000).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (8, 8));
        // A log cut below the expired start (records lost by a crash): the queue still
        // starts and ends at the expired start, so what is written next is readable.
        drop(q);
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        q.recover(1200).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (8, 8));
    }

    proptest! {
        #[test]
        fn entry_round_trips(p in any::<u64>(), s in (crate::record::MIN_RECORD_LEN as u32)..u32::MAX, t in any::<u64>()) {
            let e = Entry { phys_offset: p, size: s, tag_hash: t };
            prop_assert_eq!(Entry::decode(&e.encode()).unwrap(), Some(e));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Entry::decode(&b);
        }
    }
}
