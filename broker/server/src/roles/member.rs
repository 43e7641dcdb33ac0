//! `ferromq broker --replica-id N`: one member of a replicated broker group.
//!
//! Every member serves the replication `Fetch` stream and heartbeats to the replication
//! controller (in the name servers), which answers with the group's leader, epoch and in-sync
//! set. The controller, not a flag, decides who leads:
//!
//! - **Following**: the member copies the leader's log ([`crate::replication::follower`]),
//!   dispatches it up to the confirm offset the leader sends, and applies the journal the
//!   leader wrote (topics, offsets, parked-message marks, group settings, drain state) to its
//!   own engine files. It serves no client: the messaging and admin services answer
//!   `UNAVAILABLE` and it does not report to the name servers, so proxies never route to it.
//! - **Leading** (a *term*, one per epoch): once every in-sync member holds the log up to where
//!   the epoch starts and this member applied the journal up to there, it opens the engine
//!   over its store (as a fresh start would after a crash), serves clients and reports itself
//!   to the name servers with its epoch. Every append asks the replica first
//!   ([`ferromq_store::AppendGate`]): only while the controller's lease holds and enough
//!   members are in sync (asked under the append lock, on the task that received the send),
//!   and in `sync` mode a send is answered once every in-sync member holds it in the term that
//!   admitted it (awaited on the task: `Store::acknowledged`).
//! - **Deposed** (the controller names another leader, or a switchover): the term ends: the
//!   services close, the engine stops, the member follows the new leader, cutting whatever
//!   tail of its log the group never confirmed.
//!
//! With `--auth` every member checks credentials on every service against its copy of the
//! group's users, which the journal carries like topics ([`crate::replication::auth`]): a
//! follower answers unauthenticated callers `UNAUTHENTICATED` before it says who leads, a user
//! change is answered only once the group confirmed it, and a new leader holds every user the
//! group confirmed. The replication stream is signed by the bootstrap super user each member is
//! started with (`--auth-super-user`, the same on every member), and the leader admits only
//! super users to it: the journal carries users' secrets. At the start of each term the leader
//! writes its bootstrap super user through the group if the group's copy differs.
//!
//! The leader keeps the in-sync set current through the controller: a follower that has not
//! held the whole log for `replica-lag` leaves it, one that caught up (and holds the confirm
//! offset) rejoins; the set the confirm offset waits for always contains the controller's
//! (see [`crate::replication`]). Heartbeats carry the member's log end and confirm offset: the
//! controller never elects a member whose log ends below the highest confirm offset reported.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferromq_controller::client::{ControllerClient, HeartbeatAnswer};
use ferromq_engine::journal::Applier;
use ferromq_engine::Engine;
use ferromq_proto::admin::admin_server::AdminServer;
use ferromq_proto::replication::replication_server::ReplicationServer;
use ferromq_proto::v2::messaging_service_server::MessagingServiceServer;
use ferromq_store::Store;
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tracing::{error, info, warn, Instrument};

use crate::admin::service::AdminApi;
use crate::auth::{Authenticate, Authenticated};
use crate::config::broker::{MemberConfig, ReplicationSettings};
use crate::config::node::NodeConfig;
use crate::config::ConfigError;
use crate::metrics::{Family, Identity, Metrics, NodeType};
use crate::node::Node;
use crate::replication::auth::{AuthJournal, JournaledAuth};
use crate::replication::fetch::{ReplicationApi, MAX_MESSAGE};
use crate::replication::{follower, Replica, ReplicaConfig, Role};
use crate::serve::{self, Gate, Listeners, Services, Shutdown};
use crate::service::MessagingApi;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the journal is applied while following.
const APPLY_EVERY: Duration = Duration::from_millis(100);

/// One leader term: the engine and the node that serve clients while this member leads.
struct Term {
    epoch: u64,
    node: Arc<Node>,
    shutdown: Shutdown,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: JoinSet<()>,
}

