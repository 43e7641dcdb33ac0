//! End to end: send, receive, ack, redelivery, dead letters, FIFO order, long polling,
//! Telemetry settings and restarts, through the real binary.

mod support;

use std::time::{Duration, Instant};

use ferromq_proto::v2::{self, Code};
use support::*;

#[tokio::test]
async fn messages_arrive_with_tags_keys_properties_and_ack_makes_them_never_come_back() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 4);
    let mut c = s.client().await;
    for (i, tag) in ["A", "B", "C"].iter().enumerate() {
        let mut m = message("t", &format!("ID{i}"), format!("body-{tag}").as_bytes());
        let sp = m.system_properties.as_mut().unwrap();
        sp.tag = Some(tag.to_string());
        sp.keys = vec![format!("key-{tag}"), "shared".into()];
        sp.queue_id = i as i32;
        m.user_properties.insert("color".into(), format!("c{i}"));
        send_ok(&mut c, m).await;
    }
    let got = receive_n(
        &mut c,
        receive_request("g", "t", 16, 30_000, 3_000, "A || C"),
        2,
    )
    .await;
    let mut bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["body-A", "body-C"],
        "the tag filter selects A and C only"
    );
    for m in &got {
        let sp = m.system_properties.as_ref().unwrap();
        assert_eq!(sp.body_encoding, v2::Encoding::Identity as i32);
        // SHA-1 where the CPU computes it in hardware, MD5 elsewhere; upper-case hex.
        let digest = sp.body_digest.as_ref().unwrap();
        assert!(
            [v2::DigestType::Sha1 as i32, v2::DigestType::Md5 as i32].contains(&digest.r#type),
            "{digest:?}"
        );
        assert_eq!(
            Some(digest),
            Some(&ferromq::convert::body_digest(&m.body)),
            "the digest is the body's"
        );
        assert_eq!(sp.delivery_attempt, Some(1));
        assert!(sp.keys.contains(&"shared".to_string()));
        assert_eq!(sp.born_host, "test-host");
        assert!(sp.store_timestamp.is_some() && sp.queue_offset.is_some());
        assert_eq!(
            m.user_properties.len(),
            1,
            "only user properties: {:?}",
            m.user_properties
        );
        assert_eq!(m.topic.as_ref().unwrap().name, "t");
        assert_eq!(ack(&mut c, "g", "t", m).await, Code::Ok);
    }
    // Nothing comes back: acked, and B was filtered out for this group.
    let r = receive_with(
        &mut c,
        receive_request("g", "t", 16, 1_000, 1_500, "A || C"),
    )
    .await;
    assert_eq!(r.code(), Code::MessageNotFound, "{:?}", r.bodies());
    // Another group sees all three.
    let all = receive_n(
        &mut c,
        receive_request("other", "t", 16, 30_000, 3_000, "*"),
        3,
    )
    .await;
    assert_eq!(all.len(), 3);
    // Message lookups by id and key.
    let m = s.admin_json(&["message", "get", "--topic", "t", "--id", "ID1"]);
    assert_eq!(m["body"], "body-B");
    assert_eq!(m["tag"], "B");
    let found = s.admin_json(&["message", "query", "--topic", "t", "--key", "shared"]);
    assert_eq!(found.as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn unacked_messages_come_back_after_the_invisible_time_with_attempt_plus_one() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;
    send_ok(&mut c, message("t", "X1", b"again")).await;
    let first = receive(&mut c, "g", "t", 1, 1_000, 3_000).await;
    assert_eq!(first.bodies(), ["again"]);
    assert_eq!(attempt(&first.messages[0]), 1);
    let started = Instant::now();
    let second = receive(&mut c, "g", "t", 1, 10_000, 5_000).await;
    assert_eq!(
        second.bodies(),
        ["again"],
        "redelivered by long polling once invisibility ended"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "not before the invisible time ({:?})",
        started.elapsed()
    );
    assert_eq!(attempt(&second.messages[0]), 2);
    // The first delivery's handle is stale now; the latest one settles.
    assert_eq!(
        ack(&mut c, "g", "t", &first.messages[0]).await,
        Code::InvalidReceiptHandle
    );
    assert_eq!(ack(&mut c, "g", "t", &second.messages[0]).await, Code::Ok);
}

#[tokio::test]
async fn change_invisible_duration_returns_a_new_handle_and_reschedules() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;
    send_ok(&mut c, message("t", "N1", b"nack-me")).await;
    let r = receive(&mut c, "g", "t", 1, 60_000, 3_000).await;
    let m = &r.messages[0];
    let resp = c
        .change_invisible_duration(v2::ChangeInvisibleDurationRequest {
            group: res("g"),
            topic: res("t"),
            receipt_handle: handle(m),
            invisible_duration: Some(dur(0)),
            message_id: "N1".into(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&resp.status), Code::Ok);
    assert!(!resp.receipt_handle.is_empty() && resp.receipt_handle != handle(m));
    let again = receive(&mut c, "g", "t", 1, 60_000, 3_000).await;
    assert_eq!(
        again.bodies(),
        ["nack-me"],
        "a nack with zero delay makes it visible at once"
    );
    assert_eq!(attempt(&again.messages[0]), 2);
}

#[tokio::test]
async fn messages_move_to_the_dead_letter_topic_after_max_attempts() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let g = s.admin_json(&["group", "update", "g", "--max-attempts", "2"]);
    assert_eq!(g["max_attempts"], 2);
    let mut c = s.client().await;
    send_ok(&mut c, message("t", "D1", b"poison")).await;
    for n in 1..=2 {
        let r = receive(&mut c, "g", "t", 1, 1_000, 5_000).await;
        assert_eq!(r.bodies(), ["poison"], "delivery {n}");
        assert_eq!(attempt(&r.messages[0]), n);
    }
    // After the second invisibility ends it goes to %DLQ%g instead of a third delivery.
    let r = receive(&mut c, "g", "t", 1, 1_000, 2_500).await;
    assert_eq!(
        r.code(),
        Code::MessageNotFound,
        "no third delivery: {:?}",
        r.bodies()
    );
    let dlq = receive(&mut c, "dlq-reader", "%DLQ%g", 1, 10_000, 5_000).await;
    assert_eq!(dlq.bodies(), ["poison"]);
    let sp = dlq.messages[0].system_properties.as_ref().unwrap();
    assert_eq!(sp.message_id, "D1");
    assert_eq!(
        sp.dead_letter_queue.as_ref().map(|d| d.topic.as_str()),
        Some("t")
    );
    let desc = s.admin_json(&["group", "describe", "g"]);
    assert_eq!(
        desc["lag"], 0,
        "the dead-lettered message is settled for the group: {desc}"
    );
}

