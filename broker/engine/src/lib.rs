//! `ferromq-engine`: the delivery engine of a FerroMQ broker, between the front doors that speak
//! wire protocols and the store that keeps bytes.
//!
//! It decides what messages mean: which consumer gets which message next, invisibility and
//! redelivery, retries and dead letters, FIFO message-group order, priority, delay timers and
//! transaction halves, drain state, and consumer progress. It speaks no wire protocol (no
//! tonic, prost or protocol types: a check in `tests/run` keeps it so); its errors are
//! [`EngineError`]s, which each front door maps to its protocol's codes in one place.
//!
//! ## Map
//! - [`Engine`]: one broker's engine, built over an open store.
//! - [`publish`]: checking a message against its topic and storing or parking it;
//!   [`placement`]: the queue it goes to.
//! - [`delivery`]: pop-style delivery, settlement and upkeep.
//! - [`parked`]: delay timers ([`parked::timer`]) and half messages ([`parked::transaction`]).
//! - [`filter`]: subscription filters compiled into store read filters.
//! - [`groups`], [`membership`], [`topics`], [`lag`]: group settings, drain state, reserved
//!   topics and consumer progress.
//! - [`resets`] and [`dead_letters`]: moving a group's offsets by hand, deleting a group,
//!   listing dead letters and sending them back to their topic.
//! - [`retry`]: offset-based consumers' retries (copies in `%RETRY%<group>`, then the DLQ).
//! - [`receipt`], [`props`], [`signals`], [`time`]: receipt handles, internal property keys,
//!   wake-ups for async waiters, wall-clock time.
//!
//! Engine methods block on store I/O; async callers run them on a blocking pool.

pub mod config;
pub mod dead_letters;
pub mod delivery;
pub mod error;
pub mod filter;
pub mod groups;
pub mod journal;
pub mod lag;
pub mod membership;
pub mod parked;
pub mod placement;
pub mod props;
pub mod publish;
pub mod receipt;
pub mod resets;
pub mod retry;
pub mod signals;
pub mod time;
pub mod topics;

use std::sync::Arc;

use ferromq_store::{MessageType, Permission, Store, StoreError, TopicConfig};

pub use config::EngineConfig;
pub use delivery::Deliveries;
pub use error::EngineError;
pub use groups::Groups;
pub use journal::{Change, Journal};
pub use membership::{Membership, DRAINING};
pub use parked::timer::Timers;
pub use parked::transaction::{CheckSender, Resolution, Transactions};
pub use parked::ParkedQueue;
pub use publish::{Pending, Publication, Published, Quick};
pub use receipt::ReceiptHandle;
pub use retry::{Retried, Retry};
pub use signals::{Dispatched, Wakeups};

/// The engine of one broker: the store plus every piece of delivery state over it.
pub struct Engine {
    pub store: Arc<Store>,
    pub config: EngineConfig,
    /// Broker group name and drain state.
    pub membership: Membership,
    pub deliveries: Deliveries,
    pub groups: Groups,
    /// Pending delay messages.
    pub timers: Arc<Timers>,
    /// Unresolved transactions (half messages).
    pub transactions: Arc<Transactions>,
    pub wakeups: Arc<Wakeups>,
    pub dispatched: Arc<Dispatched>,
    /// Replicated groups: where changes to topics, offsets, marks, group settings and drain
    /// state are journaled for the followers.
    pub journal: Option<Journal>,
    /// Queue choice for messages whose producer chose none.
    pub placement: placement::Placement,
}

