//! Damaged files: a last segment cut short is repaired at open like any torn tail, whatever
//! the checkpoint says; a damaged record inside the log is reported, counted once and never
//! served, and lookups tell "damaged" from "not found".

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferromq_store::{AppendResult, Store, StoreError};
use support::{body_for, message, small_config, wait_dispatched};

/// Opens the store and returns the warning lines the opening thread logged.
fn open_logged(
    cfg: &ferromq_store::StoreConfig,
) -> (ferromq_store::Result<Arc<Store>>, Vec<String>) {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Lines::default();
    let w = out.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let store = tracing::subscriber::with_default(sub, || Store::open(cfg.clone()));
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    (store, text.lines().map(str::to_string).collect())
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join("commitlog").join(format!("{base:020}"))
}

/// Appends `n` messages (ids `m<i>`, two queues) and closes cleanly: the checkpoint then
/// says everything is on disk.
fn write_and_close(dir: &Path, n: usize) -> Vec<AppendResult> {
    let store = Store::open(small_config(dir)).unwrap();
    let acks: Vec<AppendResult> = (0..n)
        .map(|i| {
            store
                .append(&message(
                    "t",
                    (i % 2) as u32,
                    &format!("m{i}"),
                    None,
                    &["k"],
                ))
                .unwrap()
        })
        .collect();
    store.close().unwrap();
    acks
}

/// Writes 600 messages, closes, and cuts the last segment file `into` bytes into the last
/// record; returns that record and its segment's base.
fn cut_last_segment(dir: &Path, into: u64) -> (AppendResult, u64) {
    let acks = write_and_close(dir, 600);
    let last = *acks.last().unwrap();
    let base = last.phys_offset - last.phys_offset % small_config(dir).segment_size;
    assert!(base > 0, "the log must span more than one segment");
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir, base))
        .unwrap()
        .set_len(last.phys_offset - base + into)
        .unwrap();
    (last, base)
}

/// Reads both queues from the start: the ids served, in queue order.
fn served(store: &Store) -> Vec<Vec<String>> {
    wait_dispatched(store);
    (0..2)
        .map(|q| {
            let r = store.read("t", q, 0, 100_000, None).unwrap();
            assert!(r.corrupt.is_empty());
            r.messages
                .iter()
                .map(|m| {
                    assert_eq!(m.body, body_for(m.msg_id().unwrap()));
                    m.msg_id().unwrap().to_string()
                })
                .collect()
        })
        .collect()
}

fn expected(n: usize) -> Vec<Vec<String>> {
    (0..2)
        .map(|q| {
            (0..n)
                .filter(|i| i % 2 == q)
                .map(|i| format!("m{i}"))
                .collect()
        })
        .collect()
}

#[test]
fn a_last_segment_cut_mid_record_opens_without_the_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    // Cut the file 10 bytes into the last record: shorter than the record it holds.
    let (last, base) = cut_last_segment(dir.path(), 10);

    let (store, lines) = open_logged(&cfg);
    let store = store.expect("a short last segment is repaired, not fatal");
    let torn: Vec<&String> = lines.iter().filter(|l| l.contains("cut short")).collect();
    assert_eq!(torn.len(), 1, "one line about the cut segment: {lines:#?}");
    let seg = segment_path(dir.path(), base);
    assert!(
        torn[0].contains(&seg.display().to_string()) && torn[0].contains("bytes_dropped=10"),
        "the line names the file and the bytes dropped: {}",
        torn[0]
    );
    let s = store.stats();
    assert_eq!(
        s.recovery_truncated_bytes, 10,
        "the torn record's bytes are dropped"
    );
    assert!(s.recovery_corrupt_records.is_empty());
    assert_eq!(s.log_write_offset, last.phys_offset);
    assert_eq!(served(&store), expected(599));
    assert_eq!(store.find_id("t", "m599").unwrap(), None);
    assert!(store.find_id("t", "m598").unwrap().is_some());
    // Appends continue where the torn record was, in its queue position.
    let a = store
        .append(&message("t", 1, "after", None, &["k"]))
        .unwrap();
    assert_eq!(
        (a.phys_offset, a.queue_offset),
        (last.phys_offset, last.queue_offset)
    );
    wait_dispatched(&store);
    assert_eq!(
        store.find_id("t", "after").unwrap().unwrap().phys_offset,
        a.phys_offset,
        "records at the cut offsets are indexed again"
    );
    store.close().unwrap();
    drop(store);
    let store = Store::open(cfg).unwrap();
    let mut want = expected(599);
    want[1].push("after".into());
    assert_eq!(served(&store), want);
}

#[test]
fn a_last_segment_cut_at_a_record_boundary_loses_nothing_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    cut_last_segment(dir.path(), 0);
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.stats().recovery_truncated_bytes, 0);
    assert_eq!(served(&store), expected(599));
}

#[test]
fn a_segment_cut_short_before_the_last_one_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path());
    let acks = write_and_close(dir.path(), 600);
    assert!(acks.last().unwrap().phys_offset >= cfg.segment_size);
    let first = segment_path(dir.path(), 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let e = match Store::open(cfg) {
        Ok(_) => panic!("a hole in the middle of the log must not open silently"),
        Err(e) => e,
    };
    assert!(matches!(e, StoreError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains(&first.display().to_string()), "{e}");
}

#[test]
fn a_damaged_record_is_counted_once_and_named_by_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let acks = write_and_close(dir.path(), 50);
    let victim = &acks[20];
    // Flip a byte in the middle of record 20's body; the checkpoint says it was durable, so
    // this is damage inside the log, not a torn tail.
    let path = segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = (victim.phys_offset + victim.size as u64 - 5) as usize;
    bytes[at] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let store = Store::open(small_config(dir.path())).unwrap();
    assert_eq!(store.corrupt_records_total(), 0, "not seen yet");
    for _ in 0..3 {
        let r = store.read("t", 0, 0, 1000, None).unwrap();
        assert_eq!(r.corrupt, vec![victim.phys_offset]);
        assert_eq!(
            r.messages.len(),
            24,
            "every other record of the queue is served"
        );
        assert!(r.messages.iter().all(|m| m.msg_id() != Some("m20")));
    }
    assert_eq!(
        store.corrupt_records_total(),
        1,
        "counted once, however often read"
    );
    assert_eq!(store.stats().corrupt_records_total, 1);
    match store.find_id("t", "m20") {
        Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, victim.phys_offset),
        other => panic!("a damaged message must be reported as such, got {other:?}"),
    }
    assert!(store.lookup_id("t", "m20").is_none());
    assert!(matches!(
        store.message_at(victim.phys_offset),
        Err(StoreError::Corrupt { offset, .. }) if offset == victim.phys_offset
    ));
    assert_eq!(
        store.find_id("t", "m21").unwrap().unwrap().phys_offset,
        acks[21].phys_offset
    );
    assert_eq!(store.find_id("t", "never-sent").unwrap(), None);
    assert_eq!(store.corrupt_records_total(), 1);
}
