//! Behaviour of the store through its public API: appends, reads, filters, lookups,
//! restarts, damage, I/O failures, retention and a full disk.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferromq_store::checkpoint::Checkpoint;
use ferromq_store::{FlushMode, Store, StoreError, TagFilter};
use support::{body_for, message, small_config};

fn wait(store: &Store) {
    support::wait_dispatched(store)
}

#[test]
fn appended_messages_read_back_intact_in_both_flush_modes() {
    for mode in [FlushMode::Async, FlushMode::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = small_config(dir.path());
        cfg.flush = mode;
        let store = Store::open(cfg).unwrap();
        let mut acks = vec![];
        for i in 0..500 {
            let m = message("orders", i % 4, &format!("id-{i}"), Some("A"), &["k"]);
            acks.push((i % 4, store.append(&m).unwrap()));
        }
        wait(&store);
        for q in 0..4u32 {
            let r = store.read("orders", q, 0, 1000, None).unwrap();
            assert_eq!(r.messages.len(), 125, "queue {q} in {mode:?}");
            for (n, m) in r.messages.iter().enumerate() {
                assert_eq!(m.queue_offset, n as u64);
                let id = m.msg_id().unwrap().to_string();
                assert_eq!(m.body, body_for(&id));
                assert_eq!(m.properties.get("user-prop"), Some(&format!("v-{id}")));
            }
            assert_eq!(r.next_offset, 125);
        }
        for (q, a) in acks {
            let m = store.message_at(a.phys_offset).unwrap();
            assert_eq!((m.queue_id, m.queue_offset), (q, a.queue_offset));
        }
        if mode == FlushMode::Sync {
            let s = store.stats();
            assert_eq!(
                s.log_flushed_offset, s.log_write_offset,
                "sync appends must be flushed when acked"
            );
        }
    }
}

#[test]
fn concurrent_appenders_get_contiguous_queue_offsets_and_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = FlushMode::Sync;
    let store = Store::open(cfg).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| {
                        s.append(&message("t", 0, &format!("{t}-{i}"), None, &[]))
                            .unwrap()
                            .queue_offset
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..800).collect::<Vec<_>>());
    let s = store.stats();
    assert!(
        s.flushes_total < 800,
        "group commit should share flushes, saw {} flushes for 800 appends",
        s.flushes_total
    );
}

#[test]
fn tag_filter_returns_exactly_the_matching_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    for i in 0..300 {
        let tag = ["A", "B", "C"][i % 3];
        store
            .append(&message("t", 0, &format!("m{i}"), Some(tag), &[]))
            .unwrap();
    }
    store
        .append(&message("t", 0, "untagged", None, &[]))
        .unwrap();
    wait(&store);
    let f = TagFilter::parse("A || C");
    let mut got = vec![];
    let mut off = 0;
    loop {
        let r = store.read("t", 0, off, 32, Some(&f)).unwrap();
        got.extend(r.messages.iter().map(|m| m.tag().unwrap().to_string()));
        if r.next_offset >= r.max_offset {
            break;
        }
        off = r.next_offset;
    }
    assert_eq!(got.len(), 200);
    assert!(got.iter().all(|t| t == "A" || t == "C"));
    assert_eq!(
        store
            .read("t", 0, 0, 1000, Some(&TagFilter::parse("*")))
            .unwrap()
            .messages
            .len(),
        301
    );
}

#[test]
fn lookups_by_key_and_id_find_only_the_right_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    for i in 0..200 {
        store
            .append(&message(
                "a",
                0,
                &format!("id{i}"),
                None,
                &[&format!("order-{}", i % 10), "common"],
            ))
            .unwrap();
        store
            .append(&message("b", 0, &format!("other{i}"), None, &["common"]))
            .unwrap();
    }
    wait(&store);
    let hits = store.lookup_key("a", "order-3", 0, i64::MAX, 100);
    assert_eq!(hits.len(), 20);
    assert!(hits
        .iter()
        .all(|m| m.topic == "a" && m.keys().any(|k| k == "order-3")));
    assert_eq!(
        store.lookup_key("b", "common", 0, i64::MAX, 1000).len(),
        200
    );
    assert_eq!(store.lookup_id("a", "id42").unwrap().body, body_for("id42"));
    assert!(store.lookup_id("b", "id42").is_none());
    assert!(
        store.lookup_key("a", "order-3", 0, 1, 100).is_empty(),
        "time range must apply"
    );
}

