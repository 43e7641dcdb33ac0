//! Index files: find messages by key or by message id within a time range.
//!
//! The RocketMQ index-file idea: a fixed hash table of slots, each holding the number of the
//! newest entry whose key hashes there; every entry links to the previous entry of its slot.
//! Files fill up and are replaced by new ones; a lookup walks the files whose time range
//! overlaps the query, newest first. Hash hits are confirmed against the message itself, so a
//! collision never returns a wrong message.
//!
//! On disk: `index/<20-digit sequence number>`, laid out as (little-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4 | magic `0xF31D_0001` |
//! | 4  | 4 | `slot_count` |
//! | 8  | 4 | `max_entries` |
//! | 12 | 4 | `entry_count`: entries in use, numbered 1..=entry_count (0 means "none") |
//! | 16 | 8 | `begin_timestamp` (ms) of the first entry |
//! | 24 | 8 | `end_timestamp` (ms) of the last entry |
//! | 32 | 8 | `begin_phys`: commit log offset of the first entry |
//! | 40 | 8 | `end_phys`: commit log offset of the last entry |
//! | 48 | 4 | CRC32C of bytes 0..48 (the header's own watermark) |
//! | 52 | 12 | reserved |
//! | 64 | 4 × slot_count | slots: newest entry number per hash slot |
//! | .. | 24 × max_entries | entries: `key_hash` u32, `prev` u32, `phys_offset` u64, `timestamp` i64 |
//!
//! Each file's header gives its own sizes, so files of different sizes coexist: new files are
//! sized from the configuration and capped on a nearly full disk. Room for a record's entries is
//! reserved before the record is acknowledged (see [`Index`]).
//!
//! Write order makes a crash harmless: the entry first, then its slot, then the header. A
//! slot or link that points at or past the header's `entry_count` is from an interrupted
//! write and is ignored (and repaired by the next write to that slot); entries must link to
//! strictly smaller numbers, so a damaged link cannot loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

const MAGIC: u32 = 0xF31D_0001;
/// Header size.
pub const HEADER_LEN: usize = 64;
/// Entry size.
pub const ENTRY_LEN: usize = 24;

/// The decoded header of an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub slot_count: u32,
    pub max_entries: u32,
    pub entry_count: u32,
    pub begin_timestamp: i64,
    pub end_timestamp: i64,
    pub begin_phys: u64,
    pub end_phys: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.slot_count.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_entries.to_le_bytes());
        b[12..16].copy_from_slice(&self.entry_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.begin_timestamp.to_le_bytes());
        b[24..32].copy_from_slice(&self.end_timestamp.to_le_bytes());
        b[32..40].copy_from_slice(&self.begin_phys.to_le_bytes());
        b[40..48].copy_from_slice(&self.end_phys.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Header> {
        if b.len() < HEADER_LEN {
            return Err(StoreError::malformed(
                "index header",
                format!("{} bytes", b.len()),
            ));
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        if u32_at(0) != MAGIC {
            return Err(StoreError::malformed(
                "index header",
                format!("bad magic {:#x}", u32_at(0)),
            ));
        }
        if crc32c::crc32c(&b[0..48]) != u32_at(48) {
            return Err(StoreError::malformed("index header", "checksum mismatch"));
        }
        let h = Header {
            slot_count: u32_at(4),
            max_entries: u32_at(8),
            entry_count: u32_at(12),
            begin_timestamp: u64_at(16) as i64,
            end_timestamp: u64_at(24) as i64,
            begin_phys: u64_at(32),
            end_phys: u64_at(40),
        };
        if h.slot_count == 0 || h.max_entries == 0 || h.entry_count > h.max_entries {
            return Err(StoreError::malformed(
                "index header",
                format!("impossible sizes {h:?}"),
            ));
        }
        Ok(h)
    }

    fn file_len(slot_count: u32, max_entries: u32) -> u64 {
        HEADER_LEN as u64 + 4 * slot_count as u64 + ENTRY_LEN as u64 * (max_entries as u64 + 1)
    }
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    pub key_hash: u32,
    pub prev: u32,
    pub phys_offset: u64,
    pub timestamp: i64,
}

impl Entry {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..4].copy_from_slice(&self.key_hash.to_le_bytes());
        b[4..8].copy_from_slice(&self.prev.to_le_bytes());
        b[8..16].copy_from_slice(&self.phys_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.timestamp.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Entry> {
        if b.len() != ENTRY_LEN {
            return Err(StoreError::malformed(
                "index entry",
                format!("{} bytes", b.len()),
            ));
        }
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[8..16]);
        let phys_offset = u64::from_le_bytes(x);
        x.copy_from_slice(&b[16..24]);
        Ok(Entry {
            key_hash: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            prev: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            phys_offset,
            timestamp: i64::from_le_bytes(x),
        })
    }
}

