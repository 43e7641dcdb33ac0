//! End to end, through the real binary: delay messages (never early, recall, due during a
//! kill -9 outage), transactional messages (commit, rollback, idempotence, check-back, a commit
//! racing a check, commit after a restart, rollback after the last check) and priority order.

mod support;

use std::time::Duration;

use ferromq_proto::v2::{self, Code};
use support::*;

fn entry(r: &v2::SendMessageResponse) -> &v2::SendResultEntry {
    r.entries.first().expect("one entry")
}

async fn recall(c: &mut Client, topic: &str, handle: &str) -> (Code, String) {
    let r = c
        .recall_message(v2::RecallMessageRequest {
            topic: res(topic),
            recall_handle: handle.into(),
        })
        .await
        .expect("grpc ok")
        .into_inner();
    (code_of(&r.status), r.message_id)
}

/// Receives (and acks) until nothing arrives for `quiet`; returns bodies with receive times.
async fn drain(c: &mut Client, group: &str, topic: &str, quiet: Duration) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut last = std::time::Instant::now();
    while last.elapsed() < quiet {
        let r = receive(c, group, topic, 32, 30_000, 500).await;
        let at = now_ms();
        for m in &r.messages {
            out.push((String::from_utf8_lossy(&m.body).into_owned(), at));
            assert_eq!(ack(c, group, topic, m).await, Code::Ok);
            last = std::time::Instant::now();
        }
    }
    out
}

