//! End to end on the binary: sends that leave `queue_id` out (0 on the wire, what the official
//! Python client always sends) are spread over every queue of the topic, FIFO message groups
//! over many queues with each group on one queue, and a `queue_id` the topic does not have is
//! refused with BAD_REQUEST and stores nothing (issue 14, item 5).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use ferromq_proto::v2::{self, Code};
use support::*;

/// Messages per queue of a topic, from `admin topic describe`.
fn per_queue(s: &Server, topic: &str) -> Vec<i64> {
    let d = s.admin_json(&["topic", "describe", topic]);
    d["queue_offsets"]
        .as_array()
        .expect("queue_offsets")
        .iter()
        .map(|q| q["messages"].as_i64().expect("messages"))
        .collect()
}

fn queue_of(m: &v2::Message) -> i32 {
    m.system_properties.as_ref().expect("sp").queue_id
}

#[tokio::test]
async fn sends_without_a_queue_spread_over_every_queue_and_fifo_groups_over_many() {
    let s = Server::start(&[]);
    s.create_topic("plain", "normal", 4);
    s.create_topic("ordered", "fifo", 16);
    let mut c = s.client().await;
    for i in 0..40 {
        send_ok(&mut c, message("plain", &format!("P{i}"), b"x")).await;
    }
    assert_eq!(
        per_queue(&s, "plain"),
        [10, 10, 10, 10],
        "round-robin over the topic's queues"
    );

    const GROUPS: usize = 200;
    for seq in 0..3 {
        for g in 0..GROUPS {
            let id = format!("g{g}-{seq}");
            send_ok(
                &mut c,
                fifo_message("ordered", &id, &format!("group-{g}"), id.as_bytes()),
            )
            .await;
        }
    }
    let counts = per_queue(&s, "ordered");
    let used = counts.iter().filter(|n| **n > 0).count();
    eprintln!("{GROUPS} FIFO message groups over 16 queues: {counts:?}");
    assert_eq!(used, 16, "200 message groups use every queue: {counts:?}");

    // Each group stays on one queue, in send order.
    let mut seen: BTreeMap<String, (BTreeSet<i32>, Vec<String>)> = BTreeMap::new();
    let mut total = 0;
    while total < GROUPS * 3 {
        let r = receive(&mut c, "reader", "ordered", 32, 60_000, 1_000).await;
        assert!(
            !r.messages.is_empty(),
            "only {total} of {} delivered",
            GROUPS * 3
        );
        for m in &r.messages {
            let g = m
                .system_properties
                .as_ref()
                .and_then(|sp| sp.message_group.clone())
                .expect("group");
            let e = seen.entry(g).or_default();
            e.0.insert(queue_of(m));
            e.1.push(String::from_utf8_lossy(&m.body).into_owned());
            assert_eq!(ack(&mut c, "reader", "ordered", m).await, Code::Ok);
            total += 1;
        }
    }
    for (g, (queues, bodies)) in &seen {
        assert_eq!(queues.len(), 1, "{g} on queues {queues:?}");
        let n = g.trim_start_matches("group-");
        let want: Vec<String> = (0..3).map(|s| format!("g{n}-{s}")).collect();
        assert_eq!(bodies, &want, "{g} out of order");
    }
}

#[tokio::test]
async fn a_queue_the_topic_lacks_is_refused_and_a_chosen_one_kept() {
    let s = Server::start(&[]);
    s.create_topic("plain", "normal", 4);
    let mut c = s.client().await;
    let with_queue = |id: &str, q: i32| {
        let mut m = message("plain", id, b"x");
        m.system_properties.as_mut().expect("sp").queue_id = q;
        m
    };
    for (id, q) in [("beyond", 4), ("far", 1_000), ("negative", -1)] {
        let (code, r) = send(&mut c, with_queue(id, q)).await;
        assert_eq!(code, Code::BadRequest, "queue_id {q}: {r:?}");
        let msg = &r.entries[0].status.as_ref().expect("status").message;
        assert!(msg.contains("queue_id"), "{msg}");
    }
    assert_eq!(per_queue(&s, "plain"), [0, 0, 0, 0], "nothing stored");
    send_ok(&mut c, with_queue("three", 3)).await;
    assert_eq!(
        per_queue(&s, "plain"),
        [0, 0, 0, 1],
        "a chosen queue is kept"
    );
}