#[tokio::test]
async fn client_driven_dead_lettering_settles_the_message() {
    let s = Server::start(&[]);
    s.create_topic("t", "fifo", 1);
    let mut c = s.client().await;
    send_ok(&mut c, fifo_message("t", "F1", "grp", b"bad")).await;
    send_ok(&mut c, fifo_message("t", "F2", "grp", b"next")).await;
    let r = receive(&mut c, "g", "t", 4, 30_000, 3_000).await;
    assert_eq!(r.bodies(), ["bad"]);
    assert_eq!(
        support::forward_to_dlq(&mut c, "g", "t", &r.messages[0]).await,
        Code::Ok
    );
    let r = receive(&mut c, "g", "t", 4, 30_000, 3_000).await;
    assert_eq!(r.bodies(), ["next"], "the group's next message is released");
    let dlq = receive(&mut c, "reader", "%DLQ%g", 4, 30_000, 3_000).await;
    assert_eq!(dlq.bodies(), ["bad"]);
}

#[tokio::test]
async fn fifo_groups_are_delivered_in_order_one_at_a_time() {
    let s = Server::start(&[]);
    s.create_topic("orders", "fifo", 2);
    let mut c = s.client().await;
    // Three message groups, interleaved, in two queues (as producers hash groups to queues).
    let groups = ["alpha", "beta", "gamma"];
    for i in 0..5 {
        for (gi, g) in groups.iter().enumerate() {
            let mut m = fifo_message(
                "orders",
                &format!("{g}-{i}"),
                g,
                format!("{g}-{i}").as_bytes(),
            );
            m.system_properties.as_mut().unwrap().queue_id = (gi % 2) as i32;
            send_ok(&mut c, m).await;
        }
    }
    let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.values().map(Vec::len).sum::<usize>() < 15 && Instant::now() < deadline {
        let r = receive(&mut c, "g", "orders", 32, 30_000, 2_000).await;
        let mut batch_groups = std::collections::HashSet::new();
        for m in &r.messages {
            let sp = m.system_properties.as_ref().unwrap();
            let g = sp.message_group.clone().expect("group");
            assert!(
                batch_groups.insert(g.clone()),
                "two messages of group {g} in flight at once"
            );
            seen.entry(g)
                .or_default()
                .push(String::from_utf8_lossy(&m.body).into_owned());
        }
        for m in &r.messages {
            assert_eq!(ack(&mut c, "g", "orders", m).await, Code::Ok);
        }
    }
    for g in groups {
        let want: Vec<String> = (0..5).map(|i| format!("{g}-{i}")).collect();
        assert_eq!(
            seen.get(g),
            Some(&want),
            "group {g} out of order or incomplete"
        );
    }
}