#[tokio::test]
async fn delay_messages_arrive_on_time_never_early_and_can_be_recalled() {
    let s = Server::start(&["--max-delay", "1h"]);
    s.create_topic("later", "delay", 2);
    let mut c = s.client().await;

    // Refusals: too far ahead, no delivery time, a NORMAL topic.
    let (code, _) = send(
        &mut c,
        delay_message("later", "far", now_ms() + 2 * 3600 * 1000),
    )
    .await;
    assert_eq!(code, Code::IllegalDeliveryTime);
    let mut m = delay_message("later", "untimed", 0);
    m.system_properties.as_mut().expect("sp").delivery_timestamp = None;
    assert_eq!(send(&mut c, m).await.0, Code::IllegalDeliveryTime);

    let start = now_ms();
    let mut due = std::collections::HashMap::new();
    let mut handles = std::collections::HashMap::new();
    for i in 0..20 {
        let id = format!("d{i:02}");
        let at = start + 300 + (i * 97) % 1700;
        let (code, r) = send(&mut c, delay_message("later", &id, at)).await;
        assert_eq!(code, Code::Ok);
        assert!(
            !entry(&r).recall_handle.is_empty(),
            "a delay send returns a recall handle"
        );
        due.insert(id.clone(), at);
        handles.insert(id, entry(&r).recall_handle.clone());
    }
    // Recall two before their time; the second recall of the same handle is still OK.
    for id in ["d05", "d06"] {
        let (code, mid) = recall(&mut c, "later", &handles[id]).await;
        assert_eq!((code, mid.as_str()), (Code::Ok, id));
    }
    assert_eq!(recall(&mut c, "later", &handles["d05"]).await.0, Code::Ok);
    assert_eq!(
        recall(&mut c, "other", &handles["d07"]).await.0,
        Code::MessageNotFound
    );
    assert_eq!(
        recall(&mut c, "later", "nonsense").await.0,
        Code::BadRequest
    );
    let listed = s.admin_json(&["topic", "list"]);
    let listed_at = now_ms();
    let pending = listed
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "later"))
        .and_then(|t| t["pending_timers"].as_i64())
        .expect("the topic lists its pending timers");
    // The 18 not recalled, less those already released: a slow machine may list after the
    // first ones were due. The ones due after the listing cannot have been released (never
    // early).
    let not_yet_due = due
        .iter()
        .filter(|(id, at)| !["d05", "d06"].contains(&id.as_str()) && **at > listed_at)
        .count() as i64;
    assert!(
        (not_yet_due..=18).contains(&pending),
        "admin shows the pending timers ({not_yet_due} to 18): {listed}"
    );

    let got = drain(&mut c, "g", "later", Duration::from_secs(3)).await;
    let mut ids: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    ids.sort_unstable();
    let want: Vec<String> = (0..20)
        .filter(|i| *i != 5 && *i != 6)
        .map(|i| format!("d{i:02}"))
        .collect();
    assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
    let mut late: Vec<i64> = Vec::new();
    for (id, at) in &got {
        assert!(*at >= due[id], "{id} arrived {} ms early", due[id] - at);
        late.push(at - due[id]);
    }
    late.sort_unstable();
    eprintln!(
        "lateness ms (receive loop included): min {} p50 {} max {}",
        late[0],
        late[late.len() / 2],
        late[late.len() - 1]
    );
    // Delivered already: too late to recall.
    assert_eq!(
        recall(&mut c, "later", &handles["d00"]).await.0,
        Code::PreconditionFailed
    );

    let metrics = http_get(s.http_port, "/metrics").expect("metrics").1;
    assert!(
        metrics.contains("ferromq_timers_released_total 18"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferromq_timers_recalled_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn delay_messages_due_during_a_kill9_outage_arrive_after_restart() {
    let mut s = Server::start(&[]);
    s.create_topic("later", "delay", 1);
    let mut c = s.client().await;
    let start = now_ms();
    let mut recalled = String::new();
    for i in 0..50 {
        let id = format!("k{i:02}");
        let (code, r) = send(&mut c, delay_message("later", &id, start + 1500 + i * 10)).await;
        assert_eq!(code, Code::Ok);
        if i == 7 {
            recalled = entry(&r).recall_handle.clone();
        }
    }
    // One far in the future must stay pending through the crash.
    assert_eq!(
        send(&mut c, delay_message("later", "future", start + 600_000))
            .await
            .0,
        Code::Ok
    );
    assert_eq!(recall(&mut c, "later", &recalled).await.0, Code::Ok);
    s.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    s.spawn();
    let mut c = s.client().await;
    let got = drain(&mut c, "g", "later", Duration::from_secs(2)).await;
    let mut ids: Vec<String> = got.into_iter().map(|(b, _)| b).collect();
    ids.sort_unstable();
    let want: Vec<String> = (0..50)
        .filter(|i| *i != 7)
        .map(|i| format!("k{i:02}"))
        .collect();
    assert_eq!(
        ids, want,
        "every timer due during the outage, once; the recalled one never"
    );
    let listed = s.admin_json(&["topic", "describe", "later"]);
    assert_eq!(listed["pending_timers"], 1, "{listed}");
    // A group holding a pending timer is not drained: the timer would be lost with it.
    let d = s.admin_json(&["cluster", "drain", "standalone"]);
    assert_eq!(
        (d["drained"].as_bool(), d["remaining_messages"].as_i64()),
        (Some(false), Some(1)),
        "{d}"
    );
}

#[tokio::test]
async fn transactions_commit_once_roll_back_never_and_survive_a_restart() {
    let mut s = Server::start(&["--transaction-check-interval", "60s"]);
    s.create_topic("pay", "transaction", 2);
    let mut c = s.client().await;
    let mut tx = std::collections::HashMap::new();
    for id in ["commit", "rollback", "later"] {
        let (code, r) = send(&mut c, tx_message("pay", id)).await;
        assert_eq!(code, Code::Ok);
        assert!(!entry(&r).transaction_id.is_empty());
        tx.insert(id, entry(&r).transaction_id.clone());
    }
    // Half messages are invisible.
    assert!(receive(&mut c, "g", "pay", 32, 30_000, 300)
        .await
        .messages
        .is_empty());
    let listed = s.admin_json(&["topic", "describe", "pay"]);
    assert_eq!(listed["half_messages"], 3, "{listed}");

    use v2::TransactionResolution::{Commit, Rollback};
    use v2::TransactionSource::Client as ByClient;
    assert_eq!(
        end(&mut c, "pay", "commit", &tx["commit"], Commit, ByClient).await,
        Code::Ok
    );
    assert_eq!(
        end(&mut c, "pay", "commit", &tx["commit"], Commit, ByClient).await,
        Code::Ok,
        "a repeated commit is OK"
    );
    assert_eq!(
        end(
            &mut c,
            "pay",
            "rollback",
            &tx["rollback"],
            Rollback,
            ByClient
        )
        .await,
        Code::Ok
    );
    assert_eq!(
        end(&mut c, "pay", "rollback", &tx["rollback"], Commit, ByClient).await,
        Code::PreconditionFailed
    );
    assert_eq!(
        end(&mut c, "pay", "commit", "", Commit, ByClient).await,
        Code::InvalidTransactionId
    );
    assert_eq!(
        end(&mut c, "pay", "commit", "x1:99:99", Commit, ByClient).await,
        Code::InvalidTransactionId
    );
    assert_eq!(
        end(&mut c, "pay", "later", &tx["commit"], Commit, ByClient).await,
        Code::InvalidTransactionId,
        "message id must match"
    );

    s.kill9();
    s.spawn();
    let mut c = s.client().await;
    assert_eq!(
        end(&mut c, "pay", "commit", &tx["commit"], Commit, ByClient).await,
        Code::Ok,
        "commit after restart: still once"
    );
    assert_eq!(
        end(&mut c, "pay", "later", &tx["later"], Commit, ByClient).await,
        Code::Ok
    );
    let got = drain(&mut c, "g", "pay", Duration::from_secs(2)).await;
    let mut ids: Vec<String> = got.into_iter().map(|(b, _)| b).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["commit".to_string(), "later".to_string()]);
}

/// Opens a producer Telemetry stream declaring `topic`; returns its command sender and stream.
async fn producer_stream(
    c: &mut Client,
    topic: &str,
) -> (
    tokio::sync::mpsc::Sender<v2::TelemetryCommand>,
    tonic::Streaming<v2::TelemetryCommand>,
) {
    let (tx, mut stream) = open_telemetry(
        c,
        v2::Settings {
            client_type: Some(v2::ClientType::Producer as i32),
            pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
                topics: vec![res(topic).expect("res")],
                ..Default::default()
            })),
            ..Default::default()
        },
    )
    .await;
    let first = stream.message().await.expect("ok").expect("settings reply");
    assert_eq!(code_of(&first.status), Code::Ok);
    (tx, stream)
}