/// Hash of an index key: the topic and the key together, so equal keys of two topics differ.
pub fn key_hash(topic: &str, key: &str) -> u32 {
    let mut c = crc32c::crc32c(topic.as_bytes());
    c = crc32c::crc32c_append(c, &[0x1f]);
    crc32c::crc32c_append(c, key.as_bytes())
}

/// One index file.
#[derive(Debug)]
pub struct IndexFile {
    file: MappedFile,
    header: Mutex<Header>,
}

impl IndexFile {
    fn create(path: &Path, slot_count: u32, max_entries: u32) -> Result<IndexFile> {
        let file = MappedFile::create(path, Header::file_len(slot_count, max_entries))?;
        let header = Header {
            slot_count,
            max_entries,
            ..Default::default()
        };
        file.write_at(0, &header.encode());
        Ok(IndexFile {
            file,
            header: Mutex::new(header),
        })
    }

    fn open(path: &Path) -> Result<IndexFile> {
        let len = std::fs::metadata(path)
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?
            .len();
        let file = MappedFile::open(path, len)?;
        let header = Header::decode(file.slice(0, HEADER_LEN))?;
        if Header::file_len(header.slot_count, header.max_entries) != len {
            return Err(StoreError::malformed(
                "index file",
                format!("{} has the wrong length", path.display()),
            ));
        }
        Ok(IndexFile {
            file,
            header: Mutex::new(header),
        })
    }