/// A member of a replicated group with its store open and its listeners bound.
pub struct Member {
    cfg: NodeConfig,
    member: MemberConfig,
    rs: ReplicationSettings,
    store: Arc<Store>,
    replica: Arc<Replica>,
    controller: Arc<ControllerClient>,
    metrics: Arc<Metrics>,
    messaging: Gate<MessagingServiceServer<MessagingApi>>,
    admin: Gate<AdminServer<AdminApi>>,
    term: tokio::sync::Mutex<Option<Term>>,
    /// Applies the leader's journal while this member follows (closed while it leads: the
    /// engine owns those files then).
    applier: Mutex<Option<Applier>>,
    /// With `--auth`: the users and policies, and the reader applying the group's changes to
    /// them (on the leader too).
    auth: Option<(Arc<crate::auth::Gate>, Arc<Mutex<AuthJournal>>)>,
    /// The member serves: store open, replication listening (followers are ready too).
    ready: std::sync::atomic::AtomicBool,
    shutdown: Shutdown,
}

/// What [`bind`] returns: the member and its listeners, ready to [`Member::run`].
pub struct Bound {
    pub member: Arc<Member>,
    listeners: Listeners,
}

/// Opens the store and the replica state and binds the listeners.
pub async fn bind(mut cfg: NodeConfig, member: MemberConfig) -> anyhow::Result<Bound> {
    let Some(rs) = member.replication.clone() else {
        anyhow::bail!("a replicated member needs --replica-id");
    };
    let listeners = Listeners::bind(cfg.grpc_addr, cfg.http_addr, "grpc-addr", &cfg.limits).await?;
    if cfg.advertise_addr.ends_with(":0") {
        cfg.advertise_addr = crate::config::advertise_default(listeners.grpc_addr());
    }
    let mut sc = cfg.store_config();
    sc.replicated = true;
    let store = super::node::open_store(sc).await?;
    let replica = Replica::open(
        store.clone(),
        &cfg.data_dir.join("replication"),
        ReplicaConfig {
            group: member.group.clone(),
            replica_id: rs.replica_id,
            mode: rs.mode,
            min_in_sync: rs.min_in_sync,
            replica_lag: rs.replica_lag,
            ack_timeout: rs.ack_timeout,
        },
    )
    .context("cannot open the replication state")?;
    let applier = open_applier(&store, &cfg, &member.group)?;
    let metrics = Arc::new(Metrics::new(Identity::new(
        NodeType::Broker,
        Some(&member.group),
    )));
    let auth = match cfg.auth.enabled {
        true => Some(open_auth(&cfg, &store, &replica, &rs, metrics.clone()).await?),
        false => None,
    };
    let controller = ControllerClient::new(rs.controller.iter().cloned())
        .map_err(|e| ConfigError {
            field: "controller",
            reason: e.to_string(),
        })?
        .with_timeouts(Duration::from_millis(700), Duration::from_millis(1500))
        .with_link(member.link.clone())
        .with_incarnation(incarnation());
    let closed_reason = {
        let (replica, group) = (replica.clone(), member.group.clone());
        move || match replica.role() {
            Role::Leader { epoch, .. } => format!(
                "broker group {group}: the leader of epoch {epoch} is still opening; retry shortly"
            ),
            Role::Follower {
                leader: Some((id, addr)),
                ..
            } => format!("broker group {group}: this member follows; replica {id} at {addr} leads"),
            Role::Follower { leader: None, .. } => {
                format!("broker group {group} has no leader right now")
            }
        }
    };
    Ok(Bound {
        member: Arc::new(Member {
            messaging: Gate::new(closed_reason.clone()),
            admin: Gate::new(closed_reason),
            cfg,
            member,
            rs,
            store,
            replica,
            controller: Arc::new(controller),
            metrics,
            term: tokio::sync::Mutex::new(None),
            applier: Mutex::new(Some(applier)),
            auth,
            ready: std::sync::atomic::AtomicBool::new(false),
            shutdown: Shutdown::default(),
        }),
        listeners,
    })
}

fn open_applier(store: &Arc<Store>, cfg: &NodeConfig, group: &str) -> anyhow::Result<Applier> {
    let applier = Applier::open(
        store.clone(),
        &cfg.data_dir,
        cfg.engine.max_delivery_attempts,
    )
    .context("cannot open the journal applier")?;
    applier.join(group).context("cannot read the group state")?;
    Ok(applier)
}