#[tokio::test]
async fn orphans_are_checked_back_and_a_commit_racing_the_check_delivers_once() {
    let s = Server::start(&[
        "--transaction-check-interval",
        "1s",
        "--transaction-check-max",
        "3",
    ]);
    s.create_topic("pay", "transaction", 1);
    s.create_topic("lost", "transaction", 1);
    s.create_topic("quiet", "transaction", 1);
    let mut c = s.client().await;
    let (_keep, mut stream) = producer_stream(&mut c, "pay").await;
    let mut tx = std::collections::HashMap::new();
    for id in ["orphan", "raced"] {
        let (code, r) = send(&mut c, tx_message("pay", id)).await;
        assert_eq!(code, Code::Ok);
        tx.insert(entry(&r).transaction_id.clone(), id);
    }
    // This producer never declared "quiet": it is asked anyway, because it sent the message.
    let (code, r) = send(&mut c, tx_message("quiet", "undeclared")).await;
    assert_eq!(code, Code::Ok);
    tx.insert(entry(&r).transaction_id.clone(), "undeclared");
    // Sent by a producer without a Telemetry stream, to a topic no producer declared: its half
    // message is rolled back after 3 checks nobody can answer.
    let mut gone = client(s.grpc_port, "gone-producer@2").await;
    assert_eq!(
        send(&mut gone, tx_message("lost", "abandoned")).await.0,
        Code::Ok
    );

    use v2::TransactionResolution::{Commit, Unspecified};
    use v2::TransactionSource::{Client as ByClient, ServerCheck};
    // Checks seen per message; "orphan" answers "still unknown" once, then commits.
    let mut asked: std::collections::HashMap<&str, u32> = Default::default();
    let mut settled = 0;
    while settled < 3 {
        let cmd = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a check within 10 s")
            .expect("ok")
            .expect("a command");
        let Some(v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(check)) =
            cmd.command
        else {
            continue;
        };
        let m = check.message.expect("the half message");
        let sp = m.system_properties.expect("sp");
        let id = tx[check.transaction_id.as_str()];
        let topic = if id == "undeclared" { "quiet" } else { "pay" };
        assert_eq!(m.topic.expect("topic").name, topic);
        assert_eq!(sp.message_id, id);
        assert_eq!(m.body, id.as_bytes());
        let n = asked.entry(id).or_default();
        *n += 1;
        // "raced": the producer's own commit races the check's answer; both OK, one delivery.
        let racer = (id == "raced" && *n == 1).then(|| {
            let txid = check.transaction_id.clone();
            let port = s.grpc_port;
            tokio::spawn(async move {
                let mut c2 = client(port, "test-client@1").await;
                end(&mut c2, "pay", "raced", &txid, Commit, ByClient).await
            })
        });
        let (answer, settles) = match (id, *n) {
            ("raced", 1) | ("undeclared", 1) | ("orphan", 2) => (Commit, true),
            // UNSPECIFIED means "still unknown": the server asks again.
            ("orphan", 1) => (Unspecified, false),
            other => panic!("unexpected check {other:?}: settled messages are not checked again"),
        };
        let r = end(
            &mut c,
            topic,
            id,
            &check.transaction_id,
            answer,
            ServerCheck,
        )
        .await;
        assert_eq!(r, Code::Ok, "{id}, check {n}");
        if let Some(racer) = racer {
            assert_eq!(racer.await.expect("join"), Code::Ok);
        }
        if settles {
            settled += 1;
        }
    }
    let got = drain(&mut c, "g", "pay", Duration::from_secs(2)).await;
    let mut ids: Vec<String> = got.into_iter().map(|(b, _)| b).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec!["orphan".to_string(), "raced".to_string()],
        "each once"
    );
    let quiet = drain(&mut c, "g", "quiet", Duration::from_secs(1)).await;
    assert_eq!(quiet.len(), 1);

    // The abandoned one: rolled back after its checks, never delivered.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = http_get(s.http_port, "/metrics").expect("metrics").1;
        if metrics.contains("ferromq_transactions_total{outcome=\"check_exhausted\"} 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not rolled back: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(receive(&mut c, "g", "lost", 32, 30_000, 300)
        .await
        .messages
        .is_empty());
    assert!(s.log().contains("rolled back"), "the rollback is logged");
}

