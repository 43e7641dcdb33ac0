//! A small volume fills up: appends are refused cleanly, every acknowledged append stays
//! readable through its consume queue, the store closes and reopens on the full disk, and
//! appends resume on their own once space is back.
//!
//! Two volumes: a real 48 MiB tmpfs (needs root to mount; CI runs as root), and, everywhere, a
//! plain directory with an allocation budget (the store's test failpoint), so the invariant is
//! checked even where nothing can be mounted.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ferromq_store::{disk, Store, StoreConfig, StoreError};
use support::{body_for, message, wait_dispatched};

const TOPICS: u32 = 3;
const QUEUES: u32 = 4;

/// What a store made of these settings acknowledged.
#[derive(Clone)]
struct Ack {
    id: String,
    topic: String,
    queue: u32,
    queue_offset: u64,
    phys: u64,
}

/// The configuration a broker on a small volume runs with: only the segment size is set (as
/// `--segment-size` does); every other file is sized from it.
fn volume_config(dir: &Path, high_water: f64) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_size = 4 << 20;
    c.max_body_size = 64 << 10;
    c.flush_interval = Duration::from_millis(20);
    c.checkpoint_interval = Duration::from_millis(20);
    c.disk_high_water = high_water;
    c
}

/// Appends from several topics and queues, with keys, until the store refuses; returns the
/// acknowledged appends and the refusal.
fn fill(store: &Store, round: &str, acks: &mut Vec<Ack>) -> StoreError {
    for i in 0u64.. {
        let topic = format!("t{}", i % TOPICS as u64);
        let queue = ((i / TOPICS as u64) % QUEUES as u64) as u32;
        let id = format!("{round}-{i}");
        let key = format!("k{}", i % 13);
        let m = message(&topic, queue, &id, Some("tag"), &[&key, "all"]);
        match store.append(&m) {
            Ok(a) => acks.push(Ack {
                id,
                topic,
                queue,
                queue_offset: a.queue_offset,
                phys: a.phys_offset,
            }),
            Err(e) => return e,
        }
        assert!(i < 2_000_000, "the volume never filled");
    }
    unreachable!()
}

