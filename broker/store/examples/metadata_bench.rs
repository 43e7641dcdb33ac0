//! Measures what topic creates and offset commits cost as the metadata grows: latency, bytes
//! written per operation and resident memory. Uses only API that the store had before the
//! metadata log (`topics().create`, `offsets().set/commit/persist`), so the same program
//! measures both.
//!
//! cargo run --release -p ferromq-store --example metadata_bench -- [DIR] [TOPICS] [GROUPS]
//! (defaults: a temporary directory, 5000 topics, 2000 groups; DIR must not exist yet)

use std::time::{Duration, Instant};

use ferromq_store::{MessageType, Permission, Store, StoreConfig, TopicConfig};

/// `(wchar, write_bytes)` of this process from /proc/self/io: bytes handed to write calls,
/// and bytes the process caused to be written to the block device.
fn io() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

/// Resident memory of this process in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    let mean = d.iter().map(|x| us(*x)).sum::<f64>() / d.len() as f64;
    format!(
        "mean {:.0} us, p50 {:.0} us, p99 {:.0} us",
        mean,
        us(d[d.len() / 2]),
        us(d[d.len() * 99 / 100])
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("store"));
    let topics: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let groups: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut cfg = StoreConfig::new(&dir);
    cfg.segment_size = 64 << 20;
    cfg.cq_entries_per_file = 1000;
    cfg.index_slots = 1024;
    cfg.index_entries = 4096;
    let store = Store::open(cfg).expect("open");
    let rss_open = rss_kib();

    // Topic creates, measured per thousand.
    let mut creates = Vec::with_capacity(topics);
    let (w0, b0) = io();
    for i in 0..topics {
        let t = TopicConfig {
            name: format!("topic-{i:05}"),
            queues: 4,
            message_type: MessageType::Normal,
            permission: Permission::ReadWrite,
            retention_ms: None,
        };
        let started = Instant::now();
        store.topics().create(t).expect("create");
        creates.push(started.elapsed());
    }
    let (w1, b1) = io();
    for (k, chunk) in creates.chunks(1000).enumerate() {
        println!(
            "topic create {:>5}..{:>5}: {}",
            k * 1000,
            k * 1000 + chunk.len(),
            summary(chunk.to_vec())
        );
    }
    println!(
        "topic create, all {topics}: {:.1} KiB passed to write() and {:.1} KiB to the disk per create",
        (w1 - w0) as f64 / topics as f64 / 1024.0,
        (b1 - b0) as f64 / topics as f64 / 1024.0
    );

    // One offset per group, then commits of one group at a time.
    for g in 0..groups {
        store
            .offsets()
            .set(&format!("group-{g:04}"), "topic-00000", 0, g as u64);
    }
    store.offsets().persist().expect("persist");
    let n = 1000;
    let mut commits = Vec::with_capacity(n);
    let (w0, b0) = io();
    for i in 0..n {
        let group = format!("group-{:04}", i % groups.max(1));
        let started = Instant::now();
        store
            .offsets()
            .commit(&group, "topic-00000", 0, 1_000_000 + i as u64)
            .expect("commit");
        commits.push(started.elapsed());
    }
    let (w1, b1) = io();
    println!(
        "offset commit with {groups} groups: {}; {:.2} KiB passed to write() and {:.2} KiB to the disk per commit",
        summary(commits),
        (w1 - w0) as f64 / n as f64 / 1024.0,
        (b1 - b0) as f64 / n as f64 / 1024.0
    );
    let rss_full = rss_kib();
    println!(
        "resident memory: {rss_open} KiB after open, {rss_full} KiB with {topics} topics and {groups} group offsets (+{} KiB)",
        rss_full.saturating_sub(rss_open)
    );
    let started = Instant::now();
    drop(store);
    let reopened = Store::open({
        let mut c = StoreConfig::new(&dir);
        c.segment_size = 64 << 20;
        c
    })
    .expect("reopen");
    println!(
        "close and reopen: {:.0} ms; {} topics back",
        started.elapsed().as_secs_f64() * 1e3,
        reopened.topics().list().len()
    );
}
