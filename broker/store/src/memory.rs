//! How much memory this process may use, for heuristics about what the page cache holds.

use std::path::Path;

/// Assumed when nothing can be read (no /proc).
const UNKNOWN: u64 = 8 << 30;

/// The machine's memory, or the limit of the cgroup this process runs in when that is lower
/// (a pod's memory limit: its page cache is charged to it).
pub fn usable_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total(&s))
        .unwrap_or(UNKNOWN);
    cgroup_limit(Path::new("/sys/fs/cgroup")).map_or(total, |l| l.min(total))
}

/// `MemTotal` of a /proc/meminfo text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The memory limit under a cgroup mount: v2's `memory.max` (`max` means none), else v1's
/// `memory/memory.limit_in_bytes` (a huge number means none, which `min` then ignores).
fn cgroup_limit(root: &Path) -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    if let Some(v2) = read("memory.max") {
        return v2.trim().parse().ok();
    }
    read("memory/memory.limit_in_bytes").and_then(|v1| v1.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_from_meminfo_and_either_cgroup_version() {
        assert_eq!(
            mem_total("MemFree: 1 kB\nMemTotal:  2048 kB\n"),
            Some(2 << 20)
        );
        assert_eq!(mem_total("nothing"), None);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_limit(dir.path()), None);
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        std::fs::write(dir.path().join("memory/memory.limit_in_bytes"), "4096\n").unwrap();
        assert_eq!(cgroup_limit(dir.path()), Some(4096));
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(dir.path()), None, "v2 without a limit");
        std::fs::write(dir.path().join("memory.max"), "1073741824\n").unwrap();
        assert_eq!(cgroup_limit(dir.path()), Some(1 << 30));
        assert!(usable_bytes() > 0);
    }
}
