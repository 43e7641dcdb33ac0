//! Deleting a topic: a topic created again under the same name starts empty. New groups do not
//! receive the old messages, old groups do not continue from their old offsets, lookups do not
//! find the old messages, and none of it comes back after a restart, a re-dispatch from the
//! start of the log, or a crash in the middle of the delete.

mod support;

use std::path::Path;

use ferromq_store::checkpoint::Checkpoint;
use ferromq_store::{MessageType, Permission, Store, StoreError, TopicConfig};
use support::{message, small_config, wait_dispatched};

fn topic(name: &str) -> TopicConfig {
    TopicConfig {
        name: name.into(),
        queues: 2,
        message_type: MessageType::Normal,
        permission: Permission::ReadWrite,
        retention_ms: None,
    }
}

/// Appends `n` messages to both queues of `t`, ids `<prefix>-<i>`, key `k`.
fn append(store: &Store, t: &str, prefix: &str, n: u32) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        store.append(&message(t, i % 2, &id, None, &["k"])).unwrap();
    }
    wait_dispatched(store);
}

/// Every message ids of the topic, read through its consume queues from offset 0.
fn ids(store: &Store, t: &str) -> Vec<String> {
    let mut out = vec![];
    for q in 0..2 {
        let r = store.read(t, q, 0, 10_000, None).unwrap();
        out.extend(r.messages.iter().map(|m| m.msg_id().unwrap().to_string()));
    }
    out.sort();
    out
}

fn old_and_new_topic(store: &Store) {
    store.topics().create(topic("t")).unwrap();
    store.topics().create(topic("other")).unwrap();
    append(store, "t", "old", 20);
    append(store, "other", "keep", 4);
    store.offsets().commit("g", "t", 0, 5).unwrap();
    store.offsets().commit("g", "other", 0, 2).unwrap();
    assert_eq!(store.topics().incarnation("t"), 0);

    store.delete_topic("t").unwrap();
    assert_eq!(store.queue_range("t", 0), (0, 0));
    assert!(ids(store, "t").is_empty());
    assert_eq!(
        store.offsets().get("g", "t", 0),
        None,
        "old offsets dropped"
    );
    assert_eq!(store.offsets().get("g", "other", 0), Some(2));
    assert_eq!(store.find_id("t", "old-3").unwrap(), None);
    assert!(store.lookup_key("t", "k", 0, i64::MAX, 100).is_empty());
    assert!(store.topics().incarnation("t") > 0);

    store.topics().create(topic("t")).unwrap();
    append(store, "t", "new", 3);
}

fn check_new_topic(store: &Store, when: &str) {
    assert_eq!(
        ids(store, "t"),
        vec!["new-0", "new-1", "new-2"],
        "{when}: only the new incarnation is served"
    );
    assert_eq!(
        store.queue_range("t", 0),
        (0, 2),
        "{when}: queues start at 0"
    );
    assert_eq!(store.queue_range("t", 1), (0, 1));
    assert_eq!(store.offsets().get("g", "t", 0), None, "{when}");
    assert_eq!(store.find_id("t", "old-3").unwrap(), None, "{when}");
    assert!(store.find_id("t", "new-1").unwrap().is_some(), "{when}");
    let keyed = store.lookup_key("t", "k", 0, i64::MAX, 100);
    assert_eq!(keyed.len(), 3, "{when}: only new messages by key");
    assert_eq!(
        ids(store, "other").len(),
        4,
        "{when}: other topics untouched"
    );
}

#[test]
fn a_topic_created_again_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    old_and_new_topic(&store);
    check_new_topic(&store, "live");
    // Replacing the live topic (same name, new settings) keeps its messages.
    store
        .topics()
        .upsert(TopicConfig {
            queues: 4,
            ..topic("t")
        })
        .unwrap();
    check_new_topic(&store, "after upsert");
    store.close().unwrap();
    drop(store);
    let store = Store::open(small_config(dir.path())).unwrap();
    check_new_topic(&store, "after a restart");
}

/// Re-dispatching the whole log (a checkpoint from before the delete, as after a crash) must
/// not put the old records back into the new queues.
#[test]
fn re_dispatch_from_the_start_of_the_log_skips_the_deleted_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    old_and_new_topic(&store);
    store.close().unwrap();
    drop(store);
    let cp = Checkpoint::load(dir.path()).unwrap().unwrap();
    Checkpoint {
        dispatched: 0,
        ..cp
    }
    .store(dir.path())
    .unwrap();
    std::fs::write(dir.path().join("RUNNING"), b"").unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    assert!(store.stats().recovered_unclean);
    wait_dispatched(&store);
    check_new_topic(&store, "after re-dispatch");
}

/// Copies a data directory (`to` is created). In-process on purpose: a `cp` child forked
/// while another test of this binary holds its store's `LOCK` descriptor would keep that
/// test's lock alive until the child execs, and its reopen would fail with `Locked`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A crash after the delete was recorded but before the old consume queues were removed
/// leaves them on disk: the next open recognises and removes them.
#[test]
fn consume_queues_a_crash_left_behind_are_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.topics().create(topic("t")).unwrap();
    append(&store, "t", "old", 20);
    store.flush().unwrap();
    store.close().unwrap();
    drop(store);
    copy_dir(&dir.path().join("consumequeue/t"), &saved.path().join("t"));

    let store = Store::open(small_config(dir.path())).unwrap();
    store.topics().delete("t").unwrap();
    store.close().unwrap();
    drop(store);
    // Put the old queues back, as if the removal had never happened.
    copy_dir(&saved.path().join("t"), &dir.path().join("consumequeue/t"));
    let store = Store::open(small_config(dir.path())).unwrap();
    assert!(ids(&store, "t").is_empty(), "old queues served again");
    assert_eq!(store.queue_range("t", 0), (0, 0));
    store.topics().create(topic("t")).unwrap();
    append(&store, "t", "new", 2);
    assert_eq!(ids(&store, "t"), vec!["new-0", "new-1"]);
}

#[test]
fn deleting_an_unknown_topic_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small_config(dir.path())).unwrap();
    store.topics().create(topic("t")).unwrap();
    append(&store, "t", "m", 4);
    assert!(matches!(
        store.delete_topic("nope"),
        Err(StoreError::UnknownTopic(_))
    ));
    assert_eq!(store.topics().incarnation("nope"), 0);
    assert_eq!(ids(&store, "t").len(), 4);
    append(&store, "t", "more", 2);
    assert_eq!(ids(&store, "t").len(), 6);
}
