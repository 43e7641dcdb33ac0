//! A replica's log: copied record by record from a leader's log at the same offsets, dispatched
//! only up to the group's confirm offset, cut back to the group's history when it diverged, and
//! reopened without dispatching what was never confirmed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ferromq_store::{
    MessageType, Permission, RawBatch, Store, StoreConfig, StoreError, TopicConfig,
};
use support::{message, small_config};

fn topic(s: &Store, name: &str, queues: u32) {
    s.topics()
        .create(TopicConfig {
            name: name.into(),
            queues,
            message_type: MessageType::Normal,
            permission: Permission::ReadWrite,
            retention_ms: None,
        })
        .expect("topic");
}

fn replica_config(dir: &std::path::Path) -> StoreConfig {
    let mut c = small_config(dir);
    c.replicated = true;
    c
}

/// A leader holding `n` messages `m0`, `m1`, ... on topic `t` (its `queues` queues in turn) and
/// an empty follower with the same topic; the messages' log offsets and ids, in order.
fn leader_and_follower(
    ld: &std::path::Path,
    fd: &std::path::Path,
    queues: u32,
    n: u32,
) -> (Arc<Store>, Arc<Store>, Vec<(u64, String)>) {
    let leader = Store::open(small_config(ld)).expect("leader");
    let follower = Store::open(replica_config(fd)).expect("follower");
    topic(&leader, "t", queues);
    topic(&follower, "t", queues);
    let sent = (0..n)
        .map(|i| {
            let id = format!("m{i}");
            let a = leader
                .append(&message("t", i % queues, &id, None, &[]))
                .expect("append");
            (a.phys_offset, id)
        })
        .collect();
    (leader, follower, sent)
}

/// Copies the leader's log from the follower's end to `upto`, in batches of about 16 KiB.
fn copy(leader: &Store, follower: &Store, upto: u64) -> usize {
    let mut batches = 0;
    loop {
        let from = follower.log_end();
        if from >= upto {
            return batches;
        }
        let b = leader.read_raw(from, 16 << 10, upto).expect("read raw");
        assert!(b.end() > from, "a batch always moves on ({from})");
        follower.append_raw(&b).expect("append raw");
        batches += 1;
    }
}

fn ids(s: &Store, t: &str, q: u32) -> Vec<String> {
    let r = s.read(t, q, 0, 10_000, None).expect("read");
    r.messages
        .iter()
        .filter_map(|m| m.msg_id().map(str::to_string))
        .collect()
}

#[test]
fn a_follower_holds_the_same_records_at_the_same_offsets_and_serves_only_what_is_confirmed() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Enough to roll several 256 KiB segments, so fillers are copied too.
    let (leader, follower, sent) = leader_and_follower(ld.path(), fd.path(), 2, 2000);
    let end = leader.log_end();
    let batches = copy(&leader, &follower, end);
    assert!(batches > 10, "copied in {batches} batches");
    assert_eq!(follower.log_end(), end);
    for (phys, id) in sent.iter().step_by(97) {
        let m = follower
            .message_at(*phys)
            .expect("same record at the same offset");
        assert_eq!(m.msg_id(), Some(id.as_str()));
    }
    // Nothing confirmed yet: consumers of the follower see nothing.
    assert!(ids(&follower, "t", 0).is_empty());
    let half = sent[1000].0;
    follower.set_dispatch_limit(half);
    assert!(follower.wait_dispatched(half, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        follower.dispatched_end(),
        half,
        "never past the confirm offset"
    );
    assert_eq!(ids(&follower, "t", 0).len(), 500);
    follower.set_dispatch_limit(u64::MAX);
    assert!(follower.wait_dispatched(end, Duration::from_secs(10)));
    assert_eq!(ids(&follower, "t", 0), ids(&leader, "t", 0));
    assert_eq!(ids(&follower, "t", 1), ids(&leader, "t", 1));
    assert!(
        follower.lookup_id("t", "m1999").is_some(),
        "the index follows dispatch"
    );
}

#[test]
fn a_diverged_tail_is_cut_and_the_leaders_records_take_its_place() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Store::open(small_config(ld.path())).expect("leader");
    let old = Store::open(replica_config(fd.path())).expect("old leader");
    topic(&leader, "t", 1);
    topic(&old, "t", 1);
    for i in 0..50 {
        leader
            .append(&message("t", 0, &format!("a{i}"), None, &[]))
            .expect("append");
    }
    let common = leader.log_end();
    copy(&leader, &old, common);
    old.set_dispatch_limit(common);
    // The old member wrote on its own (an unconfirmed tail) before it lost leadership...
    for i in 0..30 {
        old.append(&message("t", 0, &format!("lost{i}"), None, &[]))
            .expect("append");
    }
    // ...while the new leader went on with other records.
    for i in 0..20 {
        leader
            .append(&message("t", 0, &format!("b{i}"), None, &[]))
            .expect("append");
    }
    assert!(old.wait_dispatched(common, Duration::from_secs(10)));
    assert!(
        matches!(old.truncate(common - 1), Err(StoreError::Malformed { .. })),
        "never below what consumers may have read"
    );
    let dropped = old.truncate(common).expect("truncate");
    assert!(dropped > 0);
    assert_eq!(old.log_end(), common);
    copy(&leader, &old, leader.log_end());
    old.set_dispatch_limit(u64::MAX);
    assert!(old.wait_dispatched(leader.log_end(), Duration::from_secs(10)));
    let got = ids(&old, "t", 0);
    assert_eq!(got, ids(&leader, "t", 0));
    assert!(!got.iter().any(|i| i.starts_with("lost")));
    // Queue offsets continue where the leader's do.
    let r = old.read("t", 0, 0, 1000, None).expect("read");
    assert_eq!(r.max_offset, 70);
}

