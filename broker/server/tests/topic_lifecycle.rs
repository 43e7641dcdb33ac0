//! End to end: a topic deleted through the admin API and created again under the same name
//! starts empty for every consumer group, new or old, including across a restart, and a delay
//! message or a transaction's half message parked for the deleted topic is not delivered to the
//! new one (issue 14, item 4).

mod support;

use std::time::Duration;

use ferromq_proto::v2::{self, Code};
use support::*;

fn admin_ok(s: &Server, args: &[&str]) {
    let out = s.admin(args);
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_topic_created_again_starts_empty_for_old_and_new_groups() {
    let mut s = Server::start(&[]);
    s.create_topic("orders", "normal", 2);
    s.create_topic("later", "delay", 1);
    s.create_topic("pay", "transaction", 1);
    let mut c = s.client().await;
    for i in 0..10 {
        send_ok(
            &mut c,
            message("orders", &format!("old-{i}"), format!("old-{i}").as_bytes()),
        )
        .await;
    }
    // Group "old" consumes part of the topic, so it has committed offsets.
    let r = receive(&mut c, "old", "orders", 4, 30_000, 1_000).await;
    assert!(!r.messages.is_empty());
    for m in &r.messages {
        assert_eq!(ack(&mut c, "old", "orders", m).await, Code::Ok);
    }
    // A delay message parked for the topic that is about to be deleted.
    let (code, _) = send(
        &mut c,
        delay_message("later", "parked-old", now_ms() + 1_500),
    )
    .await;
    assert_eq!(code, Code::Ok);
    // A transaction open on a topic that is about to be deleted.
    let (code, tx) = send(&mut c, tx_message("pay", "half-old")).await;
    assert_eq!(code, Code::Ok);
    let tx_id = tx.entries[0].transaction_id.clone();

    admin_ok(&s, &["topic", "delete", "orders"]);
    admin_ok(&s, &["topic", "delete", "later"]);
    admin_ok(&s, &["topic", "delete", "pay"]);
    s.create_topic("orders", "normal", 2);
    s.create_topic("later", "delay", 1);
    s.create_topic("pay", "transaction", 1);
    // Committed after its topic was deleted: refused, and never delivered to the new topic.
    let committed = end(
        &mut c,
        "pay",
        "half-old",
        &tx_id,
        v2::TransactionResolution::Commit,
        v2::TransactionSource::Client,
    )
    .await;
    assert_eq!(committed, Code::TopicNotFound);
    assert!(drain_all(&mut c, "payer", "pay").await.is_empty());
    for i in 0..3 {
        send_ok(
            &mut c,
            message("orders", &format!("new-{i}"), format!("new-{i}").as_bytes()),
        )
        .await;
    }

    let mut new_group = drain_all(&mut c, "fresh", "orders").await;
    new_group.sort();
    assert_eq!(
        new_group,
        ["new-0", "new-1", "new-2"],
        "a new group sees nothing old"
    );
    let mut old_group = drain_all(&mut c, "old", "orders").await;
    old_group.sort();
    assert_eq!(
        old_group,
        ["new-0", "new-1", "new-2"],
        "an old group starts the new topic from its beginning"
    );
    let described = s.admin_json(&["topic", "describe", "orders"]);
    assert_eq!(described["total_messages"], 3, "{described}");

    // The parked delay message fell due after its topic was deleted: dropped, not delivered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(drain_all(&mut c, "delayed", "later").await.is_empty());

    // Nothing comes back after a restart either.
    assert!(s.terminate().success());
    s.spawn();
    let mut c = s.client().await;
    send_ok(&mut c, message("orders", "after-restart", b"after-restart")).await;
    assert_eq!(drain_all(&mut c, "old", "orders").await, ["after-restart"]);
    let mut late = drain_all(&mut c, "late", "orders").await;
    late.sort();
    assert_eq!(late, ["after-restart", "new-0", "new-1", "new-2"]);
    assert!(drain_all(&mut c, "delayed", "later").await.is_empty());
    assert!(drain_all(&mut c, "payer", "pay").await.is_empty());
    assert_eq!(
        s.admin_json(&["topic", "describe", "pay"])["half_messages"],
        0
    );
}
