//! The commit log: one append-only log for all topics, split into fixed-size segment files.
//!
//! On disk: `commitlog/<20-digit base offset>`, each exactly `segment_size` bytes, the base
//! offset being the global byte position of the segment's first byte. Records (see
//! [`crate::record`]) never straddle two segments: a record that does not fit in what is left
//! is preceded by an end-of-segment filler and goes to the next segment.
//!
//! At open the last segment's length is not trusted: a file cut short (a copy, a filesystem
//! that lost its tail) is extended with zeros and scanned from its start, and the record the
//! cut went through is dropped like any torn tail, with one log line naming the file and the
//! bytes dropped. A segment before the last one that is short is refused: records after it
//! would follow a hole. Trailing segments allocated ahead of need and never written are removed.
//!
//! Concurrency: one writer at a time (the store's append lock) writes at `write_pos` and then
//! publishes the new end with a release store; readers only touch bytes below the published
//! end, loaded with acquire. Segments are kept in a list of `Arc`s so retention can drop a
//! segment while a reader still holds it (the mapping outlives the unlinked file).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tracing::{info, warn};

use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;
use crate::record::{self, RecordView, Slot, StoredMessage};

/// A segment: its base offset and its mapping.
#[derive(Debug)]
pub struct Segment {
    pub base: u64,
    pub file: MappedFile,
}

/// Where a recovery scan ended and what it found on the way.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// End of the last valid record: appends continue here.
    pub end: u64,
    /// Number of valid records scanned.
    pub records: u64,
    /// Where the scan started (re-dispatch starts there at the latest).
    pub scanned_from: u64,
    /// Bytes of the torn record cut from the tail (its bytes that were not zero).
    pub truncated_bytes: u64,
    /// Interior corruption: (offset, reason) of records that failed their checks below the
    /// durable point. They are never served.
    pub corrupt: Vec<(u64, String)>,
    /// Segments moved aside because they followed a torn tail.
    pub quarantined: Vec<PathBuf>,
}

/// The last segment as found at open when its file was shorter than a segment.
#[derive(Debug, Clone)]
struct ShortTail {
    base: u64,
    /// The file's length before it was extended.
    len: u64,
    path: PathBuf,
}

/// The commit log's segments and positions.
#[derive(Debug)]
pub struct CommitLog {
    dir: PathBuf,
    segment_size: u64,
    /// Set at open when the last segment was short (see [`CommitLog::open`]).
    short_tail: Option<ShortTail>,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// A segment allocated ahead of need, so a roll does not wait for `fallocate`.
    spare: Mutex<Option<Segment>>,
    /// Published end of complete records.
    write_pos: AtomicU64,
    /// Everything below is durable.
    flushed_pos: AtomicU64,
    /// The lowest offset still kept.
    min_pos: AtomicU64,
    /// A descriptor of the segment appends last went to, with its base (see
    /// [`CommitLog::write_through`]). One at a time: the mappings need no descriptor, and
    /// thousands of kept segments must not hold one each.
    write_fd: Mutex<Option<(u64, std::fs::File)>>,
}

fn segment_name(base: u64) -> String {
    format!("{base:020}")
}

