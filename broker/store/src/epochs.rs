//! The epoch history of a replica: which leader epoch wrote which part of the log.
//!
//! On disk: `<data dir>/epochs`, one line per epoch, `<epoch> <start offset>\n`, in increasing
//! order of both, replaced atomically (temp file, fsync, rename, directory fsync) on every
//! change. Small: one line per leader change.
//!
//! Why: replicas of a group agree record for record on every offset written in the same epoch
//! (one leader wrote them), so two replicas' logs are identical up to the first offset where
//! their histories name different epochs (KIP-101, KIP-279). A replica rejoining a group cuts
//! its log there ([`EpochHistory::divergence`]) instead of trusting a high-water mark of its
//! own, which is the mistake that lost data in Kafka before KIP-101.

use std::path::{Path, PathBuf};

use crate::checkpoint::sync_dir;
use crate::error::{Result, StoreError};

/// One epoch and the log offset where its first record is (or will be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EpochStart {
    pub epoch: u64,
    pub start: u64,
}

/// The durable epoch history of one replica.
#[derive(Debug)]
pub struct EpochHistory {
    path: PathBuf,
    entries: Vec<EpochStart>,
}

const FILE: &str = "epochs";

impl EpochHistory {
    /// Loads the history in `dir` (empty when there is none yet).
    pub fn open(dir: &Path) -> Result<EpochHistory> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(StoreError::io(format!("read {}", path.display()), e)),
        };
        let mut entries: Vec<EpochStart> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let bad = || {
                StoreError::malformed(
                    "epoch history",
                    format!("{} line {}: {line:?}", path.display(), n + 1),
                )
            };
            let mut parts = line.split_whitespace();
            let epoch = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let start = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            if parts.next().is_some() {
                return Err(bad());
            }
            let e = EpochStart { epoch, start };
            if entries
                .last()
                .is_some_and(|l| l.epoch >= e.epoch || l.start > e.start)
            {
                return Err(bad());
            }
            entries.push(e);
        }
        Ok(EpochHistory { path, entries })
    }

    pub fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    /// The latest epoch, if any.
    pub fn last(&self) -> Option<EpochStart> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start` (durable on return). Epochs only grow; an epoch
    /// already recorded is left as it is.
    pub fn begin(&mut self, epoch: u64, start: u64) -> Result<()> {
        if let Some(l) = self.last() {
            if epoch <= l.epoch {
                return Ok(());
            }
            if start < l.start {
                return Err(StoreError::malformed(
                    "epoch history",
                    format!(
                        "epoch {epoch} cannot start at {start}, before epoch {} ({})",
                        l.epoch, l.start
                    ),
                ));
            }
        }
        let mut next = self.entries.clone();
        next.push(EpochStart { epoch, start });
        self.persist(&next)?;
        self.entries = next;
        Ok(())
    }

    /// Drops the epochs that start at or after `offset` (the log was cut there).
    pub fn truncate_from(&mut self, offset: u64) -> Result<()> {
        let next: Vec<EpochStart> = self
            .entries
            .iter()
            .copied()
            .filter(|e| e.start < offset)
            .collect();
        if next.len() != self.entries.len() {
            self.persist(&next)?;
            self.entries = next;
        }
        Ok(())
    }

    /// Replaces the whole history (a replica adopting its leader's view of an empty log).
    pub fn replace(&mut self, entries: &[EpochStart]) -> Result<()> {
        self.persist(entries)?;
        self.entries = entries.to_vec();
        Ok(())
    }

    fn persist(&self, entries: &[EpochStart]) -> Result<()> {
        use std::io::Write;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("tmp");
        let io = |what: &str, e| StoreError::io(format!("{what} {}", tmp.display()), e);
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
        for e in entries {
            writeln!(f, "{} {}", e.epoch, e.start).map_err(|e| io("write", e))?;
        }
        f.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("rename", e))?;
        sync_dir(dir)
    }
}

/// The epoch that wrote `offset` according to `history`, if any.
fn epoch_at(history: &[EpochStart], offset: u64) -> Option<u64> {
    history
        .iter()
        .rev()
        .find(|e| e.start <= offset)
        .map(|e| e.epoch)
}

/// The first offset below both ends where two replicas' logs may differ: the first offset whose
/// writing epoch differs in the two histories, else the shorter log's end. A replica cuts its
/// log there and fetches the rest from its leader.
pub fn divergence(mine: &[EpochStart], my_end: u64, theirs: &[EpochStart], their_end: u64) -> u64 {
    let end = my_end.min(their_end);
    // Epochs change only at the entries' starts: checking every start below `end` (and 0) is
    // checking every offset.
    let mut points: Vec<u64> = mine
        .iter()
        .chain(theirs.iter())
        .map(|e| e.start)
        .filter(|s| *s < end)
        .collect();
    points.push(0);
    points.sort_unstable();
    points.dedup();
    for p in points {
        if epoch_at(mine, p) != epoch_at(theirs, p) {
            return p;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(u64, u64)]) -> Vec<EpochStart> {
        v.iter()
            .map(|&(epoch, start)| EpochStart { epoch, start })
            .collect()
    }

    #[test]
    fn a_lost_unconfirmed_tail_is_cut_where_the_new_epoch_began() {
        // A led epoch 1 and wrote to 150; B took over at 100 with epoch 2.
        let a = h(&[(1, 0)]);
        let b = h(&[(1, 0), (2, 100)]);
        assert_eq!(divergence(&a, 150, &b, 130), 100);
        // A follower simply behind its leader keeps everything.
        assert_eq!(divergence(&a, 80, &b, 130), 80);
        assert_eq!(divergence(&b, 130, &b, 200), 130);
    }

    #[test]
    fn epochs_the_leader_never_saw_are_cut_back_to_the_last_shared_one() {
        let follower = h(&[(1, 0), (2, 50), (4, 80)]);
        let leader = h(&[(1, 0), (3, 60), (5, 90)]);
        assert_eq!(divergence(&follower, 120, &leader, 200), 50);
        // An empty replica diverges nowhere: it fetches from 0.
        assert_eq!(divergence(&[], 0, &leader, 200), 0);
    }

    #[test]
    fn the_history_survives_reopening_and_only_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = EpochHistory::open(dir.path()).expect("open");
        assert_eq!(e.last(), None);
        e.begin(1, 0).expect("begin");
        e.begin(3, 40).expect("begin");
        e.begin(2, 50).expect("an older epoch is ignored");
        assert!(
            e.begin(4, 10).is_err(),
            "an epoch cannot start before the previous one"
        );
        let mut e = EpochHistory::open(dir.path()).expect("reopen");
        assert_eq!(e.entries(), &h(&[(1, 0), (3, 40)])[..]);
        e.truncate_from(40).expect("truncate");
        assert_eq!(e.last(), Some(EpochStart { epoch: 1, start: 0 }));
        std::fs::write(dir.path().join(FILE), "1 0\n1 5\n").expect("write");
        assert!(
            EpochHistory::open(dir.path()).is_err(),
            "a history out of order is refused"
        );
    }

    proptest::proptest! {
        /// Two replicas that share a prefix of their history agree at least up to where their
        /// histories first differ, and never beyond either end.
        #[test]
        fn divergence_is_within_both_logs_and_at_or_after_the_shared_history(
            shared in 1usize..4, a_more in 0usize..3, b_more in 0usize..3, step in 1u64..50,
        ) {
            let mut a = Vec::new();
            let mut b = Vec::new();
            let mut start = 0;
            for i in 0..shared {
                a.push(EpochStart { epoch: i as u64 + 1, start });
                b.push(EpochStart { epoch: i as u64 + 1, start });
                start += step;
            }
            let shared_end = start;
            for i in 0..a_more {
                a.push(EpochStart { epoch: 10 + 2 * i as u64, start: shared_end + step * i as u64 });
            }
            for i in 0..b_more {
                b.push(EpochStart { epoch: 11 + 2 * i as u64, start: shared_end + step * i as u64 + 1 });
            }
            let (a_end, b_end) = (shared_end + step * 3, shared_end + step * 4);
            let d = divergence(&a, a_end, &b, b_end);
            proptest::prop_assert!(d <= a_end.min(b_end));
            proptest::prop_assert!(d >= (shared_end - step).min(a_end.min(b_end)));
            proptest::prop_assert_eq!(d, divergence(&b, b_end, &a, a_end));
        }
    }
}
