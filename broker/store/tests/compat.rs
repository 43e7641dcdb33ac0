//! A data directory written by an earlier build opens and reads back unchanged.
//!
//! `fixtures/main-v1-store.tar.gz` was written by the store of `main` at e62c636 (record format
//! version 1 with the transaction fields still in use, 6 MB consume queue files of the then
//! fixed size, `topics.json` and `offsets.json`): two topics, 800 messages over two 128 KiB
//! segments with ids, keys and tags, three committed offsets, closed cleanly. The program
//! that wrote it set `segment_size = 128 KiB`, `max_body_size = 1024`, `index_slots = 1024`,
//! `index_entries = 4096` and appended message `i` to `payments/0` when `i % 3 == 2`, else to
//! `orders/(i % 2)`, with id `id-<i>`, keys `k<i % 5> x<i>`, tag even/odd and body
//! `body-<i>-` repeated `1 + i % 20` times.

use std::path::Path;

use ferromq_store::{MessageType, Permission, Store, StoreConfig, TopicConfig};

fn unpack(to: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/main-v1-store.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(to)
        .status()
        .expect("run tar")
        .success();
    assert!(ok, "unpack {}", fixture.display());
}

/// Today's defaults, with only the settings the directory was written with.
fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_size = 128 * 1024;
    c.max_body_size = 1024;
    c
}

fn place(i: u32) -> (&'static str, u32) {
    if i % 3 == 2 {
        ("payments", 0)
    } else {
        ("orders", i % 2)
    }
}

fn body(i: u32) -> Vec<u8> {
    format!("body-{i}-")
        .repeat(1 + (i as usize % 20))
        .into_bytes()
}

fn check(store: &Store, when: &str) {
    let mut topics = store.topics().list();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let t = |name: &str, queues| TopicConfig {
        name: name.into(),
        queues,
        message_type: MessageType::Normal,
        permission: Permission::ReadWrite,
        retention_ms: None,
    };
    assert_eq!(topics, vec![t("orders", 2), t("payments", 1)], "{when}");
    assert_eq!(store.offsets().get("g1", "orders", 0), Some(5), "{when}");
    assert_eq!(store.offsets().get("g1", "orders", 1), Some(7), "{when}");
    assert_eq!(store.offsets().get("g2", "payments", 0), Some(30), "{when}");
    for (topic, queue) in [("orders", 0), ("orders", 1), ("payments", 0)] {
        let want: Vec<u32> = (0..800).filter(|i| place(*i) == (topic, queue)).collect();
        let r = store.read(topic, queue, 0, 10_000, None).unwrap();
        assert!(r.corrupt.is_empty(), "{when}");
        let got: Vec<u32> = r
            .messages
            .iter()
            .map(|m| {
                let i: u32 = m.msg_id().unwrap()[3..].parse().unwrap();
                assert_eq!(m.body, body(i), "{when}: body of id-{i}");
                assert_eq!(
                    m.tag(),
                    Some(if i.is_multiple_of(2) { "even" } else { "odd" })
                );
                assert_eq!(m.born_timestamp_ms, 1_700_000_000_000 + i as i64);
                i
            })
            .collect();
        assert_eq!(got, want, "{when}: {topic}/{queue}");
    }
    let m = store.find_id("orders", "id-400").unwrap().expect("by id");
    assert_eq!(m.body, body(400));
    let keyed = store.lookup_key("payments", "x2", 0, i64::MAX, 10);
    assert_eq!(keyed.len(), 1, "{when}: by key");
    assert_eq!(keyed[0].msg_id(), Some("id-2"));
}

#[test]
fn a_store_written_by_main_opens_and_reads_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    unpack(dir.path());
    let store = Store::open(config(dir.path())).expect("open a store written by main");
    assert!(!store.stats().recovered_unclean);
    check(&store, "first open");
    assert!(dir.path().join("config/metadata.log").exists());
    assert!(dir.path().join("config/topics.json.migrated").exists());
    // Writes continue in the old queues (whose files keep their size) and in new ones.
    let a = store
        .append(&ferromq_store::NewMessage {
            topic: "payments".into(),
            body: b"new".to_vec().into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(a.queue_offset, 266);
    store.offsets().commit("g2", "payments", 0, 31).unwrap();
    store.close().unwrap();
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.offsets().get("g2", "payments", 0), Some(31));
    assert_eq!(store.queue_range("payments", 0), (0, 267));
    let cq = dir
        .path()
        .join("consumequeue/payments/0/00000000000000000000");
    assert_eq!(
        std::fs::metadata(cq).unwrap().len(),
        6_000_000,
        "old queue files kept"
    );
}