#[test]
fn clean_restart_keeps_messages_offsets_and_topics() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(small_config(dir.path())).unwrap();
        store
            .topics()
            .create(ferromq_store::TopicConfig {
                name: "t".into(),
                queues: 2,
                message_type: ferromq_store::MessageType::Normal,
                permission: ferromq_store::Permission::ReadWrite,
                retention_ms: None,
            })
            .unwrap();
        for i in 0..3000 {
            store
                .append(&message("t", i % 2, &format!("x{i}"), None, &[]))
                .unwrap();
        }
        store.offsets().set("g", "t", 0, 17);
        store.close().unwrap();
    }
    let store = Store::open(small_config(dir.path())).unwrap();
    assert!(!store.stats().recovered_unclean);
    assert_eq!(store.queue_range("t", 0), (0, 1500));
    assert_eq!(store.offsets().get("g", "t", 0), Some(17));
    assert!(store.topics().get("t").is_some());
    let a = store.append(&message("t", 0, "after", None, &[])).unwrap();
    assert_eq!(
        a.queue_offset, 1500,
        "queue offsets continue after a restart"
    );
    assert!(
        store.stats().segments > 1,
        "the test should span several segments"
    );
}

#[test]
fn oversized_body_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let mut m = message("t", 0, "big", None, &[]);
    m.body = vec![0u8; 64 * 1024 + 1].into();
    match store.append(&m) {
        Err(StoreError::BodyTooLarge { size, limit }) => assert_eq!((size, limit), (65537, 65536)),
        other => panic!("expected BodyTooLarge, got {other:?}"),
    }
    assert_eq!(store.stats().log_write_offset, 0);
    assert_eq!(store.queue_range("t", 0), (0, 0));
}

#[test]
fn a_batch_is_appended_in_order_with_a_result_per_message() {
    for mode in [FlushMode::Async, FlushMode::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = small_config(dir.path());
        cfg.flush = mode;
        let store = Store::open(cfg).unwrap();
        let mut batch: Vec<_> = (0..50)
            .map(|i| message("t", 1, &format!("b{i}"), None, &[]))
            .collect();
        batch[20].body = vec![0u8; 64 * 1024 + 1].into();
        let results = store.append_batch(&batch);
        assert_eq!(results.len(), 50);
        assert!(
            matches!(results[20], Err(StoreError::BodyTooLarge { .. })),
            "only the oversized entry is refused"
        );
        let offsets: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|a| a.queue_offset)
            .collect();
        assert_eq!(offsets, (0..49).collect::<Vec<_>>());
        wait(&store);
        let ids: Vec<String> = store
            .read("t", 1, 0, 100, None)
            .unwrap()
            .messages
            .iter()
            .map(|m| m.msg_id().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..50)
            .filter(|i| *i != 20)
            .map(|i| format!("b{i}"))
            .collect();
        assert_eq!(ids, expected, "{mode:?}");
        if mode == FlushMode::Sync {
            let s = store.stats();
            assert_eq!(s.log_flushed_offset, s.log_write_offset);
        }
    }
}

#[test]
fn an_idle_store_does_not_rewrite_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.append(&message("t", 0, "one", None, &[])).unwrap();
    wait(&store);
    let cp = dir.path().join("checkpoint");
    let settled = |p: &std::path::Path| std::fs::read(p).unwrap();
    // Let housekeeping (every 20 ms here) record the append, then watch it stay put.
    std::thread::sleep(Duration::from_millis(200));
    let before = (
        settled(&cp),
        std::fs::metadata(&cp).unwrap().modified().unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = (
        settled(&cp),
        std::fs::metadata(&cp).unwrap().modified().unwrap(),
    );
    assert_eq!(before, after, "an idle store rewrote its checkpoint");
    store.append(&message("t", 0, "two", None, &[])).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        settled(&cp),
        after.0,
        "a new append must move the checkpoint"
    );
}

