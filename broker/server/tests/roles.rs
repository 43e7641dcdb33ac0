//! The roles run inside the test process: a name server, two broker groups and a proxy, each
//! bound on a port the system picks and stopped by the test through the one serve loop. A
//! client sends through the proxy to both groups and receives every message back; stopping the
//! roles closes their stores cleanly.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferromq_proto::admin::{self, admin_client::AdminClient};
use support::inproc::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_and_two_broker_groups_run_inside_the_test_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (nameserver, ns_addr) = nameserver().await;
    let g1 = broker("g1", &ns_addr, &tmp.path().join("g1")).await;
    let g2 = broker("g2", &ns_addr, &tmp.path().join("g2")).await;
    let (proxy, port) = proxy(&ns_addr).await;

    // Both groups report within a few heartbeats.
    let mut admin_client = AdminClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("admin connects");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let groups = admin_client
            .list_cluster(admin::ListClusterRequest {})
            .await
            .map(|r| r.into_inner().groups.len())
            .unwrap_or(0);
        if groups == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both groups report to the name server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin_client
        .create_topic(admin::CreateTopicRequest {
            topic: Some(admin::Topic {
                name: "orders".into(),
                queues: 2,
                message_type: admin::TopicType::Normal as i32,
                permission: admin::TopicPermission::ReadWrite as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("topic created on both groups");
    // The proxy sees the topic on both groups after its next route refresh.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut c = client(port, "roles-test").await;
    let sent: BTreeSet<String> = (0..20).map(|i| format!("m{i}")).collect();
    for id in &sent {
        send_ok(&mut c, message("orders", id, id.as_bytes())).await;
    }
    let got = receive_n(
        &mut c,
        receive_request("g", "orders", 32, 30_000, 1_000, "*"),
        sent.len(),
    )
    .await;
    let mut ids = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for m in &got {
        assert_eq!(
            ack(&mut c, "g", "orders", m).await,
            ferromq_proto::v2::Code::Ok
        );
        ids.insert(String::from_utf8_lossy(&m.body).into_owned());
        groups.insert(
            handle(m)
                .split(':')
                .nth(1)
                .expect("a proxy handle names its group")
                .to_string(),
        );
    }
    assert_eq!(ids, sent, "every acknowledged message is received once");
    assert_eq!(groups.len(), 2, "sends rotate over both groups: {groups:?}");

    proxy.stop().await;
    g1.stop().await;
    g2.stop().await;
    nameserver.stop().await;
    // A clean stop leaves no RUNNING marker: the next open is not a crash recovery.
    assert!(!tmp.path().join("g1").join("RUNNING").exists());
}
