//! The real `ferromq nameserver --controller-peers ...` binary, three processes on loopback:
//! kill -9 of the controller's Raft leader leaves the group state intact under a new leader
//! and the killed peer recovers from its data directory; kill -9 of all three, then a
//! restart, brings back the same epochs, in-sync sets and members. `/readyz` and `/metrics`
//! report the controller.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferromq_controller::proto::GroupState;
use ferromq_controller::ControllerClient;
use support::{free_port, http_get, BIN};

/// One name server process with a controller peer.
struct Peer {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    http_port: u16,
}

impl Peer {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        self.child = Some(
            Command::new(BIN)
                .arg("nameserver")
                .args(&self.args)
                .env("FERROMQ_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn ferromq nameserver"),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ready(&self) -> bool {
        http_get(self.http_port, "/readyz").is_some_and(|(code, _)| code == 200)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn start_cluster(dir: &std::path::Path) -> (Vec<String>, Vec<Peer>) {
    let peers: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let list = peers.join(",");
    let nodes = peers
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let http_port = free_port();
            let mut p = Peer {
                child: None,
                // The id is left to its default: this peer's position in the list.
                args: vec![
                    "--addr".into(),
                    addr.clone(),
                    "--http-addr".into(),
                    format!("127.0.0.1:{http_port}"),
                    "--controller-peers".into(),
                    list.clone(),
                    "--data-dir".into(),
                    dir.join(format!("ns{i}")).display().to_string(),
                    "--member-expiry".into(),
                    "1500ms".into(),
                    "--lease".into(),
                    "1s".into(),
                ],
                log: dir.join(format!("ns{i}.log")),
                http_port,
            };
            p.spawn();
            p
        })
        .collect();
    (peers, nodes)
}

fn wait_ready(nodes: &[Peer]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, n) in nodes.iter().enumerate() {
        while !n.ready() {
            assert!(
                Instant::now() < deadline,
                "peer {i} not ready within 30 s: {}",
                std::fs::read_to_string(&n.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn groups(client: &ControllerClient) -> (u64, Vec<GroupState>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get_groups().await {
            Ok(r) => return (r.controller_id, r.groups),
            Err(e) => assert!(Instant::now() < deadline, "no controller leader: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (group, leader, epoch, in-sync set, member count)
type Summary = (String, Option<u64>, u64, Vec<u64>, usize);

fn summary(gs: &[GroupState]) -> Vec<Summary> {
    gs.iter()
        .map(|g| {
            (
                g.group.clone(),
                g.leader,
                g.epoch,
                g.in_sync.clone(),
                g.members.len(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_peers_recover_after_kill_9() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (peers, mut nodes) = start_cluster(tmp.path());
    wait_ready(&nodes);
    let client = ControllerClient::new(peers.clone()).expect("client");

    // Two groups, each led by its first member with all three members in sync.
    for (group, ids) in [("g1", [1u64, 2, 3]), ("g2", [7, 8, 9])] {
        for id in ids {
            let r = client
                .heartbeat(group, id, &format!("127.0.0.1:{}", 21_000 + id), 0, 0, 0)
                .await
                .expect("heartbeat");
            assert_eq!(r.state.leader, Some(ids[0]), "first member leads {group}");
        }
        client
            .alter_in_sync(group, 1, ids[0], ids)
            .await
            .expect("grow the in-sync set");
    }
    let (leader, before) = groups(&client).await;
    let before = summary(&before);
    assert_eq!(before.len(), 2);
    let metrics = http_get(nodes[leader as usize - 1].http_port, "/metrics")
        .expect("metrics")
        .1;
    assert!(
        metrics.contains("ferromq_controller_is_leader 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferromq_controller_group_epoch{group=\"g1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferromq_controller_in_sync_members{group=\"g2\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferromq_controller_elections_total{kind=\"clean\"}"),
        "{metrics}"
    );

    // kill -9 of the Raft leader: another leads with the same state; the killed one recovers.
    nodes[leader as usize - 1].kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (new_leader, after) = loop {
        let (id, gs) = groups(&client).await;
        if id != leader {
            break (id, gs);
        }
        assert!(Instant::now() < deadline, "no new controller leader");
    };
    assert_ne!(new_leader, leader);
    assert_eq!(
        summary(&after),
        before,
        "state intact after kill -9 of the leader"
    );
    nodes[leader as usize - 1].spawn();
    wait_ready(&nodes);

    // kill -9 of every peer, then restart: the same state from disk.
    for n in nodes.iter_mut() {
        n.kill9();
    }
    for n in nodes.iter_mut() {
        n.spawn();
    }
    wait_ready(&nodes);
    let (_, restarted) = groups(&client).await;
    assert_eq!(
        summary(&restarted),
        before,
        "epochs, in-sync sets and members survive kill -9 of every controller"
    );
}