    fn header(&self) -> Header {
        *self.header.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot_pos(h: &Header, hash: u32) -> usize {
        HEADER_LEN + 4 * (hash % h.slot_count) as usize
    }

    fn entry_pos(h: &Header, n: u32) -> usize {
        HEADER_LEN + 4 * h.slot_count as usize + ENTRY_LEN * n as usize
    }

    fn read_u32(&self, at: usize) -> u32 {
        let b = self.file.slice(at, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Adds an entry; `false` when the file is full.
    fn put(&self, hash: u32, phys_offset: u64, timestamp: i64) -> bool {
        let mut h = self.header.lock().unwrap_or_else(|p| p.into_inner());
        if h.entry_count >= h.max_entries {
            return false;
        }
        let n = h.entry_count + 1;
        let slot_at = Self::slot_pos(&h, hash);
        // A slot value >= n comes from a write a crash interrupted: follow its (valid) link.
        let mut prev = self.read_u32(slot_at);
        let mut guard = 0;
        while prev >= n && guard < 64 {
            prev = Entry::decode(
                self.file
                    .slice(Self::entry_pos(&h, prev.min(h.max_entries)), ENTRY_LEN),
            )
            .map(|e| e.prev)
            .unwrap_or(0);
            guard += 1;
        }
        if prev >= n {
            prev = 0;
        }
        let e = Entry {
            key_hash: hash,
            prev,
            phys_offset,
            timestamp,
        };
        self.file.write_at(Self::entry_pos(&h, n), &e.encode());
        self.file.write_at(slot_at, &n.to_le_bytes());
        if h.entry_count == 0 {
            h.begin_timestamp = timestamp;
            h.begin_phys = phys_offset;
        }
        h.entry_count = n;
        h.end_timestamp = h.end_timestamp.max(timestamp);
        h.end_phys = h.end_phys.max(phys_offset);
        self.file.write_at(0, &h.encode());
        true
    }

    /// Commit log offsets of entries with `hash` in `begin..=end` (ms), newest first.
    fn lookup(&self, hash: u32, begin: i64, end: i64, max: usize, out: &mut Vec<u64>) {
        let h = self.header();
        if h.entry_count == 0 || h.end_timestamp < begin || h.begin_timestamp > end {
            return;
        }
        let mut n = self.read_u32(Self::slot_pos(&h, hash));
        // Skip entries of a write a crash interrupted (numbered past the header's count).
        let mut guard = 0;
        while n > h.entry_count && n <= h.max_entries && guard < 64 {
            n = Entry::decode(self.file.slice(Self::entry_pos(&h, n), ENTRY_LEN))
                .map(|e| e.prev)
                .unwrap_or(0);
            guard += 1;
        }
        let mut steps = 0u32;
        while n != 0 && n <= h.entry_count && out.len() < max && steps <= h.entry_count {
            let Ok(e) = Entry::decode(self.file.slice(Self::entry_pos(&h, n), ENTRY_LEN)) else {
                break;
            };
            if e.key_hash == hash && e.timestamp >= begin && e.timestamp <= end {
                out.push(e.phys_offset);
            }
            if e.prev >= n {
                break; // links only go down; anything else is damage
            }
            n = e.prev;
            steps += 1;
        }
    }
}

/// All index files of a store.
///
/// Room is reserved before a record is acknowledged: the writer calls [`Index::reserve`] with
/// the number of entries the record will need, which allocates a spare file when the current
/// file and the spares cannot hold everything reserved so far. The dispatcher then only ever
/// fills files that exist, so a full disk refuses appends instead of stalling the dispatcher.
/// Counters are totals since open: `reserved` (by the writer) never exceeds `capacity`, and
/// the dispatcher's puts never exceed `reserved`.
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    slot_count: u32,
    max_entries: u32,
    files: Mutex<Vec<(u64, Arc<IndexFile>)>>,
    /// Files allocated ahead of need, in the order they will be used.
    spares: Mutex<Vec<(u64, Arc<IndexFile>)>>,
    /// Entries that fit in the current file and the spares, plus those put since open.
    capacity: AtomicU64,
    /// Entries the writer has reserved since open.
    reserved: AtomicU64,
    /// Entries put since open.
    used: AtomicU64,
    /// Sequence number of the next file created.
    next_seq: AtomicU64,
    /// Entries added since the last flush: an idle index costs no msync.
    dirty: AtomicBool,
}

/// Number of index entries a record with this message id and these keys gets.
pub fn entries_for(msg_id: Option<&str>, keys: Option<&str>) -> u64 {
    let keys = keys.map_or(0, |k| {
        k.split(crate::KEY_SEPARATOR)
            .filter(|k| !k.is_empty())
            .count()
    });
    u64::from(msg_id.is_some()) + keys as u64
}

impl Index {
    /// Opens the index files in `dir`. A file whose header is damaged is moved aside (it is a
    /// cache: lookups lose its entries, the commit log loses nothing). New files get
    /// `slot_count` slots and `max_entries` entries, fewer on a nearly full disk.
    pub fn open(dir: &Path, slot_count: u32, max_entries: u32) -> Result<Index> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(seq) = name.parse::<u64>() else {
                continue;
            };
            match IndexFile::open(&entry.path()) {
                Ok(f) => files.push((seq, Arc::new(f))),
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "damaged index file moved aside");
                    let _ = std::fs::rename(entry.path(), entry.path().with_extension("damaged"));
                }
            }
        }
        files.sort_by_key(|(s, _)| *s);
        let room = files.last().map_or(0, |(_, f)| {
            let h = f.header();
            u64::from(h.max_entries - h.entry_count)
        });
        Ok(Index {
            files: Mutex::new(files.clone()),
            dir: dir.to_path_buf(),
            slot_count,
            max_entries,
            spares: Mutex::new(Vec::new()),
            next_seq: AtomicU64::new(files.last().map_or(0, |(s, _)| s + 1)),
            capacity: AtomicU64::new(room),
            reserved: AtomicU64::new(0),
            used: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
        })
    }

    /// The highest commit log offset already indexed (re-dispatch skips records below it).
    pub fn end_phys(&self) -> Option<u64> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.iter().rev().find_map(|(_, f)| {
            let h = f.header();
            (h.entry_count > 0).then_some(h.end_phys)
        })
    }

    /// Creates the next index file, sized from the configuration and capped so that it takes
    /// at most a sixteenth of the free space.
    fn create_file(&self) -> Result<(u64, Arc<IndexFile>)> {
        let entries = crate::disk::capped_entries(
            &self.dir,
            u64::from(self.max_entries),
            crate::config::MIN_INDEX_ENTRIES.min(u64::from(self.max_entries)),
            ENTRY_LEN as u64 + 1,
            16,
        ) as u32;
        let slots =
            ((u64::from(self.slot_count) * u64::from(entries) / u64::from(self.max_entries))
                as u32)
                .max(1);
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let f = Arc::new(IndexFile::create(
            &self.dir.join(format!("{seq:020}")),
            slots,
            entries,
        )?);
        crate::checkpoint::sync_dir(&self.dir)?;
        self.capacity
            .fetch_add(u64::from(entries), Ordering::AcqRel);
        Ok((seq, f))
    }

    /// Bytes of a full-size index file.
    pub fn file_bytes(&self) -> u64 {
        Header::file_len(self.slot_count, self.max_entries)
    }

    /// Allocates spare files until `total` entries (counted like `reserved`) fit.
    fn ensure_capacity(&self, total: u64) -> Result<()> {
        if self.capacity.load(Ordering::Acquire) >= total {
            return Ok(());
        }
        let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        while self.capacity.load(Ordering::Acquire) < total {
            spares.push(self.create_file()?);
        }
        Ok(())
    }

    /// Makes room for a record that needs `entries` entries, allocating a file if needed.
    /// Called by the single writer before it acknowledges the record; a full disk is
    /// [`StoreError::DiskFull`] and reserves nothing. [`Index::commit_reserved`] follows once
    /// the record is written.
    pub fn reserve(&self, entries: u64) -> Result<()> {
        if entries == 0 {
            return Ok(());
        }
        self.ensure_capacity(self.reserved.load(Ordering::Acquire) + entries)
    }

    /// Whether a record needing `entries` entries fits in the files allocated already (so
    /// [`Index::reserve`] would not allocate).
    pub fn has_room(&self, entries: u64) -> bool {
        entries == 0
            || self.capacity.load(Ordering::Acquire)
                >= self.reserved.load(Ordering::Acquire) + entries
    }

    /// Counts `entries` as used by a written record (after a successful [`Index::reserve`]).
    pub fn commit_reserved(&self, entries: u64) {
        self.reserved.fetch_add(entries, Ordering::AcqRel);
    }

    /// Starts the writer's count after what recovery indexed, which took room of its own.
    pub fn sync_reserved_to_used(&self) {
        self.reserved
            .store(self.used.load(Ordering::Acquire), Ordering::Release);
    }

    /// Housekeeping: allocates the next file ahead of time once less than half a file of room
    /// is left, so the writer rarely waits for an allocation. One file ahead at most: on a
    /// nearly full disk files are smaller than configured, and filling half a configured file
    /// with them took a share of the free space again and again (half of a 48 MiB volume).
    pub fn prepare_spare(&self) -> Result<()> {
        let reserved = self.reserved.load(Ordering::Acquire);
        if self.capacity.load(Ordering::Acquire) >= reserved + u64::from(self.max_entries) / 2 {
            return Ok(());
        }
        let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        if spares.is_empty() {
            spares.push(self.create_file()?);
        }
        Ok(())
    }

    /// Indexes `key` of `topic` for the record at `phys_offset`. Uses room reserved by the
    /// writer; only when none was reserved (recovery) does it allocate a file itself.
    pub fn put(&self, topic: &str, key: &str, phys_offset: u64, timestamp: i64) -> Result<()> {
        let hash = key_hash(topic, key);
        self.dirty.store(true, Ordering::Release);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, f)) = files.last() {
            if f.put(hash, phys_offset, timestamp) {
                self.used.fetch_add(1, Ordering::AcqRel);
                return Ok(());
            }
        }
        let spare = {
            let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
            (!spares.is_empty()).then(|| spares.remove(0))
        };
        let (seq, f) = match spare {
            Some(s) => s,
            None => self.create_file()?,
        };
        f.put(hash, phys_offset, timestamp);
        self.used.fetch_add(1, Ordering::AcqRel);
        files.push((seq, f));
        Ok(())
    }

    /// Candidate commit log offsets for `key` of `topic` within `begin..=end` ms, newest first
    /// and without duplicates. Callers confirm each against the record.
    pub fn lookup(&self, topic: &str, key: &str, begin: i64, end: i64, max: usize) -> Vec<u64> {
        let hash = key_hash(topic, key);
        let files: Vec<Arc<IndexFile>> = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .map(|(_, f)| f.clone())
            .collect();
        let mut out = Vec::new();
        for f in files {
            f.lookup(hash, begin, end, max.saturating_mul(2).max(16), &mut out);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|o| seen.insert(*o));
        out
    }

    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // The last two files: a put may have just rolled over to a new one.
        let files: Vec<Arc<IndexFile>> = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .take(2)
            .map(|(_, f)| f.clone())
            .collect();
        for f in files {
            if let Err(e) = f.file.flush() {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Retention: deletes files whose every entry points below `log_min`.
    pub fn trim(&self, log_min: u64) -> Result<()> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        while files.len() > 1 {
            let h = files[0].1.header();
            if h.end_phys >= log_min {
                break;
            }
            let (_, f) = files.remove(0);
            std::fs::remove_file(f.file.path())
                .map_err(|e| StoreError::io("delete index file", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_keys_across_files_and_respects_time() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 8, 5).unwrap();
        for i in 0..12u64 {
            idx.put("t", &format!("k{}", i % 3), i * 100, 1000 + i as i64)
                .unwrap();
        }
        let hits = idx.lookup("t", "k1", 0, i64::MAX, 10);
        assert_eq!(hits, vec![1000, 700, 400, 100]);
        assert_eq!(idx.lookup("t", "k1", 1005, 1008, 10), vec![700]);
        assert!(
            idx.lookup("other", "k1", 0, i64::MAX, 10).is_empty(),
            "a key of another topic hashes elsewhere"
        );
        drop(idx);
        let idx = Index::open(dir.path(), 8, 5).unwrap();
        assert_eq!(
            idx.lookup("t", "k1", 0, i64::MAX, 10),
            vec![1000, 700, 400, 100]
        );
        assert_eq!(idx.end_phys(), Some(1100));
    }

    #[test]
    fn room_is_reserved_before_it_is_used_and_puts_never_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 4, 10).unwrap();
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files(), 0);
        idx.reserve(3).unwrap();
        assert_eq!(files(), 1, "a file is allocated for the first reservation");
        idx.commit_reserved(3);
        idx.reserve(7).unwrap();
        assert_eq!(files(), 1, "10 entries fit in one file");
        idx.commit_reserved(7);
        idx.reserve(1).unwrap();
        assert_eq!(files(), 2, "the 11th entry needs a spare, allocated now");
        idx.commit_reserved(1);
        // The dispatcher fills what was reserved without creating anything.
        crate::disk::set_allocation_budget(dir.path(), Some(0));
        for i in 0..11u64 {
            idx.put("t", &format!("k{i}"), i, i as i64).unwrap();
        }
        assert_eq!(files(), 2);
        assert!(matches!(idx.reserve(20), Err(StoreError::DiskFull { .. })));
        crate::disk::set_allocation_budget(dir.path(), None);
        for i in 0..11u64 {
            assert_eq!(idx.lookup("t", &format!("k{i}"), 0, i64::MAX, 4), vec![i]);
        }
    }

    #[test]
    fn interrupted_write_is_ignored_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let f = IndexFile::create(&dir.path().join("x"), 4, 10).unwrap();
        assert!(f.put(7, 100, 1));
        // Simulate a crash after entry 2 and its slot were written but before the header.
        let h = f.header();
        let e = Entry {
            key_hash: 7,
            prev: 1,
            phys_offset: 200,
            timestamp: 2,
        };
        f.file.write_at(IndexFile::entry_pos(&h, 2), &e.encode());
        f.file
            .write_at(IndexFile::slot_pos(&h, 7), &2u32.to_le_bytes());
        let mut out = vec![];
        f.lookup(7, 0, 10, 10, &mut out);
        assert_eq!(out, vec![100], "uncommitted entry must not be served");
        assert!(f.put(7, 300, 3));
        out.clear();
        f.lookup(7, 0, 10, 10, &mut out);
        assert_eq!(
            out,
            vec![300, 100],
            "the chain must still reach the older entry"
        );
    }

    proptest! {
        #[test]
        fn header_round_trips(sc in 1u32.., me in 1u32.., ec in any::<u32>(), t in any::<i64>(), p in any::<u64>()) {
            let h = Header { slot_count: sc, max_entries: me, entry_count: ec.min(me), begin_timestamp: t, end_timestamp: t, begin_phys: p, end_phys: p };
            prop_assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Header::decode(&b);
            let _ = Entry::decode(&b);
            if b.len() >= ENTRY_LEN { let _ = Entry::decode(&b[..ENTRY_LEN]); }
        }

        #[test]
        fn every_put_is_found(keys in proptest::collection::vec("[a-z]{1,4}", 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let idx = Index::open(dir.path(), 7, 16).unwrap();
            for (i, k) in keys.iter().enumerate() {
                idx.put("t", k, i as u64, i as i64).unwrap();
            }
            for (i, k) in keys.iter().enumerate() {
                prop_assert!(idx.lookup("t", k, 0, i64::MAX, 1000).contains(&(i as u64)));
            }
        }
    }
}
