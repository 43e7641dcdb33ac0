//! One controller peer: its Raft node over the durable store, the in-memory [`Elector`], and
//! the background loop that follows Raft leadership and proposes elections.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::raft::{ControllerRaft, Network, NodeId};
use crate::rules::{Elector, Timing};
use crate::state::{Command, CommandResult, ElectionKind, GroupState};
use crate::store::{self, Applied, DiskError, LogStore, StateMachine};

/// How often the leader looks for groups that need an election.
const ELECTION_TICK: Duration = Duration::from_millis(100);
/// How long a leader gets to confirm its leadership with a quorum before answering.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a group waiting for a member that reaches its confirm floor is logged.
const FLOOR_WARN_EVERY: Duration = Duration::from_secs(10);

/// What a controller peer needs to start.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This peer's Raft id: its 1-based position in `peers`.
    pub id: NodeId,
    /// `host:port` of every controller peer's gRPC port, in the same order on every peer.
    pub peers: Vec<String>,
    /// Where the Raft log, vote and state machine live.
    pub data_dir: PathBuf,
    pub timing: Timing,
    /// How often members are told to heartbeat.
    pub heartbeat_interval: Duration,
    /// How Raft RPCs reach the other peers (TLS with `--tls-ca`).
    pub link: crate::link::Link,
}

impl ControllerConfig {
    /// Checks what the flags cannot: naming the field (as spelt on the command line).
    pub fn validate(&self) -> Result<(), ControllerError> {
        let bad = |field, reason: String| Err(ControllerError::Config { field, reason });
        if self.peers.is_empty() {
            return bad(
                "controller-peers",
                "at least one host:port is required".into(),
            );
        }
        for p in &self.peers {
            match p.rsplit_once(':') {
                Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return bad("controller-peers", format!("{p:?} is not host:port")),
            }
        }
        let n = self.peers.len() as u64;
        if self.id == 0 || self.id > n {
            return bad(
                "controller-id",
                format!(
                    "{} is not a position in the {n} controller peers (1..={n})",
                    self.id
                ),
            );
        }
        if self.timing.member_expiry <= self.timing.lease {
            return bad(
                "member-expiry",
                format!(
                    "{:?} must be longer than the lease ({:?}): the leader's lease must end before the controller may elect another",
                    self.timing.member_expiry, self.timing.lease
                ),
            );
        }
        if self.heartbeat_interval >= self.timing.lease {
            return bad(
                "lease",
                format!(
                    "{:?} must be longer than the heartbeat interval ({:?})",
                    self.timing.lease, self.heartbeat_interval
                ),
            );
        }
        Ok(())
    }

    /// Raft ids and addresses of every peer.
    fn members(&self) -> BTreeMap<NodeId, BasicNode> {
        (1..)
            .zip(&self.peers)
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect()
    }
}

/// Why a controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("invalid configuration: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("controller Raft: {0}")]
    Raft(String),
}

/// Why a proposal did not reach the state machine.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Another peer leads (if known): ask it.
    #[error("not the controller leader")]
    NotLeader(Option<NodeId>),
    #[error("controller write failed: {0}")]
    Raft(String),
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub is_leader: bool,
    /// (group, epoch, in-sync members)
    pub groups: Vec<(String, u64, usize)>,
    /// (kind, elections made by this peer while it led)
    pub elections: Vec<(&'static str, u64)>,
}

/// A running controller peer.
pub struct Controller {
    pub(crate) id: NodeId,
    pub(crate) peers: Vec<String>,
    pub(crate) raft: ControllerRaft,
    applied: Arc<RwLock<Applied>>,
    pub(crate) changes: watch::Receiver<u64>,
    pub(crate) elector: Mutex<Elector>,
    elections: [AtomicU64; 3],
    pub(crate) heartbeat_interval: Duration,
    /// When each group waiting for its confirm floor was last logged.
    floor_warned: Mutex<HashMap<String, Instant>>,
}

