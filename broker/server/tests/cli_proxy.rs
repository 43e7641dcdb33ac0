//! The day-two admin commands through a proxy: `ferromq admin --server PROXY` resets a group's
//! offsets on every broker group, lists and resends dead letters across groups, and deletes a
//! group everywhere; `ferromq send` and `consume` go through the proxy like any client. The
//! roles run in the test process; the commands are the real binary.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferromq_proto::admin::{self, admin_client::AdminClient};
use ferromq_proto::v2::Code;
use support::inproc::*;
use support::*;

/// `ferromq ARGS --server 127.0.0.1:PORT`, off the async runtime.
async fn ferromq(port: u16, args: &[&str]) -> Output {
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.extend(["--server".into(), format!("127.0.0.1:{port}")]);
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&a).output().expect("run"))
        .await
        .expect("joined")
}

async fn json(port: u16, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = ferromq(port, &a).await;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_operations_reach_every_broker_group_through_a_proxy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (nameserver, ns) = nameserver().await;
    let g1 = broker("g1", &ns, &tmp.path().join("g1")).await;
    let g2 = broker("g2", &ns, &tmp.path().join("g2")).await;
    let (proxy, port) = proxy(&ns).await;
    let mut a = AdminClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("admin connects");
    let deadline = Instant::now() + Duration::from_secs(15);
    while a
        .list_cluster(admin::ListClusterRequest {})
        .await
        .map(|r| r.into_inner().groups.len())
        .unwrap_or(0)
        < 2
    {
        assert!(Instant::now() < deadline, "both groups report");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    json(port, &["admin", "topic", "create", "t", "--queues", "1"]).await;
    json(
        port,
        &["admin", "group", "update", "c", "--max-attempts", "1"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut c = client(port, "cli-proxy-test").await;
    let sent: BTreeSet<String> = (0..8).map(|i| format!("m{i}")).collect();
    for id in &sent {
        send_ok(&mut c, message("t", id, id.as_bytes())).await;
    }
    let receive_all = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            let got = receive_n(&mut c, receive_request("c", "t", 32, 30_000, 500, "*"), 8).await;
            let mut bodies = BTreeSet::new();
            for m in &got {
                assert_eq!(ack(&mut c, "c", "t", m).await, Code::Ok);
                bodies.insert(String::from_utf8_lossy(&m.body).into_owned());
            }
            bodies
        }
    };
    assert_eq!(receive_all(&mut c).await, sent);

    // The plan covers the queue of each broker group; executed, the group reads it all again.
    let plan = json(
        port,
        &["admin", "group", "reset-offset", "c", "--to-earliest"],
    )
    .await;
    let groups: BTreeSet<&str> = plan["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["broker_group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, BTreeSet::from(["g1", "g2"]), "{plan}");
    json(
        port,
        &[
            "admin",
            "group",
            "reset-offset",
            "c",
            "--to-earliest",
            "--execute",
        ],
    )
    .await;
    assert_eq!(receive_all(&mut c).await, sent, "every message again");

    // One message dies on whichever group holds it; the proxy finds and resends it.
    send_ok(&mut c, message("t", "DEAD", b"dead")).await;
    let got = receive_n(&mut c, receive_request("c", "t", 1, 1_000, 500, "*"), 1).await;
    assert_eq!(got.len(), 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let letters = loop {
        // Receives sweep expired messages into the dead-letter topic.
        let _ = receive(&mut c, "c", "t", 1, 1_000, 200).await;
        let l = json(port, &["admin", "dlq", "list", "c"]).await;
        if l["total"] == 1 {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the message is dead-lettered: {l}"
        );
    };
    assert_eq!(letters["letters"][0]["message_id"], "DEAD");
    let resent = json(port, &["admin", "dlq", "resend", "c", "--id", "DEAD"]).await;
    assert_eq!(resent[0]["topic"], "t", "{resent}");
    let again = receive_n(&mut c, receive_request("c", "t", 1, 30_000, 500, "*"), 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, &b"dead"[..]);
    assert_eq!(ack(&mut c, "c", "t", &again[0]).await, Code::Ok);
    let missing = ferromq(port, &["admin", "dlq", "resend", "c", "--id", "NOPE"]).await;
    assert!(!missing.status.success());

    // The console tools through the proxy.
    let sent = ferromq(port, &["send", "-t", "t", "--body", "hello"]).await;
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let out = ferromq(
        port,
        &[
            "consume",
            "-t",
            "t",
            "-g",
            "fresh",
            "--max-messages",
            "10",
            "--timeout",
            "3s",
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == "hello"));

    json(port, &["admin", "group", "delete", "c"]).await;
    let listed = json(port, &["admin", "group", "list"]).await;
    assert!(
        !listed.as_array().unwrap().iter().any(|g| g["name"] == "c"),
        "{listed}"
    );

    proxy.stop().await;
    g1.stop().await;
    g2.stop().await;
    nameserver.stop().await;
}