#[test]
fn a_reopened_replica_dispatches_nothing_unconfirmed_and_continues_its_queues() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Store::open(small_config(ld.path())).expect("leader");
    topic(&leader, "t", 1);
    for i in 0..40 {
        leader
            .append(&message("t", 0, &format!("m{i}"), None, &[]))
            .expect("append");
    }
    support::wait_dispatched(&leader);
    let confirmed = leader.read("t", 0, 20, 1, None).expect("read").messages[0].phys_offset;
    let end = leader.log_end();
    {
        let f = Store::open(replica_config(fd.path())).expect("follower");
        topic(&f, "t", 1);
        copy(&leader, &f, end);
        f.set_dispatch_limit(confirmed);
        assert!(f.wait_dispatched(confirmed, Duration::from_secs(10)));
        f.close().expect("close");
    }
    let f = Store::open(replica_config(fd.path())).expect("reopen");
    assert_eq!(f.log_end(), end, "every copied record is still there");
    assert_eq!(
        ids(&f, "t", 0).len(),
        20,
        "only the confirmed part is served"
    );
    // Becoming leader: it appends after the records it holds, with the next queue offset.
    f.set_dispatch_limit(u64::MAX);
    let a = f
        .append(&message("t", 0, "next", None, &[]))
        .expect("append");
    assert_eq!(a.queue_offset, 40);
}

#[test]
fn a_damaged_or_misplaced_record_is_refused_and_nothing_is_written() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Store::open(small_config(ld.path())).expect("leader");
    let follower = Arc::new(Store::open(replica_config(fd.path())).expect("follower"));
    topic(&leader, "t", 1);
    for i in 0..5 {
        leader
            .append(&message("t", 0, &format!("m{i}"), None, &[]))
            .expect("append");
    }
    let good = leader.read_raw(0, 1 << 20, u64::MAX).expect("read");
    let mut bad = good.clone();
    let mid = bad.bytes.len() / 2;
    bad.bytes[mid] ^= 0x40;
    assert!(follower.append_raw(&bad).is_err());
    assert!(
        follower.try_append_raw(&bad).is_err(),
        "the in-memory copy checks records as append_raw does"
    );
    assert_eq!(follower.log_end(), 0, "a refused batch writes nothing");
    support::wait_dispatched(&leader);
    let second = leader.read("t", 0, 1, 1, None).expect("read").messages[0].phys_offset;
    let misplaced = RawBatch {
        from: 0,
        ..leader.read_raw(second, 1, u64::MAX).expect("read")
    };
    assert!(
        follower.append_raw(&misplaced).is_err(),
        "a record written at another offset than its own"
    );
    let late = RawBatch {
        from: 10,
        ..good.clone()
    };
    assert!(
        follower.append_raw(&late).is_err(),
        "a batch must start at the log end"
    );
    assert!(
        matches!(
            follower.try_append_raw(&late),
            Err(StoreError::Malformed { .. })
        ),
        "a batch must start at the log end, in memory too"
    );
    assert_eq!(follower.log_end(), 0, "a refused batch writes nothing");
    assert_eq!(
        follower.append_raw(&good).expect("good batch"),
        leader.log_end()
    );
}

#[test]
fn a_follower_copies_in_memory_when_it_can_and_leaves_the_rest_to_append_raw() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower, sent) = leader_and_follower(ld.path(), fd.path(), 2, 1500);
    let end = leader.log_end();
    // The first batch reaches queues without a consume queue file: that is an allocation.
    let first = leader.read_raw(0, 8 << 10, end).expect("read raw");
    assert_eq!(
        follower.try_append_raw(&first).expect("checked"),
        None,
        "a batch needing a new file is left to append_raw"
    );
    assert_eq!(follower.log_end(), 0, "a batch left alone writes nothing");
    let (mut fast, mut slow) = (0, 0);
    while follower.log_end() < end {
        let b = leader
            .read_raw(follower.log_end(), 8 << 10, end)
            .expect("read raw");
        // A batch that starts a new segment is left to the blocking append.
        let mut taken = None;
        for _ in 0..200 {
            taken = follower.try_append_raw(&b).expect("checked");
            if taken.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match taken {
            Some(e) => {
                assert_eq!(e, b.end());
                fast += 1;
            }
            None => {
                follower.append_raw(&b).expect("append raw");
                slow += 1;
            }
        }
    }
    assert!(fast > slow, "{fast} batches copied in memory, {slow} not");
    assert_eq!(follower.log_end(), end);
    for (phys, id) in sent.iter().step_by(53) {
        let m = follower
            .message_at(*phys)
            .expect("same record, same offset");
        assert_eq!(m.msg_id(), Some(id.as_str()));
    }
    // Nothing past the confirm offset is dispatched, however the batches were written.
    assert!(ids(&follower, "t", 0).is_empty());
    follower.set_dispatch_limit(u64::MAX);
    assert!(follower.wait_dispatched(end, Duration::from_secs(10)));
    assert_eq!(ids(&follower, "t", 0), ids(&leader, "t", 0));
    assert_eq!(ids(&follower, "t", 1), ids(&leader, "t", 1));
    assert!(follower.lookup_id("t", "m1499").is_some());
}
