//! The roles run inside the test process: a name server, two broker groups and a proxy, each
//! bound on a port the system picks and stopped by the test through the one serve loop. A
//! client sends through the proxy to both groups and receives every message back, then a
//! remoting (4.x-style) client does the same through the proxy's remoting port; stopping the
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
    let (proxy, port, remoting_port) = proxy_with_remoting(&ns_addr, true).await;

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

    remoting_through_the_proxy(remoting_port).await;

    proxy.stop().await;
    g1.stop().await;
    g2.stop().await;
    nameserver.stop().await;
    // A clean stop leaves no RUNNING marker: the next open is not a crash recovery.
    assert!(!tmp.path().join("g1").join("RUNNING").exists());
}

/// A remoting client of the proxy: the cluster shows both groups as brokers at the proxy's
/// address; a message sent to each group's queue is pulled back from that group, its offset
/// id finds it again (routed by the group's tag), and consumer membership is the same on both.
async fn remoting_through_the_proxy(port: u16) {
    use ferromq_remoting::body::{
        self, ClusterInfo, ConsumerData, HeartbeatData, SubscriptionData,
    };
    use ferromq_remoting::code::{request, response};
    use ferromq_remoting::message::{encode_properties, StoredMessage};
    use support::remoting::{request as req, Remoting};

    let mut r = Remoting::connect(port).await;
    let cluster = r.call(req(request::GET_BROKER_CLUSTER_INFO, &[])).await;
    let info: ClusterInfo = body::decode(&cluster.body).expect("cluster info");
    let mut names: Vec<&String> = info.broker_addr_table.keys().collect();
    names.sort();
    assert_eq!(names, ["g1", "g2"]);
    for b in info.broker_addr_table.values() {
        assert_eq!(b.broker_addrs.0[&0], format!("127.0.0.1:{port}"));
    }
    let hb = HeartbeatData {
        client_id: "127.0.0.1@roles".into(),
        consumer_data_set: vec![ConsumerData {
            group_name: "rg".into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            message_model: "CLUSTERING".into(),
            subscription_data_set: vec![SubscriptionData {
                topic: "orders".into(),
                sub_string: "*".into(),
                expression_type: "TAG".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let a = r
        .call(req(request::HEART_BEAT, &[]).with_body(body::encode(&hb)))
        .await;
    assert_eq!(a.code, response::SUCCESS);
    for group in ["g1", "g2"] {
        let props = encode_properties(
            &[("UNIQ_KEY".to_string(), format!("R-{group}"))]
                .into_iter()
                .collect(),
        );
        let send = req(
            request::SEND_MESSAGE_V2,
            &[
                ("a", "pg"),
                ("b", "orders"),
                ("c", "TBW102"),
                ("d", "4"),
                ("e", "0"),
                ("f", "0"),
                ("g", "0"),
                ("h", "0"),
                ("i", &props),
                ("n", group),
            ],
        )
        .with_body(format!("to {group}").into_bytes());
        let a = r.call(send).await;
        assert_eq!(a.code, response::SUCCESS, "send to {group}: {:?}", a.remark);
        let offset_id = a.ext_fields["msgId"].clone();
        let pull = req(
            request::PULL_MESSAGE,
            &[
                ("consumerGroup", "rg"),
                ("topic", "orders"),
                ("queueId", "0"),
                ("queueOffset", "0"),
                ("maxMsgNums", "32"),
                ("sysFlag", "0"),
                ("commitOffset", "0"),
                ("suspendTimeoutMillis", "0"),
                ("subVersion", "0"),
                ("bname", group),
            ],
        );
        let a = r.call(pull).await;
        assert_eq!(
            a.code,
            response::SUCCESS,
            "pull from {group}: {:?}",
            a.remark
        );
        let got = StoredMessage::decode_all(&a.body, true).expect("messages");
        assert!(
            got.iter()
                .any(|m| m.uniq_key() == Some(&format!("R-{group}"))),
            "the message sent to {group} is pulled from {group}"
        );
        let (_, offset) =
            ferromq_remoting::message::decode_offset_msg_id(&offset_id).expect("offset id");
        let view = r
            .call(req(
                request::VIEW_MESSAGE_BY_ID,
                &[("topic", "orders"), ("offset", &offset.to_string())],
            ))
            .await;
        let viewed = StoredMessage::decode_all(&view.body, true).expect("viewed");
        assert_eq!(viewed[0].uniq_key(), Some(format!("R-{group}").as_str()));
    }
    let ids = r
        .call(req(
            request::GET_CONSUMER_LIST_BY_GROUP,
            &[("consumerGroup", "rg")],
        ))
        .await;
    let ids: body::GetConsumerListByGroupResponseBody = body::decode(&ids.body).expect("ids");
    assert_eq!(ids.consumer_id_list, vec!["127.0.0.1@roles"]);
}