/// Between two flushes of the derived files the checkpoint still follows the log's flushes
/// (recovery tells damage inside the log from a torn tail by it), but it promises dispatched
/// entries only once the files that hold them were flushed.
#[test]
fn the_checkpoint_follows_the_log_between_flushes_of_the_derived_files() {
    let dir = tempfile::tempdir().unwrap();
    let load = || Checkpoint::load(dir.path()).unwrap().expect("a checkpoint");
    let mut cfg = small_config(dir.path());
    cfg.checkpoint_interval = Duration::from_secs(3600);
    let store = Store::open(cfg).unwrap();
    let opened = load();
    store.append(&message("t", 0, "one", None, &[])).unwrap();
    wait(&store);
    let end = store.stats().log_write_offset;
    let mut cp = opened;
    for _ in 0..200 {
        cp = load();
        if cp.log_flushed >= end {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        cp.log_flushed, end,
        "the log's flush reached the checkpoint"
    );
    assert_eq!(
        cp.dispatched, opened.dispatched,
        "dispatched entries are promised only after their files are flushed"
    );
    store.close().unwrap();
    assert_eq!(
        load().dispatched,
        end,
        "a clean close flushes and records everything"
    );
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Store::open(small_config(dir.path())).unwrap();
    assert!(matches!(
        Store::open(small_config(dir.path())),
        Err(StoreError::Locked(_))
    ));
}

fn segment_path(dir: &std::path::Path, base: u64) -> std::path::PathBuf {
    dir.join("commitlog").join(format!("{base:020}"))
}

/// Appends `n` messages `m0..` to queue 0 of topic `t`, closes the store cleanly and returns
/// the acknowledgements.
fn write_and_close(dir: &std::path::Path, n: usize) -> Vec<ferromq_store::AppendResult> {
    let store = Store::open(small_config(dir)).unwrap();
    let acks = (0..n)
        .map(|i| {
            store
                .append(&message("t", 0, &format!("m{i}"), None, &[]))
                .unwrap()
        })
        .collect();
    store.close().unwrap();
    acks
}

#[test]
fn flipped_byte_inside_the_log_is_detected_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let victim = write_and_close(dir.path(), 100)[50];
    // Flip one byte in the body of message 50.
    let path = segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(victim.phys_offset + victim.size as u64 - 10) as usize] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let store = Store::open(small_config(dir.path())).unwrap();
    let r = store.read("t", 0, 0, 1000, None).unwrap();
    assert_eq!(
        r.messages.len(),
        99,
        "the damaged message must not be served"
    );
    assert_eq!(
        r.corrupt,
        vec![victim.phys_offset],
        "and it must be reported with its offset"
    );
    assert!(r.messages.iter().all(|m| m.msg_id() != Some("m50")));
    assert!(
        matches!(store.message_at(victim.phys_offset), Err(StoreError::Corrupt { offset, .. }) if offset == victim.phys_offset)
    );
    assert_eq!(store.stats().corrupt_records_total, 1);
}

#[test]
fn reads_in_place_see_what_copies_see_stop_where_refused_and_skip_damage() {
    let dir = tempfile::tempdir().unwrap();
    let victim = write_and_close(dir.path(), 40)[10];
    let path = segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(victim.phys_offset + victim.size as u64 - 3) as usize] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();

    let copies = store.read("t", 0, 0, 1000, None).unwrap();
    let mut seen = Vec::new();
    let r = store
        .read_each("t", 0, 0, 1000, None, |v| {
            seen.push(v.to_message());
            true
        })
        .unwrap();
    assert!(
        r.messages.is_empty(),
        "an in-place read hands records over, keeps none"
    );
    assert_eq!(seen, copies.messages, "the same fields as the copying read");
    assert_eq!(seen.len(), 39, "the damaged record is never handed over");
    assert_eq!(r.corrupt, vec![victim.phys_offset]);
    assert_eq!((r.next_offset, r.max_offset), (40, 40));

    // The reader refuses the sixth record: the read ends there, and that is where it resumes.
    let mut taken = 0;
    let r = store
        .read_each("t", 0, 20, 1000, None, |v| {
            if taken == 5 {
                return false;
            }
            assert_eq!(v.queue_offset(), 20 + taken);
            assert_eq!(v.body(), &body_for(&format!("m{}", 20 + taken))[..]);
            taken += 1;
            true
        })
        .unwrap();
    assert_eq!((taken, r.next_offset), (5, 25));

    // A tag filter applies to records read in place as it does to copies.
    let mut none = 0;
    store
        .read_each("t", 0, 0, 1000, Some(&TagFilter::parse("nope")), |_| {
            none += 1;
            true
        })
        .unwrap();
    assert_eq!(none, 0);
}

#[test]
fn interior_damage_found_by_recovery_is_reported_and_later_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let victim = write_and_close(dir.path(), 100)[60];
    // Break the record's length field and force a full scan by removing the checkpoint.
    let path = segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[victim.phys_offset as usize] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    std::fs::write(dir.path().join("RUNNING"), b"").unwrap();

    let store = Store::open(small_config(dir.path())).unwrap();
    let s = store.stats();
    assert!(s.recovered_unclean);
    assert_eq!(
        s.recovery_truncated_bytes, 0,
        "valid records follow: this is not a torn tail"
    );
    assert_eq!(
        s.recovery_corrupt_records
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![victim.phys_offset]
    );
    let r = store.read("t", 0, 0, 1000, None).unwrap();
    assert_eq!(r.messages.len(), 99);
    assert_eq!(r.messages.last().unwrap().msg_id(), Some("m99"));
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let end;
    {
        let store = Store::open(small_config(dir.path())).unwrap();
        for i in 0..10 {
            store
                .append(&message("t", 0, &format!("m{i}"), None, &[]))
                .unwrap();
        }
        end = store.stats().log_write_offset;
        store.close().unwrap();
    }
    // Half a record's worth of garbage after the end, as a crash mid-write leaves.
    let path = segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    for (i, b) in bytes[end as usize..end as usize + 77]
        .iter_mut()
        .enumerate()
    {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.path().join("RUNNING"), b"").unwrap();

    let store = Store::open(small_config(dir.path())).unwrap();
    let s = store.stats();
    assert!(s.recovery_truncated_bytes > 0);
    assert_eq!(s.log_write_offset, end);
    let a = store.append(&message("t", 0, "next", None, &[])).unwrap();
    assert_eq!((a.phys_offset, a.queue_offset), (end, 10));
    wait(&store);
    assert_eq!(store.read("t", 0, 0, 100, None).unwrap().messages.len(), 11);
}