impl Controller {
    /// Opens the store in `cfg.data_dir` and starts the Raft node.
    ///
    /// Cluster initialization: the peer with the lowest id (1) initializes the Raft membership
    /// (every peer of `cfg.peers`) when its own disk holds no Raft state. openraft refuses to
    /// initialize a node that has a vote or log, so this is a no-op on every restart; the other
    /// peers never initialize and simply wait to be contacted. All peers must be given the
    /// same peer list, in the same order (the ids are positions in it).
    pub async fn start(cfg: ControllerConfig) -> Result<Arc<Controller>, ControllerError> {
        cfg.validate()?;
        let dir = cfg.data_dir.clone();
        let db = tokio::task::spawn_blocking(move || store::open(&dir))
            .await
            .map_err(|e| ControllerError::Raft(e.to_string()))??;
        let applied = Arc::new(RwLock::new(Applied::default()));
        let (tx, changes) = watch::channel(0u64);
        let sm = tokio::task::spawn_blocking({
            let (db, applied) = (db.clone(), applied.clone());
            move || StateMachine::load(db, applied, Arc::new(tx))
        })
        .await
        .map_err(|e| ControllerError::Raft(e.to_string()))??;
        let log = LogStore::new(db);
        let config = openraft::Config {
            cluster_name: "ferromq-controller".into(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let raft = openraft::Raft::new(
            cfg.id,
            Arc::new(config),
            Network::new(cfg.link.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ControllerError::Raft(e.to_string()))?;
        if cfg.id == 1 && !initialized {
            match raft.initialize(cfg.members()).await {
                Ok(()) => info!(peers = ?cfg.peers, "controller Raft group initialized"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ControllerError::Raft(e.to_string())),
            }
        }
        info!(id = cfg.id, peers = ?cfg.peers, data_dir = %cfg.data_dir.display(), timing = ?cfg.timing, "controller started");
        Ok(Arc::new(Controller {
            id: cfg.id,
            peers: cfg.peers,
            raft,
            applied,
            changes,
            elector: Mutex::new(Elector::new(cfg.timing)),
            elections: Default::default(),
            heartbeat_interval: cfg.heartbeat_interval,
            floor_warned: Mutex::new(HashMap::new()),
        }))
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address of peer `id`.
    pub fn peer_address(&self, id: NodeId) -> Option<&str> {
        usize::try_from(id.checked_sub(1)?)
            .ok()
            .and_then(|i| self.peers.get(i))
            .map(String::as_str)
    }

    /// The Raft leader this peer knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// This peer leads the Raft group (as far as it knows).
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.state == ServerState::Leader
    }

    /// Joined: a Raft leader is known (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.leader().is_some()
    }

    /// The applied state of one group.
    pub fn group(&self, name: &str) -> Option<GroupState> {
        self.applied.read().state.group(name).cloned()
    }

    /// Every group's applied state.
    pub fn groups(&self) -> BTreeMap<String, GroupState> {
        self.applied.read().state.groups.clone()
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            is_leader: self.is_leader(),
            groups: self
                .groups()
                .into_iter()
                .map(|(name, g)| (name, g.epoch, g.in_sync.len()))
                .collect(),
            elections: [
                ElectionKind::Clean,
                ElectionKind::Unclean,
                ElectionKind::Switchover,
            ]
            .into_iter()
            .map(|k| {
                (
                    k.as_str(),
                    self.elections[k as usize].load(Ordering::Relaxed),
                )
            })
            .collect(),
        }
    }

    pub(crate) fn count_election(&self, kind: ElectionKind) {
        self.elections[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Proposes `cmd` through Raft; the answer is the state machine's.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ProposeError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader(f.leader_id))
            }
            Err(e) => Err(ProposeError::Raft(e.to_string())),
        }
    }

    /// Confirms with a quorum that this peer still leads, and waits until its state machine
    /// holds everything committed before: reads after it are current.
    pub async fn confirm_leadership(&self) -> Result<(), ProposeError> {
        match tokio::time::timeout(CONFIRM_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => Err(ProposeError::Raft(e.to_string())),
            Err(_) => Err(ProposeError::Raft(format!(
                "leadership not confirmed by a quorum within {CONFIRM_TIMEOUT:?}"
            ))),
        }
    }

