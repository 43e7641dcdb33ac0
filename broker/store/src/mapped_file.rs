//! A fixed-size file mapped into memory, the building block of commit log segments,
//! consume queue files and index files.
//!
//! Files are fully allocated with `posix_fallocate` when created, so a later write into the
//! map can never hit a hole on a full disk (which would kill the process with SIGBUS): a full
//! disk shows up here, as an error on creation, and nowhere else. Writers and readers share one
//! [`MmapRaw`] (commit log appends write through the file descriptor instead, into the same
//! page cache: see `CommitLog::write_through`); the owners of each file guarantee that a byte
//! range is written by one thread before it is published (with release/acquire atomics) to
//! readers, so no range is read while it is written.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::MmapRaw;

use crate::error::{Result, StoreError};

/// One memory-mapped file of fixed size.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: MmapRaw,
    len: usize,
}

// SAFETY: the map is plain memory shared between threads; callers uphold the
// one-writer-per-range and publish-before-read discipline described in the module docs.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}

/// True when an I/O error means the disk is out of space.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Allocates `0..len` of `file` on disk (zero-filling what lies beyond its end), so that later
/// writes through a mapping cannot fail for lack of space.
fn allocate(file: &File, path: &Path, len: u64) -> Result<()> {
    let full = || StoreError::DiskFull {
        detail: format!("cannot allocate {len} bytes for {}", path.display()),
    };
    // Like `fallocate`, only what the file does not have yet takes space.
    let have = file.metadata().map(|m| m.len()).unwrap_or(0);
    if !crate::disk::draw_budget(path, len.saturating_sub(have)) {
        return Err(full());
    }
    // SAFETY: plain syscall on a file descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::from_raw_os_error(rc);
    if is_disk_full(&err) {
        return Err(full());
    }
    if rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
        return Err(StoreError::io(format!("allocate {}", path.display()), err));
    }
    file.set_len(len)
        .map_err(|e| StoreError::io(format!("size {}", path.display()), e))
}