#[test]
fn files_a_crash_left_unallocated_are_removed_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let acks = write_and_close(dir.path(), 10);
    // A kill between creating the next segment (or queue file) and allocating it.
    std::fs::write(segment_path(dir.path(), 256 * 1024), b"").unwrap();
    std::fs::write(
        dir.path().join("consumequeue/t/0/00000000000000001000"),
        vec![0u8; 100],
    )
    .unwrap();
    std::fs::write(dir.path().join("RUNNING"), b"").unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.queue_range("t", 0), (0, 10));
    assert_eq!(
        store.message_at(acks[9].phys_offset).unwrap().msg_id(),
        Some("m9")
    );
    assert!(!segment_path(dir.path(), 256 * 1024).exists());
    store.append(&message("t", 0, "next", None, &[])).unwrap();
}

#[test]
fn damaged_checkpoint_means_full_recovery_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(small_config(dir.path())).unwrap();
        for i in 0..2000 {
            store
                .append(&message("t", 0, &format!("m{i}"), None, &[]))
                .unwrap();
        }
        store.close().unwrap();
    }
    let cp = dir.path().join("checkpoint");
    let mut b = std::fs::read(&cp).unwrap();
    b[10] ^= 1;
    std::fs::write(&cp, &b).unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    assert!(store.stats().recovered_unclean);
    assert_eq!(store.queue_range("t", 0), (0, 2000));
}

#[test]
fn failed_flush_stops_acknowledgements_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = FlushMode::Sync;
    {
        let store = Store::open(cfg.clone()).unwrap();
        store.append(&message("t", 0, "before", None, &[])).unwrap();
        store.inject_flush_failure();
        let e = store
            .append(&message("t", 0, "during", None, &[]))
            .unwrap_err();
        assert!(matches!(e, StoreError::Stopped { .. }), "{e}");
        let e = store
            .append(&message("t", 0, "after", None, &[]))
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Stopped { .. }),
            "no retry-and-pretend: {e}"
        );
        assert!(
            store.close().is_err(),
            "a stopped store must not mark itself clean"
        );
    }
    let store = Store::open(cfg).unwrap();
    assert!(store.stats().recovered_unclean);
    wait(&store);
    let ids: Vec<String> = store
        .read("t", 0, 0, 10, None)
        .unwrap()
        .messages
        .iter()
        .map(|m| m.msg_id().unwrap().to_string())
        .collect();
    assert_eq!(ids[0], "before");
    store.append(&message("t", 0, "again", None, &[])).unwrap();
}

#[test]
fn retention_by_size_deletes_oldest_segments_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.retention_bytes = Some(3 * cfg.segment_size);
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..6000 {
        store
            .append(&message("t", 0, &format!("m{i}"), None, &[]))
            .unwrap();
    }
    wait(&store);
    let before = store.stats();
    assert!(before.segments > 4);
    let min = store.apply_retention().unwrap();
    let after = store.stats();
    assert!(after.segments <= 3, "{} segments left", after.segments);
    assert!(min > 0 && after.log_min_offset == min);
    let (qmin, qmax) = store.queue_range("t", 0);
    assert!(qmin > 0 && qmax == 6000);
    let r = store.read("t", 0, 0, 10, None).unwrap();
    assert_eq!(
        r.messages[0].queue_offset,
        qmin.max(r.messages[0].queue_offset)
    );
    assert!(r.messages[0].phys_offset >= min);
    store
        .append(&message("t", 0, "still-works", None, &[]))
        .unwrap();
    drop(store);
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.queue_range("t", 0).1, 6001);
}

