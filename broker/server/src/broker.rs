//! The state one broker process shares between its RPC handlers: the store, the delivery
//! engine, group settings, known clients, metrics and long-polling wake-ups.
//!
//! Handlers reach the blocking store only through [`Broker::blocking`], which runs the closure
//! on tokio's blocking pool so a slow disk never stalls the reactor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use ferromq_store::{MessageType, Permission, Store, TopicConfig};
use tokio::sync::{watch, Notify};

use crate::clients::Clients;
use crate::config::StandaloneConfig;
use crate::delivery::Deliveries;
use crate::groups::Groups;
use crate::metrics::Metrics;
use crate::status::RpcError;
use crate::timers::Timers;
use crate::transactions::Transactions;
use ferromq_proto::v2::Code;

/// Wakes long-polling receivers of a topic when the store dispatches a message to it.
#[derive(Debug, Default)]
pub struct Wakeups {
    topics: RwLock<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    pub fn for_topic(&self, topic: &str) -> Arc<Notify> {
        if let Some(n) = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return n.clone();
        }
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic.to_string())
            .or_default()
            .clone()
    }

    /// Called from the store's dispatcher thread.
    pub fn wake(&self, topic: &str) {
        if let Some(n) = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            n.notify_waiters();
        }
    }
}

/// Progress of one group on one queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueLag {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    /// Every message below it is settled for the group.
    pub committed: u64,
    /// Next offset to be written.
    pub max_offset: u64,
    /// Delivered and not yet settled.
    pub inflight: u64,
}

impl QueueLag {
    pub fn lag(&self) -> u64 {
        self.max_offset.saturating_sub(self.committed)
    }
}

/// How far the store's dispatcher has made the commit log readable, for async waiters.
#[derive(Debug, Default)]
pub struct Dispatched {
    end: std::sync::atomic::AtomicU64,
    notify: Notify,
}

impl Dispatched {
    /// Waits (without holding a thread) until every record below `end` is readable by
    /// consumers, or `timeout` passes.
    pub async fn wait(&self, end: u64, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.end.load(Ordering::Acquire) >= end {
                return true;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.end.load(Ordering::Acquire) >= end,
            }
        }
    }
}

/// Where this store sits in a cluster: its broker group's name and whether it takes new messages.
/// A standalone server is the single group `standalone`.
#[derive(Debug)]
pub struct Membership {
    group: RwLock<String>,
    read_only: AtomicBool,
    state_file: RwLock<Option<std::path::PathBuf>>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            group: RwLock::new("standalone".to_string()),
            read_only: AtomicBool::new(false),
            state_file: RwLock::new(None),
        }
    }
}

impl Membership {
    pub fn group(&self) -> String {
        self.group.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// Names the group and loads its drain state from `data_dir`, so a group being drained stays
    /// read-only across restarts.
    pub fn join(&self, group: &str, data_dir: &std::path::Path) -> std::io::Result<()> {
        *self.group.write().unwrap_or_else(|p| p.into_inner()) = group.to_string();
        let path = data_dir.join("group-state");
        let ro = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim() == "read-only",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        self.read_only.store(ro, Ordering::Release);
        *self.state_file.write().unwrap_or_else(|p| p.into_inner()) = Some(path);
        Ok(())
    }

    /// Switches between read-write and read-only, durably (written and synced before it applies).
    pub fn set_read_only(&self, ro: bool) -> std::io::Result<()> {
        if let Some(path) = self
            .state_file
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            let tmp = path.with_extension("tmp");
            let text = if ro { "read-only\n" } else { "read-write\n" };
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
        }
        self.read_only.store(ro, Ordering::Release);
        Ok(())
    }

    pub fn state_name(&self) -> &'static str {
        if self.is_read_only() {
            "read-only"
        } else {
            "read-write"
        }
    }
}

pub struct Broker {
    pub store: Arc<Store>,
    /// Broker group name and drain state.
    pub membership: Membership,
    pub cfg: StandaloneConfig,
    pub deliveries: Deliveries,
    pub groups: Groups,
    pub clients: Clients,
    pub metrics: Metrics,
    /// Pending delay messages.
    pub timers: Arc<Timers>,
    /// Unresolved transactions (half messages).
    pub transactions: Arc<Transactions>,
    pub wakeups: Arc<Wakeups>,
    pub dispatched: Arc<Dispatched>,
    /// Flips to true when shutdown starts; long polls and streams watch it.
    pub shutdown: watch::Receiver<bool>,
    pub ready: AtomicBool,
}

impl Broker {
    /// Builds the broker over an open store; loads pending timers and half messages (their
    /// threads start with [`Broker::start_background`]).
    pub fn new(
        store: Arc<Store>,
        cfg: StandaloneConfig,
        groups: Groups,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Broker>, RpcError> {
        let timers = Timers::open(store.clone(), &cfg.data_dir)?;
        let transactions = Transactions::open(
            store.clone(),
            &cfg.data_dir,
            cfg.transaction_check_interval,
            cfg.transaction_check_max,
        )?;
        let wakeups = Arc::new(Wakeups::default());
        let dispatched = Arc::new(Dispatched::default());
        let (w, d) = (wakeups.clone(), dispatched.clone());
        store.on_dispatch(Arc::new(move |ev| {
            w.wake(ev.topic);
            d.end
                .fetch_max(ev.phys_offset + u64::from(ev.size), Ordering::AcqRel);
            d.notify.notify_waiters();
        }));
        let broker = Arc::new(Broker {
            membership: Membership::default(),
            deliveries: Deliveries::new(store.clone()),
            store,
            cfg,
            groups,
            clients: Clients::default(),
            metrics: Metrics::default(),
            timers,
            transactions,
            wakeups,
            dispatched,
            shutdown,
            ready: AtomicBool::new(false),
        });
        broker.keep_parked_messages();
        let weak = Arc::downgrade(&broker);
        broker
            .transactions
            .set_sender(Box::new(move |m, tx_id| match weak.upgrade() {
                Some(b) => b.send_transaction_check(m, tx_id),
                None => false,
            }));
        Ok(broker)
    }

    /// Starts the timer and transaction-check threads.
    pub fn start_background(&self) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        Ok(vec![self.timers.start()?, self.transactions.start()?])
    }