impl Engine {
    /// Builds the engine over an open store: loads group settings, pending timers and half
    /// messages (their threads start with [`Engine::start_background`]) and subscribes to the
    /// store's dispatcher for wake-ups.
    pub fn open(store: Arc<Store>, config: EngineConfig) -> Result<Arc<Engine>, EngineError> {
        let groups = Groups::open(&config.data_dir, config.max_delivery_attempts)
            .map_err(|e| EngineError::Io(e.to_string()))?;
        let journal = if config.replicated {
            Some(Journal::open(store.clone())?)
        } else {
            None
        };
        let timers = Timers::open(store.clone(), &config.data_dir, journal.clone())?;
        let transactions = Transactions::open(
            store.clone(),
            &config.data_dir,
            config.transaction_check_interval,
            config.transaction_check_max,
            journal.clone(),
        )?;
        let wakeups = Arc::new(Wakeups::default());
        let dispatched = Arc::new(Dispatched::default());
        let (w, d) = (wakeups.clone(), dispatched.clone());
        store.on_dispatch(Arc::new(move |ev| w.wake(ev.topic)));
        // Once per dispatch pass: every send waiting for read-your-writes wakes once, not once
        // per record dispatched.
        store.on_dispatched(Arc::new(move |end| d.advance(end)));
        let engine = Arc::new(Engine {
            membership: Membership::default(),
            deliveries: Deliveries::new(store.clone(), journal.clone()),
            store,
            config,
            groups,
            timers,
            transactions,
            wakeups,
            dispatched,
            journal,
            placement: placement::Placement::default(),
        });
        engine.keep_parked_messages();
        Ok(engine)
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

    /// The topic's configuration; creates it when unknown and auto-creation is on.
    pub fn topic(&self, name: &str) -> Result<TopicConfig, EngineError> {
        if let Some(t) = self.store.topics().get(name) {
            return Ok(t);
        }
        if self.config.auto_create_topics && !topics::is_system_topic(name) {
            let cfg = TopicConfig {
                name: name.to_string(),
                queues: self.config.default_queues,
                message_type: MessageType::Normal,
                permission: Permission::ReadWrite,
                retention_ms: None,
            };
            return match self.create_topic(cfg) {
                Ok(t) => {
                    tracing::info!(topic = name, "topic auto-created");
                    Ok(t)
                }
                Err(EngineError::Store(e)) if matches!(*e, StoreError::TopicExists(_)) => self
                    .store
                    .topics()
                    .get(name)
                    .ok_or_else(|| EngineError::internal("topic vanished")),
                Err(e) => Err(e),
            };
        }
        Err(EngineError::TopicNotFound(name.to_string()))
    }
}

impl Engine {
    /// Journals `change` when the group is replicated; returns the log offset the group must
    /// confirm for it (0 when nothing was journaled).
    pub fn journal(&self, change: &Change) -> Result<u64, EngineError> {
        match &self.journal {
            Some(j) => j.record(change),
            None => Ok(0),
        }
    }

    /// Creates a topic (journaled).
    pub fn create_topic(&self, cfg: TopicConfig) -> Result<TopicConfig, EngineError> {
        let t = self.store.topics().create(cfg)?;
        self.journal_topic(&t)?;
        Ok(t)
    }

    /// Replaces an existing topic's settings (journaled).
    pub fn update_topic(&self, cfg: TopicConfig) -> Result<TopicConfig, EngineError> {
        let t = self.store.topics().update(cfg)?;
        self.journal_topic(&t)?;
        Ok(t)
    }

    fn journal_topic(&self, t: &TopicConfig) -> Result<(), EngineError> {
        self.journal(&Change::Topic {
            topic: t.clone(),
            incarnation: self.store.topics().incarnation(&t.name),
        })?;
        Ok(())
    }

    /// Deletes a topic, its offsets and its delivery state (journaled with the fence); see
    /// [`Deliveries::delete_topic`].
    pub fn delete_topic(&self, name: &str) -> Result<TopicConfig, EngineError> {
        self.placement.forget(name);
        self.deliveries.delete_topic(name)
    }

    /// Sets a consumer group's settings (journaled).
    pub fn set_group(&self, name: &str, cfg: groups::GroupConfig) -> Result<(), EngineError> {
        self.groups
            .set(name, cfg.clone())
            .map_err(|e| EngineError::Io(e.to_string()))?;
        self.journal(&Change::Group {
            name: name.to_string(),
            config: cfg,
        })?;
        Ok(())
    }

    /// Drains (read-only) or reopens this group (journaled).
    pub fn set_read_only(&self, read_only: bool) -> Result<(), EngineError> {
        self.membership
            .set_read_only(read_only)
            .map_err(|e| EngineError::Io(e.to_string()))?;
        self.journal(&Change::Drain { read_only })?;
        Ok(())
    }
}
