//! Measurement, not a check (run with `--ignored --nocapture`): topic create latency and broker
//! memory up to 5 000 topics, and the metadata bytes one ack writes with 2 000 groups holding
//! offsets (issue 14: whole-file rewrites made creates slow down from 9 to 17 ms by 5 000 topics
//! and cost 110 KiB of offsets.json per ack with 2 000 groups). Prints figures; asserts only
//! that everything succeeded.

mod support;

use std::time::Instant;

use ferromq_proto::admin::{self, admin_client::AdminClient};
use ferromq_proto::v2::Code;
use support::*;

fn metadata_log_bytes(s: &Server) -> u64 {
    std::fs::metadata(data_dir(s).join("config").join("metadata.log"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn five_thousand_topics_and_two_thousand_groups() {
    let s = Server::start(&[]);
    let mut a = AdminClient::connect(format!("http://{}", s.addr()))
        .await
        .expect("admin");
    let rss0 = s.rss_anon_kib();
    let mut window = Vec::new();
    for i in 0..5_000 {
        let t0 = Instant::now();
        a.create_topic(admin::CreateTopicRequest {
            topic: Some(admin::Topic {
                name: format!("topic-{i}"),
                queues: 4,
                message_type: admin::TopicType::Normal as i32,
                permission: admin::TopicPermission::ReadWrite as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("create");
        window.push(t0.elapsed().as_secs_f64() * 1e3);
        if window.len() == 500 {
            window.sort_by(f64::total_cmp);
            eprintln!(
                "topics {:>5}: create median {:.2} ms, p99 {:.2} ms; anon RSS {} KiB; metadata.log {} B",
                i + 1,
                window[250],
                window[494],
                s.rss_anon_kib(),
                metadata_log_bytes(&s)
            );
            window.clear();
        }
    }
    eprintln!(
        "5 000 topics: anon RSS {} KiB -> {} KiB",
        rss0,
        s.rss_anon_kib()
    );

    let mut c = s.client().await;
    send_ok(&mut c, message("topic-0", "m0", b"x")).await;
    for i in 0..200 {
        send_ok(&mut c, message("topic-0", &format!("m{}", i + 1), b"x")).await;
    }
    // 2 000 groups each commit an offset.
    for g in 0..2_000 {
        let group = format!("group-{g}");
        let r = receive(&mut c, &group, "topic-0", 1, 60_000, 200).await;
        assert_eq!(
            ack(&mut c, &group, "topic-0", &r.messages[0]).await,
            Code::Ok
        );
    }
    // Now the cost of one more ack each, for 100 acks.
    let before = metadata_log_bytes(&s);
    let mut lat = Vec::new();
    for g in 0..100 {
        let group = format!("group-{g}");
        let r = receive(&mut c, &group, "topic-0", 1, 60_000, 200).await;
        let t0 = Instant::now();
        assert_eq!(
            ack(&mut c, &group, "topic-0", &r.messages[0]).await,
            Code::Ok
        );
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let after = metadata_log_bytes(&s);
    lat.sort_by(f64::total_cmp);
    eprintln!(
        "2 000 groups: 100 acks wrote {} bytes of metadata ({} per ack; a compaction in between shows as a drop); ack median {:.2} ms; anon RSS {} KiB",
        after as i64 - before as i64,
        (after as i64 - before as i64) / 100,
        lat[50],
        s.rss_anon_kib()
    );
}