#[tokio::test]
async fn long_polling_returns_as_soon_as_a_message_is_sent() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 2);
    let mut consumer = s.client().await;
    let mut producer = s.client().await;
    let started = Instant::now();
    let waiter =
        tokio::spawn(async move { receive(&mut consumer, "g", "t", 4, 30_000, 10_000).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_ok(&mut producer, message("t", "L1", b"wake")).await;
    let r = waiter.await.expect("join");
    assert_eq!(r.bodies(), ["wake"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woke on the send, not at the polling timeout ({:?})",
        started.elapsed()
    );
    // An empty poll ends by itself within its time, with MESSAGE_NOT_FOUND and a timestamp.
    let mut c = s.client().await;
    let started = Instant::now();
    let r = receive(
        &mut c,
        "g2-empty",
        "missing-messages-topic-is-t",
        4,
        30_000,
        1_000,
    )
    .await;
    assert_eq!(r.code(), Code::TopicNotFound);
    let r = receive(&mut c, "g", "t", 4, 30_000, 1_000).await;
    assert_eq!(r.code(), Code::MessageNotFound);
    assert!(r.saw_timestamp);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn telemetry_answers_settings_and_keeps_the_stream_open() {
    let s = Server::start(&[]);
    s.create_topic("orders", "fifo", 1);
    let mut c = s.client().await;
    let producer = v2::Settings {
        client_type: Some(v2::ClientType::Producer as i32),
        pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
            topics: vec![res("orders").unwrap()],
            ..Default::default()
        })),
        ..Default::default()
    };
    let (tx, mut stream) = open_telemetry(&mut c, producer).await;
    let reply = stream.message().await.expect("ok").expect("a reply");
    assert_eq!(code_of(&reply.status), Code::Ok);
    let Some(v2::telemetry_command::Command::Settings(st)) = reply.command else {
        panic!("settings reply expected")
    };
    let Some(v2::settings::PubSub::Publishing(p)) = st.pub_sub else {
        panic!("publishing")
    };
    assert_eq!(p.max_body_size, 4 << 20);
    assert!(p.validate_message_type);
    assert!(matches!(
        st.backoff_policy.and_then(|b| b.strategy),
        Some(v2::retry_policy::Strategy::ExponentialBackoff(_))
    ));
    assert_eq!(st.metric.map(|m| m.on), Some(false));

    let consumer = v2::Settings {
        client_type: Some(v2::ClientType::PushConsumer as i32),
        pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
            group: res("g"),
            subscriptions: vec![v2::SubscriptionEntry {
                topic: res("orders"),
                expression: None,
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    tx.send(settings_command(consumer)).await.unwrap();
    let reply = stream
        .message()
        .await
        .expect("ok")
        .expect("a second reply on the same stream");
    let Some(v2::telemetry_command::Command::Settings(st)) = reply.command else {
        panic!("settings reply expected")
    };
    let Some(v2::settings::PubSub::Subscription(sub)) = st.pub_sub else {
        panic!("subscription")
    };
    assert_eq!(
        sub.fifo,
        Some(true),
        "a group consuming a FIFO topic is told to consume in order"
    );
    assert_eq!(sub.receive_batch_size, Some(32));
    assert!(sub.long_polling_timeout.is_some());
    assert_eq!(st.backoff_policy.map(|b| b.max_attempts), Some(17));
    // FIFO push consumers get one assignment per queue.
    let a = c
        .query_assignment(v2::QueryAssignmentRequest {
            topic: res("orders"),
            group: res("g"),
            endpoints: None,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&a.status), Code::Ok);
    assert_eq!(a.assignments.len(), 1);
    // Heartbeat and goodbye are OK.
    let h = c
        .heartbeat(v2::HeartbeatRequest {
            group: res("g"),
            client_type: v2::ClientType::PushConsumer as i32,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&h.status), Code::Ok);
    let online = s.admin_json(&["group", "list"]);
    assert_eq!(online[0]["name"], "g");
    assert_eq!(online[0]["online"], 1);
    // The client half-closes: the server completes its side.
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("stream completes");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let bye = c
        .notify_client_termination(v2::NotifyClientTerminationRequest { group: res("g") })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&bye.status), Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_a_restart_delivers_only_unacked_messages() {
    let mut s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    {
        let mut c = s.client().await;
        for i in 0..4 {
            send_ok(
                &mut c,
                message("t", &format!("R{i}"), format!("m{i}").as_bytes()),
            )
            .await;
        }
        let got = receive_n(&mut c, receive_request("g", "t", 4, 60_000, 3_000, "*"), 4).await;
        let bodies: Vec<&[u8]> = got.iter().map(|m| m.body.as_ref()).collect();
        assert_eq!(bodies, [b"m0", b"m1", b"m2", b"m3"]);
        // Ack m0, m1 and m3; m2 stays unacked.
        for m in [&got[0], &got[1], &got[3]] {
            assert_eq!(ack(&mut c, "g", "t", m).await, Code::Ok);
        }
    }
    // Shutdown must not wait for clients: hold a Telemetry stream and a long poll open.
    let mut holder = s.client().await;
    let sub = v2::Settings {
        client_type: Some(v2::ClientType::SimpleConsumer as i32),
        pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
            group: res("g"),
            ..Default::default()
        })),
        ..Default::default()
    };
    let (tx, mut telemetry) = open_telemetry(&mut holder, sub).await;
    assert!(telemetry.message().await.expect("ok").is_some());
    let mut poller = s.client().await;
    let poll =
        tokio::spawn(async move { receive(&mut poller, "idle", "t", 1, 60_000, 20_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = tokio::task::block_in_place(|| s.terminate());
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}; log: {}",
        s.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited for idle clients ({:?})",
        started.elapsed()
    );
    let _ = poll.await;
    drop(tx);
    s.spawn();
    let mut c = s.client().await;
    let r = receive(&mut c, "g", "t", 8, 60_000, 3_000).await;
    let bodies = r.bodies();
    assert!(
        !bodies.contains(&"m0".to_string()) && !bodies.contains(&"m1".to_string()),
        "acked-and-committed came back: {bodies:?}"
    );
    assert!(
        bodies.contains(&"m2".to_string()),
        "the unacked message was lost: {bodies:?}"
    );
}

#[tokio::test]
async fn pull_consumers_read_by_offset_and_store_their_offsets() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;
    for i in 0..3 {
        send_ok(
            &mut c,
            message("t", &format!("P{i}"), format!("p{i}").as_bytes()),
        )
        .await;
    }
    let mq = Some(v2::MessageQueue {
        topic: res("t"),
        id: 0,
        ..Default::default()
    });
    let q = c
        .query_offset(v2::QueryOffsetRequest {
            message_queue: mq.clone(),
            query_offset_policy: v2::QueryOffsetPolicy::End as i32,
            timestamp: None,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&q.status), Code::Ok);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut end = q.offset;
    while end < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        end = c
            .query_offset(v2::QueryOffsetRequest {
                message_queue: mq.clone(),
                query_offset_policy: v2::QueryOffsetPolicy::End as i32,
                timestamp: None,
            })
            .await
            .expect("grpc ok")
            .into_inner()
            .offset;
    }
    assert_eq!(end, 3);
    let mut stream = c
        .pull_message(v2::PullMessageRequest {
            group: res("puller"),
            message_queue: mq.clone(),
            offset: 1,
            batch_size: 10,
            filter_expression: None,
            long_polling_timeout: Some(dur(1000)),
        })
        .await
        .expect("grpc ok")
        .into_inner();
    let mut bodies = Vec::new();
    let mut next = None;
    while let Some(item) = stream.message().await.expect("ok") {
        match item.content.expect("content") {
            v2::pull_message_response::Content::Status(st) => assert_eq!(st.code, Code::Ok as i32),
            v2::pull_message_response::Content::Message(m) => {
                bodies.push(String::from_utf8_lossy(&m.body).into_owned())
            }
            v2::pull_message_response::Content::NextOffset(n) => next = Some(n),
        }
    }
    assert_eq!(bodies, ["p1", "p2"]);
    assert_eq!(next, Some(3));
    let g = c
        .get_offset(v2::GetOffsetRequest {
            group: res("puller"),
            message_queue: mq.clone(),
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&g.status), Code::OffsetNotFound);
    let u = c
        .update_offset(v2::UpdateOffsetRequest {
            group: res("puller"),
            message_queue: mq.clone(),
            offset: 3,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&u.status), Code::Ok);
    let g = c
        .get_offset(v2::GetOffsetRequest {
            group: res("puller"),
            message_queue: mq.clone(),
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(g.offset, 3);
    let u = c
        .update_offset(v2::UpdateOffsetRequest {
            group: res("puller"),
            message_queue: mq,
            offset: 99,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&u.status), Code::IllegalOffset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_of_one_group_each_get_a_message_exactly_once() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 4);
    let mut p = s.client().await;
    let total = 400;
    let sends: Vec<v2::Message> = (0..total)
        .map(|i| {
            let mut m = message("t", &format!("C{i}"), format!("c{i}").as_bytes());
            m.system_properties.as_mut().unwrap().queue_id = i % 4;
            m
        })
        .collect();
    for chunk in sends.chunks(50) {
        let r = p
            .send_message(v2::SendMessageRequest {
                messages: chunk.to_vec(),
            })
            .await
            .expect("grpc ok")
            .into_inner();
        assert_eq!(code_of(&r.status), Code::Ok);
    }
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut c = client(s.grpc_port, &format!("worker-{w}")).await;
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut empty = 0;
            while empty < 2 {
                let r = receive(&mut c, "shared", "t", 16, 60_000, 500).await;
                if r.messages.is_empty() {
                    empty += 1;
                    continue;
                }
                for m in &r.messages {
                    got.push(String::from_utf8_lossy(&m.body).into_owned());
                    assert_eq!(ack(&mut c, "shared", "t", m).await, Code::Ok);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let unique: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        total as usize,
        "every message once: {} deliveries, {} distinct",
        all.len(),
        unique.len()
    );
    assert_eq!(unique.len(), total as usize);
}

#[tokio::test]
async fn a_receive_abandoned_by_its_caller_hands_nothing_out() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut quitter = s.client().await;
    // The caller gives up after 300 ms of a 10 s long poll (its task is cancelled).
    let h = tokio::spawn(async move { receive(&mut quitter, "g", "t", 4, 60_000, 10_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.abort();
    let _ = h.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = s.client().await;
    send_ok(&mut p, message("t", "A1", b"for-the-living")).await;
    let mut c = s.client().await;
    let got = receive_n(&mut c, receive_request("g", "t", 4, 60_000, 2_000, "*"), 1).await;
    assert_eq!(
        got.len(),
        1,
        "the message went to the abandoned receive instead of a live consumer"
    );
    assert_eq!(attempt(&got[0]), 1);
}