#[tokio::test]
async fn priority_messages_come_out_highest_first_and_in_send_order_among_equals() {
    let s = Server::start(&[]);
    s.create_topic("urgent", "priority", 1);
    let mut c = s.client().await;
    let prios = [1, 5, 3, 5, 9, 1, 0, 9];
    for (i, p) in prios.iter().enumerate() {
        let mut m = message("urgent", &format!("p{i}"), format!("{i}:{p}").as_bytes());
        let sp = m.system_properties.as_mut().expect("sp");
        sp.message_type = v2::MessageType::Priority as i32;
        sp.priority = Some(*p);
        assert_eq!(send(&mut c, m).await.0, Code::Ok);
    }
    // A priority on a NORMAL message is a conflict.
    s.create_topic("plain", "normal", 1);
    let mut m = message("plain", "x", b"x");
    m.system_properties.as_mut().expect("sp").priority = Some(3);
    assert_eq!(
        send(&mut c, m).await.0,
        Code::MessagePropertyConflictWithType
    );

    let mut order = Vec::new();
    while order.len() < prios.len() {
        let r = receive(&mut c, "g", "urgent", 1, 30_000, 1_000).await;
        assert!(!r.messages.is_empty(), "all messages arrive");
        for m in &r.messages {
            assert!(
                m.system_properties
                    .as_ref()
                    .and_then(|s| s.priority)
                    .is_some(),
                "priority is echoed"
            );
            order.push(String::from_utf8_lossy(&m.body).into_owned());
            assert_eq!(ack(&mut c, "g", "urgent", m).await, Code::Ok);
        }
    }
    assert_eq!(
        order,
        vec!["4:9", "7:9", "1:5", "3:5", "2:3", "0:1", "5:1", "6:0"]
    );
}

#[tokio::test]
async fn a_corrupt_parked_message_is_reported_and_never_delivered() {
    let mut s = Server::start(&[]);
    s.create_topic("later", "delay", 1);
    let mut c = s.client().await;
    let due = now_ms() + 1500;
    let (code, r) = send(&mut c, delay_message("later", "bitrot", due)).await;
    assert_eq!(code, Code::Ok);
    assert_eq!(
        send(&mut c, delay_message("later", "healthy", due)).await.0,
        Code::Ok
    );
    // The recall handle names the record's commit log offset: flip a byte of its body.
    let handle = entry(&r).recall_handle.clone();
    let phys: u64 = handle
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("offset in handle");
    s.kill9();
    let seg = data_dir(&s).join("commitlog").join(format!("{:020}", 0));
    let mut bytes = std::fs::read(&seg).expect("segment");
    let len = u32::from_le_bytes(
        bytes[phys as usize..phys as usize + 4]
            .try_into()
            .expect("4 bytes"),
    );
    bytes[phys as usize + len as usize - 2] ^= 0x5a; // inside the body ("bitrot")
    std::fs::write(&seg, &bytes).expect("write segment");
    s.spawn();
    let mut c = s.client().await;
    let got = drain(&mut c, "g", "later", Duration::from_secs(3)).await;
    let ids: Vec<String> = got.into_iter().map(|(b, _)| b).collect();
    assert_eq!(
        ids,
        vec!["healthy".to_string()],
        "the corrupt one is never served"
    );
    let metrics = http_get(s.http_port, "/metrics").expect("metrics").1;
    let log = s.log();
    // Reported either when the timer fires, or already by recovery's checksum scan (when the
    // record lay past the last checkpoint and was re-dispatched).
    assert!(
        (metrics.contains("ferromq_timers_unreadable_total 1") && log.contains("cannot be read"))
            || log.contains("corrupt=1"),
        "the corruption is reported: {log}"
    );
}
