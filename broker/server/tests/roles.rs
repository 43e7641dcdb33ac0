//! The roles run inside the test process: a name server, two broker groups and a proxy, each
//! bound on a port the system picks and stopped by the test through the one serve loop. A
//! client sends through the proxy to both groups and receives every message back; stopping the
//! roles closes their stores cleanly.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferromq::config::broker::MemberConfig;
use ferromq::config::nameserver::NameserverConfig;
use ferromq::config::node::NodeConfig;
use ferromq::config::proxy::ProxyConfig;
use ferromq_proto::admin::{self, admin_client::AdminClient};
use support::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A role running in this process, and the switch that stops it.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("role task")
            .expect("role stopped cleanly");
    }
}

fn stop_switch() -> (oneshot::Sender<()>, impl std::future::Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

async fn broker(group: &str, ns: &str, dir: &std::path::Path) -> Running {
    let mut cfg = NodeConfig::defaults();
    cfg.data_dir = dir.to_path_buf();
    cfg.engine.data_dir = dir.to_path_buf();
    cfg.grpc_addr = loopback();
    cfg.http_addr = loopback();
    cfg.advertise_addr = "127.0.0.1:0".into();
    cfg.segment_size = 8 << 20;
    let member = MemberConfig {
        group: group.into(),
        nameservers: vec![ns.to_string()],
        replication: None,
    };
    let bound = ferromq::roles::node::bind(cfg, Some(member))
        .await
        .expect("broker binds");
    let (stop, stopped) = stop_switch();
    Running {
        stop,
        task: tokio::spawn(bound.run(stopped)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_and_two_broker_groups_run_inside_the_test_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ns = ferromq::roles::nameserver::bind(NameserverConfig {
        addr: loopback(),
        http_addr: loopback(),
        broker_expiry: Duration::from_secs(3),
        limits: Default::default(),
        controller: None,
    })
    .await
    .expect("nameserver binds");
    let ns_addr = ns.addr().to_string();
    let (ns_stop, ns_stopped) = stop_switch();
    let nameserver = Running {
        stop: ns_stop,
        task: tokio::spawn(ns.run(ns_stopped)),
    };
    let g1 = broker("g1", &ns_addr, &tmp.path().join("g1")).await;
    let g2 = broker("g2", &ns_addr, &tmp.path().join("g2")).await;

    let proxy = ferromq::roles::proxy::bind(ProxyConfig {
        grpc_addr: loopback(),
        http_addr: loopback(),
        nameservers: vec![ns_addr.clone()],
        route_refresh: Duration::from_millis(200),
        advertise_addr: "127.0.0.1:0".into(),
        limits: Default::default(),
    })
    .await
    .expect("proxy binds");
    let port = proxy.grpc_addr().port();
    let (p_stop, p_stopped) = stop_switch();
    let proxy = Running {
        stop: p_stop,
        task: tokio::spawn(proxy.run(p_stopped)),
    };

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
