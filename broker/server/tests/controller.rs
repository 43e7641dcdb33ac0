//! The replication controller inside three name servers, run in this process through the one
//! serve loop, with simulated broker group members heartbeating through `ControllerClient`:
//! the controller's Raft leader is stopped and another takes over with the group state intact;
//! all three stop and restart from their data directories with epochs unchanged; a silent group
//! leader is replaced by an alive in-sync member at epoch + 1, and its lease ends before the new
//! leader's begins (checked on the instants recorded by the members, not on wall-clock speed);
//! after every member of a group died, the first member back is not elected when its log ends
//! below the confirm offset another member reported, even under a new controller leader.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq::config::nameserver::NameserverConfig;
use ferromq_controller::proto::GroupState;
use ferromq_controller::{ControllerClient, ControllerConfig, Timing};
use parking_lot::Mutex;
use support::free_port;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const EXPIRY: Duration = Duration::from_millis(1500);
const LEASE: Duration = Duration::from_millis(1000);

/// A name server with a controller peer running in this process.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Three controller peers on fixed loopback ports, each with its own data directory.
struct Cluster {
    peers: Vec<String>,
    dirs: Vec<PathBuf>,
    running: Vec<Option<Running>>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let peers: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let dirs = (1..=3).map(|i| tmp.path().join(format!("ns{i}"))).collect();
        let mut c = Cluster {
            peers,
            dirs,
            running: vec![None, None, None],
            _tmp: tmp,
        };
        for i in 0..3 {
            c.start_peer(i).await;
        }
        c
    }

    async fn start_peer(&mut self, i: usize) {
        let cfg = NameserverConfig {
            addr: self.peers[i].parse().expect("addr"),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            broker_expiry: Duration::from_secs(3),
            tls: None,
            link: Default::default(),
            limits: Default::default(),
            controller: Some(ControllerConfig {
                id: i as u64 + 1,
                peers: self.peers.clone(),
                data_dir: self.dirs[i].clone(),
                timing: Timing {
                    member_expiry: EXPIRY,
                    lease: LEASE,
                    ..Timing::default()
                },
                heartbeat_interval: Duration::from_millis(200),
                link: Default::default(),
            }),
        };
        let bound = ferromq::roles::nameserver::bind(cfg)
            .await
            .expect("name server binds");
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.run(async move {
            let _ = rx.await;
        }));
        self.running[i] = Some(Running { stop, task });
    }

    async fn stop_peer(&mut self, i: usize) {
        let r = self.running[i].take().expect("peer running");
        let _ = r.stop.send(());
        r.task
            .await
            .expect("name server task")
            .expect("name server stopped cleanly");
    }

    fn client(&self) -> ControllerClient {
        ControllerClient::new(self.peers.clone())
            .expect("client")
            .with_timeouts(Duration::from_millis(700), Duration::from_secs(3))
    }
}

