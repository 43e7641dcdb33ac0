//! The recovery checkpoint: how far the commit log is durable and how far its derived
//! structures (consume queues, index files) are complete.
//!
//! It records offsets, never wall-clock times, so a clock step cannot make recovery skip data.
//! Layout (44 bytes, little-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4 | magic `0xF3C0_0001` |
//! | 4  | 4 | reserved (0) |
//! | 8  | 8 | `log_flushed`: every commit log byte below is on disk |
//! | 16 | 8 | `dispatched`: consume queue and index entries of every record below are on disk |
//! | 24 | 8 | `log_min`: the lowest commit log offset still kept |
//! | 32 | 8 | `written_at_ms`: when it was written (for humans only; recovery ignores it) |
//! | 40 | 4 | CRC32C of bytes 0..40 |
//!
//! It is replaced atomically: written to `checkpoint.tmp`, fsynced, renamed over `checkpoint`,
//! and the directory fsynced. The housekeeping thread rewrites it every flush interval when
//! an offset moved: `dispatched` only right after flushing the derived files, which it does
//! every `checkpoint_interval` (1 s by default); and at a clean close.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StoreError};

const MAGIC: u32 = 0xF3C0_0001;
/// Encoded size of a checkpoint.
pub const LEN: usize = 44;

/// Offsets that recovery starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub log_flushed: u64,
    pub dispatched: u64,
    pub log_min: u64,
    pub written_at_ms: i64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..16].copy_from_slice(&self.log_flushed.to_le_bytes());
        b[16..24].copy_from_slice(&self.dispatched.to_le_bytes());
        b[24..32].copy_from_slice(&self.log_min.to_le_bytes());
        b[32..40].copy_from_slice(&self.written_at_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a checkpoint; any damage is an error, never a guess.
    pub fn decode(b: &[u8]) -> Result<Checkpoint> {
        if b.len() != LEN {
            return Err(StoreError::malformed(
                "checkpoint",
                format!("{} bytes, expected {LEN}", b.len()),
            ));
        }
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC {
            return Err(StoreError::malformed(
                "checkpoint",
                format!("bad magic {magic:#x}"),
            ));
        }
        let crc = u32::from_le_bytes([b[40], b[41], b[42], b[43]]);
        if crc32c::crc32c(&b[0..40]) != crc {
            return Err(StoreError::malformed("checkpoint", "checksum mismatch"));
        }
        let cp = Checkpoint {
            log_flushed: u64_at(8),
            dispatched: u64_at(16),
            log_min: u64_at(24),
            written_at_ms: u64_at(32) as i64,
        };
        if cp.log_min > cp.log_flushed.max(cp.dispatched) {
            return Err(StoreError::malformed(
                "checkpoint",
                "log_min above the flushed offsets",
            ));
        }
        Ok(cp)
    }

    /// Reads the checkpoint in `dir`: `Ok(None)` if there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join("checkpoint");
        match fs::read(&path) {
            Ok(b) => Checkpoint::decode(&b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("read {}", path.display()), e)),
        }
    }

    /// Atomically replaces the checkpoint in `dir`. On a disk too full for the new file, the
    /// existing one is overwritten in place instead (its blocks are already allocated; the
    /// record fits in one sector, and a torn one fails its CRC and means a full recovery
    /// scan, never a wrong start), so a clean shutdown still records where recovery starts.
    pub fn store(&self, dir: &Path) -> Result<()> {
        match write_atomically(dir, "checkpoint", &self.encode()) {
            Err(StoreError::DiskFull { detail }) => self
                .overwrite(dir)
                .map_err(|_| StoreError::DiskFull { detail }),
            other => other,
        }
    }

    fn overwrite(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let path = dir.join("checkpoint");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        let len = f
            .metadata()
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?
            .len();
        if len != LEN as u64 {
            return Err(StoreError::malformed(
                "checkpoint",
                "not overwritable in place",
            ));
        }
        f.write_all_at(&self.encode(), 0)
            .and_then(|()| f.sync_data())
            .map_err(|e| StoreError::io(format!("overwrite {}", path.display()), e))
    }
}

/// Writes `name` in `dir` so that a crash leaves either the old or the new content, whole:
/// temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let ctx = |what: &str, e: std::io::Error| {
        if crate::mapped_file::is_disk_full(&e) {
            StoreError::DiskFull {
                detail: format!("{what} {}", tmp.display()),
            }
        } else {
            StoreError::io(format!("{what} {}", tmp.display()), e)
        }
    };
    let written = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| ctx("create", e))?;
        f.write_all(data).map_err(|e| ctx("write", e))?;
        f.sync_all().map_err(|e| ctx("fsync", e))?;
        drop(f);
        fs::rename(&tmp, &dst).map_err(|e| ctx("rename", e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Fsyncs a directory so that a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = fs::File::open(dir)
        .map_err(|e| StoreError::io(format!("open dir {}", dir.display()), e))?;
    d.sync_all()
        .map_err(|e| StoreError::io(format!("fsync dir {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        let cp = Checkpoint {
            log_flushed: 10,
            dispatched: 8,
            log_min: 0,
            written_at_ms: 5,
        };
        cp.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(cp));
        assert!(!dir.path().join("checkpoint.tmp").exists());
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let b = Checkpoint {
            log_flushed: 1 << 33,
            dispatched: 77,
            log_min: 3,
            written_at_ms: 1,
        }
        .encode();
        for i in 0..LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            assert!(Checkpoint::decode(&c).is_err(), "bit {i}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Checkpoint::decode(&b);
        }
    }
}