#[test]
fn retention_by_time_deletes_every_closed_segment_once_old_enough() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.retention = Duration::from_secs(3600);
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..2000 {
        store
            .append(&message("t", 0, &format!("m{i}"), None, &[]))
            .unwrap();
    }
    wait(&store);
    let segments = store.stats().segments;
    assert!(segments >= 3);
    assert_eq!(
        store.apply_retention().unwrap(),
        0,
        "young segments are kept"
    );
    drop(store);
    cfg.retention = Duration::ZERO;
    let store = Store::open(cfg).unwrap();
    let min = store.apply_retention().unwrap();
    let s = store.stats();
    assert_eq!(s.segments, 1, "only the active segment is left");
    assert!(min > 0 && min <= s.log_write_offset);
    let r = store.read("t", 0, 0, 5000, None).unwrap();
    assert!(!r.messages.is_empty() && r.messages.iter().all(|m| m.phys_offset >= min));
}

#[test]
fn high_water_mark_refuses_appends_before_the_disk_is_actually_full() {
    let Some(fs) = support::Tmpfs::mount("8m") else {
        return;
    };
    let mut cfg = small_config(&fs.path().join("data"));
    cfg.disk_high_water = 0.5;
    cfg.index_slots = 64;
    cfg.index_entries = 256;
    let store = Store::open(cfg).unwrap();
    let mut acked = 0u64;
    let err = loop {
        match store.append(&message("t", 0, &format!("m{acked}"), None, &[])) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        if acked.is_multiple_of(500) {
            store.check_disk();
        }
        assert!(acked < 100_000, "high-water mark never reached");
    };
    assert!(
        err.to_string().contains("high-water"),
        "expected the high-water refusal, got: {err}"
    );
    assert!(store.stats().disk_full);
    // Retention frees space; appends resume.
    drop(store);
    let mut cfg = small_config(&fs.path().join("data"));
    cfg.disk_high_water = 0.5;
    cfg.retention = Duration::ZERO;
    cfg.index_slots = 64;
    cfg.index_entries = 256;
    let store = Store::open(cfg).unwrap();
    wait(&store);
    store.apply_retention().unwrap();
    store.check_disk();
    store
        .append(&message("t", 0, "after-retention", None, &[]))
        .unwrap();
}

/// Mounts a small tmpfs so the disk really fills. Needs root (CI runs as root); elsewhere the
/// test says loudly that it did not run, and fails under CI.
#[test]
fn full_disk_refuses_appends_cleanly_and_recovers_when_space_returns() {
    let Some(mnt) = support::Tmpfs::mount("6m") else {
        return;
    };
    let data = mnt.path().join("data");
    // Ballast we can delete later to give space back.
    std::fs::write(mnt.path().join("ballast"), vec![1u8; 1024 * 1024]).unwrap();
    let mut cfg = small_config(&data);
    cfg.disk_high_water = 0.9;
    cfg.index_slots = 64;
    cfg.index_entries = 256;
    let store = Store::open(cfg).unwrap();
    let mut acked = vec![];
    let mut refused = None;
    for i in 0..100_000 {
        match store.append(&message("t", 0, &format!("m{i}"), None, &[])) {
            Ok(a) => acked.push(a),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the disk never filled");
    assert!(
        matches!(e, StoreError::DiskFull { .. }),
        "expected DiskFull, got {e}"
    );
    assert!(e.to_string().contains("disk full"));
    // Everything acknowledged is intact.
    wait(&store);
    for a in &acked {
        let m = store.message_at(a.phys_offset).unwrap();
        assert_eq!(m.body, body_for(m.msg_id().unwrap()));
    }
    // Still refused while full, accepted once space is back.
    assert!(store
        .append(&message("t", 0, "still-full", None, &[]))
        .is_err());
    std::fs::remove_file(mnt.path().join("ballast")).unwrap();
    store.check_disk();
    let a = store
        .append(&message("t", 0, "space-is-back", None, &[]))
        .unwrap();
    assert_eq!(a.queue_offset, acked.len() as u64);
    println!(
        "disk full: {} appends acknowledged before the refusal: {e}",
        acked.len()
    );
    drop(store);
}

#[test]
fn dispatch_listeners_see_every_record_after_it_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(vec![]));
    let s2 = seen.clone();
    // A weak handle: a listener that owned the store would keep it alive forever.
    let st = Arc::downgrade(&store);
    store.on_dispatch(Arc::new(move |ev| {
        let readable = st
            .upgrade()
            .is_some_and(|st| st.queue_range(ev.topic, ev.queue_id).1 > ev.queue_offset);
        s2.lock()
            .unwrap()
            .push((ev.queue_offset, readable, ev.property("user-prop")));
    }));
    for i in 0..50 {
        store
            .append(&message("t", 0, &format!("m{i}"), None, &[]))
            .unwrap();
    }
    wait(&store);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 50);
    assert!(seen.iter().all(|(_, readable, _)| *readable));
    assert_eq!(seen[7].2.as_deref(), Some("v-m7"));
}