impl MappedFile {
    /// Creates (or reuses) `path` with exactly `len` bytes allocated on disk and maps it.
    /// A full disk is [`StoreError::DiskFull`], and leaves no file behind.
    /// A file that existed before is never removed, whatever happens: it may hold data.
    pub fn create(path: &Path, len: u64) -> Result<MappedFile> {
        let open = |new: bool| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(new)
                .open(path)
        };
        let (file, created) = match open(true) {
            Ok(f) => (Ok(f), true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => (open(false), false),
            Err(e) => (Err(e), true),
        };
        let file = file.map_err(|e| StoreError::io(format!("create {}", path.display()), e))?;
        if let Err(e) = allocate(&file, path, len) {
            if created && matches!(e, StoreError::DiskFull { .. }) {
                // Do not leave a half-allocated file behind for recovery to trip over.
                drop(file);
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        Self::map(path.to_path_buf(), file, len)
    }

    /// Maps an existing file that may be shorter than `len` (a file cut by a crash or by hand:
    /// its length is not trusted), first extending it with zeros to `len`. Returns the map and,
    /// when it was short, its length before.
    pub fn open_extending(path: &Path, len: u64) -> Result<(MappedFile, Option<u64>)> {
        let actual = std::fs::metadata(path)
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?
            .len();
        if actual >= len {
            return Ok((Self::open(path, len)?, None));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        allocate(&file, path, len)?;
        Ok((Self::map(path.to_path_buf(), file, len)?, Some(actual)))
    }

    /// Removes `path` if a crash left it shorter than `len` and holding only zeros: the process
    /// died between creating and allocating it, so nothing was ever written to it. Returns
    /// whether it was removed; a short file with data in it is left for `open` to refuse.
    pub fn remove_if_unallocated(path: &Path, len: u64) -> Result<bool> {
        let actual = std::fs::metadata(path)
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?
            .len();
        if actual >= len {
            return Ok(false);
        }
        let bytes = std::fs::read(path)
            .map_err(|e| StoreError::io(format!("read {}", path.display()), e))?;
        if bytes.iter().any(|b| *b != 0) {
            return Ok(false);
        }
        tracing::warn!(file = %path.display(), size = actual, "removing a file a crash left unallocated");
        std::fs::remove_file(path)
            .map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
        Ok(true)
    }

    /// Maps an existing file; its length must be `len`.
    pub fn open(path: &Path, len: u64) -> Result<MappedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        let actual = file
            .metadata()
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?
            .len();
        if actual != len {
            return Err(StoreError::malformed(
                "file length",
                format!("{} is {actual} bytes, expected {len}", path.display()),
            ));
        }
        Self::map(path.to_path_buf(), file, len)
    }

    fn map(path: PathBuf, file: File, len: u64) -> Result<MappedFile> {
        let map = MmapRaw::map_raw(&file)
            .map_err(|e| StoreError::io(format!("mmap {}", path.display()), e))?;
        // Small page-cache folios. Faults in a mapping otherwise go through readahead, which
        // (ext4 and XFS on recent kernels) allocates large folios; dirtiness is tracked per
        // folio for mapped writes, so a flush of a few appended bytes would write the whole
        // folio (up to megabytes) to disk, over and over with sync flushing. Without readahead
        // each fault gets one page and a flush writes only the pages appends touched.
        if let Err(e) = map.advise(memmap2::Advice::Random) {
            tracing::debug!(file = %path.display(), error = %e, "madvise(RANDOM) refused");
        }
        // The mapping keeps the file alive; closing the descriptor keeps thousands of queue
        // files from exhausting the process's file limit.
        drop(file);
        Ok(MappedFile {
            path,
            map,
            len: len as usize,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `data` into the file at `pos`.
    ///
    /// Callers own the range: no other thread reads or writes it until they publish it.
    pub fn write_at(&self, pos: usize, data: &[u8]) {
        assert!(
            pos + data.len() <= self.len,
            "write past the end of {}",
            self.path.display()
        );
        // SAFETY: bounds checked above; exclusive ownership of the range by contract.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(pos), data.len())
        }
    }

    /// Gives mutable access to a range the caller owns (see [`MappedFile::write_at`]).
    #[allow(clippy::mut_from_ref)]
    pub fn slice_mut(&self, pos: usize, len: usize) -> &mut [u8] {
        assert!(
            pos + len <= self.len,
            "range past the end of {}",
            self.path.display()
        );
        // SAFETY: bounds checked; exclusive ownership of the range by contract.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(pos), len) }
    }

    /// A view of bytes `pos..pos+len` that were published before this call.
    pub fn slice(&self, pos: usize, len: usize) -> &[u8] {
        let len = len.min(self.len.saturating_sub(pos));
        // SAFETY: clamped to the mapping; the range is not written concurrently by contract.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(pos.min(self.len)), len) }
    }

    /// Makes bytes `pos..pos+len` durable (msync with MS_SYNC). An error here means the
    /// kernel may have dropped the dirty pages: the caller must stop acknowledging writes.
    pub fn flush_range(&self, pos: usize, len: usize) -> std::io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(pos, len)
    }

    /// Flushes the whole file.
    pub fn flush(&self) -> std::io::Result<()> {
        self.flush_range(0, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed allocation removes only a file it created: an existing one may hold
    /// acknowledged data (a live segment asked for again by mistake must survive).
    #[test]
    fn a_failed_allocation_never_removes_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = MappedFile::create(&path, 4096).unwrap();
        f.slice_mut(0, 4).copy_from_slice(b"data");
        f.flush_range(0, 4).unwrap();
        drop(f);
        crate::disk::set_allocation_budget(dir.path(), Some(0));
        // Already allocated: takes no new space, like `fallocate` on a full disk.
        let f = MappedFile::create(&path, 4096).unwrap();
        assert_eq!(f.slice(0, 4), b"data");
        drop(f);
        let e = MappedFile::create(&path, 8192).unwrap_err();
        assert!(matches!(e, StoreError::DiskFull { .. }), "{e}");
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"data");
        // A new file that cannot be allocated is not left behind.
        let new = dir.path().join("g");
        assert!(MappedFile::create(&new, 4096).is_err());
        assert!(!new.exists());
        crate::disk::set_allocation_budget(dir.path(), None);
    }
}