/// The gate of a member with `--auth`: its store, made a copy of the group's users (changes go
/// through the journal, [`JournaledAuth`]), and the reader that applies the group's changes.
async fn open_auth(
    cfg: &NodeConfig,
    store: &Arc<Store>,
    replica: &Arc<Replica>,
    rs: &ReplicationSettings,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Arc<crate::auth::Gate>, Arc<Mutex<AuthJournal>>)> {
    let (dir, auth) = (cfg.data_dir.clone(), cfg.auth.clone());
    let gate = tokio::task::spawn_blocking(move || {
        crate::auth::Gate::open_replicated(&dir, &auth, metrics)
    })
    .await??;
    let reader = AuthJournal::open(
        store.clone(),
        gate.shared_store(),
        cfg.data_dir.join("auth"),
    )
    .context("cannot open the auth store's journal reader")?;
    let reader = Arc::new(Mutex::new(reader));
    // A user change waits for the group as long as a send does, and at least a few seconds.
    let wait = rs.ack_timeout.max(Duration::from_secs(5));
    let journaled = JournaledAuth::new(replica.clone(), &reader, wait)
        .context("cannot open the journal for users and policies")?;
    gate.store().replicate_with(Arc::new(journaled));
    Ok((gate, reader))
}

impl Bound {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners.grpc_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listeners.http_addr()
    }

    /// Serves until `stop` resolves, then ends the term (if leading) and closes the store.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Bound { member, listeners } = self;
        let m = member.clone();
        let mut background = JoinSet::new();
        background.spawn(m.clone().controller_loop());
        background.spawn(m.clone().term_loop());
        background.spawn(m.clone().apply_loop());
        let signer = match &m.cfg.auth.super_user {
            Some((name, secret)) if m.auth.is_some() => {
                crate::credentials::Signer::new(name, secret.clone())
            }
            _ => crate::credentials::Signer::default(),
        };
        background.spawn(follower::run_signed(
            m.replica.clone(),
            m.shutdown.subscribe(),
            signer,
            m.member.link.clone(),
        ));
        let replication = ReplicationServer::new(ReplicationApi::new(m.replica.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let stopping = m.clone();
        let mut grpc = Services::grpc_builder(&m.cfg.limits);
        let max_msg = m.cfg.max_body_size.saturating_mul(2).max(16 << 20);
        // With auth every service checks its callers, a follower's closed ones too (it tells
        // who leads only to an authenticated caller); replication admits super users only.
        let grpc = match &m.auth {
            Some((gate, _)) => {
                let with = || Authenticate(gate.clone());
                let messaging = Authenticated::new(with(), m.messaging.clone());
                grpc.add_service(crate::forward::server(messaging.clone(), max_msg))
                    .add_service(messaging)
                    .add_service(Authenticated::new(with(), m.admin.clone()))
                    .add_service(Authenticated::new(with(), replication))
            }
            None => grpc
                .add_service(crate::forward::server(m.messaging.clone(), max_msg))
                .add_service(m.messaging.clone())
                .add_service(m.admin.clone())
                .add_service(replication),
        };
        let services = Services {
            grpc,
            http: crate::http::router(m.clone(), listeners.connections.clone()),
            // Replicated members serve no remoting port yet (clients reach them through proxies,
            // whose remoting tunnel is the next step for replicated groups).
            tcp: Vec::new(),
            tls: m.cfg.tls.clone(),
            background,
            drain: DRAIN_TIMEOUT,
            on_stop: Some(Box::new(move || {
                stopping.ready.store(false, Ordering::Release);
            })),
        };
        m.ready.store(true, Ordering::Release);
        info!(grpc = %listeners.grpc_addr(), http = %listeners.http_addr(), group = %m.member.group,
              auth = m.auth.is_some(), replica = m.rs.replica_id, mode = ?m.rs.mode, min_in_sync = m.rs.min_in_sync,
              controller = ?m.rs.controller, links = %m.member.link, data_dir = %m.cfg.data_dir.display(),
              "ferromq broker (replicated member) ready; waiting for the controller");
        let served = serve::run(listeners, services, &m.shutdown, stop).await;
        m.end_term("shutting down").await;
        if let Some(mut a) = m.applier.lock().take() {
            if let Err(e) = a.close() {
                warn!(error = %e, "closing the journal applier");
            }
        }
        let store = m.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await?
            .context("closing the store")?;
        info!("store flushed and closed");
        served
    }
}