    /// Stops those threads and writes their marks (before the store closes).
    pub fn stop_background(&self, threads: Vec<std::thread::JoinHandle<()>>) {
        self.timers.stop();
        self.transactions.stop();
        for t in threads {
            let _ = t.join();
        }
        for r in [self.timers.flush(), self.transactions.flush()] {
            if let Err(e) = r {
                tracing::warn!(error = %e, "flushing parked-message marks failed");
            }
        }
    }

    /// Keeps retention away from the oldest pending timer or half message. Run at start and
    /// then periodically.
    pub fn keep_parked_messages(&self) {
        let floor = match (
            self.timers.retention_floor(),
            self.transactions.retention_floor(),
        ) {
            (Ok(a), Ok(b)) => a.min(b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot compute the oldest parked message; retention paused");
                0
            }
        };
        self.store.set_retention_floor(floor);
    }

    /// Sends RecoverOrphanedTransactionCommand to the producer that sent the half message, else
    /// to a live producer that declared its topic.
    fn send_transaction_check(&self, m: &ferromq_store::StoredMessage, tx_id: &str) -> bool {
        let sender = m
            .properties
            .get(crate::transactions::PRODUCER)
            .and_then(|id| self.clients.stream_of(id));
        let Some(tx) = sender.or_else(|| self.clients.producer_stream_for(&m.topic)) else {
            tracing::debug!(topic = %m.topic, "no producer online for a transaction check");
            return false;
        };
        let message = crate::convert::to_proto(m, "", &self.cfg.advertise_addr, None);
        let cmd = ferromq_proto::v2::TelemetryCommand {
            status: None,
            command: Some(
                ferromq_proto::v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                    ferromq_proto::v2::RecoverOrphanedTransactionCommand {
                        message: Some(message),
                        transaction_id: tx_id.to_string(),
                    },
                ),
            ),
        };
        tx.try_send(Ok(cmd)).is_ok()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !*self.shutdown.borrow()
    }

    /// Runs blocking store work off the async workers.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, RpcError>
    where
        F: FnOnce(&Broker) -> Result<T, RpcError> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| RpcError::internal(format!("worker failed: {e}")))?
    }

    /// The topic's configuration; creates it when unknown and auto-creation is on.
    pub fn topic(&self, name: &str) -> Result<TopicConfig, RpcError> {
        if let Some(t) = self.store.topics().get(name) {
            return Ok(t);
        }
        if self.cfg.auto_create_topics && !crate::validate::is_system_topic(name) {
            let cfg = TopicConfig {
                name: name.to_string(),
                queues: self.cfg.default_queues,
                message_type: MessageType::Normal,
                permission: Permission::ReadWrite,
            };
            return match self.store.topics().create(cfg) {
                Ok(t) => {
                    tracing::info!(topic = name, "topic auto-created");
                    Ok(t)
                }
                Err(ferromq_store::StoreError::TopicExists(_)) => self
                    .store
                    .topics()
                    .get(name)
                    .ok_or_else(|| RpcError::internal("topic vanished")),
                Err(e) => Err(e.into()),
            };
        }
        Err(RpcError::new(
            Code::TopicNotFound,
            format!("topic {name} does not exist"),
        ))
    }

    /// Consumer progress per (group, topic, queue). Covers every queue of every topic a group consumed or
    /// subscribed to; a queue it never read counts from where it would start.
    pub fn lag(&self) -> Vec<QueueLag> {
        let mut known: std::collections::BTreeMap<(String, String, u32), (u64, u64)> =
            Default::default();
        for p in self.deliveries.progress() {
            known.insert((p.group, p.topic, p.queue_id), (p.committed, p.inflight));
        }
        for (k, off) in self.store.offsets().all() {
            known
                .entry((k.group, k.topic, k.queue_id))
                .or_insert((off, 0));
        }
        let mut pairs: std::collections::BTreeSet<(String, String)> = known
            .keys()
            .map(|(g, t, _)| (g.clone(), t.clone()))
            .collect();
        for (g, topics) in self.clients.subscriptions() {
            for t in topics {
                pairs.insert((g.clone(), t));
            }
        }
        let mut out = Vec::new();
        for (g, t) in pairs {
            let Some(cfg) = self.store.topics().get(&t) else {
                continue;
            };
            for q in 0..cfg.queues {
                let (min, max) = self.store.queue_range(&t, q);
                let (committed, inflight) = known
                    .get(&(g.clone(), t.clone(), q))
                    .copied()
                    .unwrap_or((min, 0));
                out.push(QueueLag {
                    group: g.clone(),
                    topic: t.clone(),
                    queue_id: q,
                    committed: committed.max(min),
                    max_offset: max,
                    inflight,
                });
            }
        }
        out
    }
}
