//! Disk space: what the data directory's filesystem has left, the store's disk-full state, and
//! a limiter for the log lines a full disk would otherwise repeat many times a second.
//!
//! The store is "disk full" for one of two reasons:
//! - the filesystem is fuller than the high-water mark (`disk_high_water`), checked every
//!   flush interval; it clears when usage drops below the mark (retention, an operator);
//! - an allocation failed with `ENOSPC` (a new segment, consume queue or index file). It clears
//!   once the filesystem has room for what was asked for, so appends do not retry a doomed
//!   `fallocate` on every call, and resume on their own once space is back.
//!
//! While it is set, appends are refused with [`StoreError::DiskFull`] before anything is
//! written. Every file a record needs (its segment, its consume queue file, room in the index)
//! is allocated before the record is acknowledged, so what was acknowledged can always be
//! dispatched: a full disk stops new appends, never the dispatcher.
//!
//! Tests without permission to mount a small filesystem use an allocation budget
//! ([`set_allocation_budget`]): files created under a directory draw on its budget and fail with
//! `ENOSPC` when it is spent, and the free space reported for that directory is capped by it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::error::StoreError;

/// What the filesystem holding a directory has left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Space {
    /// Blocks in use over blocks usable by us, as `df` counts it.
    pub used_fraction: f64,
    /// Bytes an unprivileged writer can still allocate.
    pub free_bytes: u64,
}

/// Reads the space left on the filesystem holding `dir` (`None` if it cannot be read).
pub fn space(dir: &Path) -> Option<Space> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills a plain struct for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
        return None;
    }
    // Blocks reserved for root or unusable by the filesystem do not count as "in use".
    let in_use = st.f_blocks.saturating_sub(st.f_bfree) as f64;
    let usable = in_use + st.f_bavail as f64;
    if usable <= 0.0 {
        return None;
    }
    let mut free_bytes = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    if let Some(left) = budget_left(dir) {
        free_bytes = free_bytes.min(left);
    }
    Some(Space {
        used_fraction: in_use / usable,
        free_bytes,
    })
}

/// Caps a preallocated file's entry count so that one file takes at most `1 / share` of the
/// free space (but never fewer than `floor` entries, and never more than `configured`).
pub fn capped_entries(
    dir: &Path,
    configured: u64,
    floor: u64,
    entry_bytes: u64,
    share: u64,
) -> u64 {
    match space(dir) {
        Some(s) => configured.min((s.free_bytes / share / entry_bytes.max(1)).max(floor)),
        None => configured,
    }
}

#[derive(Debug, Clone)]
enum Cause {
    HighWater,
    /// An allocation of `needed` bytes failed; cleared once that much is free.
    Allocation {
        needed: u64,
        at: Instant,
    },
}

#[derive(Debug)]
struct Full {
    reason: String,
    cause: Cause,
}

/// The store's disk-full state (see the module docs).
#[derive(Debug, Default)]
pub struct DiskState {
    full: Mutex<Option<Full>>,
    flag: AtomicBool,
    log: LogLimiter,
}