/// Every acknowledged append is readable through its consume queue, intact, at the queue
/// offset it was acknowledged with; the counts are printed in the Jepsen vocabulary.
fn verify(store: &Store, acks: &[Ack], when: &str) {
    wait_dispatched(store);
    let s = store.stats();
    assert_eq!(
        s.dispatched_offset, s.log_write_offset,
        "{when}: the log is ahead of what was dispatched"
    );
    assert_eq!(s.dispatch_failure, None, "{when}: the dispatcher failed");
    let mut by_queue: BTreeMap<(String, u32), Vec<&Ack>> = BTreeMap::new();
    for a in acks {
        by_queue
            .entry((a.topic.clone(), a.queue))
            .or_default()
            .push(a);
    }
    let (mut readable, mut lost) = (0u64, Vec::new());
    for ((topic, queue), list) in by_queue {
        let mut read = BTreeMap::new();
        let (min, max) = store.queue_range(&topic, queue);
        let mut off = min;
        while off < max {
            let r = store.read(&topic, queue, off, 256, None).expect("read");
            assert!(r.corrupt.is_empty(), "{when}: damaged records served");
            assert!(
                !r.messages.is_empty(),
                "{when}: {topic}/{queue} stuck at {off}"
            );
            for m in r.messages {
                read.insert(m.queue_offset, m);
            }
            off = r.next_offset;
        }
        for a in list {
            match read.get(&a.queue_offset) {
                Some(m) if m.phys_offset == a.phys && m.msg_id() == Some(a.id.as_str()) => {
                    assert_eq!(m.body, body_for(&a.id), "{when}: {} altered", a.id);
                    readable += 1;
                }
                _ => lost.push(a.id.clone()),
            }
        }
    }
    println!(
        "{when}: acknowledged {}, readable {readable}, lost {}",
        acks.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{when}: {} acknowledged appends not readable, first {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // The index agrees (sampled).
    for a in acks.iter().step_by(97) {
        let m = store
            .find_id(&a.topic, &a.id)
            .expect("lookup")
            .unwrap_or_else(|| panic!("{when}: index lost {}", a.id));
        assert_eq!(m.phys_offset, a.phys);
    }
}

/// Waits until the store accepts appends again (it re-checks the disk every flush interval).
fn append_when_space_is_back(store: &Store, id: &str) -> Ack {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.append(&message("t0", 0, id, None, &[])) {
            Ok(a) => {
                return Ack {
                    id: id.into(),
                    topic: "t0".into(),
                    queue: 0,
                    queue_offset: a.queue_offset,
                    phys: a.phys_offset,
                }
            }
            Err(e) => {
                assert!(
                    matches!(e, StoreError::DiskFull { .. }),
                    "refused for another reason: {e}"
                );
                assert!(
                    Instant::now() < deadline,
                    "appends did not resume after space came back: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The scenario on any volume: `free` gives space back.
fn fill_refuse_reopen_recover(data: &Path, high_water: f64, free: &dyn Fn()) {
    let mut acks = Vec::new();
    let store = Store::open(volume_config(data, high_water)).expect("open");
    let e = fill(&store, "a", &mut acks);
    assert!(
        matches!(e, StoreError::DiskFull { .. }),
        "expected DiskFull, got {e}"
    );
    assert!(acks.len() > 1000, "too few appends before the disk filled");
    let reason = store.disk_full().expect("the disk-full state is set");
    assert!(store.stats().disk_full);
    assert!(matches!(store.refusal(), Some(StoreError::DiskFull { .. })));
    println!(
        "refused after {} appends: {e} (state: {reason})",
        acks.len()
    );
    verify(&store, &acks, "full");
    // Still refused: the state does not flap while the disk stays full.
    std::thread::sleep(Duration::from_millis(100));
    assert!(store
        .append(&message("t1", 1, "still-full", None, &[]))
        .is_err());
    // Consumers commit offsets on a full disk; a clean shutdown works on it too.
    store
        .offsets()
        .commit("g", "t0", 0, 5)
        .expect("offset commit");
    store.close().expect("close on a full disk");
    drop(store);

    let store = Store::open(volume_config(data, high_water)).expect("reopen on a full disk");
    assert!(!store.stats().recovered_unclean, "the close was clean");
    verify(&store, &acks, "reopened full");
    assert_eq!(store.offsets().get("g", "t0", 0), Some(5));

    free();
    acks.push(append_when_space_is_back(&store, "after-free"));
    assert_eq!(store.disk_full(), None);
    let e = fill(&store, "b", &mut acks);
    assert!(matches!(e, StoreError::DiskFull { .. }), "{e}");
    verify(&store, &acks, "refilled");
    store.close().expect("close");
}

/// The scenario on a real small volume: 48 MiB of tmpfs with 6 MiB of ballast to free.
fn on_a_48_mib_tmpfs(high_water: f64) {
    let Some(fs) = support::Tmpfs::mount("48m") else {
        return;
    };
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 << 20]).unwrap();
    fill_refuse_reopen_recover(&fs.path().join("data"), high_water, &|| {
        std::fs::remove_file(&ballast).unwrap();
    });
}

/// High-water mark off (1.0): the refusals come from real `ENOSPC` allocation failures.
#[test]
fn acked_appends_stay_readable_on_a_full_tmpfs_and_appends_resume_when_space_returns() {
    on_a_48_mib_tmpfs(1.0);
}

/// The default high-water mark (90 %): refused before the disk is full.
#[test]
fn the_high_water_mark_refuses_first_on_a_small_tmpfs() {
    on_a_48_mib_tmpfs(0.9);
}

/// Where nothing can be mounted: the allocation budget stands in for the volume.
#[test]
fn acked_appends_stay_readable_when_allocations_fail_and_resume_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    disk::set_allocation_budget(&data, Some(40 << 20));
    fill_refuse_reopen_recover(&data, 1.0, &|| {
        disk::set_allocation_budget(&data, Some(24 << 20));
    });
    disk::set_allocation_budget(&data, None);
}

/// The files the dispatcher needs for a record (a new queue's consume queue file, room in the
/// index) are allocated before the record is acknowledged: when they cannot be, the append is
/// refused and nothing is written, so the dispatcher is never left with a record it cannot
/// index.
#[test]
fn an_append_whose_queue_or_index_file_cannot_be_allocated_is_refused_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cfg = support::small_config(&data);
    cfg.segment_size = 16 << 20; // room for every record: only queue and index files fill up
    cfg.cq_entries_per_file = 100_000; // the index (4096 entries a file) fills first
    cfg.disk_high_water = 1.0;
    let store = Store::open(cfg).unwrap();
    store.append(&message("t", 0, "first", None, &[])).unwrap();
    disk::set_allocation_budget(&data, Some(0));
    let end = store.stats().log_write_offset;
    let e = store
        .append(&message("new-topic", 0, "x", None, &[]))
        .unwrap_err();
    assert!(matches!(e, StoreError::DiskFull { .. }), "{e}");
    assert_eq!(store.stats().log_write_offset, end, "nothing written");
    assert!(store.disk_full().is_some());
    assert!(
        store.append(&message("t", 0, "y", None, &[])).is_err(),
        "refused until space is back, not retried on every append"
    );
    disk::set_allocation_budget(&data, Some(1 << 30));
    store.check_disk();
    assert_eq!(store.disk_full(), None);
    let mut acks = vec![];
    // Fill the index (2 entries a record: id and key) with no room for a second file.
    let mut refused = None;
    for i in 0..10_000 {
        if i == 100 {
            disk::set_allocation_budget(&data, Some(0));
        }
        let id = format!("m{i}");
        match store.append(&message("indexed", 0, &id, None, &["key"])) {
            Ok(a) => acks.push(Ack {
                id,
                topic: "indexed".into(),
                queue: 0,
                queue_offset: a.queue_offset,
                phys: a.phys_offset,
            }),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the index never needed a new file");
    assert!(
        e.to_string().contains("index"),
        "refused for the index: {e}"
    );
    verify(&store, &acks, "index full");
    disk::set_allocation_budget(&data, None);
}

/// The safety net behind the reservations: should the dispatcher fail anyway, appends are
/// refused (the log never runs ahead of what consumers can read) until it succeeds again, and
/// everything acknowledged is readable once it has.
#[test]
fn a_failing_dispatcher_stops_acknowledgements_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(support::small_config(dir.path())).unwrap();
    let mut acks = vec![];
    let mut append = |id: &str| {
        store.append(&message("t", 0, id, None, &[])).map(|a| {
            acks.push(Ack {
                id: id.into(),
                topic: "t".into(),
                queue: 0,
                queue_offset: a.queue_offset,
                phys: a.phys_offset,
            })
        })
    };
    append("before").unwrap();
    wait_dispatched(&store);
    store.inject_dispatch_failures(5);
    append("in-flight").unwrap();
    // The dispatcher fails its next passes; appends are refused meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().dispatch_failure.is_none() {
        assert!(
            Instant::now() < deadline,
            "the injected failure never happened"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let refused = append("refused").unwrap_err();
    assert!(matches!(refused, StoreError::DiskFull { .. }), "{refused}");
    // It recovers on its own (backoff 50 ms, doubling) and appends resume.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match append("after") {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "never recovered: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(store.stats().dispatch_failure, None);
    verify(&store, &acks, "after the dispatcher recovered");
}