impl CommitLog {
    /// Opens the segments in `dir` (creating the directory) without scanning them.
    pub fn open(dir: &Path, segment_size: u64) -> Result<CommitLog> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(base) = name.parse::<u64>() {
                    if !MappedFile::remove_if_unallocated(&entry.path(), segment_size)? {
                        bases.push(base);
                    }
                }
            }
        }
        bases.sort_unstable();
        // Segments allocated ahead of need and never written (their first bytes are zero)
        // hold nothing: remove them, so the segment the log really ends in is the last one.
        while bases.len() > 1 {
            let path = dir.join(segment_name(bases[bases.len() - 1]));
            if !starts_with_zeros(&path)? {
                break;
            }
            std::fs::remove_file(&path)
                .map_err(|e| StoreError::io(format!("remove unused {}", path.display()), e))?;
            bases.pop();
        }
        let mut segments = Vec::with_capacity(bases.len());
        let mut short_tail = None;
        for (i, base) in bases.iter().enumerate() {
            if base % segment_size != 0 {
                return Err(StoreError::Config {
                    field: "segment_size",
                    reason: format!("segment {base} is not a multiple of {segment_size}: the log was written with another segment size"),
                });
            }
            if i > 0 && bases[i - 1] + segment_size != *base {
                warn!(
                    missing_after = bases[i - 1],
                    next = base,
                    "gap between commit log segments"
                );
            }
            let path = dir.join(segment_name(*base));
            let file = if i + 1 == bases.len() {
                // The last segment's length is not trusted: a file cut short (a copy, a
                // filesystem that lost its tail) is extended with zeros, and recovery cuts the
                // record the cut went through like any torn tail.
                let (file, was) = MappedFile::open_extending(&path, segment_size)?;
                if let Some(len) = was {
                    short_tail = Some(ShortTail {
                        base: *base,
                        len,
                        path: path.clone(),
                    });
                }
                file
            } else {
                MappedFile::open(&path, segment_size).map_err(|e| match e {
                    StoreError::Malformed { reason, .. } => StoreError::malformed(
                        "commit log segment",
                        format!(
                            "{reason}; a segment before the last one was cut short, so \
                             acknowledged records may be missing: restore it or move it aside"
                        ),
                    ),
                    other => other,
                })?
            };
            segments.push(Arc::new(Segment { base: *base, file }));
        }
        let min = segments.first().map(|s| s.base).unwrap_or(0);
        Ok(CommitLog {
            dir: dir.to_path_buf(),
            segment_size,
            short_tail,
            segments: RwLock::new(segments),
            spare: Mutex::new(None),
            write_pos: AtomicU64::new(min),
            flushed_pos: AtomicU64::new(min),
            min_pos: AtomicU64::new(min),
            write_fd: Mutex::new(None),
        })
    }

    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    pub fn write_pos(&self) -> u64 {
        self.write_pos.load(Ordering::Acquire)
    }

    pub fn flushed_pos(&self) -> u64 {
        self.flushed_pos.load(Ordering::Acquire)
    }

    pub fn min_pos(&self) -> u64 {
        self.min_pos.load(Ordering::Acquire)
    }

    fn segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn segments_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Segment>>> {
        self.segments.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The segment holding `offset`, if it is kept.
    pub fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments();
        let first = segs.first()?.base;
        if offset < first {
            return None;
        }
        let idx = ((offset - first) / self.segment_size) as usize;
        segs.get(idx)
            .filter(|s| s.base <= offset && offset < s.base + self.segment_size)
            .cloned()
    }

    /// Number of segments and their total size on disk.
    pub fn disk_usage(&self) -> (usize, u64) {
        let n = self.segments().len();
        (n, n as u64 * self.segment_size)
    }

    /// Scans from `from` to the end of the log, checking every record, and sets the write
    /// position after the last valid one. `durable` is the offset below which data was known
    /// to be on disk: a bad record below it is interior damage (reported, skipped, never
    /// served); at or above it, it is a torn tail (cut, later segments quarantined).
    pub fn recover(&self, from: u64, durable: u64) -> Result<ScanReport> {
        let mut report = ScanReport::default();
        let segs: Vec<Arc<Segment>> = self.segments().clone();
        let Some(first) = segs.first() else {
            report.end = 0;
            return Ok(report);
        };
        // A short last segment lost what followed its end, whatever the checkpoint says: scan
        // it from its start, so the cut is found wherever it is.
        let from = match &self.short_tail {
            Some(t) => from.min(t.base),
            None => from,
        };
        let mut pos = from.max(first.base);
        if pos >= first.base + self.segment_size * segs.len() as u64 {
            // The checkpoint points past the last segment (files lost?): scan everything.
            warn!(
                from,
                "checkpoint beyond the last segment; scanning the whole log"
            );
            pos = first.base;
        }
        let seg_size = self.segment_size as usize;
        // A missing segment file ends the log: what follows a gap cannot be trusted in order.
        let contiguous = segs
            .windows(2)
            .position(|w| w[0].base + self.segment_size != w[1].base)
            .map(|i| i + 1);
        if let Some(first_after_gap) = contiguous {
            warn!(
                after = segs[first_after_gap - 1].base,
                "gap in the commit log segments; later segments are set aside"
            );
        }
        let usable = contiguous.unwrap_or(segs.len());
        let segs_all = segs.clone();
        let segs: Vec<Arc<Segment>> = segs[..usable].to_vec();
        if pos >= first.base + self.segment_size * segs.len() as u64 {
            pos = first.base;
        }
        report.scanned_from = pos;
        let mut torn_cut = false;
        let mut idx = ((pos - first.base) / self.segment_size) as usize;
        'segments: while idx < segs.len() {
            let seg = &segs[idx];
            let mut at = (pos - seg.base) as usize;
            loop {
                let rest = seg.file.slice(at, seg_size - at);
                match record::probe(rest, seg.base + at as u64) {
                    Ok(Slot::Message(len)) => {
                        report.records += 1;
                        at += len as usize;
                        pos = seg.base + at as u64;
                    }
                    Ok(Slot::Filler) => {
                        // The loop condition ends the scan after the last segment.
                        idx += 1;
                        pos = seg.base + self.segment_size;
                        continue 'segments;
                    }
                    Ok(Slot::Empty) => break 'segments,
                    Err(StoreError::Corrupt { offset, reason }) => {
                        // Interior damage if the data was known durable or anything valid
                        // follows; a torn tail otherwise (segments are zero-filled when
                        // created, so nothing valid can follow a real tail).
                        let short = self.short_tail.as_ref().filter(|t| t.base == seg.base);
                        // Past a cut-short file's old length there is nothing but the zeros it
                        // was extended with: neither search nor rewrite them (a default 1 GiB
                        // segment would take minutes to scan byte by byte and to dirty).
                        let end = short.map_or(seg_size, |t| (t.len as usize).min(seg_size));
                        let next_here = resync(seg.file.slice(0, end), at + 1, seg.base);
                        let later_valid = segs[idx + 1..].iter().any(|s| {
                            matches!(
                                record::probe(s.file.slice(0, seg_size), s.base),
                                Ok(Slot::Message(_))
                            )
                        });
                        if next_here.is_some()
                            || later_valid
                            || (offset < durable && short.is_none())
                        {
                            warn!(offset, %reason, "corrupt record in the commit log; it will not be served");
                            report.corrupt.push((offset, reason));
                            match next_here {
                                Some(next) => {
                                    at = next;
                                    pos = seg.base + at as u64;
                                    continue;
                                }
                                None => {
                                    // The loop condition ends the scan after the last segment.
                                    idx += 1;
                                    pos = seg.base + self.segment_size;
                                    continue 'segments;
                                }
                            }
                        }
                        let tail = seg.file.slice(at, end.saturating_sub(at));
                        let dropped = tail.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
                        match short {
                            Some(t) => warn!(
                                file = %seg.file.path().display(),
                                offset,
                                bytes_dropped = dropped,
                                file_length = t.len,
                                segment_size = self.segment_size,
                                below_checkpoint = offset < durable,
                                %reason,
                                "commit log segment was cut short: extended with zeros and its torn last record dropped"
                            ),
                            None => warn!(
                                file = %seg.file.path().display(),
                                offset,
                                bytes_dropped = dropped,
                                %reason,
                                "torn tail in the commit log: record dropped"
                            ),
                        }
                        torn_cut = true;
                        report.truncated_bytes += dropped as u64;
                        // Everything after the last byte not zero is zero already.
                        seg.file.slice_mut(at, dropped).fill(0);
                        if let Err(e) = seg.file.flush_range(at, dropped) {
                            return Err(StoreError::io(
                                format!("flush truncated tail of {}", seg.file.path().display()),
                                e,
                            ));
                        }
                        break 'segments;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(t) = self.short_tail.as_ref().filter(|_| !torn_cut) {
            warn!(
                file = %t.path.display(),
                file_length = t.len,
                segment_size = self.segment_size,
                "commit log segment was cut short at a record boundary: extended with zeros, no record dropped"
            );
        }
        // Segments after the one where the log ends hold nothing we can trust in order:
        // move them aside rather than delete them, so an operator can inspect them.
        let end_idx = ((pos.max(first.base) - first.base) / self.segment_size) as usize;
        let keep = (end_idx + 1).min(segs.len());
        let segs = segs_all;
        if keep < segs.len() {
            let mut list = self.segments_mut();
            for seg in list.drain(keep..) {
                let has_data = !matches!(
                    record::probe(seg.file.slice(0, seg_size), seg.base),
                    Ok(Slot::Empty)
                );
                if has_data {
                    let q = seg.file.path().with_extension("quarantined");
                    warn!(segment = %seg.file.path().display(), "segment after the end of the log moved aside");
                    std::fs::rename(seg.file.path(), &q)
                        .map_err(|e| StoreError::io("quarantine segment", e))?;
                    report.quarantined.push(q);
                } else {
                    let _ = std::fs::remove_file(seg.file.path());
                }
            }
        }
        report.end = pos;
        self.write_pos.store(pos, Ordering::Release);
        self.flushed_pos
            .store(pos.min(durable.max(self.min_pos())), Ordering::Release);
        info!(end = pos, records = report.records, "commit log recovered");
        Ok(report)
    }

    /// Marks everything up to the write position durable after a full flush at open.
    pub fn set_flushed(&self, pos: u64) {
        self.flushed_pos.store(pos, Ordering::Release);
    }

    /// Positions the log for the next append of `len` bytes at the current write position:
    /// returns the segment and offset to write at, writing a filler and rolling to a new
    /// segment when needed. Called only by the single writer.
    pub fn reserve(&self, len: usize) -> Result<(Arc<Segment>, u64)> {
        if len as u64 > self.segment_size {
            return Err(StoreError::RecordTooLarge {
                size: len,
                segment_size: self.segment_size,
            });
        }
        let pos = self.write_pos.load(Ordering::Acquire);
        if let Some(seg) = self.segment_for(pos) {
            let at = (pos - seg.base) as usize;
            let left = self.segment_size as usize - at;
            if len <= left {
                return Ok((seg, pos));
            }
            let next_base = seg.base + self.segment_size;
            let new = self.add_segment(next_base)?;
            if left >= record::MIN_FILLER {
                record::write_filler(seg.file.slice_mut(at, left));
            }
            self.write_pos.store(next_base, Ordering::Release);
            return Ok((new, next_base));
        }
        // No segment yet (empty log) or the log ended exactly at a segment boundary.
        let base = pos - pos % self.segment_size;
        let new = self.add_segment(base)?;
        Ok((new, pos))
    }

    /// Where an append of `len` bytes would go if it fits in the active segment without a
    /// roll (what [`CommitLog::reserve`] then returns without allocating); `None` otherwise.
    pub fn room_in_active(&self, len: usize) -> Option<u64> {
        let pos = self.write_pos.load(Ordering::Acquire);
        let seg = self.segment_for(pos)?;
        let left = self.segment_size - (pos - seg.base);
        (len as u64 <= left).then_some(pos)
    }

    /// Adds the segment starting at `base` to the log, taking the spare or allocating it.
    ///
    /// The spare lock is held until the segment is in the list: `prepare_spare` decides from
    /// that list whether the next segment exists, and a roll it could see half done (file
    /// allocated, segment not listed yet) would have it allocate the live segment's file
    /// again, and remove it when that allocation fails on a full disk.
    fn add_segment(&self, base: u64) -> Result<Arc<Segment>> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let new = self.take_spare_or_create(&mut spare, base)?;
        #[cfg(test)]
        tests::in_roll();
        let mut segs = self.segments_mut();
        segs.push(new.clone());
        if segs.len() == 1 {
            self.min_pos.store(base, Ordering::Release);
        }
        Ok(new)
    }

    /// Called with the spare lock held (see [`CommitLog::add_segment`]).
    fn take_spare_or_create(&self, spare: &mut Option<Segment>, base: u64) -> Result<Arc<Segment>> {
        if let Some(s) = spare.take() {
            if s.base == base {
                return Ok(Arc::new(s));
            }
            if self.segment_for(s.base).is_none() && s.base > base {
                // Allocated for a later roll: keep it.
                *spare = Some(s);
            } else if self.segment_for(s.base).is_none() {
                let _ = std::fs::remove_file(s.file.path());
            }
        }
        let file = MappedFile::create(&self.dir.join(segment_name(base)), self.segment_size)?;
        crate::checkpoint::sync_dir(&self.dir)?;
        Ok(Arc::new(Segment { base, file }))
    }

    /// Allocates the next segment ahead of time when the active one is half full, so the
    /// writer's roll is a pointer swap. Called from the background housekeeping thread.
    pub fn prepare_spare(&self) -> Result<()> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let pos = self.write_pos();
        let Some(seg) = self.segment_for(pos) else {
            return Ok(());
        };
        if pos - seg.base < self.segment_size / 2 {
            return Ok(());
        }
        let next = seg.base + self.segment_size;
        if spare.as_ref().map(|s| s.base) == Some(next) || self.segment_for(next).is_some() {
            return Ok(());
        }
        let file = MappedFile::create(&self.dir.join(segment_name(next)), self.segment_size)?;
        crate::checkpoint::sync_dir(&self.dir)?;
        if let Some(old) = spare.replace(Segment { base: next, file }) {
            if self.segment_for(old.base).is_none() && old.base != next {
                let _ = std::fs::remove_file(old.file.path());
            }
        }
        Ok(())
    }

    /// Copies `bytes` into `seg` at log offset `pos` with one `pwrite` through the file's
    /// descriptor rather than through the mapping. Called only by the single writer, for a
    /// range it owns until it publishes it.
    ///
    /// Why not a copy into the mapping: a page first written through a shared mapping is
    /// allocated and zeroed by the kernel before the copy (the file's blocks are allocated
    /// but unwritten), its table entry is made writable, and each flush write-protects it
    /// again, which costs a TLB shootdown on every core the process runs on. A `pwrite`
    /// fills whole pages without zeroing them and leaves no writable entry to revoke; readers
    /// see the same page cache through the mapping. With batches of 32 records the zeroing and
    /// the shootdowns took 40 % of the server's CPU (2026-12-04).
    pub fn write_through(&self, seg: &Segment, pos: u64, bytes: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let at = pos - seg.base;
        if at + bytes.len() as u64 > self.segment_size {
            return Err(StoreError::malformed(
                "append",
                format!("{} bytes at {pos} cross the segment end", bytes.len()),
            ));
        }
        let mut fd = self.write_fd.lock().unwrap_or_else(|p| p.into_inner());
        if fd.as_ref().map(|(base, _)| *base) != Some(seg.base) {
            let path = seg.file.path();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
            *fd = Some((seg.base, f));
        }
        let Some((_, f)) = fd.as_ref() else {
            return Err(StoreError::malformed(
                "append",
                "no descriptor for the segment",
            ));
        };
        f.write_all_at(bytes, at)
            .map_err(|e| StoreError::io(format!("write {}", seg.file.path().display()), e))
    }

    /// Writes `bytes` (whole records copied from another replica's log) at `pos`, the current
    /// end, creating the segment `pos` starts when it is a segment boundary; `filler_to` (the
    /// end of `pos`'s segment) closes the segment with a filler after the bytes, as the other
    /// replica's log did. The bytes never cross a segment boundary. Called only by the single
    /// writer; the caller publishes the new end.
    pub fn write_at(&self, pos: u64, bytes: &[u8], filler_to: Option<u64>) -> Result<u64> {
        let base = pos - pos % self.segment_size;
        let seg = match self.segment_for(pos) {
            Some(s) => s,
            None => self.add_segment(base)?,
        };
        let end_of_segment = seg.base + self.segment_size;
        if pos + bytes.len() as u64 > end_of_segment {
            return Err(StoreError::malformed(
                "replicated batch",
                format!(
                    "{} bytes at {pos} cross the segment end {end_of_segment}",
                    bytes.len()
                ),
            ));
        }
        self.write_through(&seg, pos, bytes)?;
        let mut end = pos + bytes.len() as u64;
        if let Some(to) = filler_to {
            if to != end_of_segment {
                return Err(StoreError::malformed(
                    "replicated batch",
                    format!("filler to {to} is not the segment end {end_of_segment}"),
                ));
            }
            let left = (to - end) as usize;
            if left >= record::MIN_FILLER {
                record::write_filler(seg.file.slice_mut((end - seg.base) as usize, left));
            }
            end = to;
        }
        Ok(end)
    }

    /// Cuts the log back to `offset`: zeroes `offset..write_pos` (so no recovery can find a cut
    /// record again), drops segments wholly past it, and makes the zeroes durable. Called only
    /// by the single writer.
    pub fn truncate_to(&self, offset: u64) -> Result<()> {
        let end = self.write_pos();
        if offset >= end {
            return Ok(());
        }
        let mut pos = offset;
        while pos < end {
            let Some(seg) = self.segment_for(pos) else {
                break;
            };
            let at = (pos - seg.base) as usize;
            let to = end.min(seg.base + self.segment_size);
            let n = (to - pos) as usize;
            seg.file.slice_mut(at, n).fill(0);
            seg.file
                .flush_range(at, n)
                .map_err(|e| StoreError::io("flush a truncated commit log range", e))?;
            pos = to;
        }
        let keep_base = offset - offset % self.segment_size;
        // The descriptor may name a segment removed below, whose base a new file will take.
        *self.write_fd.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let dropped: Vec<Arc<Segment>> = {
            let mut segs = self.segments_mut();
            let (keep, drop): (Vec<_>, Vec<_>) = segs
                .drain(..)
                .partition(|s| s.base <= keep_base || s.base < offset);
            *segs = keep;
            drop
        };
        for s in dropped {
            std::fs::remove_file(s.file.path()).map_err(|e| {
                StoreError::io(
                    format!("delete truncated segment {}", s.file.path().display()),
                    e,
                )
            })?;
        }
        crate::checkpoint::sync_dir(&self.dir)?;
        self.write_pos.store(offset, Ordering::Release);
        let flushed = self.flushed_pos();
        if flushed > offset {
            self.flushed_pos.store(offset, Ordering::Release);
        }
        Ok(())
    }

    /// Publishes the new end of the log after the writer filled `..end`.
    pub fn publish(&self, end: u64) {
        self.write_pos.store(end, Ordering::Release);
    }

    /// Makes `flushed_pos..target` durable, segment by segment.
    pub fn flush_to(&self, target: u64) -> std::io::Result<()> {
        let mut from = self.flushed_pos();
        if target <= from {
            return Ok(());
        }
        while from < target {
            let Some(seg) = self.segment_for(from) else {
                break;
            };
            let seg_end = seg.base + self.segment_size;
            let to = target.min(seg_end);
            let at = (from - seg.base) as usize;
            seg.file.flush_range(at, (to - from) as usize)?;
            from = if to == seg_end { seg_end } else { to };
        }
        self.flushed_pos.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Reads and verifies the record at `offset`.
    pub fn read(&self, offset: u64) -> Result<StoredMessage> {
        self.with_record(offset, |v| v.to_message())
    }

    /// Verifies the record at `offset` and hands it to `f` in place (no copy).
    pub fn with_record<R>(&self, offset: u64, f: impl FnOnce(RecordView<'_>) -> R) -> Result<R> {
        let end = self.write_pos();
        let min = self.min_pos();
        if offset < min || offset >= end {
            return Err(StoreError::OffsetOutOfRange {
                offset,
                min,
                max: end,
            });
        }
        let seg = self
            .segment_for(offset)
            .ok_or(StoreError::OffsetOutOfRange {
                offset,
                min,
                max: end,
            })?;
        let at = (offset - seg.base) as usize;
        let limit = ((end - offset) as usize).min(self.segment_size as usize - at);
        Ok(f(record::view(seg.file.slice(at, limit), offset)?))
    }

    /// Calls `f` with the raw bytes of every valid record in `from..to` (already published),
    /// in order, and `damaged` with the offset and error of every record that fails its checks
    /// (stepped over: never handed to `f`). Records at or past `checked_from` were checked
    /// when this process wrote or received them: their framing is checked, not their checksum
    /// again (see [`record::probe_framing`]); `u64::MAX` checks every one. Returns the offset
    /// after the last record visited; an error from `f` stops the walk and is returned.
    pub fn for_each_raw(
        &self,
        from: u64,
        to: u64,
        checked_from: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
        mut damaged: impl FnMut(u64, &StoreError),
    ) -> Result<u64> {
        let mut pos = from.max(self.min_pos());
        while pos < to {
            let Some(seg) = self.segment_for(pos) else {
                break;
            };
            let at = (pos - seg.base) as usize;
            let seg_len = self.segment_size as usize;
            let rest = seg.file.slice(at, seg_len - at);
            let slot = if pos >= checked_from {
                record::probe_framing(rest, pos)
            } else {
                record::probe(rest, pos)
            };
            match slot {
                Ok(Slot::Message(len)) => {
                    f(pos, &rest[..len as usize])?;
                    pos += len as u64;
                }
                Ok(Slot::Filler) => pos = seg.base + self.segment_size,
                Ok(Slot::Empty) => break,
                Err(e) => {
                    // Step over it so dispatch never stalls.
                    damaged(pos, &e);
                    match resync(seg.file.slice(0, seg_len), at + 1, seg.base) {
                        Some(next) => pos = seg.base + next as u64,
                        None => pos = seg.base + self.segment_size,
                    }
                }
            }
        }
        Ok(pos)
    }

    /// Deletes whole segments from the oldest while `should_delete(segment base, file
    /// modification time)` says so, never the segment holding the write position. Returns the
    /// new lowest offset.
    pub fn delete_oldest(
        &self,
        mut should_delete: impl FnMut(u64, std::time::SystemTime, u64) -> bool,
    ) -> Result<u64> {
        let write = self.write_pos();
        loop {
            let (victim, total) = {
                let segs = self.segments();
                let total = segs.len() as u64 * self.segment_size;
                match segs.first() {
                    Some(s) if s.base + self.segment_size <= write && segs.len() > 1 => {
                        (s.clone(), total)
                    }
                    _ => break,
                }
            };
            let mtime = std::fs::metadata(victim.file.path())
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::now());
            if !should_delete(victim.base, mtime, total) {
                break;
            }
            {
                let mut segs = self.segments_mut();
                if segs.first().map(|s| s.base) == Some(victim.base) {
                    segs.remove(0);
                }
                let new_min = segs.first().map(|s| s.base).unwrap_or(write);
                self.min_pos.store(new_min, Ordering::Release);
            }
            std::fs::remove_file(victim.file.path()).map_err(|e| {
                StoreError::io(format!("delete {}", victim.file.path().display()), e)
            })?;
            info!(
                segment = victim.base,
                "deleted commit log segment by retention"
            );
        }
        Ok(self.min_pos())
    }

    /// Sets the lowest kept offset (used at open from the first segment).
    pub fn set_min(&self, min: u64) {
        self.min_pos.store(min, Ordering::Release);
    }
}