    /// Follows Raft leadership and runs the elections until `stop`, then shuts Raft down
    /// (which closes the store).
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let mut metrics = self.raft.metrics();
        let mut tick = tokio::time::interval(ELECTION_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading_term: Option<u64> = None;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                r = metrics.changed() => if r.is_err() { break },
                _ = tick.tick() => {}
            }
            let (leading, term) = {
                let m = metrics.borrow_and_update();
                (
                    m.current_leader == Some(self.id) && m.state == ServerState::Leader,
                    m.current_term,
                )
            };
            match (leading, leading_term) {
                (true, Some(t)) if t == term => {}
                (true, _) => {
                    let wait = self.elector.lock().timing.member_expiry;
                    self.elector.lock().became_leader(Instant::now());
                    leading_term = Some(term);
                    info!(term, "this controller leads; no group election for {wait:?} (leases granted before may still run)");
                }
                (false, Some(_)) => {
                    self.elector.lock().lost_leadership();
                    leading_term = None;
                    info!(term, "this controller no longer leads");
                }
                (false, None) => {}
            }
            if leading {
                self.elect().await;
            }
        }
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "controller Raft did not shut down cleanly");
        }
        info!("controller stopped");
    }

    /// Proposes the elections the groups need now, and persists grown confirm floors.
    async fn elect(&self) {
        let now = Instant::now();
        let groups = self.groups();
        let (decided, floors): (Vec<Command>, Vec<Command>) = {
            let mut el = self.elector.lock();
            let mut decided = Vec::new();
            let mut floors = Vec::new();
            for (name, g) in &groups {
                if let Some(c) = el.failover(name, g, now) {
                    if el.begin_election(name) {
                        decided.push(c);
                    }
                } else if let Some((floor, alive)) = el.short_of_floor(name, g, now) {
                    let mut warned = self.floor_warned.lock();
                    if warned
                        .get(name)
                        .is_none_or(|t| now.saturating_duration_since(*t) >= FLOOR_WARN_EVERY)
                    {
                        warned.insert(name.clone(), now);
                        warn!(group = %name, confirm_floor = floor, alive_in_sync = ?alive, in_sync = ?g.in_sync,
                              "group needs a leader but no alive in-sync member's log reaches the confirm offset some member dispatched; waiting for one that does (restart the missing members; unclean election would lose what lies beyond)");
                    }
                }
                if let Some(c) = el.floor_to_persist(name, g, now) {
                    floors.push(c);
                }
            }
            (decided, floors)
        };
        for cmd in floors {
            let group = cmd.group().to_string();
            match self.propose(cmd).await {
                Ok(Ok(_)) => {}
                Ok(Err(refused)) => warn!(%group, error = %refused, "confirm floor not persisted"),
                Err(e) => warn!(%group, error = %e, "confirm floor not proposed"),
            }
        }
        for cmd in decided {
            let group = cmd.group().to_string();
            let (kind, leader) = match &cmd {
                Command::Elect { kind, leader, .. } => (*kind, *leader),
                _ => (ElectionKind::Clean, None),
            };
            let before = groups.get(&group).cloned().unwrap_or_default();
            match self.propose(cmd).await {
                Ok(Ok(g)) => {
                    log_election(&group, &before, &g, kind);
                    if kind == ElectionKind::Unclean {
                        self.elector.lock().forget_confirms(&group);
                    }
                    if leader.is_some() {
                        self.count_election(kind);
                    }
                }
                Ok(Err(refused)) => warn!(%group, error = %refused, "election refused"),
                Err(e) => warn!(%group, error = %e, "election not proposed"),
            }
            self.elector.lock().end_election(&group);
        }
    }
}

/// Logs an applied leader change; unclean ones loudly.
pub(crate) fn log_election(
    group: &str,
    before: &GroupState,
    after: &GroupState,
    kind: ElectionKind,
) {
    match (after.leader, kind) {
        (None, _) => warn!(
            %group, old_leader = ?before.leader, epoch = after.epoch, in_sync = ?after.in_sync,
            "group leader expired and no in-sync member is alive: the group has no leader until one returns (unclean election is off)"
        ),
        (Some(l), ElectionKind::Unclean) => error!(
            %group, leader = l, old_leader = ?before.leader, epoch = after.epoch,
            "UNCLEAN ELECTION: replica {l} leads group {group} from outside the in-sync set {:?}; messages acknowledged by the old leader may be lost",
            before.in_sync
        ),
        (Some(l), _) => info!(
            %group, leader = l, old_leader = ?before.leader, epoch = after.epoch, in_sync = ?after.in_sync, kind = kind.as_str(),
            "group leader elected"
        ),
    }
}