impl Member {
    fn me(&self) -> u64 {
        u64::from(self.rs.replica_id)
    }

    /// Heartbeats to the controller and turns its answers into this member's role, lease and
    /// in-sync set.
    async fn controller_loop(self: Arc<Self>) {
        let stopped = serve::stopped(self.shutdown.subscribe());
        tokio::pin!(stopped);
        let mut interval = Duration::from_millis(500);
        let mut failing = false;
        loop {
            let epoch = self.replica.history().last().map_or(0, |e| e.epoch);
            let sent = Instant::now();
            let answer = self
                .controller
                .heartbeat(
                    &self.member.group,
                    self.me(),
                    &self.cfg.advertise_addr,
                    epoch.max(self.replica.role().epoch()),
                    self.replica.held(),
                    self.replica.reported_confirm(),
                )
                .await;
            match answer {
                Ok(a) => {
                    if failing {
                        info!(group = %self.member.group, "replication controller reachable again");
                        failing = false;
                    }
                    if !a.interval.is_zero() {
                        interval = a.interval.min(Duration::from_secs(1));
                    }
                    self.apply(a, sent);
                }
                Err(e) => {
                    if !failing {
                        warn!(group = %self.member.group, error = %e, "replication controller unreachable; a leader stops acknowledging when its lease ends");
                        failing = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut stopped => break,
            }
        }
    }

    /// Acts on one controller answer.
    fn apply(self: &Arc<Self>, a: HeartbeatAnswer, _sent: Instant) {
        let st = a.state;
        let in_sync: BTreeSet<u32> = st.in_sync.iter().map(|r| *r as u32).collect();
        let me = self.rs.replica_id;
        if st.leader != Some(self.me()) {
            let leader = st.leader.map(|l| (l as u32, st.leader_address.clone()));
            self.replica.become_follower(st.epoch, leader);
            return;
        }
        let known = self.replica.history().last().map_or(0, |e| e.epoch);
        if st.epoch < known {
            error!(group = %self.member.group, replica = me, controller_epoch = st.epoch, own_epoch = known,
                   "the controller names this member leader of an epoch older than its own history; refusing to lead");
            self.replica.become_follower(st.epoch, None);
            return;
        }
        let role = self.replica.role();
        if !(role.is_leader() && role.epoch() == st.epoch) {
            if let Err(e) = self.replica.become_leader(st.epoch, in_sync.clone()) {
                error!(group = %self.member.group, error = %e, "cannot record the new epoch; not leading");
                return;
            }
        } else {
            self.replica.note_committed_in_sync(&in_sync);
        }
        if let Some(until) = a.lease_until {
            self.replica.extend_lease(until, Duration::ZERO);
        }
        if let Some(to) = a.switchover_to {
            if to != self.me() && self.replica.handing_over().is_none() {
                self.replica.hand_over(to as u32);
                tokio::spawn(self.clone().complete_switchover(st.epoch, to));
            }
            return;
        }
        self.maintain_in_sync(st.epoch, &in_sync);
    }

    /// Drops lagging followers from the in-sync set and adds caught-up ones, through the
    /// controller, one change at a time ([`Replica::plan_in_sync_change`] says why the set the
    /// confirm offset waits for always contains the controller's). `committed` is the set of
    /// the controller's answer.
    fn maintain_in_sync(self: &Arc<Self>, epoch: u64, committed: &BTreeSet<u32>) {
        let Some(change) = self.replica.plan_in_sync_change(committed) else {
            return;
        };
        info!(group = %self.member.group, epoch, from = ?committed, to = ?change.next, lagging = ?change.leaving, caught_up = ?change.joining, "changing the in-sync set");
        let me = self.clone();
        tokio::spawn(async move {
            let answer = me
                .controller
                .alter_in_sync(
                    &me.member.group,
                    epoch,
                    me.me(),
                    change.next.iter().map(|r| u64::from(*r)),
                )
                .await;
            match answer {
                Ok(st) if st.epoch == epoch && st.leader == Some(me.me()) => {
                    let set: BTreeSet<u32> = st.in_sync.iter().map(|r| *r as u32).collect();
                    me.replica.in_sync_altered(change.ticket, Some(&set));
                }
                Ok(_) => me.replica.in_sync_altered(change.ticket, None),
                Err(e) => {
                    warn!(group = %me.member.group, error = %e, "the controller did not take the in-sync change");
                    me.replica.in_sync_altered(change.ticket, None);
                }
            }
        });
    }

    /// A switchover to `to`: writes stopped (see [`Replica::hand_over`]); once `to` holds the
    /// whole log the controller makes it the leader.
    async fn complete_switchover(self: Arc<Self>, epoch: u64, to: u64) {
        let group = self.member.group.clone();
        info!(%group, epoch, to, "switchover: writes stopped, waiting for the new leader to hold the whole log");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let end = self.store.log_end();
            let held = self
                .replica
                .progress
                .held_by()
                .into_iter()
                .find(|(id, _)| u64::from(*id) == to)
                .map_or(0, |(_, h)| h);
            if held >= end {
                break;
            }
            if Instant::now() > deadline || !self.replica.role().is_leader() {
                warn!(%group, to, held, end, "switchover target did not catch up; leading on");
                self.replica.become_follower(epoch, None);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match self.controller.complete_switchover(&group, epoch, to).await {
            Ok(st) => {
                info!(%group, new_epoch = st.epoch, leader = ?st.leader, "switchover complete");
                let leader = st.leader.map(|l| (l as u32, st.leader_address.clone()));
                self.replica.become_follower(st.epoch, leader);
            }
            Err(e) => {
                warn!(%group, error = %e, "switchover not completed; leading on");
                // Writes resume only with a fresh answer naming this member leader.
                self.replica.become_follower(epoch, None);
            }
        }
    }

    /// Opens a term when this member starts leading an epoch and ends it when it stops.
    async fn term_loop(self: Arc<Self>) {
        let mut role = self.replica.watch_role();
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let current = role.borrow_and_update().clone();
            let open_epoch = self.term.lock().await.as_ref().map(|t| t.epoch);
            match current {
                Role::Leader { epoch, start } if open_epoch != Some(epoch) => {
                    if open_epoch.is_some() {
                        self.end_term("a new epoch").await;
                    }
                    let started = tokio::select! {
                        r = self.start_term(epoch, start) => Some(r),
                        _ = role.changed() => None,
                        _ = shutdown.changed() => None,
                    };
                    match started {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            error!(group = %self.member.group, epoch, error = %format!("{e:#}"), "cannot open the leader's engine; giving up the lead");
                            self.replica.become_follower(epoch, None);
                        }
                        // The role moved on while opening: look again.
                        None => continue,
                    }
                }
                Role::Follower { .. } if open_epoch.is_some() => {
                    self.end_term("another member leads").await;
                }
                _ => {}
            }
            tokio::select! {
                _ = role.changed() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Waits until the group confirmed the log up to `start` and the journal is applied up to
    /// there, then opens the engine and serves clients.
    async fn start_term(self: &Arc<Self>, epoch: u64, start: u64) -> anyhow::Result<()> {
        let span = tracing::info_span!("term", group = %self.member.group, epoch, start);
        async {
            let began = Instant::now();
            loop {
                if self.replica.confirm() >= start && self.store.dispatched_end() >= start {
                    break;
                }
                if began.elapsed() > Duration::from_secs(5)
                    && began.elapsed().as_millis() % 5000 < 20
                {
                    info!(
                        confirm = self.replica.confirm(),
                        dispatched = self.store.dispatched_end(),
                        "waiting for the in-sync members to hold the log up to the epoch's start"
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let me = self.clone();
            let engine = tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<Engine>> {
                if let Some(mut a) = me.applier.lock().take() {
                    a.apply_dispatched().context("applying the journal")?;
                    a.close().context("closing the journal applier")?;
                }
                // Every user change the group confirmed, before any call is checked here.
                if let Some((_, reader)) = &me.auth {
                    reader
                        .lock()
                        .apply_dispatched()
                        .context("applying the journal's user and ACL changes")?;
                }
                let mut ec = me.cfg.engine.clone();
                ec.replicated = true;
                let engine = Engine::open(me.store.clone(), ec).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot load group settings, pending timers and transactions: {e}"
                    )
                })?;
                engine
                    .membership
                    .join(&me.member.group, &me.cfg.data_dir)
                    .context("cannot read the group state")?;
                Ok(engine)
            })
            .await??;
            let shutdown = Shutdown::default();
            let node = Node::with_metrics(
                engine,
                self.cfg.node_settings(),
                shutdown.subscribe(),
                self.metrics.clone(),
            );
            let threads = node
                .engine
                .start_background()
                .context("cannot start the timer threads")?;
            let max_msg = self.cfg.max_body_size.saturating_mul(2).max(16 << 20);
            self.messaging.set(Some(
                MessagingServiceServer::new(MessagingApi::new(node.clone()))
                    .max_decoding_message_size(max_msg)
                    .max_encoding_message_size(max_msg),
            ));
            let gate = self.auth.as_ref().map(|(g, _)| g.clone());
            self.admin.set(Some(
                AdminServer::new(AdminApi::new(node.clone()).with_auth(gate.clone()))
                    .max_encoding_message_size(max_msg),
            ));
            let mut tasks = JoinSet::new();
            if let Some(gate) = gate {
                tasks.spawn(ensure_bootstrap_user(
                    gate,
                    self.cfg.auth.clone(),
                    shutdown.subscribe(),
                ));
            }
            tasks.spawn(super::node::upkeep(node.clone()));
            tasks.spawn(super::broker::heartbeat_loop(
                node.clone(),
                self.member.clone(),
                Some((epoch, self.rs.replica_id)),
            ));
            node.ready.store(true, Ordering::Release);
            info!(
                waited_ms = began.elapsed().as_millis() as u64,
                "leading: serving clients"
            );
            *self.term.lock().await = Some(Term {
                epoch,
                node,
                shutdown,
                threads,
                tasks,
            });
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Stops serving clients: closes the services, ends streams and long polls, stops the
    /// engine's threads, unregisters from the name servers; then the journal is applied again.
    async fn end_term(self: &Arc<Self>, why: &str) {
        let Some(term) = self.term.lock().await.take() else {
            return;
        };
        let Term {
            epoch,
            node,
            shutdown,
            threads,
            mut tasks,
        } = term;
        info!(group = %self.member.group, epoch, why, "leader term ends");
        self.messaging.set(None);
        self.admin.set(None);
        node.ready.store(false, Ordering::Release);
        shutdown.begin();
        node.clients.close_all_streams();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let n = node.clone();
        let _ = tokio::task::spawn_blocking(move || n.engine.stop_background(threads)).await;
        drop(node);
        if !*self.shutdown.subscribe().borrow() {
            match open_applier(&self.store, &self.cfg, &self.member.group) {
                Ok(a) => *self.applier.lock() = Some(a),
                Err(e) => {
                    error!(group = %self.member.group, error = %format!("{e:#}"), "cannot reopen the journal applier")
                }
            }
        }
    }

    /// Applies the leader's journal while following.
    async fn apply_loop(self: Arc<Self>) {
        let stopped = serve::stopped(self.shutdown.subscribe());
        tokio::pin!(stopped);
        let mut warned = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(APPLY_EVERY) => {}
                _ = &mut stopped => return,
            }
            let me = self.clone();
            let r = tokio::task::spawn_blocking(move || {
                if let Some((_, reader)) = &me.auth {
                    reader.lock().apply_dispatched()?;
                }
                match me.applier.lock().as_mut() {
                    Some(a) => a.apply_dispatched().map(|_| ()),
                    None => Ok(()),
                }
            })
            .await;
            match r {
                Ok(Err(e)) if !warned => {
                    warn!(group = %self.member.group, error = %e, "applying the leader's journal failed; retrying");
                    warned = true;
                }
                Ok(Ok(())) => warned = false,
                _ => {}
            }
        }
    }
}

/// A leader's term task: writes the bootstrap super user of this member's flags through the
/// group when the group's copy lacks it or holds another secret, retrying until it is in
/// place or the term ends.
async fn ensure_bootstrap_user(
    gate: Arc<crate::auth::Gate>,
    cfg: crate::config::auth::AuthConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = serve::stopped(shutdown);
    tokio::pin!(stopped);
    let mut warned = false;
    loop {
        let (g, c) = (gate.clone(), cfg.clone());
        match tokio::task::spawn_blocking(move || g.ensure_bootstrap_user(&c)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if !warned => {
                warn!(error = %format!("{e:#}"), "cannot write the bootstrap super user through the group yet; retrying");
                warned = true;
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = &mut stopped => return,
        }
    }
}

/// Which start of this member the controller hears from: the wall clock at start in
/// nanoseconds, mixed with the process id (two starts within a clock tick still differ), never
/// 0. A leader that restarted, however fast it came back, must not resume its epoch: the
/// controller sees the new incarnation and elects again.
fn incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).rotate_left(48)).max(1)
}

impl crate::http::Serving for Member {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn node(&self) -> Option<Arc<Node>> {
        self.term.try_lock().ok()?.as_ref().map(|t| t.node.clone())
    }