/// True when the file at `path` begins with a zero record header (nothing was written in it).
fn starts_with_zeros(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; record::MIN_FILLER];
    let mut f = std::fs::File::open(path)
        .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::io(format!("read {}", path.display()), e)),
        }
    }
    Ok(head.iter().all(|b| *b == 0))
}

/// Finds the next position in `seg` at or after `from` where a valid record or filler starts.
/// Used only to step over interior damage; records are not aligned, so this tries every byte.
fn resync(seg: &[u8], from: usize, base: u64) -> Option<usize> {
    let magic = record::MAGIC_MESSAGE.to_le_bytes();
    let mut at = from;
    while at + record::MIN_RECORD_LEN <= seg.len() {
        if seg[at + 8] == magic[0] && seg[at + 9] == magic[1] {
            if let Ok(Slot::Message(_)) = record::probe(&seg[at..], base + at as u64) {
                return Some(at);
            }
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::mpsc;
    use std::time::Duration;

    thread_local! {
        /// Runs on the writer's thread in the middle of a roll: after the new segment's file
        /// is allocated, before the roll is complete.
        static ROLL_HOOK: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
    }

    pub(super) fn in_roll() {
        ROLL_HOOK.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f();
            }
        });
    }

    /// Appends one small record through `reserve` (as the store's writer does).
    fn append(log: &CommitLog, id: &str) -> u64 {
        let mut properties = std::collections::BTreeMap::new();
        properties.insert(crate::PROP_MSG_ID.to_string(), id.to_string());
        let msg = crate::NewMessage {
            topic: "t".into(),
            properties,
            body: vec![7u8; 1000].into(),
            ..Default::default()
        };
        let len = record::encoded_len(&msg).unwrap();
        let (seg, pos) = log.reserve(len).unwrap();
        let out = seg.file.slice_mut((pos - seg.base) as usize, len);
        record::encode(&msg, None, out).unwrap();
        record::seal(out, 0, pos, 0);
        log.publish(pos + len as u64);
        pos
    }

    /// The housekeeping thread allocates the next segment ahead of time (`prepare_spare`)
    /// while the writer rolls to that same segment because no spare was ready. It must not
    /// take the writer's new, live segment for a spare to allocate: on a full disk that
    /// allocation fails, and the failed file used to be removed — the live segment's file,
    /// so every record acknowledged in it was gone after a restart.
    #[test]
    fn a_spare_allocated_during_a_roll_never_removes_the_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 64 << 10;
        // Room for two segments, not three.
        crate::disk::set_allocation_budget(dir.path(), Some(2 * seg + seg / 2));
        let log = Arc::new(CommitLog::open(dir.path(), seg).unwrap());
        log.recover(0, 0).unwrap();
        let mut written = vec![append(&log, "first")];
        // More than half full, no spare prepared (the housekeeping thread was not scheduled).
        while log.write_pos() < seg / 2 {
            written.push(append(&log, "fill"));
        }
        // The writer is preempted in the middle of its roll; the housekeeping thread runs.
        let (done_tx, done_rx) = mpsc::channel();
        let spare_thread = Arc::new(Mutex::new(None));
        {
            let log = log.clone();
            let spare_thread = spare_thread.clone();
            ROLL_HOOK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    let log = log.clone();
                    let done_tx = done_tx.clone();
                    let t = std::thread::spawn(move || {
                        let r = log.prepare_spare();
                        let _ = done_tx.send(());
                        r
                    });
                    *spare_thread.lock().unwrap() = Some(t);
                    // Give it time to run (it may also wait for the roll to finish).
                    let _ = done_rx.recv_timeout(Duration::from_millis(500));
                }))
            });
        }
        while log.write_pos() < seg {
            written.push(append(&log, "roll"));
        }
        ROLL_HOOK.with(|h| *h.borrow_mut() = None);
        let t = spare_thread.lock().unwrap().take().expect("rolled");
        let _ = t.join().unwrap();
        written.push(append(&log, "after"));
        let end = log.write_pos();
        log.flush_to(end).unwrap();
        drop(log);
        crate::disk::set_allocation_budget(dir.path(), None);

        assert!(
            dir.path().join(segment_name(seg)).exists(),
            "the live segment's file was removed"
        );
        let log = CommitLog::open(dir.path(), seg).unwrap();
        let report = log.recover(0, end).unwrap();
        assert_eq!(report.end, end, "records lost at reopen");
        assert_eq!(report.records, written.len() as u64);
        for pos in written {
            log.read(pos).unwrap();
        }
    }
}