impl DiskState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Full>> {
        self.full.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while appends are refused for lack of space (one atomic load).
    pub fn is_full(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Why appends are refused, if they are.
    pub fn reason(&self) -> Option<String> {
        if !self.is_full() {
            return None;
        }
        self.lock().as_ref().map(|f| f.reason.clone())
    }

    /// The refusal an append gets right now, if any.
    pub fn refusal(&self) -> Option<StoreError> {
        self.reason().map(|detail| StoreError::DiskFull { detail })
    }

    /// Records that allocating `needed` bytes failed for lack of space.
    pub fn allocation_failed(&self, needed: u64, detail: &str) {
        let mut full = self.lock();
        let was_full = full.is_some();
        *full = Some(Full {
            reason: detail.to_string(),
            cause: Cause::Allocation {
                needed,
                at: Instant::now(),
            },
        });
        self.flag.store(true, Ordering::Release);
        drop(full);
        if !was_full {
            warn!(needed, %detail, "disk full: refusing appends until space is freed");
        } else if let Some(suppressed) = self.log.check() {
            warn!(needed, %detail, suppressed, "disk still full: appends refused");
        }
    }

    /// Re-reads the filesystem and sets or clears the state.
    pub fn check(&self, dir: &Path, high_water: f64) {
        let space = space(dir);
        let mut full = self.lock();
        if let Some(s) = space.filter(|s| s.used_fraction >= high_water) {
            if !matches!(full.as_ref().map(|f| &f.cause), Some(Cause::HighWater)) {
                warn!(
                    used = format!("{:.1}%", s.used_fraction * 100.0),
                    "disk above the high-water mark; refusing appends"
                );
            }
            *full = Some(Full {
                reason: format!(
                    "{} is {:.1}% full, above the high-water mark of {:.0}%",
                    dir.display(),
                    s.used_fraction * 100.0,
                    high_water * 100.0
                ),
                cause: Cause::HighWater,
            });
            self.flag.store(true, Ordering::Release);
            return;
        }
        let clear = match full.as_ref().map(|f| &f.cause) {
            None => false,
            Some(Cause::HighWater) => true,
            // Room for what failed, with a margin for the derived files that follow it.
            Some(Cause::Allocation { needed, at }) => match space {
                Some(s) => s.free_bytes >= needed.saturating_add(needed / 4),
                None => at.elapsed() >= Duration::from_secs(1),
            },
        };
        if clear {
            *full = None;
            self.flag.store(false, Ordering::Release);
            info!("disk space is back; accepting appends");
        }
    }
}

/// Lets a repeated log line through at most once per interval, counting what it held back.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(Duration::from_secs(30))
    }
}

impl LogLimiter {
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn check(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.0 {
            Some(last) if last.elapsed() < self.interval => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(Instant::now()), 0);
                Some(held)
            }
        }
    }
}

/// Allocation budgets by directory (test failpoint, see the module docs).
static BUDGETS: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

fn budgets() -> std::sync::MutexGuard<'static, Vec<(PathBuf, u64)>> {
    BUDGETS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Test failpoint: files the store preallocates under `dir` may take `bytes` in all from now
/// on (`None` removes the budget). Stands in for a small volume where one cannot be mounted.
#[doc(hidden)]
pub fn set_allocation_budget(dir: &Path, bytes: Option<u64>) {
    let mut b = budgets();
    b.retain(|(d, _)| d != dir);
    if let Some(bytes) = bytes {
        b.push((dir.to_path_buf(), bytes));
    }
}

fn budget_left(path: &Path) -> Option<u64> {
    let b = budgets();
    if b.is_empty() {
        return None;
    }
    b.iter()
        .filter(|(d, _)| path.starts_with(d))
        .map(|(_, left)| *left)
        .min()
}

/// Draws `bytes` for a file at `path` from its budget, if it has one; `false` when spent.
pub(crate) fn draw_budget(path: &Path, bytes: u64) -> bool {
    let mut b = budgets();
    let mut ok = true;
    for (d, left) in b.iter_mut() {
        if path.starts_with(d.as_path()) {
            if *left < bytes {
                ok = false;
            } else {
                *left -= bytes;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_failure_clears_only_once_the_space_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let d = DiskState::default();
        set_allocation_budget(dir.path(), Some(1000));
        d.allocation_failed(4000, "cannot allocate 4000 bytes");
        assert!(d.is_full());
        assert!(matches!(d.refusal(), Some(StoreError::DiskFull { .. })));
        d.check(dir.path(), 1.0);
        assert!(d.is_full(), "1000 bytes free is not room for 4000");
        set_allocation_budget(dir.path(), Some(10_000));
        d.check(dir.path(), 1.0);
        assert!(!d.is_full());
        assert!(d.refusal().is_none());
        set_allocation_budget(dir.path(), None);
    }

    #[test]
    fn budget_is_drawn_down_and_refuses_when_spent() {
        let dir = tempfile::tempdir().unwrap();
        set_allocation_budget(dir.path(), Some(100));
        assert!(draw_budget(&dir.path().join("a"), 60));
        assert!(!draw_budget(&dir.path().join("b"), 60));
        assert!(draw_budget(Path::new("/elsewhere"), 1 << 40));
        assert_eq!(space(dir.path()).unwrap().free_bytes, 40);
        set_allocation_budget(dir.path(), None);
    }

    #[test]
    fn limiter_lets_one_line_through_per_interval() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), None);
        assert_eq!(l.check(), None);
        let l = LogLimiter::new(Duration::ZERO);
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), Some(0));
    }
}