/// Calls `get_groups` until it succeeds (a controller leader answers).
async fn groups(client: &ControllerClient) -> (u64, Vec<GroupState>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.get_groups().await {
            Ok(r) => return (r.controller_id, r.groups),
            Err(e) => assert!(
                Instant::now() < deadline,
                "no controller leader answered within 20 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn group<'a>(groups: &'a [GroupState], name: &str) -> &'a GroupState {
    groups
        .iter()
        .find(|g| g.group == name)
        .unwrap_or_else(|| panic!("group {name} missing from {groups:?}"))
}

/// One heartbeat answer as a simulated member saw it.
#[derive(Debug, Clone)]
struct Seen {
    received: Instant,
    leader: Option<u64>,
    epoch: u64,
    in_sync: Vec<u64>,
    lease_until: Option<Instant>,
}

/// A simulated broker group member: heartbeats every 200 ms while `alive`, believing the epoch
/// of its last answer, and records every answer.
struct Member {
    alive: Arc<AtomicBool>,
    log_end: Arc<AtomicU64>,
    /// The confirm offset it reports (0 until a test sets it).
    confirm: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Member {
    fn start(peers: &[String], group: &str, id: u64, log_end: u64) -> Member {
        Member::start_as(peers, group, id, log_end, 0)
    }

    /// A member whose heartbeats name process `incarnation` (0: none), starting from epoch 0 as
    /// a freshly started process does.
    fn start_as(peers: &[String], group: &str, id: u64, log_end: u64, incarnation: u64) -> Member {
        let client = ControllerClient::new(peers.to_vec())
            .expect("client")
            .with_timeouts(Duration::from_millis(500), Duration::from_millis(1500))
            .with_incarnation(incarnation);
        let alive = Arc::new(AtomicBool::new(true));
        let end = Arc::new(AtomicU64::new(log_end));
        let confirm = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (a, e, s, group) = (alive.clone(), end.clone(), seen.clone(), group.to_string());
        let cf = confirm.clone();
        let task = tokio::spawn(async move {
            let mut epoch = 0;
            let address = format!("127.0.0.1:{}", 20_000 + id);
            loop {
                if a.load(Ordering::SeqCst) {
                    if let Ok(r) = client
                        .heartbeat(
                            &group,
                            id,
                            &address,
                            epoch,
                            e.load(Ordering::SeqCst),
                            cf.load(Ordering::SeqCst),
                        )
                        .await
                    {
                        epoch = r.state.epoch;
                        s.lock().push(Seen {
                            received: Instant::now(),
                            leader: r.state.leader,
                            epoch: r.state.epoch,
                            in_sync: r.state.in_sync.clone(),
                            lease_until: r.lease_until,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Member {
            alive,
            log_end: end,
            confirm,
            seen,
            task,
        }
    }

    /// When the latest lease this member was granted ends.
    fn lease_end(&self) -> Instant {
        self.seen
            .lock()
            .iter()
            .filter_map(|s| s.lease_until)
            .max()
            .expect("the member held a lease")
    }

    /// Panics if any answer granted this member a lease.
    fn assert_never_leased(&self) {
        let seen = self.seen.lock();
        assert!(
            seen.iter().all(|s| s.lease_until.is_none()),
            "the new process never earned a lease: {seen:?}"
        );
    }

    fn last(&self) -> Option<Seen> {
        self.seen.lock().last().cloned()
    }

    /// Waits until an answer satisfies `f`.
    async fn wait_for(&self, what: &str, f: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.seen.lock().iter().find(|s| f(s)).cloned() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within 20 s; last answer {:?}",
                self.last()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Three members of `group`, 1 leading, all in sync.
async fn replicated_group(c: &Cluster, name: &str) -> Vec<Member> {
    // Member 1 heartbeats first, so it is the one the new group elects.
    let mut members = vec![Member::start(&c.peers, name, 1, 100)];
    let first = members[0]
        .wait_for("member 1 hears of its group", |s| s.leader.is_some())
        .await;
    assert_eq!(
        (first.leader, first.epoch),
        (Some(1), 1),
        "the first member of a new group leads at epoch 1"
    );
    members.extend((2..=3).map(|id| Member::start(&c.peers, name, id, 100 * id)));
    for m in &members[1..] {
        m.wait_for("member registered", |s| s.leader == Some(1))
            .await;
    }
    members[0]
        .wait_for("the leader holds a lease", |s| s.lease_until.is_some())
        .await;
    let g = c
        .client()
        .alter_in_sync(name, 1, 1, [1, 2, 3])
        .await
        .expect("the leader grows the in-sync set");
    assert_eq!(g.in_sync, vec![1, 2, 3]);
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_survives_controller_leader_loss_and_a_full_restart() {
    let mut c = Cluster::start().await;
    let client = c.client();
    let members = replicated_group(&c, "g1").await;
    let (leader_id, before) = groups(&client).await;
    let before = group(&before, "g1").clone();
    assert_eq!((before.leader, before.epoch), (Some(1), 1));

    // Stop the controller's Raft leader: another peer takes over with the same state.
    c.stop_peer(leader_id as usize - 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (new_leader, after) = loop {
        let (id, gs) = groups(&client).await;
        if id != leader_id {
            break (id, gs);
        }
        assert!(Instant::now() < deadline, "no new controller leader");
    };
    assert_ne!(new_leader, leader_id);
    let after = group(&after, "g1");
    assert_eq!(
        (after.leader, after.epoch, &after.in_sync),
        (before.leader, before.epoch, &before.in_sync),
        "group state intact under the new controller leader"
    );
    // The members kept heartbeating: past the new leader's wait, nobody was elected.
    tokio::time::sleep(EXPIRY * 2).await;
    let (_, gs) = groups(&client).await;
    assert_eq!(
        group(&gs, "g1").epoch,
        1,
        "no election while the leader heartbeats"
    );
    let m1 = members[0].last().expect("answers");
    assert!(
        m1.lease_until.is_some(),
        "the group leader keeps its lease: {m1:?}"
    );
    c.start_peer(leader_id as usize - 1).await;

    // Stop everything, restart from the data directories.
    drop(members);
    for i in 0..3 {
        c.stop_peer(i).await;
    }
    for i in 0..3 {
        c.start_peer(i).await;
    }
    let (_, gs) = groups(&client).await;
    let g = group(&gs, "g1");
    assert_eq!(g.leader, Some(1));
    assert_eq!(
        g.epoch, 1,
        "epochs unchanged by a restart of every controller"
    );
    assert_eq!(g.in_sync, vec![1, 2, 3]);
    assert_eq!(
        g.members.iter().map(|m| m.replica_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for i in 0..3 {
        c.stop_peer(i).await;
    }
}

/// Three members of `group` whose heartbeats name their processes (member `id` is process
/// `first_process + id`), 1 leading with a lease, all in sync.
async fn group_of_processes(c: &Cluster, group: &str, first_process: u64) -> Vec<Member> {
    let mut members = vec![Member::start_as(&c.peers, group, 1, 100, first_process + 1)];
    members[0]
        .wait_for("member 1 leads", |s| {
            s.leader == Some(1) && s.lease_until.is_some()
        })
        .await;
    members
        .extend((2..=3).map(|id| Member::start_as(&c.peers, group, id, 100, first_process + id)));
    for m in &members[1..] {
        m.wait_for("member registered", |s| s.leader == Some(1))
            .await;
    }
    c.client()
        .alter_in_sync(group, 1, 1, [1, 2, 3])
        .await
        .expect("the leader grows the in-sync set");
    members[0]
        .wait_for("lease after the in-sync change", |s| {
            s.lease_until.is_some() && s.in_sync.len() == 3
        })
        .await;
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_back_at_once_as_a_new_process_is_replaced() {
    let mut c = Cluster::start().await;
    let peers = c.peers.clone();
    let mut members = group_of_processes(&c, "g5", 10).await;
    // The leader's process dies and a new one (another incarnation) heartbeats at once: well
    // within member-expiry, so only the incarnation tells the controller.
    let old = members.remove(0);
    let old_lease_end = old.lease_end();
    drop(old);
    let restarted = Member::start_as(&peers, "g5", 1, 100, 12);
    let moved = members[0]
        .wait_for("a new leader at epoch 2", |s| s.epoch == 2)
        .await;
    assert_eq!(
        moved.leader,
        Some(2),
        "another in-sync member (ties: lowest id)"
    );
    assert_eq!(
        moved.in_sync,
        vec![2, 3],
        "the restarted member must catch up first"
    );
    assert!(
        old_lease_end < moved.received,
        "the previous life's lease ran until after the new epoch was visible"
    );
    restarted.assert_never_leased();
    let err = c
        .client()
        .alter_in_sync("g5", 1, 1, [1, 2])
        .await
        .expect_err("the deposed epoch's leader cannot change the set");
    assert!(
        err.to_string().contains("epoch") || err.to_string().contains("leader"),
        "{err}"
    );
    let back = restarted
        .wait_for("the restarted member hears of epoch 2", |s| s.epoch == 2)
        .await;
    assert_eq!(back.leader, Some(2));
    drop(restarted);
    drop(members);
    for i in 0..3 {
        c.stop_peer(i).await;
    }
}

/// The restart of a leader's process, then a change of the controller's Raft leader: the new
/// controller leader never heard the old incarnation, nor the new process's first heartbeat,
/// yet that process still leads no more at its epoch (it repeats what the first answer told
/// it), and another in-sync member is elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_stays_deposed_across_a_controller_leader_change() {
    let mut c = Cluster::start().await;
    let peers = c.peers.clone();
    let mut members = group_of_processes(&c, "g7", 20).await;
    let (controller_leader, _) = groups(&c.client()).await;
    drop(members.remove(0));
    let restarted = Member::start_as(&peers, "g7", 1, 100, 24);
    restarted
        .wait_for("the new process's first answer", |_| true)
        .await;
    c.stop_peer(controller_leader as usize - 1).await;
    let moved = members[0]
        .wait_for("a new leader at epoch 2", |s| s.epoch == 2)
        .await;
    assert_eq!(moved.leader, Some(2), "another in-sync member leads");
    assert_eq!(moved.in_sync, vec![2, 3]);
    restarted.assert_never_leased();
    drop(restarted);
    drop(members);
    for i in 0..3 {
        if c.running[i].is_some() {
            c.stop_peer(i).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_is_replaced_after_its_lease_ended() {
    let mut c = Cluster::start().await;
    let members = replicated_group(&c, "g2").await;
    // Member 3 reports the highest log end: it is the one to be elected.
    members[2].log_end.store(10_000, Ordering::SeqCst);
    members[0]
        .wait_for("lease after the in-sync change", |s| {
            s.lease_until.is_some() && s.in_sync.len() == 3
        })
        .await;

    // Partition the leader from the controller: it falls silent.
    let silenced = Instant::now();
    members[0].alive.store(false, Ordering::SeqCst);
    let old_lease_end = members[0].lease_end();

    let moved = members[1]
        .wait_for("a new leader at epoch 2", |s| s.epoch == 2)
        .await;
    assert_eq!(
        moved.leader,
        Some(3),
        "highest log end among the alive in-sync members"
    );
    assert_eq!(
        moved.in_sync,
        vec![2, 3],
        "the silent leader left the in-sync set"
    );
    let new_lease = members[2]
        .wait_for("the new leader's first lease", |s| {
            s.epoch == 2 && s.lease_until.is_some()
        })
        .await;
    let new_lease_start = new_lease.lease_until.expect("lease") - LEASE;
    assert!(
        old_lease_end < moved.received,
        "the old leader's lease (until {:?} after silencing) outlived the moment the new epoch was visible ({:?})",
        old_lease_end.saturating_duration_since(silenced),
        moved.received.saturating_duration_since(silenced)
    );
    assert!(
        old_lease_end < new_lease_start,
        "leases overlap: old until +{:?}, new from +{:?}",
        old_lease_end.saturating_duration_since(silenced),
        new_lease_start.saturating_duration_since(silenced)
    );

    // The old leader comes back: it follows at the new epoch and gets no lease.
    members[0].alive.store(true, Ordering::SeqCst);
    let back = members[0]
        .wait_for("the old leader hears of epoch 2", |s| s.epoch == 2)
        .await;
    assert_eq!(back.leader, Some(3));
    assert_eq!(back.lease_until, None, "a deposed leader gets no lease");
    drop(members);
    for i in 0..3 {
        c.stop_peer(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_moves_leadership_and_alter_in_sync_refuses_stale_callers() {
    let mut c = Cluster::start().await;
    let client = c.client();
    let members = replicated_group(&c, "g3").await;
    // A stale epoch or a non-leader cannot change the in-sync set.
    let stale = client.alter_in_sync("g3", 0, 1, [1]).await.unwrap_err();
    assert!(stale.to_string().contains("epoch"), "{stale}");
    let not_leader = client.alter_in_sync("g3", 1, 2, [2]).await.unwrap_err();
    assert!(
        not_leader.to_string().contains("not the leader"),
        "{not_leader}"
    );

    // The leader plays its part: when told to, it completes the switchover.
    let peers = c.peers.clone();
    let handover = tokio::spawn(async move {
        let leader = ControllerClient::new(peers).expect("client");
        loop {
            let r = leader
                .heartbeat("g3", 1, "127.0.0.1:20001", 1, 100, 0)
                .await
                .expect("heartbeat");
            if let Some(target) = r.switchover_to {
                return leader
                    .complete_switchover("g3", r.state.epoch, target)
                    .await
                    .expect("complete");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (target, g) = client
        .switchover("g3", Some(2))
        .await
        .expect("switchover completes");
    assert_eq!(target, 2);
    assert_eq!((g.leader, g.epoch), (Some(2), 2));
    assert_eq!(
        g.in_sync,
        vec![1, 2, 3],
        "nothing lost: everyone stays in sync"
    );
    handover.await.expect("handover task");
    // A target outside the in-sync set is refused.
    client
        .alter_in_sync("g3", 2, 2, [2, 3])
        .await
        .expect("new leader shrinks the set");
    let refused = client.switchover("g3", Some(1)).await.unwrap_err();
    assert!(refused.to_string().contains("in-sync"), "{refused}");
    drop(members);
    for i in 0..3 {
        c.stop_peer(i).await;
    }
}

/// Suite 55's `group_kill9` failure: every member of a group died; the first one back was in
/// the in-sync set but its log ended below what another member had dispatched, and electing it
/// left that member unable to follow. The controller must wait for a member whose log reaches
/// the highest confirm offset reported, and must remember that offset (persisted through Raft)
/// when its own leadership moves while the group is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_killed_whole_waits_for_a_member_that_holds_the_confirmed_log() {
    let mut c = Cluster::start().await;
    let client = c.client();
    let members = replicated_group(&c, "g4").await;
    // Leader 1 confirmed (and may have dispatched) up to 4000; 3 holds it, 2 does not.
    members[0].log_end.store(5000, Ordering::SeqCst);
    members[0].confirm.store(4000, Ordering::SeqCst);
    members[1].log_end.store(3000, Ordering::SeqCst);
    members[1].confirm.store(3000, Ordering::SeqCst);
    members[2].log_end.store(4500, Ordering::SeqCst);
    members[2].confirm.store(4000, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while group(&groups(&client).await.1, "g4").confirm_floor < 4000 {
        assert!(Instant::now() < deadline, "the floor is never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time to persist it (at most every second), then every member dies at once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for m in &members {
        m.alive.store(false, Ordering::SeqCst);
    }
    // The controller's leader goes too: its successor knows only what Raft holds.
    let (leader_id, _) = groups(&client).await;
    c.stop_peer(leader_id as usize - 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (id, gs) = groups(&client).await;
        if id != leader_id {
            assert_eq!(
                group(&gs, "g4").confirm_floor,
                4000,
                "the floor was persisted"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no new controller leader");
    }
    // The short member comes back first: it is in sync, alive, and not elected.
    members[1].alive.store(true, Ordering::SeqCst);
    members[1]
        .wait_for("member 2 hears the group has no leader", |s| {
            s.leader.is_none() && s.epoch >= 2
        })
        .await;
    tokio::time::sleep(EXPIRY * 2).await;
    let (_, gs) = groups(&client).await;
    let g = group(&gs, "g4");
    assert_eq!(
        g.leader, None,
        "a member short of the confirm floor was elected: {g:?}"
    );
    // The member that holds the confirmed log comes back: it leads; 2 stays in the set (it
    // catches up from 3).
    members[2].alive.store(true, Ordering::SeqCst);
    let led = members[2]
        .wait_for("member 3 leads", |s| s.leader == Some(3))
        .await;
    assert_eq!(led.in_sync, vec![2, 3]);
    drop(members);
    c.start_peer(leader_id as usize - 1).await;
    for i in 0..3 {
        c.stop_peer(i).await;
    }
}