    fn metrics(&self) -> Option<Arc<Metrics>> {
        Some(self.metrics.clone())
    }

    fn families(&self) -> Vec<Family> {
        let role = self.replica.role();
        // Every family names the broker group and this member, so rules can compare the
        // members of one group (the leader's view against the group's minimum, for example).
        let me = || {
            vec![
                ("broker_group", self.member.group.clone()),
                ("replica", self.rs.replica_id.to_string()),
            ]
        };
        let mut held = Family::gauge(
            "ferromq_replication_follower_held_bytes",
            "How far each follower holds the log (leader's view).",
        );
        for (id, h) in self.replica.progress.held_by() {
            let mut l = me();
            l.push(("follower", id.to_string()));
            held.push(l, h);
        }
        vec![
            Family::gauge(
                "ferromq_replication_leader",
                "1 while this member leads its broker group.",
            )
            .with(me(), role.is_leader()),
            Family::gauge(
                "ferromq_replication_epoch",
                "The leader epoch this member leads or follows.",
            )
            .with(me(), role.epoch()),
            Family::gauge(
                "ferromq_replication_log_end_bytes",
                "End of this member's commit log.",
            )
            .with(me(), self.store.log_end()),
            Family::gauge(
                "ferromq_replication_confirm_offset_bytes",
                "The group's confirm offset as this member knows it (what consumers may read).",
            )
            .with(me(), self.replica.confirm()),
            Family::gauge(
                "ferromq_replication_in_sync_members",
                "Members of the in-sync set (leader's view).",
            )
            .with(me(), self.replica.progress.in_sync_count()),
            Family::gauge(
                "ferromq_replication_rebuild_needed",
                "1 while this member cannot follow its leader without cutting records it already dispatched to consumers: it must be rebuilt (see its log).",
            )
            .with(me(), self.replica.rebuild_needed().is_some()),
            Family::gauge(
                "ferromq_replication_min_in_sync_members",
                "In-sync members a leader needs to accept sends (min-in-sync).",
            )
            .with(me(), self.rs.min_in_sync),
            Family::counter(
                "ferromq_replication_follower_batches_total",
                "Batches of records this member wrote while following (log bytes over batches: how large the leader's batches are).",
            )
            .with(me(), self.replica.batches_written.load(Ordering::Relaxed)),
            held,
        ]
    }
}

/// Runs a replicated member until SIGTERM or Ctrl-C.
pub async fn run(cfg: NodeConfig, member: MemberConfig) -> anyhow::Result<()> {
    bind(cfg, member).await?.run(serve::signal()).await
}