/// Tries the in-memory append until it is taken (another writer may hold the lock).
fn try_append_until_taken(
    store: &Store,
    m: &ferromq_store::NewMessage,
) -> ferromq_store::AppendResult {
    for _ in 0..10_000 {
        if let Some(a) = store.try_append(m).unwrap() {
            return a;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("try_append never took the message");
}

#[test]
fn try_append_defers_what_needs_a_new_file_and_writes_the_rest_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    let first = message("quick", 0, "q0", Some("A"), &["k0"]);
    assert!(
        store.try_append(&first).unwrap().is_none(),
        "the queue's file does not exist yet: that is an allocation, left to append()"
    );
    assert_eq!(
        store.stats().appends_total,
        0,
        "a deferred append writes nothing"
    );
    store.append(&first).unwrap();
    let a = try_append_until_taken(&store, &message("quick", 0, "q1", Some("A"), &["k1"]));
    assert_eq!(a.queue_offset, 1);
    let b = store.append(&message("quick", 0, "q2", None, &[])).unwrap();
    assert_eq!(b.queue_offset, 2);
    assert_eq!(b.phys_offset, a.phys_offset + u64::from(a.size));
    wait(&store);
    let r = store.read("quick", 0, 0, 10, None).unwrap();
    let ids: Vec<&str> = r.messages.iter().map(|m| m.msg_id().unwrap()).collect();
    assert_eq!(ids, ["q0", "q1", "q2"]);
    assert_eq!(r.messages[1].body, body_for("q1"));
    let found = store.lookup_id("quick", "q1").expect("indexed by id");
    assert_eq!(found.queue_offset, 1);
}

/// A request's batch goes in under one lock, all or none: a batch naming a queue whose file
/// does not exist yet writes nothing (not even its ready messages), and a ready batch is
/// written contiguously, in order, across queues, readable and indexed like single appends.
#[test]
fn try_append_batch_writes_all_in_order_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.append(&message("b", 0, "b0", None, &[])).unwrap();
    let mixed = [
        message("b", 0, "x1", None, &[]),
        message("b", 1, "x2", None, &[]),
    ];
    assert!(
        store.try_append_batch(&mixed).unwrap().is_none(),
        "queue 1 has no file yet: the whole batch is left to the blocking path"
    );
    assert_eq!(store.stats().appends_total, 1, "nothing of it was written");
    store.append(&message("b", 1, "b1", None, &[])).unwrap();
    let batch: Vec<_> = (2..6)
        .map(|i| message("b", i % 2, &format!("b{i}"), None, &[&format!("k{i}")]))
        .collect();
    let results = loop {
        if let Some(r) = store.try_append_batch(&batch).unwrap() {
            break r;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(results.len(), 4);
    let offsets: Vec<(u32, u64)> = batch
        .iter()
        .zip(&results)
        .map(|(m, r)| (m.queue_id, r.queue_offset))
        .collect();
    assert_eq!(offsets, [(0, 1), (1, 1), (0, 2), (1, 2)]);
    for w in results.windows(2) {
        assert_eq!(w[1].phys_offset, w[0].phys_offset + u64::from(w[0].size));
    }
    assert_eq!(store.stats().appends_total, 6);
    wait(&store);
    let q0 = store.read("b", 0, 0, 10, None).unwrap();
    let ids: Vec<&str> = q0.messages.iter().map(|m| m.msg_id().unwrap()).collect();
    assert_eq!(ids, ["b0", "b2", "b4"]);
    assert_eq!(q0.messages[2].body, body_for("b4"));
    assert_eq!(store.lookup_id("b", "b3").expect("indexed").queue_offset, 1);
    assert!(store.try_append_batch(&[]).unwrap().unwrap().is_empty());
}

/// Quick appends dispatch their own records from the bytes they wrote, and a pass that one of
/// them takes also covers records other writers put before or after them, read from the log:
/// with four quick writers and a blocking one racing on two queues, every queue holds each
/// record once, in log order, under its own offset, found by id and by key, and a restart
/// (which dispatches from the log alone) reads exactly the same.
#[test]
fn racing_quick_and_blocking_writers_dispatch_what_the_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(small_config(dir.path())).unwrap());
    for q in 0..2 {
        store
            .append(&message("race", q, &format!("first{q}"), None, &[]))
            .unwrap();
    }
    let mut threads = Vec::new();
    for t in 0..5u32 {
        let store = store.clone();
        threads.push(std::thread::spawn(move || {
            let mut quick = 0;
            for i in 0..150u32 {
                let id = format!("t{t}-{i}");
                let key = format!("key-{id}");
                let m = message("race", i % 2, &id, None, &[&key]);
                // As the engine does: the quick path when it takes the message, the blocking
                // one when it cannot (a segment to roll, a queue file to allocate).
                if t < 4 && store.try_append(&m).unwrap().is_some() {
                    quick += 1;
                } else {
                    store.append(&m).unwrap();
                }
            }
            quick
        }));
    }
    let quick: u32 = threads.into_iter().map(|t| t.join().expect("writer")).sum();
    assert!(quick > 300, "most quick tries were taken: {quick}");
    wait(&store);
    let read_all = |store: &Store| -> Vec<Vec<(String, u64, u64)>> {
        (0..2)
            .map(|q| {
                let r = store.read("race", q, 0, 10_000, None).unwrap();
                r.messages
                    .iter()
                    .map(|m| {
                        assert_eq!(m.body, body_for(m.msg_id().unwrap()), "intact");
                        (
                            m.msg_id().unwrap().to_string(),
                            m.queue_offset,
                            m.phys_offset,
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let before = read_all(&store);
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 2 + 5 * 150);
    for queue in &before {
        for (n, (_, offset, _)) in queue.iter().enumerate() {
            assert_eq!(*offset, n as u64, "one entry per offset");
        }
        assert!(
            queue.windows(2).all(|w| w[0].2 < w[1].2),
            "queue order is log order"
        );
    }
    for (id, offset, _) in before.iter().flatten() {
        assert_eq!(
            store.lookup_id("race", id).expect("by id").queue_offset,
            *offset
        );
        if !id.starts_with("first") {
            let by_key = store.lookup_key("race", &format!("key-{id}"), 0, i64::MAX, 4);
            assert_eq!(by_key.len(), 1, "by key: {id}");
        }
    }
    drop(store);
    let reopened = Store::open(small_config(dir.path())).unwrap();
    wait(&reopened);
    assert_eq!(
        read_all(&reopened),
        before,
        "a restart reads what the writers dispatched"
    );
}

#[test]
fn durable_waits_for_the_flush_in_sync_mode_and_one_flush_covers_many() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = FlushMode::Sync;
    let store = Store::open(cfg).unwrap();
    store.append(&message("s", 0, "s0", None, &[])).unwrap();
    let mut ends = vec![];
    let a = try_append_until_taken(&store, &message("s", 0, "s1", None, &[]));
    ends.push(a.phys_offset + u64::from(a.size));
    for i in 2..10 {
        if let Some(a) = store
            .try_append(&message("s", 0, &format!("s{i}"), None, &[]))
            .unwrap()
        {
            ends.push(a.phys_offset + u64::from(a.size));
        }
    }
    let last = *ends.last().unwrap();
    support::block_on(store.durable(last)).unwrap();
    assert!(store.stats().log_flushed_offset >= last);
    for end in ends {
        support::block_on(store.durable(end)).unwrap();
    }
}

/// With a flush gather, concurrent sync appends still each return only once durable, and
/// every one of them is read back in its queue's order.
#[test]
fn sync_appends_with_a_flush_gather_are_durable_and_all_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = FlushMode::Sync;
    cfg.flush_gather = Duration::from_millis(2);
    let store = Arc::new(Store::open(cfg).unwrap());
    let writers: Vec<_> = (0..8u32)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let a = store
                        .append(&message("g", t % 2, &format!("g{t}-{i}"), None, &[]))
                        .unwrap();
                    let end = a.phys_offset + u64::from(a.size);
                    assert!(
                        store.stats().log_flushed_offset >= end,
                        "answered before flushed"
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    wait(&store);
    let read = |q| store.read("g", q, 0, 1000, None).unwrap().messages.len();
    assert_eq!(read(0) + read(1), 160);
    assert!(store.stats().flushes_total >= 1);
}

#[test]
fn durable_reports_a_failed_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.flush = FlushMode::Sync;
    let store = Store::open(cfg).unwrap();
    store.append(&message("f", 0, "f0", None, &[])).unwrap();
    let a = try_append_until_taken(&store, &message("f", 0, "f1", None, &[]));
    // The injected failure hits the next flush, which is the one this waiter needs unless
    // the flusher already made it durable on its own.
    store.inject_flush_failure();
    let r = support::block_on(store.durable(a.phys_offset + u64::from(a.size)));
    let flushed = store.stats().log_flushed_offset >= a.phys_offset + u64::from(a.size);
    assert!(
        r.is_ok() == flushed,
        "durable must say Ok exactly when the record was flushed: {r:?}"
    );
    let _ = store.close();
}

#[test]
fn try_append_leaves_a_replicated_store_to_the_gated_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    cfg.replicated = true;
    let store = Store::open(cfg).unwrap();
    for i in 0..3 {
        let m = message("r", 0, &format!("r{i}"), None, &[]);
        assert!(store.try_append(&m).unwrap().is_none());
    }
}

/// A topic's own retention hides and expires its messages, not another topic's, in the shared
/// log; the clock is handed to retention (`apply_retention_at`) rather than waited for.
#[test]
fn a_topic_retention_expires_that_topic_only_and_holds_after_a_reopen() {
    use ferromq_store::TopicConfig;
    use std::time::SystemTime;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path());
    // Retention runs when the test says so.
    cfg.clean_interval = Duration::from_secs(3600);
    let store = Store::open(cfg.clone()).unwrap();
    let hour = 3_600_000;
    store
        .topics()
        .create(TopicConfig {
            retention_ms: Some(hour),
            ..TopicConfig::new("short", 2)
        })
        .unwrap();
    store.topics().create(TopicConfig::new("long", 2)).unwrap();
    let per_queue = 2500u64; // more than two consume queue files of 1000 entries
    for i in 0..per_queue * 2 {
        for t in ["short", "long"] {
            let id = format!("{t}-{i}");
            store
                .append(&message(t, (i % 2) as u32, &id, None, &[&id]))
                .unwrap();
        }
    }
    wait(&store);
    let cq_files = |t: &str| {
        std::fs::read_dir(dir.path().join("consumequeue").join(t).join("0"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 20)
            .count()
    };
    assert_eq!(cq_files("short"), 3);

    // Younger than an hour: everything stays.
    store.apply_retention_at(SystemTime::now()).unwrap();
    assert_eq!(store.queue_range("short", 0), (0, per_queue));
    assert!(store.lookup_id("short", "short-7").is_some());

    // Two hours on, the short topic's queues start at their end; the long topic is untouched,
    // and so is the shared log (its segments are the node's to delete).
    let log_min = store.stats().log_min_offset;
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    store.apply_retention_at(later).unwrap();
    assert_eq!(store.stats().log_min_offset, log_min);
    for q in 0..2 {
        assert_eq!(store.queue_range("short", q), (per_queue, per_queue));
        assert_eq!(store.queue_range("long", q), (0, per_queue));
        let r = store.read("short", q, 0, 100, None).unwrap();
        assert!(r.messages.is_empty());
        assert_eq!((r.min_offset, r.next_offset), (per_queue, per_queue));
        assert_eq!(
            store.read("long", q, 0, 100, None).unwrap().messages.len(),
            100
        );
    }
    assert_eq!(
        cq_files("short"),
        1,
        "files holding only expired entries are deleted"
    );
    assert_eq!(cq_files("long"), 3);
    assert!(store.lookup_id("short", "short-7").is_none());
    assert!(store
        .lookup_key("short", "short-7", 0, i64::MAX, 10)
        .is_empty());
    assert!(store.lookup_id("long", "long-7").is_some());

    // New messages of the short topic are served again from where the queues stand.
    store
        .append(&message("short", 0, "fresh", None, &[]))
        .unwrap();
    wait(&store);
    let r = store.read("short", 0, 0, 10, None).unwrap();
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].queue_offset, per_queue);

    // A retention shorter than the messages' age hides them at once, before any retention
    // pass, and a reopen (its queues start at their first file again) expires them anew. The
    // sleep only makes sure the newest message is older than one millisecond.
    let mut short = store.topics().get("short").unwrap();
    short.retention_ms = Some(1);
    store.topics().update(short).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let r = store.read("short", 0, 0, 10, None).unwrap();
    assert!(r.messages.is_empty(), "expired messages are not served");
    assert_eq!(r.next_offset, per_queue + 1, "readers move past them");
    drop(store);
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.topics().get("short").unwrap().retention_ms, Some(1));
    assert_eq!(
        store.queue_range("short", 0),
        (per_queue + 1, per_queue + 1)
    );
    assert_eq!(store.queue_range("short", 1), (per_queue, per_queue));
    assert_eq!(store.queue_range("long", 0), (0, per_queue));
    assert_eq!(
        store.read("long", 0, 0, 3000, None).unwrap().messages.len() as u64,
        per_queue
    );
    // Expired is for good: a longer retention later brings nothing back, also after a reopen.
    let mut short = store.topics().get("short").unwrap();
    short.retention_ms = Some(hour);
    store.topics().update(short).unwrap();
    assert!(store
        .read("short", 0, 0, 10, None)
        .unwrap()
        .messages
        .is_empty());
    drop(store);
    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(
        store.queue_range("short", 0),
        (per_queue + 1, per_queue + 1)
    );
    assert!(store
        .read("short", 0, 0, 10, None)
        .unwrap()
        .messages
        .is_empty());
}
